"""The Fast DDS profile that `l3d bringup` and the launch files give the nodes: images larger
than Fast DDS's 512 KiB shared-memory default (512x512 bgr8 = 768 KiB) arrive under the
sensor-data (best effort) QoS of the node's inputs. Without it they travel as fragmented UDP,
where one lost fragment loses the image (0 of 20 on this machine's loopback)."""
import os
import subprocess
import sys

from l3d_ros.bringup import dds_environment

SCRIPT = r'''
import sys, time
import numpy as np
import rclpy
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import Image
role, n = sys.argv[1], int(sys.argv[2])
rclpy.init()
node = rclpy.create_node('l3d_dds_' + role)
if role == 'pub':
    pub = node.create_publisher(Image, 'l3d_dds_test', qos_profile_sensor_data)
    deadline = time.monotonic() + 20.0
    while pub.get_subscription_count() == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.5)
    data = np.random.default_rng(0).integers(0, 255, 512 * 512 * 3, dtype=np.uint8).tobytes()
    for i in range(n):
        pub.publish(Image(height=512, width=512, encoding='bgr8', step=1536, data=data))
        time.sleep(0.1)
    time.sleep(1.0)
else:
    got = []
    node.create_subscription(Image, 'l3d_dds_test', lambda m: got.append(len(m.data)),
                             qos_profile_sensor_data)
    deadline = time.monotonic() + 30.0
    while len(got) < n and time.monotonic() < deadline:
        rclpy.spin_once(node, timeout_sec=0.1)
    print('received', len(got), 'sizes_ok', all(s == 512 * 512 * 3 for s in got))
rclpy.shutdown()
'''


def test_large_best_effort_images_arrive_with_the_shipped_profile(tmp_path):
    script = tmp_path / 'pubsub.py'
    script.write_text(SCRIPT)
    env = {k: v for k, v in os.environ.items()
           if k not in ('FASTDDS_DEFAULT_PROFILES_FILE', 'FASTRTPS_DEFAULT_PROFILES_FILE',
                        'FASTDDS_BUILTIN_TRANSPORTS')}
    env.update(dds_environment(env))
    assert 'FASTDDS_DEFAULT_PROFILES_FILE' in env
    sub = subprocess.Popen([sys.executable, str(script), 'sub', '20'], env=env,
                           stdout=subprocess.PIPE, text=True)
    pub = subprocess.run([sys.executable, str(script), 'pub', '20'], env=env, timeout=60)
    out, _ = sub.communicate(timeout=60)
    assert pub.returncode == 0 and sub.returncode == 0
    received = int(out.split()[1])
    assert received >= 18 and 'sizes_ok True' in out, out

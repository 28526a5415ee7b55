"""A test-side ROS 2 peer: publishes stereo inputs and collects the node's outputs over DDS."""
import json
from pathlib import Path
import signal
import subprocess
import sys
import threading
import time

from diagnostic_msgs.msg import DiagnosticArray
from geometry_msgs.msg import PoseStamped
from nav_msgs.msg import OccupancyGrid
import rclpy
from rclpy.executors import SingleThreadedExecutor
from rclpy.qos import DurabilityPolicy, QoSProfile
from sensor_msgs.msg import CameraInfo, Image, PointCloud2
from stereo_msgs.msg import DisparityImage
import yaml

from l3d_ros import msg as conv
from l3d_ros.bringup import launch_nodes, start, stop
from l3d_ros.config import default_config_path

OUTPUTS = {'depth': Image, 'confidence': Image, 'points': PointCloud2,
           'disparity': DisparityImage, 'safe_site': PoseStamped, '/diagnostics': DiagnosticArray}


def write_params(tmp_path: Path, **node_overrides) -> Path:
    """The shipped parameter file with `l3d_stereo` overrides (nested dicts) applied."""
    params = yaml.safe_load(default_config_path().read_text())
    body = params['l3d_stereo']['ros__parameters']
    for key, value in node_overrides.items():
        if isinstance(value, dict):
            body.setdefault(key, {}).update(value)
        else:
            body[key] = value
    path = tmp_path / 'params.yaml'
    path.write_text(yaml.safe_dump(params))
    return path


def write_near_params(tmp_path: Path, hazard: dict | None = None, **node_overrides) -> Path:
    """`write_params` for near-range synthetic planes (2-50 m, a 0.5 m footprint on a 20 m
    map): SGBM's scenes, not the student's (20-150 m), so the backend is SGBM."""
    return write_params(tmp_path, backend='sgbm', depth_min_m=2.0, depth_max_m=50.0,
                        hazard={'footprint_m': 0.5, 'cell_m': 0.05, 'map_size_m': 20.0,
                                **(hazard or {})}, **node_overrides)


def diag_value(msg: DiagnosticArray, key: str, default: str | None = None) -> str:
    """The value of `key` in a DiagnosticArray (first status holding it); `default` when none
    holds it (None: StopIteration)."""
    found = (kv.value for s in msg.status for kv in s.values if kv.key == key)
    return next(found) if default is None else next(found, default)


class Peer:
    """Publishes on the node's inputs and records every output message by topic."""

    def __init__(self, name='l3d_test_peer', outputs=tuple(OUTPUTS), keep=None):
        """keep: messages kept per topic (the newest; None = all). A long run must bound it:
        hoarding every point cloud fills the machine's memory within minutes."""
        self.keep = keep
        self.context = rclpy.Context()
        rclpy.init(context=self.context)
        self.node = rclpy.create_node(name, context=self.context)
        self.pub = {t: self.node.create_publisher(typ, t, 10) for t, typ in (
            ('left/image_rect', Image), ('right/image_rect', Image),
            ('left/camera_info', CameraInfo), ('right/camera_info', CameraInfo),
            ('camera_pose', PoseStamped))}
        self.received = {t: [] for t in [*OUTPUTS, 'hazard_map']}
        self.counts = dict.fromkeys(self.received, 0)      # every message, kept or not
        self.lock = threading.Lock()
        for topic in outputs:
            self.node.create_subscription(OUTPUTS[topic], topic, self._keep(topic), 10)
        latched = QoSProfile(depth=1, durability=DurabilityPolicy.TRANSIENT_LOCAL)
        self.node.create_subscription(OccupancyGrid, 'hazard_map', self._keep('hazard_map'),
                                      latched)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self.thread = threading.Thread(target=self._spin, daemon=True)
        self.thread.start()

    def _spin(self):
        while self.context.ok():
            try:
                self.executor.spin_once(timeout_sec=0.05)
            except Exception:  # noqa: BLE001 - context shut down under us
                return

    def _keep(self, topic):
        def callback(msg):
            with self.lock:
                self.counts[topic] += 1
                kept = self.received[topic]
                kept.append(msg)
                if self.keep is not None and len(kept) > 2 * self.keep:
                    del kept[:-self.keep]
        return callback

    def wait_connected(self, timeout_s: float = 20.0) -> None:
        """Block until the node's subscriptions to every input have been discovered."""
        deadline = time.monotonic() + timeout_s
        while any(p.get_subscription_count() == 0 for p in self.pub.values()):
            if time.monotonic() > deadline:
                raise TimeoutError('the node did not subscribe to all inputs in time')
            time.sleep(0.05)

    def publish_pair(self, left, right, calib, stamp_ns, left_encoding='mono8',
                     right_encoding='mono8', frame_id='l3d_left_optical'):
        stamp = conv.ns_to_stamp(stamp_ns)
        info_l, info_r = conv.calib_to_camera_infos(calib, frame_id, stamp=stamp)
        for topic, array, enc, frame in (('left/image_rect', left, left_encoding, frame_id),
                                         ('right/image_rect', right, right_encoding,
                                          'l3d_right_optical')):
            img = conv.array_to_image(array, enc) if not isinstance(array, Image) else array
            img.header.stamp, img.header.frame_id = stamp, frame
            self.pub[topic].publish(img)
        self.pub['left/camera_info'].publish(info_l)
        self.pub['right/camera_info'].publish(info_r)

    def wait_for(self, topic, predicate=lambda m: True, timeout_s=30.0, republish=None):
        """First message on `topic` satisfying predicate; `republish()` is re-sent every 0.5 s
        until then (DDS discovery takes a moment, and inputs are best effort)."""
        deadline, next_send = time.monotonic() + timeout_s, 0.0
        while time.monotonic() < deadline:
            if republish and time.monotonic() >= next_send:
                republish()
                next_send = time.monotonic() + 0.5
            with self.lock:
                for m in self.received[topic]:
                    if predicate(m):
                        return m
            time.sleep(0.02)
        raise TimeoutError(f'no message on {topic} satisfying the predicate in {timeout_s} s')

    def close(self):
        self.context.try_shutdown()
        self.thread.join(timeout=2)


class RunningNode:
    """`l3d_stereo` started the way `l3d bringup` starts it, in its own process."""

    def __init__(self, params_file: Path):
        self.procs = start(launch_nodes(params_file), params_file)

    def alive(self) -> bool:
        return all(p.poll() is None for p in self.procs)

    def close(self):
        stop(self.procs)


class Sink:
    """`ros_sink.py` in its own process: a reliable subscriber of every output."""

    def __init__(self, tmp_path: Path, name: str = 'l3d_test_sink'):
        self.counts_path = tmp_path / f'{name}_counts.json'
        self.proc = subprocess.Popen([sys.executable, str(Path(__file__).with_name('ros_sink.py')),
                                      name, str(self.counts_path)])

    def counts(self) -> dict:
        """Messages received per topic so far (as of the sink's last write, <= 0.2 s old)."""
        return json.loads(self.counts_path.read_text()) if self.counts_path.exists() else {}

    def freeze(self) -> None:
        """SIGSTOP: the process stops taking messages (a stalled reliable reader)."""
        self.proc.send_signal(signal.SIGSTOP)

    def close(self) -> dict:
        """Stops the sink; the number of messages it received per topic."""
        self.proc.send_signal(signal.SIGCONT)
        self.proc.terminate()
        self.proc.wait(timeout=10)
        return json.loads(self.counts_path.read_text())

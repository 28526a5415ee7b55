"""`l3d_gz_camera_info`: gives the Gazebo right camera's CameraInfo its stereo baseline.

gz-sim publishes each camera's CameraInfo on its own, with P[3] = 0, while the perception node
reads the baseline from the right camera's P (INTERFACES.md section 2: B = -P[3] / P[0]). This
relay republishes `gz/right/camera_info` as `right/camera_info` with P[3] = -fx * baseline_m,
baseline_m taken from the simulator's rig (`l3d_sim.rig.baseline_m` in the parameter file
given as parameter `config`), the same number the Gazebo world's camera poses were made from.
"""
from pathlib import Path

import rclpy
from rclpy.executors import ExternalShutdownException
from rclpy.node import Node
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import CameraInfo

from l3d_sim.config import load_sim_config


def with_baseline(info: CameraInfo, baseline_m: float) -> CameraInfo:
    """A copy of `info` whose projection carries Tx = -fx * baseline_m (stereo_image_proc)."""
    out = CameraInfo(header=info.header, height=info.height, width=info.width,
                     distortion_model=info.distortion_model, d=info.d, k=info.k, r=info.r,
                     p=info.p, binning_x=info.binning_x, binning_y=info.binning_y, roi=info.roi)
    out.p[3] = -float(out.p[0]) * baseline_m
    return out


class GzCameraInfoRelay(Node):

    def __init__(self):
        super().__init__('l3d_gz_camera_info')
        config = self.declare_parameter('config', '').value
        self.baseline_m = load_sim_config(Path(config) if config else None).rig.baseline_m
        self.pub = self.create_publisher(CameraInfo, 'right/camera_info', qos_profile_sensor_data)
        self.create_subscription(CameraInfo, 'gz/right/camera_info', self.on_info,
                                 qos_profile_sensor_data)
        self.get_logger().info(f'right camera_info baseline set to {self.baseline_m} m')

    def on_info(self, msg: CameraInfo) -> None:
        self.pub.publish(with_baseline(msg, self.baseline_m))


def main(args=None) -> None:
    rclpy.init(args=args)
    try:
        rclpy.spin(GzCameraInfoRelay())
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        rclpy.try_shutdown()


if __name__ == '__main__':
    main()

"""`l3d_stereo`: rectified stereo pair in, depth / points / hazard out (INTERFACES.md section 5).

The optional `landing_target` (PointStamped in `map`, latched) is the nominal landing point:
`safe_site` is chosen near it, within hazard.divert_max_m; without it, below the camera.

Callbacks only hand messages to the synchroniser; a matched set goes into a one-slot mailbox
(newest pair wins, replaced pairs are counted) and a worker thread runs the pipeline and
publishes. A bad frame is dropped, counted and reported; it never stops the node.
"""
from collections import deque
import sys
import threading
import time
import zlib

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from geometry_msgs.msg import PointStamped, PoseStamped
from nav_msgs.msg import OccupancyGrid
import numpy as np
from rcl_interfaces.msg import ParameterDescriptor, SetParametersResult
import rclpy
from rclpy.executors import ExternalShutdownException
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CameraInfo, Image, PointCloud2
from std_msgs.msg import Header
from stereo_msgs.msg import DisparityImage

from l3d_ros import msg as conv
from l3d_ros.config import flatten, from_dict, NODE_NAME, StereoNodeConfig, unflatten
from l3d_ros.health import ERROR, Health, OK, scene_values, WARN
from l3d_ros.pipeline import StereoPipeline
from l3d_ros.runtime import keep_freed_memory
from l3d_ros.sync import LatestSlot, StereoSynchronizer

MAP_FRAME = 'map'
STARTUP_ONLY = ('sync.', 'qos.')   # parameters read once, when the node starts
POSE_HISTORY = 100      # camera_pose messages kept to match pairs by stamp
POSE_WAIT_S = 0.2       # wall time a pair waits for the camera_pose of its own stamp
LEVELS = {OK: DiagnosticStatus.OK, WARN: DiagnosticStatus.WARN, ERROR: DiagnosticStatus.ERROR}


class StereoNode(Node):

    def __init__(self, **kwargs):
        super().__init__(NODE_NAME, **kwargs)
        anytype = ParameterDescriptor(dynamic_typing=True)
        for name, default in flatten(StereoNodeConfig()).items():
            self.declare_parameter(name, default, anytype)
        self.cfg = self._config_from_parameters()  # raises ValueError: refused at start-up
        self.pipeline = StereoPipeline(self.cfg)
        self._pending_cfg = None
        self.add_on_set_parameters_callback(self._on_set_parameters)

        self.sync = StereoSynchronizer(self.cfg.sync.mode, self.cfg.sync.slop_s,
                                       self.cfg.sync.queue_size, self.cfg.sync.max_age_s)
        self.slot = LatestSlot()
        self.poses = deque(maxlen=POSE_HISTORY)   # (stamp_ns, R_world_cam, t_world_cam)
        self.health = Health(self.pipeline.init_fault)
        self.last_stamp_ns = None          # of the last processed pair
        self.last_checksum = None          # of the last processed pair's images
        self.lock = threading.Lock()

        qos_in = QoSProfile(depth=self.cfg.qos.depth, reliability=(
            ReliabilityPolicy.RELIABLE if self.cfg.qos.reliable else
            ReliabilityPolicy.BEST_EFFORT))
        for stream, typ, topic in (('left', Image, 'left/image_rect'),
                                   ('right', Image, 'right/image_rect'),
                                   ('left_info', CameraInfo, 'left/camera_info'),
                                   ('right_info', CameraInfo, 'right/camera_info')):
            self.create_subscription(typ, topic, self._on_input(stream), qos_in)
        self.create_subscription(PoseStamped, 'camera_pose', self._on_pose, qos_in)
        self.target_xy = None              # nominal landing point in `map` from landing_target
        self.create_subscription(PointStamped, 'landing_target', self._on_target, QoSProfile(
            depth=1, durability=DurabilityPolicy.TRANSIENT_LOCAL))

        self.pub_points = self.create_publisher(PointCloud2, 'points', 5)
        self.pub_depth = self.create_publisher(Image, 'depth', 5)
        self.pub_conf = self.create_publisher(Image, 'confidence', 5)
        self.pub_disp = self.create_publisher(DisparityImage, 'disparity', 5)
        latched = QoSProfile(depth=1, durability=DurabilityPolicy.TRANSIENT_LOCAL)
        self.pub_hazard = self.create_publisher(OccupancyGrid, 'hazard_map', latched)
        self.pub_site = self.create_publisher(PoseStamped, 'safe_site', 5)
        self.pub_diag = self.create_publisher(DiagnosticArray, '/diagnostics', 10)
        self.create_timer(1.0, self._publish_diagnostics)

        self.out_slot = LatestSlot()       # processed frames waiting for the publisher thread
        self.worker = threading.Thread(target=self._work, name='l3d_worker', daemon=True)
        self.worker.start()
        self.publisher = threading.Thread(target=self._publish_outputs, name='l3d_publisher',
                                          daemon=True)
        self.publisher.start()
        inputs = 'reliable' if self.cfg.qos.reliable else 'best effort'
        self.get_logger().info(f'backend {self.pipeline.active_backend}, '
                               f'sync {self.cfg.sync.mode}, inputs {inputs}')
        if self.pipeline.init_fault:
            self.get_logger().error(self.pipeline.init_fault)

    # -- parameters ---------------------------------------------------------------------------
    def _config_from_parameters(self, overrides=None) -> StereoNodeConfig:
        flat = {name: self.get_parameter(name).value for name in flatten(StereoNodeConfig())}
        flat.update(overrides or {})
        return from_dict(StereoNodeConfig, unflatten(flat), NODE_NAME)

    def _on_set_parameters(self, params) -> SetParametersResult:
        fixed = sorted(p.name for p in params if p.name.startswith(STARTUP_ONLY))
        if fixed:
            return SetParametersResult(successful=False, reason=(
                f'{", ".join(fixed)}: set at start-up only (the synchroniser and the '
                'subscriptions are made then); restart the node with the new value'))
        try:
            cfg = self._config_from_parameters({p.name: p.value for p in params})
        except ValueError as exc:
            return SetParametersResult(successful=False, reason=str(exc))
        self._pending_cfg = cfg            # applied by the worker between two frames
        return SetParametersResult(successful=True)

    # -- inputs -------------------------------------------------------------------------------
    def _on_input(self, stream: str):
        def callback(msg):
            self.health.arrived(stream, time.monotonic())
            with self.lock:
                matched = self.sync.add(stream, conv.stamp_to_ns(msg.header.stamp), msg)
            if matched is not None:
                self.slot.put(matched)
        return callback

    def _on_pose(self, msg: PoseStamped) -> None:
        if msg.header.frame_id not in ('', MAP_FRAME):
            self._fault(f'camera_pose rejected: frame {msg.header.frame_id!r}; expected the '
                        f'left optical frame in {MAP_FRAME!r} (INTERFACES.md section 5)')
            return
        try:
            self.poses.append((conv.stamp_to_ns(msg.header.stamp),
                               *conv.pose_stamped_to_rt(msg)))
        except ValueError as exc:
            self._fault(f'camera_pose rejected: {exc}')

    def _pose_at(self, stamp_ns: int):
        """The camera_pose of the pair's stamp (waited for up to POSE_WAIT_S), else the nearest
        within sync.max_age_s, else None.

        None while no pose ever came means the nadir assumption (INTERFACES.md section 5);
        a pose stream that stopped or lags beyond max_age_s is a fault, and the frame is judged
        alone (nadir) rather than fused into the map at a wrong place.
        """
        if not self.poses:
            return None
        deadline = time.monotonic() + POSE_WAIT_S       # the pose of this very stamp may lag
        while not any(p[0] == stamp_ns for p in list(self.poses)) and \
                time.monotonic() < deadline:
            time.sleep(0.005)
        stamp, R, t = min(list(self.poses), key=lambda p: abs(p[0] - stamp_ns))  # noqa: N806
        if abs(stamp - stamp_ns) > self.cfg.sync.max_age_s * 1e9:
            self._fault(f'no camera_pose within sync.max_age_s={self.cfg.sync.max_age_s} s of '
                        f'the pair at {stamp_ns} ns (nearest {stamp} ns): frame judged alone')
            return None
        return R, t

    def _on_target(self, msg: PointStamped) -> None:
        xy = np.array([msg.point.x, msg.point.y], np.float64)
        if msg.header.frame_id not in ('', MAP_FRAME) or not np.isfinite(xy).all():
            self._fault(f'landing_target rejected: frame {msg.header.frame_id!r}, xy {xy}; '
                        f'expected finite coordinates in {MAP_FRAME!r}')
            return
        self.target_xy = xy

    def _fault(self, text: str) -> None:
        self.health.fault(text)
        self.get_logger().error(text, throttle_duration_sec=1.0)

    # -- processing ---------------------------------------------------------------------------
    def _work(self) -> None:
        while rclpy.ok():
            item = self.slot.take(timeout_s=0.5)
            if item is None:
                continue
            if self._pending_cfg is not None:
                self.cfg, self._pending_cfg = self._pending_cfg, None
                self.pipeline = StereoPipeline(self.cfg)
                if self.pipeline.init_fault:
                    self._fault(self.pipeline.init_fault)
            try:
                self._process(item)
            except Exception as exc:  # noqa: BLE001 - a bad frame must not stop the node
                self._fault(f'frame dropped: {type(exc).__name__}: {exc}')

    def _check_timeline(self, pair) -> None:
        """Refuse a frozen camera; start a new map when time runs backwards."""
        checksum = (zlib.crc32(pair.left.data), zlib.crc32(pair.right.data))
        if checksum == self.last_checksum:
            raise ValueError('frozen camera: both images are identical to the previous pair '
                             f'(stamp {pair.stamp_ns} ns); expected a new exposure')
        self.last_checksum = checksum
        if self.last_stamp_ns is not None and pair.stamp_ns < self.last_stamp_ns:
            self._fault(f'time went backwards ({self.last_stamp_ns} -> {pair.stamp_ns} ns): '
                        'descent map cleared')
            self.pipeline.reset_map()
        self.last_stamp_ns = pair.stamp_ns

    def _process(self, pair) -> None:
        self._check_timeline(pair)
        pose = self._pose_at(pair.stamp_ns)
        t0 = time.perf_counter()
        conv.check_camera_frames(pair.left, pair.left_info, 'left')
        conv.check_camera_frames(pair.right, pair.right_info, 'right')
        calib = conv.camera_infos_to_calib(pair.left_info, pair.right_info)
        left, right = conv.image_to_array(pair.left), conv.image_to_array(pair.right)
        t1 = time.perf_counter()
        out = self.pipeline.process(left, right, calib, pose, self.target_xy)
        for text in out.faults:
            self._fault(text)
        self.out_slot.put((pair.left.header, calib, out))
        t2 = time.perf_counter()
        self.health.frame_done(1e3 * (t2 - t0), dict(out.timings_ms, decode=1e3 * (t1 - t0)),
                               scene_values(out.result.depth_m, out.hazard.occupancy,
                                            out.hazard.site is not None, out.binning,
                                            out.backend, out.backend_values))

    def _publish_outputs(self) -> None:
        """Publisher thread: a slow reliable subscriber delays only the outputs, never the
        processing; when it falls behind, the newest frame's outputs win (counted)."""
        while rclpy.ok() and not self.out_slot.closed:
            item = self.out_slot.take(timeout_s=0.5)
            if item is None:
                continue
            try:
                self._publish(*item)
            except Exception as exc:  # noqa: BLE001 - a failed publish must not stop the node
                self._fault(f'outputs not published: {type(exc).__name__}: {exc}')

    def _publish(self, header, calib, out) -> None:
        pubs = {'hazard_map': self.pub_hazard, 'safe_site': self.pub_site,
                'depth': self.pub_depth, 'confidence': self.pub_conf,
                'disparity': self.pub_disp, 'points': self.pub_points}
        for topic, msg in output_messages(header, calib, out, self.cfg).items():
            pubs[topic].publish(msg)

    # -- diagnostics --------------------------------------------------------------------------
    def _publish_diagnostics(self) -> None:
        drops = dict(self.sync.snapshot(), replaced=self.slot.replaced,
                     outputs_replaced=self.out_slot.replaced)
        report = self.health.report(self.pipeline.active_backend, self.cfg.backend,
                                    self.pipeline.model_sha256, bool(self.pipeline.init_fault),
                                    drops, (self._pending_cfg or self.cfg).input_timeout_s)
        if report.level != OK:
            self.get_logger().warning(report.message, throttle_duration_sec=5.0)
        status = DiagnosticStatus(level=LEVELS[report.level], hardware_id='l3d_ros',
                                  name=f'{self.get_name()}: stereo pipeline',
                                  message=report.message,
                                  values=[KeyValue(key=k, value=v)
                                          for k, v in report.values.items()])
        msg = DiagnosticArray(status=[status])
        msg.header.stamp = self.get_clock().now().to_msg()
        self.pub_diag.publish(msg)


def output_messages(header, calib, out, cfg: StereoNodeConfig) -> dict:
    """topic -> message of one processed frame, the decision (hazard_map, safe_site) first.

    Outputs carry the left image's header; hazard_map and safe_site its stamp in `map`;
    safe_site is absent when no site is safe. `l3d bench` times exactly these messages.
    """
    map_header = Header(stamp=header.stamp, frame_id=MAP_FRAME)
    hazard, res = out.hazard, out.result
    grid = hazard.layers.grid
    msgs = {'hazard_map': conv.to_occupancy_grid(hazard.occupancy, grid.cell_m,
                                                 grid.origin_xy_m, map_header)}
    if hazard.site is not None:
        x, y = hazard.site.xy_m
        msgs['safe_site'] = conv.rt_to_pose_stamped(
            np.eye(3), np.array([x, y, hazard.site.height_m]), map_header)
    msgs['depth'] = conv.array_to_image(res.depth_m, '32FC1', header)
    msgs['confidence'] = conv.array_to_image(res.confidence, '32FC1', header)
    fb = calib.fx * calib.baseline_m
    msgs['disparity'] = conv.to_disparity_image(res.disparity_px, calib, header,
                                                fb / cfg.depth_max_m, fb / cfg.depth_min_m)
    if cfg.publish_points:
        msgs['points'] = conv.points_to_pointcloud2(out.points_m, out.intensity,
                                                    res.confidence, header)
    return msgs


def main(args=None) -> None:
    keep_freed_memory()
    rclpy.init(args=args)
    node = None
    try:
        node = StereoNode()
        rclpy.spin(node)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except ValueError as exc:   # invalid parameters: refuse to start, say which and why
        print(f'{NODE_NAME}: invalid parameters: {exc}', file=sys.stderr)
        sys.exit(1)
    finally:
        if node is not None:
            node.slot.close()
            node.out_slot.close()
            node.destroy_node()
        rclpy.try_shutdown()


if __name__ == '__main__':
    main()

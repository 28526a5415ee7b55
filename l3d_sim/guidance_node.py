"""`l3d_guidance`: navigation + hazard maps in, thrust acceleration commands out.

Inputs: `lander/odom` (nav_msgs/Odometry, navigation estimate of the footpad centre in `map`),
`lander/altimeter` (sensor_msgs/Range, height above the ground below), `hazard_map` and
`safe_site` of `l3d_stereo`. Outputs: `lander/accel_cmd` (geometry_msgs/Vector3Stamped, thrust
acceleration [m/s^2] in `map`, stamped with the odometry it answers) and `lander/target`
(PoseStamped: the target after each scan, stamped with that scan's image stamp; the simulator
waits for it before time moves on). The logic is l3d_sim.guidance; this file is transport.

A scan is decided when its hazard_map and its safe_site (same stamp) are in, or GRACE_S of
wall time after the hazard_map when no safe_site follows (the node publishes none when nothing
is safe); the simulator holds sim time meanwhile, so the decision does not depend on CPU speed.
"""
import sys
import time

from geometry_msgs.msg import PointStamped, PoseStamped, Vector3Stamped
from nav_msgs.msg import OccupancyGrid, Odometry
import numpy as np
import rclpy
from rclpy.clock import Clock, ClockType
from rclpy.executors import ExternalShutdownException
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import Range

from l3d_ros import msg as conv
from l3d_ros.config import load_node_config
from l3d_ros.hazard import GridGeometry
from l3d_sim.guidance import Guidance
from l3d_sim.mission_config import load_mission_config, params_file_from_args

NODE_NAME = 'l3d_guidance'
# wall time to wait for a safe_site after its hazard_map: absent means none is safe, but a lossy
# link delivers a resent safe_site one round trip later
GRACE_S = 1.0
ORPHAN_S = 2.0          # a safe_site whose hazard_map never came is decided after this


class GuidanceNode(Node):

    def __init__(self, params_file=None):
        super().__init__(NODE_NAME)
        mission = load_mission_config(params_file)
        hazard = load_node_config(params_file).hazard
        self.guidance = Guidance(mission.guidance, hazard,
                                 np.array(mission.guidance.nominal_xy_m),
                                 mission.lander.gravity_m_s2)
        reliable = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
        latched = QoSProfile(depth=1, durability=DurabilityPolicy.TRANSIENT_LOCAL)
        self.pub_cmd = self.create_publisher(Vector3Stamped, 'lander/accel_cmd', reliable)
        self.pub_target = self.create_publisher(PoseStamped, 'lander/target', reliable)
        # the nominal landing point, latched: l3d_stereo picks safe_site near it
        self.pub_nominal = self.create_publisher(PointStamped, 'landing_target', latched)
        nominal = PointStamped()
        nominal.header.frame_id = 'map'
        nominal.point.x, nominal.point.y = (float(v) for v in mission.guidance.nominal_xy_m)
        self.pub_nominal.publish(nominal)
        self.create_subscription(Odometry, 'lander/odom', self._on_odom, reliable)
        self.create_subscription(Range, 'lander/altimeter', self._on_altimeter, reliable)
        self.create_subscription(OccupancyGrid, 'hazard_map', self._on_hazard, latched)
        self.create_subscription(PoseStamped, 'safe_site', self._on_site, reliable)
        self.altitude: dict[int, float] = {}        # stamp ns -> altimeter height [m]
        self.odom: dict[int, Odometry] = {}
        self.nav = (np.zeros(3), 0.0)               # latest (position, altitude)
        self.hazard: dict[int, tuple[float, OccupancyGrid]] = {}   # stamp -> (wall s, msg)
        self.site: dict[int, tuple[float, PoseStamped]] = {}
        self.decided: set[int] = set()
        self.create_timer(0.05, self._decide_pending,
                          clock=Clock(clock_type=ClockType.STEADY_TIME))

    # -- control: one command per (odometry, altimeter) pair of the same stamp ---------------
    def _on_altimeter(self, msg: Range) -> None:
        stamp = conv.stamp_to_ns(msg.header.stamp)
        self.altitude[stamp] = float(msg.range)
        self._control(stamp)

    def _on_odom(self, msg: Odometry) -> None:
        stamp = conv.stamp_to_ns(msg.header.stamp)
        self.odom[stamp] = msg
        self._control(stamp)

    def _control(self, stamp: int) -> None:
        if stamp not in self.odom or stamp not in self.altitude:
            return
        odom, altitude = self.odom.pop(stamp), self.altitude.pop(stamp)
        for old in [s for s in self.odom if s < stamp]:
            del self.odom[old]
        for old in [s for s in self.altitude if s < stamp]:
            del self.altitude[old]
        p, v = odom.pose.pose.position, odom.twist.twist.linear
        position = np.array([p.x, p.y, p.z])
        self.nav = (position, altitude)
        accel = self.guidance.command(position, np.array([v.x, v.y, v.z]), altitude)
        out = Vector3Stamped()
        out.header = odom.header
        out.vector.x, out.vector.y, out.vector.z = (float(a) for a in accel)
        self.pub_cmd.publish(out)

    # -- HDA: hazard_map + safe_site of one scan -> retarget decision -------------------------
    def _on_hazard(self, msg: OccupancyGrid) -> None:
        self.hazard[conv.stamp_to_ns(msg.header.stamp)] = (time.monotonic(), msg)
        self._decide_pending()

    def _on_site(self, msg: PoseStamped) -> None:
        self.site[conv.stamp_to_ns(msg.header.stamp)] = (time.monotonic(), msg)
        self._decide_pending()

    def _decide_pending(self) -> None:
        now = time.monotonic()
        for stamp in sorted(set(self.hazard) | set(self.site)):
            if stamp in self.decided:
                continue
            hazard, site = self.hazard.get(stamp), self.site.get(stamp)
            ready = (hazard is not None and (site is not None or now - hazard[0] > GRACE_S)
                     or site is not None and now - site[0] > ORPHAN_S)
            if ready:
                self._decide(stamp, hazard and hazard[1], site and site[1])

    def _decide(self, stamp: int, hazard: OccupancyGrid | None, site: PoseStamped | None):
        self.decided.add(stamp)
        occupancy, grid = None, None
        if hazard is not None:
            occupancy, cell_m, origin = conv.occupancy_grid_to_array(hazard)
            grid = GridGeometry(origin, cell_m, occupancy.shape)
        site_xy = None
        if site is not None:
            site_xy = np.array([site.pose.position.x, site.pose.position.y])
        position, altitude = self.nav
        g = self.guidance
        decision = g.on_hazard(occupancy, grid, site_xy, position, altitude)
        left = g.cfg.look_scans_max - g.looks
        looking = (f', nothing certified: holding height ({left} looks left)'
                   if g.phase == 'look' else '')
        self.get_logger().info(f'scan {stamp * 1e-9:.1f} s: {decision}, target '
                               f'{np.round(g.target_xy_m, 2).tolist()}{looking}')
        x, y = g.target_xy_m
        header = hazard.header if hazard is not None else site.header
        self.pub_target.publish(conv.rt_to_pose_stamped(np.eye(3), np.array([x, y, 0.0]),
                                                        header))
        self.hazard.pop(stamp, None)
        self.site.pop(stamp, None)


def main(args=None) -> None:
    rclpy.init(args=args)
    node = None
    try:
        node = GuidanceNode(params_file_from_args(sys.argv if args is None else args))
        rclpy.spin(node)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except ValueError as exc:
        print(f'{NODE_NAME}: invalid parameters: {exc}', file=sys.stderr)
        sys.exit(1)
    finally:
        if node is not None:
            node.destroy_node()
        rclpy.try_shutdown()


if __name__ == '__main__':
    main()

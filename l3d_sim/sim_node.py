"""`l3d_sim`: one closed-loop landing on a synthetic terrain, lock-step over ROS 2 topics.

The node owns sim time (`/clock`) and the lander dynamics (l3d_sim.lander). Every control step
(run.control_rate_hz) it publishes `lander/odom` and `lander/altimeter` (navigation estimate,
stamped with sim time) and waits for the guidance's `lander/accel_cmd` of that stamp before it
integrates the step. When the true height crosses one of guidance.scan_altitudes_m, and below
the lowest of them every guidance.look_period_s while the lander hovers above the terminal
altitude (the guidance looking again, l3d_sim.guidance), it renders the stereo pair from the
lander's camera and publishes `camera_pose` (navigation attitude and position, with their
errors), then the images and camera_info, and holds sim time until the guidance answers on
`lander/target` with that stamp. Sim time therefore advances only when the previous output has
arrived (or after a wall-time timeout, counted in the result), so a run is a function of its
seed and not of CPU speed.

Modes (run.mode): `hda` - `l3d_stereo` computes the hazard map from the images; `oracle` -
this node computes it from the rendered true depth with the node's own code
(l3d_ros.site.frame_hazard on a descent-long l3d_ros.dem.DemFusion, as l3d_ros.pipeline does
with poses; exact_depth, i.e. no stereo sigma margins, as `l3d eval --backend oracle`) and
publishes `hazard_map` / `safe_site` itself; `blind` - no scans.
At touchdown the verdict (l3d_sim.lander.touchdown_verdict) and the trajectory are written to
run.result_path (JSON) and beside it (.npz), and the node exits. The result also holds
`sunlit_share`, the share of the true terrain within guidance.divert_max_m of the nominal target
that sees the sun: a diagnostic of the scene (`l3d land` bins its safe rates by it).
"""
from dataclasses import replace
import json
import math
from pathlib import Path
import sys
import threading
import time

from geometry_msgs.msg import PoseStamped, Vector3Stamped
from nav_msgs.msg import OccupancyGrid, Odometry
import numpy as np
import rclpy
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from rosgraph_msgs.msg import Clock
from sensor_msgs.msg import CameraInfo, Image, Range
from std_msgs.msg import Header

from l3d_ros import msg as conv
from l3d_ros.backends.base import finalize
from l3d_ros.config import load_node_config, StereoNodeConfig
from l3d_ros.dem import DemFusion
from l3d_ros.hazard import GridGeometry, hazard_from_dem
from l3d_ros.runtime import keep_freed_memory
from l3d_ros.site import frame_hazard
from l3d_sim import lander as dyn
from l3d_sim.config import load_sim_config, SIM_NODE_NAME, SimConfig
from l3d_sim.groundtruth import crop_dem, map_false_safe, SITE_KEYS, true_margin
from l3d_sim.guidance import target_is_safe
from l3d_sim.mission_config import load_mission_config, MissionConfig, params_file_from_args
from l3d_sim.render import prepare_lighting, render_frame, shadow_mask, sunlit_share
from l3d_sim.terrain import make_terrain, Terrain

T0_NS = 1_000_000_000        # sim time of the first step (stamp 0 reads as "unset" to some tools)
POSE_LEAD_S = 0.05           # wall time between camera_pose and the images it belongs to
REPUBLISH_S = 0.5            # re-send a step's navigation until its command arrives
HAZARD_GRACE_S = 1.0         # wall time a scan's hazard_map may trail the guidance's answer
LOOK_HOVER_M_S = 0.3         # |vertical speed| [m/s] below which the lander is hovering
LOOK_HOVER_CLEARANCE_M = 1.0  # ... and looking, when this far above the terminal altitude [m]
DISCOVERY_S = 30.0           # wall time to wait for the guidance / perception to appear
MAP_FRAME = 'map'


def plant_hazard(terrain: Terrain, kind: str, xy_m) -> Terrain:
    """Terrain with a hazard at `xy_m`: 'boulder' (3 m wide, 1.2 m tall) or 'crater' (12 m
    wide, 2.4 m deep bowl with a 0.4 m rim); 'none' returns `terrain` unchanged."""
    if kind == 'none':
        return terrain
    n, m = terrain.height_m.shape
    x = terrain.origin_xy_m[0] + (np.arange(m) + 0.5) * terrain.cell_m
    y = terrain.origin_xy_m[1] + (np.arange(n) + 0.5) * terrain.cell_m
    r = np.hypot(x[None, :] - xy_m[0], y[:, None] - xy_m[1])
    if kind == 'boulder':
        bump = 1.2 * np.sqrt(np.clip(1.0 - (r / 1.5) ** 2, 0.0, None))
    elif kind == 'crater':
        q = r / 6.0
        bump = np.where(q < 1.0, 2.4 * (q ** 2 - 1.0) + 0.4, 0.4 * np.exp(-8.0 * (q - 1.0)))
    else:
        raise ValueError(f'kind={kind!r}: expected none, boulder or crater')
    return replace(terrain, height_m=(terrain.height_m + bump).astype(np.float32))


def landing_terrain(sim: SimConfig, mission: MissionConfig) -> Terrain:
    """The run's terrain: make_terrain(seed) centred on the nominal target, plus any planted
    hazard there (the same function for the node and for the report)."""
    terrain_seed = int(np.random.SeedSequence([mission.run.seed, 0]).generate_state(1)[0])
    nominal = mission.guidance.nominal_xy_m
    terrain = make_terrain(sim.terrain, terrain_seed, centre_xy_m=tuple(nominal))
    return plant_hazard(terrain, mission.run.target_hazard, nominal)


def map_certifies(hazard_msg: OccupancyGrid | None, target_xy_m: np.ndarray | None,
                  footprint_m: float) -> bool:
    """True when a scan's hazard_map shows every cell within footprint/2 of the target known
    and safe (0..49), as the guidance's own test (`guidance.target_is_safe`)."""
    if hazard_msg is None or target_xy_m is None:
        return False
    occupancy, cell_m, origin = conv.occupancy_grid_to_array(hazard_msg)
    return target_is_safe(occupancy, GridGeometry(origin, cell_m, occupancy.shape),
                          np.asarray(target_xy_m, np.float64), footprint_m)


class SimNode(Node):

    def __init__(self, params_file=None):
        super().__init__(SIM_NODE_NAME)
        self.sim: SimConfig = load_sim_config(params_file)
        self.mission: MissionConfig = load_mission_config(params_file)
        self.node_cfg: StereoNodeConfig = load_node_config(params_file)
        run = self.mission.run
        self.sim = replace(self.sim, sun=replace(self.sim.sun,
                                                 elevation_deg=run.sun_elevation_deg,
                                                 azimuth_deg=run.sun_azimuth_deg))
        reliable = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
        latched = QoSProfile(depth=1, durability=DurabilityPolicy.TRANSIENT_LOCAL)
        self.pub_clock = self.create_publisher(Clock, '/clock', 10)
        self.pub_odom = self.create_publisher(Odometry, 'lander/odom', reliable)
        self.pub_truth = self.create_publisher(Odometry, 'lander/truth', reliable)
        self.pub_alt = self.create_publisher(Range, 'lander/altimeter', reliable)
        self.pub_img = {s: self.create_publisher(Image, f'{s}/image_rect', reliable)
                        for s in ('left', 'right')}
        self.pub_info = {s: self.create_publisher(CameraInfo, f'{s}/camera_info', reliable)
                         for s in ('left', 'right')}
        self.pub_pose = self.create_publisher(PoseStamped, 'camera_pose', reliable)
        if run.mode == 'oracle':
            self.pub_hazard = self.create_publisher(OccupancyGrid, 'hazard_map', latched)
            self.pub_site = self.create_publisher(PoseStamped, 'safe_site', 5)
        else:
            self.create_subscription(OccupancyGrid, 'hazard_map', self._on_hazard, latched)
        self.create_subscription(Vector3Stamped, 'lander/accel_cmd', self._on_cmd, reliable)
        self.create_subscription(PoseStamped, 'lander/target', self._on_target, reliable)
        self.cond = threading.Condition()
        self.cmds: dict[int, np.ndarray] = {}
        self.targets: dict[int, np.ndarray] = {}
        self.hazard_rx: dict[int, tuple[float, OccupancyGrid]] = {}
        self.done = threading.Event()
        self.result: dict | None = None
        self.bias = np.zeros(3)             # the run's navigation position bias [m]
        self._arrays: dict = {}

    # -- inbox ---------------------------------------------------------------------------------
    def _on_cmd(self, msg: Vector3Stamped) -> None:
        with self.cond:
            self.cmds.setdefault(conv.stamp_to_ns(msg.header.stamp),
                                 np.array([msg.vector.x, msg.vector.y, msg.vector.z]))
            self.cond.notify_all()

    def _on_target(self, msg: PoseStamped) -> None:
        with self.cond:
            self.targets[conv.stamp_to_ns(msg.header.stamp)] = np.array(
                [msg.pose.position.x, msg.pose.position.y])
            self.cond.notify_all()

    def _on_hazard(self, msg: OccupancyGrid) -> None:
        with self.cond:
            self.hazard_rx[conv.stamp_to_ns(msg.header.stamp)] = (time.monotonic(), msg)
            self.cond.notify_all()

    def _wait(self, box: dict, stamp: int, timeout_s: float, resend=None):
        deadline = time.monotonic() + timeout_s
        next_send = time.monotonic() + REPUBLISH_S
        with self.cond:
            while stamp not in box:
                now = time.monotonic()
                if now >= deadline or not rclpy.ok(context=self.context):
                    return None
                if resend is not None and now >= next_send:
                    resend()
                    next_send = now + REPUBLISH_S
                self.cond.wait(min(0.05, deadline - now))
            return box[stamp]

    def _wait_for_peers(self) -> bool:
        need = [('sub', 'lander/odom'), ('pub', 'lander/accel_cmd')]
        if self.mission.run.mode == 'hda':
            need += [('sub', 'left/image_rect'), ('pub', 'hazard_map')]
        deadline = time.monotonic() + DISCOVERY_S
        while time.monotonic() < deadline and rclpy.ok(context=self.context):
            if all((self.count_subscribers if kind == 'sub' else self.count_publishers)(t)
                   for kind, t in need):
                time.sleep(0.5)          # let the other side see our endpoints too
                return True
            time.sleep(0.1)
        return False

    # -- the landing ---------------------------------------------------------------------------
    def run_landing(self) -> None:
        try:
            self.result = self._run_landing()
        except Exception as exc:  # noqa: BLE001 - report any failure as the run's result
            self.get_logger().error(f'landing failed: {type(exc).__name__}: {exc}')
            self.result = {'error': f'{type(exc).__name__}: {exc}', 'safe': False}
        self._write(self.result)
        self.done.set()

    def _run_landing(self) -> dict:
        m, run = self.mission, self.mission.run
        g, lc = m.guidance, m.lander
        ss = np.random.SeedSequence([run.seed, 1]).spawn(3)
        nav_rng, sensor_rng, start_rng = (np.random.default_rng(s) for s in ss)
        wall0 = time.monotonic()
        terrain = landing_terrain(self.sim, m)
        lighting = prepare_lighting(terrain, self.sim.sun) if run.mode != 'blind' else None
        nominal = np.array(g.nominal_xy_m, np.float64)
        lit = (lighting.channels[..., 2] if lighting is not None
               else shadow_mask(terrain.height_m, terrain.cell_m, self.sim.sun))
        sunlit = sunlit_share(terrain, lit, nominal, g.divert_max_m)
        ground0 = float(terrain.height_at(*nominal))
        azimuth = start_rng.uniform(0, 2 * math.pi)
        heading = np.array([math.cos(azimuth), math.sin(azimuth), 0.0])
        start = np.array([*nominal, ground0 + g.start_altitude_m]) - g.start_offset_m * heading
        state = dyn.initial_state(lc, start, g.start_speed_m_s * heading
                                  + np.array([0, 0, -0.5 * g.descent_speed_max_m_s]))
        bias = nav_rng.normal(0.0, m.nav.position_bias_sigma_m, 3)
        self.bias = bias
        if not self._wait_for_peers():
            raise RuntimeError(f'peers not discovered within {DISCOVERY_S} s '
                               f'(mode {run.mode}); is the guidance (and l3d_stereo) running?')
        fusion = DemFusion(self.node_cfg.hazard)
        dt = 1.0 / run.control_rate_hz
        dt_ns = int(round(dt * 1e9))
        scans = list(g.scan_altitudes_m) if run.mode != 'blind' else []
        traj, frames, step_timeouts, frame_timeouts = [], [], 0, 0
        last_map, fuel0, last_scan_s = None, state.mass_kg, None
        k = 0
        while True:
            stamp = T0_NS + k * dt_ns
            self.pub_clock.publish(Clock(clock=conv.ns_to_stamp(stamp)))
            ground = float(terrain.height_at(*state.position_m[:2]))
            height = state.position_m[2] - ground
            if math.isnan(ground):
                raise RuntimeError(f'lander left the terrain at {state.position_m[:2]}')
            if height <= 0.0 or state.t_s >= run.max_time_s:
                break
            # the scheduled scans, then one every look_period_s while the lander hovers below
            # them (the guidance looking again) and above the terminal altitude
            # (no scans at all, as in blind mode: last_scan_s stays None)
            scheduled = bool(scans) and height <= scans[0]
            looking = (not scans and last_scan_s is not None
                       and height > g.terminal_altitude_m + LOOK_HOVER_CLEARANCE_M
                       and abs(state.velocity_m_s[2]) <= LOOK_HOVER_M_S
                       and state.t_s >= last_scan_s + g.look_period_s - 1e-9)
            if scheduled or looking:
                if scheduled:
                    scans.pop(0)
                last_scan_s = state.t_s
                frame, hazard_msg = self._scan(terrain, lighting, state, stamp, sensor_rng,
                                               fusion, run.frame_timeout_s)
                frames.append(frame)
                frame_timeouts += int(frame['target_xy_m'] is None)
                last_map = hazard_msg or last_map
            nav = dyn.navigation(state, bias, m.nav, nav_rng)
            altimeter = height + nav_rng.normal(0.0, m.nav.altimeter_sigma_m)
            self._publish_nav(stamp, state, nav, altimeter)
            cmd = self._wait(self.cmds, stamp, run.step_timeout_s,
                             lambda: self._publish_nav(stamp, state, nav, altimeter))
            if cmd is None:
                step_timeouts += 1
                cmd = np.array([0.0, 0.0, lc.gravity_m_s2])   # hold: hover thrust
            with self.cond:
                self.cmds.pop(stamp, None)
            state, thrust = dyn.step(state, cmd, dt, lc)
            traj.append([state.t_s, *state.position_m, *state.velocity_m_s, thrust])
            k += 1
        verdict = dyn.touchdown_verdict(terrain, state, self.node_cfg.hazard, m.touchdown)
        landed = bool(height <= 0.0)
        answered = [f['target_xy_m'] for f in frames if f['target_xy_m'] is not None]
        final_target = answered[-1] if answered else nominal.tolist()
        # the HDA vouched for where it landed: a scan's map showed the final target's whole
        # footprint known and safe (a target held after that scan counts); None without HDA
        certified = None if run.mode == 'blind' else any(
            f['target_certified'] and np.allclose(f['target_xy_m'], final_target, atol=1e-6)
            for f in frames)
        latencies = [f['latency_s'] for f in frames if f['latency_s'] is not None]
        result = {
            'seed': run.seed, 'mode': run.mode, 'target_hazard': run.target_hazard,
            'sun_elevation_deg': run.sun_elevation_deg, 'sun_azimuth_deg': run.sun_azimuth_deg,
            'landed': landed, 'safe': bool(landed and verdict['safe']), **verdict,
            'touchdown_xy_m': state.position_m[:2].tolist(), 'nominal_xy_m': nominal.tolist(),
            'final_target_xy_m': list(final_target),
            'divert_m': float(np.linalg.norm(np.array(final_target) - nominal)),
            'nominal_safe': dyn.site_is_safe(terrain, nominal, self.node_cfg.hazard),
            'certified': certified,
            'sunlit_share': sunlit if math.isfinite(sunlit) else None,
            'fuel_kg': float(fuel0 - state.mass_kg), 'time_s': float(state.t_s),
            'nav_bias_m': bias.tolist(), 'frames': frames, 'step_timeouts': step_timeouts,
            'frame_timeouts': frame_timeouts,
            'perception_latency_s_median': float(np.median(latencies)) if latencies else None,
            'wall_s': time.monotonic() - wall0, 'image_size': [self.sim.rig.width,
                                                               self.sim.rig.height],
        }
        self._arrays = self._report_arrays(terrain, traj, last_map, result)
        # how the last map judged the ground the lander may touch down on (the final target's
        # touchdown disc, footprint + terminal_error_m each side): the cells it graded safe,
        # those truly hazard and those grossly so (l3d_sim.groundtruth.false_safe_cells)
        disc = (final_target, self.node_cfg.hazard.footprint_m / 2 + g.terminal_error_m)
        result.update(zip(SITE_KEYS, map_false_safe(self._arrays, bias[:2], disc)
                          or (None, None, None)))
        return result

    def _publish_nav(self, stamp, state, nav, altimeter) -> None:
        header = Header(stamp=conv.ns_to_stamp(stamp), frame_id=MAP_FRAME)
        for pub, pos, vel in ((self.pub_truth, state.position_m, state.velocity_m_s),
                              (self.pub_odom, nav.position_m, nav.velocity_m_s)):
            odom = Odometry(header=header, child_frame_id='lander')
            p, v = odom.pose.pose.position, odom.twist.twist.linear
            p.x, p.y, p.z = (float(a) for a in pos)
            v.x, v.y, v.z = (float(a) for a in vel)
            pub.publish(odom)
        self.pub_alt.publish(Range(header=header, radiation_type=Range.INFRARED,
                                   min_range=0.0, max_range=1000.0, range=float(altimeter)))

    def _scan(self, terrain, lighting, state, stamp, rng, fusion, timeout_s):
        """Render, publish, wait for the guidance's answer; returns (frame record, map msg)."""
        m = self.mission
        R_true, t_true = dyn.camera_pose(state, m.lander)  # noqa: N806
        frame = render_frame(terrain, self.sim, R_true, t_true, rng, lighting)
        # the camera pose the lander believes: navigation error on position and attitude
        t_nav = t_true + self.bias + rng.normal(0.0, m.nav.position_sigma_m, 3)
        R_nav = dyn.perturb_attitude(R_true, m.nav.attitude_sigma_deg, rng)  # noqa: N806
        header = Header(stamp=conv.ns_to_stamp(stamp), frame_id='l3d_left_optical')
        self.pub_pose.publish(conv.rt_to_pose_stamped(
            R_nav, t_nav, Header(stamp=header.stamp, frame_id=MAP_FRAME)))
        t_pub = time.monotonic()
        hazard_msg = None
        if m.run.mode == 'oracle':
            hazard_msg = self._oracle(frame, R_nav, t_nav, header, fusion)
        else:
            time.sleep(POSE_LEAD_S)
            t_pub = time.monotonic()
            info_l, info_r = conv.calib_to_camera_infos(frame.calib, header.frame_id,
                                                        stamp=header.stamp)
            for side, img in (('left', frame.left), ('right', frame.right)):
                frame_id = f'l3d_{side}_optical'
                self.pub_img[side].publish(conv.array_to_image(
                    img, 'mono8' if img.dtype == np.uint8 else 'mono16',
                    Header(stamp=header.stamp, frame_id=frame_id)))
            self.pub_info['left'].publish(info_l)
            self.pub_info['right'].publish(info_r)
        target = self._wait(self.targets, stamp, timeout_s)
        latency = None
        if m.run.mode == 'oracle':
            latency = time.monotonic() - t_pub
        else:
            # the guidance may answer (it saw the hazard_map) before this node's own copy of
            # the same hazard_map is delivered: give it a moment rather than count it missing
            self._wait(self.hazard_rx, stamp, HAZARD_GRACE_S)
            with self.cond:
                got = self.hazard_rx.pop(stamp, None)
            if got is not None:
                latency, hazard_msg = got[0] - t_pub, got[1]
        height = float(t_true[2] - terrain.height_at(*t_true[:2]))
        record = {'t_s': state.t_s, 'camera_height_m': height, 'latency_s': latency,
                  'target_xy_m': None if target is None else target.tolist(),
                  'target_certified': map_certifies(hazard_msg, target,
                                                    self.node_cfg.hazard.footprint_m)}
        return record, hazard_msg

    def _oracle(self, frame, R_nav, t_nav, header, fusion):  # noqa: N803
        """Ground-truth depth through the node's hazard pipeline; publishes like l3d_stereo."""
        c = self.node_cfg
        depth = frame.depth_m
        result = finalize(depth, np.isfinite(depth).astype(np.float32), frame.calib,
                          c.depth_min_m, c.depth_max_m, c.confidence_min)
        hz = frame_hazard(result, frame.calib, R_nav, t_nav, c.hazard, fusion,
                          np.asarray(self.mission.guidance.nominal_xy_m, np.float64),
                          exact_depth=True)
        map_header = Header(stamp=header.stamp, frame_id=MAP_FRAME)
        grid = hz.layers.grid
        msg = conv.to_occupancy_grid(hz.occupancy, grid.cell_m, grid.origin_xy_m, map_header)
        self.pub_hazard.publish(msg)
        if hz.site is not None:
            x, y = hz.site.xy_m
            self.pub_site.publish(conv.rt_to_pose_stamped(
                np.eye(3), np.array([x, y, hz.site.height_m]), map_header))
        return msg

    def _report_arrays(self, terrain, traj, last_map, result) -> dict:
        """Trajectory, the last perceived hazard map and the true hazard over its extent."""
        arrays = {'trajectory': np.asarray(traj, np.float64).reshape(-1, 8)}
        pts = [result['nominal_xy_m'], result['touchdown_xy_m']]
        if last_map is not None:
            occ, cell, origin = conv.occupancy_grid_to_array(last_map)
            arrays.update(map_occupancy=occ, map_cell_m=cell, map_origin_xy_m=origin)
            pts += [origin, (origin[0] + occ.shape[1] * cell, origin[1] + occ.shape[0] * cell)]
        pts = np.array(pts, np.float64)
        lo, hi = pts.min(axis=0) - 8.0, pts.max(axis=0) + 8.0
        hc = self.node_cfg.hazard
        crop = crop_dem(terrain, (lo[0], hi[0]), (lo[1], hi[1]), hc.cell_m)
        layers = hazard_from_dem(crop.height_m, crop.cell_m, hc, origin_xy_m=crop.origin_xy_m,
                                 exact_roughness=True, unseen_patches=False)   # exact margins
        arrays.update(gt_hazard=layers.hazard, gt_margin=true_margin(layers),
                      gt_cell_m=layers.grid.cell_m, gt_origin_xy_m=layers.grid.origin_xy_m,
                      gt_height_m=crop.height_m)
        return arrays

    def _write(self, result: dict) -> None:
        path = self.mission.run.result_path
        if not path:
            self.get_logger().info(f'landing: {json.dumps(result)[:400]}')
            return
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(json.dumps(result, indent=1) + '\n')
        if self._arrays:
            np.savez_compressed(Path(path).with_suffix('.npz'), **self._arrays)


def main(args=None) -> None:
    keep_freed_memory()
    rclpy.init(args=args)
    node = None
    try:
        node = SimNode(params_file_from_args(sys.argv if args is None else args))
        executor = SingleThreadedExecutor()
        executor.add_node(node)
        worker = threading.Thread(target=node.run_landing, name='l3d_sim_landing', daemon=True)
        worker.start()
        while rclpy.ok() and not node.done.is_set():
            executor.spin_once(timeout_sec=0.05)
        executor.spin_once(timeout_sec=0.2)    # flush the last messages
        if node.result is not None:
            keys = ('mode', 'seed', 'safe', 'landed', 'divert_m', 'fuel_kg', 'error')
            print(f'{SIM_NODE_NAME}: {json.dumps({k: node.result.get(k) for k in keys})}')
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except ValueError as exc:
        print(f'{SIM_NODE_NAME}: invalid parameters: {exc}', file=sys.stderr)
        sys.exit(1)
    finally:
        if node is not None:
            node.destroy_node()
        rclpy.try_shutdown()


__all__ = ['SimNode', 'landing_terrain', 'plant_hazard']


if __name__ == '__main__':
    main()

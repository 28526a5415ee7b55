"""Lander dynamics, navigation errors and the touchdown verdict (pure numpy).

The lander is a point mass in `map` (z up) whose position is the centre of its footpad plane.
Its main engine pushes along the body axis `thrust_dir` (a unit vector, +z when upright); the
axis slews towards the commanded direction at most `attitude_rate_max_deg_s` and never tilts
more than `tilt_max_deg` from vertical. Thrust is clipped to [thrust_min_n, thrust_max_n] and
burns propellant at T / (Isp g0). Over one step the thrust (magnitude and axis) is constant,
so the step is integrated exactly: the velocity change is the rocket equation
v_e ln(m0 / m1) along the axis plus g dt, and the position change its closed-form integral.
"""
from dataclasses import dataclass
import math

import numpy as np

from l3d_ros.config import HazardConfig
from l3d_ros.dataset import HAZARD_SAFE
from l3d_ros.hazard import hazard_from_dem
from l3d_sim.groundtruth import crop_dem
from l3d_sim.mission_config import LanderConfig, NavConfig, TouchdownConfig
from l3d_sim.terrain import Terrain

UP = np.array([0.0, 0.0, 1.0])


@dataclass(frozen=True)
class LanderState:
    t_s: float
    position_m: np.ndarray      # (3,) footpad centre in `map` [m]
    velocity_m_s: np.ndarray    # (3,) [m/s]
    mass_kg: float
    thrust_dir: np.ndarray      # (3,) unit body axis in `map` (+z upright)

    def propellant_kg(self, cfg: LanderConfig) -> float:
        return max(0.0, self.mass_kg - cfg.dry_mass_kg)


def initial_state(cfg: LanderConfig, position_m, velocity_m_s) -> LanderState:
    """Upright, fully fuelled lander at `position_m` [m] moving at `velocity_m_s` [m/s]."""
    return LanderState(0.0, np.asarray(position_m, np.float64).reshape(3).copy(),
                       np.asarray(velocity_m_s, np.float64).reshape(3).copy(),
                       cfg.dry_mass_kg + cfg.propellant_kg, UP.copy())


def _rotate_towards(a: np.ndarray, b: np.ndarray, max_angle_rad: float) -> np.ndarray:
    """Unit vector from unit `a` towards unit `b` by at most `max_angle_rad` (great circle)."""
    angle = math.acos(float(np.clip(a @ b, -1.0, 1.0)))
    if angle <= max_angle_rad:
        return b.copy()
    axis = b - (a @ b) * a
    norm = np.linalg.norm(axis)
    if norm < 1e-12:                                 # opposite: any perpendicular will do
        axis = np.cross(a, [1.0, 0.0, 0.0] if abs(a[0]) < 0.9 else [0.0, 1.0, 0.0])
        norm = np.linalg.norm(axis)
    axis = axis / norm
    return math.cos(max_angle_rad) * a + math.sin(max_angle_rad) * axis


def limit_tilt(direction: np.ndarray, tilt_max_deg: float) -> np.ndarray:
    """Unit vector `direction` pulled back into the cone of `tilt_max_deg` around +z."""
    d = np.asarray(direction, np.float64)
    d = d / np.linalg.norm(d)
    return _rotate_towards(UP, d, math.radians(tilt_max_deg))


def step(state: LanderState, accel_cmd_m_s2: np.ndarray, dt_s: float,
         cfg: LanderConfig) -> tuple[LanderState, float]:
    """Advance `dt_s` [s] under a commanded thrust acceleration (3,) [m/s^2] in `map`.

    The command is what the engine should add to gravity; a zero command shuts the engine
    down. Returns (new state, applied thrust [N]). Limits: axis tilt and slew rate, throttle
    range, and the propellant left (the burn is shortened to what remains).
    """
    if not dt_s > 0:
        raise ValueError(f'dt_s={dt_s!r}: expected > 0 seconds')
    cmd = np.asarray(accel_cmd_m_s2, np.float64).reshape(3)
    if not np.isfinite(cmd).all():
        raise ValueError(f'accel_cmd_m_s2={cmd!r}: expected finite values')
    m0 = state.mass_kg
    demand = float(np.linalg.norm(cmd)) * m0
    axis = state.thrust_dir
    if demand > 0:
        wanted = limit_tilt(cmd, cfg.tilt_max_deg)
        axis = _rotate_towards(axis, wanted, math.radians(cfg.attitude_rate_max_deg_s) * dt_s)
    thrust = 0.0 if demand <= 0 else float(np.clip(demand, cfg.thrust_min_n, cfg.thrust_max_n))
    ve = cfg.exhaust_speed_m_s
    burn_s = dt_s
    prop = state.propellant_kg(cfg)
    if thrust > 0 and thrust * dt_s / ve > prop:     # propellant runs out within the step
        burn_s = prop * ve / thrust
    g = np.array([0.0, 0.0, -cfg.gravity_m_s2])
    dv, dx = np.zeros(3), np.zeros(3)
    m1 = m0
    if thrust > 0 and burn_s > 0:
        k = thrust / ve / m0 * burn_s                # fraction of the mass burnt, < 1
        m1 = m0 * (1.0 - k)
        dv_burn = -ve * math.log1p(-k)               # rocket equation
        # closed form of the integral of -ve ln(1 - k t / burn) over [0, burn]
        dx_burn = ve * burn_s * (1.0 + (1.0 - k) * math.log1p(-k) / k)
        dv = dv_burn * axis
        dx = dx_burn * axis + dv * (dt_s - burn_s)   # coast after a burn-out inside the step
    v0 = state.velocity_m_s
    position = state.position_m + v0 * dt_s + 0.5 * g * dt_s ** 2 + dx
    velocity = v0 + g * dt_s + dv
    new = LanderState(state.t_s + dt_s, position, velocity, m1, axis)
    return new, thrust if burn_s == dt_s else thrust * burn_s / dt_s


def camera_pose(state: LanderState, cfg: LanderConfig) -> tuple[np.ndarray, np.ndarray]:
    """(R_world_cam, t_world_cam) of the left optical frame: nadir-looking, fixed to the body.

    Upright, the camera is `l3d_ros.geometry.nadir_pose`'s (x = map +x, y = map -y, z down);
    a tilted body turns it by the smallest rotation taking +z to `thrust_dir`.
    """
    nadir = np.array([[1.0, 0.0, 0.0], [0.0, -1.0, 0.0], [0.0, 0.0, -1.0]])
    b = state.thrust_dir / np.linalg.norm(state.thrust_dir)
    axis = np.cross(UP, b)
    s, c = float(np.linalg.norm(axis)), float(UP @ b)
    if s < 1e-12:
        rot = np.eye(3)
    else:
        k = axis / s
        kx = np.array([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]])
        rot = np.eye(3) + s * kx + (1 - c) * kx @ kx
    return rot @ nadir, state.position_m + cfg.camera_height_m * b


@dataclass(frozen=True)
class NavSolution:
    position_m: np.ndarray      # (3,) estimated footpad centre [m]
    velocity_m_s: np.ndarray    # (3,)


def navigation(state: LanderState, bias_m: np.ndarray, cfg: NavConfig,
               rng: np.random.Generator) -> NavSolution:
    """Estimated state: truth + the run's constant bias + white noise."""
    return NavSolution(state.position_m + bias_m + rng.normal(0, cfg.position_sigma_m, 3),
                       state.velocity_m_s + rng.normal(0, cfg.velocity_sigma_m_s, 3))


def perturb_attitude(R: np.ndarray, sigma_deg: float,  # noqa: N803
                     rng: np.random.Generator) -> np.ndarray:
    """(3, 3) rotation `R` composed with a small random rotation of std `sigma_deg` per axis."""
    w = np.radians(rng.normal(0.0, sigma_deg, 3))
    angle = float(np.linalg.norm(w))
    if angle < 1e-15:
        return np.asarray(R, np.float64).copy()
    k = w / angle
    kx = np.array([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]])
    return (np.eye(3) + math.sin(angle) * kx + (1 - math.cos(angle)) * kx @ kx) @ R


def site_is_safe(terrain: Terrain, xy_m: np.ndarray, cfg: HazardConfig) -> bool:
    """INTERFACES.md section 4 on the true terrain: every cell within footprint/2 is safe.

    The terrain is block-averaged to `cfg.cell_m` (`l3d_sim.groundtruth.crop_dem`, the grid
    of the simulator's ground truth) around the site, and judged by `hazard_from_dem`.
    """
    x, y = (float(v) for v in np.asarray(xy_m).reshape(2))
    half = 1.5 * cfg.footprint_m + 2 * cfg.cell_m
    crop = crop_dem(terrain, (x - half, x + half), (y - half, y + half), cfg.cell_m)
    layers = hazard_from_dem(crop.height_m, crop.cell_m, cfg, origin_xy_m=crop.origin_xy_m,
                             unseen_patches=False)
    rows, cols = np.mgrid[0:layers.hazard.shape[0], 0:layers.hazard.shape[1]]
    cx, cy = layers.grid.cell_centre(rows, cols)
    disc = np.hypot(cx - x, cy - y) <= cfg.footprint_m / 2
    return bool(disc.any() and (layers.hazard[disc] == HAZARD_SAFE).all())


def touchdown_verdict(terrain: Terrain, state: LanderState, hazard_cfg: HazardConfig,
                      limits: TouchdownConfig) -> dict:
    """Safe landing = safe ground (section 4) and speeds and tilt within `limits`."""
    v = state.velocity_m_s
    v_h, v_z = float(np.hypot(v[0], v[1])), float(-v[2])
    tilt = math.degrees(math.acos(float(np.clip(state.thrust_dir @ UP, -1, 1))))
    ground_ok = site_is_safe(terrain, state.position_m[:2], hazard_cfg)
    speed_ok = (v_z <= limits.vertical_speed_max_m_s
                and v_h <= limits.horizontal_speed_max_m_s and tilt <= limits.tilt_max_deg)
    return {'safe': bool(ground_ok and speed_ok), 'ground_safe': ground_ok,
            'speed_ok': bool(speed_ok), 'vertical_speed_m_s': v_z,
            'horizontal_speed_m_s': v_h, 'tilt_deg': tilt}


__all__ = ['LanderState', 'initial_state', 'step', 'limit_tilt', 'camera_pose',
           'NavSolution', 'navigation', 'perturb_attitude', 'site_is_safe',
           'touchdown_verdict']

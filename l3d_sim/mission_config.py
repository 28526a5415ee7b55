"""Validated lander, navigation, guidance and campaign parameters: `l3d_lander` in the YAML.

The section `l3d_lander: ros__parameters:` of `config/lunar_stereo.yaml` is read by the
simulator node (dynamics, navigation noise, touchdown limits, run), the guidance node (guidance)
and `l3d land` (campaign). Every default is written once, here; unknown keys are rejected.

Sizing of the defaults: a 1600 kg wet lander (400 kg propellant) with 8 kN of thrust has a
thrust-to-weight ratio of 8000 / (1600 * 1.62) = 3.1 at lunar gravity; hovering takes
m g / (Isp g0) = 1600 * 1.62 / (310 * 9.807) = 0.85 kg/s, so the propellant covers the
~60 s descent from 250 m with a wide margin for diverts.
"""
from dataclasses import dataclass, field
import math
from pathlib import Path

from l3d_ros.config import check, check_positive, load_section

MISSION_SECTION = 'l3d_lander'
G0_M_S2 = 9.80665           # standard gravity, defines Isp [s]
HDA_MODES = ('hda', 'oracle', 'blind')


def _non_negative(name: str, value) -> None:
    check(isinstance(value, (int, float)) and math.isfinite(value) and value >= 0,
          name, value, 'a finite number >= 0')


@dataclass(frozen=True)
class LanderConfig:
    """Point-mass lander with a gimballed-by-attitude main engine."""

    gravity_m_s2: float = 1.62          # lunar surface gravity [m/s^2]
    dry_mass_kg: float = 1200.0
    propellant_kg: float = 400.0
    thrust_max_n: float = 8000.0
    thrust_min_n: float = 500.0         # throttle floor while the engine burns [N]
    isp_s: float = 310.0                # specific impulse [s]; exhaust speed = isp_s * g0
    tilt_max_deg: float = 30.0          # thrust axis from vertical [deg]
    attitude_rate_max_deg_s: float = 20.0   # thrust axis slew rate [deg/s]
    camera_height_m: float = 2.0        # left optical centre above the footpad plane [m]

    def __post_init__(self):
        for name in ('gravity_m_s2', 'dry_mass_kg', 'thrust_max_n', 'isp_s',
                     'attitude_rate_max_deg_s'):
            check_positive(f'lander.{name}', getattr(self, name))
        for name in ('propellant_kg', 'thrust_min_n', 'camera_height_m'):
            _non_negative(f'lander.{name}', getattr(self, name))
        check(self.thrust_min_n <= self.thrust_max_n, 'lander.thrust_min_n', self.thrust_min_n,
              f'<= thrust_max_n={self.thrust_max_n!r}')
        check(0.0 <= self.tilt_max_deg < 90.0, 'lander.tilt_max_deg', self.tilt_max_deg,
              '[0, 90) degrees')

    @property
    def exhaust_speed_m_s(self) -> float:
        return self.isp_s * G0_M_S2


@dataclass(frozen=True)
class NavConfig:
    """Navigation errors: per-run position bias plus white noise per control step."""

    position_bias_sigma_m: float = 0.5  # constant per run, horizontal and vertical [m]
    position_sigma_m: float = 0.03      # white, per step [m]
    velocity_sigma_m_s: float = 0.02    # white, per step [m/s]
    attitude_sigma_deg: float = 0.02    # camera attitude knowledge, white per frame [deg]
    altimeter_sigma_m: float = 0.10     # laser altimeter, white [m]

    def __post_init__(self):
        for name in ('position_bias_sigma_m', 'position_sigma_m', 'velocity_sigma_m_s',
                     'attitude_sigma_deg', 'altimeter_sigma_m'):
            _non_negative(f'nav.{name}', getattr(self, name))


@dataclass(frozen=True)
class GuidanceConfig:
    """Approach, HDA scans, retargeting and terminal descent."""

    nominal_xy_m: tuple[float, ...] = (0.0, 0.0)  # nominal landing target in `map` [m]
    start_altitude_m: float = 250.0     # initial height above the nominal target [m]
    start_offset_m: float = 60.0        # initial horizontal distance to the target [m]
    start_speed_m_s: float = 8.0        # initial horizontal speed towards the target [m/s]
    gate_altitude_m: float = 150.0      # HDA gate: scans start below it [m]
    scan_altitudes_m: tuple[float, ...] = (150.0, 110.0, 80.0, 55.0, 40.0, 30.0, 24.0, 20.0)
    descent_gain_1_s: float = 0.08      # vertical speed target = gain * height [1/s] ...
    descent_speed_max_m_s: float = 10.0  # ... clipped to [touchdown_speed, this] [m/s]
    touchdown_speed_m_s: float = 1.0    # terminal vertical descent speed [m/s]
    terminal_altitude_m: float = 15.0   # below: hover until over the target, then descend [m]
    terminal_error_m: float = 0.5       # horizontal error that allows the final descent [m]
    position_gain_1_s: float = 0.25     # horizontal speed target = gain * error [1/s]
    lateral_speed_max_m_s: float = 8.0
    velocity_gain_1_s: float = 0.8      # acceleration = gain * speed error [1/s]
    lateral_accel_max_m_s2: float = 0.9
    divert_max_m: float = 60.0          # largest distance of a new target from the nominal [m]
    divert_per_altitude: float = 1.0    # largest retarget step per metre of height [m/m]
    # no site certified: head where >= this share of a footprint-radius disc promises a site
    # (safe cells count 1, unproven ones 1/2; l3d_sim.guidance.survey_share)
    survey_share_min: float = 0.3       # (0 = keep the target) [0, 1]
    survey_distance_weight: float = 0.3  # promise given up per divert_max_m of survey move
    # a scan at the lowest scan altitude certified nothing: hold height and look again, at most
    # this many more hazard maps (0: descend at once; l3d_sim.guidance.Guidance.on_hazard)
    look_scans_max: int = 4
    look_period_s: float = 2.0          # the simulator's frame interval while looking [s]

    def __post_init__(self):
        for name in ('start_altitude_m', 'gate_altitude_m', 'descent_gain_1_s',
                     'descent_speed_max_m_s', 'touchdown_speed_m_s', 'terminal_altitude_m',
                     'terminal_error_m', 'position_gain_1_s', 'lateral_speed_max_m_s',
                     'velocity_gain_1_s', 'lateral_accel_max_m_s2', 'look_period_s'):
            check_positive(f'guidance.{name}', getattr(self, name))
        for name in ('start_offset_m', 'start_speed_m_s', 'divert_max_m',
                     'divert_per_altitude', 'survey_distance_weight'):
            _non_negative(f'guidance.{name}', getattr(self, name))
        check(isinstance(self.look_scans_max, int) and not isinstance(self.look_scans_max, bool)
              and self.look_scans_max >= 0,
              'guidance.look_scans_max', self.look_scans_max, 'an integer >= 0')
        check(0.0 <= self.survey_share_min <= 1.0, 'guidance.survey_share_min',
              self.survey_share_min, 'a share in [0, 1] (0 disables surveying)')
        check(len(self.nominal_xy_m) == 2 and all(math.isfinite(v) for v in self.nominal_xy_m),
              'guidance.nominal_xy_m', self.nominal_xy_m, '[x, y] finite metres')
        check(self.gate_altitude_m <= self.start_altitude_m, 'guidance.gate_altitude_m',
              self.gate_altitude_m, f'<= start_altitude_m={self.start_altitude_m!r}')
        scans = self.scan_altitudes_m
        check(all(self.terminal_altitude_m < a <= self.gate_altitude_m for a in scans)
              and list(scans) == sorted(scans, reverse=True), 'guidance.scan_altitudes_m',
              scans, f'decreasing heights in (terminal_altitude_m, gate_altitude_m] = '
              f'({self.terminal_altitude_m}, {self.gate_altitude_m}] m')
        check(self.touchdown_speed_m_s <= self.descent_speed_max_m_s,
              'guidance.touchdown_speed_m_s', self.touchdown_speed_m_s,
              f'<= descent_speed_max_m_s={self.descent_speed_max_m_s!r}')


@dataclass(frozen=True)
class TouchdownConfig:
    """Touchdown limits beside the terrain hazard of INTERFACES.md section 4."""

    vertical_speed_max_m_s: float = 2.0
    horizontal_speed_max_m_s: float = 0.5
    tilt_max_deg: float = 5.0           # thrust axis from vertical at contact [deg]

    def __post_init__(self):
        for name in ('vertical_speed_max_m_s', 'horizontal_speed_max_m_s', 'tilt_max_deg'):
            check_positive(f'touchdown.{name}', getattr(self, name))


@dataclass(frozen=True)
class RunConfig:
    """One landing: what `l3d land` sets per run (the YAML holds the single-run defaults)."""

    seed: int = 0                       # terrain, sun, navigation noise, sensor noise
    mode: str = 'hda'                   # hda (l3d_stereo) | oracle (true depth) | blind (no HDA)
    sun_elevation_deg: float = 8.0
    sun_azimuth_deg: float = 135.0
    target_hazard: str = 'none'         # none | boulder | crater: planted at the nominal target
    result_path: str = ''               # JSON result (+ .npz beside it); '' = not written
    control_rate_hz: float = 10.0       # dynamics and guidance step rate (sim time)
    max_time_s: float = 200.0           # sim time limit of a landing [s]
    step_timeout_s: float = 10.0        # wall time to wait for a guidance command
    frame_timeout_s: float = 60.0       # wall time to wait for a scan's perception result

    def __post_init__(self):
        check(isinstance(self.seed, int) and self.seed >= 0, 'run.seed', self.seed,
              'an integer >= 0')
        check(self.mode in HDA_MODES, 'run.mode', self.mode, f'one of {HDA_MODES}')
        check(0.0 < self.sun_elevation_deg <= 90.0, 'run.sun_elevation_deg',
              self.sun_elevation_deg, '(0, 90] degrees')
        check(self.target_hazard in ('none', 'boulder', 'crater'), 'run.target_hazard',
              self.target_hazard, "'none', 'boulder' or 'crater'")
        for name in ('control_rate_hz', 'max_time_s', 'step_timeout_s', 'frame_timeout_s'):
            check_positive(f'run.{name}', getattr(self, name))


@dataclass(frozen=True)
class CampaignConfig:
    """How `l3d land` draws runs: sun per run, terrain seed per run."""

    sun_elevation_min_deg: float = 3.0
    sun_elevation_max_deg: float = 15.0
    sun_azimuth_min_deg: float = 0.0
    sun_azimuth_max_deg: float = 360.0
    run_timeout_s: float = 900.0        # wall time of one landing before it is killed [s]

    def __post_init__(self):
        check(0.0 < self.sun_elevation_min_deg <= self.sun_elevation_max_deg <= 90.0,
              'campaign.sun_elevation_min_deg', self.sun_elevation_min_deg,
              f'(0, sun_elevation_max_deg={self.sun_elevation_max_deg!r}] <= 90 degrees')
        check(self.sun_azimuth_min_deg <= self.sun_azimuth_max_deg,
              'campaign.sun_azimuth_min_deg', self.sun_azimuth_min_deg,
              f'<= sun_azimuth_max_deg={self.sun_azimuth_max_deg!r}')
        check_positive('campaign.run_timeout_s', self.run_timeout_s)


@dataclass(frozen=True)
class MissionConfig:
    """Everything under `l3d_lander: ros__parameters:`."""

    lander: LanderConfig = field(default_factory=LanderConfig)
    nav: NavConfig = field(default_factory=NavConfig)
    guidance: GuidanceConfig = field(default_factory=GuidanceConfig)
    touchdown: TouchdownConfig = field(default_factory=TouchdownConfig)
    run: RunConfig = field(default_factory=RunConfig)
    campaign: CampaignConfig = field(default_factory=CampaignConfig)


def load_mission_config(path: Path | None = None) -> MissionConfig:
    """The `l3d_lander` section of the parameter file (default: the package's), validated."""
    return load_section(MissionConfig, MISSION_SECTION, path)


def params_file_from_args(args: list[str] | None) -> Path | None:
    """The `--params-file F` of a node's ROS arguments (how bring-up hands over the file)."""
    args = list(args or [])
    for i, arg in enumerate(args[:-1]):
        if arg == '--params-file':
            return Path(args[i + 1])
    return None


__all__ = ['LanderConfig', 'NavConfig', 'GuidanceConfig', 'TouchdownConfig', 'RunConfig',
           'CampaignConfig', 'MissionConfig', 'load_mission_config', 'params_file_from_args',
           'MISSION_SECTION', 'G0_M_S2', 'HDA_MODES']

"""Validated simulator parameters: the `l3d_sim` section of `config/lunar_stereo.yaml`.

Every default is written once, here; the YAML overrides it and unknown keys are rejected
(`l3d_ros.config.from_dict`). Angles are degrees only where the name says `_deg`.

Rig choice (defaults of `RigConfig`): 512 x 512 px, hfov 40 deg, baseline 2.0 m.
    fx = (W / 2) / tan(hfov / 2) = 256 / tan(20 deg) = 703.4 px;  f B = 1407 px m.
    Range noise per pixel sigma_Z = Z^2 sigma_d / (f B) with sigma_d = 0.25 px (the node's
    hazard.disparity_sigma_px): 0.16 m at 30 m, 0.22 m at 35 m, 0.44 m at 50 m, 4.0 m at 150 m.
    A rock of diameter D = 0.30 m covers n = pi/4 (D f / Z)^2 pixels (28 at 35 m, GSD 5 cm/px),
    so its mean height has sigma_Z / sqrt(n) = Z^3 sigma_d / (sqrt(pi/4) D f^2 B): 0.026 m at
    30 m, 0.041 m at 35 m, 0.12 m at 50 m. Asking 3 sigma <= D / 2 = 0.15 m puts the final
    hazard scan at <= 37 m: a 0.30 m rock is resolved from the 35 m scan, slopes over the 4 m
    footprint (a plane through ~280 px at 150 m) from the top of the descent. A lander-sized
    2 m baseline and a 40 deg field (22 m swath at 30 m, 5 footprints) are the compromise.
"""
from dataclasses import dataclass, field
import math
from pathlib import Path

from l3d_ros.config import check, check_positive, load_section

SIM_NODE_NAME = 'l3d_sim'


def _range(name: str, lo: float, hi: float, lo_name: str, hi_name: str) -> None:
    check(lo <= hi, f'{name}.{hi_name}', hi, f'>= {lo_name}={lo!r}')


@dataclass(frozen=True)
class TerrainConfig:
    """Synthetic lunar terrain: fractal roughness, craters, boulders, regional slope."""

    size_m: float = 200.0               # side of the square DEM [m]
    cell_m: float = 0.10                # DEM spacing [m]; <= 0.10 resolves 0.30 m rocks
    roughness_1m_m: float = 0.04        # RMS height difference at 1 m lag [m] (fBm)
    hurst: float = 0.85                 # fBm Hurst exponent, (0, 1): lag^H scaling
    crater_density_per_ha: float = 200.0  # craters with D >= crater_min_diameter_m per 10^4 m^2
    crater_min_diameter_m: float = 1.0
    crater_max_diameter_m: float = 80.0
    crater_exponent: float = 2.0        # cumulative N(>=D) ~ D^-b (b ~ 2: equilibrium)
    crater_fresh_fraction: float = 0.35  # fresh (d/D 0.2, sharp rim) vs degraded (d/D < 0.1)
    boulder_density_per_m2: float = 0.20  # boulders with D >= boulder_min_diameter_m per m^2
    boulder_min_diameter_m: float = 0.10
    boulder_max_diameter_m: float = 3.0
    boulder_exponent: float = 2.5       # cumulative N(>=D) ~ D^-b
    ejecta_boulders_per_100m2: float = 6.0  # extra blocks around fresh craters D >= 5 m
    regional_slope_max_deg: float = 8.0  # regional tilt drawn uniformly in [0, max]
    albedo_contrast: float = 0.12       # relative std of the albedo field

    def __post_init__(self):
        for name in ('size_m', 'cell_m', 'crater_min_diameter_m', 'crater_max_diameter_m',
                     'boulder_min_diameter_m', 'boulder_max_diameter_m', 'crater_exponent',
                     'boulder_exponent'):
            check_positive(f'terrain.{name}', getattr(self, name))
        check(self.size_m >= 8 * self.cell_m, 'terrain.size_m', self.size_m,
              f'>= 8 * cell_m = {8 * self.cell_m} m')
        check(0.0 < self.hurst < 1.0, 'terrain.hurst', self.hurst, '(0, 1)')
        for name in ('roughness_1m_m', 'crater_density_per_ha', 'boulder_density_per_m2',
                     'ejecta_boulders_per_100m2', 'albedo_contrast'):
            check(getattr(self, name) >= 0, f'terrain.{name}', getattr(self, name), '>= 0')
        check(0.0 <= self.crater_fresh_fraction <= 1.0, 'terrain.crater_fresh_fraction',
              self.crater_fresh_fraction, '[0, 1]')
        check(0.0 <= self.regional_slope_max_deg < 45.0, 'terrain.regional_slope_max_deg',
              self.regional_slope_max_deg, '[0, 45) degrees')
        _range('terrain', self.crater_min_diameter_m, self.crater_max_diameter_m,
               'crater_min_diameter_m', 'crater_max_diameter_m')
        _range('terrain', self.boulder_min_diameter_m, self.boulder_max_diameter_m,
               'boulder_min_diameter_m', 'boulder_max_diameter_m')


@dataclass(frozen=True)
class RigConfig:
    """Rectified stereo camera pair; the derivation of the defaults is in the module docstring."""

    width: int = 512                    # [px]
    height: int = 512                   # [px]
    hfov_deg: float = 40.0              # horizontal field of view [deg]
    baseline_m: float = 2.0             # left -> right optical centre along left +x [m]
    tilt_deg: float = 0.0               # mounting tilt of the optical axis from nadir [deg]
    noise_sigma_dn: float = 1.0         # read noise [DN of the output bit depth]
    gain: float = 1.0                   # multiplies the auto-exposure (1: 99.5 pct -> 85 %)
    bit_depth: int = 8                  # 8 (uint8 PNG) or 16 (uint16 PNG)

    def __post_init__(self):
        for name in ('width', 'height'):
            check(isinstance(getattr(self, name), int) and 8 <= getattr(self, name) <= 8192,
                  f'rig.{name}', getattr(self, name), 'an integer in [8, 8192] pixels')
        check(0.0 < self.hfov_deg < 170.0, 'rig.hfov_deg', self.hfov_deg, '(0, 170) degrees')
        check_positive('rig.baseline_m', self.baseline_m)
        check(0.0 <= self.tilt_deg < 60.0, 'rig.tilt_deg', self.tilt_deg, '[0, 60) degrees')
        check(self.noise_sigma_dn >= 0, 'rig.noise_sigma_dn', self.noise_sigma_dn, '>= 0 DN')
        check_positive('rig.gain', self.gain)
        check(self.bit_depth in (8, 16), 'rig.bit_depth', self.bit_depth, '8 or 16')

    @property
    def fx(self) -> float:
        """Focal length [px] of the pinhole with this field of view (square pixels)."""
        return (self.width / 2) / math.tan(math.radians(self.hfov_deg) / 2)


@dataclass(frozen=True)
class SunConfig:
    """Sun direction in `map`: azimuth from +x towards +y, elevation above the xy plane."""

    elevation_deg: float = 8.0          # polar landing sites: 1..10 deg
    azimuth_deg: float = 135.0
    ambient: float = 0.01               # earthshine/scatter, fraction of the flat-lit radiance

    def __post_init__(self):
        check(0.0 < self.elevation_deg <= 90.0, 'sun.elevation_deg', self.elevation_deg,
              '(0, 90] degrees')
        check(math.isfinite(self.azimuth_deg), 'sun.azimuth_deg', self.azimuth_deg,
              'a finite angle in degrees')
        check(0.0 <= self.ambient < 1.0, 'sun.ambient', self.ambient, '[0, 1)')


@dataclass(frozen=True)
class DatasetConfig:
    """How `l3d sim dataset` draws the pose and sun of each pair."""

    altitude_min_m: float = 30.0
    altitude_max_m: float = 150.0
    tilt_max_deg: float = 5.0           # off-nadir tilt, uniform in [0, max], random direction
    yaw_max_deg: float = 20.0           # yaw about the vertical, uniform in [-max, max]
    sun_elevation_min_deg: float = 2.0
    sun_elevation_max_deg: float = 12.0
    sun_azimuth_min_deg: float = 0.0
    sun_azimuth_max_deg: float = 360.0

    def __post_init__(self):
        check_positive('dataset.altitude_min_m', self.altitude_min_m)
        _range('dataset', self.altitude_min_m, self.altitude_max_m, 'altitude_min_m',
               'altitude_max_m')
        check(0.0 <= self.tilt_max_deg < 45.0, 'dataset.tilt_max_deg', self.tilt_max_deg,
              '[0, 45) degrees')
        check(0.0 <= self.yaw_max_deg <= 180.0, 'dataset.yaw_max_deg', self.yaw_max_deg,
              '[0, 180] degrees')
        check(0.0 < self.sun_elevation_min_deg <= 90.0, 'dataset.sun_elevation_min_deg',
              self.sun_elevation_min_deg, '(0, 90] degrees')
        _range('dataset', self.sun_elevation_min_deg, self.sun_elevation_max_deg,
               'sun_elevation_min_deg', 'sun_elevation_max_deg')
        check(self.sun_elevation_max_deg <= 90.0, 'dataset.sun_elevation_max_deg',
              self.sun_elevation_max_deg, '<= 90 degrees')
        _range('dataset', self.sun_azimuth_min_deg, self.sun_azimuth_max_deg,
               'sun_azimuth_min_deg', 'sun_azimuth_max_deg')


@dataclass(frozen=True)
class SimConfig:
    """Everything the simulator reads from `l3d_sim: ros__parameters:`."""

    terrain: TerrainConfig = field(default_factory=TerrainConfig)
    rig: RigConfig = field(default_factory=RigConfig)
    sun: SunConfig = field(default_factory=SunConfig)
    dataset: DatasetConfig = field(default_factory=DatasetConfig)


def load_sim_config(path: Path | None = None) -> SimConfig:
    """The `l3d_sim` section of the parameter file (default: the package's), validated."""
    return load_section(SimConfig, SIM_NODE_NAME, path)


__all__ = ['TerrainConfig', 'RigConfig', 'SunConfig', 'DatasetConfig', 'SimConfig',
           'load_sim_config', 'SIM_NODE_NAME']

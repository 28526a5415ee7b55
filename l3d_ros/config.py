"""Validated parameters of the perception node, loaded from `config/lunar_stereo.yaml`.

The YAML file is a ROS 2 parameter file (`node: ros__parameters: ...`); nested mappings are
ROS's dotted parameter names (`hazard.footprint_m`). Every default is written once, in the
dataclasses below; the YAML overrides them, and unknown keys are rejected, not ignored.
"""
from dataclasses import dataclass, field, fields, is_dataclass, replace
import math
from pathlib import Path
import typing
from typing import Any, Mapping

import yaml

NODE_NAME = 'l3d_stereo'
BACKENDS = ('sgbm', 'student', 'oracle')


def check(ok: bool, name: str, value: Any, expected: str) -> None:
    """ValueError('{name}={value!r}: expected {expected}') unless ok; all configs use it."""
    if not ok:
        raise ValueError(f'{name}={value!r}: expected {expected}')


def check_positive(name: str, value: float) -> None:
    check(isinstance(value, (int, float)) and math.isfinite(value) and value > 0,
          name, value, 'a finite number > 0')


@dataclass(frozen=True)
class QosConfig:
    reliable: bool = False          # False: sensor-data QoS (best effort) on the inputs
    depth: int = 5                  # history depth of input subscriptions

    def __post_init__(self):
        check(isinstance(self.depth, int) and 1 <= self.depth <= 100,
              'qos.depth', self.depth, 'an integer in [1, 100]')


@dataclass(frozen=True)
class SyncConfig:
    mode: str = 'exact'             # exact | approximate (left/right/infos by header stamp)
    slop_s: float = 0.005           # approximate mode: largest stamp spread of a set [s]
    queue_size: int = 10            # per-stream buffer; oldest dropped and counted beyond it
    max_age_s: float = 2.0          # a pair older than the newest seen by this much is stale [s]

    def __post_init__(self):
        check(self.mode in ('exact', 'approximate'), 'sync.mode', self.mode,
              "'exact' or 'approximate'")
        check(0.0 <= self.slop_s <= 1.0, 'sync.slop_s', self.slop_s, '[0, 1] seconds')
        check(isinstance(self.queue_size, int) and 1 <= self.queue_size <= 1000,
              'sync.queue_size', self.queue_size, 'an integer in [1, 1000]')
        check_positive('sync.max_age_s', self.max_age_s)


@dataclass(frozen=True)
class SgbmConfig:
    block_size: int = 5             # matching window [px], odd, 3..11
    num_disparities: int = 0        # search range [px], multiple of 16; 0 = from depth_min_m
    uniqueness_ratio: int = 10      # [%] margin of the best cost over the second best
    speckle_window_size: int = 100  # [px] regions smaller than this are speckles; 0 disables
    speckle_range: int = 2          # [px] disparity variation inside a connected region
    disp12_max_diff: int = 1        # [px] left-right consistency; -1 disables
    mode: str = 'sgbm'              # sgbm | hh | sgbm_3way | hh4 (OpenCV StereoSGBM modes)

    def __post_init__(self):
        check(isinstance(self.block_size, int) and self.block_size % 2 == 1
              and 1 <= self.block_size <= 11, 'sgbm.block_size', self.block_size,
              'an odd integer in [1, 11] pixels')
        check(isinstance(self.num_disparities, int) and self.num_disparities >= 0
              and self.num_disparities % 16 == 0, 'sgbm.num_disparities',
              self.num_disparities, 'a non-negative multiple of 16 pixels (0 = derived)')
        check(0 <= self.uniqueness_ratio <= 100, 'sgbm.uniqueness_ratio',
              self.uniqueness_ratio, '[0, 100] percent')
        check(self.speckle_window_size >= 0, 'sgbm.speckle_window_size',
              self.speckle_window_size, '>= 0 pixels')
        check(self.speckle_range >= 0, 'sgbm.speckle_range', self.speckle_range, '>= 0')
        check(self.mode in ('sgbm', 'hh', 'sgbm_3way', 'hh4'), 'sgbm.mode', self.mode,
              'one of sgbm, hh, sgbm_3way, hh4')


@dataclass(frozen=True)
class StudentConfig:
    model: str = 'models/manifest.json'  # manifest (or .onnx listed in it); relative to package
    threads: int = 2                      # onnxruntime intra-op threads
    # a frame where more than this share of the textured pixels' matches do not verify in the
    # images (window ZNCC of left vs right warped by the student's disparity < 0.5, or off its
    # peak) is refused: SGBM takes it (onnx_student.VERIFY_ZNCC_MIN, subpixel.match_peak)
    verify_unmatched_max: float = 0.4     # [0, 1]; 1 disables

    def __post_init__(self):
        check(isinstance(self.threads, int) and 1 <= self.threads <= 64,
              'student.threads', self.threads, 'an integer in [1, 64]')
        check(0.0 <= self.verify_unmatched_max <= 1.0, 'student.verify_unmatched_max',
              self.verify_unmatched_max, 'a share in [0, 1] (1 disables the check)')


@dataclass(frozen=True)
class LowLightConfig:
    """Matching a binned pair where image noise limits it (l3d_ros.binning)."""

    binning: int = 2                 # bin factor (2: 2x2 pixels); 1: never bin
    # bin when the median texture ratio (noise / rms x-gradient over the matching window) of
    # the pixels with signal exceeds this: sunlit ground 0.1-0.6, earthshine 1-2.8; 0: never
    texture_ratio_min: float = 0.8
    # which backend matches a binned pair: sgbm, or primary (the configured backend, with its
    # fallback); the student keeps 5-26 % of earthshine pixels at its confidence cut, SGBM 85 %
    backend: str = 'sgbm'
    # the camera's sensor noise sigma at most, as a fraction of full scale: caps the estimate
    # from the image, which fine texture inflates (7 DN on sunlit ground seen from 150 m by a
    # camera of 1 DN); a noisier camera is binned less often than it should be, never more
    image_noise_max: float = 2.0 / 255
    # a binned frame's map may certify ground safe; false: it shows hazards, and the ground
    # where it shows none stays unproven. Earthshine-lit rocks have only weak albedo texture
    # and SGBM flattens them: binned maps certified cells whose true roughness was 0.32-0.58 m
    # (read 0.16-0.19 m) in 1 of 3 dark landing scenes at 20 m, 3 of 5 at 13-14 m
    certify: bool = False

    def __post_init__(self):
        check(isinstance(self.certify, bool), 'low_light.certify', self.certify,
              'true or false')
        check(isinstance(self.binning, int) and 1 <= self.binning <= 4, 'low_light.binning',
              self.binning, 'an integer in [1, 4] (1: never bin)')
        check(self.backend in ('sgbm', 'primary'), 'low_light.backend', self.backend,
              "'sgbm' or 'primary'")
        check(isinstance(self.image_noise_max, (int, float))
              and 0 < self.image_noise_max < 1, 'low_light.image_noise_max',
              self.image_noise_max, 'a fraction of full scale in (0, 1)')
        check(isinstance(self.texture_ratio_min, (int, float))
              and math.isfinite(self.texture_ratio_min) and self.texture_ratio_min >= 0,
              'low_light.texture_ratio_min', self.texture_ratio_min, 'a finite number >= 0 '
              '(0: never bin)')


@dataclass(frozen=True)
class HazardConfig:
    """Hazard definition of INTERFACES.md section 4 and the DEM it is computed on."""

    footprint_m: float = 4.0        # lander footprint disc diameter [m]
    slope_max_deg: float = 10.0     # tip-over limit of the leg geometry [deg]
    roughness_max_m: float = 0.30   # largest residual to the disc's plane a leg can clear [m]
    cell_m: float = 0.20            # DEM cell size [m]
    map_size_m: float = 200.0       # side of the square descent-long map in `map` [m]
    sigma_margin: float = 2.0       # safe only if safe with this many sigmas of height error
    disparity_sigma_px: float = 0.25  # stereo matching noise used for the height variance
    divert_max_m: float = 60.0      # largest lateral distance from the nominal target [m]
    clearance_weight: float = 1.0   # site score: clearance [m] minus this * distance / divert
    # the site score's clearance is measured from cells safe with a margin above this too
    # (OccupancyGrid >= 50 * site_margin_max): near a limit a misread rock is unsafe; 1: off
    site_margin_max: float = 0.8
    # frames from nearly the same viewpoint err alike (a hovering lander, a 10 Hz camera): a
    # cell's fused sigma shrinks at most as if this many frames as good as its best saw it
    looks_max: float = 3.0

    def __post_init__(self):
        check_positive('hazard.footprint_m', self.footprint_m)
        check(0.0 < self.slope_max_deg < 90.0, 'hazard.slope_max_deg', self.slope_max_deg,
              '(0, 90) degrees')
        check_positive('hazard.roughness_max_m', self.roughness_max_m)
        check_positive('hazard.cell_m', self.cell_m)
        check(self.cell_m <= self.footprint_m / 4, 'hazard.cell_m', self.cell_m,
              f'<= footprint_m / 4 = {self.footprint_m / 4} m (a disc needs several cells)')
        check(self.map_size_m >= 2 * self.footprint_m, 'hazard.map_size_m', self.map_size_m,
              f'>= 2 * footprint_m = {2 * self.footprint_m} m')
        check(self.sigma_margin >= 0, 'hazard.sigma_margin', self.sigma_margin, '>= 0')
        check_positive('hazard.disparity_sigma_px', self.disparity_sigma_px)
        check(self.divert_max_m >= 0, 'hazard.divert_max_m', self.divert_max_m, '>= 0 m')
        check(self.clearance_weight >= 0, 'hazard.clearance_weight', self.clearance_weight,
              '>= 0')
        check(0.0 <= self.site_margin_max <= 1.0, 'hazard.site_margin_max',
              self.site_margin_max, '[0, 1] (1: every safe cell counts as clear)')
        check(self.looks_max >= 1.0, 'hazard.looks_max', self.looks_max,
              '>= 1 (1: no frame tightens a cell beyond its best one)')


@dataclass(frozen=True)
class StereoNodeConfig:
    """Parameters of the `l3d_stereo` node."""

    backend: str = 'sgbm'           # sgbm | student (oracle is for offline evaluation only)
    depth_min_m: float = 10.0       # nearest depth the rig must resolve [m]
    depth_max_m: float = 400.0      # farther depths are reported as unknown [m]
    confidence_min: float = 0.3     # depth below this confidence is published as NaN
    max_missed_frames: int = 3      # frames a backend may fail before falling back to SGBM
    subpixel_window_px: float = 2.5  # sub-pixel refinement window (Gaussian sigma) [px]; 0 off
    input_timeout_s: float = 0.0    # no input at all for this long is an ERROR [s]; 0 off
    publish_points: bool = True
    qos: QosConfig = field(default_factory=QosConfig)
    sync: SyncConfig = field(default_factory=SyncConfig)
    sgbm: SgbmConfig = field(default_factory=SgbmConfig)
    student: StudentConfig = field(default_factory=StudentConfig)
    low_light: LowLightConfig = field(default_factory=LowLightConfig)
    hazard: HazardConfig = field(default_factory=HazardConfig)

    def __post_init__(self):
        check(self.backend in BACKENDS[:2], 'backend', self.backend, "'sgbm' or 'student'")
        check_positive('depth_min_m', self.depth_min_m)
        check(math.isfinite(self.depth_max_m) and self.depth_max_m > self.depth_min_m,
              'depth_max_m', self.depth_max_m, f'a finite number > depth_min_m='
              f'{self.depth_min_m}')
        check(0.0 <= self.confidence_min < 1.0, 'confidence_min', self.confidence_min,
              '[0, 1)')
        check(isinstance(self.max_missed_frames, int) and self.max_missed_frames >= 1,
              'max_missed_frames', self.max_missed_frames, 'an integer >= 1')
        check(isinstance(self.subpixel_window_px, (int, float))
              and 0 <= self.subpixel_window_px <= 10, 'subpixel_window_px',
              self.subpixel_window_px, 'a number in [0, 10] pixels (0 disables the refinement)')
        timeout = self.input_timeout_s
        check(isinstance(timeout, (int, float)) and math.isfinite(timeout) and timeout >= 0,
              'input_timeout_s', timeout, 'a finite number >= 0 s (0: off)')


def from_dict(cls, raw: Mapping[str, Any], where: str = ''):
    """Build dataclass `cls` from a nested mapping; unknown keys and wrong types raise."""
    if not isinstance(raw, Mapping):
        raise ValueError(f'{where or cls.__name__}={raw!r}: expected a mapping')
    hints = typing.get_type_hints(cls)
    known = {f.name: f for f in fields(cls)}
    if unknown := set(raw) - set(known):
        raise ValueError(f'{where or cls.__name__}: unknown keys {sorted(unknown)}; '
                         f'known: {sorted(known)}')
    kwargs = {}
    for name, value in raw.items():
        typ, key = hints[name], f'{where}.{name}' if where else name
        if is_dataclass(typ):
            kwargs[name] = from_dict(typ, value, key)
        else:
            kwargs[name] = _coerce(typ, value, key)
    return cls(**kwargs)


def _coerce(typ, value, key):
    if typ is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    base = typing.get_origin(typ) or typ
    if base in (tuple, list) and isinstance(value, (list, tuple)):
        return tuple(value)
    if isinstance(base, type) and not isinstance(value, base) or (
            base is int and isinstance(value, bool)):
        raise ValueError(f'{key}={value!r}: expected {getattr(typ, "__name__", typ)}')
    return value


def flatten(cfg, prefix: str = '') -> dict[str, Any]:
    """Dataclass -> {'hazard.footprint_m': 4.0, ...}: ROS's dotted parameter names."""
    out = {}
    for f in fields(cfg):
        value = getattr(cfg, f.name)
        if is_dataclass(value):
            out.update(flatten(value, f'{prefix}{f.name}.'))
        else:
            out[f'{prefix}{f.name}'] = value
    return out


def unflatten(flat: Mapping[str, Any]) -> dict[str, Any]:
    """{'a.b': 1} -> {'a': {'b': 1}}, the inverse of `flatten` on plain mappings."""
    out: dict[str, Any] = {}
    for key, value in flat.items():
        *parents, leaf = key.split('.')
        node = out
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    return out


def with_updates(cfg, flat_updates: Mapping[str, Any]):
    """A copy of `cfg` with dotted-name updates applied and validated (raises ValueError)."""
    merged = flatten(cfg)
    if unknown := set(flat_updates) - set(merged):
        raise ValueError(f'unknown parameters {sorted(unknown)}')
    merged.update(flat_updates)
    return from_dict(type(cfg), unflatten(merged))


def package_root() -> Path:
    """The folder holding config/, models/ and launch/: the source tree or the ament share."""
    here = Path(__file__).resolve().parent.parent
    if (here / 'config' / 'lunar_stereo.yaml').is_file():
        return here
    try:
        from ament_index_python.packages import get_package_share_directory
        return Path(get_package_share_directory('l3d_ros'))
    except (ImportError, LookupError) as exc:
        raise FileNotFoundError('config/lunar_stereo.yaml not found beside the package '
                                f'({here}) nor in an ament share: {exc}') from None


def default_config_path() -> Path:
    return package_root() / 'config' / 'lunar_stereo.yaml'


def read_params_file(path: Path | None = None) -> dict[str, dict[str, Any]]:
    """The ROS parameter file as {node_name: {param: value}} (nested)."""
    path = Path(path) if path else default_config_path()
    raw = yaml.safe_load(path.read_text()) or {}
    if not isinstance(raw, dict):
        raise ValueError(f'{path}: expected a mapping of node names, got {type(raw).__name__}')
    out = {}
    for node, body in raw.items():
        if not isinstance(body, dict) or set(body) != {'ros__parameters'}:
            raise ValueError(f'{path}: {node!r} must hold exactly one key, ros__parameters')
        out[node] = body['ros__parameters'] or {}
    return out


def load_section(cls, section: str, path: Path | None = None):
    """Dataclass `cls` from the parameter file's `section` (node name), validated."""
    return from_dict(cls, read_params_file(path).get(section, {}), section)


def load_node_config(path: Path | None = None) -> StereoNodeConfig:
    """`l3d_stereo`'s section of the parameter file, validated."""
    return load_section(StereoNodeConfig, NODE_NAME, path)


__all__ = ['QosConfig', 'SyncConfig', 'SgbmConfig', 'StudentConfig', 'LowLightConfig',
           'HazardConfig',
           'StereoNodeConfig', 'from_dict', 'flatten', 'unflatten', 'with_updates',
           'read_params_file', 'load_section', 'load_node_config', 'check', 'check_positive',
           'default_config_path', 'package_root', 'replace']

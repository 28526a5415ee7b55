"""One stereo frame through the perception chain, without ROS: images -> depth -> hazard.

The node owns transport; this owns the algorithm order, the backend fallback and the stage
timings, so that `l3d bench`, `l3d infer` and the node run exactly the same code.
"""
from dataclasses import dataclass, field
import time

import numpy as np

from l3d_ros.backends import DepthBackend, DepthResult, finalize, make_backend, to_gray01
from l3d_ros.binning import bin_pair, low_light_frame, unbin_result
from l3d_ros.config import StereoNodeConfig
from l3d_ros.dem import DemFusion
from l3d_ros.geometry import backproject, StereoCalib
from l3d_ros.site import frame_hazard, FrameHazard

HAZARD_PARTS = {'hazard': 'map'}   # frame_hazard's stage names -> hazard_<part> timings

RETRY_PRIMARY_EVERY = 30   # frames on the fallback between two attempts to restore the primary
MISALIGNED_FRAMES_WARN = 3  # frames in a row corrected for misalignment (backends/alignment.py)


@dataclass
class FrameOutput:
    """Everything published for one pair; arrays are (H, W[, 3]) in the left image's pixels."""

    result: DepthResult
    points_m: np.ndarray          # (H, W, 3) left optical frame, NaN invalid
    hazard: FrameHazard           # map-frame points, hazard layers, occupancy, safe site
    intensity: np.ndarray         # (H, W) left grey level in [0, 1]
    backend: str                  # the backend that produced this frame
    timings_ms: dict[str, float] = field(default_factory=dict)
    faults: list[str] = field(default_factory=list)
    binning: int = 1              # the pair was matched f x f-binned (l3d_ros.binning)
    backend_values: dict = field(default_factory=dict)   # the backend's own per-frame values


class StereoPipeline:
    """Primary backend with an SGBM fallback that takes over within the failing frame."""

    def __init__(self, cfg: StereoNodeConfig):
        self.cfg = cfg
        self.fallback = make_backend('sgbm', cfg)
        self.primary: DepthBackend | None = None
        self.init_fault = ''
        self.missed = 0
        self.on_fallback_frames = 0
        self.misaligned_streak = 0            # frames in a row whose pair was corrected
        self.fusion = DemFusion(cfg.hazard)   # descent-long map while camera poses arrive
        if cfg.backend != 'sgbm':
            try:
                self.primary = make_backend(cfg.backend, cfg)
            except Exception as exc:  # noqa: BLE001 - a refused model means SGBM, never a crash
                self.init_fault = f'backend {cfg.backend!r} refused, using sgbm: {exc}'

    def reset_map(self) -> None:
        """Forget the descent-long DEM (a new descent, or time running backwards)."""
        self.fusion = DemFusion(self.cfg.hazard)

    @property
    def model_sha256(self) -> str:
        return getattr(self.primary, 'sha256', '') if self.primary else ''

    @property
    def active_backend(self) -> str:
        primary_ok = self.primary is not None and self.missed < self.cfg.max_missed_frames
        return self.primary.name if primary_ok else self.fallback.name

    def _depth(self, left01, right01, calib, faults) -> tuple[DepthResult, str]:
        use_primary = self.primary is not None and (
            self.missed < self.cfg.max_missed_frames
            or self.on_fallback_frames >= RETRY_PRIMARY_EVERY)
        if use_primary:
            try:
                result = self.primary.compute(left01, right01, calib)
                self.missed, self.on_fallback_frames = 0, 0
                return result, self.primary.name
            except Exception as exc:  # noqa: BLE001 - any model fault must end in the fallback
                self.missed += 1
                self.on_fallback_frames = 0
                faults.append(f'{self.primary.name} failed ({type(exc).__name__}: {exc}); '
                              f'sgbm used for this frame')
        elif self.primary is not None:
            self.on_fallback_frames += 1
        return self.fallback.compute(left01, right01, calib), self.fallback.name

    def process(self, left: np.ndarray, right: np.ndarray, calib: StereoCalib,
                pose: tuple[np.ndarray, np.ndarray] | None = None,
                target_xy_m: np.ndarray | None = None) -> FrameOutput:
        """One rectified pair -> depth, points, hazard and safe site.

        left, right: decoded images (uint8/uint16/float, grey or RGB). pose: (R_world_cam,
        t_world_cam) of the left optical frame in `map`; with poses, frames fuse into one
        descent-long DEM; without, each frame is judged alone under the nadir assumption.
        target_xy_m: nominal landing point in `map` (None: below the camera).
        """
        if left.shape[:2] != right.shape[:2]:
            raise ValueError(f'left image {left.shape[:2]} and right image {right.shape[:2]}: '
                             'expected the same size')
        if left.shape[:2] != calib.shape:
            raise ValueError(f'image size {left.shape[:2]} differs from camera_info '
                             f'{calib.shape} (height, width)')
        faults: list[str] = []
        t0 = time.perf_counter()
        left01, right01 = to_gray01(left), to_gray01(right)
        # noise-limited: matched as a camera of 1/f the resolution would be
        factor, left_m, right_m, calib_m = bin_pair(left01, right01, calib, self.cfg.low_light)
        t1 = time.perf_counter()
        if factor > 1 and self.cfg.low_light.backend == 'sgbm':
            raw, name = self.fallback.compute(left_m, right_m, calib_m), self.fallback.name
        else:
            raw, name = self._depth(left_m, right_m, calib_m, faults)
        result = finalize(raw.depth_m, raw.confidence, calib_m, self.cfg.depth_min_m,
                          self.cfg.depth_max_m, self.cfg.confidence_min)
        t2 = time.perf_counter()
        points_cam = backproject(result.depth_m, calib_m)
        t3 = time.perf_counter()
        sub_ms: dict[str, float] = {}
        hazard = self._hazard(result, calib_m, points_cam, pose, target_xy_m, sub_ms)
        if factor > 1:              # the map holds the binned points; outputs the input's pixels
            result = unbin_result(result, factor, calib.shape)
            points_cam = backproject(result.depth_m, calib)
            hazard = low_light_frame(hazard, factor, calib.shape, self.cfg.low_light)
        t4 = time.perf_counter()
        timings = {'normalise': t1 - t0, 'inference': t2 - t1, 'geometry': t3 - t2,
                   'hazard': t4 - t3}
        timings_ms = {k: 1e3 * v for k, v in timings.items()}
        # the hazard stage's parts (site.frame_hazard): hazard_points, _fusion, _map, ...
        timings_ms.update({f'hazard_{HAZARD_PARTS.get(k, k)}': v for k, v in sub_ms.items()})
        used = self.primary if self.primary is not None and name == self.primary.name \
            else self.fallback
        values = dict(getattr(used, 'last_values', {}))
        # one frame's gains can differ by the ground's own photometry (a few simulator frames
        # in a hundred); a pair misaligned frame after frame is the cameras'
        self.misaligned_streak = self.misaligned_streak + 1 \
            if values.get('pair_corrections') else 0
        if self.misaligned_streak >= MISALIGNED_FRAMES_WARN:
            faults.append(f'stereo pair misaligned in {MISALIGNED_FRAMES_WARN} or more frames '
                          'in a row (gains or rows, last_frame_pair_*): right images corrected '
                          'and matched again; recalibrate the pair')
        return FrameOutput(result, points_cam, hazard, left01, name, timings_ms, faults,
                           factor, values)

    def _hazard(self, result, calib, points_cam, pose, target_xy_m,
                timings_ms: dict[str, float]) -> FrameHazard:
        if pose is None:              # no pose, no fusion: this frame alone, nadir assumed
            return frame_hazard(result, calib, None, None, self.cfg.hazard, None, target_xy_m,
                                points_cam=points_cam, timings_ms=timings_ms)
        dropped = self.fusion.dropped
        hazard = frame_hazard(result, calib, pose[0], pose[1], self.cfg.hazard, self.fusion,
                              target_xy_m, points_cam=points_cam, timings_ms=timings_ms)
        if self.fusion.dropped - dropped > 0.5 * np.isfinite(result.depth_m).sum():
            # the view left the map (a new descent, a long divert): start a map around it
            self.reset_map()
            hazard = frame_hazard(result, calib, pose[0], pose[1], self.cfg.hazard,
                                  self.fusion, target_xy_m, points_cam=points_cam,
                                  timings_ms=timings_ms)
        return hazard

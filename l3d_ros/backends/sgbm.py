"""OpenCV semi-global block matching: the classical fallback and every benchmark's baseline."""
import math

import cv2
import numpy as np

from l3d_ros.backends.alignment import matched_aligned
from l3d_ros.backends.base import DepthResult, unseen_by_right
from l3d_ros.backends.subpixel import refine_disparity
from l3d_ros.config import SgbmConfig
from l3d_ros.geometry import disparity_to_depth, StereoCalib

_MODES = {'sgbm': cv2.STEREO_SGBM_MODE_SGBM, 'hh': cv2.STEREO_SGBM_MODE_HH,
          'sgbm_3way': cv2.STEREO_SGBM_MODE_SGBM_3WAY, 'hh4': cv2.STEREO_SGBM_MODE_HH4}


def disparity_range(calib: StereoCalib, depth_min_m: float, depth_max_m: float,
                    num_disparities: int = 0) -> tuple[int, int]:
    """(min_disparity, num_disparities) [px] covering depths [depth_min_m, depth_max_m].

    The rig sees disparity d = f B / Z, so the search starts at floor(f B / Z_max) and must
    reach f B / Z_min; OpenCV wants the range as a multiple of 16. A configured
    `num_disparities` > 0 overrides the derived range.
    """
    fb = calib.fx * calib.baseline_m
    d_min = max(0, int(math.floor(fb / depth_max_m)) - 1)
    if d_min >= calib.width:
        raise ValueError(f'baseline_m={calib.baseline_m!r} with fx={calib.fx!r}: the farthest '
                         f'depth (depth_max_m={depth_max_m}) has a disparity of '
                         f'{fb / depth_max_m:.4g} px, beyond the image width {calib.width}: '
                         'nothing in range can be matched (check the right camera_info '
                         'P[3] = -fx * baseline)')
    if num_disparities > 0:
        return d_min, num_disparities
    span = max(16, int(math.ceil(fb / depth_min_m)) + 2 - d_min)
    span = 16 * math.ceil(span / 16)
    return d_min, min(span, 16 * max(1, (calib.width // 2) // 16))


def to_uint8_pair(left01: np.ndarray, right01: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Joint contrast stretch (0.5-99.5 percentile of the left image) to 8 bits for SGBM.

    Lunar frames under a low sun use a small part of the sensor range; the same mapping is
    applied to both images so the matching cost is unchanged by it.
    """
    sample = left01[::4, ::4]
    lo, hi = np.percentile(sample, [0.5, 99.5]) if sample.size else (0.0, 1.0)
    scale = 255.0 / max(hi - lo, 1e-6)
    return tuple(np.clip((img - lo) * scale, 0, 255).astype(np.uint8)
                 for img in (left01, right01))


def texture_confidence(left8: np.ndarray, disp_px: np.ndarray, block_size: int) -> np.ndarray:
    """Heuristic 0..1 confidence of SGBM disparity: local texture times local consistency.

    Texture: standard deviation of grey levels over the matching window (flat or shadowed
    regions match poorly). Consistency: disagreement with the 5x5 median disparity
    (isolated outliers). NaN disparity -> 0.
    """
    img = left8.astype(np.float32)
    k = (block_size, block_size)
    mean = cv2.blur(img, k)
    std = np.sqrt(np.maximum(cv2.blur(img * img, k) - mean * mean, 0.0))
    texture = 1.0 - np.exp(-std / 4.0)
    valid = np.isfinite(disp_px)
    filled = np.where(valid, disp_px, 0).astype(np.float32)
    median = cv2.medianBlur(filled, 5)
    consistency = np.exp(-np.abs(filled - median))
    return np.where(valid, texture * consistency, 0.0).astype(np.float32)


class SgbmBackend:
    """(left, right, calib) -> DepthResult with OpenCV StereoSGBM; matcher cached per range."""

    name = 'sgbm'

    def __init__(self, cfg: SgbmConfig, depth_min_m: float, depth_max_m: float,
                 subpixel_window_px: float = 0.0):
        self.cfg, self.depth_min_m, self.depth_max_m = cfg, depth_min_m, depth_max_m
        self.subpixel_window_px = subpixel_window_px
        self._matcher, self._key = None, None
        self.last_values: dict[str, float | int | str | bool] = {}

    def _matcher_for(self, calib: StereoCalib):
        key = disparity_range(calib, self.depth_min_m, self.depth_max_m,
                              self.cfg.num_disparities)
        if key != self._key:
            bs = self.cfg.block_size
            self._matcher = cv2.StereoSGBM_create(
                minDisparity=key[0], numDisparities=key[1], blockSize=bs,
                P1=8 * bs * bs, P2=32 * bs * bs, disp12MaxDiff=self.cfg.disp12_max_diff,
                uniquenessRatio=self.cfg.uniqueness_ratio,
                speckleWindowSize=self.cfg.speckle_window_size,
                speckleRange=self.cfg.speckle_range, mode=_MODES[self.cfg.mode])
            self._key = key
        return self._matcher, key

    def compute(self, left: np.ndarray, right: np.ndarray, calib: StereoCalib) -> DepthResult:
        """left, right: (H, W) float32 in [0, 1]. Invalid disparity -> NaN depth."""
        if left.shape != right.shape or left.shape != calib.shape:
            raise ValueError(f'left {left.shape}, right {right.shape}, calib {calib.shape}: '
                             'expected the same (height, width)')
        # a pair whose gains differ or whose rows are off (alignment.py) is matched again,
        # its right image corrected
        (disp, left8), _ = matched_aligned(lambda lft, rgt: self._match(lft, rgt, calib),
                                           left, right, self.last_values)
        return DepthResult(disparity_to_depth(disp, calib.fx, calib.baseline_m),
                           texture_confidence(left8, disp, self.cfg.block_size), disp)

    def _match(self, left: np.ndarray, right: np.ndarray,
               calib: StereoCalib) -> tuple[np.ndarray, np.ndarray]:
        """SGBM's disparity, refined -> (disparity, NaN unknown; the left image in uint8)."""
        matcher, (d_min, n_disp) = self._matcher_for(calib)
        left8, right8 = to_uint8_pair(left, right)
        # OpenCV leaves the first min+num disparity columns empty (no full search range there).
        # Padding both images on the left gives those columns a search range too; a pixel whose
        # match would fall into the padding costs high and is rejected by the uniqueness and
        # left-right checks, so only truly unmatched border pixels stay NaN.
        pad = d_min + n_disp
        left8, right8 = (cv2.copyMakeBorder(img, 0, 0, pad, 0, cv2.BORDER_CONSTANT, value=0)
                         for img in (left8, right8))
        disp = matcher.compute(left8, right8)[:, pad:].astype(np.float32) / 16.0  # 4 frac bits
        left8 = left8[:, pad:]
        disp[disp < max(d_min, 1e-3)] = np.nan
        if self.subpixel_window_px > 0:
            disp = refine_disparity(left, right, disp, self.subpixel_window_px)
        disp[unseen_by_right(disp)] = np.nan      # the padding's wrong matches at the border
        return disp, left8

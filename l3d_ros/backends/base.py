"""What every depth backend returns, and the image normalisation they share."""
from dataclasses import dataclass
from typing import Protocol

import cv2
import numpy as np

from l3d_ros.geometry import depth_to_disparity, StereoCalib


@dataclass(frozen=True)
class DepthResult:
    """One stereo pair's output, all (H, W) float32 in the left image's pixels."""

    depth_m: np.ndarray        # z along the optical axis [m], NaN unknown
    confidence: np.ndarray     # 0..1, 0 where depth is NaN
    disparity_px: np.ndarray   # [px], NaN unknown


def unseen_by_right(disparity_px: np.ndarray, tolerance_px: float = 1.0) -> np.ndarray:
    """(H, W) bool: left pixels the right camera cannot see, so no stereo depth exists there.

    A left pixel at column u with disparity d is seen by the right camera at column u - d; at
    the left border, where u < d, it lies outside the right image (a strip as wide as the
    ground's disparity there: ~12 % of a 512 px image at 20 m on the simulator rig). A matcher
    still returns something there: a network extrapolates (the shipped student: 70-90 % of
    that strip published at 20-26 m, 0.2-1.8 px off), SGBM finds a wrong match elsewhere on the
    row (2-7 % of it, 24-60 px off: 0.55 % of SGBM's pixels at 30-150 m held 64 % of its
    AbsRel, `l3d sim dataset --seed 5000`). So a pixel is unseen when its own match falls off
    the image (u - d < -tolerance) or when the ground beside it, the finite disparities of the
    same row within the next D columns to its right (D: the frame's 99.5th percentile
    disparity, so one wild value costs no time), is seen at a disparity above u + tolerance:
    terrain is continuous, so that disparity is the one this pixel would have. A wrong (too
    large) disparity nearby only removes more border pixels, never adds any. NaN disparity is
    never flagged (it is unknown already).
    """
    disp = np.asarray(disparity_px, np.float32)
    if disp.ndim != 2:
        raise ValueError(f'disparity_px.shape={disp.shape}: expected (H, W)')
    finite = np.isfinite(disp)
    cols = np.arange(disp.shape[1], dtype=np.float32)
    with np.errstate(invalid='ignore'):
        unseen = disp > cols + np.float32(tolerance_px)              # own match off the image
    sample = disp[::4, ::4]
    sample = sample[np.isfinite(sample)]
    if not sample.size:
        return unseen
    reach = int(min(np.ceil(np.percentile(sample, 99.5)), disp.shape[1]))
    if reach <= 0:
        return unseen
    # only columns u < D can be unseen by their neighbours, which lie within 2 D
    band = np.where(finite[:, :2 * reach], disp[:, :2 * reach], np.float32(0))
    w = band.shape[1]
    kernel = np.ones((1, reach + 1), np.uint8)      # columns u .. u + D
    ahead = cv2.dilate(band, kernel, anchor=(0, 0), borderType=cv2.BORDER_CONSTANT,
                       borderValue=0)
    unseen[:, :w] |= finite[:, :w] & (ahead > cols[:w] + np.float32(tolerance_px))
    return unseen


class DepthBackend(Protocol):
    name: str

    def compute(self, left: np.ndarray, right: np.ndarray, calib: StereoCalib) -> DepthResult:
        """left, right: (H, W) float32 grey levels in [0, 1] (see `to_gray01`)."""


def to_gray01(image: np.ndarray) -> np.ndarray:
    """uint8 / uint16 / float, (H, W) or (H, W, 3) RGB -> (H, W) float32 in [0, 1].

    Float (H, W) input (a 32FC1 image) must already be finite grey levels in [0, 1] (1e-3
    either side is clipped), else ValueError; 3-channel input is RGB (BT.601 luma).
    """
    img = np.asarray(image)
    if img.ndim == 3:
        if img.shape[2] != 3:
            raise ValueError(f'image shape {img.shape}: expected (H, W) or (H, W, 3)')
        img = img.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
        scale = {np.dtype(np.uint8): 255.0, np.dtype(np.uint16): 65535.0}.get(
            np.asarray(image).dtype, 1.0)
        return np.clip(img / scale, 0, 1).astype(np.float32)
    if img.ndim != 2:
        raise ValueError(f'image shape {img.shape}: expected (H, W) or (H, W, 3)')
    if img.dtype == np.uint8:
        return img.astype(np.float32) / 255.0
    if img.dtype == np.uint16:
        return img.astype(np.float32) / 65535.0
    if np.issubdtype(img.dtype, np.floating):     # e.g. a 32FC1 image: grey levels in [0, 1]
        img = img.astype(np.float32)
        lo, hi = float(np.min(img)), float(np.max(img))
        if not (np.isfinite(lo) and np.isfinite(hi)) or lo < -1e-3 or hi > 1 + 1e-3:
            bad = int(np.count_nonzero(~np.isfinite(img)))
            raise ValueError(f'float image with values {lo:.4g} .. {hi:.4g} ({bad} not finite): '
                             'expected finite grey levels in [0, 1]')
        return np.clip(img, 0, 1)
    raise ValueError(f'image dtype {img.dtype}: expected uint8, uint16 or float')


def finalize(depth_m: np.ndarray, confidence: np.ndarray, calib: StereoCalib,
             depth_min_m: float, depth_max_m: float, confidence_min: float) -> DepthResult:
    """Apply the node's validity rules: out-of-range or low-confidence depth becomes NaN."""
    depth = np.asarray(depth_m, np.float32).copy()
    conf = np.nan_to_num(np.asarray(confidence, np.float32), nan=0.0).clip(0, 1)
    bad = ~np.isfinite(depth) | (depth < depth_min_m) | (depth > depth_max_m)
    bad |= conf < confidence_min
    depth[bad] = np.nan
    conf = np.where(bad, 0.0, conf).astype(np.float32)
    return DepthResult(depth, conf, depth_to_disparity(depth, calib.fx, calib.baseline_m))

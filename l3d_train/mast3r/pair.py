"""Metric depth of a rectified stereo pair from the MASt3R teacher (numpy in, numpy out).

MASt3R's points have an arbitrary scale, so the scale is set from the rig's known baseline:

1. One pass, left as view 1: pts3d (left pixels) and pts3d_in_other_view (right pixels), both in
   the left camera's frame, in teacher units.
2. The teacher's own focal length f_t is the least-squares fit of u - cx = f_t X / Z over the
   left pointmap (the teacher's points carry an implied focal; the calibrated fx is not used,
   so a teacher whose focal is off does not bias the scale).
3. Each right pixel (u_r, v) seen at (X, Z) in the left frame implies the right camera sits at
   b = X - (u_r - cx) Z / f_t along x. The confidence-weighted median b_t over right pixels is
   the baseline in teacher units, and depth_m = Z_left * baseline_m / b_t.

This uses the translation between the views that the teacher predicts, rather than a disparity
found by matching, so it needs no descriptor matching and no second pass.
"""
import cv2
import numpy as np
import torch

from l3d_ros.geometry import StereoCalib


def model_size(height: int, width: int, patch: int = 16, max_side: int = 512) -> tuple[int, int]:
    """(h, w) for the network: long side <= max_side, both multiples of `patch` (>= patch)."""
    s = min(1.0, max_side / max(height, width))
    return (max(patch, int(height * s) // patch * patch),
            max(patch, int(width * s) // patch * patch))


def _to_tensor(img01: np.ndarray, size: tuple[int, int]) -> torch.Tensor:
    """(H, W) or (H, W, 3) in [0, 1] -> (1, 3, h, w) float32 in [-1, 1]."""
    img = np.asarray(img01, np.float32)
    if img.ndim == 2:
        img = np.repeat(img[..., None], 3, axis=2)
    if img.ndim != 3 or img.shape[2] != 3:
        raise ValueError(f'image shape {img.shape}: expected (H, W) or (H, W, 3)')
    h, w = size
    if img.shape[:2] != (h, w):
        shrink = h < img.shape[0] or w < img.shape[1]
        img = cv2.resize(img, (w, h), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)
    return torch.from_numpy(img * 2.0 - 1.0).permute(2, 0, 1)[None].contiguous()


def _weighted_median(x: np.ndarray, w: np.ndarray) -> float:
    order = np.argsort(x)
    cum = np.cumsum(w[order])
    return float(x[order][np.searchsorted(cum, 0.5 * cum[-1])])


def scale_from_baseline(pts_left: np.ndarray, pts_right_in_left: np.ndarray, conf_left,
                        conf_right, cx: float, baseline_m: float) -> float:
    """Metres per teacher unit. pts_*: (h, w, 3) teacher points in the left frame; conf_*: (h, w)
    weights; cx [px] at this resolution; baseline_m > 0. Raises ValueError without support."""
    h, w, _ = pts_left.shape
    u = np.arange(w, dtype=np.float64)[None, :].repeat(h, axis=0)
    X, Z = pts_left[..., 0].astype(np.float64), pts_left[..., 2].astype(np.float64)
    ok = (Z > 0) & np.isfinite(X) & np.isfinite(Z)
    r, du, wl = X[ok] / Z[ok], u[ok] - cx, np.asarray(conf_left, np.float64)[ok]
    denom = np.sum(wl * r * r)
    if denom <= 0:
        raise ValueError('teacher pointmap of the left view has no point in front of the camera')
    f_t = np.sum(wl * r * du) / denom                                  # u - cx = f_t X / Z
    if not f_t > 0:
        raise ValueError(f'teacher focal f_t={f_t!r}: expected > 0 (mirrored pointmap?)')
    X2, Z2 = (pts_right_in_left[..., i].astype(np.float64) for i in (0, 2))
    ok2 = (Z2 > 0) & np.isfinite(X2) & np.isfinite(Z2)
    b = X2[ok2] - (u[ok2] - cx) * Z2[ok2] / f_t                        # right centre, teacher x
    b_t = _weighted_median(b, np.asarray(conf_right, np.float64)[ok2]) if b.size else np.nan
    if not b_t > 0:
        raise ValueError(f'teacher baseline b_t={b_t!r}: expected the right camera at +x')
    return baseline_m / b_t


@torch.no_grad()
def teacher_depth(model: torch.nn.Module, left01: np.ndarray, right01: np.ndarray,
                  calib: StereoCalib, max_side: int = 512) -> tuple[np.ndarray, np.ndarray]:
    """Depth of the left view [m] and confidence 0..1 from a MASt3R teacher.

    left01, right01: rectified (H, W) or (H, W, 3) images in [0, 1]; calib: the pair's
    calibration at (H, W). The network runs at `model_size` (long side <= max_side).
    Returns depth_m (H, W) float32 (NaN where the teacher puts the point behind the camera)
    and confidence (H, W) float32 = 1 - 1/conf, conf in (1, inf) being MASt3R's.
    """
    H, W = np.asarray(left01).shape[:2]
    if (H, W) != calib.shape or np.asarray(right01).shape[:2] != (H, W):
        raise ValueError(f'left {(H, W)}, right {np.asarray(right01).shape[:2]}, calib '
                         f'{calib.shape}: expected the same (height, width)')
    h, w = model_size(H, W, max_side=max_side)
    device = next(model.parameters()).device
    views = [{'img': _to_tensor(img, (h, w)).to(device), 'true_shape': torch.tensor([[h, w]])}
             for img in (left01, right01)]
    res1, res2 = model(*views)
    pts1 = res1['pts3d'][0].float().cpu().numpy()                       # (h, w, 3)
    pts2 = res2['pts3d_in_other_view'][0].float().cpu().numpy()
    conf1, conf2 = (r['conf'][0].float().cpu().numpy() for r in (res1, res2))
    scale = scale_from_baseline(pts1, pts2, conf1, conf2, calib.scaled(w, h).cx, calib.baseline_m)
    depth = (pts1[..., 2] * scale).astype(np.float32)
    confidence = (1.0 - 1.0 / np.maximum(conf1, 1.0)).astype(np.float32)
    if (h, w) != (H, W):
        depth = cv2.resize(depth, (W, H), interpolation=cv2.INTER_LINEAR)
        confidence = cv2.resize(confidence, (W, H), interpolation=cv2.INTER_LINEAR)
    depth[~(depth > 0)] = np.nan
    return depth, np.clip(confidence, 0.0, 1.0)

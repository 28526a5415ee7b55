"""The pair's residual photometric and row misalignment, read from its own matches.

Every matcher here assumes that a ground point has the same grey level in both images
(brightness constancy, up to a local offset) and lies on the same row (rectification). Real
pairs break both: the two cameras' gains or exposures differ, a lens darkens the image towards
its corners (vignetting: a point seen off axis in one view and nearer the axis in the other is
dimmer there), and a calibration leaves the rows a fraction of a pixel apart. Measured on
held-out simulator pairs (`scripts/camera_sweep.py`, 8 pairs of seed 6100, 30-150 m; on the
matched pair AbsRel 0.0043 and completeness 0.88 / 0.86 for student / SGBM):

- right camera at 0.95x the left's gain: AbsRel 0.0075 (both); at 0.9x 0.036; at 0.8x the
  student's network erred by more than 1 px on 45 % of its pixels (13 % on the matched pair),
  AbsRel 0.021 and completeness 0.62; SGBM 0.014 and 0.69;
- the right image 0.5 px lower: AbsRel 0.0098 (both); the 0.07 px left by a first, too
  small correction still tripled it on a 40-60 m pair;
- cos^4 vignetting, corners 40 % dimmer: AbsRel 0.014 (both), from one pair the student could
  not verify.

The model, fitted over the matched pixels of a first pass (disparity d; grey levels inside
(CLIP_LOW, CLIP_HIGH): no gain is read in shadow or saturation), is

    I_left(x, y) = g(x, y) * I_right(x - d, y + dy),   g = gain + gain_x * x' + gain_y * y'

(x', y' the pixel position scaled to [-1, 1] from the image centre): one gain for the pair,
its first-order change across the image (a vignetting difference is, to first order, a
horizontal ramp), and a row offset. The gain field is a linear least-squares fit, refitted
without the pixels beyond TRIM_SIGMAS of its residual (first-pass mismatches at shadow
edges); the row offset is solved with a free x shift per window (`_row_offset_step`),
because the first pass has absorbed part of it in its disparities.

Every frame is checked by one step on the pair pyrDown'ed once (DETECT_LEVEL, ~4 ms at 512 x
512). A pair beyond GAIN_TOLERANCE, RAMP_TOLERANCE or DY_TOLERANCE_PX is fitted again at full
resolution (Gauss-Newton in dy to convergence), its right image corrected (`correct_right`:
gain field and rows), and matched again; at most MAX_CORRECTIONS times, while its matches
still show a misalignment beyond the tolerances. By that check the simulator's own views
differ by up to 0.040 in gain, 0.026 in ramps and 0.009 px in rows (88 held-out pairs, 20-150
m, both backends; its lunar-Lambert ground seen from two points 2 m apart): its dataset pairs
are matched as before. Tilted views in its landings show ramps beyond the tolerance in a few
frames in a hundred; they are corrected like a camera's: correcting each of 40 held-out
simulator pairs (20-150 m) once, whatever its misalignment, moved the student's AbsRel by
-0.0002 to +0.0001 and its completeness by -0.001 to +0.003, while a vignetted pair that SGBM
had matched at AbsRel 0.21 (ramps 0.055) came out at 0.0056 corrected.
"""
from dataclasses import dataclass, replace

import cv2
import numpy as np

CLIP_LOW, CLIP_HIGH = 0.02, 0.98   # grey levels outside: shadow or saturation, no gain there
MIN_PIXELS = 1000                  # matched pixels read below this: no estimate
TRIM_PASSES = 1                    # refits without the pixels the last fit leaves beyond
TRIM_SIGMAS = 3.0                  # this many robust sigmas (1.4826 MAD) of its residual
SAMPLE_STEP = 2                    # the fit reads every 2nd row and column of images
SAMPLE_MIN_SIDE = 256              # with both sides at least this, else every pixel
WINDOW_SIGMA_PX = 2.5              # the windows of the row-offset solve [px of its level]
DETECT_LEVEL = 1                   # every frame: one step on the pair pyrDown'ed once
FIT_ITERATIONS = 8                 # a pair to correct: up to 8 steps at full resolution,
DY_STEP_DONE_PX = 0.005            # until one moves dy by less than this [px]
GAIN_TOLERANCE = 0.05              # largest |gain - 1| left uncorrected
RAMP_TOLERANCE = 0.05              # largest |gain_x| + |gain_y| left uncorrected
DY_TOLERANCE_PX = 0.05             # largest |dy| left uncorrected [px]
GAIN_RANGE = (0.5, 2.0)            # a fitted gain outside: not a camera pair (no correction)
DY_MAX_PX = 2.0                    # a fitted |dy| above: beyond the linearisation (none)
MAX_CORRECTIONS = 2                # matching runs on corrected images, at most


@dataclass(frozen=True)
class PairMismatch:
    """The right image's misalignment to the left one (module docstring's model)."""

    gain: float        # I_left / I_right at the image centre
    gain_x: float      # its change from the centre to the left / right border
    gain_y: float      # its change from the centre to the top / bottom border
    dy_px: float       # rows: the left image's row y is the right image's row y + dy
    pixels: int        # matched pixels the fit read

    @property
    def gain_error(self) -> float:
        """The largest |g(x, y) - 1| over the image (at a corner)."""
        return abs(self.gain - 1.0) + abs(self.gain_x) + abs(self.gain_y)

    @property
    def plausible(self) -> bool:
        """Within what a calibrated pair can be (else the fit read something else)."""
        return (GAIN_RANGE[0] <= self.gain <= GAIN_RANGE[1] and self.gain_error < 1.0
                and abs(self.dy_px) <= DY_MAX_PX)

    @property
    def needs_correction(self) -> bool:
        return self.plausible and (abs(self.gain - 1.0) > GAIN_TOLERANCE
                                   or abs(self.gain_x) + abs(self.gain_y) > RAMP_TOLERANCE
                                   or abs(self.dy_px) > DY_TOLERANCE_PX)

    def then(self, residual: 'PairMismatch') -> 'PairMismatch':
        """This misalignment followed by `residual`, read on a right image corrected by this
        one: gain fields multiply (to first order in the ramps), row offsets add."""
        a, r = self, residual
        return PairMismatch(a.gain * r.gain, a.gain * r.gain_x + a.gain_x * r.gain,
                            a.gain * r.gain_y + a.gain_y * r.gain, a.dy_px + r.dy_px,
                            r.pixels)

    def values(self) -> dict[str, float | int]:
        """Diagnostics key-values (pair_*)."""
        return {'pair_gain': round(self.gain, 4), 'pair_gain_x': round(self.gain_x, 4),
                'pair_gain_y': round(self.gain_y, 4), 'pair_dy_px': round(self.dy_px, 3),
                'pair_fit_pixels': self.pixels}


def _sample_step(shape: tuple[int, int]) -> int:
    """Every SAMPLE_STEP-th row and column of an image whose sides are SAMPLE_MIN_SIDE or more,
    every pixel of a smaller one."""
    return SAMPLE_STEP if min(shape) >= SAMPLE_MIN_SIDE else 1


def _unit_coords(h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    """(H, W) float32 column and row positions scaled to [-1, 1] from the image centre."""
    x = (np.arange(w, dtype=np.float32) - (w - 1) / 2) / max((w - 1) / 2, 1.0)
    y = (np.arange(h, dtype=np.float32) - (h - 1) / 2) / max((h - 1) / 2, 1.0)
    return np.broadcast_to(x, (h, w)), np.broadcast_to(y[:, None], (h, w))


def estimate_mismatch(left: np.ndarray, right: np.ndarray, disparity_px: np.ndarray,
                      level: int = DETECT_LEVEL, iterations: int = 1) -> PairMismatch | None:
    """The misalignment of a rectified pair (grey levels in [0, 1], (H, W)) from a disparity
    map of it (NaN unknown); None with fewer than MIN_PIXELS matched pixels inside the clip
    levels, or a degenerate fit.

    The gain field is a least-squares fit of the left grey levels to the matched right ones.
    The row offset is not read pixel by pixel: a matcher given rows dy apart has moved its
    disparities along x wherever the texture's gradient is oblique, taking up part of dy (a
    first pass's matches under-read 0.5 px as 0.3-0.43 px, and what is left after a
    correction by that still tripled the error). So dy is solved jointly with a free x shift
    and offset per window (`_row_offset_step`), in up to `iterations` Gauss-Newton steps
    (ending once one moves dy by less than DY_STEP_DONE_PX), on the pair pyrDown'ed `level`
    times (the per-frame check: DETECT_LEVEL, one step; a correction: 0, FIT_ITERATIONS)."""
    left = np.asarray(left, np.float32)
    right = np.asarray(right, np.float32)
    disp = np.asarray(disparity_px, np.float32)
    if not left.shape == right.shape == disp.shape or left.ndim != 2:
        raise ValueError(f'left {left.shape}, right {right.shape}, disparity {disp.shape}: '
                         'expected the same (H, W)')
    if not (isinstance(level, int) and level >= 0 and isinstance(iterations, int)
            and iterations >= 1):
        raise ValueError(f'level={level!r}, iterations={iterations!r}: expected integers '
                         '>= 0 and >= 1')
    scale = 2 ** level
    for _ in range(level):
        left, right = cv2.pyrDown(left), cv2.pyrDown(right)
    if level:
        disp = cv2.resize(disp, left.shape[::-1], interpolation=cv2.INTER_NEAREST) \
            / np.float32(scale)
    found = _estimate_at(left, right, disp, iterations)
    return None if found is None else replace(found, dy_px=found.dy_px * scale)


def _estimate_at(left: np.ndarray, right: np.ndarray, disp: np.ndarray,
                 iterations: int) -> PairMismatch | None:
    """`estimate_mismatch` at the images' own resolution (float32 inputs of one shape)."""
    h, w = left.shape
    cols = cv2.subtract(np.ascontiguousarray(np.broadcast_to(
        np.arange(w, dtype=np.float32), (h, w))), np.nan_to_num(disp))
    rows = np.broadcast_to(np.arange(h, dtype=np.float32)[:, None], (h, w))
    ux, uy = _unit_coords(h, w)
    grad_x = cv2.Sobel(right, cv2.CV_32F, 1, 0, ksize=1, scale=0.5)        # central diff.
    grad_y = cv2.Sobel(right, cv2.CV_32F, 0, 1, ksize=1, scale=0.5)
    seen = np.isfinite(disp) & (cols >= 0) & (cols <= w - 1) \
        & (left > CLIP_LOW) & (left < CLIP_HIGH)
    s = _sample_step(left.shape)
    dy, coef, n = 0.0, None, 0
    for _ in range(iterations):
        at = np.ascontiguousarray(rows + np.float32(dy))

        def warp(img):
            return cv2.remap(img, cols, at, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)

        warped = warp(right)
        used = seen & (warped > CLIP_LOW) & (warped < CLIP_HIGH)
        coef = None
        for _ in range(1 + TRIM_PASSES):
            sample = used[::s, ::s]
            n = int(np.count_nonzero(sample))
            if n < MIN_PIXELS:
                return None
            r = warped[::s, ::s][sample].astype(np.float64)
            design = np.stack([r, ux[::s, ::s][sample] * r, uy[::s, ::s][sample] * r], axis=1)
            coef, _, rank, _ = np.linalg.lstsq(
                design, left[::s, ::s][sample].astype(np.float64), rcond=None)
            if rank < 3 or not np.all(np.isfinite(coef)) or not coef[0] > 0:
                return None
            field = (coef[0] + coef[1] * ux + coef[2] * uy).astype(np.float32)
            residual = cv2.subtract(left, cv2.multiply(field, warped))
            # pixels the first pass matched wrongly (shadow edges, occlusions) fit no gain
            spread = 1.4826 * float(np.median(np.abs(residual[::s, ::s][sample])))
            used = used & (np.abs(residual) <= TRIM_SIGMAS * max(spread, 1e-6))
        step = _row_offset_step(residual, cv2.multiply(field, warp(grad_x)),
                                cv2.multiply(field, warp(grad_y)), used.astype(np.float32))
        if step is None:
            return None
        dy += step
        if not abs(dy) <= DY_MAX_PX or abs(step) < DY_STEP_DONE_PX:
            break
    gain, gain_x, gain_y = (float(c) for c in coef)
    return PairMismatch(gain, gain_x, gain_y, dy, n)


def _row_offset_step(residual, grad_x, grad_y, weight) -> float | None:
    """The row offset dy that best explains residual = dy grad_y - dd_p grad_x + c_p, each
    window p (Gaussian, sigma WINDOW_SIGMA_PX) with its own x shift dd_p and offset c_p.
    Eliminating those per window leaves the part of grad_y that no x shift can mimic:

        dy = sum_p [cov(r, gy) - cov(r, gx) cov(gx, gy) / var(gx)]
             / sum_p [var(gy) - cov(gx, gy)^2 / var(gx)],

    covariances over window p weighted by `weight` (0 outside the matched pixels), summed
    over the windows at least half matched. None when no texture tells rows apart."""
    def window(v):
        return cv2.GaussianBlur(v, (0, 0), WINDOW_SIGMA_PX)

    s_w = window(weight)
    ok = s_w > 0.5
    inv = np.float32(1) / np.maximum(s_w, np.float32(1e-6))
    r, gx, gy = (cv2.multiply(v, weight) for v in (residual, grad_x, grad_y))
    m_r, m_x, m_y = (cv2.multiply(window(v), inv) for v in (r, gx, gy))

    def cov(a, m_a, b, m_b):
        return cv2.subtract(cv2.multiply(window(cv2.multiply(a, b)), inv),
                            cv2.multiply(m_a, m_b))

    v_x = cov(gx, m_x, gx, m_x)
    c_xy = cov(gx, m_x, gy, m_y)
    ok &= v_x > 1e-9
    v_x = np.where(ok, v_x, np.float32(1))
    num = cov(r, m_r, gy, m_y) - cov(r, m_r, gx, m_x) * c_xy / v_x
    den = cov(gy, m_y, gy, m_y) - c_xy * c_xy / v_x
    s = _sample_step(ok.shape)
    keep = ok[::s, ::s]
    total = float(np.sum(den[::s, ::s][keep], dtype=np.float64))
    if not total > 0:
        return None
    return float(np.sum(num[::s, ::s][keep], dtype=np.float64)) / total


def correct_right(right: np.ndarray, mismatch: PairMismatch,
                  disparity_px: np.ndarray) -> np.ndarray:
    """The right image as the left camera would have taken it: rows moved by dy (cubic
    interpolation) and grey levels times the gain field, placed at the matched left pixels
    (right column + the frame's median disparity), clipped to [0, 1]."""
    right = np.asarray(right, np.float32)
    h, w = right.shape
    finite = np.asarray(disparity_px)[np.isfinite(disparity_px)]
    shift = float(np.median(finite)) if finite.size else 0.0
    cols = np.broadcast_to(np.arange(w, dtype=np.float32)[None, :], (h, w))
    rows = np.broadcast_to(np.arange(h, dtype=np.float32)[:, None] + np.float32(mismatch.dy_px),
                           (h, w))
    moved = cv2.remap(right, np.ascontiguousarray(cols), np.ascontiguousarray(rows),
                      cv2.INTER_CUBIC, borderMode=cv2.BORDER_REPLICATE)
    ux, uy = _unit_coords(h, w)
    ux = ux + np.float32(shift / max((w - 1) / 2, 1.0))
    field = mismatch.gain + mismatch.gain_x * ux + mismatch.gain_y * uy
    return np.clip(moved * field, 0.0, 1.0).astype(np.float32)


def matched_aligned(match, left: np.ndarray, right: np.ndarray, values: dict):
    """match(left, right) -> (disparity (H, W) NaN unknown, *rest), run once, and again on the
    right image corrected by the misalignment its matches show, while that exceeds the
    tolerances (at most MAX_CORRECTIONS times: a first pass on a badly misaligned pair
    matches poorly and under-reads the misalignment, the second reads the rest) -> (the last
    run's output, the right image it matched). `values` gets the pair_* diagnostics: the
    misalignment of the pair as given, and pair_corrections."""
    for key in [k for k in values if k.startswith('pair_')]:    # the last frame's
        del values[key]
    out, used, total, corrections = match(left, right), right, None, 0
    while True:
        found = estimate_mismatch(left, used, out[0])             # quick: every frame
        if found is None or not found.needs_correction or corrections == MAX_CORRECTIONS:
            break
        found = estimate_mismatch(left, used, out[0], 0, FIT_ITERATIONS) or found
        total = found if total is None else total.then(found)
        used = correct_right(right, total, out[0])
        out = match(left, used)
        corrections += 1
    estimate = total if found is None else found if total is None else total.then(found)
    values.update(estimate.values() if estimate is not None else {'pair_fit_pixels': 0})
    values['pair_corrections'] = corrections
    return out, used

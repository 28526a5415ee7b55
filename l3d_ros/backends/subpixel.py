"""Sub-pixel disparity refinement by windowed Lucas-Kanade on the rectified pair.

Semi-global matching finds the integer disparity well but interpolates the fraction from its
aggregated cost, which "locks" it towards whole pixels: on the simulator's rig SGBM's error is
a sawtooth of the true disparity's fraction, -0.25 px below and +0.25 px above half a pixel,
around a per-pixel spread of only ~0.04 px. On smooth ground that sawtooth draws iso-disparity
terraces of +-Z^2 0.25 / (f B) (0.16 m at 30 m), which a 4 m disc's plane cannot absorb and
the roughness test reads as rocks.

The refinement solves, for every pixel p, the brightness constancy of a window around p that
moves by one disparity d_p (a fronto-parallel window, as block matching assumes), up to a
brightness offset: the two views see the lunar-Lambert surface under emission angles a few
degrees apart, and a plain squared difference turns that offset into a disparity bias.
Linearised at the current disparity field d (the right image warped to the left by d gives
W, its x gradient there G, residual r = W - I_left), a neighbour q seen at p's disparity has
residual r_q + (d_q - d_p) G_q; the least-squares (d_p, offset) over Gaussian window weights
is the weighted regression of a_q = r_q + G_q d_q on G_q:

    d_p <- cov_w(a, G) / var_w(G)

Each step is a weighted average of neighbours' estimates, so it is stable under iteration (an
independent per-pixel update d_p += sum w r G / sum w G^2 is not: it deconvolves the window
and amplifies noise). Two steps from SGBM's integer match converge; a learned matcher's smooth,
frame-wide error can lie beyond the linear range of the brightness model, which a first step
on blurred images and a frame-wide shift reach (`coarse_sigma_px`, `frame_shift_max_px`: the
student's AbsRel on held-out pairs 0.0049 -> 0.0033 at 30-150 m; the node does not use them,
see `OnnxStudentBackend.compute`). The result is limited to `max_shift_px` around the
input (moved by the frame-wide shift, if any): the matcher's integer disparity is kept, only
its fraction is re-estimated, and a window straddling a depth edge cannot drag a pixel across
it.

Measured on held-out simulator pairs (28-150 m, sun 2-12 deg): SGBM's disparity error (1.4826
MAD) 0.22-0.23 px -> 0.043-0.048 px; its DEM cell error (MAD, scripts/hazard_noise_study.py)
at 41-54 m drops from 0.27-0.49 m to 0.03-0.08 m. ~17 ms on a 512 x 512 pair on this CPU.
"""
from functools import lru_cache

import cv2
import numpy as np


NOISE_SAMPLE_STEP = 2            # the noise estimate reads every 2nd row
_LAPLACIAN_DIFFERENCE = np.array([[1, -2, 1], [-2, 4, -2], [1, -2, 1]], np.float32)
# match_zncc's texture threshold: a window whose grey-level variance (levels in [0, 1]) is not
# above TEXTURE_MIN carries no texture to verify a match against, on the 8-bit camera of 1 DN
# noise it was set for (3x that noise's variance); it holds for every 8-bit image (`is_8bit`),
# whose quantisation (0.29 DN) bounds how quiet it can be and whose noise estimate is no
# guide near 1 DN (a dark frame clipped at black reads 0.74 DN). A deeper image's threshold is
# TEXTURE_MIN scaled by its noise variance over TEXTURE_NOISE_REF's (`noise_sigma` reads the
# 8-bit 1 DN camera as 0.988 DN), at most TEXTURE_MIN, at least TEXTURE_MIN_FLOOR x the pair's
# mean grey level squared, so that float32 rounding of a flat window's variance (~1e-7 x its
# level squared) is not texture
TEXTURE_MIN = 5e-5
TEXTURE_NOISE_REF = 0.98 / 255
TEXTURE_MIN_FLOOR = 1e-6
EIGHT_BIT_SAMPLE = 4096          # pixels `is_8bit` reads


def is_8bit(image01: np.ndarray) -> bool:
    """True when an image's grey levels (in [0, 1]) are whole 8-bit steps k / 255: an 8-bit
    camera's, also when stored in 16 bits as k * 257. Read on EIGHT_BIT_SAMPLE pixels spread
    over the image."""
    img = np.asarray(image01, np.float32).ravel()
    sample = img[::max(1, img.size // EIGHT_BIT_SAMPLE)].astype(np.float64) * 255.0
    return bool(np.all(np.abs(sample - np.round(sample)) < 1e-3))


def noise_sigma(image01: np.ndarray) -> float:
    """Sensor noise sigma of a grey image, in its units: Immerkaer's estimator (the image
    filtered by the difference of two Laplacians, which cancels smooth signal), with the
    median absolute response in place of the mean so that edges and texture barely bias it.
    White noise of sigma s gives a response of sigma 6 s."""
    img = np.asarray(image01, np.float32)
    if img.ndim != 2 or min(img.shape) < 3:
        raise ValueError(f'image shape {img.shape}: expected (H, W) with H, W >= 3')
    response = cv2.filter2D(img, cv2.CV_32F, _LAPLACIAN_DIFFERENCE,
                            borderType=cv2.BORDER_REPLICATE)
    inner = np.abs(response[1:-1:NOISE_SAMPLE_STEP, 1:-1])
    return float(1.4826 * np.median(inner) / 6.0)


def texture_min_of(left: np.ndarray, right: np.ndarray) -> float:
    """`match_zncc`'s texture threshold for this pair: TEXTURE_MIN for 8-bit images; for
    deeper ones TEXTURE_MIN x (noise / TEXTURE_NOISE_REF)^2, the noise being the noisier
    image's `noise_sigma`, at most TEXTURE_MIN and at least TEXTURE_MIN_FLOOR x the square of
    the pair's mean grey level.

    The images' grey levels are fractions of full scale, so texture that a quiet camera
    resolves (12- or 16-bit, or 12-bit data in a 16-bit image, whose levels fill only 1/16 of
    the scale) has a variance far below an 8-bit camera's noise: the 8-bit threshold called it
    flat (12-bit data in 16-bit pairs lost 60-100 % of the student's matches, `l3d eval`
    completeness 0.29 against SGBM's 0.86). A deep camera read as noisy as the 8-bit one or
    more keeps TEXTURE_MIN: the estimate reads fine texture as noise (up to 7 DN at 150 m for
    1 DN), and the ZNCC and peak tests reject what noise matches."""
    if is_8bit(left) and is_8bit(right):
        return TEXTURE_MIN
    sigma = max(noise_sigma(left), noise_sigma(right))
    level = 0.5 * (float(np.mean(left)) + float(np.mean(right)))
    scaled = TEXTURE_MIN * (sigma / TEXTURE_NOISE_REF) ** 2
    return float(min(TEXTURE_MIN, max(TEXTURE_MIN_FLOOR * level * level, scaled)))


@lru_cache(maxsize=4)
def _pixel_grid(h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    """(cols, rows) float32 (h, w) pixel coordinates, made once per image size (read-only)."""
    cols = np.ascontiguousarray(np.broadcast_to(np.arange(w, dtype=np.float32), (h, w)))
    rows = np.ascontiguousarray(np.broadcast_to(np.arange(h, dtype=np.float32)[:, None],
                                                (h, w)))
    cols.flags.writeable = rows.flags.writeable = False
    return cols, rows


def _checked(left, right, disparity_px, window_sigma_px: float):
    """The three (H, W) images as float32; ValueError naming a size or window that is off."""
    left = np.asarray(left, np.float32)
    right = np.asarray(right, np.float32)
    disp = np.asarray(disparity_px, np.float32)
    if left.ndim != 2 or left.shape != right.shape or left.shape != disp.shape:
        raise ValueError(f'left {left.shape}, right {right.shape}, disparity {disp.shape}: '
                         'expected the same (H, W)')
    if not window_sigma_px > 0:
        raise ValueError(f'window_sigma_px={window_sigma_px!r}: expected > 0')
    return left, right, disp


# textured pixels behind a frame-wide shift (~12 independent windows at a 2.5 px window sigma)
FRAME_SHIFT_MIN_PIXELS = 1000


def refine_disparity(left: np.ndarray, right: np.ndarray, disparity_px: np.ndarray,
                     window_sigma_px: float = 2.5, iterations: int = 2,
                     max_shift_px: float = 0.75, coarse_sigma_px: float = 0.0,
                     frame_shift_max_px: float = 0.0) -> np.ndarray:
    """(H, W) disparity [px] of the left image, NaN invalid -> refined, same NaNs.

    left, right: (H, W) rectified grey images (any scale, the same for both). A pixel whose
    window has no texture (sum of weighted squared gradients 0) keeps its input disparity
    (moved by the frame-wide shift, if any). iterations 0: the input, unchanged.

    coarse_sigma_px > 0: one first step on both images blurred by this Gaussian. Brightness
    is linear in the shift only over about the texture's correlation length, so a start off by
    more (a learned matcher's smooth error, unlike SGBM's integer match) is only partly
    corrected by steps at full resolution; blurred, the linear range is wider.
    frame_shift_max_px > 0 (needs coarse_sigma_px): that step may move each pixel up to
    max(max_shift_px, frame_shift_max_px), and the whole field moves by the median of what it
    moved the textured pixels whose window is at least a fifth valid (FRAME_SHIFT_MIN_PIXELS
    of them, else no shift), limited to frame_shift_max_px: a matcher's frame-wide bias. One
    offset for the frame drags no pixel across a depth edge; each pixel keeps within
    max_shift_px of the moved field.
    """
    left, right, disp = _checked(left, right, disparity_px, window_sigma_px)
    if not (isinstance(iterations, int) and iterations >= 0):
        raise ValueError(f'iterations={iterations!r}: expected an integer >= 0')
    if not max_shift_px > 0:
        raise ValueError(f'max_shift_px={max_shift_px!r}: expected > 0')
    if not coarse_sigma_px >= 0:
        raise ValueError(f'coarse_sigma_px={coarse_sigma_px!r}: expected >= 0 (0: off)')
    if not frame_shift_max_px >= 0 or (frame_shift_max_px > 0 and coarse_sigma_px == 0):
        raise ValueError(f'frame_shift_max_px={frame_shift_max_px!r}: expected >= 0, and 0 '
                         'without coarse_sigma_px')
    valid = np.isfinite(disp)
    if iterations == 0 or not valid.any():
        return disp.copy()
    centre = np.where(valid, disp, 0.0).astype(np.float32)
    vf = valid.astype(np.float32)                  # invalid pixels carry no weight
    d = centre
    if coarse_sigma_px > 0:
        centre, d = _coarse(left, right, centre, vf, window_sigma_px, max_shift_px,
                            coarse_sigma_px, frame_shift_max_px)
    fine = _LucasKanade(left, right, vf, window_sigma_px)
    d, _ = fine.steps(d, centre, iterations, max_shift_px)
    return np.where(valid, d, np.nan).astype(np.float32)


def refine_in_passes(left: np.ndarray, right: np.ndarray, disparity_px: np.ndarray,
                     window_sigma_px: float = 2.5, passes: tuple[int, ...] = (2, 2, 2),
                     max_shift_px: float = 0.75) -> tuple[np.ndarray, np.ndarray]:
    """`refine_disparity` run once per entry of `passes` (its steps), each pass from the last
    one's result and within max_shift_px of it -> (refined disparity, unconverged): (H, W)
    bool, True where the last pass still moved the disparity by its whole reach (a start off
    by more than the passes together reach, or a window the images pull on without end).

    The same as chaining `refine_disparity` calls without redoing their set-up: the student's
    three passes (2, 2 and 1 steps) take what two separate two-step calls took."""
    left, right, disp = _checked(left, right, disparity_px, window_sigma_px)
    if not passes or not all(isinstance(n, int) and n >= 1 for n in passes):
        raise ValueError(f'passes={passes!r}: expected a non-empty sequence of integers >= 1')
    if not max_shift_px > 0:
        raise ValueError(f'max_shift_px={max_shift_px!r}: expected > 0')
    valid = np.isfinite(disp)
    unconverged = np.zeros(disp.shape, bool)
    if not valid.any():
        return disp.copy(), unconverged
    d = np.where(valid, disp, 0.0).astype(np.float32)
    fine = _LucasKanade(left, right, valid.astype(np.float32), window_sigma_px)
    for n in passes:
        start = d
        d, _ = fine.steps(start, start, n, max_shift_px)
    unconverged = valid & (np.abs(d - start) >= max_shift_px - 1e-3)
    return np.where(valid, d, np.nan).astype(np.float32), unconverged


def _coarse(left, right, centre, weight, window_sigma_px, max_shift_px, coarse_sigma_px,
            frame_shift_max_px) -> tuple[np.ndarray, np.ndarray]:
    """The coarse step of `refine_disparity` -> (centre moved by the frame-wide shift, the
    disparity after the step, within max_shift_px of that centre)."""
    lk = _LucasKanade(cv2.GaussianBlur(left, (0, 0), coarse_sigma_px),
                      cv2.GaussianBlur(right, (0, 0), coarse_sigma_px), weight, window_sigma_px)
    moved, textured = lk.steps(centre, centre, 1, max(max_shift_px, frame_shift_max_px))
    textured &= weight > 0
    if frame_shift_max_px > 0:
        # a window of a few valid samples (an isolated pixel's weight is 1 / (2 pi sigma^2),
        # 0.025 at 2.5 px) carries rounding noise, not a match
        counted = textured & (lk.s_w >= 0.2)
        if np.count_nonzero(counted) >= FRAME_SHIFT_MIN_PIXELS:
            offset = np.median((moved - centre)[counted])
            centre = centre + np.float32(np.clip(offset, -frame_shift_max_px,
                                                 frame_shift_max_px))
    shift = cv2.subtract(moved, centre)
    shift[~textured] = 0                      # no texture: the input, moved with the frame
    np.clip(shift, -max_shift_px, max_shift_px, out=shift)
    return centre, cv2.add(centre, shift)


class _LucasKanade:
    """The windowed regression steps of `refine_disparity` on one pair of images."""

    def __init__(self, left: np.ndarray, right: np.ndarray, weight: np.ndarray,
                 window_sigma_px: float):
        self.left, self.right, self.weight, self.sigma = left, right, weight, window_sigma_px
        self.grad = cv2.Sobel(right, cv2.CV_32F, 1, 0, ksize=1, scale=0.5)   # central diff.
        self.s_w = self.window(weight)

    def window(self, v: np.ndarray) -> np.ndarray:
        return cv2.GaussianBlur(v, (0, 0), self.sigma)

    def steps(self, d: np.ndarray, centre: np.ndarray, n: int, max_shift_px: float
              ) -> tuple[np.ndarray, np.ndarray]:
        """n steps from d, each result kept within max_shift_px of centre -> (d, textured).

        OpenCV arithmetic on float32 (numpy's temporaries took most of a step's time); where
        the regression is degenerate (den at the floor, or a non-finite quotient) d is kept."""
        cols, rows = _pixel_grid(*d.shape)
        vf, s_w = self.weight, self.s_w
        floor = np.float32(1e-12) * np.maximum(s_w, np.float32(1e-30))
        textured = np.zeros(d.shape, bool)
        for _ in range(n):
            map_x = cv2.subtract(cols, d)
            warped = cv2.remap(self.right, map_x, rows, cv2.INTER_LINEAR,
                               borderMode=cv2.BORDER_REPLICATE)
            g = cv2.multiply(cv2.remap(self.grad, map_x, rows, cv2.INTER_LINEAR,
                                       borderMode=cv2.BORDER_REPLICATE), vf)
            # r_q + G_q d_q, regressed on G_q
            a = cv2.multiply(cv2.add(cv2.subtract(warped, self.left), cv2.multiply(g, d)), vf)
            s_g, s_a = self.window(g), self.window(a)
            mean_g = cv2.divide(s_g, s_w)
            num = cv2.subtract(self.window(cv2.multiply(a, g)), cv2.multiply(s_a, mean_g))
            den = cv2.subtract(self.window(cv2.multiply(g, g)), cv2.multiply(s_g, mean_g))
            textured = den > floor
            estimate = cv2.divide(num, den)
            keep = ~(textured & np.isfinite(estimate))
            cv2.copyTo(d, keep.view(np.uint8), estimate)      # a bool mask read as 0 / 1
            shift = cv2.subtract(estimate, centre)
            np.clip(shift, -max_shift_px, max_shift_px, out=shift)
            d = cv2.add(centre, shift)
        return d, textured


def _zncc(left, right, disparity_px, window_sigma_px, texture_min, shifts_px):
    """ZNCC (`match_zncc`) at disparity + each of shifts_px; the left windows computed once,
    OpenCV arithmetic (three shifts at 512 px: 14 ms, against 22 ms for three numpy
    match_zncc calls on this 2-core VM)."""
    left, right, disp = _checked(left, right, disparity_px, window_sigma_px)
    if texture_min is None:
        texture_min = texture_min_of(left, right)
    valid = np.isfinite(disp)
    cols, rows = _pixel_grid(*disp.shape)
    base = cv2.subtract(cols, np.where(valid, disp, np.float32(0)).astype(np.float32))

    def window(v):
        return cv2.GaussianBlur(v, (0, 0), window_sigma_px)

    def variance(v, mean):
        return cv2.subtract(window(cv2.multiply(v, v)), cv2.multiply(mean, mean))

    mean_l = window(left)
    var_l = variance(left, mean_l)
    left_untextured = ~valid | (var_l <= texture_min)
    last_col = np.float32(disp.shape[1] - 1)
    out = []
    for shift in shifts_px:
        match_col = cv2.subtract(base, float(shift))
        # a match outside the right image has no correspondence to verify: the replicated
        # border column has vertical texture only and no horizontal peak, so without this a
        # left-border pixel (u < its disparity, unseen by the right camera) would pass with
        # whatever disparity a network extrapolated there
        outside = (match_col < 0) | (match_col > last_col)
        warped = cv2.remap(right, match_col, rows, cv2.INTER_LINEAR,
                           borderMode=cv2.BORDER_REPLICATE)
        mean_r = window(warped)
        var_r = variance(warped, mean_r)
        cov = cv2.subtract(window(cv2.multiply(left, warped)), cv2.multiply(mean_l, mean_r))
        zncc = cv2.divide(cov, cv2.sqrt(cv2.multiply(var_l, var_r)))   # 0 where 0 / 0
        np.clip(zncc, -1.0, 1.0, out=zncc)
        zncc[left_untextured | (var_r <= texture_min) | outside] = np.nan
        out.append(zncc)
    return out


def match_zncc(left: np.ndarray, right: np.ndarray, disparity_px: np.ndarray,
               window_sigma_px: float = 2.5, texture_min: float | None = None) -> np.ndarray:
    """Zero-mean normalised cross-correlation of each left pixel's Gaussian window with the
    right image warped by the disparity: (H, W) float32 in [-1, 1], 1 a perfect match.

    NaN where the disparity is NaN, or where either window's grey-level variance is below
    texture_min (grey levels in [0, 1], squared; None: `texture_min_of` the pair, TEXTURE_MIN
    on 8-bit images, lower on quieter deeper ones: below it there is no texture to verify the
    match against), and where the match u - disparity falls outside the right image (no
    correspondence). A correct match on textured ground scores near 1 (noise and the two
    views' emission angles lower it a little); a wrong one near 0.
    """
    return _zncc(left, right, disparity_px, window_sigma_px, texture_min, (0.0,))[0]


def match_peak(left: np.ndarray, right: np.ndarray, disparity_px: np.ndarray,
               window_sigma_px: float = 2.5, step_px: float = 1.0,
               texture_min: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(zncc, off_peak): `match_zncc` of the disparity, and (H, W) bool True where the
    disparity is not at its correlation peak: the ZNCC is higher at disparity +- step_px, a
    match the images do not support (False where the ZNCC is NaN). On held-out simulator pairs
    off_peak flags 78-79 % of a student's disparities off by more than 1 px and 1.5-5 % of the
    others (`l3d sim dataset --seed 9000`, 30-150 m, and `--seed 7400` at 20-40 m)."""
    zncc, below, above = _zncc(left, right, disparity_px, window_sigma_px, texture_min,
                               (0.0, -step_px, step_px))
    with np.errstate(invalid='ignore'):
        return zncc, np.fmax(below, above) > zncc


__all__ = ['is_8bit', 'match_peak', 'match_zncc', 'noise_sigma', 'refine_disparity',
           'refine_in_passes', 'texture_min_of']

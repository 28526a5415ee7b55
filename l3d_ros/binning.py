"""Low-light binning: match a 2x2-binned pair where image noise, not the ground, limits matching.

Ground lit by earthshine alone (the sun below the local horizon or hidden by a ridge) is imaged
with the whole dynamic range by auto-exposure, but its only texture is weak albedo contrast:
the x-gradient a matching window sees is then smaller than the sensor noise. Window matching
errs in proportion to the texture ratio rho = noise / rms gradient (the Cramer-Rao bound of
window matching); on the simulator rig rho is 0.1-0.6 on sunlit ground and 1-2.8 under
earthshine, where SGBM's depth errs 6-8x more than on sunlit ground and the stereo noise
model (hazard.disparity_sigma_px) no longer covers it: the map then shows hazards that are
noise and certifies cells that hold rocks. Averaging b x b pixels divides the noise by b and
keeps the coarse albedo texture, so rho falls by ~3x for b = 2; the pair is matched as a camera
of 1/b the resolution would see it, with that camera's noise model (disparity sigma in its
pixels, i.e. b times the metres), and the outputs are brought back to the input's pixels.

Measured on an earthshine-lit landing scene (seed 5 run 161 of `l3d land`, SGBM, 20 m):
median depth error 0.111 m at full resolution, 0.061 m binned 2x2; the fused map's cells
called safe held true hazards in 10 % of cells at full resolution, in none binned. Binning
does not make earthshine-lit rocks visible, though: on another scene (seed 5 run 48) 29 of
the 383 cells the binned map called safe at 20 m held rocks of 0.32-0.58 m, read as 0.16-0.19
m. So a binned frame's map certifies nothing (`low_light_frame`, `low_light.certify`): it
shows hazards (99.7 % of its hazard cells were true ones on run 16) and leaves the rest
unproven.

Pure numpy/OpenCV; shared by the node's pipeline and `l3d infer` / `l3d eval`.
"""
from __future__ import annotations

from dataclasses import replace

import cv2
import numpy as np

from l3d_ros.backends.base import DepthResult
from l3d_ros.backends.subpixel import noise_sigma
from l3d_ros.config import LowLightConfig
from l3d_ros.dataset import HAZARD_HAZARD, HAZARD_SAFE
from l3d_ros.geometry import StereoCalib
from l3d_ros.hazard import hazard_to_occupancy
from l3d_ros.site import FrameHazard

MATCH_WINDOW_SIGMA_PX = 2.5     # Gaussian window whose gradient energy sets the texture ratio
TEXTURE_RATIO_MAX = 1e3          # rho of a window without any texture
SIGNAL_RATIO_MAX = 1.0           # binned pixels above this rho carry nothing either way
SIGNAL_SHARE_MIN = 0.05          # frames with less such signal stay at full resolution


def texture_ratio(image01: np.ndarray, noise: float,
                  window_sigma_px: float = MATCH_WINDOW_SIGMA_PX) -> np.ndarray:
    """(H, W) float32 rho = noise / rms x-gradient of the signal over each pixel's matching
    window (the gradient's own noise, noise^2 / 2 for a central difference, taken out);
    0 everywhere for noise 0, TEXTURE_RATIO_MAX where the window is flat."""
    img = np.asarray(image01, np.float32)
    if not noise > 0:
        return np.zeros(img.shape, np.float32)
    gx = cv2.Sobel(img, cv2.CV_32F, 1, 0, ksize=1, scale=0.5, borderType=cv2.BORDER_REPLICATE)
    energy = cv2.GaussianBlur(gx * gx, (0, 0), window_sigma_px) - np.float32(noise * noise / 2)
    floor = np.float32(noise / TEXTURE_RATIO_MAX) ** 2
    return (np.float32(noise) / np.sqrt(np.maximum(energy, floor))).astype(np.float32)


def bin_image(image: np.ndarray, factor: int) -> np.ndarray:
    """(H // f, W // f) mean of each f x f block (the last H % f rows, W % f columns dropped)."""
    img = np.asarray(image)
    if not (isinstance(factor, (int, np.integer)) and factor >= 1):
        raise ValueError(f'factor={factor!r}: expected an integer >= 1')
    h, w = img.shape[0] // factor, img.shape[1] // factor
    if h < 1 or w < 1:
        raise ValueError(f'image shape {img.shape[:2]} is smaller than a {factor}x{factor} bin')
    crop = np.ascontiguousarray(img[:h * factor, :w * factor], np.float32)
    return cv2.resize(crop, (w, h), interpolation=cv2.INTER_AREA)   # whole blocks: their mean


def unbin(values: np.ndarray, factor: int, shape: tuple[int, int], fill) -> np.ndarray:
    """Binned (h, w[, ...]) values back on the (H, W) pixels: each repeated over its f x f
    block; the rows and columns `bin_image` dropped get `fill`."""
    v = np.asarray(values)
    full = np.full(tuple(shape) + v.shape[2:], fill, dtype=v.dtype)
    up = np.repeat(np.repeat(v, factor, axis=0), factor, axis=1)
    full[:up.shape[0], :up.shape[1]] = up
    return full


def binned_calib(calib: StereoCalib, factor: int) -> StereoCalib:
    """The calibration of the f x f-binned images: a binned pixel's centre is the mean of its
    block's centres, so u_b = (u + 0.5) / f - 0.5; focal lengths / f, baseline unchanged."""
    def centre(c):
        return (c + 0.5) / factor - 0.5
    return StereoCalib(calib.fx / factor, calib.fy / factor, centre(calib.cx), centre(calib.cy),
                       calib.baseline_m, calib.width // factor, calib.height // factor)


def choose_binning(left01: np.ndarray, cfg: LowLightConfig) -> int:
    """cfg.binning when the pair should be matched binned, else 1.

    Binned when, over the pixels that carry texture at the binned scale (binned rho below
    SIGNAL_RATIO_MAX: not black shadow), the median full-resolution texture ratio exceeds
    cfg.texture_ratio_min: there noise limits the match and binning lowers it. A partly sunlit
    frame keeps full resolution (its signal is the sunlit ground, well textured; its shadows
    carry nothing binned either), as do noiseless images and frames without such signal. The
    noise is the image's estimate (`noise_sigma`) capped at cfg.image_noise_max: texture at the
    pixel scale reads as noise to any single-image estimate."""
    f = cfg.binning
    img = np.asarray(left01, np.float32)
    if f <= 1 or cfg.texture_ratio_min <= 0 or min(img.shape) < 8 * f:
        return 1
    noise = min(noise_sigma(img), cfg.image_noise_max)
    if not noise > 0:
        return 1
    binned = bin_image(img, f)
    signal = unbin(texture_ratio(binned, noise / f) < SIGNAL_RATIO_MAX, f, img.shape, False)
    if signal.mean() < SIGNAL_SHARE_MIN:
        return 1
    rho = texture_ratio(img, noise)
    return f if float(np.median(rho[signal])) > cfg.texture_ratio_min else 1


def bin_pair(left01: np.ndarray, right01: np.ndarray, calib: StereoCalib, cfg: LowLightConfig
             ) -> tuple[int, np.ndarray, np.ndarray, StereoCalib]:
    """(factor, left, right, calib) to match: the pair binned by `choose_binning`'s factor,
    or as given (factor 1)."""
    factor = choose_binning(left01, cfg)
    if factor == 1:
        return 1, left01, right01, calib
    return (factor, bin_image(left01, factor), bin_image(right01, factor),
            binned_calib(calib, factor))


def unbin_result(result: DepthResult, factor: int, shape: tuple[int, int]) -> DepthResult:
    """A binned pair's depth on the input pixels: depth and confidence per block, disparity
    in input pixels (x factor); NaN / 0 where the bins dropped rows or columns."""
    return DepthResult(unbin(result.depth_m, factor, shape, np.float32(np.nan)),
                       unbin(result.confidence, factor, shape, np.float32(0.0)),
                       unbin(result.disparity_px * np.float32(factor), factor, shape,
                             np.float32(np.nan)))


def unbin_frame(frame: FrameHazard, factor: int, shape: tuple[int, int]) -> FrameHazard:
    """A binned pair's FrameHazard with its per-pixel fields on the input pixels (hazard 255,
    points NaN where the bins dropped rows or columns); map, layers and site unchanged."""
    return replace(frame,
                   points_map=unbin(frame.points_map, factor, shape, np.float32(np.nan)),
                   pixel_hazard=unbin(frame.pixel_hazard, factor, shape, np.uint8(255)))


def uncertified(frame: FrameHazard) -> FrameHazard:
    """The frame's map with no ground certified: cells labelled safe become unproven
    (label hazard, OccupancyGrid 50 + 49 * evidence, as `hazard_to_occupancy` grades measured
    cells that are not safe), their pixels hazard, and no site. Margin and evidence are kept:
    they still say how near each cell came to a limit."""
    safe = frame.layers.hazard == HAZARD_SAFE
    layers = replace(frame.layers, hazard=np.where(safe, np.uint8(HAZARD_HAZARD),
                                                   frame.layers.hazard))
    pixels = np.where(frame.pixel_hazard == HAZARD_SAFE, np.uint8(HAZARD_HAZARD),
                      frame.pixel_hazard)
    return replace(frame, layers=layers, occupancy=hazard_to_occupancy(layers),
                   pixel_hazard=pixels, site=None)


def low_light_frame(frame: FrameHazard, factor: int, shape: tuple[int, int],
                    cfg: LowLightConfig) -> FrameHazard:
    """A binned pair's FrameHazard as published: on the input's pixels (`unbin_frame`) and,
    unless cfg.certify, `uncertified`."""
    frame = unbin_frame(frame, factor, shape)
    return frame if cfg.certify else uncertified(frame)


__all__ = ['bin_image', 'bin_pair', 'binned_calib', 'choose_binning', 'low_light_frame',
           'noise_sigma', 'texture_ratio', 'unbin', 'unbin_frame', 'unbin_result',
           'uncertified']

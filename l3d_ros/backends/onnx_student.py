"""Distilled stereo student served by ONNX Runtime (no torch, no pickle at run time).

The model (models/manifest.json, INTERFACES.md section 8) takes the rectified pair resized to its
fixed input size, `left` and `right` (1, 1, h, w) float32 grey in [0, 1], and returns
`disparity_px` (1, 1, h, w), the left view's disparity in pixels of the input resolution, and
`confidence` (1, 1, h, w) in [0, 1]. A pair whose aspect differs from the input's by more than
TILE_ASPECT_MAX is scaled alike on both axes and run in overlapping input-size tiles
(`OnnxStudentBackend.canvas_size`, `run_tiles`). Depth is never a learned scale: the disparity
is rescaled to the image width and depth_m = fx * baseline_m / disparity_px with the pair's
calibration.
The file's sha256 must match the manifest, or the backend refuses it (the pipeline then runs
SGBM).

What the student cannot know is not published as depth:
- where the images hold no texture to match (shadow, washed-out ground: `match_zncc` has
  nothing to correlate) its disparity is a fill from the matched ground around, not a
  measurement: confidence 0 there, as SGBM leaves such pixels empty. At 20-40 m those fills
  were the student's gross errors (|disparity error| p99 17.9 px over all pixels, 2.5 px over
  the textured ones, `l3d sim dataset --seed 7400`, 20-40 m), and a flat fill over a
  shadowed crater floor reads as safe ground;
- the left-border strip the right camera does not see (`base.unseen_by_right`) has no match:
  the network extrapolates there (0.2-1.8 px off at 20-26 m), so confidence 0;
- its matcher searches max_disp_px (manifest `spec`) at the input size: a disparity at the top
  of that range may be the range's end, not the scene's, so those pixels get confidence 0;
- sub-pixel refinement runs in passes (`subpixel.refine_in_passes`, REFINE_PASSES: 2, 2
  and 1 Lucas-Kanade steps, each pass within REFINE_REACH_PX of its start); a disparity the
  last pass still moves by its whole reach has not converged: confidence 0. 18 % of the
  published pixels at 20-26 m needed the first pass's whole reach; a second pass took the
  share of disparities off by more than 0.5 px from 0.2-4 % to 0.1-0.2 % per frame there,
  and AbsRel at 30-150 m from 0.0044 to 0.0031. The third pass publishes what the network
  missed by 1.5-2.25 px (held-out seed 5001, 12 pairs at 20-26 m): completeness over the
  ground both cameras see 0.885 -> 0.928 (SGBM 0.926), the new pixels err 0.05 px (median;
  1.3 % of them by more than 1 px, of the others 0.15 %), and the map misses fewer hazard
  pixels (called safe: 1770 -> 837; SGBM 1114); at 30-150 m (seed 5000) completeness 0.874
  -> 0.879, AbsRel 0.0031 -> 0.0029. Once, over a boulder in its own shadow, the network
  had answered 1 px too far (a pit, as a shadowed crater floor would be), one pass left the
  boulder's rim 1 px low and the map certified ground 1 m from it;
- a disparity off its correlation peak (`subpixel.match_peak`: the window ZNCC of the left
  image against the right one warped by the disparity is higher 1 px either side) gets
  confidence 0: 78-79 % of the shipped student's disparities off by more than 1 px are, and
  1.5-5 % of the others (held-out seeds 9000, 30-150 m, and 7400, 20-40 m);
- a frame whose matches do not verify in the images themselves is refused with a ValueError,
  and the pipeline's SGBM takes the frame: more than `verify_unmatched_max` of its textured,
  matched pixels have a window ZNCC below VERIFY_ZNCC_MIN or are off their peak. Measured
  with the shipped student (trained at 20-150 m): 2-16 % of the textured pixels per frame at
  30-150 m (seed 9000), 7-30 % on the frames of 20-40 m whose median disparity error is
  below 0.2 px, 56-93 % on those (low sun, 18-69 % textured) where it is 0.3-1.6 px (seed
  7400); at 11-16 m, beyond its range, ZNCC alone fails 51-86 % (AbsRel 1.1-1.6, published
  with confidence before these checks).
"""
import hashlib
import json
import os
from pathlib import Path

import cv2
import numpy as np
import onnxruntime as ort

from l3d_ros.backends.alignment import matched_aligned
from l3d_ros.backends.base import DepthResult, unseen_by_right
from l3d_ros.backends.subpixel import (is_8bit, match_peak, noise_sigma, refine_in_passes,
                                       texture_min_of, TEXTURE_NOISE_REF)
from l3d_ros.config import StudentConfig
from l3d_ros.geometry import disparity_to_depth, StereoCalib

MANIFEST_FORMAT = 1


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, 'rb') as f:
        for chunk in iter(lambda: f.read(1 << 20), b''):
            digest.update(chunk)
    return digest.hexdigest()


def resize_to(img: np.ndarray, size_hw: tuple[int, int]) -> np.ndarray:
    """(H, W) float32 -> (h, w): area averaging when shrinking, bilinear when enlarging."""
    h, w = size_hw
    if img.shape == (h, w):
        return img.astype(np.float32, copy=False)
    shrink = h < img.shape[0] or w < img.shape[1]
    return cv2.resize(img, (w, h), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)


# joint gain limits of `exposure_gain`: at most 4 on 8-bit images (the student learned an 8-bit
# camera of 1 DN noise), more (up to 64) on a deeper, quieter one, as far as the gain keeps its
# noise within what 4 does to that camera: 12-bit data in a 16-bit image fills 1/16 of the
# scale (mean grey 0.01-0.04 on the simulator's scenes)
EXPOSURE_GAIN_RANGE = (0.25, 4.0)
EXPOSURE_GAIN_QUIET_MAX = 64.0
RANGE_END_PX = 1.0                  # disparities this close to max_disp_px get confidence 0
REFINE_REACH_PX = 0.75              # each refinement pass moves a disparity at most this [px]
REFINE_PASSES = (2, 2, 1)           # Lucas-Kanade steps of each refinement pass
VERIFY_TEXTURED_MIN = 0.05          # fewer textured pixels than this share: unverifiable
VERIFY_ZNCC_MIN = 0.5               # a match verifies when its window ZNCC reaches this


TILE_ASPECT_MAX = 1.4               # an image's aspect within this of the input's: one resize
TILES_MAX = 16                      # more tiles than this: the frame is refused (SGBM's)


def tile_starts(length: int, size: int, overlap: int) -> list[int]:
    """Offsets of the fewest windows of `size` that cover [0, length), each overlapping the
    next by at least `overlap` (length <= size: one window at 0)."""
    if length <= size:
        return [0]
    n = -(-(length - overlap) // (size - overlap))             # >= 2 when length > size
    return [int(round(x)) for x in np.linspace(0, length - size, n)]


def tile_owners(starts: list[int], size: int, length: int, skip: int) -> np.ndarray:
    """(length,) int index of the window each position is taken from: window k + 1 takes over
    halfway between its start + skip (the first `skip` positions of a window along the
    baseline have no match inside it: their right-image match lies left of the window) and the
    end of window k."""
    owner = np.zeros(length, np.int64)
    for k in range(1, len(starts)):
        switch = (min(starts[k] + skip, starts[k - 1] + size) + starts[k - 1] + size) // 2
        owner[switch:] = k
    return owner


def pair_mean(left01: np.ndarray, right01: np.ndarray) -> float:
    """Mean grey level of a stereo pair (the mean of its two image means)."""
    return 0.5 * (float(np.mean(left01)) + float(np.mean(right01)))


def exposure_gain(left01: np.ndarray, right01: np.ndarray, input_mean: float | None) -> float:
    """The one gain for both images that brings their mean grey level to `input_mean` (the
    mean of the student's training images, from its manifest entry); 1 for None or a black
    pair.

    The student learned the exposure of its training scenes; a much brighter or darker pair is
    out of distribution (its disparity drifts by up to 1.5 px). One gain for both images keeps
    the photometric match between them. The gain is limited to EXPOSURE_GAIN_RANGE; above it
    only on a deeper image (not `subpixel.is_8bit`) quieter than the 8-bit camera of 1 DN
    (`subpixel.noise_sigma` below TEXTURE_NOISE_REF), by as much as it is quieter, up to
    EXPOSURE_GAIN_QUIET_MAX (with 4 at most, 12-bit data in a 16-bit image stayed 4-6x darker
    than the training images, and the student kept 8-23 % of such a pair against 89-96 % of
    its 8-bit twin).
    """
    if input_mean is None:
        return 1.0
    mean = pair_mean(left01, right01)
    if not mean > 0:
        return 1.0
    low, high = EXPOSURE_GAIN_RANGE
    if input_mean / mean > high and not (is_8bit(left01) and is_8bit(right01)):
        noise = max(noise_sigma(left01), noise_sigma(right01))
        high = high * TEXTURE_NOISE_REF / noise if noise > 0 else EXPOSURE_GAIN_QUIET_MAX
        high = float(np.clip(high, EXPOSURE_GAIN_RANGE[1], EXPOSURE_GAIN_QUIET_MAX))
    return float(np.clip(input_mean / mean, low, high))


def scale_pair(left01: np.ndarray, right01: np.ndarray,
               gain: float) -> tuple[np.ndarray, np.ndarray]:
    """Both images times `gain`, clipped to [0, 1] (float32); gain 1: the inputs themselves."""
    if gain == 1.0:
        return left01, right01
    g = np.float32(gain)
    return (np.clip(left01 * g, 0.0, 1.0, dtype=np.float32),
            np.clip(right01 * g, 0.0, 1.0, dtype=np.float32))


def disparity_to_result(disp_in_px: np.ndarray, confidence: np.ndarray,
                        calib: StereoCalib) -> DepthResult:
    """Network outputs (h, w) at input resolution -> DepthResult at calib's (H, W).

    disp_in_px [px of the input width] is resized and scaled by W / w; depth from the baseline.
    """
    H, W = calib.shape
    disp = resize_to(np.asarray(disp_in_px, np.float32), (H, W)) * np.float32(
        W / disp_in_px.shape[1])
    conf = np.clip(resize_to(np.asarray(confidence, np.float32), (H, W)), 0.0, 1.0)
    depth = disparity_to_depth(disp, calib.fx, calib.baseline_m)
    disp = np.where(np.isfinite(depth), disp, np.nan).astype(np.float32)
    return DepthResult(depth, np.where(np.isfinite(depth), conf, 0.0).astype(np.float32), disp)


def read_manifest(path: Path) -> dict:
    manifest = json.loads(Path(path).read_text())
    if manifest.get('format') != MANIFEST_FORMAT or not manifest.get('models'):
        raise ValueError(f'{path}: format={manifest.get("format")!r}, expected '
                         f'{MANIFEST_FORMAT} with a non-empty models list')
    return manifest


def select_entry(manifest: dict, path: Path, file_name: str | None = None) -> dict:
    """The manifest entry of `file_name`, or the manifest's default model."""
    if file_name is None:
        wanted = manifest.get('default', manifest['models'][0]['name'])
        found = [m for m in manifest['models'] if m['name'] == wanted]
    else:
        found = [m for m in manifest['models'] if m['file'] == file_name]
    if not found:
        raise ValueError(f'{path}: no model {file_name or wanted!r}; listed: '
                         f'{[m["file"] for m in manifest["models"]]}')
    return found[0]


def session_threads(threads: int) -> int:
    """onnxruntime intra-op threads: `threads`, at most the CPUs this process may run on (a
    node pinned to one core, as `l3d hil` pins it or a flight board's cgroup may, would
    otherwise time-slice its threads on that core)."""
    return max(1, min(int(threads), len(os.sched_getaffinity(0))))


class OnnxStudentBackend:
    """(left01, right01, calib) -> DepthResult with an ONNX student on the CPU."""

    name = 'student'

    def __init__(self, onnx_path: Path, sha256: str, input_size: tuple[int, int],
                 threads: int = 2, model_name: str = 'student',
                 input_mean: float | None = None, subpixel_window_px: float = 0.0,
                 max_disp_px: float | None = None, verify_unmatched_max: float = 1.0):
        """max_disp_px: the matcher's range [px at the input size] (None: unknown, no range
        guard); verify_unmatched_max: frame verification threshold (1: off)."""
        onnx_path = Path(onnx_path)
        if not onnx_path.is_file():
            raise FileNotFoundError(f'student model {onnx_path}: missing')
        actual = file_sha256(onnx_path)
        if actual != sha256:
            raise ValueError(f'student model {onnx_path}: sha256 {actual} does not match the '
                             f'manifest sha256 {sha256}; refusing it')
        self.sha256, self.model_name = actual, model_name
        self.input_size = (int(input_size[0]), int(input_size[1]))
        if input_mean is not None and not 0.0 < float(input_mean) < 1.0:
            raise ValueError(f'student model {onnx_path}: input_mean={input_mean!r}, expected '
                             'a grey level in (0, 1)')
        self.input_mean = None if input_mean is None else float(input_mean)
        self.subpixel_window_px = subpixel_window_px
        if max_disp_px is not None and not float(max_disp_px) > RANGE_END_PX:
            raise ValueError(f'student model {onnx_path}: max_disp_px={max_disp_px!r}, '
                             f'expected > {RANGE_END_PX}')
        self.max_disp_px = None if max_disp_px is None else float(max_disp_px)
        self.verify_unmatched_max = float(verify_unmatched_max)
        # what the last frame's images made of the input rules, for the node's diagnostics
        # (last_frame_student_*): exposure gain, tiles run, texture threshold
        self.last_values: dict[str, float | int | str] = {}
        opts = ort.SessionOptions()
        self.threads = session_threads(threads)
        opts.intra_op_num_threads = self.threads
        opts.inter_op_num_threads = 1
        opts.add_session_config_entry('session.intra_op.allow_spinning', '0')
        self.session = ort.InferenceSession(onnx_path.read_bytes(), opts,
                                            providers=['CPUExecutionProvider'])

    @classmethod
    def from_manifest(cls, root: Path, cfg: StudentConfig,
                      subpixel_window_px: float = 0.0) -> 'OnnxStudentBackend':
        """cfg.model: models/manifest.json (or an .onnx listed in the manifest beside it),
        relative to `root` unless absolute. Raises FileNotFoundError / ValueError."""
        path = Path(cfg.model) if Path(cfg.model).is_absolute() else Path(root) / cfg.model
        manifest_path = path if path.suffix == '.json' else path.parent / 'manifest.json'
        if not manifest_path.is_file():
            raise FileNotFoundError(f'student manifest {manifest_path}: missing')
        manifest = read_manifest(manifest_path)
        entry = select_entry(manifest, manifest_path, None if path.suffix == '.json'
                             else path.name)
        return cls(manifest_path.parent / entry['file'], entry['sha256'], entry['input_size'],
                   cfg.threads, entry['name'], entry.get('input_mean'), subpixel_window_px,
                   (entry.get('spec') or {}).get('max_disp_px'), cfg.verify_unmatched_max)

    def infer(self, left01: np.ndarray, right01: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(H, W) images in [0, 1] -> disparity [px at the canvas width], confidence, both at
        `canvas_size` (the input size unless the image's aspect differs from it); confidence 0
        at the end of the matcher's range."""
        gain = exposure_gain(left01, right01, self.input_mean)
        self.last_values['student_exposure_gain'] = round(gain, 3)
        left01, right01 = scale_pair(left01, right01, gain)
        canvas = self.canvas_size(np.asarray(left01).shape)
        left_c, right_c = (resize_to(np.asarray(img, np.float32), canvas)
                           for img in (left01, right01))
        disp, conf = self.run_tiles(left_c, right_c)
        if self.max_disp_px is not None:
            conf = np.where(disp < self.max_disp_px - RANGE_END_PX, conf, np.float32(0))
        return disp, conf

    def canvas_size(self, shape_hw: tuple[int, int]) -> tuple[int, int]:
        """The size the pair is resized to: the input size when the image's aspect is within
        TILE_ASPECT_MAX of it; else the image scaled alike on both axes until it covers the
        input size (one side equal to it), run in overlapping input-size tiles (`run_tiles`).
        The network learned one scale on both axes: 16:9 pairs squeezed into its square input
        read with AbsRel 0.0043 and completeness 0.686, tiled 0.0025 / 0.794, SGBM 0.0025 /
        0.775 (docs/cameras.md, wide_16_9)."""
        H, W = int(shape_hw[0]), int(shape_hw[1])
        h, w = self.input_size
        s = max(h / H, w / W)
        canvas = (max(h, int(round(H * s))), max(w, int(round(W * s))))
        if max(canvas[0] / h, canvas[1] / w) <= TILE_ASPECT_MAX:
            return (h, w)
        return canvas

    def run_tiles(self, left_c: np.ndarray, right_c: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The network over a (hc, wc) canvas at least the input size: one run per input-size
        tile, tiles along the baseline overlapping by the matcher's range plus a margin (the
        first max_disp_px columns of a tile cannot find their match inside it), across it by a
        quarter tile; each canvas pixel from one tile (`tile_owners`)."""
        h, w = self.input_size
        hc, wc = left_c.shape
        reach = int(np.ceil(self.max_disp_px)) if self.max_disp_px is not None else w // 4
        cols = tile_starts(wc, w, min(w - 1, reach + w // 16))
        rows = tile_starts(hc, h, h // 4)
        if len(rows) * len(cols) > TILES_MAX:
            raise ValueError(f'image resized to {hc} x {wc} for the {h} x {w} student input '
                             f'needs {len(rows) * len(cols)} tiles, more than {TILES_MAX}: '
                             'an aspect this far from the input\'s is not a stereo camera it '
                             'can serve')
        self.last_values['student_tiles'] = len(rows) * len(cols)
        if len(rows) * len(cols) == 1:                       # the canvas is the input size
            d, q = self.session.run(['disparity_px', 'confidence'],
                                    {'left': left_c[None, None], 'right': right_c[None, None]})
            return d[0, 0], q[0, 0]
        col_owner = tile_owners(cols, w, wc, reach)
        row_owner = tile_owners(rows, h, hc, 0)
        disp = np.empty((hc, wc), np.float32)
        conf = np.empty((hc, wc), np.float32)
        for i, r in enumerate(rows):
            for j, c in enumerate(cols):
                feeds = {name: np.ascontiguousarray(img[r:r + h, c:c + w])[None, None]
                         for name, img in (('left', left_c), ('right', right_c))}
                d, q = self.session.run(['disparity_px', 'confidence'], feeds)
                mine = np.ix_(np.flatnonzero(row_owner == i), np.flatnonzero(col_owner == j))
                disp[mine] = d[0, 0][mine[0] - r, mine[1] - c]
                conf[mine] = q[0, 0][mine[0] - r, mine[1] - c]
        return disp, conf

    def compute(self, left01: np.ndarray, right01: np.ndarray,
                calib: StereoCalib) -> DepthResult:
        if left01.shape != calib.shape or right01.shape != calib.shape:
            raise ValueError(f'left {left01.shape}, right {right01.shape}: expected the '
                             f'calibration size {calib.shape}')
        # a pair whose gains differ or whose rows are off (alignment.py) is matched again,
        # its right image corrected, before the matches are verified
        (disp, result), right01 = matched_aligned(
            lambda left, right: self._match(left, right, calib), left01, right01,
            self.last_values)
        window = self.subpixel_window_px or 2.5
        texture_min = texture_min_of(left01, right01)
        self.last_values['student_texture_min'] = f'{texture_min:.3g}'
        zncc, wrong = match_peak(left01, right01, disp, window, texture_min=texture_min)
        if self.verify_unmatched_max < 1:
            self.verify(zncc, wrong)
        conf = np.where(np.isfinite(zncc) & ~wrong & ~unseen_by_right(disp),
                        result.confidence, np.float32(0))
        return DepthResult(result.depth_m, conf, result.disparity_px)

    def _match(self, left01: np.ndarray, right01: np.ndarray,
               calib: StereoCalib) -> tuple[np.ndarray, DepthResult]:
        """The network's disparity, refined -> (disparity where confident, NaN elsewhere;
        the result)."""
        disp, conf = self.infer(left01, right01)
        result = disparity_to_result(disp, conf, calib)
        if self.subpixel_window_px > 0:
            # full-resolution steps only: refine_disparity's coarse step (values, or a
            # smoothed start) was better per frame three times and landed worse each time
            # (README, closed loop). Each pass starts from the last one's result; a
            # disparity the images still pull by the last pass's whole reach has not
            # converged (the network was off by more than the steps' linear range, as over a
            # shadowed boulder it took for a pit): unknown, not dragged on
            refined, moving = refine_in_passes(left01, right01, result.disparity_px,
                                               self.subpixel_window_px, REFINE_PASSES,
                                               REFINE_REACH_PX)
            result = disparity_to_result(refined, np.where(moving, np.float32(0),
                                                           result.confidence), calib)
        disp = np.where(result.confidence > 0, result.disparity_px, np.nan).astype(np.float32)
        return disp, result

    def verify(self, zncc: np.ndarray, wrong: np.ndarray) -> None:
        """ValueError when more than verify_unmatched_max of the frame's textured, confidently
        matched pixels (`match_zncc` of the frame finite) do not verify: a window ZNCC below
        VERIFY_ZNCC_MIN, or off its correlation peak (`wrong`, `match_peak`); or when fewer than
        VERIFY_TEXTURED_MIN of its pixels are textured and matched: nothing in the images then
        supports the student's depth (a washed-out frame at 11-13 m, 0.7 % textured, came out
        2.2x too far with confidence)."""
        checked = np.isfinite(zncc)
        if checked.mean() < VERIFY_TEXTURED_MIN:
            raise ValueError(f'matches cannot be verified: {checked.mean():.1%} of the pixels '
                             f'are textured and matched, fewer than {VERIFY_TEXTURED_MIN:.0%}')
        unmatched = float(np.mean((zncc[checked] < VERIFY_ZNCC_MIN) | wrong[checked]))
        if unmatched > self.verify_unmatched_max:
            raise ValueError(f'matches do not verify: {unmatched:.0%} of the textured pixels '
                             f'have a window ZNCC < {VERIFY_ZNCC_MIN} or off its peak, more '
                             f'than verify_unmatched_max={self.verify_unmatched_max} (a scene '
                             "beyond the student's range, or images it cannot match)")

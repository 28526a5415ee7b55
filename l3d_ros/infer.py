"""`l3d infer DATASET --out OUT`: depth, confidence and hazard of every pair folder.

Writes OUT/<pair>/depth.npy (float32, NaN invalid), confidence.npy (float32 0..1) and
hazard.npy (uint8 0 safe, 1 hazard, 255 unknown; INTERFACES.md sections 3 and 6), the
hazard map the node would publish (hazard_map.npy: OccupancyGrid values, hazard_map.json: its
grid in `map` and the safe site), plus preview.png with --preview. Each pair is an independent
scene: a fresh DEM per pair, the pose
from pose.json when present, else nadir at the median depth. The per-frame hazard is
l3d_ros.site.frame_hazard, the very function the node runs.
"""
import argparse
from dataclasses import replace
import json
from pathlib import Path
import sys
import time

import numpy as np

from l3d_ros.backends import DepthResult, finalize, make_backend, to_gray01
from l3d_ros.binning import bin_pair, low_light_frame, unbin_result
from l3d_ros.config import BACKENDS, load_node_config, StereoNodeConfig
from l3d_ros.dataset import list_pairs, read_pair, StereoPair
from l3d_ros.geometry import depth_to_disparity
from l3d_ros.site import frame_hazard, FrameHazard


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_source_arguments(parser)
    parser.add_argument('--out', type=Path, required=True, help='output folder')
    parser.add_argument('--preview', action='store_true', help='also write preview.png')


def add_source_arguments(parser: argparse.ArgumentParser) -> None:
    """DATASET, --backend, --config, --stride: shared with `l3d eval`."""
    parser.add_argument('dataset', type=Path, help='folder of pair folders (INTERFACES.md 3)')
    parser.add_argument('--backend', choices=BACKENDS, default=None,
                        help='depth backend (default: the config file\'s); oracle = the '
                             "pair's ground-truth depth.npy")
    parser.add_argument('--config', type=Path, default=None,
                        help='ROS parameter file (default: config/lunar_stereo.yaml)')
    parser.add_argument('--stride', type=_stride, default=None,
                        help="evaluate the hazard every STRIDE DEM cells; default 'auto', "
                             "the node's own choice (lattice <= 150 a side); 1: every cell")


def _stride(text: str) -> int | None:
    if text == 'auto':
        return None
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"stride={text!r}: expected 'auto' or an integer >= 1")
    return int(text)


class DepthSource:
    """A backend by name, or 'oracle' (the pair's ground truth, confidence 1 where finite).

    As in the node (l3d_ros.pipeline), a pair the student fails or refuses is SGBM's; each
    such pair is listed in `fallbacks` with the reason; a pair whose right image was corrected
    for a gain or row misalignment (backends/alignment.py) in `corrected`.
    """

    def __init__(self, name: str, cfg: StereoNodeConfig):
        self.name, self.cfg = name, cfg
        self.backend = None if name == 'oracle' else make_backend(name, cfg)
        self.fallbacks: list[str] = []
        self.corrected: list[str] = []     # pairs matched again, aligned (backends/alignment)
        self._sgbm = None

    def raw(self, pair: StereoPair, left01: np.ndarray, right01: np.ndarray,
            binned: bool = False) -> tuple[DepthResult, float]:
        """(the backend's result before the node's validity rules, seconds it took).
        binned: the pair is binned (l3d_ros.binning), matched by low_light.backend."""
        t0 = time.perf_counter()
        if self.backend is None:
            if pair.depth_m is None:
                raise FileNotFoundError(f'pair {pair.name!r}: backend oracle needs depth.npy')
            depth = np.asarray(pair.depth_m, np.float32)
            with np.errstate(invalid='ignore'):
                valid = np.isfinite(depth) & (depth > 0)     # NaN/inf: no ground truth there
            depth = np.where(valid, depth, np.float32(np.nan))
            conf = valid.astype(np.float32)
            result = DepthResult(depth, conf, depth_to_disparity(depth, pair.calib.fx,
                                                                 pair.calib.baseline_m))
            return result, time.perf_counter() - t0
        used = self.backend
        if binned and self.name != 'sgbm' and self.cfg.low_light.backend == 'sgbm':
            used = self._fallback()
        try:
            result = used.compute(left01, right01, pair.calib)
        except Exception as exc:  # noqa: BLE001 - the node's rule: the frame is SGBM's
            if used.name == 'sgbm':
                raise
            self.fallbacks.append(f'{pair.name}: {self.name} failed ({exc}); sgbm used')
            print(f'l3d: {self.fallbacks[-1]}', file=sys.stderr)
            used = self._fallback()
            result = used.compute(left01, right01, pair.calib)
        values = getattr(used, 'last_values', {})
        if values.get('pair_corrections'):
            self.corrected.append(
                f"{pair.name}: pair misaligned (gain {values['pair_gain']}, ramps "
                f"{values['pair_gain_x']} / {values['pair_gain_y']}, rows "
                f"{values['pair_dy_px']} px{' of the binned pair' if binned else ''}); right "
                f"image corrected, matched {values['pair_corrections'] + 1} times")
            print(f'l3d: {self.corrected[-1]}', file=sys.stderr)
        return result, time.perf_counter() - t0

    def _fallback(self):
        self._sgbm = self._sgbm or make_backend('sgbm', self.cfg)
        return self._sgbm

    def depth(self, pair: StereoPair, left01: np.ndarray, right01: np.ndarray,
              binned: bool = False) -> tuple[DepthResult, float]:
        """(result after the node's validity rules, seconds spent computing the depth).

        The oracle's depth is the pair's ground truth as it is (INTERFACES.md section 6), not
        cut to the node's depth range or confidence: it scores the hazard pipeline alone.
        """
        raw, elapsed = self.raw(pair, left01, right01, binned)
        if self.backend is None:
            return raw, elapsed
        c = self.cfg
        return finalize(raw.depth_m, raw.confidence, pair.calib, c.depth_min_m, c.depth_max_m,
                        c.confidence_min), elapsed


def process_pair(pair: StereoPair, source: DepthSource, stride: int | None = None
                 ) -> tuple[DepthResult, FrameHazard, float, np.ndarray]:
    """One pair -> (depth result, frame hazard, depth seconds, left image in [0, 1]).

    As in the node (l3d_ros.pipeline), a noise-limited pair is matched binned
    (l3d_ros.binning) and its outputs brought back to the pair's pixels; the seconds include
    that decision. The oracle's depth is never binned."""
    left01, right01 = to_gray01(pair.left), to_gray01(pair.right)
    t0 = time.perf_counter()
    factor, left_m, right_m, calib_m = 1, left01, right01, pair.calib
    if source.backend is not None:
        factor, left_m, right_m, calib_m = bin_pair(left01, right01, pair.calib,
                                                    source.cfg.low_light)
    view = replace(pair, calib=calib_m)
    binning_s = time.perf_counter() - t0
    result, depth_s = source.depth(view, left_m, right_m, factor > 1)
    # the oracle's depth is exact: no stereo sigma margins, so the hazard pipeline alone is
    # scored against section 4 (INTERFACES.md section 6)
    frame = frame_hazard(result, view.calib, pair.R_world_cam, pair.t_world_cam,
                         source.cfg.hazard, stride=stride, exact_depth=source.name == 'oracle')
    if factor > 1:
        result = unbin_result(result, factor, pair.calib.shape)
        frame = low_light_frame(frame, factor, pair.calib.shape, source.cfg.low_light)
    return result, frame, binning_s + depth_s, left01


def write_hazard_map(out: Path, frame: FrameHazard) -> None:
    """hazard_map.npy (int8, the node's OccupancyGrid values) and hazard_map.json (its grid)."""
    grid = frame.layers.grid
    np.save(out / 'hazard_map.npy', frame.occupancy.astype(np.int8))
    meta = {'frame_id': 'map', 'cell_m': grid.cell_m, 'origin_xy_m': list(grid.origin_xy_m),
            'rows': int(frame.occupancy.shape[0]), 'cols': int(frame.occupancy.shape[1]),
            'safe_site_xy_m': None if frame.site is None else frame.site.xy_m.tolist()}
    (out / 'hazard_map.json').write_text(json.dumps(meta, indent=2) + '\n')


def node_config(path: Path | None, backend: str | None) -> tuple[StereoNodeConfig, str]:
    cfg = load_node_config(path)
    return cfg, backend or cfg.backend


def run(args: argparse.Namespace) -> int:
    cfg, backend = node_config(args.config, args.backend)
    source = DepthSource(backend, cfg)
    pairs = list_pairs(args.dataset)
    for folder in pairs:
        pair = read_pair(folder)                # pose.json is read with the truth
        result, frame, _, left01 = process_pair(pair, source, args.stride)
        out = args.out / folder.name
        out.mkdir(parents=True, exist_ok=True)
        np.save(out / 'depth.npy', result.depth_m.astype(np.float32))
        np.save(out / 'confidence.npy', result.confidence.astype(np.float32))
        np.save(out / 'hazard.npy', frame.pixel_hazard.astype(np.uint8))
        write_hazard_map(out, frame)
        if args.preview:
            from l3d_ros.preview import write_overlay
            write_overlay(out / 'preview.png', left01, frame, pair.calib)
    print(f'l3d infer: {len(pairs)} pairs -> {args.out} (backend {backend})')
    return 0

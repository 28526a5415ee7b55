"""`l3d eval DATASET --json F`: depth and hazard metrics of a backend (INTERFACES.md section 6).

All metrics accumulate over every pixel of every pair (not a mean of per-pair means). Depth:
over pixels with finite ground truth; abs_rel, rmse_m and delta_1_25 over those where the
prediction is also finite; completeness = fraction of them with a finite prediction, and
completeness_visible the same over those the right camera sees too (l3d_ros.geometry.
stereo_visible on the ground truth: what any stereo backend can measure at most). Hazard:
positive class = hazard (1), over pixels whose ground truth is not 255; a missing prediction
(255) counts as hazard. Latency: the backend's depth computation per pair [ms] (the hazard
pipeline's own time is reported apart as hazard_ms_median).
"""
import argparse
from dataclasses import asdict, dataclass
import json
from pathlib import Path
import time

import numpy as np

from l3d_ros.dataset import HAZARD_HAZARD, HAZARD_UNKNOWN, list_pairs, read_pair
from l3d_ros.geometry import stereo_visible
from l3d_ros.infer import add_source_arguments, DepthSource, node_config, process_pair


@dataclass
class DepthCounts:
    """Sums over pixels, so that datasets accumulate exactly."""

    n_valid_gt: int = 0         # finite ground truth
    n_both: int = 0             # finite ground truth and finite prediction
    sum_abs_rel: float = 0.0
    sum_sq_m2: float = 0.0
    n_delta: int = 0            # max(d/d*, d*/d) < 1.25
    n_visible_gt: int = 0       # finite ground truth the right camera sees too
    n_visible_both: int = 0     # ... with a finite prediction

    def add(self, pred_m: np.ndarray, gt_m: np.ndarray,
            visible: np.ndarray | None = None) -> None:
        """visible: (H, W) bool, the pixels both cameras see (None: every pixel)."""
        with np.errstate(invalid='ignore'):
            gt_ok = np.isfinite(gt_m) & (gt_m > 0)
        both = gt_ok & np.isfinite(pred_m)
        seen = gt_ok if visible is None else gt_ok & visible
        self.n_visible_gt += int(seen.sum())
        self.n_visible_both += int((seen & both).sum())
        d, g = pred_m[both].astype(np.float64), gt_m[both].astype(np.float64)
        self.n_valid_gt += int(gt_ok.sum())
        self.n_both += int(both.sum())
        self.sum_abs_rel += float(np.sum(np.abs(d - g) / g))
        self.sum_sq_m2 += float(np.sum((d - g) ** 2))
        with np.errstate(divide='ignore', invalid='ignore'):
            self.n_delta += int(np.sum(np.maximum(d / g, g / d) < 1.25))

    def metrics(self) -> dict[str, float]:
        n = max(self.n_both, 1)
        nan = float('nan')
        return {'abs_rel': self.sum_abs_rel / n if self.n_both else nan,
                'rmse_m': float(np.sqrt(self.sum_sq_m2 / n)) if self.n_both else nan,
                'delta_1_25': self.n_delta / n if self.n_both else nan,
                'completeness': self.n_both / self.n_valid_gt if self.n_valid_gt else nan,
                'completeness_visible': (self.n_visible_both / self.n_visible_gt
                                         if self.n_visible_gt else nan)}


@dataclass
class HazardCounts:
    tp: int = 0
    fp: int = 0
    fn: int = 0
    tn: int = 0

    def add(self, pred: np.ndarray, gt: np.ndarray) -> None:
        scored = gt != HAZARD_UNKNOWN
        p = pred[scored] != 0               # hazard or missing (255) both predict hazard
        g = gt[scored] == HAZARD_HAZARD
        self.tp += int(np.sum(p & g))
        self.fp += int(np.sum(p & ~g))
        self.fn += int(np.sum(~p & g))
        self.tn += int(np.sum(~p & ~g))

    def metrics(self) -> dict[str, float]:
        nan = float('nan')
        precision = self.tp / (self.tp + self.fp) if self.tp + self.fp else nan
        recall = self.tp / (self.tp + self.fn) if self.tp + self.fn else nan
        f1 = (2 * precision * recall / (precision + recall)
              if self.tp and precision + recall > 0 else (0.0 if self.tp + self.fn else nan))
        return {'hazard_precision': precision, 'hazard_recall': recall, 'hazard_f1': f1}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_source_arguments(parser)
    parser.add_argument('--json', type=Path, required=True, help='metrics JSON to write')
    parser.add_argument('--md', type=Path, default=None, help='also a Markdown table')


def evaluate(dataset: Path, source: DepthSource, stride: int | None = None) -> dict:
    depth, hazard = DepthCounts(), HazardCounts()
    latency_ms, hazard_ms = [], []
    pairs = list_pairs(dataset)
    for folder in pairs:
        pair = read_pair(folder)
        if pair.depth_m is None or pair.hazard is None:
            raise FileNotFoundError(f'{folder}: eval needs depth.npy and hazard.npy')
        t0 = time.perf_counter()
        result, frame, depth_s, _ = process_pair(pair, source, stride)
        hazard_ms.append((time.perf_counter() - t0 - depth_s) * 1e3)
        latency_ms.append(depth_s * 1e3)
        depth.add(result.depth_m, pair.depth_m, stereo_visible(pair.depth_m, pair.calib))
        hazard.add(frame.pixel_hazard, pair.hazard)
    backend = source.backend
    model = getattr(backend, 'model_name', None) or getattr(backend, 'name', source.name)
    return {'n_pairs': len(pairs), 'backend': source.name, 'model': model,
            **depth.metrics(), **hazard.metrics(),
            'fallback_pairs': len(source.fallbacks), 'corrected_pairs': len(source.corrected),
            'latency_ms_median': float(np.median(latency_ms)),
            'latency_ms_p95': float(np.percentile(latency_ms, 95)),
            'hazard_ms_median': float(np.median(hazard_ms)),
            'hazard_counts': asdict(hazard), 'depth_counts': asdict(depth)}


def to_markdown(metrics: dict) -> str:
    keys = [k for k, v in metrics.items() if not isinstance(v, dict)]
    rows = [f'| {k} | {metrics[k]:.4g} |' if isinstance(metrics[k], float)
            else f'| {k} | {metrics[k]} |' for k in keys]
    return '\n'.join(['| metric | value |', '|---|---|', *rows]) + '\n'


def _nan_to_none(value):
    """Strict JSON has no NaN: an undefined metric (no pixel to score) is written null."""
    if isinstance(value, dict):
        return {k: _nan_to_none(v) for k, v in value.items()}
    return None if isinstance(value, float) and value != value else value


def run(args: argparse.Namespace) -> int:
    cfg, backend = node_config(args.config, args.backend)
    metrics = evaluate(args.dataset, DepthSource(backend, cfg), args.stride)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(_nan_to_none(metrics), indent=2) + '\n')
    if args.md:
        args.md.write_text(to_markdown(metrics))
    print(json.dumps(_nan_to_none({k: v for k, v in metrics.items() if not isinstance(v, dict)})))
    return 0

"""Stereo (SGBM) DEM height error against the simulator's true DEM, per pair and altitude.

Usage: python scripts/hazard_noise_study.py DATASET [DATASET ...] [--limit N]

For each pair (section 3 folder with dem.npy / dem.json / pose.json from `l3d sim dataset`):
SGBM depth (the node's config) -> map points -> per-cell mean and median on the true DEM's
grid; the error e = estimate - true height. Printed per pair [m]:
- mad: 1.4826 * MAD of e (all spatial scales), and pixels per cell;
- rock: the rock-scale error, e minus its 4 m box mean (what a 4 m disc's plane cannot absorb):
  its 68th percentile of |.|, the share of cells beyond 0.3 m (one such cell in a disc already
  reads as a rock) and the lag correlation at 1, 2, 3, 5 cells (NOISE_CORR_CELLS);
- med: the same 68th percentile for the per-cell median (no better: errors are correlated,
  not outliers within a cell);
- model: sigma_Z = Z^2 sigma_d / (f B) for sigma_d = 0.25 px, and the sigma_d that matches
  the measured rock-scale error with one measurement per cell (DemFusion correlated=True).
Last, the true DEM itself is 3x3-median filtered and its section-4 hazard compared with the
unfiltered one: the share of true-hazard cells that the filter would turn safe (why the
pipeline does not median-filter noisy DEMs: it erases real rocks of ~0.6 m).
"""
import argparse
import json
from pathlib import Path

import cv2
import numpy as np

from l3d_ros.config import load_node_config
from l3d_ros.dataset import list_pairs, read_pair
from l3d_ros.geometry import backproject, transform_points
from l3d_ros.hazard import hazard_from_dem
from l3d_ros.infer import DepthSource, to_gray01


def cell_stats(points: np.ndarray, shape: tuple[int, int], origin: tuple[float, float],
               cell_m: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-cell (mean, median, count) of the points' z on a grid; NaN where empty."""
    p = points.reshape(-1, 3)
    p = p[np.isfinite(p).all(1)]
    col = np.floor((p[:, 0] - origin[0]) / cell_m).astype(np.int64)
    row = np.floor((p[:, 1] - origin[1]) / cell_m).astype(np.int64)
    ins = (row >= 0) & (row < shape[0]) & (col >= 0) & (col < shape[1])
    flat, z = row[ins] * shape[1] + col[ins], p[ins, 2].astype(np.float64)
    size = shape[0] * shape[1]
    n = np.bincount(flat, minlength=size)
    mean = np.where(n > 0, np.bincount(flat, z, size) / np.maximum(n, 1), np.nan)
    order = np.lexsort((z, flat))
    fs, zs = flat[order], z[order]
    start = np.searchsorted(fs, np.arange(size))
    med = np.full(size, np.nan)
    has = n > 0
    med[has] = 0.5 * (zs[start[has] + (n[has] - 1) // 2] + zs[start[has] + n[has] // 2])
    return mean.reshape(shape), med.reshape(shape), n.reshape(shape)


def rock_scale(err: np.ndarray, ok: np.ndarray, box: int = 21) -> np.ndarray:
    """err minus its box mean over valid cells (box = 4 m at 0.2 m cells); NaN elsewhere."""
    e = np.where(ok, err, 0.0)
    w = ok.astype(np.float64)
    low = (cv2.boxFilter(e, -1, (box, box), normalize=False)
           / np.maximum(cv2.boxFilter(w, -1, (box, box), normalize=False), 1.0))
    return np.where(ok, err - low, np.nan)


def lag_corr(x: np.ndarray, lag: int) -> float:
    a, b = x[:, :-lag], x[:, lag:]
    m = np.isfinite(a) & np.isfinite(b)
    return float(np.corrcoef(a[m], b[m])[0, 1])


def median3(dem: np.ndarray) -> np.ndarray:
    p = np.pad(dem, 1, mode='edge')
    h, w = dem.shape
    return np.median(np.stack([p[i:i + h, j:j + w] for i in range(3) for j in range(3)]), 0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('datasets', nargs='+', type=Path)
    ap.add_argument('--limit', type=int, default=0, help='pairs per dataset (0: all)')
    args = ap.parse_args()
    cfg = load_node_config()
    source = DepthSource('sgbm', cfg)
    hz = cfg.hazard
    lost, true_haz = 0, 0
    for ds in args.datasets:
        pairs = list_pairs(ds)
        for folder in pairs[:args.limit or None]:
            pair = read_pair(folder)
            alt = json.loads((folder / 'sim.json').read_text())['altitude_m']
            dem = np.load(folder / 'dem.npy')
            meta = json.loads((folder / 'dem.json').read_text())
            res, _ = source.depth(pair, to_gray01(pair.left), to_gray01(pair.right))
            pts = transform_points(backproject(res.depth_m, pair.calib), pair.R_world_cam,
                                   pair.t_world_cam)
            mean, med, n = cell_stats(pts, dem.shape, meta['origin_xy_m'], meta['cell_m'])
            ok = np.isfinite(mean) & (n >= 4)
            err = mean - dem
            rock = rock_scale(err, ok)
            r68 = float(np.nanpercentile(np.abs(rock), 68.3))
            m68 = float(np.nanpercentile(np.abs(rock_scale(med - dem, ok)), 68.3))
            mad = 1.4826 * float(np.median(np.abs(err[ok] - np.median(err[ok]))))
            model = alt ** 2 * 0.25 / (pair.calib.fx * pair.calib.baseline_m)
            print(f'{ds.name}/{folder.name} alt {alt:5.1f} m  px/cell {np.median(n[ok]):3.0f}  '
                  f'mad {mad:.3f}  rock68 {r68:.3f}  >0.3m {np.nanmean(np.abs(rock) > 0.3):.2%}'
                  f'  corr1,2,3,5 ' + ' '.join(f'{lag_corr(rock, k):.2f}' for k in (1, 2, 3, 5))
                  + f'  med68 {m68:.3f}  model(0.25px) {model:.3f}  '
                  f'sigma_d fit {0.25 * r68 / model:.2f} px', flush=True)
            exact = hazard_from_dem(dem, meta['cell_m'], hz).hazard
            filt = hazard_from_dem(median3(dem).astype(np.float32), meta['cell_m'], hz).hazard
            true_haz += int(np.sum(exact == 1))
            lost += int(np.sum((exact == 1) & (filt == 0)))
    print(f'true DEM, 3x3 median: {lost / max(true_haz, 1):.2%} of true-hazard cells become safe')


if __name__ == '__main__':
    main()

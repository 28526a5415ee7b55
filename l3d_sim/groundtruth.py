"""Ground-truth hazard of a rendered left view (INTERFACES.md section 4), from the true DEM.

The hazard is the node's own `l3d_ros.hazard.hazard_from_dem` with the node's `HazardConfig`
(the `l3d_stereo.hazard` section of the same parameter file), evaluated on the DEM crop the
camera sees, resampled to `hazard.cell_m`; each left pixel takes the hazard of the cell holding
the ground point its ray hit. Pixels that see no terrain are 255 (unknown).

Only terrain the view observed counts: DEM cells that no left pixel hits (beyond the image
edge, behind a rim) are removed before the hazard is computed, so a pixel whose footprint disc
reaches mostly into unseen terrain is unknown rather than judged from terrain no camera saw:
the ground truth scores what perception of this view can know. Single-cell sampling gaps inside
the view (a pixel footprint near the cell size at high altitude) are closed first.
"""
from dataclasses import dataclass
import math
from pathlib import Path

import cv2
import numpy as np

from l3d_ros.config import HazardConfig, load_node_config
from l3d_ros.dataset import HAZARD_UNKNOWN
from l3d_ros.hazard import (GridGeometry, hazard_from_dem, HazardLayers, OCCUPANCY_SAFE_MAX,
                            pixel_hazard)
from l3d_sim.terrain import Terrain


@dataclass(frozen=True)
class DemCrop:
    """A height grid in `map` (cell-centre convention of `l3d_sim.terrain`)."""

    height_m: np.ndarray                # (H, W) float32 [m]
    cell_m: float
    origin_xy_m: tuple[float, float]    # lower-left corner of cell (0, 0) [m]


def node_hazard_config(path: Path | None = None) -> HazardConfig:
    """The perception node's hazard parameters (`l3d_stereo.hazard`), the one definition."""
    return load_node_config(path).hazard


def crop_dem(terrain: Terrain, x_range_m: tuple[float, float], y_range_m: tuple[float, float],
             cell_m: float) -> DemCrop:
    """Terrain over a map rectangle (clipped to the terrain) resampled to `cell_m`.

    An integer ratio k = cell_m / terrain.cell_m gives each cell the exact area mean of the
    terrain's bilinear surface over it (`_area_weights`: its k x k terrain nodes and the ring
    around them, edges replicated as `height_at` does), which is what points sampled densely
    on that surface average to. The cells lie on the node's map grid (corners at whole
    multiples of cell_m in `map`, as DemFusion snaps them) wherever the terrain's own cells
    allow it, so truth and perception bin the same ground into the same cells. Any other
    ratio samples the bilinear surface at cell centres.
    """
    ox, oy = terrain.origin_xy_m
    n, m = terrain.height_m.shape
    ratio = cell_m / terrain.cell_m
    k = round(ratio)
    if k >= 1 and abs(ratio - k) < 1e-6:
        j0 = _block_start(x_range_m[0], ox, terrain.cell_m, k)
        i0 = _block_start(y_range_m[0], oy, terrain.cell_m, k)
        j1 = min(m, math.ceil((x_range_m[1] - ox) / terrain.cell_m))
        i1 = min(n, math.ceil((y_range_m[1] - oy) / terrain.cell_m))
        rows, cols = (i1 - i0) // k, (j1 - j0) // k
        if rows < 1 or cols < 1:
            raise ValueError(f'crop x={x_range_m}, y={y_range_m}: expected an overlap of at '
                             f'least one {cell_m} m cell with the terrain')
        # the crop's nodes and one more each side, edges replicated (only the crop is copied)
        ri = np.clip(np.arange(i0 - 1, i0 + rows * k + 1), 0, n - 1)
        ci = np.clip(np.arange(j0 - 1, j0 + cols * k + 1), 0, m - 1)
        ring = terrain.height_m[np.ix_(ri, ci)].astype(np.float64)
        w = _area_weights(k)
        dem = sum(wa * ring[a:a + rows * k:k] for a, wa in enumerate(w))
        dem = sum(wb * dem[:, b:b + cols * k:k] for b, wb in enumerate(w))
        return DemCrop(dem.astype(np.float32), float(cell_m),
                       (ox + j0 * terrain.cell_m, oy + i0 * terrain.cell_m))
    x0 = max(x_range_m[0], ox)
    y0 = max(y_range_m[0], oy)
    cols = int((min(x_range_m[1], ox + m * terrain.cell_m) - x0) // cell_m)
    rows = int((min(y_range_m[1], oy + n * terrain.cell_m) - y0) // cell_m)
    if rows < 1 or cols < 1:
        raise ValueError(f'crop x={x_range_m}, y={y_range_m}: no overlap with the terrain')
    yy, xx = np.mgrid[0:rows, 0:cols]
    dem = terrain.height_at(x0 + (xx + 0.5) * cell_m, y0 + (yy + 0.5) * cell_m)
    return DemCrop(dem.astype(np.float32), float(cell_m), (x0, y0))


def _area_weights(k: int) -> np.ndarray:
    """(k + 2,) weights of the nodes -1..k in the mean of a piecewise-linear profile (nodes at
    cell centres) over k terrain cells: [1, 7, 8, ..., 8, 7, 1] / 8k, or [1, 6, 1] / 8 for
    k = 1 (each half segment at the block's edge averages 3/4 of its inner node and 1/4 of the
    outer one)."""
    w = np.zeros(k + 2)
    w[1:k + 1] = 1.0                       # whole segments between nodes 0..k-1 (half each)
    w[1] += -0.5 + 3 / 8                   # first half segment: 3/4 node 0, 1/4 node -1
    w[0] += 1 / 8
    w[k] += -0.5 + 3 / 8
    w[k + 1] += 1 / 8
    return w / k


def _block_start(lo_m: float, origin_m: float, cell_m: float, k: int) -> int:
    """First terrain index of the crop: at or below lo_m, >= 0, and (when the terrain's
    cells line up with whole multiples of k * cell_m in `map`) on such a multiple."""
    j = max(0, math.floor((lo_m - origin_m) / cell_m))
    phase = origin_m / cell_m
    if abs(phase - round(phase)) < 1e-6:                   # terrain on whole terrain cells
        j -= (j + round(phase)) % k
        if j < 0:
            j += k
    return j


def view_hazard_layers(terrain: Terrain, points_world_m: np.ndarray,
                       cfg: HazardConfig) -> tuple[DemCrop, HazardLayers]:
    """Hazard layers over the ground seen by a view (plus a footprint margin)."""
    xy = points_world_m[..., :2].reshape(-1, 2)
    xy = xy[np.isfinite(xy).all(axis=1)]
    if not len(xy):
        raise ValueError('points_world_m: no finite ground point; the view sees no terrain')
    margin = cfg.footprint_m / 2 + 2 * cfg.cell_m
    lo, hi = xy.min(axis=0) - margin, xy.max(axis=0) + margin
    crop = crop_dem(terrain, (lo[0], hi[0]), (lo[1], hi[1]), cfg.cell_m)
    dem = np.where(observed_cells(crop, xy), crop.height_m, np.nan).astype(np.float32)
    # section 4 on the true heights: what the camera's view leaves out hides nothing there
    return crop, hazard_from_dem(dem, crop.cell_m, cfg, origin_xy_m=crop.origin_xy_m,
                                 unseen_patches=False)


def observed_cells(crop: DemCrop, xy_m: np.ndarray) -> np.ndarray:
    """(H, W) bool: crop cells holding at least one of the (N, 2) ground points, gaps closed."""
    grid = GridGeometry(crop.origin_xy_m, crop.cell_m, crop.height_m.shape)
    row, col = grid.cell_index(xy_m[:, 0], xy_m[:, 1])
    hit = np.zeros(crop.height_m.shape, np.uint8)
    hit[row[row >= 0], col[row >= 0]] = 1
    return cv2.morphologyEx(hit, cv2.MORPH_CLOSE, np.ones((3, 3), np.uint8)).astype(bool)


def ground_truth_hazard(terrain: Terrain, points_world_m: np.ndarray,
                        cfg: HazardConfig) -> np.ndarray:
    """(H, W) uint8 ground-truth hazard of the left view from its (H, W, 3) map points [m]."""
    _, layers = view_hazard_layers(terrain, points_world_m, cfg)
    return pixel_hazard(points_world_m, layers)


# true margins (max of slope / limit and roughness / limit) a safe-graded map cell is counted
# over: any hazard (> 1, which near the limit also counts cells a few cm over it, where point
# samples and the truth's area-mean cells differ) and a gross one (> 1.2: a 0.36 m rock, 12 deg)
FALSE_SAFE_OVER = (1.0, 1.2)
# what a landing's result records of its touchdown disc: `false_safe_cells`' three counts
SITE_KEYS = ('site_safe_cells', 'site_false_safe_cells', 'site_gross_false_safe_cells')


def false_safe_cells(occupancy: np.ndarray, map_grid: GridGeometry, gt_margin: np.ndarray,
                     gt_grid: GridGeometry, nav_bias_xy_m, disc: tuple | None = None,
                     over: tuple[float, ...] = FALSE_SAFE_OVER) -> tuple[int, ...]:
    """(cells the map grades safe that the ground truth judges, then for each of `over` the
    number of them whose true margin exceeds it); disc = (centre_xy_m, radius_m): only the
    map cells centred within it (None: the whole map).

    How well a perceived hazard map is calibrated, cell by cell: both judge a cell by the
    section 4 test of a lander centred on it (true margin = max(slope / slope_max, roughness /
    roughness_max) on the true DEM; hazard above 1), so a cell graded safe (OccupancyGrid
    0..49) whose true margin exceeds 1 is ground the HDA would certify wrongly. The map lies in
    the frame the navigation believes (camera poses carry the run's constant position bias), so
    a map cell's centre q is true ground q - nav_bias_xy_m. Cells whose true ground is off
    `gt_grid` or has no margin (NaN: unknown) are not judged.
    """
    occupancy, gt_margin = np.asarray(occupancy), np.asarray(gt_margin, np.float32)
    if occupancy.shape != tuple(map_grid.shape) or gt_margin.shape != tuple(gt_grid.shape):
        raise ValueError(f'occupancy {occupancy.shape} / gt_margin {gt_margin.shape}: expected '
                         f'the shapes of their grids {map_grid.shape} / {gt_grid.shape}')
    rows, cols = np.nonzero((occupancy >= 0) & (occupancy <= OCCUPANCY_SAFE_MAX))
    x, y = map_grid.cell_centre(rows, cols)
    if disc is not None:
        (cx, cy), radius = disc
        near = np.hypot(x - cx, y - cy) <= radius
        x, y = x[near], y[near]
    bias = np.asarray(nav_bias_xy_m, np.float64).reshape(-1)[:2]
    gi, gj = gt_grid.cell_index(x - bias[0], y - bias[1])
    truth = np.full(gi.shape, np.nan, np.float32)
    inside = gi >= 0
    truth[inside] = gt_margin[gi[inside], gj[inside]]
    truth = truth[np.isfinite(truth)]
    return (int(truth.size), *(int((truth > v).sum()) for v in over))


def true_margin(layers: HazardLayers) -> np.ndarray:
    """(H, W) float32 section 4 margin of true hazard layers, NaN where unknown (exact only
    for layers computed with exact_roughness: elsewhere roughness is an upper bound)."""
    return np.where(layers.hazard == HAZARD_UNKNOWN, np.float32(np.nan),
                    np.asarray(layers.margin, np.float32))


def saved_true_margin(arrays: dict, cfg: HazardConfig | None = None
                      ) -> tuple[np.ndarray, GridGeometry] | None:
    """The true section 4 margins of a landing's saved arrays (the simulator's result.npz) and
    their grid: as saved (`gt_margin`), or, from older runs, judged here from the saved true
    heights with `cfg`; None when neither is possible."""
    if 'gt_margin' in arrays:
        margin = np.asarray(arrays['gt_margin'], np.float32)
    elif 'gt_height_m' in arrays and cfg is not None:
        margin = true_margin(hazard_from_dem(
            np.asarray(arrays['gt_height_m'], np.float32), float(arrays['gt_cell_m']), cfg,
            origin_xy_m=tuple(np.asarray(arrays['gt_origin_xy_m'], float)),
            exact_roughness=True, unseen_patches=False))
    else:
        return None
    return margin, GridGeometry(tuple(np.asarray(arrays['gt_origin_xy_m'], float)),
                                float(arrays['gt_cell_m']), margin.shape)


def map_false_safe(arrays: dict, nav_bias_xy_m, disc: tuple | None = None,
                   cfg: HazardConfig | None = None) -> tuple[int, ...] | None:
    """`false_safe_cells` of a landing's saved arrays (the last hazard map and
    `saved_true_margin`, with `cfg` for older runs) within `disc`; None when no map was
    received or no truth can be had."""
    if 'map_occupancy' not in arrays:
        return None
    truth = saved_true_margin(arrays, cfg)
    if truth is None:
        return None
    occ = np.asarray(arrays['map_occupancy'])
    map_grid = GridGeometry(tuple(np.asarray(arrays['map_origin_xy_m'], float)),
                            float(arrays['map_cell_m']), occ.shape)
    return false_safe_cells(occ, map_grid, *truth, nav_bias_xy_m, disc)


__all__ = ['DemCrop', 'node_hazard_config', 'crop_dem', 'view_hazard_layers',
           'false_safe_cells', 'ground_truth_hazard', 'map_false_safe', 'saved_true_margin',
           'SITE_KEYS', 'true_margin']

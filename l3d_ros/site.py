"""Safe landing site on the hazard layers, and the one per-frame pipeline (pure numpy/opencv).

`frame_hazard` is what both `l3d infer` and the ROS node run on a depth frame, so the node
publishes exactly the hazard map that `l3d infer` writes.
"""
from dataclasses import dataclass
import math
import time

import cv2
import numpy as np

from l3d_ros.backends.base import DepthResult
from l3d_ros.config import HazardConfig
from l3d_ros.dataset import HAZARD_SAFE
from l3d_ros.dem import DemFusion, points_sigma
from l3d_ros.geometry import backproject, nadir_pose, StereoCalib, transform_points
from l3d_ros.hazard import (auto_stride, hazard_from_dem, hazard_to_occupancy, HazardLayers,
                            judgeable_window, pixel_hazard, unknown_layers)


@dataclass(frozen=True)
class SafeSite:
    xy_m: np.ndarray            # (2,) site in `map` [m]
    height_m: float             # terrain height there (the disc plane's) [m]
    clearance_m: float          # distance to the nearest not-safe (hazard or unknown) cell [m]
    score: float                # min(clearance from cells not safe by site_margin_max,
    #                             footprint) - w * footprint * divert / divert_max


def select_safe_site(layers: HazardLayers, cfg: HazardConfig,
                     target_xy_m: np.ndarray) -> SafeSite | None:
    """Best safe landing site within `cfg.divert_max_m` of `target_xy_m` (map, [m]), or None.

    A cell qualifies when every cell whose square reaches within footprint_m / 2 of it is safe
    (a label holds for its cell's square, on a strided lattice the lattice's, and a cell
    centred just beyond the rim still covers ground under the footprint): its clearance, the
    distance to the nearest cell centre that is not safe, exceeds footprint_m / 2 by half a
    cell diagonal. Cells outside the grid count as unknown, hence never safe. Qualified cells are
    ranked by their clearance from the ground that is not safe by a wide margin: an exact
    Euclidean distance to the nearest cell that is hazard, unknown, or safe with a margin above
    `cfg.site_margin_max` (within that share of a limit: a rock read just under the roughness
    limit is where a sigma too small bites; `SafeSite.clearance_m` stays the distance to the
    nearest cell that is not safe). It is capped at footprint_m: beyond one footprint of
    margin, more clearance is not worth flying further. Score = min(that clearance, footprint)
    - clearance_weight * footprint * divert / divert_max_m; the highest wins.
    """
    target = np.asarray(target_xy_m, np.float64).reshape(2)
    safe = layers.hazard == HAZARD_SAFE
    if not safe.any():
        return None
    dist_cells = _clearance_cells(safe)
    # every point within footprint/2 of the site must lie in the square of a safe cell: all
    # such squares have centres within footprint/2 plus half a diagonal
    half_diagonal_m = layers.grid.cell_m / math.sqrt(2)
    need_cells = (cfg.footprint_m / 2 + half_diagonal_m) / layers.grid.cell_m * (1 - 1e-6)
    rows, cols = np.nonzero(dist_cells > need_cells)    # candidates, row-major as argmax scans
    if not len(rows):
        return None
    clearance = dist_cells[rows, cols].astype(np.float64) * layers.grid.cell_m
    # every safe cell has margin <= 1: at site_margin_max 1 the ranking clearance is the same
    wide_cells = (dist_cells if cfg.site_margin_max >= 1.0 else
                  _clearance_cells(safe & (layers.margin <= cfg.site_margin_max)))
    wide_clearance = wide_cells[rows, cols]
    x, y = layers.grid.cell_centre(rows, cols)
    divert = np.hypot(x - target[0], y - target[1])
    ok = (clearance > cfg.footprint_m / 2 + half_diagonal_m) & (divert <= cfg.divert_max_m)
    if not ok.any():
        return None
    scale = cfg.clearance_weight * cfg.footprint_m / max(cfg.divert_max_m, layers.grid.cell_m)
    rank_m = wide_clearance.astype(np.float64) * layers.grid.cell_m
    score = np.where(ok, np.minimum(rank_m, cfg.footprint_m) - scale * divert, -np.inf)
    k = int(np.argmax(score))
    i, j = rows[k], cols[k]
    return SafeSite(np.array([x[k], y[k]]), float(layers.height_m[i, j]),
                    float(clearance[k]), float(score[k]))


def _clearance_cells(clear: np.ndarray) -> np.ndarray:
    """(H, W) float32 exact Euclidean distance [cells] from each cell to the nearest cell that
    is not `clear`; beyond the grid's border nothing is clear."""
    padded = np.pad(clear.view(np.uint8), 1)
    return cv2.distanceTransform(padded, cv2.DIST_L2, cv2.DIST_MASK_PRECISE)[1:-1, 1:-1]


@dataclass(frozen=True)
class FrameHazard:
    """Everything the hazard pipeline derives from one depth frame."""

    points_map: np.ndarray      # (H, W, 3) float32 ground points in `map` [m], NaN unknown
    layers: HazardLayers        # on the block of DEM cells this frame touched
    occupancy: np.ndarray       # (h, w) int8, hazard_to_occupancy(layers)
    pixel_hazard: np.ndarray    # (H, W) uint8 per left pixel: 0 safe, 1 hazard, 255 unknown
    site: SafeSite | None
    R_world_cam: np.ndarray     # (3, 3) pose used (given, or nadir at the median depth)
    t_world_cam: np.ndarray     # (3,)


def frame_hazard(result: DepthResult, calib: StereoCalib,
                 R_world_cam: np.ndarray | None,  # noqa: N803
                 t_world_cam: np.ndarray | None, cfg: HazardConfig,
                 fusion: DemFusion | None = None, target_xy_m: np.ndarray | None = None,
                 stride: int | None = None, *, points_cam: np.ndarray | None = None,
                 exact_depth: bool = False,
                 timings_ms: dict[str, float] | None = None) -> FrameHazard:
    """Depth frame -> points in `map` -> fused DEM -> hazard layers, pixel hazard, safe site.

    R_world_cam, t_world_cam: left optical frame in `map`; None -> nadir at the median depth
    (INTERFACES.md section 5). fusion: the descent-long map to fuse into (None: a fresh one
    centred on this frame, as for independent pairs). Hazard is evaluated on the block of DEM
    cells this frame touched, grown by footprint/2 so the discs of its edge cells see older
    terrain, at every `stride`-th cell (see hazard_from_dem; None: auto_stride, a lattice of at
    most LATTICE_MAX_CELLS a side). target_xy_m: nominal landing point [m] (None: the camera's
    ground track (t_x, t_y)). points_cam: backproject(result.depth_m, calib) when the caller
    already has it. exact_depth: the depth is exact (the oracle backend of `l3d infer/eval`,
    which scores the hazard pipeline alone): no stereo sigma, so section 4 is applied to the
    DEM as is, without sigma margins. timings_ms: filled with the time of each stage [ms].
    """
    clock = [time.perf_counter()]

    def lap(name: str) -> None:
        clock.append(time.perf_counter())
        if timings_ms is not None:
            timings_ms[name] = 1e3 * (clock[-1] - clock[-2])

    depth = result.depth_m
    if R_world_cam is None:
        finite = np.isfinite(depth)
        altitude = float(np.median(depth[finite])) if finite.any() else 0.0
        R_world_cam, t_world_cam = nadir_pose(altitude)  # noqa: N806
    R = np.asarray(R_world_cam, np.float64)  # noqa: N806
    t = np.asarray(t_world_cam, np.float64).reshape(3)
    if points_cam is None:
        points_cam = backproject(depth, calib)
    points = transform_points(points_cam, R, t)
    if exact_depth:
        sigma = np.where(np.isfinite(depth), np.float32(1.0), np.float32(np.nan))
    else:
        sigma = points_sigma(depth, calib, cfg, R, result.confidence)
    lap('points')
    fusion = fusion if fusion is not None else DemFusion(cfg)
    fusion.add_points(points, sigma)
    target = t[:2] if target_xy_m is None else np.asarray(target_xy_m, np.float64)
    lap('fusion')
    if fusion.last_cells is None:                         # nothing landed in the map
        empty = np.full((1, 1), np.nan, np.float32)
        layers = hazard_from_dem(empty, cfg.cell_m, cfg, origin_xy_m=(0.0, 0.0))
    else:
        grow = int(math.ceil(cfg.footprint_m / 2 / cfg.cell_m))
        r0, r1, c0, c1 = fusion.last_cells
        n = fusion.n_cells
        cells = (max(r0 - grow, 0), min(r1 + grow, n), max(c0 - grow, 0), min(c1 + grow, n))
        window = judgeable_window(fusion.has_data(cells), cfg.cell_m, cfg.footprint_m)
        if window is None:                                # too sparse to judge any cell
            layers = unknown_layers(fusion.sub_grid(cells))
        else:
            wr0, wr1, wc0, wc1 = window
            cells = (cells[0] + wr0, cells[0] + wr1, cells[2] + wc0, cells[2] + wc1)
            dem_m, sigma_m = fusion.dem(cells)
            refine = stride is None
            if refine:
                stride = auto_stride(dem_m.shape, cfg.cell_m, cfg.footprint_m)
            layers = hazard_from_dem(dem_m, cfg.cell_m, cfg,
                                     sigma_m=None if exact_depth else sigma_m, stride=stride,
                                     origin_xy_m=fusion.sub_grid(cells).origin_xy_m,
                                     refine=refine)
    lap('hazard')
    occupancy = hazard_to_occupancy(layers)
    pix = pixel_hazard(points, layers)
    lap('lookup')
    site = select_safe_site(layers, cfg, target)
    lap('site')
    return FrameHazard(points, layers, occupancy, pix, site, R, t)

"""Terrain hazard of INTERFACES.md section 4 on a height grid (pure numpy).

Grid convention (shared by the DEM, the hazard layers and nav_msgs/OccupancyGrid): cell (i, j)
of a grid with lower-left corner `origin_xy_m` and spacing `cell_m` has its centre at
x = origin_x + (j + 0.5) cell_m, y = origin_y + (i + 0.5) cell_m in `map`; rows run along +y,
columns along +x, heights are z up.

Per cell, a least-squares plane z = a + b dx + c dy is fitted to the valid terrain samples in the
disc of diameter `footprint_m` centred on the cell (dx, dy: offsets from the centre [m]); slope is
the tilt of that plane, roughness the largest |residual| of those samples to THAT plane. The
evaluation works on windows of the grid (a strided view, copied in row chunks so memory stays
bounded); the moments are one matrix product per chunk and the residual maximum is exact over
every disc sample - no offset subsampling.
"""
from dataclasses import dataclass
import math

import numpy as np

from l3d_ros.config import HazardConfig
from l3d_ros.dataset import HAZARD_HAZARD, HAZARD_SAFE, HAZARD_UNKNOWN

COVERAGE_MIN = 0.8          # fraction of a disc's cells that must hold terrain to judge it
_CHUNK_ELEMENTS = 1 << 21   # window elements copied per chunk (bounds memory, ~8 MB float32)


@dataclass(frozen=True)
class GridGeometry:
    """Where a (rows, cols) grid lies in `map`: lower-left corner [m] and cell size [m]."""

    origin_xy_m: tuple[float, float]
    cell_m: float
    shape: tuple[int, int]

    def cell_index(self, x_m: np.ndarray, y_m: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Map coordinates -> (row, col) int64 indices; -1 in both where outside or NaN."""
        with np.errstate(invalid='ignore'):
            col = np.floor((np.asarray(x_m, np.float64) - self.origin_xy_m[0]) / self.cell_m)
            row = np.floor((np.asarray(y_m, np.float64) - self.origin_xy_m[1]) / self.cell_m)
            inside = (row >= 0) & (row < self.shape[0]) & (col >= 0) & (col < self.shape[1])
        row = np.where(inside, row, -1).astype(np.int64)
        col = np.where(inside, col, -1).astype(np.int64)
        return row, col

    def cell_centre(self, row: np.ndarray, col: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(row, col) -> (x, y) [m] of the cell centres in `map`."""
        return (self.origin_xy_m[0] + (np.asarray(col) + 0.5) * self.cell_m,
                self.origin_xy_m[1] + (np.asarray(row) + 0.5) * self.cell_m)


@dataclass(frozen=True)
class HazardLayers:
    """Hazard of every evaluated cell; all arrays (H, W) on `grid`."""

    slope_deg: np.ndarray       # float32 tilt of the disc's plane, NaN where unknown
    roughness_m: np.ndarray     # float32 max |residual| to that plane in the disc, NaN unknown
    hazard: np.ndarray          # uint8 0 safe, 1 hazard, 255 unknown
    coverage: np.ndarray        # float32 fraction of the disc's cells holding terrain
    margin: np.ndarray          # float32 max(slope/limit, roughness/limit) incl. sigma margins
    grid: GridGeometry


def disc_offsets(footprint_m: float, cell_m: float) -> tuple[int, np.ndarray]:
    """Radius in cells and the (2R+1, 2R+1) bool mask of cells whose centre is in the disc."""
    radius_cells = int(math.floor(footprint_m / 2 / cell_m + 1e-9))
    d = np.arange(-radius_cells, radius_cells + 1)
    dy, dx = np.meshgrid(d, d, indexing='ij')
    inside = (dx * dx + dy * dy) * cell_m ** 2 <= (footprint_m / 2) ** 2 + 1e-9
    return radius_cells, inside


def hazard_from_dem(dem_m: np.ndarray, cell_m: float, cfg: HazardConfig,
                    sigma_m: np.ndarray | None = None, stride: int = 1,
                    origin_xy_m: tuple[float, float] = (0.0, 0.0)) -> HazardLayers:
    """Slope, roughness and hazard (INTERFACES.md section 4) of a height grid.

    dem_m: (H, W) heights [m], NaN unknown. cell_m: its spacing [m]. sigma_m: optional (H, W)
    height standard deviation [m]; with it a cell is safe only if it stays safe with
    `cfg.sigma_margin` sigmas: max over the disc of |residual| + k sigma < roughness_max_m, and
    the plane's gradient + k times its standard error stays under tan(slope_max_deg).
    stride: evaluate every `stride`-th cell (exact values there); the layers' grid then has cell
    stride * cell_m, each coarse cell centred on its evaluated DEM cell. origin_xy_m: lower-left
    corner of the DEM in `map` [m]. A cell is unknown (255) when its centre has no terrain or
    fewer than COVERAGE_MIN of its disc's cells do (so cells within footprint/2 of the DEM edge
    are unknown).
    """
    dem = np.asarray(dem_m)
    if dem.ndim != 2:
        raise ValueError(f'dem_m.shape={dem.shape}: expected (H, W)')
    if not (cell_m > 0 and math.isfinite(cell_m)):
        raise ValueError(f'cell_m={cell_m!r}: expected a finite number > 0')
    if not (isinstance(stride, (int, np.integer)) and stride >= 1):
        raise ValueError(f'stride={stride!r}: expected an integer >= 1')
    if sigma_m is not None and np.shape(sigma_m) != dem.shape:
        raise ValueError(f'sigma_m.shape={np.shape(sigma_m)}: expected {dem.shape}')
    radius, inside = disc_offsets(cfg.footprint_m, cell_m)
    side = 2 * radius + 1
    d_m = np.arange(-radius, radius + 1) * cell_m
    dy, dx = np.meshgrid(d_m, d_m, indexing='ij')
    disc = inside.ravel().astype(np.float64)
    basis = np.stack([disc, disc * dx.ravel(), disc * dy.ravel()], axis=1)     # (K, 3)
    second = np.stack([disc, disc * dx.ravel(), disc * dy.ravel(), disc * dx.ravel() ** 2,
                       disc * (dx * dy).ravel(), disc * dy.ravel() ** 2], axis=1)  # (K, 6)
    n_disc = float(disc.sum())

    finite = np.isfinite(dem)
    ref_m = float(np.median(dem[finite])) if finite.any() else 0.0     # conditioning only
    pad = ((radius, radius), (radius, radius))
    z = np.pad(np.where(finite, dem - ref_m, np.nan).astype(np.float32), pad,
               constant_values=np.nan)
    s2 = None
    if sigma_m is not None:
        s2 = np.pad(np.asarray(sigma_m, np.float32), pad, constant_values=np.nan)
    windows = np.lib.stride_tricks.sliding_window_view(z, (side, side))[::stride, ::stride]
    out_h, out_w = windows.shape[:2]
    sig_windows = (None if s2 is None else
                   np.lib.stride_tricks.sliding_window_view(s2, (side, side))[::stride, ::stride])

    slope = np.full((out_h, out_w), np.nan, np.float32)
    rough = np.full((out_h, out_w), np.nan, np.float32)
    coverage = np.zeros((out_h, out_w), np.float32)
    margin = np.full((out_h, out_w), np.nan, np.float32)
    k = cfg.sigma_margin
    tan_max = math.tan(math.radians(cfg.slope_max_deg))
    rows_per_chunk = max(1, _CHUNK_ELEMENTS // (out_w * side * side))
    centre = radius * side + radius
    for r0 in range(0, out_h, rows_per_chunk):
        r1 = min(out_h, r0 + rows_per_chunk)
        zc = windows[r0:r1].reshape(-1, side * side)                       # (n, K) copy
        valid = np.isfinite(zc)
        z0 = np.where(valid, zc, 0.0)
        m = valid.astype(np.float64) @ second                              # (n, 6)
        mz = z0.astype(np.float64) @ basis                                 # (n, 3)
        a_mat = np.stack([m[:, [0, 1, 2]], m[:, [1, 3, 4]], m[:, [2, 4, 5]]], axis=1)
        cov = m[:, 0] / n_disc
        ok = valid[:, centre] & (cov >= COVERAGE_MIN)
        a_mat[~ok] = np.eye(3)
        inv = np.linalg.inv(a_mat)                                         # (n, 3, 3)
        coef = np.einsum('nij,nj->ni', inv, mz)                            # a, b, c
        plane = coef[:, :1] + coef[:, 1:2] * dx.ravel() + coef[:, 2:3] * dy.ravel()
        resid = np.abs(zc - plane.astype(np.float32))
        resid[~(valid & inside.ravel())] = -np.inf                         # not a disc sample
        grad = np.hypot(coef[:, 1], coef[:, 2])
        rough_c = resid.max(axis=1)
        slope_c = np.degrees(np.arctan(grad))
        ratio = np.maximum(grad / tan_max, rough_c / cfg.roughness_max_m)
        if sig_windows is not None:
            sc = sig_windows[r0:r1].reshape(-1, side * side)
            sc = np.where(valid & inside.ravel(), np.nan_to_num(sc, nan=0.0), 0.0)
            rough_k = np.max(resid + k * sc, axis=1)
            var_mean = (sc.astype(np.float64) ** 2).sum(axis=1) / np.maximum(m[:, 0], 1)
            grad_se = np.sqrt(var_mean * np.maximum(inv[:, 1, 1], inv[:, 2, 2]))
            ratio = np.maximum((grad + k * grad_se) / tan_max, rough_k / cfg.roughness_max_m)
        shape = (r1 - r0, out_w)
        coverage[r0:r1] = cov.reshape(shape)
        slope[r0:r1] = np.where(ok, slope_c, np.nan).reshape(shape)
        rough[r0:r1] = np.where(ok, rough_c, np.nan).reshape(shape)
        margin[r0:r1] = np.where(ok, ratio, np.nan).reshape(shape)
    hazard = np.full((out_h, out_w), HAZARD_UNKNOWN, np.uint8)
    known = np.isfinite(margin)
    hazard[known] = np.where(margin[known] <= 1.0, HAZARD_SAFE, HAZARD_HAZARD)
    c = stride * cell_m
    grid_origin = (origin_xy_m[0] + 0.5 * cell_m - 0.5 * c, origin_xy_m[1] + 0.5 * cell_m - 0.5 * c)
    return HazardLayers(slope, rough, hazard, coverage, margin,
                        GridGeometry(grid_origin, c, (out_h, out_w)))

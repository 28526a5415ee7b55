"""Terrain hazard of INTERFACES.md section 4 on a height grid (pure numpy).

Grid convention (shared by the DEM, the hazard layers and nav_msgs/OccupancyGrid): cell (i, j)
of a grid with lower-left corner `origin_xy_m` and spacing `cell_m` has its centre at
x = origin_x + (j + 0.5) cell_m, y = origin_y + (i + 0.5) cell_m in `map`; rows run along +y,
columns along +x, heights are z up.

Per cell, a least-squares plane z = a + b dx + c dy is fitted to the valid terrain samples in the
disc of diameter `footprint_m` centred on the cell (dx, dy: offsets from the centre [m]); slope is
the tilt of that plane, roughness the largest |residual| of those samples to THAT plane. The
evaluation gathers, per chunk of rows, every disc sample of every evaluated cell into a (K, n)
array (one strided slice per disc offset); the plane moments are then matrix products and the
residual maximum is exact over every disc sample - no offset subsampling.
"""
from dataclasses import dataclass
import math

import numpy as np

from l3d_ros.config import HazardConfig
from l3d_ros.dataset import HAZARD_HAZARD, HAZARD_SAFE, HAZARD_UNKNOWN

COVERAGE_MIN = 0.8          # fraction of a disc's cells that must hold terrain to judge it
_CHUNK_ELEMENTS = 1 << 23   # disc samples gathered per chunk (bounds memory: 32 MB float32)


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
    off_i, off_j = np.nonzero(inside)                                      # (K,) each
    dx = ((off_j - radius) * cell_m).astype(np.float32)
    dy = ((off_i - radius) * cell_m).astype(np.float32)
    ones = np.ones_like(dx)
    basis = np.stack([ones, dx, dy], axis=1)                               # (K, 3)
    second = np.stack([ones, dx, dy, dx * dx, dx * dy, dy * dy])           # (6, K)
    n_disc = float(len(dx))
    centre_k = int(np.flatnonzero((off_i == radius) & (off_j == radius))[0])

    finite = np.isfinite(dem)
    ref_m = float(np.median(dem[finite])) if finite.any() else 0.0     # conditioning only
    pad = ((radius, radius), (radius, radius))
    z = np.pad(np.where(finite, dem - ref_m, np.nan).astype(np.float32), pad,
               constant_values=np.nan)
    sig = None if sigma_m is None else np.pad(np.asarray(sigma_m, np.float32), pad,
                                              constant_values=np.nan)
    out_h, out_w = -(-dem.shape[0] // stride), -(-dem.shape[1] // stride)
    slope = np.full((out_h, out_w), np.nan, np.float32)
    rough = np.full((out_h, out_w), np.nan, np.float32)
    coverage = np.zeros((out_h, out_w), np.float32)
    margin = np.full((out_h, out_w), np.nan, np.float32)
    k_sigma = np.float32(cfg.sigma_margin)
    tan_max = math.tan(math.radians(cfg.slope_max_deg))
    rows_per_chunk = max(1, _CHUNK_ELEMENTS // (out_w * len(dx)))
    for r0 in range(0, out_h, rows_per_chunk):
        r1 = min(out_h, r0 + rows_per_chunk)
        shape = (r1 - r0, out_w)
        zk = _gather(z, off_i, off_j, r0 * stride, shape, stride)          # (K, n) samples
        valid = np.isfinite(zk)
        m = second @ valid.astype(np.float32)                              # (6, n)
        mz = basis.T @ np.where(valid, zk, np.float32(0))                  # (3, n)
        cov = m[0] / n_disc
        ok = valid[centre_k] & (cov >= COVERAGE_MIN)
        a_mat = np.stack([m[[0, 1, 2]], m[[1, 3, 4]], m[[2, 4, 5]]]).astype(np.float64)
        a_mat = np.moveaxis(a_mat, -1, 0)                                  # (n, 3, 3)
        a_mat[~ok] = np.eye(3)
        inv = np.linalg.inv(a_mat)
        coef = np.einsum('nij,jn->ni', inv, mz.astype(np.float64))        # (n, 3): a, b, c
        zk -= basis @ coef.T.astype(np.float32)                            # residuals, NaN kept
        rough_c = np.maximum(np.fmax.reduce(zk, axis=0), -np.fmin.reduce(zk, axis=0))
        grad = np.hypot(coef[:, 1], coef[:, 2])
        ratio = np.maximum(grad / tan_max, rough_c / cfg.roughness_max_m)
        if sig is not None:
            sk = _gather(sig, off_i, off_j, r0 * stride, shape, stride)
            sk[~valid] = np.nan
            np.abs(zk, out=zk)
            zk += k_sigma * sk
            rough_k = np.fmax.reduce(zk, axis=0)
            var_mean = np.nansum(sk.astype(np.float64) ** 2, axis=0) / np.maximum(m[0], 1)
            grad_se = np.sqrt(var_mean * np.maximum(inv[:, 1, 1], inv[:, 2, 2]))
            ratio = np.maximum((grad + k_sigma * grad_se) / tan_max,
                               rough_k / cfg.roughness_max_m)
        coverage[r0:r1] = cov.reshape(shape)
        slope[r0:r1] = np.where(ok, np.degrees(np.arctan(grad)), np.nan).reshape(shape)
        rough[r0:r1] = np.where(ok, rough_c, np.nan).reshape(shape)
        margin[r0:r1] = np.where(ok, ratio, np.nan).reshape(shape)
    hazard = np.full((out_h, out_w), HAZARD_UNKNOWN, np.uint8)
    known = np.isfinite(margin)
    hazard[known] = np.where(margin[known] <= 1.0, HAZARD_SAFE, HAZARD_HAZARD)
    c = stride * cell_m
    corner = 0.5 * (cell_m - c)
    grid_origin = (origin_xy_m[0] + corner, origin_xy_m[1] + corner)
    return HazardLayers(slope, rough, hazard, coverage, margin,
                        GridGeometry(grid_origin, c, (out_h, out_w)))


def _gather(padded: np.ndarray, off_i: np.ndarray, off_j: np.ndarray, row0: int,
            shape: tuple[int, int], stride: int) -> np.ndarray:
    """(K, rows * cols) samples padded[row0 + r*stride + off_i[k], c*stride + off_j[k]]."""
    rows, cols = shape
    out = np.empty((len(off_i), rows, cols), padded.dtype)
    for k, (di, dj) in enumerate(zip(off_i, off_j)):
        out[k] = padded[row0 + di:row0 + di + rows * stride:stride, dj:dj + cols * stride:stride]
    return out.reshape(len(off_i), rows * cols)

"""Terrain hazard of INTERFACES.md section 4 on a height grid (pure numpy).

Grid convention (shared by the DEM, the hazard layers and nav_msgs/OccupancyGrid): cell (i, j)
of a grid with lower-left corner `origin_xy_m` and spacing `cell_m` has its centre at
x = origin_x + (j + 0.5) cell_m, y = origin_y + (i + 0.5) cell_m in `map`; rows run along +y,
columns along +x, heights are z up.

Per cell, a least-squares plane z = a + b dx + c dy is fitted to the valid terrain samples in the
disc of diameter `footprint_m` centred on the cell (dx, dy: offsets from the centre [m]); slope is
the tilt of that plane, roughness the largest |residual| of those samples to THAT plane. The
plane moments are disc filters (cv2.filter2D, invalid cells weighted 0); the residual maximum
is not a linear filter: per chunk of rows, every disc sample of every evaluated cell is gathered
into a (K, n) array (one strided slice per disc offset), so it is exact over every disc sample -
no offset subsampling.
"""
from dataclasses import dataclass
import math

import cv2
import numpy as np

from l3d_ros.config import HazardConfig
from l3d_ros.dataset import HAZARD_HAZARD, HAZARD_SAFE, HAZARD_UNKNOWN

COVERAGE_MIN = 0.8          # fraction of a disc's cells that must hold terrain to judge it
_CHUNK_ELEMENTS = 1 << 22   # disc samples gathered per chunk (bounds memory: 16 MB float32)


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
    height_m: np.ndarray        # float32 height of the disc's plane at the cell centre [m]
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
    `cfg.sigma_margin` = k sigmas: roughness + k * (largest sigma in the disc) <= roughness_max_m
    and the plane's gradient + k * its standard error <= tan(slope_max_deg).
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
    basis = np.stack([np.ones(len(off_i)), (off_j - radius) * cell_m,
                      (off_i - radius) * cell_m], axis=1).astype(np.float32)  # (K, 3)
    n_disc = float(len(off_i))
    finite = np.isfinite(dem)
    ref_m = float(np.median(dem[finite])) if finite.any() else 0.0     # conditioning only
    z = np.where(finite, dem - ref_m, np.nan).astype(np.float32)
    m = _disc_moments(finite, np.where(finite, z, 0.0), radius, inside, cell_m, stride)
    out_h, out_w = m.shape[1:]
    n_out = out_h * out_w
    cov = m[0].ravel() / n_disc
    ok = finite[::stride, ::stride].ravel() & (cov >= COVERAGE_MIN)
    a_mat = np.stack([m[[0, 1, 2]], m[[1, 3, 4]], m[[2, 4, 5]]]).reshape(3, 3, n_out)
    a_mat = np.moveaxis(a_mat, -1, 0)                                      # (n, 3, 3)
    a_mat[~ok] = np.eye(3)
    inv = np.linalg.inv(a_mat)
    coef = np.einsum('nij,jn->ni', inv, m[6:].reshape(3, n_out))          # (n, 3): a, b, c
    coef[~ok] = 0.0
    grad = np.hypot(coef[:, 1], coef[:, 2])

    # exact max |residual| over every disc sample: (K, n) samples per chunk of rows
    zpad = np.pad(z, radius, constant_values=np.nan)
    coef32 = coef.astype(np.float32)
    rough = np.empty(n_out, np.float32)
    rows_per_chunk = max(1, _CHUNK_ELEMENTS // (out_w * len(off_i)))
    for r0 in range(0, out_h, rows_per_chunk):
        r1 = min(out_h, r0 + rows_per_chunk)
        zk = _gather(zpad, off_i, off_j, r0 * stride, (r1 - r0, out_w), stride)
        zk -= basis @ coef32[r0 * out_w:r1 * out_w].T                      # residuals, NaN kept
        rough[r0 * out_w:r1 * out_w] = np.maximum(np.fmax.reduce(zk, axis=0),
                                                  -np.fmin.reduce(zk, axis=0))
    tan_max = math.tan(math.radians(cfg.slope_max_deg))
    k = cfg.sigma_margin
    if sigma_m is None:
        ratio = np.maximum(grad / tan_max, rough / cfg.roughness_max_m)
    else:
        # roughness margin: k times the largest sigma in the disc (>= the per-sample margin);
        # slope margin: k times the standard error of the fitted gradient, for the disc's
        # mean height variance
        sig = np.where(finite, np.nan_to_num(np.asarray(sigma_m, np.float32), nan=0.0), 0.0)
        kernel = inside.astype(np.uint8)
        sig_max = cv2.dilate(sig.astype(np.float32), kernel, borderType=cv2.BORDER_CONSTANT,
                             borderValue=0)[::stride, ::stride].ravel()
        var_sum = cv2.filter2D(sig.astype(np.float64) ** 2, -1, inside.astype(np.float64),
                               borderType=cv2.BORDER_CONSTANT)[::stride, ::stride].ravel()
        var_mean = var_sum / np.maximum(m[0].ravel(), 1.0)
        grad_se = np.sqrt(np.maximum(var_mean * np.maximum(inv[:, 1, 1], inv[:, 2, 2]), 0.0))
        ratio = np.maximum((grad + k * grad_se) / tan_max,
                           (rough + k * sig_max) / cfg.roughness_max_m)
    shape = (out_h, out_w)
    coverage = cov.reshape(shape).astype(np.float32)
    slope = np.where(ok, np.degrees(np.arctan(grad)), np.nan).reshape(shape).astype(np.float32)
    rough = np.where(ok, rough, np.nan).reshape(shape).astype(np.float32)
    margin = np.where(ok, ratio, np.nan).reshape(shape).astype(np.float32)
    height = np.where(ok, coef[:, 0] + ref_m, np.nan).reshape(shape).astype(np.float32)
    hazard = np.full((out_h, out_w), HAZARD_UNKNOWN, np.uint8)
    known = np.isfinite(margin)
    hazard[known] = np.where(margin[known] <= 1.0, HAZARD_SAFE, HAZARD_HAZARD)
    c = stride * cell_m
    corner = 0.5 * (cell_m - c)
    grid_origin = (origin_xy_m[0] + corner, origin_xy_m[1] + corner)
    return HazardLayers(slope, rough, hazard, coverage, margin, height,
                        GridGeometry(grid_origin, c, (out_h, out_w)))


def hazard_to_occupancy(layers: HazardLayers) -> np.ndarray:
    """nav_msgs/OccupancyGrid values, (H, W) int8, rows along +y as in the layers' grid.

    -1 unknown, 100 hazard; a safe cell gets floor(50 * margin) in 0..49, where margin is the
    larger of slope / limit and roughness / limit (sigma margins included): 0 is level and
    smooth, values near 49 are safe but close to a limit. Thresholds >= 50 see only hazards.
    """
    occ = np.full(layers.hazard.shape, -1, np.int8)
    occ[layers.hazard == HAZARD_HAZARD] = 100
    safe = layers.hazard == HAZARD_SAFE
    occ[safe] = np.clip(np.floor(50 * layers.margin[safe]), 0, 49).astype(np.int8)
    return occ


def pixel_hazard(points_map: np.ndarray, layers: HazardLayers) -> np.ndarray:
    """Hazard of each pixel's ground point: (H, W, 3) points in `map` [m] -> (H, W) uint8.

    The value of the layers' cell holding the point's (x, y); 255 where the point is NaN or
    falls outside the grid (and wherever that cell is unknown).
    """
    pts = np.asarray(points_map)
    if pts.ndim != 3 or pts.shape[2] != 3:
        raise ValueError(f'points_map.shape={pts.shape}: expected (H, W, 3)')
    row, col = layers.grid.cell_index(pts[..., 0], pts[..., 1])
    out = np.full(pts.shape[:2], HAZARD_UNKNOWN, np.uint8)
    inside = row >= 0
    out[inside] = layers.hazard[row[inside], col[inside]]
    return out


def _disc_moments(valid: np.ndarray, z0: np.ndarray, radius: int, inside: np.ndarray,
                  cell_m: float, stride: int) -> np.ndarray:
    """Disc sums of w * {1, dx, dy, dx^2, dx dy, dy^2} and w z * {1, dx, dy}: (9, h, w) float64.

    w is 1 on valid cells, 0 elsewhere and outside the grid; z0 is z with invalid set to 0.
    cv2.filter2D correlates (dst(p) = sum_d k(d) src(p + d)), which is the sum over the disc.
    """
    d = np.arange(-radius, radius + 1) * cell_m
    dy, dx = np.meshgrid(d, d, indexing='ij')
    disc = inside.astype(np.float64)
    w, wz = valid.astype(np.float64), z0.astype(np.float64)
    out = []
    for src, kernels in ((w, (disc, disc * dx, disc * dy, disc * dx * dx, disc * dx * dy,
                              disc * dy * dy)), (wz, (disc, disc * dx, disc * dy))):
        for kern in kernels:
            out.append(cv2.filter2D(src, cv2.CV_64F, kern, anchor=(radius, radius),
                                    borderType=cv2.BORDER_CONSTANT)[::stride, ::stride])
    return np.stack(out)


def _gather(padded: np.ndarray, off_i: np.ndarray, off_j: np.ndarray, row0: int,
            shape: tuple[int, int], stride: int) -> np.ndarray:
    """(K, rows * cols) float32 samples padded[row0 + r*stride + off_i[k], c*stride + off_j[k]]."""
    rows, cols = shape
    out = np.empty((len(off_i), rows, cols), padded.dtype)
    for k, (di, dj) in enumerate(zip(off_i, off_j)):
        out[k] = padded[row0 + di:row0 + di + rows * stride:stride, dj:dj + cols * stride:stride]
    return out.reshape(len(off_i), rows * cols)

"""Descent-long digital elevation map in `map`: inverse-variance fusion of stereo points.

The map is a fixed square of side `map_size_m` and cell `cell_m` (bounded memory); its grid
follows l3d_ros.hazard.GridGeometry (rows along +y, columns along +x, z up). Each cell keeps
sum(1/sigma^2) and sum(z/sigma^2) over every point that fell in it, so its height is the
inverse-variance weighted mean and its sigma 1/sqrt(sum(1/sigma^2)): several points of one
frame in a cell count as several measurements, and later frames tighten the estimate, but at
most as `hazard.looks_max` frames as good as the cell's best one would: each cell also keeps
its largest single-frame weight, and sigma = 1/sqrt(min(sum, looks_max * largest)). Frames
from nearly the same viewpoint (a hovering lander, a camera streaming at 10 Hz) repeat the
same errors (rock tops smoothed, texture, shadows); counted as independent, a hundred of them
would certify ground no single frame could judge.
"""
import math

import numpy as np

from l3d_ros.config import HazardConfig
from l3d_ros.geometry import depth_sigma_m, StereoCalib
from l3d_ros.hazard import GridGeometry

CONFIDENCE_FLOOR = 0.05   # confidence below this is treated as this (sigma at most 20x)


def points_sigma(depth_m: np.ndarray, calib: StereoCalib, cfg: HazardConfig,
                 R_world_cam: np.ndarray,  # noqa: N803
                 confidence: np.ndarray | None = None) -> np.ndarray:
    """Vertical (map z) height sigma [m] of each back-projected pixel, (H, W) float32.

    The stereo range error sigma_Z = Z^2 sigma_d / (f B) moves a point along its viewing ray;
    its vertical part is sigma_Z times the map-z component of the ray scaled to unit optical z.
    Confidence c in (0, 1] divides the sigma (c = 1: the stereo model alone); NaN depth -> NaN.
    """
    depth = np.asarray(depth_m, np.float32)
    h, w = depth.shape
    u = (np.arange(w, dtype=np.float32) - np.float32(calib.cx)) / np.float32(calib.fx)
    v = (np.arange(h, dtype=np.float32) - np.float32(calib.cy)) / np.float32(calib.fy)
    r = np.asarray(R_world_cam, np.float32)[2]                  # map-z row of R_world_cam
    ray_z = np.abs(r[0] * u[None, :] + r[1] * v[:, None] + r[2])  # (H, W)
    sigma = depth_sigma_m(depth, calib.fx, calib.baseline_m, cfg.disparity_sigma_px) * ray_z
    if confidence is not None:
        conf = np.nan_to_num(np.asarray(confidence, np.float32), nan=0.0)
        sigma = sigma / np.clip(conf, CONFIDENCE_FLOOR, 1.0)
    return sigma.astype(np.float32)


class DemFusion:
    """Fixed-size height map in `map` fused from (points, sigma) batches."""

    def __init__(self, cfg: HazardConfig, origin_xy_m: tuple[float, float] | None = None):
        """origin_xy_m: centre of the map [m]; None = the first batch's median point."""
        self.cfg = cfg
        self.n_cells = int(round(cfg.map_size_m / cfg.cell_m))
        self._sum_w = np.zeros((self.n_cells, self.n_cells), np.float64)
        self._sum_wz = np.zeros((self.n_cells, self.n_cells), np.float64)
        self._max_w = np.zeros((self.n_cells, self.n_cells), np.float64)   # best single frame
        self._centre = None if origin_xy_m is None else tuple(map(float, origin_xy_m))
        self.grid: GridGeometry | None = None
        self.dropped = 0            # finite points that fell outside the map, all batches
        self.last_cells: tuple[int, int, int, int] | None = None   # row0, row1, col0, col1
        if self._centre is not None:
            self._set_grid(self._centre)

    def _set_grid(self, centre_xy_m: tuple[float, float]) -> None:
        c = self.cfg.cell_m
        half = self.n_cells * c / 2
        # snap the corner to whole cells so maps of the same terrain line up
        corner = tuple(math.floor((v - half) / c + 0.5) * c for v in centre_xy_m)
        self.grid = GridGeometry(corner, c, (self.n_cells, self.n_cells))

    def reset(self) -> None:
        """Forget all heights (the origin stays where it was)."""
        self._sum_w[:] = 0.0
        self._sum_wz[:] = 0.0
        self._max_w[:] = 0.0
        self.dropped = 0
        self.last_cells = None

    def add_points(self, points_map: np.ndarray, sigma_m: np.ndarray) -> None:
        """Fuse points (N, 3) or (H, W, 3) in `map` [m] with height sigmas (N,) or (H, W) [m].

        Points with a non-finite coordinate or a sigma that is not finite and > 0 are ignored;
        finite points outside the map are dropped and counted in `dropped`.
        """
        if np.shape(points_map)[:-1] != np.shape(sigma_m) or np.shape(points_map)[-1] != 3:
            raise ValueError(f'points_map.shape={np.shape(points_map)}, sigma_m.shape='
                             f'{np.shape(sigma_m)}: expected (..., 3) and (...)')
        pts = np.asarray(points_map, np.float32).reshape(-1, 3)
        sig = np.asarray(sigma_m, np.float32).reshape(-1)
        x, y, z = pts[:, 0], pts[:, 1], pts[:, 2]
        self.last_cells = None
        with np.errstate(invalid='ignore'):
            good = np.isfinite(x + y + z + sig) & (sig > 0)
        n_good = int(np.count_nonzero(good))
        if n_good == 0:
            return
        if self.grid is None:            # centre: median of the valid points (of every 16th)
            step = 16 if np.count_nonzero(good[::16]) else 1
            g = good[::step]
            self._centre = (float(np.median(x[::step][g])), float(np.median(y[::step][g])))
            self._set_grid(self._centre)
        (ox, oy), c = self.grid.origin_xy_m, self.grid.cell_m
        inv_c = np.float32(1.0 / c)
        # masks by arithmetic, not compression: invalid pixels are scattered over the image
        col = np.floor((x - np.float32(ox)) * inv_c)
        row = np.floor((y - np.float32(oy)) * inv_c)
        with np.errstate(invalid='ignore'):
            inside = good & (row >= 0) & (row < self.n_cells) & (col >= 0) & (col < self.n_cells)
        n_in = int(np.count_nonzero(inside))
        self.dropped += n_good - n_in
        if n_in == 0:
            return
        keep = inside.astype(np.float32)
        with np.errstate(divide='ignore', invalid='ignore'):
            nan_out = np.float32(0) / keep                     # 0 inside, NaN elsewhere
        row += nan_out
        col += nan_out
        r0, r1 = int(np.fmin.reduce(row)), int(np.fmax.reduce(row)) + 1
        c0, c1 = int(np.fmin.reduce(col)), int(np.fmax.reduce(col)) + 1
        size = (r1 - r0) * (c1 - c0)
        flat = np.fmax((row - r0) * (c1 - c0) + (col - c0), 0).astype(np.int64)  # NaN -> 0
        # weight 1 / sigma^2 inside, 0 elsewhere (sigma and z made finite first)
        sig_f = np.fmin(np.fmax(sig, np.float32(1e-12)), np.float32(1e12)).astype(np.float64)
        w = keep / np.square(sig_f)
        wz = w * np.fmin(np.fmax(z, np.float32(-1e12)), np.float32(1e12))
        shape = (r1 - r0, c1 - c0)
        batch_w = np.bincount(flat, w, size).reshape(shape)
        self._sum_w[r0:r1, c0:c1] += batch_w
        np.maximum(self._max_w[r0:r1, c0:c1], batch_w, out=self._max_w[r0:r1, c0:c1])
        self._sum_wz[r0:r1, c0:c1] += np.bincount(flat, wz, size).reshape(shape)
        self.last_cells = (r0, r1, c0, c1)

    def dem(self, cells: tuple[int, int, int, int] | None = None
            ) -> tuple[np.ndarray, np.ndarray]:
        """(height_m, sigma_m) float32 of the whole map or of cells (row0, row1, col0, col1).

        NaN where no point fell. Row/col ranges are clipped to the map.
        """
        r0, r1, c0, c1 = self._clip(cells or (0, self.n_cells, 0, self.n_cells))
        sw, swz = self._sum_w[r0:r1, c0:c1], self._sum_wz[r0:r1, c0:c1]
        looks = np.minimum(sw, self.cfg.looks_max * self._max_w[r0:r1, c0:c1])
        with np.errstate(divide='ignore', invalid='ignore'):   # 0 / 0 -> NaN where no point
            height = (swz / sw).astype(np.float32)
            sigma = (np.sqrt(looks) / looks).astype(np.float32)   # 1 / sqrt(capped sum)
        return height, sigma

    def has_data(self, cells: tuple[int, int, int, int]) -> np.ndarray:
        """(h, w) bool: cells (row0, row1, col0, col1) where some point fell (clipped)."""
        r0, r1, c0, c1 = self._clip(cells)
        return self._sum_w[r0:r1, c0:c1] > 0

    def _clip(self, cells: tuple[int, int, int, int]) -> tuple[int, int, int, int]:
        r0, r1, c0, c1 = cells
        return max(r0, 0), min(r1, self.n_cells), max(c0, 0), min(c1, self.n_cells)

    def sub_grid(self, cells: tuple[int, int, int, int]) -> GridGeometry:
        """GridGeometry of the block of cells (row0, row1, col0, col1), clipped to the map."""
        r0, r1, c0, c1 = self._clip(cells)
        ox, oy = self.grid.origin_xy_m
        c = self.grid.cell_m
        return GridGeometry((ox + c0 * c, oy + r0 * c), c, (r1 - r0, c1 - c0))

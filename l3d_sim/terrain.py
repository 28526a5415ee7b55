"""Synthetic lunar terrain on a regular height grid, deterministic from a seed.

Grid convention (the same as `l3d_ros.hazard.GridGeometry`): `height_m[i, j]` is the terrain
height (z up, metres, `map` frame) at the centre of cell (i, j), which lies at
x = origin_x + (j + 0.5) cell_m, y = origin_y + (i + 0.5) cell_m. Rows run along +y, columns
along +x; `origin_xy_m` is the lower-left corner of cell (0, 0). Between cell centres the surface
is the bilinear interpolant (`height_at`), which is also what the renderer ray-casts against.

Ingredients, each drawn from `np.random.default_rng(seed)` only:
- fBm roughness by spectral synthesis (amplitude ~ k^-(H+1)), scaled so the RMS height
  difference at a 1 m lag is `roughness_1m_m`;
- craters with a cumulative power-law size-frequency N(>=D) ~ D^-b: paraboloid bowl, raised rim,
  ejecta blanket decaying as r^-3; fresh (depth/D ~ 0.2, rim 0.04 D, bright halo, boulder
  ejecta) or degraded (depth/D 0.03..0.12, low rim);
- boulders with N(>=D) ~ D^-b on [0.1, 3] m: ellipsoidal caps, 0.3..0.55 D tall, random
  orientation and aspect, added to the ground they rest on;
- a regional slope of random azimuth.
"""
from dataclasses import dataclass
import math

import numpy as np
import scipy.fft

from l3d_ros.hazard import GridGeometry
from l3d_sim.config import TerrainConfig


@dataclass(frozen=True)
class Terrain:
    """A height grid and its albedo; see the module docstring for the index convention."""

    height_m: np.ndarray                # (N, M) float32 heights [m], z up
    albedo: np.ndarray                  # (N, M) float32 relative albedo, ~1 on average
    cell_m: float                       # grid spacing [m]
    origin_xy_m: tuple[float, float]    # lower-left corner of cell (0, 0) in `map` [m]

    @property
    def grid(self) -> GridGeometry:
        return GridGeometry(self.origin_xy_m, self.cell_m, self.height_m.shape)

    def fractional_index(self, x_m, y_m) -> tuple[np.ndarray, np.ndarray]:
        """Map (x, y) [m] -> fractional (row, col) of the cell-centre lattice."""
        col = (np.asarray(x_m) - self.origin_xy_m[0]) / self.cell_m - 0.5
        row = (np.asarray(y_m) - self.origin_xy_m[1]) / self.cell_m - 0.5
        return row, col

    def height_at(self, x_m, y_m) -> np.ndarray:
        """Bilinear height [m] at map points (any matching shapes); NaN outside the centres."""
        row, col = self.fractional_index(x_m, y_m)
        return bilinear(self.height_m, row, col)


def bilinear(grid: np.ndarray, row: np.ndarray, col: np.ndarray) -> np.ndarray:
    """Bilinear sample of a (N, M) grid at fractional (row, col); NaN outside [0, N-1]x[0, M-1]."""
    n, m = grid.shape
    row, col = np.asarray(row), np.asarray(col)
    with np.errstate(invalid='ignore'):
        inside = (row >= 0) & (row <= n - 1) & (col >= 0) & (col <= m - 1)
    r = np.clip(np.nan_to_num(row), 0, n - 1.000001)
    c = np.clip(np.nan_to_num(col), 0, m - 1.000001)
    r0, c0 = r.astype(np.int64), c.astype(np.int64)
    fr, fc = (r - r0).astype(grid.dtype), (c - c0).astype(grid.dtype)
    flat = grid.ravel()
    i00 = r0 * m + c0
    top = flat[i00] * (1 - fc) + flat[i00 + 1] * fc
    bottom = flat[i00 + m] * (1 - fc) + flat[i00 + m + 1] * fc
    return np.where(inside, top * (1 - fr) + bottom * fr, np.nan)


def fbm(shape: tuple[int, int], cell_m: float, hurst: float, rms_1m_m: float,
        rng: np.random.Generator) -> np.ndarray:
    """Periodic fractional Brownian surface (N, M) float32 [m] with the given 1 m-lag roughness."""
    n, m = shape
    ky = scipy.fft.fftfreq(n, cell_m)[:, None]
    kx = scipy.fft.rfftfreq(m, cell_m)[None, :]
    k = np.hypot(kx, ky).astype(np.float32)
    k[0, 0] = np.inf                                               # no mean
    spectrum = (rng.standard_normal(k.shape, np.float32)
                + 1j * rng.standard_normal(k.shape, np.float32)) * k ** -(hurst + 1.0)
    z = scipy.fft.irfft2(spectrum, s=shape, workers=2).astype(np.float32)
    lag = max(1, round(1.0 / cell_m))
    rms = math.sqrt(0.5 * (np.mean((z[:, lag:] - z[:, :-lag]) ** 2)
                           + np.mean((z[lag:] - z[:-lag]) ** 2)))
    return z * np.float32(rms_1m_m / rms) if rms > 0 else z


def power_law_sizes(count: int, d_min: float, d_max: float, exponent: float,
                    rng: np.random.Generator) -> np.ndarray:
    """`count` diameters with cumulative N(>=D) ~ D^-exponent truncated to [d_min, d_max]."""
    u = rng.random(count)
    tail = (d_min / d_max) ** exponent
    return d_min * (1.0 - u * (1.0 - tail)) ** (-1.0 / exponent)


def _window(grid_shape, cell_m, cx, cy, radius_m):
    """Index slices and local (dx, dy) [m] of the cells within radius_m of (cx, cy) [cells]."""
    rc = radius_m / cell_m
    i0, i1 = max(0, math.floor(cy - rc)), min(grid_shape[0], math.ceil(cy + rc) + 1)
    j0, j1 = max(0, math.floor(cx - rc)), min(grid_shape[1], math.ceil(cx + rc) + 1)
    if i0 >= i1 or j0 >= j1:
        return None
    dy = (np.arange(i0, i1, dtype=np.float32)[:, None] - cy) * cell_m
    dx = (np.arange(j0, j1, dtype=np.float32)[None, :] - cx) * cell_m
    return (slice(i0, i1), slice(j0, j1)), dx, dy


def crater_profile(r: np.ndarray, depth_m: float, rim_m: float, reach: float) -> np.ndarray:
    """Height [m] at normalised radius r = dist / R: bowl, rim at r = 1, ejecta to r = reach."""
    floor = rim_m - depth_m
    inside = floor + (rim_m - floor) * r * r
    tail = 1.0 / reach ** 3
    outside = rim_m * (np.maximum(r, 1.0) ** -3 - tail) / (1.0 - tail)
    return np.where(r < 1.0, inside, np.where(r < reach, outside, 0.0)).astype(np.float32)


def _stamp_craters(height, albedo, cfg, rng, area_m2):
    """Add craters in place; returns [(cx, cy) cells, diameter m] of the fresh ones."""
    count = rng.poisson(cfg.crater_density_per_ha * area_m2 / 1e4)
    diam = power_law_sizes(count, cfg.crater_min_diameter_m, cfg.crater_max_diameter_m,
                           cfg.crater_exponent, rng)
    n, m = height.shape
    cy, cx = rng.uniform(-0.5, n - 0.5, count), rng.uniform(-0.5, m - 0.5, count)
    fresh = rng.random(count) < cfg.crater_fresh_fraction
    degradation = rng.random(count)
    fresh_list = []
    for k in np.argsort(-diam):                                    # old (large) first
        d = float(diam[k])
        if fresh[k]:
            depth, rim, reach = d * rng.uniform(0.17, 0.21), d * rng.uniform(0.035, 0.045), 2.5
        else:
            u = degradation[k]
            depth, rim, reach = d * (0.12 - 0.09 * u), d * (0.002 + 0.02 * (1 - u)), 2.0
        win = _window(height.shape, cfg.cell_m, cx[k], cy[k], reach * d / 2)
        if win is None:
            continue
        sl, dx, dy = win
        r = np.hypot(dx, dy) / np.float32(d / 2)
        height[sl] += crater_profile(r, depth, rim, reach)
        if fresh[k]:
            halo = np.exp(-((r - 1.0) / 0.6) ** 2).astype(np.float32)   # bright fresh ejecta
            albedo[sl] += np.float32(0.25) * halo * (r < reach)
            fresh_list.append((cx[k], cy[k], d))
    return fresh_list


def _boulder_positions(cfg, rng, shape, fresh, area_m2):
    """Centres (cy, cx) [cells] and diameters [m] of background and crater-ejecta boulders."""
    count = rng.poisson(cfg.boulder_density_per_m2 * area_m2)
    diam = [power_law_sizes(count, cfg.boulder_min_diameter_m, cfg.boulder_max_diameter_m,
                            cfg.boulder_exponent, rng)]
    cy = [rng.uniform(-0.5, shape[0] - 0.5, count)]
    cx = [rng.uniform(-0.5, shape[1] - 0.5, count)]
    for fx, fy, d in fresh:
        if d < 5.0:
            continue
        radius_m = d / 2
        k = rng.poisson(cfg.ejecta_boulders_per_100m2 * 3 * math.pi * radius_m ** 2 / 100)
        d_max = min(cfg.boulder_max_diameter_m, 0.15 * d)
        d_min = min(0.3, d_max)
        diam.append(power_law_sizes(k, d_min, d_max, cfg.boulder_exponent, rng))
        rad = radius_m * np.sqrt(rng.uniform(1.0, 4.0, k)) / cfg.cell_m   # annulus R..2R
        ang = rng.uniform(0, 2 * math.pi, k)
        cy.append(fy + rad * np.sin(ang))
        cx.append(fx + rad * np.cos(ang))
    return np.concatenate(cy), np.concatenate(cx), np.concatenate(diam)


def _stamp_boulders(height, cfg, rng, cy, cx, diam):
    """Add ellipsoidal caps in place, vectorised over boulders of the same window size."""
    n, m = height.shape
    count = len(diam)
    a = diam / 2                                                   # semi-axes [m]
    b = a * rng.uniform(0.6, 1.0, count)
    tall = diam * rng.uniform(0.3, 0.55, count)
    theta = rng.uniform(0, math.pi, count)
    half = np.ceil(a / cfg.cell_m).astype(np.int64) + 1            # window half-size [cells]
    ci, cj = np.round(cy).astype(np.int64), np.round(cx).astype(np.int64)
    flat = height.ravel()
    for h in np.unique(half):
        sel = np.flatnonzero(half == h)
        off = np.arange(-h, h + 1)
        ii = ci[sel, None, None] + off[None, :, None]              # (n, w, 1)
        jj = cj[sel, None, None] + off[None, None, :]              # (n, 1, w)
        dy = (ii - cy[sel, None, None]) * cfg.cell_m
        dx = (jj - cx[sel, None, None]) * cfg.cell_m
        c, s = np.cos(theta[sel])[:, None, None], np.sin(theta[sel])[:, None, None]
        u, v = c * dx + s * dy, -s * dx + c * dy
        q = (u / a[sel, None, None]) ** 2 + (v / b[sel, None, None]) ** 2
        bump = tall[sel, None, None] * np.sqrt(np.maximum(0.0, 1.0 - q))
        ok = (ii >= 0) & (ii < n) & (jj >= 0) & (jj < m) & (bump > 0)
        idx = np.broadcast_to(ii * m + jj, bump.shape)[ok]
        np.add.at(flat, idx, bump[ok].astype(np.float32))


def make_terrain(cfg: TerrainConfig, seed: int,
                 centre_xy_m: tuple[float, float] = (0.0, 0.0)) -> Terrain:
    """A square terrain of side `cfg.size_m` centred on `centre_xy_m` (to the nearest whole
    cell: corners lie on multiples of cfg.cell_m), a pure function of seed.

    Heights have zero mean before the regional slope, which tilts about the centre.
    """
    rng = np.random.default_rng(seed)
    n = max(8, round(cfg.size_m / cfg.cell_m))
    area_m2 = (n * cfg.cell_m) ** 2
    height = fbm((n, n), cfg.cell_m, cfg.hurst, cfg.roughness_1m_m, rng)
    height -= height.mean()
    albedo = 1.0 + fbm((n, n), cfg.cell_m, 0.5, 1.0, rng)
    contrast = np.float32(cfg.albedo_contrast / max(float(albedo.std()), 1e-9))
    albedo = 1.0 + (albedo - albedo.mean()) * contrast
    fresh = _stamp_craters(height, albedo, cfg, rng, area_m2)
    cy, cx, diam = _boulder_positions(cfg, rng, (n, n), fresh, area_m2)
    _stamp_boulders(height, cfg, rng, cy, cx, diam)
    slope = math.tan(math.radians(rng.uniform(0.0, cfg.regional_slope_max_deg)))
    azimuth = rng.uniform(0.0, 2 * math.pi)
    ramp = (np.arange(n, dtype=np.float32) - (n - 1) / 2) * np.float32(cfg.cell_m * slope)
    height += ramp[None, :] * np.float32(math.cos(azimuth))
    height += ramp[:, None] * np.float32(math.sin(azimuth))
    # cell corners on whole multiples of cell_m in `map` (the centre moves by < half a cell):
    # the node's DEM cells (whole multiples of hazard.cell_m) then hold whole terrain blocks
    half = n * cfg.cell_m / 2
    origin = tuple(float(round((v - half) / cfg.cell_m) * cfg.cell_m) for v in centre_xy_m)
    return Terrain(height.astype(np.float32), np.clip(albedo, 0.2, 3.0).astype(np.float32),
                   float(cfg.cell_m), origin)


__all__ = ['Terrain', 'make_terrain', 'bilinear', 'fbm', 'power_law_sizes', 'crater_profile']

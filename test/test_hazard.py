"""Hazard core: slope, roughness, unknown coverage (INTERFACES.md section 4)."""
import math

from hypothesis import given, settings
from hypothesis import strategies as st
import numpy as np
import pytest

from l3d_ros.config import HazardConfig
from l3d_ros.hazard import COVERAGE_MIN, disc_offsets, hazard_from_dem

CFG = HazardConfig()


def _reference(dem, cell_m, cfg, i, j):
    """Per-cell least squares with np.linalg.lstsq: (slope_deg, roughness_m) or None."""
    radius, inside = disc_offsets(cfg.footprint_m, cell_m)
    rows, cols, zs = [], [], []
    for di, dj in zip(*np.nonzero(inside)):
        r, c = i + di - radius, j + dj - radius
        if 0 <= r < dem.shape[0] and 0 <= c < dem.shape[1] and np.isfinite(dem[r, c]):
            rows.append((di - radius) * cell_m)
            cols.append((dj - radius) * cell_m)
            zs.append(dem[r, c])
    if not np.isfinite(dem[i, j]) or len(zs) < COVERAGE_MIN * inside.sum():
        return None
    a = np.stack([np.ones(len(zs)), cols, rows], axis=1)
    coef = np.linalg.lstsq(a, np.asarray(zs, np.float64), rcond=None)[0]
    resid = np.asarray(zs) - a @ coef
    return math.degrees(math.atan(math.hypot(coef[1], coef[2]))), np.abs(resid).max()


def test_matches_per_cell_least_squares_on_rough_terrain_with_holes():
    rng = np.random.default_rng(3)
    cfg = HazardConfig(footprint_m=2.0, cell_m=0.25)
    dem = (rng.normal(0, 0.2, (24, 28)) + 1000.0).astype(np.float32)
    dem[5:8, 9:13] = np.nan
    layers = hazard_from_dem(dem, 0.25, cfg)
    n_known = 0
    for i in range(dem.shape[0]):
        for j in range(dem.shape[1]):
            ref = _reference(dem.astype(np.float64), 0.25, cfg, i, j)
            if ref is None:
                assert layers.hazard[i, j] == 255
                continue
            n_known += 1
            assert layers.slope_deg[i, j] == pytest.approx(ref[0], abs=1e-3)
            assert layers.roughness_m[i, j] == pytest.approx(ref[1], abs=2e-4)
            assert layers.hazard[i, j] == int(ref[0] > cfg.slope_max_deg
                                              or ref[1] > cfg.roughness_max_m)
    assert n_known > 100


@settings(max_examples=25, deadline=None)
@given(tilt_deg=st.floats(0.0, 40.0), azimuth=st.floats(0.0, 2 * math.pi),
       cell_m=st.sampled_from([0.1, 0.2, 0.25, 0.5]))
def test_tilted_plane_slope_is_its_tilt(tilt_deg, azimuth, cell_m):
    n = int(round(2 * CFG.footprint_m / cell_m)) + 2
    y, x = np.mgrid[0:n, 0:n] * cell_m
    g = math.tan(math.radians(tilt_deg))
    dem = (g * (math.cos(azimuth) * x + math.sin(azimuth) * y) + 300.0).astype(np.float32)
    layers = hazard_from_dem(dem, cell_m, CFG)
    known = layers.hazard != 255
    assert known.sum() >= 4
    np.testing.assert_allclose(layers.slope_deg[known], tilt_deg, atol=2e-3)
    assert np.nanmax(layers.roughness_m) < 1e-3
    assert (layers.hazard[known] == int(tilt_deg > CFG.slope_max_deg)).all() or abs(
        tilt_deg - CFG.slope_max_deg) < 1e-2


def _flat_with_bump(height_m: float) -> np.ndarray:
    y, x = np.mgrid[0:60, 0:60] * CFG.cell_m
    r2 = (x - 6.0) ** 2 + (y - 6.0) ** 2
    return (height_m * np.exp(-r2 / (2 * 0.3 ** 2))).astype(np.float32)   # ~1 m wide rock


def test_boulder_is_hazard_and_small_bump_is_not():
    big = hazard_from_dem(_flat_with_bump(0.5), CFG.cell_m, CFG)
    small = hazard_from_dem(_flat_with_bump(0.1), CFG.cell_m, CFG)
    c = 30                                                                 # the rock's cell
    assert big.hazard[c, c] == 1 and big.roughness_m[c, c] > CFG.roughness_max_m
    assert big.hazard[c, c + 8] == 1           # 1.6 m away: the rock is inside that disc too
    assert small.hazard[c, c] == 0 and small.roughness_m[c, c] < CFG.roughness_max_m
    known = small.hazard != 255
    assert (small.hazard[known] == 0).all()


def test_unknown_where_coverage_is_short_or_centre_missing():
    dem = np.zeros((60, 60), np.float32)
    dem[30, 30] = np.nan
    dem[:, :5] = np.nan
    layers = hazard_from_dem(dem, CFG.cell_m, CFG)
    assert layers.hazard[30, 30] == 255 and layers.hazard[30, 31] == 0
    assert (layers.hazard[:, :5] == 255).all()
    assert (layers.hazard[:3] == 255).all()           # disc more than 20 % off the grid
    assert (layers.hazard[10:28, 20:50] == 0).all()   # disc fully on the grid
    assert 0.5 < layers.coverage[0, 30] < COVERAGE_MIN


def test_sigma_margin_turns_marginal_cells_to_hazard():
    dem = _flat_with_bump(0.25)                       # safe: 0.25 m < 0.30 m
    assert hazard_from_dem(dem, CFG.cell_m, CFG).hazard[30, 30] == 0
    sigma = np.full(dem.shape, 0.05, np.float32)      # 0.25 + 2 * 0.05 > 0.30
    layers = hazard_from_dem(dem, CFG.cell_m, CFG, sigma_m=sigma)
    assert layers.hazard[30, 30] == 1
    flat = np.zeros_like(dem)
    assert hazard_from_dem(flat, CFG.cell_m, CFG, sigma_m=sigma).hazard[30, 30] == 0


def test_stride_gives_the_same_values_on_its_cells():
    rng = np.random.default_rng(0)
    dem = rng.normal(0, 0.1, (50, 47)).astype(np.float32)
    full = hazard_from_dem(dem, 0.2, CFG, origin_xy_m=(10.0, -4.0))
    coarse = hazard_from_dem(dem, 0.2, CFG, stride=3, origin_xy_m=(10.0, -4.0))
    np.testing.assert_array_equal(coarse.hazard, full.hazard[::3, ::3])
    np.testing.assert_allclose(coarse.roughness_m, full.roughness_m[::3, ::3], equal_nan=True)
    x, y = coarse.grid.cell_centre(np.array(2), np.array(5))
    assert (x, y) == pytest.approx(full.grid.cell_centre(np.array(6), np.array(15)))

"""Terrain generator: determinism, grid convention, fBm scaling, size-frequency laws."""
from dataclasses import replace
import math

import numpy as np
import pytest

from l3d_sim.config import load_sim_config, TerrainConfig
from l3d_sim.terrain import crater_profile, fbm, make_terrain, power_law_sizes, Terrain

SMALL = TerrainConfig(size_m=40.0)


def test_same_seed_same_bytes_other_seed_differs():
    a, b, c = make_terrain(SMALL, 7), make_terrain(SMALL, 7), make_terrain(SMALL, 8)
    assert a.height_m.tobytes() == b.height_m.tobytes()
    assert a.albedo.tobytes() == b.albedo.tobytes()
    assert not np.array_equal(a.height_m, c.height_m)
    assert a.height_m.dtype == np.float32 and a.height_m.shape == (400, 400)


def test_grid_convention_cell_centres_and_bilinear():
    h = np.arange(12, dtype=np.float32).reshape(3, 4)            # h[i, j] = 4 i + j
    t = Terrain(h, np.ones_like(h), 0.5, (10.0, -2.0))
    # cell (i, j) centre: x = 10 + (j + 0.5) 0.5, y = -2 + (i + 0.5) 0.5
    assert t.height_at(10.25 + 0.5 * 3, -1.75 + 0.5 * 2) == pytest.approx(11.0)
    assert t.height_at(10.25 + 0.25, -1.75 + 0.25) == pytest.approx(2.5)   # mid of 4 cells
    assert np.isnan(t.height_at(10.0, -2.0))                     # outside the centre lattice
    row, col = t.grid.cell_index(np.array([10.25 + 1.5]), np.array([-1.75 + 1.0]))
    assert (row[0], col[0]) == (2, 3)


def test_centred_terrain_extent():
    t = make_terrain(SMALL, 1, centre_xy_m=(5.0, -3.0))
    n = t.height_m.shape[0]
    assert t.origin_xy_m == pytest.approx((5.0 - n * 0.05, -3.0 - n * 0.05))


def test_fbm_roughness_and_hurst_scaling():
    z = fbm((1024, 1024), 0.1, 0.8, 0.05, np.random.default_rng(0))

    def rms(lag):                                                # along x, `lag` cells
        return math.sqrt(np.mean((z[:, lag:] - z[:, :-lag]) ** 2))

    assert rms(10) == pytest.approx(0.05, rel=0.05)              # x lag alone, ~ the mean
    # structure function ~ lag^H on short lags (periodic synthesis flattens long ones)
    assert math.log(rms(8) / rms(2)) / math.log(4) == pytest.approx(0.8, abs=0.06)


def test_power_law_sizes_follow_cumulative_law():
    d = power_law_sizes(200_000, 0.1, 3.0, 2.5, np.random.default_rng(1))
    assert d.min() >= 0.1 and d.max() <= 3.0
    tail = (0.1 / 3.0) ** 2.5
    for x in (0.2, 0.5, 1.0):
        expected = ((0.1 / x) ** 2.5 - tail) / (1 - tail)
        assert np.mean(d >= x) == pytest.approx(expected, rel=0.05, abs=2e-4)


def test_crater_profile_bowl_rim_ejecta():
    r = np.array([0.0, 0.999999, 1.0, 2.0, 2.5, 3.0])
    h = crater_profile(r, depth_m=2.0, rim_m=0.4, reach=2.5)
    assert h[0] == pytest.approx(-1.6)                           # floor = rim - depth
    assert h[1] == pytest.approx(0.4, abs=1e-5) and h[2] == pytest.approx(0.4)  # continuous
    assert 0 < h[3] < 0.4 and h[4] == pytest.approx(0.0, abs=1e-7) and h[5] == 0.0


def test_default_terrain_has_craters_boulders_and_is_fast_enough():
    cfg = replace(load_sim_config().terrain, size_m=60.0)
    t = make_terrain(cfg, 3)
    dz = np.diff(t.height_m, axis=1) / t.cell_m
    assert np.max(np.abs(dz)) > 1.0                              # steep boulder flanks
    assert t.height_m.min() < -0.5                               # crater floors
    assert 0.5 < t.albedo.mean() < 1.5

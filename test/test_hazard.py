"""Hazard core: slope, roughness, unknown coverage (INTERFACES.md section 4)."""
from dataclasses import replace
import math

from hypothesis import given, settings
from hypothesis import strategies as st
import numpy as np
import pytest

from l3d_ros.config import HazardConfig
from l3d_ros.hazard import (auto_stride, COVERAGE_MIN, disc_offsets, hazard_from_dem,
                            judgeable_window)

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
    layers = hazard_from_dem(dem, 0.25, cfg, exact_roughness=True)
    fast = hazard_from_dem(dem, 0.25, cfg)
    np.testing.assert_array_equal(fast.hazard, layers.hazard)
    known = layers.hazard != 255
    assert (fast.roughness_m[known] >= layers.roughness_m[known] - 1e-5).all()   # a bound
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
    layers = hazard_from_dem(dem, cell_m, CFG, exact_roughness=True)
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


@pytest.mark.parametrize('stride', [2, 3, 4, 5])
def test_stride_gives_the_same_values_on_its_cells(stride):
    """Lattice values equal the stride-1 ones (integral moments below stride 3, blocks from 3)."""
    rng = np.random.default_rng(stride)
    dem = rng.normal(0, 0.1, (50, 47)).astype(np.float32)
    dem[20:24, 30:33] = np.nan
    dem[rng.random(dem.shape) < 0.05] = np.nan
    sigma = np.full(dem.shape, 0.02, np.float32)
    for sig in (None, sigma):
        full = hazard_from_dem(dem, 0.2, CFG, sig, origin_xy_m=(10.0, -4.0),
                               exact_roughness=True)
        coarse = hazard_from_dem(dem, 0.2, CFG, sig, stride=stride, origin_xy_m=(10.0, -4.0))
        np.testing.assert_array_equal(coarse.hazard, full.hazard[::stride, ::stride])
        np.testing.assert_allclose(coarse.slope_deg, full.slope_deg[::stride, ::stride],
                                   atol=1e-4, equal_nan=True)
        np.testing.assert_allclose(coarse.height_m, full.height_m[::stride, ::stride],
                                   atol=1e-4, equal_nan=True)
        known = coarse.hazard != 255
        assert known.any()
        assert (coarse.roughness_m[known]
                >= full.roughness_m[::stride, ::stride][known] - 1e-5).all()
    x, y = coarse.grid.cell_centre(np.array(2), np.array(5))
    assert (x, y) == pytest.approx(full.grid.cell_centre(np.array(2 * stride),
                                                         np.array(5 * stride)))


def test_judgeable_window_holds_every_judged_cell():
    """Stray points far from the data stretch the DEM; cropping to the window changes nothing."""
    rng = np.random.default_rng(3)
    dem = np.full((160, 150), np.nan, np.float32)
    dem[40:110, 30:100] = rng.normal(0, 0.05, (70, 70))
    dem[rng.random(dem.shape) < 0.01] = 0.3                  # stray stereo points anywhere
    dem[60:62, 50:52] = np.nan
    r0, r1, c0, c1 = judgeable_window(np.isfinite(dem), CFG.cell_m, CFG.footprint_m)
    assert r0 > 0 and c0 > 0 and r1 < 160 and c1 < 150     # the strays are cut away
    full = hazard_from_dem(dem, CFG.cell_m, CFG)
    part = hazard_from_dem(dem[r0:r1, c0:c1], CFG.cell_m, CFG)
    outside = np.ones(dem.shape, bool)
    outside[r0:r1, c0:c1] = False
    assert (full.hazard[outside] == 255).all()
    np.testing.assert_array_equal(part.hazard, full.hazard[r0:r1, c0:c1])
    assert (full.hazard != 255).sum() > 1000
    assert judgeable_window(np.zeros((50, 50), bool), CFG.cell_m, CFG.footprint_m) is None


def test_fusion_ignores_invalid_and_outside_points():
    from l3d_ros.dem import DemFusion
    cfg = HazardConfig(map_size_m=10.0)
    rng = np.random.default_rng(4)
    pts = np.stack([rng.uniform(-4, 4, 500), rng.uniform(-4, 4, 500),
                    rng.normal(0, 0.1, 500)], 1).astype(np.float32)
    sig = rng.uniform(0.01, 0.1, 500).astype(np.float32)
    clean = DemFusion(cfg, (0.0, 0.0))
    clean.add_points(pts, sig)
    bad_pts = np.concatenate([pts, [[np.nan, 0, 0], [0, 0, np.inf], [50, 0, 1], [1, 1, 1],
                                    [1, 1, 1]]]).astype(np.float32)
    bad_sig = np.concatenate([sig, [0.1, 0.1, 0.1, np.nan, -1.0]]).astype(np.float32)
    mixed = DemFusion(cfg, (0.0, 0.0))
    mixed.add_points(bad_pts, bad_sig)
    assert mixed.dropped == 1 and mixed.last_cells == clean.last_cells
    for a, b in zip(mixed.dem(), clean.dem()):
        np.testing.assert_allclose(a, b, rtol=1e-6, equal_nan=True)


def test_fusing_two_noisy_frames_lowers_sigma_and_error():
    from l3d_ros.dem import DemFusion
    cfg = HazardConfig(map_size_m=20.0)
    rng = np.random.default_rng(1)
    y, x = np.mgrid[0:200, 0:200] * 0.05 - 5.0                  # points every 0.05 m
    truth = 0.1 * x
    fusion = DemFusion(cfg, origin_xy_m=(0.0, 0.0))
    errors, sigmas = [], []
    for _ in range(2):
        z = truth + rng.normal(0, 0.2, truth.shape)
        fusion.add_points(np.stack([x, y, z], -1), np.full(truth.shape, 0.2))
        h, s = fusion.dem(fusion.last_cells)
        sigmas.append(np.nanmedian(s))
        errors.append(np.nanstd(h - fusion_truth(fusion, 0.1)))
    assert sigmas[1] == pytest.approx(sigmas[0] / math.sqrt(2), rel=1e-3)
    assert errors[1] < errors[0]
    assert sigmas[0] == pytest.approx(0.2 / 4, rel=1e-3)          # 16 points per 0.2 m cell
    fusion.add_points(np.array([[100.0, 0.0, 0.0]]), np.array([0.1]))
    assert fusion.dropped == 1


def test_repeated_looks_tighten_a_cell_at_most_looks_max_times():
    """Ten equal frames (a hover) shrink sigma by sqrt(looks_max), not sqrt(10); the mean still
    takes every frame; a far better frame sets the cap anew; looks_max 1: the best frame's."""
    from l3d_ros.dem import DemFusion
    y, x = np.mgrid[0:40, 0:40] * 0.05 - 1.0
    pts = np.stack([x, y, np.zeros_like(x)], -1)
    for looks_max in (3.0, 1.0):
        fusion = DemFusion(HazardConfig(map_size_m=20.0, looks_max=looks_max),
                           origin_xy_m=(0.0, 0.0))
        for k in range(10):
            fusion.add_points(pts + [0.0, 0.0, 0.01 * k], np.full(x.shape, 0.2))
        h, s = fusion.dem(fusion.last_cells)
        one = 0.2 / 4                                            # 16 points per cell
        assert np.nanmedian(s) == pytest.approx(one / math.sqrt(looks_max), rel=1e-3)
        assert np.nanmedian(h) == pytest.approx(0.045, abs=1e-4)   # mean of 0.00 .. 0.09
        fusion.add_points(pts, np.full(x.shape, 0.02))          # 10x better: a lower scan
        _, s = fusion.dem(fusion.last_cells)                     # 10 + 100 frame weights
        capped = min(110.0, looks_max * 100.0)
        assert np.nanmedian(s) == pytest.approx(one / math.sqrt(capped), rel=1e-3)
    with pytest.raises(ValueError, match='hazard.looks_max'):
        HazardConfig(looks_max=0.5)


def fusion_truth(fusion, gradient):
    h, _ = fusion.dem(fusion.last_cells)
    grid = fusion.sub_grid(fusion.last_cells)
    x, _ = grid.cell_centre(*np.mgrid[0:h.shape[0], 0:h.shape[1]])
    return gradient * x


def test_points_sigma_is_stereo_sigma_at_nadir_and_grows_with_low_confidence():
    from l3d_ros.dem import points_sigma
    from l3d_ros.geometry import depth_sigma_m, nadir_pose, StereoCalib
    calib = StereoCalib(700.0, 700.0, 31.5, 23.5, 2.0, 64, 48)
    depth = np.full((48, 64), 30.0, np.float32)
    R, _ = nadir_pose(30.0)
    sig = points_sigma(depth, calib, CFG, R)
    expected = depth_sigma_m(depth, 700.0, 2.0, CFG.disparity_sigma_px)
    assert sig[23, 31] == pytest.approx(expected[23, 31], rel=1e-3)
    low = points_sigma(depth, calib, CFG, R, confidence=np.full_like(depth, 0.5))
    np.testing.assert_allclose(low, 2 * sig, rtol=1e-5)


def test_safe_site_never_in_or_near_a_hole():
    from l3d_ros.site import select_safe_site
    dem = np.zeros((100, 100), np.float32)
    dem[40:60, 40:60] = np.nan                                     # hole around the target
    layers = hazard_from_dem(dem, CFG.cell_m, CFG)
    target = np.array([10.0, 10.0])                                # the hole's centre
    site = select_safe_site(layers, CFG, target)
    assert site is not None
    hole_x = np.clip(site.xy_m[0], 8.0, 12.0)
    hole_y = np.clip(site.xy_m[1], 8.0, 12.0)
    assert math.hypot(site.xy_m[0] - hole_x, site.xy_m[1] - hole_y) > CFG.footprint_m / 2
    assert site.clearance_m > CFG.footprint_m / 2
    row, col = layers.grid.cell_index(np.array(site.xy_m[0]), np.array(site.xy_m[1]))
    r = int(math.ceil(CFG.footprint_m / 2 / CFG.cell_m))
    assert (layers.hazard[row - r:row + r + 1, col - r:col + r + 1] != 255).all()
    none = select_safe_site(layers, HazardConfig(divert_max_m=1.0), target)
    assert none is None


def test_safe_site_clears_every_cell_square_under_its_footprint():
    """At stride 1 too, a site's footprint must not reach into the square of a cell that is
    not safe: the nearest such cell centre lies beyond footprint/2 plus half a diagonal.
    Scattered hazard cells leave gaps where only that margin decides (a centre 2.01 m off, at
    (10, 1) cells, passed the old centre-only test)."""
    from l3d_ros.hazard import GridGeometry, HazardLayers
    from l3d_ros.site import select_safe_site
    shape = (100, 100)                                             # 20 m at 0.2 m
    grid = GridGeometry((-10.0, -10.0), CFG.cell_m, shape)
    margin = np.full(shape, 0.3, np.float32)
    x, y = grid.cell_centre(*np.mgrid[0:shape[0], 0:shape[1]])
    need = CFG.footprint_m / 2 + CFG.cell_m / math.sqrt(2)
    for seed in range(12):
        hazard = (np.random.default_rng(seed).random(shape) < 0.012).astype(np.uint8)
        layers = HazardLayers(hazard, margin, margin, np.ones(shape, np.float32), grid, 1,
                              lambda: (margin, margin, np.zeros(shape, np.float32)))
        site = select_safe_site(layers, CFG, np.array([0.0, 0.0]))
        assert site is not None
        gap = np.hypot(x[hazard == 1] - site.xy_m[0], y[hazard == 1] - site.xy_m[1]).min()
        assert gap > need, (seed, gap)
        assert need < site.clearance_m <= gap + 1e-6      # the grid edge may be nearer


def test_safe_site_keeps_its_clearance_from_ground_safe_only_near_a_limit():
    """A band of cells graded safe within 20 % of a limit (a rock read just under it) at the
    target: the site qualifies on safe cells alone but is ranked by its clearance from the
    band too, so it moves a footprint away; with site_margin_max 1 the band counts as clear."""
    from l3d_ros.hazard import GridGeometry, HazardLayers
    from l3d_ros.site import select_safe_site
    shape = (150, 150)                                             # 30 m at 0.2 m
    grid = GridGeometry((-15.0, -15.0), CFG.cell_m, shape)
    margin = np.full(shape, 0.3, np.float32)
    x, y = grid.cell_centre(*np.mgrid[0:shape[0], 0:shape[1]])
    band = np.abs(x - 1.0) < 0.5                                   # 1 m wide, 0.5-1.5 m east
    margin[band] = 0.9
    hazard = np.zeros(shape, np.uint8)                             # all safe

    def layers():
        return HazardLayers(hazard, margin, margin, np.ones(shape, np.float32), grid, 1,
                            lambda: (margin, margin, np.zeros(shape, np.float32)))

    target = np.array([0.0, 0.0])
    ranked = select_safe_site(layers(), CFG, target)
    assert CFG.site_margin_max == 0.8 and ranked is not None
    gap = np.min(np.abs(ranked.xy_m[0] - x[band]))                 # distance to the band
    assert gap >= CFG.footprint_m - CFG.cell_m
    assert ranked.clearance_m >= CFG.footprint_m                   # nothing not-safe nearby
    blind = select_safe_site(layers(), replace(CFG, site_margin_max=1.0), target)
    np.testing.assert_allclose(blind.xy_m, target, atol=CFG.cell_m)


def test_occupancy_and_pixel_lookup():
    from l3d_ros.hazard import hazard_to_occupancy, pixel_hazard
    dem = _flat_with_bump(0.5)
    layers = hazard_from_dem(dem, CFG.cell_m, CFG, origin_xy_m=(-6.0, -6.0))
    occ = hazard_to_occupancy(layers)
    assert occ[30, 30] == 100 and occ[0, 0] == -1 and 0 <= occ[30, 55 - 8] < 50
    pts = np.array([[[0.1, 0.1, 0.0], [np.nan, 0.0, 0.0], [50.0, 0.0, 0.0]]], np.float32)
    np.testing.assert_array_equal(pixel_hazard(pts, layers), [[1, 255, 255]])


@pytest.mark.parametrize('refine', [False, True])
def test_occupancy_grades_unproven_ground_apart_from_hazards(refine):
    """Noise that hides 0.3 m rocks: smooth ground is unproven (50..99), never safe; a rock
    the noise cannot explain, and a slope, stay hazards (100); without sigma nothing is
    unproven, since the labels are exact."""
    from l3d_ros.hazard import hazard_to_occupancy
    rng = np.random.default_rng(5)
    n = 90
    y, x = np.mgrid[0:n, 0:n] * CFG.cell_m
    dem = 0.02 * x + rng.normal(0, 0.02, (n, n))                      # 1.1 deg, smooth
    dem += 2.0 * np.exp(-((x - 4.0) ** 2 + (y - 4.0) ** 2) / (2 * 0.4 ** 2))   # 2 m boulder
    dem[:, 60:] += 0.5 * (x[:, 60:] - x[0, 60])                       # a 27 deg slope
    sigma = np.full((n, n), 0.08, np.float32)                          # 5.4 sigma > 0.3 m
    layers = hazard_from_dem(dem.astype(np.float32), CFG.cell_m, CFG, sigma_m=sigma,
                             stride=3 if refine else 1, refine=refine)
    occ = hazard_to_occupancy(layers)
    assert not (layers.hazard == 0).any()                              # nothing certified
    smooth = occ[40:70, 10:45]
    assert ((smooth >= 50) & (smooth <= 60)).mean() > 0.95            # unproven, level
    assert (occ[18:22, 18:22] == 100).all()                            # the boulder
    assert (occ[30:80, 72:80] == 100).all()                            # the slope
    assert ((occ >= 50) == (layers.hazard != 0))[layers.hazard != 255].all()
    assert (occ[layers.hazard == 255] != 100).all()            # unknown: never a hazard
    exact = hazard_to_occupancy(hazard_from_dem(dem.astype(np.float32), CFG.cell_m, CFG))
    assert not ((exact >= 50) & (exact < 100)).any()
    assert ((exact == 100) == (hazard_from_dem(dem.astype(np.float32), CFG.cell_m,
                                               CFG).hazard == 1)).all()


def _rough_terrain(seed: int, shape=(70, 64)) -> np.ndarray:
    """Tilted, bumpy terrain with rocks near the roughness limit and holes."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:shape[0], 0:shape[1]] * 0.2
    dem = 0.08 * x + rng.uniform(-0.1, 0.1) * y + 0.06 * np.sin(x) * np.cos(0.7 * y)
    dem += rng.normal(0, 0.04, shape)
    for _ in range(12):                                           # rocks 0.1 .. 0.6 m
        cy, cx = rng.uniform(0, shape[0] * 0.2), rng.uniform(0, shape[1] * 0.2)
        dem += rng.uniform(0.1, 0.6) * np.exp(-((x - cx) ** 2 + (y - cy) ** 2) / 0.18)
    dem[rng.random(shape) < 0.05] = np.nan                       # scattered holes
    dem[10:16, 40:47] = np.nan                                    # one large hole
    return (dem + 500.0).astype(np.float32)


@settings(max_examples=12, deadline=None)
@given(seed=st.integers(0, 10_000), sigma_m=st.sampled_from([None, 0.01, 0.03, 0.12]),
       stride=st.sampled_from([1, 2, 3]))
def test_bound_decisions_equal_brute_force(seed, sigma_m, stride):
    dem = _rough_terrain(seed)
    sigma = None if sigma_m is None else np.full(dem.shape, sigma_m, np.float32)
    if sigma is not None:
        sigma[5:9, 5:9] *= 3.0                                     # uneven sigma
    fast = hazard_from_dem(dem, 0.2, CFG, sigma, stride=stride)
    brute = hazard_from_dem(dem, 0.2, CFG, sigma, stride=stride, exact_roughness=True)
    np.testing.assert_array_equal(fast.hazard, brute.hazard)
    known = brute.hazard != 255
    assert (fast.roughness_m[known] >= brute.roughness_m[known] - 1e-5).all()
    safe = fast.hazard == 0
    assert (fast.margin[safe] <= 1.0 + 1e-6).all()


def test_decisions_cover_safe_and_hazard_near_the_limit():
    """The terrain of the property test exercises both outcomes and the exact fallback."""
    layers = hazard_from_dem(_rough_terrain(1), 0.2, CFG, exact_roughness=True)
    rough = layers.roughness_m[layers.hazard != 255]
    assert (rough < CFG.roughness_max_m).sum() > 50 and (rough > CFG.roughness_max_m).sum() > 50


def test_too_noisy_to_judge_rocks_is_unknown_not_safe():
    dem = _flat_with_bump(0.0)
    dem[30:33, 30:33] = 3.0                                       # a 3 m boulder
    sigma = np.full(dem.shape, 0.15, np.float32)                 # 50 m altitude, one frame
    layers = hazard_from_dem(dem, CFG.cell_m, CFG, sigma_m=sigma)
    assert layers.hazard[45, 15] == 255                          # flat, but noise hides rocks
    assert layers.hazard[31, 31] == 1                            # too big for noise to explain
    assert not (layers.hazard == 0).any()
    y, x = np.mgrid[0:60, 0:60] * CFG.cell_m
    steep = (np.tan(np.radians(25.0)) * x).astype(np.float32)
    assert (hazard_from_dem(steep, CFG.cell_m, CFG, sigma_m=sigma).hazard[20:40, 20:40]
            == 1).all()                                          # slope is still judged
    quiet = hazard_from_dem(dem * 0, CFG.cell_m, CFG, sigma_m=sigma / 10)
    assert quiet.hazard[45, 15] == 0


def test_auto_stride_bounds_lattice_and_spacing():
    assert auto_stride((120, 140), 0.2, 4.0) == 1
    assert auto_stride((614, 600), 0.2, 4.0) == 5                 # 123 cells, 1.0 m
    assert auto_stride((3000, 3000), 0.2, 4.0) == 5               # spacing cap footprint/4
    assert auto_stride((3000, 10), 0.5, 4.0) == 2


def test_frame_hazard_reuses_given_camera_points_and_reports_stages():
    from l3d_ros.backends.base import DepthResult
    from l3d_ros.geometry import backproject, StereoCalib
    from l3d_ros.site import frame_hazard
    calib = StereoCalib(700.0, 700.0, 63.5, 63.5, 2.0, 128, 128)
    depth = np.full((128, 128), 30.0, np.float32)
    depth[60:70, 60:70] = 29.0
    res = DepthResult(depth, np.ones_like(depth), 46.7 * np.ones_like(depth))
    stages = {}
    a = frame_hazard(res, calib, None, None, CFG, timings_ms=stages)
    b = frame_hazard(res, calib, None, None, CFG, points_cam=backproject(depth, calib))
    np.testing.assert_array_equal(a.pixel_hazard, b.pixel_hazard)
    assert a.pixel_hazard[64, 64] == 1 and set(stages) >= {'points', 'fusion', 'hazard', 'site'}


def test_frame_too_sparse_to_judge_is_all_unknown_without_a_site():
    from l3d_ros.backends.base import DepthResult
    from l3d_ros.geometry import StereoCalib
    from l3d_ros.site import frame_hazard
    calib = StereoCalib(700.0, 700.0, 63.5, 63.5, 2.0, 128, 128)
    depth = np.full((128, 128), np.nan, np.float32)
    depth[::16, ::16] = 30.0                          # a few scattered pixels only
    res = DepthResult(depth, np.isfinite(depth).astype(np.float32), 46.7 * np.ones_like(depth))
    out = frame_hazard(res, calib, None, None, CFG)
    assert out.site is None
    assert (out.layers.hazard == 255).all() and (out.occupancy == -1).all()
    assert (out.pixel_hazard == 255).all()


@settings(max_examples=6, deadline=None)
@given(seed=st.integers(0, 10_000), sigma_m=st.sampled_from([None, 0.02]),
       stride=st.sampled_from([2, 3, 4]))
def test_refined_matches_full_resolution(seed, sigma_m, stride):
    """Coarse to fine vs stride 1: identical on the lattice, near a boundary elsewhere.

    Tolerance measured on this rock-strewn terrain (rocks near the limit everywhere): up to
    ~3 % of the cells differ at stride 4 (2.8 % the worst hypothesis found), all within one
    lattice spacing of a label change.
    """
    import cv2
    dem = _rough_terrain(seed, (90, 84))
    sigma = None if sigma_m is None else np.full(dem.shape, sigma_m, np.float32)
    full = hazard_from_dem(dem, 0.2, CFG, sigma, origin_xy_m=(3.0, -2.0))
    fine = hazard_from_dem(dem, 0.2, CFG, sigma, stride=stride, origin_xy_m=(3.0, -2.0),
                           refine=True)
    assert fine.hazard.shape == dem.shape and fine.stride == 1
    assert fine.grid == full.grid
    np.testing.assert_array_equal(fine.hazard[::stride, ::stride],
                                  full.hazard[::stride, ::stride])
    np.testing.assert_array_equal(fine.hazard[np.isnan(dem)], 255)
    wrong = fine.hazard != full.hazard
    assert wrong.mean() <= 0.04
    kernel = np.ones((2 * stride + 1, 2 * stride + 1), np.uint8)
    labels_near = sum((cv2.dilate((full.hazard == v).astype(np.uint8), kernel) > 0).astype(int)
                      for v in (0, 1, 255))       # labels within one lattice spacing
    assert not (wrong & (labels_near < 2)).any()


def test_an_unseen_patch_inside_the_seen_ground_is_never_safe():
    """A shadowed pit: the disc around it is judged from the seen 80-95 %, which shows flat
    ground; the pit (0.6 m deep, 1.2 m wide) must keep every disc holding it from being safe."""
    from l3d_ros.hazard import hazard_to_occupancy, hidden_patches
    dem = np.zeros((60, 60), np.float32)
    pit = (slice(27, 33), slice(27, 33))
    dem[pit] = -0.6
    seen_pit = hazard_from_dem(dem, CFG.cell_m, CFG)
    dem[pit] = np.nan                                          # the pit in shadow
    layers = hazard_from_dem(dem, CFG.cell_m, CFG)
    radius = int(CFG.footprint_m / 2 / CFG.cell_m)
    yy, xx = np.mgrid[0:60, 0:60]
    # cells whose disc holds a cell of the pit, judged (coverage >= 80 %) without it
    gap_y = np.maximum(np.maximum(27 - yy, yy - 32), 0)
    gap_x = np.maximum(np.maximum(27 - xx, xx - 32), 0)
    near = gap_y ** 2 + gap_x ** 2 <= radius ** 2
    judged = near & (layers.coverage >= COVERAGE_MIN) & np.isfinite(dem)
    assert judged.sum() > 100
    assert (seen_pit.hazard[judged] == 1).sum() > 0.5 * judged.sum()   # a real hazard
    assert not (layers.hazard[judged] == 0).any()
    assert (layers.hazard[~hidden_patches(np.isfinite(dem), CFG.cell_m, CFG)
                          & np.isfinite(dem) & (layers.coverage >= COVERAGE_MIN)] == 0).all()
    occ = hazard_to_occupancy(layers)[judged & (layers.hazard == 1)]
    assert ((occ >= 50) & (occ <= 99)).all()         # unproven: nothing seen shows a hazard


def test_scattered_holes_and_the_edge_of_the_view_keep_the_coverage_rule():
    rng = np.random.default_rng(5)
    dem = np.zeros((60, 60), np.float32)
    dem[rng.random(dem.shape) < 0.12] = np.nan           # sampling holes, mostly single cells
    dem[:, :6] = np.nan                                   # beyond the edge of the view
    dem[10:12, 30:50] = np.nan                            # a thin shadow, 2 cells wide
    layers = hazard_from_dem(dem, CFG.cell_m, CFG)
    judged = (layers.coverage >= COVERAGE_MIN) & np.isfinite(dem)
    assert judged.sum() > 1000 and (layers.hazard[judged] == 0).all()
    assert (layers.coverage[judged & (np.arange(60) < 14)[None, :]] < 0.95).any()   # edge


def _hidden_brute(valid, cell_m, cfg):
    """Cells whose disc (disc_offsets) holds a cell of a k x k all-unseen square in the hull."""
    from l3d_ros.hazard import seen_hull
    k = max(1, math.ceil(2.0 * cfg.roughness_max_m / cell_m - 1e-9))
    unseen = ~valid & seen_hull(valid)
    h, w = valid.shape
    patch = np.zeros_like(unseen)
    for i in range(h - k + 1):
        for j in range(w - k + 1):
            if unseen[i:i + k, j:j + k].all():
                patch[i:i + k, j:j + k] = True
    radius, inside = disc_offsets(cfg.footprint_m, cell_m)
    out = np.zeros_like(unseen)
    pi, pj = np.nonzero(patch)
    for di, dj in np.argwhere(inside) - radius:
        ii, jj = pi - di, pj - dj
        ok = (ii >= 0) & (ii < h) & (jj >= 0) & (jj < w)
        out[ii[ok], jj[ok]] = True
    return out


@pytest.mark.parametrize('cell_m', [0.2, 0.15, 0.3, 0.12])     # k = 3, 4 (even), 2, 5
def test_hidden_patches_equal_brute_force(cell_m):
    from l3d_ros.hazard import hidden_patches, seen_hull
    cfg = HazardConfig(cell_m=cell_m)
    rng = np.random.default_rng(int(cell_m * 100))
    for _ in range(6):
        valid = rng.random((40, 45)) > 0.1
        for _ in range(3):
            i, j = rng.integers(0, 34), rng.integers(0, 39)
            valid[i:i + rng.integers(1, 7), j:j + rng.integers(1, 7)] = False
        yy, xx = np.mgrid[0:40, 0:45]
        valid &= xx + 0.7 * yy > rng.integers(3, 15)             # a slanted view edge
        np.testing.assert_array_equal(hidden_patches(valid, cell_m, cfg),
                                      _hidden_brute(valid, cell_m, cfg))
        hull = seen_hull(valid)
        assert hull[valid].all()
        a, b = np.argwhere(valid)[rng.integers(0, valid.sum(), (2, 200))]
        mid = np.floor((a + b) / 2 + 0.5).astype(int)             # convex: midpoints inside
        assert hull[mid[:, 0], mid[:, 1]].all()


@pytest.mark.parametrize('stride, refine', [(2, False), (3, False), (3, True)])
def test_unseen_patch_rule_on_lattices_and_with_sigma(stride, refine):
    from l3d_ros.hazard import hidden_patches
    dem = np.zeros((60, 60), np.float32)
    dem[27:33, 27:33] = np.nan
    sigma = np.full(dem.shape, 0.01, np.float32)
    sigma[5:8, 40:43] = 0.0                       # zero sigma is a usable (exact) sample
    layers = hazard_from_dem(dem, CFG.cell_m, CFG, sigma, stride=stride, refine=refine)
    s = layers.stride
    hidden = hidden_patches(np.isfinite(dem), CFG.cell_m, CFG)[::s, ::s]
    assert hidden.any() and not (layers.hazard[hidden] == 0).any()
    assert (layers.hazard[~hidden & (layers.coverage >= COVERAGE_MIN)
                          & np.isfinite(dem)[::s, ::s]] == 0).all()


def test_ground_truth_labels_are_section_4_without_the_unseen_patch_rule():
    dem = np.zeros((60, 60), np.float32)
    dem[27:33, 27:33] = np.nan
    plain = hazard_from_dem(dem, CFG.cell_m, CFG, unseen_patches=False)
    judged = (plain.coverage >= COVERAGE_MIN) & np.isfinite(dem)
    assert (plain.hazard[judged] == 0).all()
    assert (hazard_from_dem(dem, CFG.cell_m, CFG).hazard[judged] == 1).any()

"""Renderer: analytic depth, DEM-consistent ground truth, stereo consistency, cast shadows."""
from dataclasses import replace
import math

import numpy as np
import pytest

from l3d_ros.geometry import nadir_pose
from l3d_sim.config import RigConfig, SunConfig, TerrainConfig
from l3d_sim.dataset import descent_pose
from l3d_sim.render import (camera_rays, ray_cast, render_frame, render_stereo, rig_calib,
                            shadow_mask, sunlit_share)
from l3d_sim.terrain import crater_profile, make_terrain, Terrain

RIG = RigConfig(width=64, height=48, hfov_deg=40.0, baseline_m=2.0, noise_sigma_dn=0.0)
SUN = SunConfig(elevation_deg=10.0, azimuth_deg=0.0)


def flat(size_m=80.0, cell_m=0.1, z_m=0.0, albedo=None) -> Terrain:
    n = round(size_m / cell_m)
    h = np.full((n, n), z_m, np.float32)
    a = np.ones((n, n), np.float32) if albedo is None else albedo
    return Terrain(h, a, cell_m, (-size_m / 2, -size_m / 2))


def test_flat_plane_depth_is_analytic_for_a_tilted_camera():
    R, t = descent_pose(40.0, tilt_deg=12.0, tilt_azimuth_deg=30.0, yaw_deg=20.0)  # noqa: N806
    t = t + [1.0, -2.0, 0.0]
    terrain = flat(z_m=-1.5)
    _, _, depth, points = render_stereo(terrain, RIG, SUN, R, t, np.random.default_rng(0))
    d = camera_rays(rig_calib(RIG), R)[:, 2].reshape(depth.shape)
    expected = (t[2] + 1.5) / -d                                 # plane z = -1.5
    np.testing.assert_allclose(depth, expected, rtol=0, atol=2e-3)
    np.testing.assert_allclose(points[..., 2], -1.5, atol=2e-3)


def test_ground_truth_points_lie_on_the_dem_and_reproject_to_depth():
    terrain = make_terrain(TerrainConfig(size_m=50.0), 11)
    R, t = descent_pose(25.0, 8.0, 200.0, -10.0)  # noqa: N806
    frame = render_frame(terrain, _cfg(), R, t, np.random.default_rng(1))
    p = frame.points_world_m.reshape(-1, 3).astype(np.float64)
    assert np.isfinite(p).all()
    np.testing.assert_allclose(p[:, 2], terrain.height_at(p[:, 0], p[:, 1]), atol=2e-3)
    cam = (p - t) @ R                                            # map -> left optical frame
    np.testing.assert_allclose(cam[:, 2], frame.depth_m.ravel(), atol=2e-3)
    u = frame.calib.fx * cam[:, 0] / cam[:, 2] + frame.calib.cx
    v = frame.calib.fy * cam[:, 1] / cam[:, 2] + frame.calib.cy
    vv, uu = np.mgrid[0:RIG.height, 0:RIG.width]
    np.testing.assert_allclose(u, uu.ravel(), atol=1e-2)
    np.testing.assert_allclose(v, vv.ravel(), atol=1e-2)


def test_first_hit_on_a_steep_block_is_not_skipped():
    terrain = flat(size_m=20.0)
    h = terrain.height_m
    h[90:110, 90:110] = 3.0                                      # 2 m x 2 m x 3 m block
    origin = np.array([0.0, 0.0, 30.0])
    dirs = np.array([[0.02, 0.0, -1.0], [0.0, 0.0, -1.0], [0.3, 0.0, -1.0]])
    t = ray_cast(terrain, origin, dirs)
    np.testing.assert_allclose(t[:2], [27.0, 27.0], atol=1e-3)   # block top
    np.testing.assert_allclose(t[2], 30.0, atol=1e-3)            # beside it, on the ground


def test_right_view_is_the_left_shifted_by_the_disparity():
    rig = RigConfig(width=64, height=48, hfov_deg=40.0, baseline_m=2.0, noise_sigma_dn=0.0)
    disp_px = 4
    z = rig.fx * rig.baseline_m / disp_px
    albedo = 1 + 0.5 * np.random.default_rng(0).random((800, 800)).astype(np.float32)
    terrain = flat(albedo=albedo)
    R, t = nadir_pose(z)  # noqa: N806
    left, right, depth, _ = render_stereo(terrain, rig, SunConfig(elevation_deg=30.0), R, t,
                                          np.random.default_rng(0))
    np.testing.assert_allclose(depth, z, rtol=1e-5)
    diff = left[:, disp_px:].astype(int) - right[:, :-disp_px].astype(int)
    assert np.abs(diff).max() <= 2                               # same surface, same light
    assert left.std() > 10                                       # and it has texture


def test_crater_shadow_falls_inside_the_sun_side_rim():
    terrain = flat(size_m=40.0)
    yy, xx = np.mgrid[0:400, 0:400]
    r = np.hypot(xx - 199.5, yy - 199.5) * 0.1 / 5.0            # crater D = 10 m at (0, 0)
    terrain.height_m[:] = crater_profile(r, depth_m=2.0, rim_m=0.4, reach=2.5)
    lit = shadow_mask(terrain.height_m, 0.1, SUN)                # sun towards +x, 10 deg
    row = 200
    col = (lambda x: round(x / 0.1 + 199.5))
    assert lit[row, col(3.5)] == 0                               # behind the east rim
    assert lit[row, col(-3.5)] == 1                              # west wall faces the sun
    assert lit[row, col(-8.0)] == 1 and lit[row, col(8.0)] == 1  # plains
    shadow_x = [x for x in np.arange(-5, 5, 0.1) if lit[row, col(x)] == 0]
    # the ray grazing the east rim (x = 5, z = 0.4) falls at tan(10 deg) per metre and meets
    # the bowl z = -1.6 + 2 (x / 5)^2 at the root of 0.08 x^2 - k x - (2 - 5 k) = 0, x < 0
    k = math.tan(math.radians(10.0))
    edge = (k - math.sqrt(k * k + 4 * 0.08 * (2 - 5 * k))) / (2 * 0.08)
    assert min(shadow_x) == pytest.approx(edge, abs=0.15)        # -2.8 m: floor in shadow
    assert max(shadow_x) < 5.0                                   # up to the sunward rim


def test_boulder_shadow_length_matches_sun_elevation():
    terrain = flat(size_m=30.0)
    h = terrain.height_m
    h[140:160, 140:160] = 1.0                                    # 2 m block, 1 m tall at origin
    sun = SunConfig(elevation_deg=10.0, azimuth_deg=180.0)       # sun towards -x
    lit = shadow_mask(h, 0.1, sun)
    length_m = 1.0 / math.tan(math.radians(10.0))               # 5.67 m towards +x
    row = 150
    x_m = (np.arange(300) - 149.5) * 0.1                         # cell centres along x
    shadow = x_m[lit[row] == 0]
    assert shadow.min() == pytest.approx(1.05, abs=1e-6)         # first cell past the block
    assert shadow.max() == pytest.approx(0.95 + length_m, abs=0.1)  # from its top edge
    assert lit[row, :140].all()                                  # sun side is lit
    assert lit[170:, :].all() and lit[:130, :].all()             # not beside it


def test_sunlit_share_of_a_slope_facing_away_from_a_low_sun():
    """A plane tilted 6 deg away from a 4 deg sun is all in shadow (the seed-4 landings whose
    whole divert reach faced away); the same plane under a 10 deg sun is all lit; a block's
    shadow takes its share of a disc."""
    terrain = flat(size_m=40.0)
    x = (np.arange(400) - 199.5) * 0.1
    tilted = replace(terrain, height_m=np.broadcast_to(
        (-x * math.tan(math.radians(6.0))).astype(np.float32), (400, 400)).copy())
    sun = SunConfig(elevation_deg=4.0, azimuth_deg=180.0)        # sun towards -x, uphill
    assert sunlit_share(tilted, shadow_mask(tilted.height_m, 0.1, sun), (0, 0), 15.0) == 0.0
    high = replace(sun, elevation_deg=10.0)
    assert sunlit_share(tilted, shadow_mask(tilted.height_m, 0.1, high), (0, 0), 15.0) == 1.0
    h = terrain.height_m
    h[190:210, 190:210] = 1.0                                    # 2 m block, 1 m tall
    lit = shadow_mask(h, 0.1, SunConfig(elevation_deg=10.0, azimuth_deg=180.0))
    share = sunlit_share(terrain, lit, (0, 0), 10.0)
    shadow_m2 = 2.0 * (1.0 / math.tan(math.radians(10.0)))     # 2 m wide, 5.67 m long
    assert share == pytest.approx(1 - shadow_m2 / (math.pi * 100.0), abs=0.01)
    assert math.isnan(sunlit_share(terrain, lit, (100.0, 0.0), 5.0))   # off the terrain
    with pytest.raises(ValueError, match=r'lit has shape \(10, 10\)'):
        sunlit_share(terrain, lit[:10, :10], (0, 0), 5.0)


def test_same_seed_identical_images():
    terrain = make_terrain(TerrainConfig(size_m=40.0), 2)
    R, t = nadir_pose(20.0)  # noqa: N806
    rig = RigConfig(width=64, height=48)
    a = render_stereo(terrain, rig, SUN, R, t, np.random.default_rng(5))
    b = render_stereo(terrain, rig, SUN, R, t, np.random.default_rng(5))
    for x, y in zip(a, b):
        assert x.tobytes() == y.tobytes()
    assert a[0].dtype == np.uint8 and a[0].shape == (48, 64)


def _cfg():
    from l3d_sim.config import SimConfig
    return SimConfig(rig=RIG, sun=SUN)


def test_sixteen_bit_output():
    terrain = make_terrain(TerrainConfig(size_m=40.0), 2)
    rig = RigConfig(width=32, height=32, bit_depth=16)
    left, right, _, _ = render_stereo(terrain, rig, SUN, *nadir_pose(20.0),
                                      np.random.default_rng(0))
    assert left.dtype == right.dtype == np.uint16 and left.max() > 4096


def test_sgbm_recovers_the_rendered_depth():
    """Independent cross-check: OpenCV SGBM on a rendered pair agrees with the GT depth."""
    from l3d_ros.backends.sgbm import SgbmBackend
    from l3d_ros.config import load_node_config
    from l3d_sim.config import load_sim_config
    cfg = load_sim_config()
    terrain = make_terrain(replace(cfg.terrain, size_m=60.0), 23)
    R, t = nadir_pose(40.0)  # noqa: N806
    frame = render_frame(terrain, cfg, R, t, np.random.default_rng(0))
    assert (frame.left < 5).mean() < 0.2            # a lit scene (seed 21: a shadowed crater)
    node = load_node_config()
    result = SgbmBackend(node.sgbm, node.depth_min_m, node.depth_max_m).compute(
        frame.left, frame.right, frame.calib)
    ok = np.isfinite(result.depth_m) & np.isfinite(frame.depth_m)
    err = np.abs(result.depth_m[ok] - frame.depth_m[ok])
    sigma_z = 40.0 ** 2 * 0.25 / (frame.calib.fx * frame.calib.baseline_m)   # 0.28 m
    assert ok.mean() > 0.8
    assert np.median(err) < 2 * sigma_z


@pytest.mark.parametrize('cells', [2001, 2049, 2829])
def test_height_lookup_off_a_large_terrain_stays_inside_the_array(cells):
    """Rays that leave the terrain are clamped to its last cell; on grids of 2049 cells or
    more, cells - 1.0001 rounds to cells - 1 in float32 and the lookup read past the array (a
    70 deg camera at 150 m, 2829 cells of 0.1 m)."""
    from l3d_sim.render import _patch
    height = np.arange(cells * cells, dtype=np.float32).reshape(cells, cells) / cells
    far = np.float32([cells + 5.0, cells - 0.5, -3.0])
    h, _, _, inside = _patch(height, far, far[::-1].copy())
    assert np.isfinite(h).all() and not inside.any()
    h, dr, dc, inside = _patch(height, np.float32([1.5]), np.float32([2.25]))
    assert inside.all() and h[0] == pytest.approx((1.5 * cells + 2.25) / cells, rel=1e-5)
    assert dr[0] == pytest.approx(1.0, rel=1e-4) and dc[0] == pytest.approx(1 / cells, rel=1e-3)

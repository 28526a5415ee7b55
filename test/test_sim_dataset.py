"""Ground-truth hazard and pair-folder datasets of the simulator."""
from dataclasses import replace
import json
import math

import numpy as np
import pytest

from l3d_ros.dataset import list_pairs, read_pair
from l3d_ros.geometry import nadir_pose
from l3d_sim.config import DatasetConfig, load_sim_config, RigConfig, SimConfig, SunConfig
from l3d_sim.dataset import descent_pose, write_dataset
from l3d_sim.groundtruth import crop_dem, ground_truth_hazard, node_hazard_config
from l3d_sim.render import render_stereo
from l3d_sim.terrain import _stamp_boulders, Terrain

RIG = RigConfig(width=96, height=96, noise_sigma_dn=0.0)


def _flat(size_m=40.0, slope_deg=0.0):
    n = round(size_m / 0.1)
    x = (np.arange(n) - (n - 1) / 2) * 0.1
    h = np.broadcast_to(np.tan(np.radians(slope_deg)) * x, (n, n)).astype(np.float32).copy()
    return Terrain(h, np.ones((n, n), np.float32), 0.1, (-size_m / 2, -size_m / 2))


def _points(terrain, altitude_m=25.0):
    R, t = nadir_pose(altitude_m)  # noqa: N806
    return render_stereo(terrain, RIG, SunConfig(), R, t, np.random.default_rng(0))[3]


def test_known_boulder_is_hazard_and_flat_ground_is_safe():
    terrain = _flat()
    # one 1.2 m boulder at map (3, -2): cell centre (row, col) = ((y + 20) / 0.1 - 0.5, ...)
    _stamp_boulders(terrain.height_m, load_sim_config().terrain, np.random.default_rng(0),
                    np.array([179.5]), np.array([229.5]), np.array([1.2]))
    assert terrain.height_m.max() > 0.35
    points = _points(terrain)
    hz = ground_truth_hazard(terrain, points, node_hazard_config())
    dist = np.hypot(points[..., 0] - 3.0, points[..., 1] + 2.0)
    assert (hz[dist < 1.0] == 1).all()                          # rock inside every such disc
    far = dist > 2.0 + 0.6 + 0.3                                 # disc cannot reach the rock
    assert (hz[far & (hz != 255)] == 0).all()
    assert (hz[far] == 0).mean() > 0.5


@pytest.mark.parametrize('slope_deg, expected', [(5.0, 0), (15.0, 1)])
def test_slope_limit_decides_a_tilted_plane(slope_deg, expected):
    terrain = _flat(slope_deg=slope_deg)
    hz = ground_truth_hazard(terrain, _points(terrain), node_hazard_config())
    known = hz[hz != 255]
    assert known.size > 0.5 * hz.size and (known == expected).all()


def test_crop_block_mean_is_centred_on_the_coarse_cells():
    n = 200
    x = (np.arange(n) + 0.5) * 0.1 - 10.0
    h = (0.3 * x[None, :] - 0.2 * x[:, None]).astype(np.float32)      # plane, exact under means
    terrain = Terrain(h, np.ones_like(h), 0.1, (-10.0, -10.0))
    crop = crop_dem(terrain, (-3.03, 4.0), (-2.0, 5.0), 0.2)
    rows, cols = crop.height_m.shape
    xc = crop.origin_xy_m[0] + (np.arange(cols) + 0.5) * 0.2
    yc = crop.origin_xy_m[1] + (np.arange(rows) + 0.5) * 0.2
    np.testing.assert_allclose(crop.height_m, 0.3 * xc[None, :] - 0.2 * yc[:, None], atol=1e-5)
    assert crop.origin_xy_m[0] <= -3.03 and crop.origin_xy_m[1] <= -2.0


def test_descent_pose_tilt_and_identity():
    R0, t0 = descent_pose(50.0, 0.0, 0.0, 0.0)  # noqa: N806
    np.testing.assert_allclose(R0, nadir_pose(50.0)[0], atol=1e-12)
    R, _ = descent_pose(50.0, 7.0, 123.0, 33.0)  # noqa: N806
    np.testing.assert_allclose(R @ R.T, np.eye(3), atol=1e-12)
    assert np.linalg.det(R) == pytest.approx(1.0)
    off_nadir = math.degrees(math.acos(-R[2, 2]))                # optical z vs map -z
    assert off_nadir == pytest.approx(7.0, abs=1e-9)


def test_dataset_pairs_are_readable_and_reproducible(tmp_path):
    cfg = load_sim_config()
    cfg = SimConfig(terrain=cfg.terrain, rig=replace(cfg.rig, width=64, height=48),
                    sun=cfg.sun, dataset=DatasetConfig(altitude_min_m=30.0, altitude_max_m=40.0))
    hazard_cfg = node_hazard_config()
    a = write_dataset(tmp_path / 'a', 2, 9, cfg, hazard_cfg, progress=False)
    b = write_dataset(tmp_path / 'b', 1, 9, cfg, hazard_cfg, progress=False)
    assert [p.name for p in list_pairs(tmp_path / 'a')] == ['pair_00000', 'pair_00001']
    for name in ('left.png', 'right.png', 'depth.npy', 'hazard.npy', 'dem.npy', 'pose.json'):
        assert (a[0] / name).read_bytes() == (b[0] / name).read_bytes(), name
    assert (a[0] / 'left.png').read_bytes() != (a[1] / 'left.png').read_bytes()
    pair = read_pair(a[0])
    assert pair.left.shape == (48, 64) and pair.left.dtype == np.uint8
    assert pair.calib.baseline_m == cfg.rig.baseline_m
    assert pair.calib.fx == pytest.approx(32 / math.tan(math.radians(cfg.rig.hfov_deg / 2)))
    assert np.isfinite(pair.depth_m).all()
    assert set(np.unique(pair.hazard)) <= {0, 1, 255}
    meta = json.loads((a[0] / 'sim.json').read_text())
    alt = pair.t_world_cam[2] - float(np.median(np.load(a[0] / 'dem.npy')))
    assert 30.0 - 5 < alt < 40.0 + 5 and 30.0 <= meta['altitude_m'] <= 40.0
    dem = json.loads((a[0] / 'dem.json').read_text())
    assert dem['cell_m'] == hazard_cfg.cell_m


@pytest.mark.parametrize('lo', [-3.03, -2.95, -3.11, 0.07])
def test_crop_blocks_lie_on_the_node_map_grid(lo):
    """The truth bins the ground into the same 0.2 m cells as DemFusion (corners at whole
    multiples of cell_m in map), whatever the crop's start."""
    n = 200
    h = np.zeros((n, n), np.float32)
    terrain = Terrain(h, np.ones_like(h), 0.1, (-10.0, -10.0))
    crop = crop_dem(terrain, (lo, 4.0), (lo + 0.1, 5.0), 0.2)
    for v, want in zip(crop.origin_xy_m, (lo, lo + 0.1)):
        assert v / 0.2 == pytest.approx(round(v / 0.2), abs=1e-6) and v <= want + 1e-9


@pytest.mark.parametrize('k', [1, 2, 3])
def test_crop_cell_is_the_area_mean_of_the_rendered_surface(k):
    rng = np.random.default_rng(k)
    h = rng.normal(0, 0.3, (60, 60)).astype(np.float32)             # rough: means differ
    terrain = Terrain(h, np.ones_like(h), 0.1, (-3.0, -3.0))
    crop = crop_dem(terrain, (-1.0, 1.0), (-1.0, 1.0), 0.1 * k)
    cell = 0.1 * k
    f = (np.arange(64) + 0.5) / 64                                   # 64 x 64 samples a cell
    for i, j in ((0, 0), (3, 5), (crop.height_m.shape[0] - 1, 2)):
        x = crop.origin_xy_m[0] + (j + f[None, :]) * cell
        y = crop.origin_xy_m[1] + (i + f[:, None]) * cell
        mean = terrain.height_at(*np.broadcast_arrays(x, y)).mean()
        assert crop.height_m[i, j] == pytest.approx(mean, abs=2e-3)

import numpy as np
import pytest

from l3d_ros.backends import finalize, make_backend, to_gray01
from l3d_ros.backends.sgbm import disparity_range
from l3d_ros.config import StereoNodeConfig
from l3d_ros.geometry import StereoCalib
from l3d_sim.synthetic import plane_pair

CALIB = StereoCalib(400.0, 400.0, 159.5, 119.5, 0.5, 320, 240)
CFG = StereoNodeConfig(depth_min_m=2.0, depth_max_m=50.0)


def visible_in_both(depth, calib):
    """Pixels whose plane point is also inside the right image (u - d >= 0)."""
    u = np.arange(calib.width)[None, :]
    return np.isfinite(depth) & (u >= calib.fx * calib.baseline_m / depth)


@pytest.mark.parametrize('depth_m, tilt_deg', [(4.0, 0.0), (4.0, 30.0), (6.0, -25.0)])
def test_plane_depth_within_one_percent(depth_m, tilt_deg):
    left, right, truth = plane_pair(CALIB, depth_m, tilt_deg, seed=1)
    res = make_backend('sgbm', CFG).compute(to_gray01(left), to_gray01(right), CALIB)
    vis = visible_in_both(truth, CALIB)
    good = np.abs(res.depth_m - truth) < 0.01 * truth
    assert (good & vis).sum() / vis.sum() >= 0.95
    assert res.depth_m.dtype == np.float32 and res.confidence.dtype == np.float32
    assert (res.confidence[np.isnan(res.depth_m)] == 0).all()


def test_textureless_region_gets_no_depth():
    left, right, _ = plane_pair(CALIB, 4.0, seed=2)
    left[:, 160:] = 128
    right[:, 160:] = 128
    raw = make_backend('sgbm', CFG).compute(to_gray01(left), to_gray01(right), CALIB)
    # SGBM alone fills flat regions with some disparity; its confidence says it is not texture
    assert raw.confidence[:, 200:].max() < 0.05
    res = finalize(raw.depth_m, raw.confidence, CALIB, CFG.depth_min_m, CFG.depth_max_m,
                   CFG.confidence_min)
    assert np.isfinite(res.depth_m[:, 200:]).mean() < 0.01
    assert np.isfinite(res.depth_m[:, 60:150]).mean() > 0.9


def test_disparity_range_covers_the_depth_range():
    d_min, n = disparity_range(CALIB, 2.0, 50.0)
    assert n % 16 == 0
    assert d_min <= CALIB.fx * CALIB.baseline_m / 50.0
    assert d_min + n >= CALIB.fx * CALIB.baseline_m / 2.0


def test_size_mismatch_is_an_error():
    img = np.zeros((240, 320), np.float32)
    with pytest.raises(ValueError, match=r'left \(240, 320\), right \(240, 300\)'):
        make_backend('sgbm', CFG).compute(img, img[:, :300], CALIB)


@pytest.mark.parametrize('depth_m, tilt_deg', [(4.0, 30.0), (6.0, -25.0)])
def test_subpixel_refinement_removes_pixel_locking(depth_m, tilt_deg):
    # A tilted plane sweeps every disparity fraction; SGBM's cost interpolation locks them
    # towards whole pixels (errors up to ~0.4 px), the refinement (the node's default) does not.
    left, right, truth = plane_pair(CALIB, depth_m, tilt_deg, seed=1)
    errors = []
    for window in (0.0, 2.5):
        cfg = StereoNodeConfig(depth_min_m=2.0, depth_max_m=50.0, subpixel_window_px=window)
        res = make_backend('sgbm', cfg).compute(to_gray01(left), to_gray01(right), CALIB)
        ok = visible_in_both(truth, CALIB) & np.isfinite(res.disparity_px)
        errors.append(np.abs(res.disparity_px - CALIB.fx * CALIB.baseline_m / truth)[ok])
    raw, refined = errors
    assert np.median(refined) < 0.35 * np.median(raw)
    assert np.quantile(refined, 0.99) < 0.5 * np.quantile(raw, 0.99)

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


def test_unseen_by_right_flags_the_left_border_strip():
    from l3d_ros.backends.base import unseen_by_right
    disp = np.full((4, 40), 6.0, np.float32)
    disp[1, 2] = 1.0                     # a wrong small match inside the strip
    disp[2, :] = np.nan                  # unknown stays unknown (not flagged)
    disp[2, 20:] = 6.0
    disp[3, :10] = np.nan                # a strip with no disparity and ground beyond it
    unseen = unseen_by_right(disp)
    expected = np.zeros(disp.shape, bool)
    expected[[0, 1], :5] = True          # u + 1 < 6: the match u - 6 lies off the image
    np.testing.assert_array_equal(unseen, expected)
    wild = np.full((8, 64), 6.0, np.float32)
    wild[4, 30] = 500.0                  # one wild value: its own match is off the image
    flagged = unseen_by_right(wild)
    assert flagged[4, 30] and flagged[:, :5].all() and flagged[:, 5:].sum() == 1
    assert not unseen_by_right(np.full((3, 8), np.nan, np.float32)).any()
    assert not unseen_by_right(np.zeros((3, 8), np.float32)).any()
    with pytest.raises(ValueError, match=r'\(H, W\)'):
        unseen_by_right(np.zeros(5, np.float32))


def test_sgbm_leaves_the_strip_the_right_camera_cannot_see_empty():
    """A lunar pair at 20-26 m: the left border strip (u < true disparity, ~60 px) has no
    match in the right image; SGBM's padded search used to publish wrong matches there (24-60
    px off). Now nothing there is finite, and the ground both cameras see keeps its depth."""
    from test_onnx_student import _sim_pair
    from l3d_ros.geometry import depth_to_disparity
    left, right, frame = _sim_pair((20.0, 26.0), 5)
    calib = frame.calib
    cfg = StereoNodeConfig()
    res = make_backend('sgbm', cfg).compute(left, right, calib)
    true = depth_to_disparity(frame.depth_m, calib.fx, calib.baseline_m)
    u = np.arange(calib.width)[None, :]
    strip = np.isfinite(true) & (u < true - 2)          # off the right image by > 2 px
    assert strip.mean() > 0.08
    assert not np.isfinite(res.depth_m[strip]).any()
    seen = np.isfinite(true) & (u > true + 8)
    ok = np.isfinite(res.depth_m) & seen
    assert ok.sum() / seen.sum() > 0.6
    assert np.median(np.abs(res.depth_m[ok] / frame.depth_m[ok] - 1)) < 0.01

import cv2
from hypothesis import given, settings, strategies as st
import numpy as np
import pytest

from l3d_ros.geometry import (backproject, depth_sigma_m, depth_to_disparity,
                              disparity_to_depth, matrix_to_quaternion, nadir_pose, project,
                              quaternion_to_matrix, stereo_visible, StereoCalib)

CALIB = StereoCalib(fx=420.0, fy=410.0, cx=150.3, cy=95.7, baseline_m=0.8, width=300, height=200)


def test_disparity_depth_known_answer_and_invalids():
    disp = np.array([[42.0, 0.0, -1.0, np.nan]], np.float32)
    depth = disparity_to_depth(disp, fx=420.0, baseline_m=1.0)
    assert depth[0, 0] == pytest.approx(10.0)
    assert np.isnan(depth[0, 1:]).all()


@given(st.floats(0.5, 2000.0))
def test_depth_disparity_round_trip(z):
    d = depth_to_disparity(np.array([[z]], np.float32), CALIB.fx, CALIB.baseline_m)
    back = disparity_to_depth(d, CALIB.fx, CALIB.baseline_m)
    assert back[0, 0] == pytest.approx(z, rel=1e-5)


def test_backproject_matches_opencv_reproject():
    rng = np.random.default_rng(3)
    depth = rng.uniform(20, 150, CALIB.shape).astype(np.float32)
    ours = backproject(depth, CALIB)
    disp = depth_to_disparity(depth, CALIB.fx, CALIB.baseline_m)
    # OpenCV's Q for a rectified pair with fx = fy (fy differs here, so rescale rows after)
    Q = np.array([[1, 0, 0, -CALIB.cx], [0, 1, 0, -CALIB.cy], [0, 0, 0, CALIB.fx],
                  [0, 0, 1 / CALIB.baseline_m, 0]], np.float64)
    ref = cv2.reprojectImageTo3D(disp, Q)
    ref[..., 1] *= CALIB.fx / CALIB.fy
    np.testing.assert_allclose(ours, ref, rtol=1e-4, atol=1e-4)


@settings(deadline=None)
@given(st.floats(1.0, 300.0), st.integers(0, 199), st.integers(0, 299))
def test_project_inverts_backproject(z, v, u):
    depth = np.full(CALIB.shape, z, np.float32)
    pts = backproject(depth, CALIB)
    pu, pv = project(pts[v, u], CALIB)
    assert pu == pytest.approx(u, abs=1e-3) and pv == pytest.approx(v, abs=1e-3)


def test_depth_sigma_grows_with_square_of_depth():
    s = depth_sigma_m(np.array([10.0, 20.0], np.float32), 500.0, 1.0, 0.25)
    np.testing.assert_allclose(s, [0.05, 0.2], rtol=1e-6)


def test_nadir_pose_looks_down_and_is_a_rotation():
    R, t = nadir_pose(100.0)
    np.testing.assert_allclose(R @ [0, 0, 1], [0, 0, -1])
    assert np.linalg.det(R) == pytest.approx(1.0) and t[2] == 100.0


@given(st.lists(st.floats(-1, 1), min_size=4, max_size=4).filter(
    lambda q: np.linalg.norm(q) > 1e-3))
def test_quaternion_round_trip(q):
    R = quaternion_to_matrix(*q)
    np.testing.assert_allclose(R @ R.T, np.eye(3), atol=1e-9)
    np.testing.assert_allclose(quaternion_to_matrix(*matrix_to_quaternion(R)), R, atol=1e-9)


@pytest.mark.parametrize('field, value', [('fx', 0.0), ('baseline_m', -0.1), ('cy', np.nan),
                                          ('width', 0)])
def test_calib_rejects_bad_values(field, value):
    raw = dict(fx=1.0, fy=1.0, cx=0.0, cy=0.0, baseline_m=1.0, width=2, height=2)
    raw[field] = value
    with pytest.raises(ValueError, match=field):
        StereoCalib(**raw)


def test_calib_scaled_keeps_the_field_of_view():
    half = CALIB.scaled(150, 100)
    assert half.fx == pytest.approx(210.0)
    assert np.degrees(2 * np.arctan(150 / (2 * half.fx))) == pytest.approx(
        np.degrees(2 * np.arctan(300 / (2 * CALIB.fx))))


def test_stereo_visible_left_strip_is_one_disparity_wide():
    calib = StereoCalib(fx=100.0, fy=100.0, cx=63.5, cy=31.5, baseline_m=2.0, width=128,
                        height=64)
    depth = np.full((64, 128), 10.0, np.float32)                  # d = f B / Z = 20 px
    visible = stereo_visible(depth, calib)
    assert not visible[:, :20].any() and visible[:, 20:].all()
    depth[5, 50] = np.nan
    depth[6, 50] = -1.0
    visible = stereo_visible(depth, calib)
    assert not visible[5, 50] and not visible[6, 50] and visible[7, 50]


def test_stereo_visible_nearer_points_occlude_what_they_cover_in_the_right_image():
    calib = StereoCalib(fx=100.0, fy=100.0, cx=63.5, cy=31.5, baseline_m=2.0, width=128,
                        height=64)
    depth = np.full((64, 128), 10.0, np.float32)                  # ground: d = 20 px
    depth[:, 100:110] = 5.0                                       # a block: d = 40 px
    visible = stereo_visible(depth, calib)
    # the block lands on right-image columns 60-69, where the ground of columns 80-89 would
    assert np.flatnonzero(~visible[0]).tolist() == list(range(20)) + list(range(80, 90))
    assert visible[:, 100:110].all()
    # a foreshortened slope (two left pixels on one right pixel) is no occlusion
    slope = np.linspace(10.0, 9.0, 128, dtype=np.float32)[None].repeat(64, 0)
    assert stereo_visible(slope, calib)[:, 25:].all()


@pytest.mark.parametrize('kwargs, match', [({'depth_m': np.ones(5, np.float32)}, 'shape'),
                                           ({'occlusion_tol_px': -1.0}, 'occlusion_tol_px')])
def test_stereo_visible_rejects_bad_input(kwargs, match):
    args = {'depth_m': np.ones((4, 4), np.float32), 'calib': CALIB, **kwargs}
    with pytest.raises(ValueError, match=match):
        stereo_visible(**args)

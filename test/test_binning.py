"""Low-light binning (l3d_ros.binning): noise and texture estimates, the binning decision, the
binned geometry, and that a noise-limited pair is matched better binned."""
import cv2
import numpy as np
import pytest

from l3d_ros.backends.base import DepthResult
from l3d_ros.binning import (bin_image, binned_calib, choose_binning, noise_sigma,
                             texture_ratio, unbin)
from l3d_ros.config import LowLightConfig, StereoNodeConfig
from l3d_ros.dataset import StereoPair
from l3d_ros.geometry import StereoCalib
from l3d_ros.infer import DepthSource, process_pair
from l3d_ros.pipeline import StereoPipeline
from l3d_sim.synthetic import plane_pair

CALIB = StereoCalib(300.0, 300.0, 127.5, 127.5, 2.0, 256, 256)
DEPTH_M = 30.0


def noisy(img: np.ndarray, contrast: float, rng: np.random.Generator) -> np.ndarray:
    """`img`'s texture scaled by `contrast` around mid grey, plus 1 DN of sensor noise."""
    f = img.astype(np.float32)
    out = 128 + contrast * (f - f.mean()) + rng.standard_normal(f.shape)
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def plane(contrast: float, seed: int = 3):
    """A plane at DEPTH_M with coarse texture (3 px texels) at `contrast`, 1 DN noise."""
    left, right, depth = plane_pair(CALIB, DEPTH_M, seed=seed, texel_m=3 * DEPTH_M / CALIB.fx)
    rng = np.random.default_rng(seed)
    return noisy(left, contrast, rng), noisy(right, contrast, rng), depth


@pytest.mark.parametrize('sigma_dn', [0.5, 1.0, 3.0])
def test_noise_estimate_recovers_the_sensor_noise_under_texture(sigma_dn):
    rng = np.random.default_rng(1)
    left, _, _ = plane_pair(CALIB, DEPTH_M, seed=1, texel_m=4 * DEPTH_M / CALIB.fx)
    signal = 0.5 + 0.1 * (left.astype(np.float32) / 255 - 0.5)
    img = signal + rng.standard_normal(signal.shape).astype(np.float32) * sigma_dn / 255
    assert noise_sigma(img) * 255 == pytest.approx(sigma_dn, rel=0.15)


def test_texture_ratio_is_zero_without_noise_and_large_on_flat_ground():
    flat = np.full((64, 64), 0.5, np.float32)
    assert not texture_ratio(flat, 0.0).any()
    assert (texture_ratio(flat, 1 / 255) > 100).all()


def test_bin_and_unbin_keep_the_input_pixels_with_odd_sizes():
    img = np.arange(7 * 9, dtype=np.float32).reshape(7, 9)
    b = bin_image(img, 2)
    assert b.shape == (3, 4)
    assert b[0, 0] == pytest.approx(np.mean([0, 1, 9, 10]))
    back = unbin(b, 2, img.shape, np.float32(np.nan))
    assert back.shape == img.shape
    assert back[1, 1] == b[0, 0] and back[5, 7] == b[2, 3]
    assert np.isnan(back[6]).all() and np.isnan(back[:, 8]).all()
    with pytest.raises(ValueError, match='factor=0'):
        bin_image(img, 0)


def test_binned_calibration_projects_a_point_to_its_block():
    point = np.array([3.1, -2.4, 41.0])
    b = binned_calib(CALIB, 2)
    u = CALIB.fx * point[0] / point[2] + CALIB.cx
    v = CALIB.fy * point[1] / point[2] + CALIB.cy
    ub = b.fx * point[0] / point[2] + b.cx
    vb = b.fy * point[1] / point[2] + b.cy
    assert ub == pytest.approx((u + 0.5) / 2 - 0.5) and vb == pytest.approx((v + 0.5) / 2 - 0.5)
    assert (b.width, b.height, b.baseline_m) == (128, 128, CALIB.baseline_m)


def test_decision_bins_only_noise_limited_frames_with_signal():
    cfg = LowLightConfig()
    weak, _, _ = plane(0.08)                       # rho ~2.8: noise-limited
    strong, _, _ = plane(1.0)                      # sunlit-like texture
    assert choose_binning(weak / 255.0, cfg) == 2
    assert choose_binning(strong / 255.0, cfg) == 1
    rng = np.random.default_rng(2)
    black = np.clip(rng.standard_normal((256, 256)) / 255 + 0.01, 0, 1).astype(np.float32)
    assert choose_binning(black, cfg) == 1         # noise alone: nothing to gain
    half = strong / 255.0
    half[:, 128:] = black[:, 128:]                 # sunlit half + black shadow
    assert choose_binning(half, cfg) == 1
    clean, _, _ = plane_pair(CALIB, DEPTH_M, seed=3, texel_m=3 * DEPTH_M / CALIB.fx)
    assert choose_binning(0.5 + 0.08 * (clean / 255.0 - 0.5), cfg) == 1   # noiseless
    assert choose_binning(weak / 255.0, LowLightConfig(binning=1)) == 1
    assert choose_binning(weak / 255.0, LowLightConfig(texture_ratio_min=0.0)) == 1


def test_noise_cap_keeps_fine_sunlit_texture_at_full_resolution():
    """Texture at the pixel scale reads as noise to a single-image estimate (6 DN here for a
    1 DN camera, under coarser texture of 20 DN); capped at the camera's noise, such a frame
    is not binned."""
    rng = np.random.default_rng(4)
    coarse = cv2.GaussianBlur(rng.standard_normal((256, 256)).astype(np.float32), (0, 0), 2.0)
    fine = rng.standard_normal((256, 256))
    img = (128 + 20 * coarse / coarse.std() + 6 * fine + rng.standard_normal((256, 256))) / 255
    img = img.astype(np.float32)
    assert noise_sigma(img) * 255 > 5
    assert choose_binning(img, LowLightConfig()) == 1
    assert choose_binning(img, LowLightConfig(image_noise_max=0.5)) == 2


def test_config_rejects_bad_low_light_values():
    with pytest.raises(ValueError, match='low_light.binning'):
        LowLightConfig(binning=0)
    with pytest.raises(ValueError, match='low_light.texture_ratio_min'):
        LowLightConfig(texture_ratio_min=float('nan'))
    with pytest.raises(ValueError, match='low_light.image_noise_max'):
        LowLightConfig(image_noise_max=0.0)
    with pytest.raises(ValueError, match='low_light.certify'):
        LowLightConfig(certify='no')


def depth_error(depth: np.ndarray, truth: np.ndarray) -> float:
    return float(np.nanmedian(np.abs(depth - truth)))


def test_noise_limited_pair_is_matched_better_binned_on_the_input_pixels():
    left, right, truth = plane(0.08)
    runs = {}
    for factor in (2, 1):
        cfg = StereoNodeConfig(backend='sgbm', low_light=LowLightConfig(binning=factor))
        out = StereoPipeline(cfg).process(left, right, CALIB)
        assert out.binning == factor
        assert out.result.depth_m.shape == truth.shape
        assert out.points_m.shape == truth.shape + (3,)
        assert out.hazard.pixel_hazard.shape == truth.shape
        runs[factor] = depth_error(out.result.depth_m, truth)
    assert runs[2] < 0.7 * runs[1], runs
    assert np.isfinite(runs[2])


def test_infer_bins_as_the_node_does_and_never_bins_the_oracle():
    left, right, truth = plane(0.08)
    pair = StereoPair('p', left, right, CALIB, depth_m=truth)
    cfg = StereoNodeConfig(backend='sgbm')
    node = StereoPipeline(cfg).process(left, right, CALIB)
    assert node.binning == 2
    result, frame, _, _ = process_pair(pair, DepthSource('sgbm', cfg))
    np.testing.assert_array_equal(result.depth_m, node.result.depth_m)
    np.testing.assert_array_equal(frame.pixel_hazard, node.hazard.pixel_hazard)
    oracle, _, _, _ = process_pair(pair, DepthSource('oracle', cfg))
    np.testing.assert_array_equal(oracle.depth_m, truth)


class ShapeRecorder:
    """A primary backend that records the image shapes it is given and answers a plane."""

    name, sha256 = 'student', 'f' * 64

    def __init__(self, depth_m: float = DEPTH_M):
        self.shapes, self.depth_m = [], depth_m

    def compute(self, left, right, calib):
        self.shapes.append(left.shape)
        depth = np.full(calib.shape, self.depth_m, np.float32)
        disparity = np.full(calib.shape, calib.fx * calib.baseline_m / self.depth_m, np.float32)
        return DepthResult(depth, np.ones(calib.shape, np.float32), disparity)


@pytest.mark.parametrize('route', ['sgbm', 'primary'])
def test_binned_pairs_go_to_the_configured_low_light_backend(route):
    left, right, _ = plane(0.08)
    cfg = StereoNodeConfig(backend='sgbm', low_light=LowLightConfig(backend=route))
    pipe = StereoPipeline(cfg)
    pipe.primary = recorder = ShapeRecorder()
    binned = pipe.process(left, right, CALIB)
    lit = pipe.process(*plane(1.0)[:2], CALIB)
    assert binned.binning == 2 and lit.binning == 1
    assert lit.backend == 'student'
    if route == 'sgbm':
        assert binned.backend == 'sgbm' and recorder.shapes == [(256, 256)]
    else:
        assert binned.backend == 'student' and recorder.shapes == [(128, 128), (256, 256)]
        np.testing.assert_allclose(binned.result.depth_m, DEPTH_M)
        np.testing.assert_allclose(binned.result.disparity_px,
                                   CALIB.fx * CALIB.baseline_m / DEPTH_M, rtol=1e-6)
    with pytest.raises(ValueError, match='low_light.backend'):
        LowLightConfig(backend='student')


def test_a_binned_frame_certifies_no_ground_unless_configured_to():
    """A level plane 12 m below, answered exactly by the backend, seen in a noise-limited pair:
    certified with low_light.certify, otherwise only unproven (the hazard it would show and
    the unknown stay as they are)."""
    left, right, _ = plane(0.08)
    frames = {}
    for certify in (True, False):
        cfg = StereoNodeConfig(backend='sgbm', depth_min_m=5.0, low_light=LowLightConfig(
            backend='primary', certify=certify))
        pipe = StereoPipeline(cfg)
        pipe.primary = ShapeRecorder(depth_m=12.0)
        frames[certify] = pipe.process(left, right, CALIB).hazard
        assert pipe.primary.shapes == [(128, 128)]                # matched binned
    lit, dark = frames[True], frames[False]
    assert (lit.occupancy[lit.occupancy >= 0] <= 49).mean() > 0.5 and lit.site is not None
    assert (lit.pixel_hazard == 0).any()
    was_safe = (lit.occupancy >= 0) & (lit.occupancy <= 49)
    assert ((dark.occupancy[was_safe] >= 50) & (dark.occupancy[was_safe] <= 99)).all()
    np.testing.assert_array_equal(dark.occupancy[~was_safe], lit.occupancy[~was_safe])
    assert dark.site is None and not (dark.pixel_hazard == 0).any()
    np.testing.assert_array_equal(dark.pixel_hazard == 255, lit.pixel_hazard == 255)

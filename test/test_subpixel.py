"""Sub-pixel disparity refinement: removes pixel locking, keeps NaNs and the integer match;
match verification by window ZNCC."""
import numpy as np
import pytest

from l3d_ros.backends.subpixel import (is_8bit, match_peak, match_zncc, noise_sigma,
                                       refine_disparity, refine_in_passes, TEXTURE_MIN,
                                       TEXTURE_MIN_FLOOR, texture_min_of, TEXTURE_NOISE_REF)


def textured_pair(a, b=0.0, c=0.0, shape=(96, 160), seed=0, wavelengths_px=(4.0, 24.0)):
    """A band-limited texture f seen with the planar disparity d = a + b x + c y (left pixels).

    The left pixel x shows f(x) and matches the right pixel u = x - d(x), so the right image
    at u shows f(x) with x = (u + a + c y) / (1 - b). Both images sample the continuous
    texture exactly; its waves have wavelengths_px. Returns (left, right, d).
    """
    rng = np.random.default_rng(seed)
    h, w = shape
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    d = a + b * x + c * y

    def texture(u, v):
        out = np.zeros(shape)
        for _ in range(24):
            k = 2 * np.pi / rng.uniform(*wavelengths_px)
            a = rng.uniform(0, 2 * np.pi)
            out += np.cos(k * (np.cos(a) * u + np.sin(a) * v) + rng.uniform(0, 2 * np.pi))
        return out

    state = rng.bit_generator.state
    left = texture(x, y)
    rng.bit_generator.state = state               # the same waves for the right image
    right = texture((x + a + c * y) / (1 - b), y)
    scale = 0.5 / np.abs(left).max()
    return ((0.5 + scale * left).astype(np.float32), (0.5 + scale * right).astype(np.float32),
            d.astype(np.float32))


def inner(a, border=12):
    return a[border:-border, border:-border]


def visible(disparity):
    """The matcher's output: NaN where the match would fall left of the right image."""
    cols = np.arange(disparity.shape[1])[None, :]
    return np.where(cols - disparity >= 2, disparity, np.nan).astype(np.float32)


def test_whole_pixel_disparity_becomes_the_true_fraction():
    left, right, truth = textured_pair(10.3)
    locked = visible(np.round(truth))              # what a pixel-locked matcher reports
    refined = refine_disparity(left, right, locked)
    assert np.nanmax(np.abs(inner(locked - truth))) == pytest.approx(0.3, abs=1e-5)
    assert np.nanmax(np.abs(inner(refined - truth))) < 0.03


def test_slanted_ground_loses_its_sawtooth():
    # A plane seen obliquely: the fraction sweeps 0..1 across the image, so rounding draws
    # terraces of +-0.5 px; refinement must bring every fraction back, not one in particular.
    left, right, truth = textured_pair(8.0, 0.02, 0.01)
    locked = visible(np.round(truth))
    refined = refine_disparity(left, right, locked)
    err = np.abs(inner(refined - truth))
    assert np.nanmax(np.abs(inner(locked - truth))) > 0.45
    assert np.nanmedian(err) < 0.02 and np.nanmax(err) < 0.08


def test_nan_stays_nan_and_the_shift_is_bounded():
    left, right, truth = textured_pair(6.0)
    start = truth + 3.0                            # a wrong integer match
    start[40:50, 60:80] = np.nan
    refined = refine_disparity(left, right, start, max_shift_px=0.5)
    assert np.isnan(refined[40:50, 60:80]).all()
    ok = np.isfinite(start)
    assert np.isfinite(refined[ok]).all()
    assert np.abs(refined[ok] - start[ok]).max() <= 0.5 + 1e-5


@pytest.mark.parametrize('seed', [0, 1, 2])
def test_coarse_step_converges_from_a_smooth_error_beyond_the_linear_range(seed):
    # Fine texture (waves of 3-8 px) and a start 0.5-0.7 px off, smooth as a learned matcher's
    # error: full-resolution steps converge only part of the way; a first step on blurred
    # images, where brightness stays linear over a wider shift, gets much closer.
    left, right, truth = textured_pair(10.0, 0.01, 0.005, seed=seed, wavelengths_px=(3.0, 8.0))
    y, x = np.mgrid[0:truth.shape[0], 0:truth.shape[1]]
    start = visible(truth - 0.6 - 0.1 * np.sin(x / 25.0) * np.cos(y / 19.0))
    plain = np.nanmedian(np.abs(inner(refine_disparity(left, right, start) - truth)))
    coarse = np.nanmedian(np.abs(inner(
        refine_disparity(left, right, start, coarse_sigma_px=2.0) - truth)))
    assert plain > 0.03 and coarse < 0.7 * plain and coarse < 0.04


def test_frame_shift_removes_a_frame_wide_bias_and_keeps_the_per_pixel_limit():
    left, right, truth = textured_pair(10.0, 0.01, 0.005)
    start = visible(truth - 1.4)                   # the whole frame 1.4 px low
    start[30:50, 60:90] += 3.0                     # and a patch matched 3 px off
    clamped = refine_disparity(left, right, start, coarse_sigma_px=2.0)
    assert np.nanmedian(np.abs(inner(clamped - truth))) > 0.6     # 0.75 px cannot reach it
    shifted = refine_disparity(left, right, start, coarse_sigma_px=2.0, frame_shift_max_px=2.0)
    assert np.nanmedian(np.abs(inner(shifted - truth))) < 0.03
    # the patch is not dragged to the truth: it keeps within 0.75 px of the shifted field
    assert np.nanmax(np.abs(shifted - start - 1.4)[30:50, 60:90]) < 0.75 + 0.02
    assert np.nanmin(np.abs(shifted - truth)[30:50, 60:90]) > 1.0
    assert np.isnan(shifted[np.isnan(start)]).all()


def test_frame_shift_is_bounded_moves_flat_ground_with_the_frame_and_needs_many_pixels():
    left, right, truth = textured_pair(10.0, 0.01, 0.005)
    start = visible(truth - 0.7)
    start[30:50, 60:90] -= 3.0                     # a patch matched 3 px further off
    out = refine_disparity(left, right, start, coarse_sigma_px=2.0, frame_shift_max_px=0.1)
    assert np.nanmax(np.abs(out - start)) <= 0.1 + 0.75 + 1e-5
    # no texture (x < 70 in both views): the input, moved by the frame-wide shift
    flat_l, flat_r = left.copy(), right.copy()
    flat_l[:, :70] = flat_r[:, :70] = 0.2
    start = (truth - 1.4).astype(np.float32)
    out = refine_disparity(flat_l, flat_r, start, coarse_sigma_px=2.0, frame_shift_max_px=2.0)
    assert np.nanmedian(np.abs(out - truth)[20:80, 110:150]) < 0.03
    moved = (out - start)[20:80, 5:40]
    assert np.ptp(moved) < 1e-5 and abs(moved.mean() - 1.4) < 0.05
    # a few scattered valid pixels: no frame shift from their one-sample windows
    sparse = np.full(truth.shape, np.nan, np.float32)
    rng = np.random.default_rng(5)
    rows, cols = rng.integers(12, 84, 9), rng.integers(30, 148, 9)
    sparse[rows, cols] = truth[rows, cols] - 1.4
    out = refine_disparity(left, right, sparse, coarse_sigma_px=2.0, frame_shift_max_px=2.0)
    assert np.nanmax(np.abs(out - sparse)) <= 0.75 + 1e-5


def test_textureless_window_keeps_the_input():
    flat = np.full((32, 48), 0.4, np.float32)
    disp = np.full(flat.shape, 7.25, np.float32)
    np.testing.assert_array_equal(refine_disparity(flat, flat, disp), disp)


def test_bad_input_names_the_value():
    img = np.zeros((8, 8), np.float32)
    with pytest.raises(ValueError, match=r'disparity \(8, 9\)'):
        refine_disparity(img, img, np.zeros((8, 9), np.float32))
    with pytest.raises(ValueError, match='window_sigma_px=0'):
        refine_disparity(img, img, img, window_sigma_px=0)
    with pytest.raises(ValueError, match='iterations=-1'):
        refine_disparity(img, img, img, iterations=-1)
    with pytest.raises(ValueError, match='coarse_sigma_px=-1'):
        refine_disparity(img, img, img, coarse_sigma_px=-1)
    with pytest.raises(ValueError,
                       match='frame_shift_max_px=2.0.*without coarse_sigma_px'):
        refine_disparity(img, img, img, frame_shift_max_px=2.0)


def test_zncc_verifies_the_true_disparity_and_rejects_a_wrong_one():
    left, right, d = textured_pair(9.3, 0.01, -0.004)
    true = inner(match_zncc(left, right, visible(d)), 24)         # windows inside the image
    assert np.nanmin(true) > 0.99 and np.isfinite(true).mean() > 0.99
    for off in (3.0, 6.0, 11.0):                                    # wrong by a few pixels
        wrong = inner(match_zncc(left, right, visible(d + off)), 24)
        assert np.nanmedian(wrong) < 0.3 and np.nanmax(wrong) < 0.9
    nan = visible(d)
    nan[40:50, 60:80] = np.nan
    assert np.isnan(match_zncc(left, right, nan)[40:50, 60:80]).all()


def test_zncc_is_nan_without_texture_and_names_bad_input():
    flat = np.full((32, 48), 0.4, np.float32)
    noise = flat + np.random.default_rng(0).normal(0, 1 / 255, flat.shape).astype(np.float32)
    assert np.isnan(match_zncc(flat, flat, np.full(flat.shape, 3.0, np.float32))).all()
    assert np.isnan(match_zncc(noise, noise, np.full(flat.shape, 3.0, np.float32))).all()
    with pytest.raises(ValueError, match=r'disparity \(32, 47\)'):
        match_zncc(flat, flat, flat[:, 1:])
    with pytest.raises(ValueError, match='window_sigma_px=-1'):
        match_zncc(flat, flat, flat, window_sigma_px=-1)


def test_zncc_texture_threshold_follows_the_cameras_noise():
    """Faint texture read by a quiet camera (12-bit levels in a 16-bit image: 1/16 of the grey
    scale) has a variance far below an 8-bit camera's noise. The threshold is 3x the pair's own
    noise variance: that texture verifies as at full scale, noise alone still does not, and an
    8-bit camera of 1 DN or more keeps TEXTURE_MIN."""
    left, right, d = textured_pair(9.3, 0.01, -0.004)
    rng = np.random.default_rng(1)

    def camera(img, contrast, levels, full_scale, sigma_dn):
        dn = np.round((0.5 + contrast * (img - 0.5)) * levels + rng.normal(0, sigma_dn, img.shape))
        return (np.clip(dn, 0, levels) / full_scale).astype(np.float32)

    faint = [camera(img, 0.06, 4095, 65535, 1.0) for img in (left, right)]
    assert TEXTURE_MIN_FLOOR * 0.03 ** 2 <= texture_min_of(*faint) < 1e-3 * TEXTURE_MIN
    fixed = inner(match_zncc(*faint, visible(d), texture_min=TEXTURE_MIN), 24)
    assert np.isfinite(fixed).mean() < 0.01                   # the 8-bit threshold: all flat
    zncc = inner(match_zncc(*faint, visible(d)), 24)
    assert np.isfinite(zncc).mean() > 0.99 and np.nanmedian(zncc) > 0.9
    flat = np.full((96, 160), 0.5, np.float32)
    noise = [camera(flat, 1.0, 4095, 65535, 1.0) for _ in range(2)]
    assert np.isnan(match_zncc(*noise, np.full(flat.shape, 3.0, np.float32))).mean() > 0.99
    eight_bit = [camera(img, 0.5, 255, 255, 1.0) for img in (left, right)]
    assert texture_min_of(*eight_bit) == TEXTURE_MIN
    dark = [camera(img, 0.02, 2, 255, 1.0) for img in (left, right)]    # clipped at black
    assert noise_sigma(dark[0]) < TEXTURE_NOISE_REF and texture_min_of(*dark) == TEXTURE_MIN


def test_8_bit_images_are_told_from_deeper_ones_by_their_grey_levels():
    rng = np.random.default_rng(2)
    dn8 = rng.integers(0, 256, (64, 80))
    assert is_8bit(dn8 / np.float32(255)) and is_8bit(np.zeros((4, 4), np.float32))
    assert is_8bit((dn8 * 257).astype(np.uint16) / np.float32(65535))     # 8 bit in 16
    assert not is_8bit(rng.integers(0, 4096, (64, 80)) / np.float32(65535))  # 12 bit in 16
    assert not is_8bit(rng.random((64, 80), np.float32))


def test_match_peak_flags_a_disparity_the_images_do_not_support():
    """A patch whose disparity is 1.5 px off still correlates (ZNCC well above 0.5 on this
    smooth texture), but better 1 px towards the truth: off its peak; the truth is on it."""
    left, right, d = textured_pair(9.3, 0.01, -0.004)
    true = visible(d)
    zncc, flagged = match_peak(left, right, true)
    np.testing.assert_array_equal(zncc, match_zncc(left, right, true))
    assert inner(flagged, 24).mean() < 0.02
    wrong = true.copy()
    wrong[30:70, 50:110] += 1.5
    zncc = match_zncc(left, right, wrong)
    assert np.nanmedian(zncc[35:65, 55:105]) > 0.5                 # ZNCC alone would pass it
    flagged = match_peak(left, right, wrong)[1]
    assert flagged[35:65, 55:105].mean() > 0.9
    nan = true.copy()
    nan[40:50, 60:80] = np.nan
    assert not match_peak(left, right, nan)[1][40:50, 60:80].any()


def test_refine_in_passes_is_chained_refine_disparity_and_flags_the_unconverged():
    """Each pass starts from the last one's result, as separate refine_disparity calls do; a
    start 3 px off moves by the last pass's whole reach: unconverged, one 0.5 px off is not."""
    left, right, truth = textured_pair(12.0, shape=(96, 240))
    start = truth + np.float32(0.5)
    start[:, :120] += np.float32(2.5)
    start[40, 150] = np.nan
    refined, unconverged = refine_in_passes(left, right, start, 2.5, (2, 1), 0.75)
    chained = refine_disparity(left, right, refine_disparity(left, right, start),
                               iterations=1)
    np.testing.assert_array_equal(np.isnan(refined), np.isnan(start))
    np.testing.assert_allclose(refined, chained, atol=1e-5, equal_nan=True)
    assert not unconverged[12:-12, 140:-12].any()
    assert np.nanmedian(np.abs(refined - truth)[12:-12, 140:-12]) < 0.05
    assert unconverged[12:-12, 30:100].mean() > 0.9
    assert not unconverged[40, 150]
    with pytest.raises(ValueError, match=r'passes=\(\)'):
        refine_in_passes(left, right, start, passes=())

"""Student family: shapes, positivity, counts, the correlation layer against a naive loop."""
from dataclasses import replace

from hypothesis import given, settings, strategies as st
import pytest
import torch

from l3d_train.students import count_flops, count_params, FAMILY, FLIGHT, StereoStudent
from l3d_train.students import StudentSpec
from l3d_train.students.model import correlation_last, hole_fill, local_soft_argmax

TINY = StudentSpec(name='tiny', enc_dim=32, enc_depth=1, enc_heads=2, dec_dim=32, dec_depth=1,
                   dec_heads=2, patch_size=8, input_size=(32, 48), max_disp_px=8, stem_dim=4,
                   head_dim=8)


@pytest.mark.parametrize('spec', [TINY, replace(TINY, encoder='cnn'), replace(TINY, corr=False)])
def test_outputs_at_full_input_resolution(spec):
    torch.manual_seed(0)
    model = StereoStudent(spec).eval()
    left, right = torch.rand(2, 1, 32, 48), torch.rand(2, 1, 32, 48)
    with torch.no_grad():
        res = model(left, right)
    assert res['disp'].shape == res['conf'].shape == (2, 1, 32, 48)
    assert (res['disp'] > 0).all() and ((res['conf'] > 0) & (res['conf'] < 1)).all()
    assert res['enc'].shape == (2, 4 * 6, 32) and len(res['dec']) == 1


def test_wrong_input_size_is_refused():
    with pytest.raises(ValueError, match='input_size'):
        StereoStudent(TINY)(torch.rand(1, 1, 40, 48), torch.rand(1, 1, 40, 48))


@pytest.mark.parametrize('stride', [1, 2])
def test_correlation_matches_naive_loop(stride):
    torch.manual_seed(1)
    fl, fr = torch.randn(1, 3, 4, 10), torch.randn(1, 3, 4, 10)
    corr = correlation_last(fl, fr, 4, stride).permute(0, 3, 1, 2)
    assert corr.shape == (1, 4, 4 // stride, 10 // stride)
    for s in range(4):
        for j, x in enumerate(range(0, 10, stride)):
            rows = slice(None, None, stride)
            want = ((fl[0, :, rows, x] * fr[0, :, rows, x - s]).sum(0) if x >= s
                    else torch.zeros(4 // stride))
            torch.testing.assert_close(corr[0, s, :, j], want)


@pytest.mark.parametrize('shape,n_disp,stride', [
    ((2, 5, 7, 11), 6, 2), ((1, 4, 3, 9), 9, 1), ((1, 2, 8, 16), 16, 2)])
def test_correlation_of_odd_sizes_and_wide_ranges_matches_the_definition(shape, n_disp, stride):
    """The matrix-product layout (`correlation_last`) against the definition, sum over C of
    fL(y, x) fR(y, x - s), zeros left of the image, for widths the stride does not divide and a
    range as wide as the image."""
    torch.manual_seed(3)
    fl, fr = torch.randn(shape), torch.randn(shape)
    last = correlation_last(fl, fr, n_disp, stride)
    B, C, H, W = shape
    want = torch.zeros(B, len(range(0, H, stride)), len(range(0, W, stride)), n_disp)
    for i, y in enumerate(range(0, H, stride)):
        for j, x in enumerate(range(0, W, stride)):
            for s in range(min(n_disp, x + 1)):
                want[:, i, j, s] = (fl[:, :, y, x] * fr[:, :, y, x - s]).sum(1)
    torch.testing.assert_close(last, want, rtol=1e-5, atol=1e-5)


def test_local_soft_argmax_along_the_last_axis_equals_along_the_first():
    torch.manual_seed(4)
    cost = 5 * torch.randn(2, 12, 3, 4)
    d1, p1 = local_soft_argmax(cost)
    d2, p2 = local_soft_argmax(cost.permute(0, 2, 3, 1), dim=-1)
    torch.testing.assert_close(d2.permute(0, 3, 1, 2), d1)
    torch.testing.assert_close(p2.permute(0, 3, 1, 2), p1)


def test_correlation_of_a_shifted_image_peaks_at_the_shift():
    torch.manual_seed(2)
    f = torch.randn(1, 8, 6, 40)
    f = f / f.norm(dim=1, keepdim=True)
    right = torch.roll(f, -5, dims=-1)                 # right(x) = left(x + 5): disparity 5
    corr = correlation_last(f, right, 12, 2).permute(0, 3, 1, 2)
    assert (corr[0, :, :, 4:].argmax(0) == 5).all()    # x >= 8: the shift is inside the image


@given(st.floats(0.0, 1.0), st.integers(2, 12))
@settings(max_examples=30, deadline=None)
def test_local_soft_argmax_recovers_a_subpixel_peak(frac, centre):
    # a parabola of logits around centre + frac plus a far second mode almost as strong: the
    # local soft-argmax lands within 0.1 px of the peak, a global soft-argmax would not
    shifts = torch.arange(16, dtype=torch.float64)
    peak = centre + frac
    cost = -1.0 * (shifts - peak) ** 2
    cost[15 if centre < 8 else 0] = -0.5
    d, prob = local_soft_argmax(cost.view(1, 16, 1, 1), radius=2)
    assert abs(float(d) - peak) < 0.1
    global_d = float((prob[0, :, 0, 0] * shifts).sum())
    assert abs(global_d - peak) > 0.5
    torch.testing.assert_close(prob[0, :, 0, 0], torch.softmax(cost, 0))


def test_counts_and_flight_budget():
    model = StereoStudent(FLIGHT)
    assert count_params(model) == sum(p.numel() for p in model.parameters())
    assert count_params(model) <= 14_000_000               # issue target: <= 1/50 of 688 M
    flops = count_flops(model)
    # the patch embedding conv alone: 2 views x N tokens x 2 * (3 p^2) * C FLOPs
    h, w = FLIGHT.input_size
    p = FLIGHT.patch_size
    patch_embed = 2 * (h // p) * (w // p) * 2 * 3 * p * p * FLIGHT.enc_dim
    assert patch_embed < flops < 5e9


def test_family_specs_are_valid_and_distinct():
    assert len({(s.encoder, s.enc_dim, s.enc_depth, s.dec_dim, s.dec_depth, s.corr)
                for s in FAMILY.values()}) == len(FAMILY)
    with pytest.raises(ValueError, match='encoder'):
        StudentSpec(encoder='resnet')
    with pytest.raises(ValueError, match='head dimension'):
        StudentSpec(dec_dim=64, dec_heads=3)


def test_hole_fill_takes_the_nearest_matched_disparity():
    disp = torch.zeros(1, 1, 32, 64)
    disp[..., :32], disp[..., 32:] = 4.0, 10.0
    weight = torch.ones_like(disp)
    weight[..., 40:48] = 0.0                        # a shadow in the right half
    fill = hole_fill(disp * weight, weight)
    # matched pixels keep their value (5 %: the coarser scales bleed in with weight 1/10)
    torch.testing.assert_close(fill[..., 4:20], torch.full((1, 1, 32, 16), 4.0), rtol=0.05,
                               atol=0)
    assert (fill[..., 42:46] > 9.0).all()           # from its lit neighbours, not the far half
    # only ratios of weights matter
    torch.testing.assert_close(hole_fill(disp, weight * 0.5), hole_fill(disp, weight),
                               rtol=1e-3, atol=1e-3)

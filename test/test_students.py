"""Student family: shapes, positivity, counts, the correlation layer against a naive loop."""
from dataclasses import replace

import pytest
import torch

from l3d_train.students import count_flops, count_params, FAMILY, FLIGHT, StereoStudent
from l3d_train.students import StudentSpec
from l3d_train.students.model import correlation

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


def test_correlation_matches_naive_loop():
    torch.manual_seed(1)
    fl, fr = torch.randn(1, 3, 4, 9), torch.randn(1, 3, 4, 9)
    corr = correlation(fl, fr, 4)
    for s in range(4):
        for x in range(9):
            want = (fl[0, :, :, x] * fr[0, :, :, x - s]).mean(0) if x >= s else torch.zeros(4)
            torch.testing.assert_close(corr[0, s, :, x], want)


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

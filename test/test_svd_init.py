"""SVD initialisation: exact at full width, Eckart-Young optimal at reduced width."""
from hypothesis import given, settings, strategies as st
import numpy as np
import pytest
import torch

from l3d_train.mast3r.blocks import RoPE2D
from l3d_train.mast3r.decoder import Decoder
from l3d_train.mast3r.encoder import patch_positions
from l3d_train.svd_init import (_reader_writer_columns, low_rank_factors, residual_basis,
                                svd_init_decoder)


def _teacher(seed=0, enc=32, dim=48, depth=3, heads=3):
    torch.manual_seed(seed)
    dec = Decoder(enc, dim, depth, heads, 4.0, RoPE2D(100.0))
    for p in dec.parameters():                     # non-trivial norms and biases too
        p.data.normal_(0.0, 0.3)
    return dec


def test_full_width_reproduces_teacher_exactly():
    teacher = _teacher()
    student = Decoder(32, 48, 3, 3, 4.0, RoPE2D(100.0))
    svd_init_decoder(teacher, student)
    torch.manual_seed(1)
    f1, f2 = torch.randn(2, 20, 32), torch.randn(2, 20, 32)
    pos = patch_positions(2, 4, 5, 'cpu')
    with torch.no_grad():
        out_t, out_s = teacher(f1, pos, f2, pos), student(f1, pos, f2, pos)
    for a, b in zip(out_t[0] + out_t[1], out_s[0] + out_s[1]):
        torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-5)


@settings(max_examples=20, deadline=None)
@given(m=st.integers(2, 12), n=st.integers(2, 12), k=st.integers(1, 12), seed=st.integers(0, 99))
def test_low_rank_error_is_the_discarded_energy(m, n, k, seed):
    M = torch.from_numpy(np.random.default_rng(seed).normal(size=(m, n)))
    k = min(k, m, n)
    L, R = low_rank_factors(M, k)
    s = torch.linalg.svdvals(M)
    err = ((M - L @ R) ** 2).sum()
    torch.testing.assert_close(err, (s[k:] ** 2).sum(), rtol=1e-9, atol=1e-9)
    assert L.shape == (m, k) and R.shape == (k, n)


def test_residual_basis_error_is_optimal_rank_k():
    teacher = _teacher()
    cols = _reader_writer_columns(teacher, [0, 2])
    P, s = residual_basis(cols, 24)
    M = torch.cat([c.reshape(c.shape[0], -1) for c in cols], dim=1)
    err = ((M - P @ (P.T @ M)) ** 2).sum()
    torch.testing.assert_close(err, (s[24:] ** 2).sum(), rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(P.T @ P, torch.eye(24, dtype=P.dtype))


def test_reduced_width_head_circuits_are_optimal_per_head():
    """Each student head's OV circuit is the best rank-hd_s approximation of the teacher head's
    circuit in the projected stream - head by head, not rows of one SVD of the fused qkv."""
    teacher, nh, d_s = _teacher(), 3, 24
    student = Decoder(32, d_s, 2, nh, 4.0, RoPE2D(100.0))
    info = svd_init_decoder(teacher, student)
    assert info['layer_map'] == [0, 2]
    P, _ = residual_basis(_reader_writer_columns(teacher, [0, 2]), d_s)
    t, s = teacher.dec_blocks[2], student.dec_blocks[1]       # teacher layer 2 -> student 1
    d_t, hd_t, hd_s = 48, 16, 8
    Wv = t.attn.qkv.weight.double()[2 * d_t:] * t.norm1.weight.double()
    bv = t.attn.qkv.bias.double()[2 * d_t:] + t.attn.qkv.weight.double()[2 * d_t:] @ \
        t.norm1.bias.double()
    Wvs = s.attn.qkv.weight.double()[2 * d_s:]
    bvs = s.attn.qkv.bias.double()[2 * d_s:]
    for h in range(nh):
        ts, ss = slice(h * hd_t, (h + 1) * hd_t), slice(h * hd_s, (h + 1) * hd_s)
        B = P.T @ t.attn.proj.weight.double()[:, ts] @ torch.cat([Wv[ts] @ P, bv[ts, None]], 1)
        B_s = s.attn.proj.weight.double()[:, ss] @ torch.cat([Wvs[ss], bvs[ss, None]], 1)
        sv = torch.linalg.svdvals(B)
        err = ((B - B_s) ** 2).sum()
        torch.testing.assert_close(err, (sv[hd_s:] ** 2).sum(), rtol=1e-4, atol=1e-6)


def test_refuses_wider_student_or_other_head_count():
    teacher = _teacher()
    with pytest.raises(ValueError, match='dec_heads'):
        svd_init_decoder(teacher, Decoder(32, 48, 2, 4, 4.0, RoPE2D(100.0)))
    with pytest.raises(ValueError, match='dec_depth'):
        svd_init_decoder(teacher, Decoder(32, 24, 4, 3, 4.0, RoPE2D(100.0)))

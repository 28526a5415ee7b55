"""SVD initialisation: project a teacher decoder's weights into a narrower student decoder.

Both decoders are l3d_train.mast3r.decoder.Decoder (decoder_embed, dec_blocks, dec_blocks2,
dec_norm), with the same number of heads. The mapping, all Eckart-Young truncations:

* Residual stream. One orthonormal basis P (d_t x d_s) for every layer: the top d_s left singular
  vectors of M = [every matrix writing into the stream | every matrix reading from it, transposed]
  (LayerNorm gains folded into the readers). Writers become P^T W, readers W P, so the rank-d_s
  error ||M - P P^T M||_F^2 is the optimal one, the sum of the discarded singular values squared.
* Attention, per head h. The logits depend on q and k only through the bilinear form
  A_h = [W_q,h P | b_q,h]^T [W_k,h P | b_k,h] and the value path only through the circuit
  B_h = P^T W_o,h [W_v,h P | b_v,h]; each is replaced by its best rank-hd_s factorisation
  (U_k S_k^1/2, S_k^1/2 V_k^T), with q rescaled by sqrt(hd_s / hd_t) for the softmax temperature.
  The fused qkv matrix is split into q, k, v and heads first, never truncated as a whole.
* MLP: GELU acts per neuron, so hidden units are selected (largest |fc1_j| |fc2_j|), not rotated.
* Depth: student layer i takes teacher layer round(i (D_t - 1) / (D_s - 1)).
* LayerNorm affines are folded into the linear layers they feed (exact), and the student's
  norms start at gain 1, bias 0. At full width P, and the per-head bases, are the identity (all
  bases are optimal when nothing is discarded) so the student reproduces the teacher exactly.
  Approximations at reduced width: LayerNorm's mean and variance are taken over the projected
  coordinates, and 2-D RoPE does not commute with a per-head basis change.
"""
import math

import torch
from torch import nn

from l3d_train.mast3r.decoder import Decoder


def residual_basis(columns: list[torch.Tensor], k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-k left singular vectors P (d, k) of [c_1 | c_2 | ...] (each (d, *)), singular values."""
    M = torch.cat([c.reshape(c.shape[0], -1) for c in columns], dim=1).double()
    U, S, _ = torch.linalg.svd(M, full_matrices=False)
    return U[:, :k], S


def low_rank_factors(M: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Best rank-k factorisation M ~ L @ R (Eckart-Young): L (m, k), R (k, n), float64."""
    U, S, Vh = torch.linalg.svd(M.double(), full_matrices=False)
    root = S[:k].sqrt()
    return U[:, :k] * root, root[:, None] * Vh[:k]


def _fold(linear: nn.Linear, norm: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    """(W diag(gamma), b + W beta) of `linear` fed by LayerNorm `norm` (Identity: unchanged)."""
    W, b = linear.weight.double(), linear.bias.double()
    if isinstance(norm, nn.LayerNorm):
        return W * norm.weight.double(), b + W @ norm.bias.double()
    return W, b


def _layer_map(depth_t: int, depth_s: int) -> list[int]:
    if depth_s > depth_t:
        raise ValueError(f'student dec_depth={depth_s}: expected <= teacher dec_depth={depth_t}')
    if depth_s == 1:
        return [depth_t - 1]
    return [round(i * (depth_t - 1) / (depth_s - 1)) for i in range(depth_s)]


def _blocks(dec: Decoder, idx: list[int]):
    return [dec.dec_blocks[i] for i in idx] + [dec.dec_blocks2[i] for i in idx]


def _reader_writer_columns(dec: Decoder, idx: list[int]) -> list[torch.Tensor]:
    cols = [dec.decoder_embed.weight.double(), dec.decoder_embed.bias.double()[:, None]]
    for blk in _blocks(dec, idx):
        cols += [blk.attn.proj.weight.double(), blk.cross_attn.proj.weight.double(),
                 blk.mlp.fc2.weight.double()]
        cols += [_fold(blk.attn.qkv, blk.norm1)[0].T, _fold(blk.cross_attn.projq, blk.norm2)[0].T,
                 _fold(blk.cross_attn.projk, blk.norm_y)[0].T,
                 _fold(blk.cross_attn.projv, blk.norm_y)[0].T, _fold(blk.mlp.fc1, blk.norm3)[0].T]
    return cols


def _aug(W: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return torch.cat([W, b[:, None]], dim=1)


def _map_heads(wq, bq, wk, bk, wv, bv, wo, P, nh, hd_s):
    """Per-head q, k, v (each (nh*hd_t, d_t) + bias) and wo (d_t, nh*hd_t) -> student tensors."""
    hd_t = wq.shape[0] // nh
    out = {n: [] for n in ('wq', 'bq', 'wk', 'bk', 'wv', 'bv', 'wo')}
    for h in range(nh):
        s = slice(h * hd_t, (h + 1) * hd_t)
        q, k, v = _aug(wq[s] @ P, bq[s]), _aug(wk[s] @ P, bk[s]), _aug(wv[s] @ P, bv[s])
        o = P.T @ wo[:, s]
        if hd_s == hd_t:
            qs, ks, vs, os_ = q, k, v, o
        else:
            L, R = low_rank_factors(q.T @ k, hd_s)                   # logits' bilinear form
            qs, ks = L.T * math.sqrt(hd_s / hd_t), R
            os_, vs = low_rank_factors(o @ v, hd_s)                  # the head's OV circuit
        out['wq'].append(qs[:, :-1])
        out['bq'].append(qs[:, -1])
        out['wk'].append(ks[:, :-1])
        out['bk'].append(ks[:, -1])
        out['wv'].append(vs[:, :-1])
        out['bv'].append(vs[:, -1])
        out['wo'].append(os_)
    return {n: torch.cat(v, dim=1 if n == 'wo' else 0) for n, v in out.items()}


def _set(linear: nn.Linear, W: torch.Tensor, b: torch.Tensor) -> None:
    if linear.weight.shape != W.shape:
        raise ValueError(f'weight shape {tuple(W.shape)}: expected {tuple(linear.weight.shape)}')
    linear.weight.copy_(W.to(linear.weight.dtype))
    linear.bias.copy_(b.to(linear.bias.dtype))


def _reset_norm(norm: nn.Module) -> None:
    if isinstance(norm, nn.LayerNorm):
        norm.weight.fill_(1.0)
        norm.bias.zero_()


def _map_block(t, s, P, nh):
    hd_s = s.attn.qkv.weight.shape[0] // 3 // nh
    d_t = t.attn.proj.weight.shape[0]
    W, b = _fold(t.attn.qkv, t.norm1)
    m = _map_heads(W[:d_t], b[:d_t], W[d_t:2 * d_t], b[d_t:2 * d_t], W[2 * d_t:], b[2 * d_t:],
                   t.attn.proj.weight.double(), P, nh, hd_s)
    _set(s.attn.qkv, torch.cat([m['wq'], m['wk'], m['wv']]), torch.cat([m['bq'], m['bk'],
                                                                       m['bv']]))
    _set(s.attn.proj, m['wo'], P.T @ t.attn.proj.bias.double())
    ca = t.cross_attn
    (wq, bq), (wk, bk), (wv, bv) = (_fold(ca.projq, t.norm2), _fold(ca.projk, t.norm_y),
                                    _fold(ca.projv, t.norm_y))
    m = _map_heads(wq, bq, wk, bk, wv, bv, ca.proj.weight.double(), P, nh, hd_s)
    _set(s.cross_attn.projq, m['wq'], m['bq'])
    _set(s.cross_attn.projk, m['wk'], m['bk'])
    _set(s.cross_attn.projv, m['wv'], m['bv'])
    _set(s.cross_attn.proj, m['wo'], P.T @ ca.proj.bias.double())
    W1, b1 = _fold(t.mlp.fc1, t.norm3)
    W2, b2 = t.mlp.fc2.weight.double(), t.mlp.fc2.bias.double()
    h_s = s.mlp.fc1.weight.shape[0]
    keep = torch.argsort(W1.norm(dim=1) * W2.norm(dim=0), descending=True)[:h_s].sort().values
    _set(s.mlp.fc1, W1[keep] @ P, b1[keep])
    _set(s.mlp.fc2, P.T @ W2[:, keep], P.T @ b2)
    for name in ('norm1', 'norm2', 'norm3', 'norm_y'):
        _reset_norm(getattr(s, name))


@torch.no_grad()
def svd_init_decoder(teacher: Decoder, student: Decoder) -> dict:
    """Overwrite `student`'s decoder weights with the projected teacher's; returns a summary.

    Summary: residual widths, layer map, and the fraction of M's energy the basis keeps.
    Raises ValueError when head counts differ or the student is wider or deeper.
    """
    nh_t, nh_s = teacher.dec_blocks[0].attn.num_heads, student.dec_blocks[0].attn.num_heads
    if nh_t != nh_s:
        raise ValueError(f'student dec_heads={nh_s}: expected the teacher\'s {nh_t}')
    d_t, d_s = teacher.decoder_embed.out_features, student.decoder_embed.out_features
    if d_s > d_t:
        raise ValueError(f'student dec_dim={d_s}: expected <= teacher dec_dim={d_t}')
    idx = _layer_map(len(teacher.dec_blocks), len(student.dec_blocks))
    P, S = residual_basis(_reader_writer_columns(teacher, idx), d_s)
    if d_s == d_t:
        P = torch.eye(d_t, dtype=torch.float64)
    W = P.T @ teacher.decoder_embed.weight.double()                     # (d_s, e_t)
    e_s = student.decoder_embed.in_features
    if e_s < W.shape[1]:        # a narrower student encoder: the rows W reads most
        W = W @ torch.linalg.svd(W, full_matrices=True)[2][:e_s].T         # (d_s, e_s)
    elif e_s > W.shape[1]:      # a wider one: the extra encoder channels start unread
        W = torch.cat([W, W.new_zeros(W.shape[0], e_s - W.shape[1])], dim=1)
    _set(student.decoder_embed, W, P.T @ teacher.decoder_embed.bias.double())
    for t, s in zip(_blocks(teacher, idx), _blocks(student, list(range(len(idx))))):
        _map_block(t, s, P, nh_t)
    student.dec_norm.weight.copy_(torch.diagonal(P.T @ torch.diag(
        teacher.dec_norm.weight.double()) @ P).float())
    student.dec_norm.bias.copy_((P.T @ teacher.dec_norm.bias.double()).float())
    kept = float((S[:d_s] ** 2).sum() / (S ** 2).sum())
    return {'teacher_dim': d_t, 'student_dim': d_s, 'layer_map': idx, 'energy_kept': kept}

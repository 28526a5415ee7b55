"""Asymmetric two-branch decoder: each view's tokens attend to themselves and to the other's.

Branch 1 (`dec_blocks`) refines view 1, branch 2 (`dec_blocks2`) view 2; at every depth both
read the *previous* layer's tokens of the other view, so the two branches advance in lockstep.
"""
import torch
from torch import nn

from l3d_train.mast3r.blocks import DecoderBlock, LN_EPS, RoPE2D


class Decoder(nn.Module):
    """(f1, pos1, f2, pos2) encoder tokens (B, N, C_enc) -> two lists of depth + 1 token maps.

    Each list is [encoder tokens (B, N, C_enc), block 1 out, ..., block `depth` out (normed)]
    with decoder tokens (B, N, C_dec): the layers the heads hook onto.
    """

    def __init__(self, enc_dim: int, dim: int, depth: int, num_heads: int, mlp_ratio: float,
                 rope: RoPE2D, norm_mem: bool = True):
        super().__init__()
        self.decoder_embed = nn.Linear(enc_dim, dim)
        self.dec_blocks = nn.ModuleList(
            [DecoderBlock(dim, num_heads, mlp_ratio, rope, norm_mem) for _ in range(depth)])
        self.dec_blocks2 = nn.ModuleList(
            [DecoderBlock(dim, num_heads, mlp_ratio, rope, norm_mem) for _ in range(depth)])
        self.dec_norm = nn.LayerNorm(dim, eps=LN_EPS)

    def forward(self, f1: torch.Tensor, pos1: torch.Tensor, f2: torch.Tensor, pos2: torch.Tensor):
        out1, out2 = [f1], [f2]
        x1, x2 = self.decoder_embed(f1), self.decoder_embed(f2)          # (B, N, C_dec)
        for blk1, blk2 in zip(self.dec_blocks, self.dec_blocks2):
            x1, x2 = blk1(x1, x2, pos1, pos2), blk2(x2, x1, pos2, pos1)
            out1.append(x1)
            out2.append(x2)
        out1[-1], out2[-1] = self.dec_norm(out1[-1]), self.dec_norm(out2[-1])
        return out1, out2

"""Transformer blocks of the MASt3R teacher: 2-D RoPE, attention, cross-attention, MLP.

Tokens are (B, N, C) with N = h * w patches in row-major order; `pos` is (B, N, 2) int64 holding
each patch's (row y, column x). Norms are LayerNorm(eps=1e-6) as in the official model.
"""
import torch
from torch import nn
import torch.nn.functional as F

LN_EPS = 1e-6


class RoPE2D(nn.Module):
    """Rotary position embedding in 2-D: the first half of each head's channels rotates with
    the patch row y, the second half with the column x; frequencies base**(-2i/D), D = half.
    """

    def __init__(self, base: float = 100.0):
        super().__init__()
        self.base = base

    def rotate(self, t: torch.Tensor, pos1d: torch.Tensor) -> torch.Tensor:
        """t (B, nh, N, D), pos1d (B, N) -> t rotated by pos * inv_freq (pairs i, i + D/2)."""
        d = t.shape[-1]
        inv_freq = 1.0 / (self.base ** (torch.arange(0, d, 2, device=t.device).float() / d))
        angle = pos1d.float()[..., None] * inv_freq                  # (B, N, D/2)
        angle = torch.cat((angle, angle), dim=-1)[:, None].to(t.dtype)  # (B, 1, N, D)
        t1, t2 = t.chunk(2, dim=-1)
        return t * angle.cos() + torch.cat((-t2, t1), dim=-1) * angle.sin()

    def forward(self, tokens: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        """tokens (B, nh, N, hd) with hd % 4 == 0, pos (B, N, 2) (y, x) -> (B, nh, N, hd)."""
        if tokens.shape[-1] % 4:
            raise ValueError(f'head_dim={tokens.shape[-1]}: expected a multiple of 4 for RoPE2D')
        ty, tx = tokens.chunk(2, dim=-1)
        return torch.cat((self.rotate(ty, pos[..., 0]), self.rotate(tx, pos[..., 1])), dim=-1)


class Mlp(nn.Module):
    """fc1 -> GELU -> fc2: (..., c_in) -> (..., c_out)."""

    def __init__(self, c_in: int, hidden: int, c_out: int | None = None):
        super().__init__()
        self.fc1 = nn.Linear(c_in, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, c_out or c_in)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


def _attend(q, k, v, rope, qpos, kpos):
    """q (B, nh, Nq, hd), k/v (B, nh, Nk, hd) -> (B, Nq, nh * hd); RoPE on q and k first."""
    if rope is not None:
        q, k = rope(q, qpos), rope(k, kpos)
    x = F.scaled_dot_product_attention(q, k, v)                 # (B, nh, Nq, hd)
    return x.transpose(1, 2).flatten(2)


class Attention(nn.Module):
    """Multi-head self-attention with a fused qkv projection: (B, N, C) -> (B, N, C)."""

    def __init__(self, dim: int, num_heads: int, rope: RoPE2D | None):
        super().__init__()
        self.num_heads, self.rope = num_heads, rope
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        B, N, C = x.shape
        qkv = self.qkv(x).view(B, N, 3, self.num_heads, C // self.num_heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4)                      # each (B, nh, N, hd)
        return self.proj(_attend(q, k, v, self.rope, pos, pos))


class CrossAttention(nn.Module):
    """Queries from x, keys and values from the other view's tokens y: -> (B, Nx, C)."""

    def __init__(self, dim: int, num_heads: int, rope: RoPE2D | None):
        super().__init__()
        self.num_heads, self.rope = num_heads, rope
        self.projq = nn.Linear(dim, dim)
        self.projk = nn.Linear(dim, dim)
        self.projv = nn.Linear(dim, dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x, y, xpos, ypos):
        nh = self.num_heads
        q = self.projq(x).unflatten(-1, (nh, -1)).transpose(1, 2)  # (B, nh, Nx, hd)
        k = self.projk(y).unflatten(-1, (nh, -1)).transpose(1, 2)  # (B, nh, Ny, hd)
        v = self.projv(y).unflatten(-1, (nh, -1)).transpose(1, 2)
        return self.proj(_attend(q, k, v, self.rope, xpos, ypos))


class Block(nn.Module):
    """Pre-norm ViT block: x + attn(norm1 x), then + mlp(norm2 x)."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float, rope: RoPE2D | None):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=LN_EPS)
        self.attn = Attention(dim, num_heads, rope)
        self.norm2 = nn.LayerNorm(dim, eps=LN_EPS)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x), pos)
        return x + self.mlp(self.norm2(x))


class DecoderBlock(nn.Module):
    """Self-attention, cross-attention to the other view (normed by norm_y), MLP; all pre-norm."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float, rope: RoPE2D | None,
                 norm_mem: bool = True):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=LN_EPS)
        self.attn = Attention(dim, num_heads, rope)
        self.cross_attn = CrossAttention(dim, num_heads, rope)
        self.norm2 = nn.LayerNorm(dim, eps=LN_EPS)
        self.norm3 = nn.LayerNorm(dim, eps=LN_EPS)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.norm_y = nn.LayerNorm(dim, eps=LN_EPS) if norm_mem else nn.Identity()

    def forward(self, x, y, xpos, ypos):
        """x (B, Nx, C) this view, y (B, Ny, C) the other view -> updated x (B, Nx, C)."""
        x = x + self.attn(self.norm1(x), xpos)
        y = self.norm_y(y)
        x = x + self.cross_attn(self.norm2(x), y, xpos, ypos)
        return x + self.mlp(self.norm3(x))

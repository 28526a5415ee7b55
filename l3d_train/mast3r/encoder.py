"""ViT encoder of the MASt3R teacher: patch embedding (plain or ManyAR) + RoPE blocks."""
import torch
from torch import nn

from l3d_train.mast3r.blocks import Block, LN_EPS, RoPE2D


def patch_positions(b: int, h: int, w: int, device) -> torch.Tensor:
    """(y, x) of an h x w patch grid in row-major order: (b, h * w, 2) int64."""
    y, x = torch.meshgrid(torch.arange(h, device=device), torch.arange(w, device=device),
                          indexing='ij')
    return torch.stack((y, x), dim=-1).view(1, h * w, 2).expand(b, -1, -1).clone()


class PatchEmbed(nn.Module):
    """Non-overlapping p x p patches -> tokens: img (B, 3, H, W) -> (B, H/p * W/p, C), pos.

    many_ar=True is the official ManyAR_PatchEmbed: the batch tensor must be landscape
    (W >= H) and an image whose `true_shape` (height, width) is portrait is stored transposed,
    so it is transposed back before the projection and gets a (W/p) x (H/p) position grid.
    many_ar=False is PatchEmbedDust3R, which the official loader uses for inference: any shape.
    """

    def __init__(self, patch_size: int, dim: int, many_ar: bool):
        super().__init__()
        self.patch_size, self.dim, self.many_ar = patch_size, dim, many_ar
        self.proj = nn.Conv2d(3, dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, img: torch.Tensor, true_shape: torch.Tensor):
        B, _, H, W = img.shape
        p = self.patch_size
        if H % p or W % p:
            raise ValueError(f'image size {H}x{W}: expected multiples of patch_size={p}')
        h, w = H // p, W // p
        if not self.many_ar:
            x = self.proj(img).flatten(2).transpose(1, 2)                # (B, h*w, C)
            return x, patch_positions(B, h, w, img.device)
        if W < H:
            raise ValueError(f'image size {H}x{W}: ManyAR patch embedding expects W >= H')
        portrait = true_shape[:, 1] < true_shape[:, 0]                   # (B,) width < height
        x = img.new_zeros((B, h * w, self.dim))
        pos = img.new_zeros((B, h * w, 2), dtype=torch.int64)
        land = ~portrait
        x[land] = self.proj(img[land]).flatten(2).transpose(1, 2)
        x[portrait] = self.proj(img[portrait].transpose(-1, -2)).flatten(2).transpose(1, 2)
        pos[land] = patch_positions(1, h, w, img.device)
        pos[portrait] = patch_positions(1, w, h, img.device)
        return x, pos


class Encoder(nn.Module):
    """Patch embedding, `depth` RoPE ViT blocks, final LayerNorm: -> (B, N, dim), pos (B, N, 2)."""

    def __init__(self, patch_size: int, dim: int, depth: int, num_heads: int, mlp_ratio: float,
                 rope: RoPE2D, many_ar: bool):
        super().__init__()
        self.patch_embed = PatchEmbed(patch_size, dim, many_ar)
        self.enc_blocks = nn.ModuleList(
            [Block(dim, num_heads, mlp_ratio, rope) for _ in range(depth)])
        self.enc_norm = nn.LayerNorm(dim, eps=LN_EPS)

    def forward(self, img: torch.Tensor, true_shape: torch.Tensor):
        x, pos = self.patch_embed(img, true_shape)                        # (B, N, C), (B, N, 2)
        for blk in self.enc_blocks:
            x = blk(x, pos)
        return self.enc_norm(x), pos

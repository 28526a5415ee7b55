"""MASt3R (AsymmetricMASt3R equivalent): a siamese RoPE ViT encoder, an asymmetric two-branch
decoder with cross-attention and one `catmlp+dpt` head per view.

model(view1, view2) with view = {'img': (B, 3, H, W) in [-1, 1], 'true_shape': (B, 2) (H, W)}
returns (res1, res2): res1 pts3d (B, H, W, 3), conf (B, H, W), desc (B, H, W, d), desc_conf;
res2 the same for view 2 except that its points, expressed in view 1's frame, are named
pts3d_in_other_view.
"""
from dataclasses import dataclass

import torch
from torch import nn

from l3d_train.mast3r.blocks import RoPE2D
from l3d_train.mast3r.decoder import Decoder
from l3d_train.mast3r.encoder import Encoder
from l3d_train.mast3r.heads import CatMlpDptHead

INF = float('inf')


@dataclass(frozen=True)
class MASt3RConfig:
    """Architecture of an AsymmetricMASt3R; defaults are the official class defaults, field names
    the official constructor keywords (dpt_* are ours: the official factory fixes them)."""

    img_size: tuple[int, int] = (224, 224)   # training size; any multiple of patch_size runs
    patch_size: int = 16
    enc_embed_dim: int = 768
    enc_depth: int = 12
    enc_num_heads: int = 12
    dec_embed_dim: int = 512
    dec_depth: int = 8
    dec_num_heads: int = 16
    mlp_ratio: float = 4.0
    norm_im2_in_dec: bool = True
    pos_embed: str = 'RoPE100'
    patch_embed_cls: str = 'PatchEmbedDust3R'  # or 'ManyAR_PatchEmbed'
    landscape_only: bool = True
    head_type: str = 'catmlp+dpt'
    output_mode: str = 'pts3d+desc24'
    depth_mode: tuple = ('exp', -INF, INF)
    conf_mode: tuple = ('exp', 1, INF)
    desc_mode: str = 'norm'
    two_confs: bool = False
    desc_conf_mode: tuple | None = None
    dpt_feature_dim: int = 256
    dpt_layer_dims: tuple[int, int, int, int] = (96, 192, 384, 768)

    def __post_init__(self):
        def bad(name, expected):
            return ValueError(f'{name}={getattr(self, name)!r}: expected {expected}')
        if not self.pos_embed.startswith('RoPE'):
            raise bad('pos_embed', "'RoPE<base>' such as 'RoPE100' (cosine is not supported)")
        float(self.pos_embed[4:])
        if self.patch_embed_cls not in ('PatchEmbedDust3R', 'ManyAR_PatchEmbed'):
            raise bad('patch_embed_cls', "'PatchEmbedDust3R' or 'ManyAR_PatchEmbed'")
        if self.head_type != 'catmlp+dpt' or not self.output_mode.startswith('pts3d+desc'):
            raise NotImplementedError(f'head_type={self.head_type!r}, output_mode='
                                      f"{self.output_mode!r}: only 'catmlp+dpt' with "
                                      "'pts3d+desc<d>' (MASt3R) is implemented")
        if self.desc_mode != 'norm':
            raise bad('desc_mode', "'norm'")
        if self.conf_mode is None:
            raise bad('conf_mode', 'a (kind, vmin, vmax) tuple: the heads always predict conf')
        for name, dim, heads in (('enc', self.enc_embed_dim, self.enc_num_heads),
                                 ('dec', self.dec_embed_dim, self.dec_num_heads)):
            if dim % heads or (dim // heads) % 4:
                raise ValueError(f'{name}_embed_dim={dim}, {name}_num_heads={heads}: expected a '
                                 'head dimension that is a multiple of 4 (2-D RoPE)')
        if any(s % self.patch_size for s in self.img_size):
            raise bad('img_size', f'multiples of patch_size={self.patch_size}')

    @property
    def desc_dim(self) -> int:
        return int(self.output_mode[len('pts3d+desc'):])


class MASt3R(nn.Module):
    """Two views -> per-pixel points in view 1's frame, confidences and local descriptors."""

    def __init__(self, cfg: MASt3RConfig):
        super().__init__()
        self.cfg = cfg
        rope = RoPE2D(float(cfg.pos_embed[len('RoPE'):]))
        self.encoder = Encoder(cfg.patch_size, cfg.enc_embed_dim, cfg.enc_depth,
                               cfg.enc_num_heads, cfg.mlp_ratio, rope,
                               many_ar=cfg.patch_embed_cls == 'ManyAR_PatchEmbed')
        self.decoder = Decoder(cfg.enc_embed_dim, cfg.dec_embed_dim, cfg.dec_depth,
                               cfg.dec_num_heads, cfg.mlp_ratio, rope, cfg.norm_im2_in_dec)
        self.downstream_head1 = CatMlpDptHead(cfg)
        self.downstream_head2 = CatMlpDptHead(cfg)

    def _head(self, head: CatMlpDptHead, layers: list[torch.Tensor], true_shape: torch.Tensor):
        """Run `head` at the true image shape; with landscape_only, portrait images (stored
        transposed by ManyAR) are predicted upright, then transposed back to the batch layout."""
        if not self.cfg.landscape_only:
            if not (true_shape == true_shape[0:1]).all():
                raise ValueError(f'true_shape={true_shape.tolist()}: expected one shape per batch')
            H, W = (int(s) for s in true_shape[0])
            return head(layers, H, W)
        H, W = int(true_shape.min()), int(true_shape.max())
        portrait = true_shape[:, 1] < true_shape[:, 0]
        if not portrait.any():
            return head(layers, H, W)
        if portrait.all():
            return {k: v.transpose(1, 2) for k, v in head(layers, W, H).items()}
        land = head([t[~portrait] for t in layers], H, W)
        port = head([t[portrait] for t in layers], W, H)
        res = {}
        for k, v in land.items():
            res[k] = v.new_empty((len(true_shape), *v.shape[1:]))
            res[k][~portrait], res[k][portrait] = v, port[k].transpose(1, 2)
        return res

    def forward(self, view1: dict, view2: dict):
        img1, img2 = view1['img'], view2['img']
        B = img1.shape[0]
        shape1 = view1.get('true_shape', torch.tensor(img1.shape[-2:])[None].repeat(B, 1))
        shape2 = view2.get('true_shape', torch.tensor(img2.shape[-2:])[None].repeat(B, 1))
        if img1.shape[-2:] == img2.shape[-2:]:                            # one encoder pass
            f, pos = self.encoder(torch.cat((img1, img2)), torch.cat((shape1, shape2)))
            (f1, f2), (pos1, pos2) = f.chunk(2), pos.chunk(2)             # (B, N, C), (B, N, 2)
        else:
            f1, pos1 = self.encoder(img1, shape1)
            f2, pos2 = self.encoder(img2, shape2)
        layers1, layers2 = self.decoder(f1, pos1, f2, pos2)
        res1 = self._head(self.downstream_head1, [t.float() for t in layers1], shape1)
        res2 = self._head(self.downstream_head2, [t.float() for t in layers2], shape2)
        res2['pts3d_in_other_view'] = res2.pop('pts3d')            # view 2 in view 1's frame
        return res1, res2

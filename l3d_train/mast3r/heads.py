"""MASt3R `catmlp+dpt` head: DPT for pts3d + conf, a pixel-shuffle MLP for desc (+ desc_conf).

The DPT reads 4 hooked token maps (encoder output and three decoder layers), reassembles them
at strides 4, 8, 16 and 32 of the image, fuses them coarse-to-fine (RefineNet) and regresses
3 + 1 channels at full resolution. The local-feature MLP maps each token (encoder ++ last
decoder layer) to a p x p patch of descriptors. `postprocess` turns raw channels into the
official outputs (depth_mode, conf_mode, normalised descriptors).
"""
import torch
from torch import nn
import torch.nn.functional as F

from l3d_train.mast3r.blocks import Mlp


class ResidualConvUnit(nn.Module):
    """x + conv2(relu(conv1(relu(x)))), 3x3 convs keeping (B, C, h, w)."""

    def __init__(self, c: int):
        super().__init__()
        self.conv1 = nn.Conv2d(c, c, 3, padding=1)
        self.conv2 = nn.Conv2d(c, c, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv2(F.relu(self.conv1(F.relu(x))))


class FusionBlock(nn.Module):
    """RefineNet stage: (coarse path, optional skip) -> path at twice the resolution."""

    def __init__(self, c: int):
        super().__init__()
        self.out_conv = nn.Conv2d(c, c, 1)
        self.resConfUnit1 = ResidualConvUnit(c)  # official (misspelt) names keep weights loadable
        self.resConfUnit2 = ResidualConvUnit(c)

    def forward(self, path: torch.Tensor, skip: torch.Tensor | None = None) -> torch.Tensor:
        if skip is not None:
            path = path + self.resConfUnit1(skip)
        path = self.resConfUnit2(path)
        path = F.interpolate(path, scale_factor=2, mode='bilinear', align_corners=True)
        return self.out_conv(path)                                        # (B, c, 2h, 2w)


class DPT(nn.Module):
    """Dense prediction transformer head: 4 token maps (B, h*w, C_i) -> (B, n_out, 16h, 16w).

    layer_dims/feature_dim are hard-coded (96, 192, 384, 768)/256 in the official factory;
    they are parameters here so reduced teachers and students can shrink the head.
    """

    def __init__(self, dim_tokens: list[int], n_out: int, feature_dim: int = 256,
                 layer_dims: tuple[int, ...] = (96, 192, 384, 768)):
        super().__init__()
        d, L = dim_tokens, layer_dims
        self.act_postprocess = nn.ModuleList([
            nn.Sequential(nn.Conv2d(d[0], L[0], 1), nn.ConvTranspose2d(L[0], L[0], 4, stride=4)),
            nn.Sequential(nn.Conv2d(d[1], L[1], 1), nn.ConvTranspose2d(L[1], L[1], 2, stride=2)),
            nn.Sequential(nn.Conv2d(d[2], L[2], 1)),
            nn.Sequential(nn.Conv2d(d[3], L[3], 1), nn.Conv2d(L[3], L[3], 3, stride=2, padding=1)),
        ])
        self.scratch = nn.Module()
        self.scratch.layer_rn = nn.ModuleList(
            [nn.Conv2d(c, feature_dim, 3, padding=1, bias=False) for c in L])
        for i in range(1, 5):
            setattr(self.scratch, f'refinenet{i}', FusionBlock(feature_dim))
        last_dim = feature_dim // 2
        self.head = nn.Sequential(
            nn.Conv2d(feature_dim, feature_dim // 2, 3, padding=1),
            nn.Upsample(scale_factor=2, mode='bilinear', align_corners=True),
            nn.Conv2d(feature_dim // 2, last_dim, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(last_dim, n_out, 1))

    def forward(self, tokens: list[torch.Tensor], h: int, w: int) -> torch.Tensor:
        """tokens: the 4 hooked maps, each (B, h*w, C_i); h, w: patch grid."""
        maps = [t.transpose(1, 2).unflatten(2, (h, w)) for t in tokens]  # (B, C_i, h, w)
        # strides 4, 8, 16, 32 of the image, then all projected to feature_dim
        maps = [rn(act(m)) for act, rn, m in zip(self.act_postprocess, self.scratch.layer_rn,
                                                 maps)]
        s = self.scratch
        path = s.refinenet4(maps[3])[:, :, :maps[2].shape[2], :maps[2].shape[3]]
        path = s.refinenet3(path, maps[2])
        path = s.refinenet2(path, maps[1])
        path = s.refinenet1(path, maps[0])                                # (B, F, 8h, 8w)
        return self.head(path)                                            # (B, n_out, 16h, 16w)


def reg_dense_depth(xyz: torch.Tensor, mode: tuple) -> torch.Tensor:
    """Raw (..., 3) -> points: direction kept, norm d mapped by mode ('exp': expm1(d))."""
    kind, vmin, vmax = mode
    if not (vmin == -float('inf') and vmax == float('inf')):
        raise ValueError(f'depth_mode={mode!r}: only unbounded (-inf, inf) modes are supported')
    if kind == 'linear':
        return xyz
    d = xyz.norm(dim=-1, keepdim=True)
    xyz = xyz / d.clip(min=1e-8)
    if kind == 'square':
        return xyz * d.square()
    if kind == 'exp':
        return xyz * torch.expm1(d)
    raise ValueError(f'depth_mode={mode!r}: expected linear, square or exp')


def reg_dense_conf(x: torch.Tensor, mode: tuple) -> torch.Tensor:
    """Raw (...) -> confidence: 'exp' vmin + exp(x) (<= vmax), 'sigmoid' in (vmin, vmax)."""
    kind, vmin, vmax = mode
    if kind == 'exp':
        return vmin + x.exp().clip(max=vmax - vmin)
    if kind == 'sigmoid':
        return (vmax - vmin) * torch.sigmoid(x) + vmin
    raise ValueError(f'conf_mode={mode!r}: expected exp or sigmoid')


def postprocess(out: torch.Tensor, depth_mode: tuple, conf_mode: tuple, desc_dim: int,
                two_confs: bool, desc_conf_mode: tuple) -> dict[str, torch.Tensor]:
    """out (B, 3 + 1 + desc_dim [+ 1], H, W) -> pts3d (B, H, W, 3), conf (B, H, W),
    desc (B, H, W, desc_dim) of unit norm, desc_conf (B, H, W) (a copy of conf unless two_confs).
    """
    fmap = out.permute(0, 2, 3, 1)                                        # (B, H, W, ch)
    res = {'pts3d': reg_dense_depth(fmap[..., 0:3], depth_mode),
           'conf': reg_dense_conf(fmap[..., 3], conf_mode)}
    desc = fmap[..., 4:4 + desc_dim]
    res['desc'] = desc / desc.norm(dim=-1, keepdim=True)
    res['desc_conf'] = (reg_dense_conf(fmap[..., 4 + desc_dim], desc_conf_mode) if two_confs
                        else res['conf'].clone())
    return res


class CatMlpDptHead(nn.Module):
    """Per-view head: decoder layers -> dict of (B, H, W, ...) outputs (see `postprocess`)."""

    def __init__(self, cfg):
        super().__init__()
        self.cfg = cfg
        ed, dd, p = cfg.enc_embed_dim, cfg.dec_embed_dim, cfg.patch_size
        self.dpt = DPT([ed, dd, dd, dd], n_out=4, feature_dim=cfg.dpt_feature_dim,
                       layer_dims=cfg.dpt_layer_dims)
        idim = ed + dd
        self.head_local_features = Mlp(idim, int(4 * idim), (cfg.desc_dim + cfg.two_confs) * p * p)

    def forward(self, layers: list[torch.Tensor], H: int, W: int) -> dict[str, torch.Tensor]:
        """layers: [encoder out, decoder 1..depth] (B, N, C); H, W: image size in pixels."""
        cfg, p = self.cfg, self.cfg.patch_size
        depth = len(layers) - 1
        hooks = [0, depth * 2 // 4, depth * 3 // 4, depth]
        pts = self.dpt([layers[i] for i in hooks], H // p, W // p)       # (B, 4, H, W)
        cat = torch.cat([layers[0], layers[-1]], dim=-1)                  # (B, N, ed + dd)
        local = self.head_local_features(cat).transpose(1, 2)             # (B, d * p*p, N)
        local = F.pixel_shuffle(local.unflatten(2, (H // p, W // p)), p)  # (B, d, H, W)
        return postprocess(torch.cat([pts, local], dim=1), cfg.depth_mode, cfg.conf_mode,
                           cfg.desc_dim, cfg.two_confs, cfg.desc_conf_mode or cfg.conf_mode)

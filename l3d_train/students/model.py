"""The stereo student: correlation stem + ViT/CNN encoder + cross-attention decoder + head.

Shapes for one batch of B pairs at input size (H, W), patch p, correlation range D = max_disp/2:
  left, right (B, 1, H, W) in [0, 1]
  stem        (B, c, H/2, W/2) per view (shared weights)
  corr        (B, D, H/2, W/2): mean_c fL(x) fR(x - s), s = 0..D-1 (stride-2 pixels)
  d0          (B, 1, H/2, W/2): soft-argmin of corr (stride-2 pixels)
  tokens      (B, H/p * W/p, enc_dim) per view -> decoder (B, N, dec_dim) per view
  head        pixel-shuffles the left decoder tokens to stride 2, fuses stem + corr + d0 and
              predicts a disparity residual and a confidence logit, upsampled to (H, W).
The decoder is l3d_train.mast3r's (RoPE self-attention + cross-attention to the other view), so
the teacher's decoder weights can be projected into it (l3d_train.svd_init).
"""
import torch
from torch import nn
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from l3d_train.mast3r.blocks import RoPE2D
from l3d_train.mast3r.decoder import Decoder
from l3d_train.mast3r.encoder import Encoder, patch_positions
from l3d_train.students.spec import StudentSpec


class InvertedResidual(nn.Module):
    """MobileNetV2 block: 1x1 expand, 3x3 depthwise (stride s), 1x1 project; residual if s=1."""

    def __init__(self, c_in: int, c_out: int, stride: int, expand: int = 4):
        super().__init__()
        hidden = c_in * expand
        self.body = nn.Sequential(
            nn.Conv2d(c_in, hidden, 1, bias=False), nn.BatchNorm2d(hidden), nn.ReLU6(),
            nn.Conv2d(hidden, hidden, 3, stride, 1, groups=hidden, bias=False),
            nn.BatchNorm2d(hidden), nn.ReLU6(),
            nn.Conv2d(hidden, c_out, 1, bias=False), nn.BatchNorm2d(c_out))
        self.residual = stride == 1 and c_in == c_out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x) if self.residual else self.body(x)


class CnnEncoder(nn.Module):
    """MobileNet-style encoder: img (B, 3, H, W) -> tokens (B, H/p * W/p, dim), pos (B, N, 2).

    log2(p) stride-2 stages with widths growing to `dim`; the last stage has `depth` blocks.
    """

    def __init__(self, patch_size: int, dim: int, depth: int):
        super().__init__()
        n_stages = patch_size.bit_length() - 1
        widths = [max(16, dim // 2 ** (n_stages - 1 - i)) for i in range(n_stages)]
        layers, c = [nn.Conv2d(3, 16, 3, 1, 1, bias=False), nn.BatchNorm2d(16), nn.ReLU6()], 16
        for i, w in enumerate(widths):
            layers.append(InvertedResidual(c, w, 2))
            repeats = depth - 1 if i == n_stages - 1 else 0
            layers += [InvertedResidual(w, w, 1) for _ in range(repeats)]
            c = w
        self.body = nn.Sequential(*layers)
        self.proj = nn.Conv2d(c, dim, 1)

    def forward(self, img: torch.Tensor, true_shape=None):
        x = self.proj(self.body(img))                                    # (B, dim, h, w)
        B, _, h, w = x.shape
        return x.flatten(2).transpose(1, 2), patch_positions(B, h, w, img.device)


def correlation(f_left: torch.Tensor, f_right: torch.Tensor, n_disp: int) -> torch.Tensor:
    """(B, C, h, w) x 2 -> (B, n_disp, h, w): mean over C of fL(y, x) * fR(y, x - s)."""
    padded = F.pad(f_right, (n_disp - 1, 0))
    w = f_left.shape[-1]
    return torch.cat([(f_left * padded[..., n_disp - 1 - s:n_disp - 1 - s + w]).mean(
        1, keepdim=True) for s in range(n_disp)], dim=1)


class StereoStudent(nn.Module):
    """(left, right) grey in [0, 1] -> dict(disp (B,1,H,W) [px], conf (B,1,H,W), features)."""

    def __init__(self, spec: StudentSpec):
        super().__init__()
        self.spec = spec
        rope = RoPE2D(100.0)
        if spec.encoder == 'vit':
            self.encoder = Encoder(spec.patch_size, spec.enc_dim, spec.enc_depth,
                                   spec.enc_heads, spec.mlp_ratio, rope, many_ar=False)
        else:
            self.encoder = CnnEncoder(spec.patch_size, spec.enc_dim, spec.enc_depth)
        self.decoder = Decoder(spec.enc_dim, spec.dec_dim, spec.dec_depth, spec.dec_heads,
                               spec.mlp_ratio, rope)
        c, hd, up = spec.stem_dim, spec.head_dim, spec.patch_size // 2
        self.stem = nn.Sequential(nn.Conv2d(1, c, 3, 2, 1), nn.ReLU(), nn.Conv2d(c, c, 3, 1, 1))
        self.n_disp = spec.max_disp_px // 2
        self.corr_temp = nn.Parameter(torch.tensor(10.0))
        self.token_head = nn.Linear(spec.dec_dim, hd * up * up)
        n_in = hd + c + (self.n_disp + 1 if spec.corr else 0)
        self.refine = nn.Sequential(nn.Conv2d(n_in, hd, 1), nn.ReLU(),
                                    nn.Conv2d(hd, hd, 3, 1, 1), nn.ReLU(),
                                    nn.Conv2d(hd, hd, 3, 1, 1), nn.ReLU(), nn.Conv2d(hd, 2, 1))

    def forward(self, left: torch.Tensor, right: torch.Tensor) -> dict:
        spec = self.spec
        B, _, H, W = left.shape
        if (H, W) != spec.input_size:
            raise ValueError(f'input {H}x{W}: expected input_size={spec.input_size}')
        pair = torch.cat((left, right)) * 2.0 - 1.0                      # (2B, 1, H, W)
        f = self.stem(pair)
        f = f / (f.norm(dim=1, keepdim=True) + 1e-6)                     # unit features
        fl, fr = f[:B], f[B:]
        tokens, pos = self.encoder(pair.expand(-1, 3, -1, -1), None)     # (2B, N, C_enc)
        layers1, _ = self.decoder(tokens[:B], pos[:B], tokens[B:], pos[B:])
        p2 = spec.patch_size // 2
        t = self.token_head(layers1[-1]).transpose(1, 2)                 # (B, hd*p2*p2, N)
        t = F.pixel_shuffle(t.unflatten(2, (H // spec.patch_size, W // spec.patch_size)), p2)
        feats = [t, fl]
        if spec.corr:
            prob = torch.softmax(correlation(fl, fr, self.n_disp) * self.corr_temp, dim=1)
            shifts = torch.arange(self.n_disp, dtype=prob.dtype, device=prob.device)
            d0 = (prob * shifts.view(1, -1, 1, 1)).sum(1, keepdim=True)  # (B, 1, H/2, W/2)
            feats += [prob, d0]
        out = self.refine(torch.cat(feats, dim=1))
        raw = out[:, :1] + d0 if spec.corr else out[:, :1] + 0.25 * self.n_disp
        disp = 2.0 * F.interpolate(F.softplus(raw), scale_factor=2, mode='bilinear',
                                   align_corners=False)                  # input pixels
        conf = torch.sigmoid(F.interpolate(out[:, 1:], scale_factor=2, mode='bilinear',
                                           align_corners=False))
        return {'disp': disp, 'conf': conf, 'enc': tokens[:B], 'dec': layers1[1:]}


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def count_flops(model: StereoStudent) -> int:
    """FLOPs of one pair at the input size (matmul/conv/attention, FlopCounterMode: 2 per MAC)."""
    H, W = model.spec.input_size
    x = torch.zeros(1, 1, H, W)
    was_training = model.training
    model.eval()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(x, x)
    model.train(was_training)
    return int(counter.get_total_flops())

"""The stereo student: correlation stem + ViT/CNN encoder + cross-attention decoder + head.

Shapes for one batch of B pairs at input size (H, W), patch p, correlation range D:
  left, right (B, 1, H, W) in [0, 1]
  stem        (B, c, H, W) per view (shared weights), unit length over c
  corr        (B, D, H/2, W/2): cos(fL(x), fR(x - s)) * exp(log_temp) for left pixels on the
              stride-2 grid, s = 0..D-1 full-resolution pixels, D = max_disp_px; log_temp
              starts at log(20), so a perfect match dominates the softmax at initialisation
  d1          (B, 1, H/2, W/2): local soft-argmax of corr around its arg-max (sub-pixel, px)
  tokens      (B, H/p * W/p, enc_dim) per view -> decoder (B, N, dec_dim) per view
  head        pixel-shuffles the left decoder tokens to stride 2, fuses them with the stem
              features, the cost volume and d1, and predicts a residual to d1 and a
              confidence logit, upsampled to (H, W).
The decoder is l3d_train.mast3r's (RoPE self-attention + cross-attention to the other view), so
the teacher's decoder weights can be projected into it (l3d_train.svd_init).
"""
import math

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


def correlation_last(f_left: torch.Tensor, f_right: torch.Tensor, n_disp: int,
                     stride: int = 1) -> torch.Tensor:
    """(B, C, H, W) x 2 -> (B, ceil(H/stride), ceil(W/stride), n_disp): sum over C of
    fL(y, x) fR(y, x - s), shifts last.

    Left pixels on the stride grid (y, x multiples of `stride`), shifts s = 0..n_disp-1 in
    full-resolution pixels, so the disparity resolution stays 1 px at 1/stride^2 of the cost.
    Right pixels left of the image (x - s < 0) read zeros. One batched matrix product per
    image row: P[j, t] = sum_c fL(c, x_j) fR_pad(c, t) for the left pixels
    x_j = stride j and every padded right column t (the right row padded with n_disp - 1
    zeros on the left), of which shift s is t = x_j + n_disp - 1 - s. Flattened, P[j, x_j + k]
    sits at j (T + stride) + k (T the padded width), so zero-padding the flat rows to
    w (T + stride) and reading them w x (T + stride) gives every left pixel's n_disp shifts
    side by side (k = n_disp - 1 - s, hence the flip). Exported this is a few reshapes and a
    MatMul: n_disp strided slices, products and channel sums took 31 of the flight student's
    95 ms in ONNX Runtime, and the shifts-last layout gives the softmaxes over shifts their
    contiguous axis (17 -> 3 ms).
    """
    B, C = f_left.shape[:2]
    left = f_left[..., ::stride, ::stride]                              # (B, C, h, w)
    right = F.pad(f_right[..., ::stride, :], (n_disp - 1, 0))           # (B, C, h, T)
    h, w, T = left.shape[2], left.shape[3], right.shape[3]
    rows = torch.matmul(left.permute(0, 2, 3, 1).reshape(B * h, w, C),
                        right.permute(0, 2, 1, 3).reshape(B * h, C, T))  # (B h, w, T)
    skewed = F.pad(rows.reshape(B * h, w * T), (0, w * stride)).reshape(B * h, w, T + stride)
    return skewed[..., :n_disp].flip(-1).reshape(B, h, w, n_disp)


def local_soft_argmax(cost: torch.Tensor, radius: int = 2,
                      dim: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """Sub-pixel disparity from a cost volume of logits over shifts along `dim` (higher = better
    match), e.g. (B, D, h, w) with dim 1 or (B, h, w, D) with dim -1.

    Soft-argmax restricted to the shifts within `radius` of the arg-max, so a second mode far
    away cannot pull the estimate (as a global soft-argmin does); returns the disparity (the
    cost's shape with 1 shift) [shift units] and the full softmax, whose peak is a match
    quality.
    """
    view = [1] * cost.dim()
    view[dim] = -1
    shifts = torch.arange(cost.shape[dim], dtype=cost.dtype, device=cost.device).view(view)
    best = cost.argmax(dim=dim, keepdim=True).to(cost.dtype)
    local = cost.masked_fill((shifts - best).abs() > radius, -1e4)
    disp = (torch.softmax(local, dim=dim) * shifts).sum(dim, keepdim=True)
    return disp, torch.softmax(cost, dim=dim)


def hole_fill(disp: torch.Tensor, weight: torch.Tensor, scales=(8, 32)) -> torch.Tensor:
    """Normalised convolution: weighted mean disparity at growing scales, finest where it has
    support. disp, weight (B, 1, h, w) -> (B, 1, h, w); scales larger than h or w are skipped.

    fill = sum_k a_k pool_k(w d) / sum_k a_k pool_k(w) with a_k = 10^-k over the scales and the
    whole image, so a textureless shadow takes the disparity of the nearest matched ground.
    """
    h, w = disp.shape[-2:]
    num, den = 0.0, 0.0
    for i, k in enumerate((*[k for k in scales if k <= min(h, w)], None)):
        if k is None:
            n_k = (weight * disp).mean((2, 3), keepdim=True)
            d_k = weight.mean((2, 3), keepdim=True)
        else:
            n_k = F.interpolate(F.avg_pool2d(weight * disp, k), size=(h, w), mode='bilinear',
                                align_corners=False)
            d_k = F.interpolate(F.avg_pool2d(weight, k), size=(h, w), mode='bilinear',
                                align_corners=False)
        num, den = num + 10.0 ** -i * n_k, den + 10.0 ** -i * d_k
    return num / (den + 1e-6)


class StereoStudent(nn.Module):
    """(left, right) grey in [0, 1] -> dict(disp (B,1,H,W) [px], conf (B,1,H,W), features).

    With `corr`, a 1-px-step matcher on the stride-2 grid gives d1 (local soft-argmax of the
    cosine cost over max_disp_px shifts) and its peak probability; `hole_fill` spreads the
    matched disparity into textureless shadows and the left border strip whose matches fall
    outside the right image. The stride-2 head sees the decoder tokens, stem features, cost
    volume, d1, peak, fill and matchability, and predicts a gate between d1 and the fill
    (biased towards d1 where the peak is high and the match is inside the image), a residual
    and the confidence. Without it the head
    predicts the disparity from the tokens and stem features alone.
    """

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
        self.stem = nn.Sequential(nn.Conv2d(1, c, 3, 1, 1), nn.ReLU(), nn.Conv2d(c, c, 3, 1, 1))
        self.down = nn.Sequential(nn.Conv2d(c, c, 3, 2, 1), nn.ReLU())
        self.n_disp = spec.max_disp_px
        self.corr_log_temp = nn.Parameter(torch.tensor(math.log(20.0)))
        self.token_head = nn.Linear(spec.dec_dim, hd * up * up)
        n_in = hd + c + (self.n_disp + 4 if spec.corr else 0)
        self.refine = nn.Sequential(nn.Conv2d(n_in, hd, 1), nn.ReLU(),
                                    nn.Conv2d(hd, hd, 3, 1, 1), nn.ReLU(),
                                    nn.Conv2d(hd, hd, 3, 1, 1), nn.ReLU(),
                                    nn.Conv2d(hd, 3 if spec.corr else 2, 1))

    def forward(self, left: torch.Tensor, right: torch.Tensor) -> dict:
        spec = self.spec
        B, _, H, W = left.shape
        if (H, W) != spec.input_size:
            raise ValueError(f'input {H}x{W}: expected input_size={spec.input_size}')
        pair = torch.cat((left, right)) * 2.0 - 1.0                      # (2B, 1, H, W)
        f = self.stem(pair)
        f = f / (f.norm(dim=1, keepdim=True) + 1e-6)                     # unit features
        fl, fr = f[:B], f[B:]                                            # (B, c, H, W)
        tokens, pos = self.encoder(pair.expand(-1, 3, -1, -1), None)     # (2B, N, C_enc)
        layers1, _ = self.decoder(tokens[:B], pos[:B], tokens[B:], pos[B:])
        p2 = spec.patch_size // 2
        t = self.token_head(layers1[-1]).transpose(1, 2)                 # (B, hd*p2*p2, N)
        t = F.pixel_shuffle(t.unflatten(2, (H // spec.patch_size, W // spec.patch_size)), p2)
        feats = [t, self.down(fl)]                                       # (B, *, H/2, W/2)
        if spec.corr:
            cost = correlation_last(fl, fr, self.n_disp, 2) * self.corr_log_temp.exp()
            d1, prob = local_soft_argmax(cost, dim=-1)                   # (B, H/2, W/2, *)
            peak = prob.amax(-1, keepdim=True).permute(0, 3, 1, 2)       # (B, 1, H/2, W/2)
            d1, prob = d1.permute(0, 3, 1, 2), prob.permute(0, 3, 1, 2)  # d1 [px]
            x_px = 2.0 * torch.arange(W // 2, dtype=d1.dtype, device=d1.device)
            # the left strip x < max_disp may lack its match: no support for the fill there,
            # and d1 is only trusted where the neighbourhood's disparity keeps the match inside
            fill = hole_fill(d1, peak * (x_px >= self.n_disp).to(d1.dtype))
            matchable = torch.sigmoid(2.0 * (x_px - fill - 2.0))
            feats += [prob, d1 * (2.0 / self.n_disp), peak,
                      fill * (2.0 / self.n_disp), matchable]
        out = self.refine(torch.cat(feats, dim=1))                       # (B, 2|3, H/2, W/2)
        if spec.corr:                   # gate: matched d1 where it is trusted, else the fill
            gate = torch.sigmoid(out[:, 2:3] + 8.0 * (peak - 0.25)) * matchable
            base = gate * d1 + (1.0 - gate) * fill
        else:
            base = 0.25 * self.n_disp
        out = torch.cat((base + 2.0 * out[:, :1], out[:, 1:2]), dim=1)
        out = F.interpolate(out, scale_factor=2, mode='bilinear', align_corners=False)
        disp = F.softplus(out[:, :1], beta=4.0)                          # input pixels
        conf = torch.sigmoid(out[:, 1:])
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

"""Teacher training on stereo pair folders: ground-truth pointmaps, DUSt3R's confidence loss.

Ground truth (INTERFACES.md section 3 pairs; depth.npy is the left view's z-depth, NaN unknown):
- view 1 (left): its pixels back-projected with the calibration, in the left optical frame.
- view 2 (right): the pair has no right depth, so the left depth is forward-warped to the right
  image (u_r = u - fx B / Z, nearest pixel, nearest surface wins); each right pixel hit gets the
  point on its own ray at that depth, expressed in the left frame (x shifted by +B). Right pixels
  that no left pixel reaches (occlusions, the border strip) carry no loss.

Loss, as DUSt3R's ConfLoss(Regr3D(L21)): per view, l = ||x - x*|| per valid pixel and
conf * l - alpha * log(conf). With norm_mode 'avg_dis' (default, scale-invariant as DUSt3R) the
prediction and the ground truth of a pair are each divided by their mean distance to the left
camera over both views' valid pixels; with 'metric' both are divided by the ground truth's
factor, so the network must learn metric scale (MASt3R's metric mode). Each pair's loss is the
mean over its valid pixels, summed over the two views; the batch loss is the mean over pairs, so
that DDP's gradient average over equal shards equals the single-process gradient exactly.

The descriptor MLP (`head_local_features`) gets no gradient from this loss and is frozen, as is
the DPT's unused refinenet4.resConfUnit1 (see UNTRAINED).
"""
import logging
import math

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from l3d_ros.backends import to_gray01
from l3d_ros.dataset import read_pair
from l3d_ros.geometry import backproject, StereoCalib
from l3d_train.mast3r.pair import _to_tensor  # the teacher's one image preprocessing

log = logging.getLogger(__name__)


def right_view_points(depth_m: np.ndarray, calib: StereoCalib) -> np.ndarray:
    """Right-view pointmap in the LEFT optical frame from the left depth of a rectified pair.

    depth_m: (H, W) left z-depth [m], NaN unknown; calib at (H, W).
    Returns (H, W, 3) float32 [m]: the point seen by each right pixel, NaN where none is known.
    """
    H, W = depth_m.shape
    z = np.asarray(depth_m, np.float64)
    v, u = np.mgrid[0:H, 0:W]
    ok = np.isfinite(z) & (z > 0)
    u_r = np.rint(u[ok] - calib.fx * calib.baseline_m / z[ok]).astype(np.int64)
    inside = (u_r >= 0) & (u_r < W)
    flat = v[ok][inside] * W + u_r[inside]
    zbuf = np.full(H * W, np.inf)
    np.minimum.at(zbuf, flat, z[ok][inside])                      # nearest surface wins
    zr = zbuf.reshape(H, W)
    zr[~np.isfinite(zr)] = np.nan
    x = (u - calib.cx) * zr / calib.fx + calib.baseline_m            # right ray, left frame
    y = (v - calib.cy) * zr / calib.fy
    return np.stack([x, y, zr], axis=-1).astype(np.float32)


class PairPointmaps(Dataset):
    """Pair folders -> network inputs and ground-truth pointmaps at the model size (h, w).

    Item: img1, img2 (3, h, w) in [-1, 1]; pts1, pts2 (h, w, 3) in the left frame [m] (0 where
    invalid); valid1, valid2 (h, w) bool.
    """

    def __init__(self, folders: list, size_hw: tuple[int, int]):
        self.folders, self.size_hw = list(folders), tuple(size_hw)

    def __len__(self) -> int:
        return len(self.folders)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        pair = read_pair(self.folders[index])
        if pair.depth_m is None:
            raise ValueError(f'{self.folders[index]}: no depth.npy (training needs ground truth)')
        h, w = self.size_hw
        calib = pair.calib.scaled(w, h)
        depth = cv2.resize(pair.depth_m, (w, h), interpolation=cv2.INTER_NEAREST)
        pts1, pts2 = backproject(depth, calib), right_view_points(depth, calib)
        item = {'img1': _to_tensor(to_gray01(pair.left), (h, w))[0],
                'img2': _to_tensor(to_gray01(pair.right), (h, w))[0]}
        for name, pts in (('1', pts1), ('2', pts2)):
            valid = np.isfinite(pts).all(axis=-1) & (pts[..., 2] > 0)
            item['pts' + name] = torch.from_numpy(np.where(valid[..., None], pts, 0.0))
            item['valid' + name] = torch.from_numpy(valid)
        return item


def _avg_dist(pts1, valid1, pts2, valid2) -> torch.Tensor:
    """(B,) mean distance to the origin over both views' valid pixels (DUSt3R 'avg_dis')."""
    dist = (pts1.norm(dim=-1) * valid1).sum((1, 2)) + (pts2.norm(dim=-1) * valid2).sum((1, 2))
    count = valid1.sum((1, 2)) + valid2.sum((1, 2))
    return dist / count.clamp(min=1)


def conf_pointmap_loss(res1: dict, res2: dict, batch: dict, alpha: float = 0.2,
                       norm_mode: str = 'avg_dis') -> tuple[torch.Tensor, dict[str, float]]:
    """Confidence-weighted pointmap regression (see the module docstring).

    res1/res2: the model's outputs (pts3d / pts3d_in_other_view (B, h, w, 3), conf (B, h, w));
    batch: PairPointmaps items stacked. Returns (scalar loss, {'view1', 'view2', 'reg'} floats).
    """
    pr1, pr2 = res1['pts3d'].float(), res2['pts3d_in_other_view'].float()
    gt1, gt2, v1, v2 = batch['pts1'], batch['pts2'], batch['valid1'], batch['valid2']
    gt_norm = _avg_dist(gt1, v1, gt2, v2).clamp(min=1e-8)[:, None, None, None]
    if norm_mode == 'avg_dis':
        pr_norm = _avg_dist(pr1, v1, pr2, v2).clamp(min=1e-8)[:, None, None, None]
    elif norm_mode == 'metric':
        pr_norm = gt_norm
    else:
        raise ValueError(f"norm_mode={norm_mode!r}: expected 'avg_dis' or 'metric'")
    total, parts, reg = 0.0, {}, 0.0
    for name, pr, gt, valid, conf in (('view1', pr1, gt1, v1, res1['conf']),
                                      ('view2', pr2, gt2, v2, res2['conf'])):
        dist = (pr / pr_norm - gt / gt_norm).norm(dim=-1)                # (B, h, w)
        conf = conf.float()
        per_px = conf * dist - alpha * torch.log(conf)
        count = valid.sum((1, 2)).clamp(min=1)
        per_pair = (per_px * valid).sum((1, 2)) / count                  # (B,)
        total = total + per_pair.mean()
        parts[name] = float(per_pair.detach().mean())
        reg = reg + float(((dist.detach() * valid).sum((1, 2)) / count).mean())
    parts['reg'] = reg                                 # the plain L2 regression, both views
    return total, parts


def lr_at(step: int, steps: int, lr: float, warmup_frac: float, min_lr_ratio: float) -> float:
    """Linear warm-up then cosine decay from lr to lr * min_lr_ratio; step counts from 0."""
    warm = int(steps * warmup_frac)
    if step < warm:
        return lr * (step + 1) / warm
    t = (step - warm) / max(1, steps - warm)
    return lr * (min_lr_ratio + (1 - min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * t)))


# parameters the pointmap loss never reaches: the descriptor MLPs, and the DPT's first residual
# unit of its coarsest stage (official layout; it would refine a skip input that stage lacks)
UNTRAINED = ('.head_local_features.', '.dpt.scratch.refinenet4.resConfUnit1.')


def freeze_untrained(model: torch.nn.Module) -> int:
    """Freeze the UNTRAINED parameters (DDP needs every trainable one to get a gradient).

    Returns the number of frozen parameters.
    """
    frozen = 0
    for name, p in model.named_parameters():
        if any(part in name for part in UNTRAINED):
            p.requires_grad_(False)
            frozen += p.numel()
    return frozen


def batch_indices(n_items: int, step: int, batch_local: int, rank: int, world: int,
                  seed: int, drop_last: bool = True) -> tuple[int, list[list[int]]]:
    """(epoch, this rank's remaining batches of the epoch holding `step`), deterministic.

    Uses DistributedSampler's shuffling (seeded, set_epoch), so a resumed run sees the same
    batches as an uninterrupted one.
    """
    from torch.utils.data.distributed import DistributedSampler
    per_epoch = n_items // (batch_local * world)
    if per_epoch < 1:
        raise ValueError(f'dataset of {n_items} pairs: fewer than one global batch of '
                         f'{batch_local * world}; lower --batch')
    epoch, offset = divmod(step, per_epoch)
    sampler = DistributedSampler(range(n_items), num_replicas=world, rank=rank, shuffle=True,
                                 seed=seed, drop_last=drop_last)
    sampler.set_epoch(epoch)
    order = list(sampler)
    batches = [order[i * batch_local:(i + 1) * batch_local] for i in range(per_epoch)]
    return epoch, batches[offset:]

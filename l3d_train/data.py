"""Training data: simulator pair folders at a student's input size, with cached teacher outputs.

Each item is a dict of float32 tensors at the input size (h, w):
  left, right (1, h, w) grey in [0, 1] (photometrically augmented when `augment`)
  gt_disp (1, h, w) ground-truth disparity [px at input width], 0 where unknown
  gt_mask (1, h, w) 1 where gt_disp is known; sparse_mask (1, h, w) the fixed sparse subset
  t_disp, t_conf (1, h, w), t_enc (N, C_t), t_dec (L, N, C_t): the teacher's, when cached
The teacher runs once per pair (`cache_teacher` for a family teacher, `cache_mast3r` for a
MASt3R teacher), so distillation on a CPU only runs the student.
"""
import hashlib
import logging
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from l3d_ros.backends.base import to_gray01
from l3d_ros.backends.onnx_student import resize_to
from l3d_ros.dataset import read_pair
from l3d_ros.geometry import depth_to_disparity
from l3d_train.mast3r.pair import model_size, teacher_depth

log = logging.getLogger(__name__)


def gt_disparity(depth_m: np.ndarray, fx: float, baseline_m: float,
                 size_hw: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """(H, W) depth [m, NaN unknown] -> disparity (h, w) [px at width w] and its 0/1 mask."""
    disp = depth_to_disparity(depth_m, fx, baseline_m)
    valid = np.isfinite(disp).astype(np.float32)
    num = resize_to(np.nan_to_num(disp, nan=0.0) * valid, size_hw)
    den = resize_to(valid, size_hw)
    mask = (den > 0.999).astype(np.float32)                    # only fully covered pixels
    out = np.where(mask > 0, num / np.maximum(den, 1e-6), 0.0) * (size_hw[1] / depth_m.shape[1])
    return out.astype(np.float32), mask


def load_pair_arrays(folder: Path, size_hw: tuple[int, int]) -> dict[str, np.ndarray]:
    pair = read_pair(folder)
    out = {'left': resize_to(to_gray01(pair.left), size_hw)[None],
           'right': resize_to(to_gray01(pair.right), size_hw)[None]}
    if pair.depth_m is not None:
        disp, mask = gt_disparity(pair.depth_m, pair.calib.fx, pair.calib.baseline_m, size_hw)
        out['gt_disp'], out['gt_mask'] = disp[None], mask[None]
    return out


def teacher_id(teacher: torch.nn.Module) -> str:
    """Short hash of the teacher's weights: names its cache folder."""
    digest = hashlib.sha256()
    for name, tensor in sorted(teacher.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().float().numpy().tobytes())
    return digest.hexdigest()[:16]


@torch.no_grad()
def cache_teacher(teacher: torch.nn.Module, folders: list[Path], cache_dir: Path) -> Path:
    """Run a family teacher (StereoStudent) once per pair; npz per pair under cache_dir/<id>/."""
    teacher.eval()
    out_dir = Path(cache_dir) / teacher_id(teacher)
    out_dir.mkdir(parents=True, exist_ok=True)
    for folder in folders:
        path = out_dir / f'{Path(folder).name}.npz'
        if path.is_file():
            continue
        arrays = load_pair_arrays(folder, teacher.spec.input_size)
        res = teacher(torch.from_numpy(arrays['left'])[None],
                      torch.from_numpy(arrays['right'])[None])
        np.savez(path, t_disp=res['disp'][0].numpy(), t_conf=res['conf'][0].numpy(),
                 t_enc=res['enc'][0].half().numpy(),
                 t_dec=torch.stack([d[0] for d in res['dec']]).half().numpy())
    return out_dir


def _token_grid(tokens: torch.Tensor, grid_t: tuple[int, int],
                grid_s: tuple[int, int]) -> torch.Tensor:
    """(N_t, C) tokens on the teacher's patch grid -> (N_s, C) on the student's (bilinear)."""
    if grid_t == grid_s:
        return tokens
    x = tokens.T.reshape(1, -1, *grid_t)
    x = F.interpolate(x.float(), size=grid_s, mode='bilinear', align_corners=False)
    return x[0].flatten(1).T


@torch.no_grad()
def cache_mast3r(teacher: torch.nn.Module, folders: list[Path], cache_dir: Path,
                 size_hw: tuple[int, int], patch: int = 16) -> Path:
    """Run a MASt3R teacher once per pair; npz per pair under cache_dir/<id>_<h>x<w>/.

    Targets at the student's input size `size_hw` (h, w):
      t_disp (1, h, w): disparity [px at width w] of the teacher's metric depth
                        (l3d_train.mast3r.pair.teacher_depth: scale from the known baseline);
      t_conf (1, h, w): its confidence 1 - 1/conf, 0 where the teacher gives no depth;
      t_enc (N, C_enc), t_dec (L, N, C_dec): the left view's encoder tokens and the output of
                        each decoder block (float16), resampled to the student's patch grid.
    The teacher runs at its training size (long side <= max(cfg.img_size)). A pair whose
    pointmaps give no baseline (a weak teacher) is cached with t_conf = 0: it adds no loss.
    """
    teacher.eval()
    side = max(teacher.cfg.img_size)
    h, w = size_hw
    out_dir = Path(cache_dir) / f'{teacher_id(teacher)}_{h}x{w}'
    out_dir.mkdir(parents=True, exist_ok=True)
    captured = {}
    hook = teacher.decoder.register_forward_hook(
        lambda mod, args, out: captured.update(layers=out[0]))
    refused = 0
    try:
        for folder in folders:
            path = out_dir / f'{Path(folder).name}.npz'
            if path.is_file():
                continue
            pair = read_pair(folder)
            left01, right01 = to_gray01(pair.left), to_gray01(pair.right)
            try:
                depth, conf = teacher_depth(teacher, left01, right01, pair.calib, side)
            except ValueError as exc:
                refused += 1
                log.warning('%s: teacher gives no metric depth (%s); cached with t_conf 0',
                            folder, exc)
                depth, conf = np.full(pair.calib.shape, np.nan, np.float32), None
            disp, mask = gt_disparity(depth, pair.calib.fx, pair.calib.baseline_m, size_hw)
            t_conf = mask * (resize_to(conf, size_hw) if conf is not None else 0.0)
            p_t = teacher.cfg.patch_size
            grid_t = tuple(s // p_t for s in model_size(*pair.calib.shape, p_t, side))
            grid_s = (h // patch, w // patch)
            layers = [_token_grid(t[0], grid_t, grid_s) for t in captured['layers']]
            np.savez(path, t_disp=disp[None], t_conf=t_conf.astype(np.float32)[None],
                     t_enc=layers[0].half().numpy(),
                     t_dec=torch.stack(layers[1:]).half().numpy())
    finally:
        hook.remove()
    if refused:
        log.warning('teacher refused %d of %d pairs', refused, len(folders))
    return out_dir


class PairDataset(Dataset):
    """Pair folders at `size_hw`, held in memory; teacher outputs from `teacher_cache`."""

    def __init__(self, folders: list[Path], size_hw: tuple[int, int],
                 teacher_cache: Path | None = None, sparse_fraction: float = 0.02,
                 seed: int = 0, augment: bool = True):
        if not 0.0 < sparse_fraction <= 1.0:
            raise ValueError(f'sparse_fraction={sparse_fraction!r}: expected (0, 1]')
        self.items, self.augment, self.seed = [], augment, seed
        for i, folder in enumerate(folders):
            item = load_pair_arrays(folder, size_hw)
            if 'gt_disp' in item:
                rng = np.random.default_rng([seed, i])
                item['sparse_mask'] = item['gt_mask'] * (
                    rng.random(item['gt_mask'].shape) < sparse_fraction).astype(np.float32)
            if teacher_cache is not None:
                with np.load(Path(teacher_cache) / f'{Path(folder).name}.npz') as z:
                    item.update({k: z[k].astype(np.float32) for k in z.files})
            self.items.append({k: torch.from_numpy(v) for k, v in item.items()})
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        item = dict(self.items[index])
        if self.augment:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch * 7919 + index)
            gain = 0.8 + 0.4 * torch.rand(1, generator=g)
            gamma = 0.8 + 0.45 * torch.rand(1, generator=g)
            for key in ('left', 'right'):
                noise = 0.01 * torch.randn(item[key].shape, generator=g)
                item[key] = ((item[key].clamp(0, 1) ** gamma) * gain + noise).clamp(0, 1)
        return item

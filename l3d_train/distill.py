"""Distillation recipes, their losses and the training loop (CPU or one GPU).

Recipes (all train the same student on the same pairs, augmentation and step budget):
  output        confidence-weighted disparity regression (smooth L1, normalised per image) to
                the teacher's output
  feature       output + alignment of encoder and decoder tokens to the teacher's through
                learned linear projections, loss relu(1 - cos - margin)
  *+svd         the same, the student's decoder initialised from the teacher's (svd_init)
  sparse-gt     the baseline: ground truth at a fixed sparse subset of pixels, no teacher
  dense-gt      dense ground truth (trains the reduced teacher)
Every recipe also trains the confidence: BCE towards 1[relative error < CONF_TOL] on the pixels
it supervises, so confidence means "within CONF_TOL of the target" at run time.
"""
import csv
from dataclasses import asdict, dataclass, replace
import json
import logging
import math
from pathlib import Path
import time

from safetensors.torch import load_file, save_file
import torch
from torch import nn
import torch.nn.functional as F
from torch.utils.data import DataLoader
from tqdm import tqdm

from l3d_train.students import StereoStudent, StudentSpec
from l3d_train.svd_init import _layer_map, svd_init_decoder

log = logging.getLogger(__name__)
CONF_TOL = 0.05


@dataclass(frozen=True)
class Recipe:
    name: str = 'feature+svd'
    target: str = 'teacher'         # teacher | sparse_gt | dense_gt
    feature: bool = True            # feature-level alignment on top of the output loss
    svd_init: bool = True
    feat_weight: float = 0.5
    margin: float = 0.05            # cosine margin: no loss once 1 - cos <= margin
    conf_weight: float = 0.1
    sparse_fraction: float = 0.02   # sparse-gt: fraction of pixels with ground truth
    steps: int = 600
    batch: int = 4
    lr: float = 1e-3
    seed: int = 0

    def __post_init__(self):
        if self.target not in ('teacher', 'sparse_gt', 'dense_gt'):
            raise ValueError(f'target={self.target!r}: expected teacher, sparse_gt or dense_gt')
        if self.target != 'teacher' and (self.feature or self.svd_init):
            raise ValueError(f'recipe {self.name!r}: feature/svd_init need target=teacher')


RECIPES = {
    'output': Recipe('output', feature=False, svd_init=False),
    'output+svd': Recipe('output+svd', feature=False, svd_init=True),
    'feature': Recipe('feature', feature=True, svd_init=False),
    'feature+svd': Recipe('feature+svd', feature=True, svd_init=True),
    'sparse-gt': Recipe('sparse-gt', target='sparse_gt', feature=False, svd_init=False),
    'dense-gt': Recipe('dense-gt', target='dense_gt', feature=False, svd_init=False),
}


def disparity_loss(pred: torch.Tensor, target: torch.Tensor, weight: torch.Tensor,
                   beta: float = 0.02) -> torch.Tensor:
    """Weighted smooth L1 of disparity normalised per image; (B, 1, h, w) in, scalar out.

    Each image's error is divided by its weighted mean target disparity s_b [px], so a pair at
    150 m (a few px) weighs as much as one at 30 m, and the loss is close to the relative error
    that AbsRel measures while keeping an L1's constant gradient far from the target. beta: the
    smooth-L1 knee in units of s_b. 0 when pred == target.
    """
    w_sum = weight.sum(dim=(1, 2, 3), keepdim=True)
    scale = ((weight * target).sum(dim=(1, 2, 3), keepdim=True)
             / w_sum.clamp_min(1e-6)).clamp_min(1e-3)
    err = F.smooth_l1_loss(pred / scale, target / scale, beta=beta, reduction='none')
    return (weight * err).sum() / weight.sum().clamp_min(1e-6)


def confidence_loss(conf: torch.Tensor, pred: torch.Tensor, target: torch.Tensor,
                    mask: torch.Tensor) -> torch.Tensor:
    """BCE of conf towards 1[|pred - target| / target < CONF_TOL] over mask (pred detached)."""
    good = ((pred.detach() - target).abs() / target.clamp_min(1e-3) < CONF_TOL).float()
    bce = F.binary_cross_entropy(conf.clamp(1e-4, 1 - 1e-4), good, reduction='none')
    return (mask * bce).sum() / mask.sum().clamp_min(1e-6)


def feature_loss(student: list[torch.Tensor], teacher: list[torch.Tensor],
                 proj: nn.ModuleList, margin: float) -> torch.Tensor:
    """Mean over layers of mean relu(1 - cos(proj(s), t) - margin); tokens (B, N, C).

    Both sides are centred over the image's tokens first: transformer tokens share a large
    common direction, so raw cosines are all near 1 and the loss would vanish without
    aligning anything that differs between image regions.
    """
    def centred(x):
        return x - x.mean(dim=1, keepdim=True)
    losses = [F.relu(1.0 - F.cosine_similarity(centred(p(s)), centred(t), dim=-1)
                     - margin).mean() for s, t, p in zip(student, teacher, proj)]
    return torch.stack(losses).mean()


def teacher_dims(teacher) -> tuple[int, int, int]:
    """(encoder width, decoder width, decoder depth) of a teacher: a family StudentSpec, or any
    model with an l3d_train.mast3r Decoder at `.decoder` (StereoStudent, MASt3R)."""
    if isinstance(teacher, StudentSpec):
        return teacher.enc_dim, teacher.dec_dim, teacher.dec_depth
    dec = teacher.decoder
    return dec.decoder_embed.in_features, dec.decoder_embed.out_features, len(dec.dec_blocks)


class FeatureProjector(nn.Module):
    """Learned linear maps from the student's encoder/decoder tokens to the teacher's widths;
    student decoder layer i aligns to teacher layer _layer_map(...)[i] (as svd_init maps them)."""

    def __init__(self, spec: StudentSpec, teacher):
        super().__init__()
        enc_t, dec_t, depth_t = teacher_dims(teacher)
        self.layers = _layer_map(depth_t, spec.dec_depth)
        self.proj = nn.ModuleList([nn.Linear(spec.enc_dim, enc_t)] + [
            nn.Linear(spec.dec_dim, dec_t) for _ in self.layers])

    def loss(self, res: dict, batch: dict, margin: float) -> torch.Tensor:
        student = [res['enc'], *res['dec']]
        teacher = [batch['t_enc'], *[batch['t_dec'][:, i] for i in self.layers]]
        return feature_loss(student, teacher, self.proj, margin)


def recipe_loss(res: dict, batch: dict, recipe: Recipe,
                projector: FeatureProjector | None) -> dict[str, torch.Tensor]:
    if recipe.target == 'teacher':
        target, weight = batch['t_disp'], batch['t_conf']
        mask = torch.ones_like(weight)
    else:
        mask = batch['sparse_mask' if recipe.target == 'sparse_gt' else 'gt_mask']
        target, weight = batch['gt_disp'].clamp_min(1e-3), mask
    parts = {'disp': disparity_loss(res['disp'], target, weight),
             'conf': recipe.conf_weight * confidence_loss(res['conf'], res['disp'], target, mask)}
    if recipe.feature:
        parts['feat'] = recipe.feat_weight * projector.loss(res, batch, recipe.margin)
    parts['total'] = sum(parts.values())
    return parts


def save_checkpoint(path: Path, model: StereoStudent, meta: dict) -> None:
    """Weights as safetensors + a JSON sidecar (spec, recipe, figures): no pickle."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    path.with_suffix('.json').write_text(json.dumps(
        {'spec': model.spec.to_dict(), **meta}, indent=2) + '\n')


def load_checkpoint(path: Path) -> tuple[StereoStudent, dict]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f'checkpoint {path}: missing')
    meta = json.loads(path.with_suffix('.json').read_text())
    model = StereoStudent(StudentSpec.from_dict(meta['spec']))
    model.load_state_dict(load_file(str(path)))
    return model.eval(), meta


def train(spec: StudentSpec, recipe: Recipe, dataset, out: Path,
          teacher: nn.Module | None = None, resume: bool = False,
          amp: bool = False, progress: bool = True) -> tuple[StereoStudent, dict]:
    """Train `spec` with `recipe` on `dataset` (PairDataset); writes out.safetensors/.json/.csv.

    teacher: a MASt3R or a family teacher (StereoStudent), needed for svd_init (its decoder is
    projected into the student's) and for the feature alignment widths. resume: continue from the
    step saved in out.state.pt (training state, never loaded at run time). Returns the model and
    its meta (recipe, steps, final losses, wall time).
    """
    out = Path(out)
    torch.manual_seed(recipe.seed)
    device = torch.device('cuda' if torch.cuda.is_available() else 'cpu')
    model = StereoStudent(spec)
    svd_info = None
    if recipe.svd_init:
        svd_info = svd_init_decoder(teacher.decoder, model.decoder)
    projector = FeatureProjector(spec, teacher) if recipe.feature else None
    model.to(device).train()
    params = list(model.parameters()) + (list(projector.parameters()) if projector else [])
    if projector:
        projector.to(device)
    opt = torch.optim.AdamW(params, lr=recipe.lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / 50) * 0.5 * (
        1 + math.cos(math.pi * min(s, recipe.steps) / recipe.steps)))
    step, state_path = 0, out.with_suffix('.state.pt')
    if resume and state_path.is_file():
        state = torch.load(state_path, weights_only=True)
        model.load_state_dict(state['model'])
        opt.load_state_dict(state['opt'])
        sched.load_state_dict(state['sched'])
        if projector:
            projector.load_state_dict(state['projector'])
        step = int(state['step'])
    gen = torch.Generator().manual_seed(recipe.seed)
    loader = DataLoader(dataset, batch_size=recipe.batch, shuffle=True, generator=gen,
                        drop_last=len(dataset) >= recipe.batch)
    out.parent.mkdir(parents=True, exist_ok=True)
    csv_file = open(out.with_suffix('.csv'), 'a' if resume else 'w', newline='')
    writer = csv.writer(csv_file)
    if step == 0:
        writer.writerow(['step', 'total', 'disp', 'conf', 'feat', 'lr', 'wall_s'])
    use_amp = amp and device.type == 'cuda'
    t0, bar = time.perf_counter(), tqdm(total=recipe.steps, initial=step, disable=not progress,
                                        desc=f'{spec.name}/{recipe.name}')
    parts = {}
    while step < recipe.steps:
        dataset.epoch = step
        for batch in loader:
            batch = {k: v.to(device) for k, v in batch.items()}
            with torch.autocast(device.type, enabled=use_amp):
                res = model(batch['left'], batch['right'])
                parts = recipe_loss(res, batch, recipe, projector)
            opt.zero_grad(set_to_none=True)
            parts['total'].backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            sched.step()
            step += 1
            values = [float(parts[k].detach()) if k in parts else 0.0
                      for k in ('total', 'disp', 'conf', 'feat')]
            writer.writerow([step] + [f'{v:.5f}' for v in values]
                            + [f'{sched.get_last_lr()[0]:.2e}',
                               f'{time.perf_counter() - t0:.1f}'])
            if step % 10 == 0:
                csv_file.flush()
            bar.update(1)
            bar.set_postfix(loss=f'{values[0]:.4f}')
            if step >= recipe.steps:
                break
    bar.close()
    csv_file.close()
    torch.save({'model': model.state_dict(), 'opt': opt.state_dict(),
                'sched': sched.state_dict(), 'step': step,
                'projector': projector.state_dict() if projector else {}}, state_path)
    model.cpu().eval()
    meta = {'recipe': asdict(recipe), 'steps': step, 'svd_init': svd_info,
            'final_loss': {k: float(v.detach()) for k, v in parts.items()},
            'train_wall_s': round(time.perf_counter() - t0, 1), 'device': device.type}
    save_checkpoint(out.with_suffix('.safetensors'), model, meta)
    return model, meta


def with_budget(recipe: Recipe, steps: int | None = None, seed: int | None = None) -> Recipe:
    return replace(recipe, steps=steps or recipe.steps,
                   seed=recipe.seed if seed is None else seed)

"""`l3d train teacher`: fine-tune (--init) or train from scratch a MASt3R teacher on pair folders.

Single process: `l3d train teacher --data D --out RUN`. Several processes: `torchrun
--nproc_per_node N -m l3d_ros.cli train teacher ...` (gloo on CPU, nccl on CUDA); --batch is
the global batch, split evenly over the processes. On CUDA the forward pass runs under
torch.autocast (bfloat16 where supported, else float16 with a GradScaler).

RUN holds: log.csv (step, loss, view1, view2, reg, lr, time_s), checkpoints/step_NNNNNNN/
(model.safetensors, optimizer.pt: tensors only, read back with weights_only=True, state.json),
checkpoints/latest, and at the end teacher.safetensors + teacher.json (how it was made; the
json's "model" key also makes it load_mast3r's sidecar).
"""
import argparse
from dataclasses import asdict, replace
import json
import logging
import os
from pathlib import Path
import shutil
import subprocess
import sys
import time

import torch
import torch.distributed as dist
from torch.utils.data import DataLoader

from l3d_ros.dataset import list_pairs
from l3d_train.config import load_train_config, TeacherTrainConfig
from l3d_train.mast3r import load_mast3r, MASt3R, save_safetensors
from l3d_train.mast3r.checkpoint import constructor_string
from l3d_train.teacher_train import (batch_indices, conf_pointmap_loss,
                                     freeze_untrained, lr_at, PairPointmaps)

log = logging.getLogger(__name__)
CSV_HEADER = 'step,loss,view1,view2,reg,lr,time_s\n'


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest='what', required=True)
    t = sub.add_parser('teacher', help='MASt3R teacher on pair folders (pointmap ConfLoss)')
    t.add_argument('--data', type=Path, required=True, help='folder of pair folders with depth')
    t.add_argument('--out', type=Path, required=True, help='run folder (created)')
    t.add_argument('--init', type=Path, help='official .pth or our .safetensors to start from; '
                   'without it, a reduced teacher (config l3d_train.teacher.model) from scratch')
    t.add_argument('--steps', type=int, help='optimiser steps in all (config: train.steps)')
    t.add_argument('--batch', type=int, help='global batch [pairs] (config: train.batch)')
    t.add_argument('--lr', type=float, help='peak learning rate (config: train.lr)')
    t.add_argument('--seed', type=int, help='data order and initialisation (config)')
    t.add_argument('--save-every', type=int, help='checkpoint period [steps] (config)')
    t.add_argument('--resume', action='store_true', help='continue from OUT/checkpoints/latest')
    t.add_argument('--stop-at', type=int, help='save and stop at this step (the schedule still '
                   'spans --steps); resume later with --resume')
    t.add_argument('--config', type=Path, help='parameter file (default: the package one)')
    t.add_argument('--device', choices=('cpu', 'cuda'),
                   default='cuda' if torch.cuda.is_available() else 'cpu')
    t.add_argument('--quiet', action='store_true', help='no progress bar')


def _git_commit() -> str:
    try:
        out = subprocess.run(['git', 'rev-parse', 'HEAD'], capture_output=True, text=True,
                             cwd=Path(__file__).resolve().parent, timeout=10)
        dirty = subprocess.run(['git', 'status', '--porcelain', '--untracked-files=no'],
                               capture_output=True, text=True, timeout=10,
                               cwd=Path(__file__).resolve().parent).stdout.strip()
        return out.stdout.strip() + ('+dirty' if dirty else '') if out.returncode == 0 \
            else 'unknown'
    except (OSError, subprocess.SubprocessError):
        return 'unknown'


def _distributed(device_kind: str) -> tuple[int, int, torch.device]:
    """(rank, world, device); joins the torchrun process group when WORLD_SIZE > 1."""
    world = int(os.environ.get('WORLD_SIZE', '1'))
    if device_kind == 'cuda' and not torch.cuda.is_available():
        raise ValueError("device='cuda': expected a CUDA device; none is visible")
    local = int(os.environ.get('LOCAL_RANK', '0'))
    device = torch.device('cuda', local) if device_kind == 'cuda' else torch.device('cpu')
    if device.type == 'cuda':
        torch.cuda.set_device(device)
    if world > 1 and not dist.is_initialized():
        dist.init_process_group('nccl' if device.type == 'cuda' else 'gloo')
    return (dist.get_rank() if world > 1 else 0), world, device


def make_optimizer(model: torch.nn.Module, cfg: TeacherTrainConfig) -> torch.optim.AdamW:
    """AdamW as DUSt3R (betas 0.9, 0.95); no weight decay on biases and norms (1-D tensors)."""
    params = [p for p in model.parameters() if p.requires_grad]
    return torch.optim.AdamW([{'params': [p for p in params if p.ndim >= 2]},
                              {'params': [p for p in params if p.ndim < 2], 'weight_decay': 0}],
                             lr=cfg.lr, betas=(0.9, 0.95), weight_decay=cfg.weight_decay)


def latest_checkpoint(out: Path) -> Path | None:
    pointer = out / 'checkpoints' / 'latest'
    return out / 'checkpoints' / pointer.read_text().strip() if pointer.is_file() else None


def save_checkpoint(out: Path, model: MASt3R, opt, scaler, state: dict, keep: int = 2) -> Path:
    """Write checkpoints/step_N atomically (tmp folder + rename), point `latest` at it."""
    root = out / 'checkpoints'
    name = f'step_{state["step"]:07d}'
    tmp, final = root / (name + '.tmp'), root / name
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    save_safetensors(model, tmp / 'model.safetensors')
    torch.save({'optimizer': opt.state_dict(), 'scaler': scaler.state_dict()},
               tmp / 'optimizer.pt')
    (tmp / 'state.json').write_text(json.dumps(state, indent=2) + '\n')
    shutil.rmtree(final, ignore_errors=True)
    tmp.rename(final)
    (root / 'latest.tmp').write_text(name + '\n')
    os.replace(root / 'latest.tmp', root / 'latest')
    for old in sorted(root.glob('step_???????'))[:-keep]:
        shutil.rmtree(old)
    return final


def _views(batch: dict, device: torch.device) -> tuple[dict, dict]:
    B, _, h, w = batch['img1'].shape
    shape = torch.tensor([[h, w]]).repeat(B, 1)
    return ({'img': batch['img1'].to(device, non_blocking=True), 'true_shape': shape},
            {'img': batch['img2'].to(device, non_blocking=True), 'true_shape': shape})


def train_step(model, batch: dict, device: torch.device, cfg: TeacherTrainConfig,
               amp_dtype: torch.dtype | None) -> tuple[torch.Tensor, dict]:
    """Forward + loss + backward on this process's shard (gradients left in .grad)."""
    view1, view2 = _views(batch, device)
    with torch.autocast(device.type, dtype=amp_dtype or torch.float32,
                        enabled=amp_dtype is not None):
        res1, res2 = model(view1, view2)
    gt = {k: v.to(device, non_blocking=True) for k, v in batch.items() if k[:3] in ('pts', 'val')}
    return conf_pointmap_loss(res1, res2, gt, cfg.conf_alpha, cfg.norm_mode)


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, format='%(message)s')
    return train_teacher(args)


def train_teacher(args: argparse.Namespace) -> int:
    params = load_train_config(args.config).teacher
    overrides = {k: v for k, v in (('steps', args.steps), ('batch', args.batch), ('lr', args.lr),
                                   ('seed', args.seed), ('save_every', args.save_every))
                 if v is not None}
    ckpt = latest_checkpoint(args.out)
    if ckpt is not None and not args.resume:
        raise ValueError(f'out={str(args.out)!r}: holds a run ({ckpt.name}); pass --resume to '
                         'continue it or choose another folder')
    if args.resume and ckpt is None:
        raise FileNotFoundError(f'out={str(args.out)!r}: --resume but no checkpoints/latest')
    state = json.loads((ckpt / 'state.json').read_text()) if ckpt else {}
    cfg = replace(TeacherTrainConfig(**state['train']) if state else params.train, **overrides)
    rank, world, device = _distributed(args.device)
    if cfg.batch % world:
        raise ValueError(f'batch={cfg.batch}: expected a multiple of the {world} processes')
    torch.manual_seed(cfg.seed)
    if ckpt:
        model = load_mast3r(ckpt / 'model.safetensors')
    elif args.init:
        model = load_mast3r(args.init)
    else:
        model = MASt3R(params.model.mast3r())
    model.to(device).train()
    frozen = freeze_untrained(model)
    opt = make_optimizer(model, cfg)
    amp_dtype = None
    if device.type == 'cuda':
        amp_dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16)
    if ckpt:
        saved = torch.load(ckpt / 'optimizer.pt', map_location=device, weights_only=True)
        opt.load_state_dict(saved['optimizer'])
        scaler.load_state_dict(saved['scaler'])
    net = model if world == 1 else torch.nn.parallel.DistributedDataParallel(
        model, device_ids=[device.index] if device.type == 'cuda' else None)
    folders = list_pairs(args.data)
    dataset = PairPointmaps(folders, model.cfg.img_size)
    step, stop = state.get('step', 0), min(args.stop_at or cfg.steps, cfg.steps)
    elapsed0, t0 = state.get('time_s', 0.0), time.perf_counter()
    if rank == 0:
        args.out.mkdir(parents=True, exist_ok=True)
        n_train = sum(p.numel() for p in model.parameters() if p.requires_grad)
        log.info(f'teacher: {n_train / 1e6:.2f} M trainable ({frozen / 1e6:.2f} M frozen), '
                 f'{len(folders)} pairs at {tuple(model.cfg.img_size)}, {world} process(es) on '
                 f'{device.type}, amp {amp_dtype}, steps {step} -> {stop} of {cfg.steps}')
        csv = args.out / 'log.csv'
        if not csv.is_file():
            csv.write_text(CSV_HEADER)
        csv = csv.open('a')
    bar = None
    if rank == 0 and not args.quiet:
        from tqdm import tqdm
        bar = tqdm(total=stop, initial=step, desc='teacher', unit='step')
    loss_value = state.get('loss', float('nan'))
    while step < stop:
        epoch, batches = batch_indices(len(dataset), step, cfg.batch // world, rank, world,
                                       cfg.seed)
        loader = DataLoader(dataset, batch_sampler=batches, num_workers=cfg.workers,
                            pin_memory=device.type == 'cuda')
        for batch in loader:
            lr = lr_at(step, cfg.steps, cfg.lr, cfg.warmup_frac, cfg.min_lr_ratio)
            for group in opt.param_groups:
                group['lr'] = lr
            opt.zero_grad(set_to_none=True)
            loss, parts = train_step(net, batch, device, cfg, amp_dtype)
            scaler.scale(loss).backward()
            if cfg.grad_clip > 0:
                scaler.unscale_(opt)
                torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            scaler.step(opt)
            scaler.update()
            step += 1
            values = torch.tensor([loss.item(), parts['view1'], parts['view2'], parts['reg']])
            if world > 1:
                dist.all_reduce(values)
                values /= world
            loss_value = float(values[0])
            elapsed = elapsed0 + time.perf_counter() - t0
            if rank == 0:
                csv.write(f'{step},{values[0]:.6g},{values[1]:.6g},{values[2]:.6g},'
                          f'{values[3]:.6g},{lr:.6g},{elapsed:.3f}\n')
                csv.flush()
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(loss=f'{loss_value:.4f}', lr=f'{lr:.2e}')
            if step % cfg.save_every == 0 or step == stop:
                if rank == 0:
                    save_checkpoint(args.out, model, opt, scaler, {
                        'step': step, 'epoch': epoch, 'loss': loss_value, 'time_s': elapsed,
                        'train': asdict(cfg), 'world_size': world})
                if world > 1:
                    dist.barrier()
            if step >= stop:
                break
    if bar is not None:
        bar.close()
    if rank == 0:
        csv.close()
        if step >= cfg.steps:
            _write_teacher(args, model, cfg, folders, world, device, amp_dtype, loss_value,
                           elapsed0 + time.perf_counter() - t0)
    if world > 1:
        dist.barrier()
        dist.destroy_process_group()
    return 0


def _write_teacher(args, model, cfg, folders, world, device, amp_dtype, loss, wall_s) -> None:
    """teacher.safetensors and teacher.json: the record of how the weights were made."""
    save_safetensors(model, args.out / 'teacher.safetensors')
    record = {
        'model': constructor_string(model.cfg),
        'command': ' '.join([Path(sys.argv[0]).name] + sys.argv[1:]),
        'data': str(Path(args.data).resolve()), 'n_pairs': len(folders),
        'init': str(args.init) if args.init else None, 'train': asdict(cfg),
        'final_loss': loss, 'steps': cfg.steps, 'world_size': world, 'device': device.type,
        'amp': str(amp_dtype) if amp_dtype else None, 'wall_s': round(wall_s, 3),
        'parameters': sum(p.numel() for p in model.parameters()),
        'git_commit': _git_commit(), 'torch': torch.__version__,
        'loss': 'ConfLoss(Regr3D(L21)) on view-1 and view-2 pointmaps in the left frame, '
                f'norm_mode={cfg.norm_mode}, alpha={cfg.conf_alpha}; descriptor MLP frozen'}
    (args.out / 'teacher.json').write_text(json.dumps(record, indent=2) + '\n')
    log.info(f'wrote {args.out / "teacher.safetensors"} (final loss {loss:.4f})')

"""`l3d train teacher`: ground-truth pointmaps, the ConfLoss, training, resume and DDP.

The data are analytic textured planes (l3d_sim.synthetic.plane_pair) at 32x32 and the teacher a
tiny MASt3R (2+4 blocks of width 32), so each test runs in seconds on two CPU cores.
"""
import json
import os
from pathlib import Path
import socket

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from l3d_ros.cli import main as l3d
from l3d_ros.dataset import list_pairs, StereoPair, write_pair
from l3d_ros.geometry import StereoCalib
from l3d_sim.synthetic import plane_pair
from l3d_train.config import load_train_config
from l3d_train.mast3r import load_mast3r, MASt3R
from l3d_train.teacher_train import (conf_pointmap_loss, freeze_untrained,
                                     PairPointmaps, right_view_points)
from l3d_train.train_cli import train_step

SIZE = 32
TINY = """l3d_train:
  ros__parameters:
    teacher:
      model: {img_size: [32, 32], enc_embed_dim: 32, enc_depth: 2, enc_num_heads: 2,
              dec_embed_dim: 32, dec_depth: 4, dec_num_heads: 2, dpt_feature_dim: 16,
              dpt_layer_dims: [8, 16, 16, 16], desc_dim: 8}
      train: {steps: 12, batch: 2, lr: 2.0e-3, warmup_frac: 0.0, save_every: 4}
"""


def calib_at(size: int) -> StereoCalib:
    return StereoCalib(1.2 * size, 1.2 * size, size / 2 - 0.5, size / 2 - 0.5, 2.0, size, size)


@pytest.fixture(scope='module')
def data(tmp_path_factory) -> tuple[Path, Path]:
    """(dataset of 4 plane pairs, tiny config file)."""
    root = tmp_path_factory.mktemp('teacher')
    calib = calib_at(SIZE)
    for i in range(4):
        left, right, depth = plane_pair(calib, 20.0 + 4 * i, tilt_deg=8.0 * i, seed=i)
        write_pair(root / 'data' / f'p{i}', StereoPair(f'p{i}', left, right, calib, depth))
    (root / 'tiny.yaml').write_text(TINY)
    return root / 'data', root / 'tiny.yaml'


def test_right_view_points_of_a_fronto_parallel_plane():
    calib = calib_at(64)
    depth = np.full((64, 64), 30.0, np.float32)
    pts = right_view_points(depth, calib)
    disp = calib.fx * calib.baseline_m / 30.0                       # 2.56 px
    valid = np.isfinite(pts[..., 2])
    last = int(np.rint(63 - disp))                                   # rightmost right column hit
    assert valid[:, :last + 1].all() and not valid[:, last + 1:].any()
    v, u = np.mgrid[0:64, 0:64]
    np.testing.assert_allclose(pts[valid][:, 2], 30.0)
    np.testing.assert_allclose(pts[..., 0][valid],                   # own ray, shifted by +B
                               ((u - calib.cx) * 30.0 / calib.fx + calib.baseline_m)[valid],
                               rtol=1e-6)
    np.testing.assert_allclose(pts[..., 1][valid], ((v - calib.cy) * 30.0 / calib.fy)[valid],
                               rtol=1e-6, atol=1e-6)


def test_right_view_keeps_the_nearest_surface():
    calib = calib_at(64)
    depth = np.full((64, 64), 40.0, np.float32)
    depth[:, 30:34] = 10.0                            # a near post occludes the far wall
    pts = right_view_points(depth, calib)
    u_r = np.rint(np.arange(30, 34) - calib.fx * calib.baseline_m / 10.0).astype(int)
    np.testing.assert_allclose(pts[:, u_r, 2], 10.0)


def _batch(data_dir, n):
    items = [PairPointmaps(list_pairs(data_dir), (SIZE, SIZE))[i] for i in range(n)]
    return {k: torch.stack([it[k] for it in items]) for k in items[0]}


def test_conf_loss_known_values_and_scale_invariance(data):
    batch = _batch(data[0], 2)
    res1 = {'pts3d': batch['pts1'].clone(), 'conf': torch.ones(2, SIZE, SIZE)}
    res2 = {'pts3d_in_other_view': batch['pts2'].clone(), 'conf': torch.ones(2, SIZE, SIZE)}
    loss, parts = conf_pointmap_loss(res1, res2, batch)
    assert float(loss) == pytest.approx(0.0, abs=1e-6) and parts['reg'] < 1e-6
    scaled = ({'pts3d': 3 * res1['pts3d'], 'conf': res1['conf']},
              {'pts3d_in_other_view': 3 * res2['pts3d_in_other_view'], 'conf': res2['conf']})
    assert float(conf_pointmap_loss(*scaled, batch)[0]) == pytest.approx(0.0, abs=1e-5)
    metric = float(conf_pointmap_loss(*scaled, batch, norm_mode='metric')[0])
    norms = [(batch[f'pts{i}'].norm(dim=-1), batch[f'valid{i}']) for i in (1, 2)]
    avg = sum((n * v).sum((1, 2)) for n, v in norms) / sum(v.sum((1, 2)) for _, v in norms)
    expected = sum(((2 * n * v).sum((1, 2)) / v.sum((1, 2)) / avg).mean() for n, v in norms)
    assert metric == pytest.approx(float(expected), rel=1e-5)  # |3x - x| / avg|x*|, conf 1
    conf2 = {'pts3d': res1['pts3d'], 'conf': torch.full((2, SIZE, SIZE), 2.0)}
    other = {'pts3d_in_other_view': res2['pts3d_in_other_view'], 'conf': res2['conf']}
    assert float(conf_pointmap_loss(conf2, other, batch, alpha=0.2)[0]) == pytest.approx(
        -0.2 * np.log(2.0), rel=1e-5)                  # perfect points: -alpha log(conf)


def _run(data_dir, config, out, *extra) -> int:
    return l3d(['train', 'teacher', '--data', str(data_dir), '--out', str(out), '--config',
                str(config), '--device', 'cpu', '--quiet', *extra])


def _log(out: Path) -> np.ndarray:
    return np.loadtxt(out / 'log.csv', delimiter=',', skiprows=1, ndmin=2)


def test_training_lowers_the_loss_and_records_the_run(data, tmp_path):
    out = tmp_path / 'run'
    assert _run(*data, out, '--steps', '12') == 0
    loss = _log(out)[:, 1]
    assert len(loss) == 12 and loss[-3:].mean() < 0.7 * loss[:2].mean(), loss
    record = json.loads((out / 'teacher.json').read_text())
    assert record['steps'] == 12 and record['n_pairs'] == 4
    assert record['final_loss'] == pytest.approx(loss[-1], rel=1e-4)
    model = load_mast3r(out / 'teacher.safetensors')      # the json is also the sidecar
    assert model.cfg.enc_embed_dim == 32 and model.cfg.dec_depth == 4
    assert _run(*data, out) == 1                          # refuses to overwrite without --resume


def test_resume_continues_with_identical_state(data, tmp_path):
    whole, split = tmp_path / 'whole', tmp_path / 'split'
    assert _run(*data, whole, '--steps', '6', '--save-every', '2') == 0
    assert _run(*data, split, '--steps', '6', '--save-every', '2', '--stop-at', '3') == 0
    assert not (split / 'teacher.safetensors').exists()
    assert json.loads((split / 'checkpoints' / 'step_0000003' / 'state.json').read_text())[
        'step'] == 3
    assert _run(*data, split, '--resume') == 0
    a, b = _log(whole), _log(split)
    np.testing.assert_array_equal(a[:, :6], b[:, :6])    # step, loss parts, lr (not the time)
    sa = load_mast3r(whole / 'teacher.safetensors').state_dict()
    sb = load_mast3r(split / 'teacher.safetensors').state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)


def _tiny_model(config: Path) -> MASt3R:
    torch.manual_seed(0)
    model = MASt3R(load_train_config(config).teacher.model.mast3r()).train()
    freeze_untrained(model)
    return model


def _ddp_worker(rank, world, port, data_dir, config, out_file):
    os.environ.update(MASTER_ADDR='127.0.0.1', MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group('gloo', rank=rank, world_size=world)
    model = _tiny_model(config)
    ddp = torch.nn.parallel.DistributedDataParallel(model)
    batch = _batch(data_dir, 4)
    shard = {k: v[rank * 2:(rank + 1) * 2] for k, v in batch.items()}
    cfg = load_train_config(config).teacher.train
    loss, _ = train_step(ddp, shard, torch.device('cpu'), cfg, None)
    loss.backward()
    if rank == 0:
        torch.save({k: p.grad for k, p in model.named_parameters() if p.grad is not None},
                   out_file)
    dist.destroy_process_group()


def test_ddp_two_processes_give_the_single_process_gradients(data, tmp_path):
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        port = s.getsockname()[1]
    out_file = tmp_path / 'grads.pt'
    mp.spawn(_ddp_worker, args=(2, port, data[0], data[1], out_file), nprocs=2, join=True)
    ddp_grads = torch.load(out_file, weights_only=True)
    model = _tiny_model(data[1])
    cfg = load_train_config(data[1]).teacher.train
    loss, _ = train_step(model, _batch(data[0], 4), torch.device('cpu'), cfg, None)
    loss.backward()
    ref = {k: p.grad for k, p in model.named_parameters() if p.grad is not None}
    # a trainable parameter without gradient would make DDP skip its bucket's all-reduce
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)
    assert ref.keys() == ddp_grads.keys() and len(ref) > 50
    diff = max(float((ddp_grads[k] - ref[k]).abs().max()) for k in ref)
    scale = max(float(g.abs().max()) for g in ref.values())
    assert diff <= 1e-5 * scale, (diff, scale)

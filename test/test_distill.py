"""Distillation losses and loop: zero at identity, gradients to the student only, learning."""
from dataclasses import replace
import json

import numpy as np
import pytest
import torch

from l3d_ros.dataset import StereoPair, write_pair
from l3d_ros.geometry import backproject, StereoCalib
from l3d_sim.synthetic import plane_pair
from l3d_train.data import cache_mast3r, PairDataset
from l3d_train.distill import (disparity_loss, feature_loss, FeatureProjector, Recipe,
                               recipe_loss, RECIPES, teacher_dims)
from l3d_train.mast3r import MASt3R, MASt3RConfig, save_safetensors
from l3d_train.students import StereoStudent, StudentSpec
from l3d_train.svd_init import svd_init_decoder
from l3d_train.teacher_train import right_view_points

TEACHER = StudentSpec(name='t', enc_dim=32, enc_depth=1, enc_heads=2, dec_dim=32, dec_depth=2,
                      dec_heads=2, patch_size=8, input_size=(32, 32), max_disp_px=8,
                      stem_dim=4, head_dim=8)
STUDENT = replace(TEACHER, name='s', enc_dim=16, dec_dim=16, dec_depth=1)


def _batch(teacher, seed=0):
    g = torch.Generator().manual_seed(seed)
    left = torch.rand(2, 1, 32, 32, generator=g)
    right = torch.roll(left, -2, dims=-1)                     # a 2 px disparity everywhere
    with torch.no_grad():
        res = teacher(left, right)
    return {'left': left, 'right': right, 't_disp': res['disp'], 't_conf': res['conf'],
            't_enc': res['enc'], 't_dec': torch.stack(res['dec'], dim=1),
            'gt_disp': torch.full_like(left, 2.0), 'gt_mask': torch.ones_like(left),
            'sparse_mask': (torch.rand(left.shape, generator=g) < 0.1).float()}


def test_losses_are_zero_at_identity():
    x = torch.rand(2, 1, 8, 8) + 0.5
    assert disparity_loss(x, x, torch.rand_like(x)) == 0
    proj = torch.nn.ModuleList([torch.nn.Identity()])
    tokens = torch.randn(2, 5, 16)
    assert feature_loss([tokens], [tokens], proj, margin=0.0) == pytest.approx(0.0, abs=1e-6)
    assert feature_loss([tokens], [-tokens], proj, margin=0.0) == pytest.approx(2.0)


def test_gradients_reach_the_student_only():
    torch.manual_seed(0)
    teacher, student = StereoStudent(TEACHER), StereoStudent(STUDENT)
    batch = _batch(teacher)
    proj = FeatureProjector(STUDENT, TEACHER)
    res = student(batch['left'], batch['right'])
    recipe_loss(res, batch, RECIPES['feature'], proj)['total'].backward()
    assert all(p.grad is None for p in teacher.parameters())
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in proj.parameters())
    # view 2's last decoder block feeds nothing the left-view head reads
    dead = f'decoder.dec_blocks2.{STUDENT.dec_depth - 1}.'
    missing = [n for n, p in student.named_parameters() if not n.startswith(dead)
               and (p.grad is None or p.grad.abs().sum() == 0)]
    assert missing == []


@pytest.mark.parametrize('name', ['output', 'feature', 'sparse-gt'])
def test_a_few_steps_lower_the_loss(name):
    torch.manual_seed(0)
    teacher, student = StereoStudent(TEACHER), StereoStudent(STUDENT)
    batch = _batch(teacher)
    recipe = RECIPES[name]
    proj = FeatureProjector(STUDENT, TEACHER) if recipe.feature else None
    params = list(student.parameters()) + (list(proj.parameters()) if proj else [])
    opt = torch.optim.Adam(params, lr=3e-3)
    losses = []
    for _ in range(15):
        loss = recipe_loss(student(batch['left'], batch['right']), batch, recipe, proj)['total']
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < 0.85 * losses[0]


def test_recipe_validation():
    with pytest.raises(ValueError, match='target'):
        Recipe(target='lidar')
    with pytest.raises(ValueError, match='need target=teacher'):
        Recipe(target='sparse_gt', feature=True)


# -- distillation from a MASt3R teacher -------------------------------------------------------

TINY_MAST3R = MASt3RConfig(img_size=(32, 32), enc_embed_dim=32, enc_depth=1, enc_num_heads=2,
                           dec_embed_dim=32, dec_depth=4, dec_num_heads=2, landscape_only=False,
                           output_mode='pts3d+desc8', dpt_feature_dim=16,
                           dpt_layer_dims=(8, 16, 16, 16))
PLANE_Z_M = 25.0


class PlaneTeacher(torch.nn.Module):
    """A MASt3R whose pointmaps are replaced by those of a fronto-parallel plane at PLANE_Z_M,
    in teacher units of 1/7 m (MASt3R's scale is arbitrary): a known answer for the cache."""

    def __init__(self, calib):
        super().__init__()
        self.net = MASt3R(TINY_MAST3R)
        self.cfg, self.decoder, self.calib = TINY_MAST3R, self.net.decoder, calib

    def forward(self, view1, view2):
        res1, res2 = self.net(view1, view2)
        h, w = view1['img'].shape[-2:]
        calib = self.calib.scaled(w, h)
        depth = np.full((h, w), PLANE_Z_M, np.float32)
        to_t = (lambda p: torch.from_numpy(np.nan_to_num(p, nan=-1.0) / 7.0)[None])
        res1['pts3d'] = to_t(backproject(depth, calib))
        res2['pts3d_in_other_view'] = to_t(right_view_points(depth, calib))
        return res1, res2


def test_mast3r_cache_recovers_metric_disparity_from_the_baseline(tmp_path):
    calib = StereoCalib(90.0, 90.0, 31.5, 31.5, 2.0, 64, 64)
    folders = []
    for i in range(2):
        left, right, depth = plane_pair(calib, PLANE_Z_M, seed=i)
        folders.append(tmp_path / f'p{i}')
        write_pair(folders[-1], StereoPair(f'p{i}', left, right, calib, depth))
    torch.manual_seed(0)
    teacher = PlaneTeacher(calib)
    size = (32, 48)                                   # student input (h, w)
    cache = cache_mast3r(teacher, folders, tmp_path / 'cache', size, patch=8)
    with np.load(cache / 'p0.npz') as z:
        t_disp, t_conf, t_enc, t_dec = z['t_disp'], z['t_conf'], z['t_enc'], z['t_dec']
    want = calib.fx * calib.baseline_m / PLANE_Z_M * size[1] / calib.width   # [px at w = 48]
    inner = t_disp[0, 4:-4, 8:-8]                     # away from the unmatched border strip
    np.testing.assert_allclose(inner, want, rtol=0.03)
    assert t_conf.shape == (1, *size) and (t_conf >= 0).all() and (t_conf <= 1).all()
    n_tokens = (size[0] // 8) * (size[1] // 8)        # resampled to the student's patch grid
    assert t_enc.shape == (n_tokens, 32) and t_dec.shape == (4, n_tokens, 32)
    data = PairDataset(folders, size, teacher_cache=cache, augment=False)
    assert set(data[0]) >= {'t_disp', 't_conf', 't_enc', 't_dec', 'gt_disp', 'sparse_mask'}


def test_mast3r_teacher_projects_into_the_student_decoder_and_aligns_features():
    torch.manual_seed(0)
    teacher = MASt3R(TINY_MAST3R).eval()
    spec = replace(STUDENT, dec_heads=2, dec_depth=2)
    assert teacher_dims(teacher) == (32, 32, 4)
    student = StereoStudent(spec)
    info = svd_init_decoder(teacher.decoder, student.decoder)
    assert info['layer_map'] == [0, 3] and 0.0 < info['energy_kept'] <= 1.0
    proj = FeatureProjector(spec, teacher)
    assert proj.layers == [0, 3]
    assert [p.out_features for p in proj.proj] == [32, 32, 32]


def test_distill_run_from_a_mast3r_checkpoint(tmp_path, capsys):
    from l3d_ros.cli import main as l3d
    calib = StereoCalib(90.0, 90.0, 31.5, 31.5, 2.0, 64, 64)
    for i in range(2):
        left, right, depth = plane_pair(calib, 20.0 + 5 * i, seed=i)
        write_pair(tmp_path / 'train' / f'p{i}', StereoPair(f'p{i}', left, right, calib, depth))
    torch.manual_seed(0)
    save_safetensors(MASt3R(replace(TINY_MAST3R, dec_embed_dim=64, dec_num_heads=4)),
                     tmp_path / 'teacher.safetensors')
    argv = ['distill', 'run', '--teacher', str(tmp_path / 'teacher.safetensors'), '--train',
            str(tmp_path / 'train'), '--work', str(tmp_path / 'work'), '--steps', '2',
            '--batch', '1', '--threads', '1', '--quiet', '--recipe', 'feature+svd']
    assert l3d(argv) == 0
    runs = list((tmp_path / 'work' / 'runs').glob('flight__feature+svd__2x1__*.json'))
    assert len(runs) == 1
    meta = json.loads(runs[0].read_text())
    assert meta['steps'] == 2 and meta['recipe']['svd_init'] and meta['recipe']['feature']
    assert meta['svd_init']['layer_map'] == [0, 3]          # teacher depth 4 -> student 2
    assert np.isfinite(meta['final_loss']['feat'])
    assert len(list((tmp_path / 'work' / 'teacher_cache').glob('*/p*.npz'))) == 2
    stamp = runs[0].stat().st_mtime_ns
    assert l3d(argv) == 0                                     # a finished run is reused
    assert runs[0].stat().st_mtime_ns == stamp

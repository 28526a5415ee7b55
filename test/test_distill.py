"""Distillation losses and loop: zero at identity, gradients to the student only, learning."""
from dataclasses import replace

import pytest
import torch

from l3d_train.distill import (disparity_loss, feature_loss, FeatureProjector, Recipe,
                               recipe_loss, RECIPES)
from l3d_train.students import StereoStudent, StudentSpec

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

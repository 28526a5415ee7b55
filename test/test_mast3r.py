"""MASt3R teacher: equality with the official code (stored fixture), safe loading, pair depth.

test/fixtures/mast3r_tiny/ was written by scripts/make_mast3r_fixture.py running the official
naver/mast3r code: a reduced model with seeded random weights in the official .pth layout, and
the official outputs for a landscape batch (2 pairs, 48x64) and a portrait pair (64x48).
"""
import argparse
import json
import os
from pathlib import Path
import pickle

import numpy as np
import pytest
import torch

from l3d_ros.geometry import StereoCalib
from l3d_train.mast3r import blocks, load_mast3r, parse_constructor, save_safetensors
from l3d_train.mast3r.checkpoint import read_pth
from l3d_train.mast3r.pair import teacher_depth

FIXTURE = Path(__file__).parent / 'fixtures' / 'mast3r_tiny'
CKPT = FIXTURE / 'mast3r_tiny.pth'
KEYS = {1: {'pts3d', 'conf', 'desc', 'desc_conf'},
        2: {'pts3d_in_other_view', 'conf', 'desc', 'desc_conf'}}


@pytest.fixture(scope='module')
def io():
    return dict(np.load(FIXTURE / 'io.npz'))


@pytest.fixture(scope='module')
def model():
    return load_mast3r(CKPT)


def run_case(model, io, case):
    views = [{'img': torch.from_numpy(io[f'{case}_img{i}']),
              'true_shape': torch.from_numpy(io[f'{case}_true_shape{i}'])} for i in (1, 2)]
    with torch.no_grad():
        return model(*views)


def rel_errors(results, io, case) -> dict[str, float]:
    """max |ours - official| / max |official| per output key (the scale-relative max error)."""
    errors = {}
    for i, res in zip((1, 2), results):
        assert set(res) == KEYS[i]
        for key, value in res.items():
            ref = io[f'{case}_res{i}_{key}']
            assert value.shape == ref.shape, key
            errors[f'res{i}.{key}'] = float(np.abs(value.numpy() - ref).max() / np.abs(ref).max())
    return errors


@pytest.mark.parametrize('case', ['land', 'port'])
def test_outputs_equal_official(model, io, case):
    errors = rel_errors(run_case(model, io, case), io, case)
    assert max(errors.values()) <= 1e-4, errors


def test_swapped_rope_axes_breaks_equality(model, io, monkeypatch):
    rope_forward = blocks.RoPE2D.forward
    monkeypatch.setattr(blocks.RoPE2D, 'forward',
                        lambda self, tokens, pos: rope_forward(self, tokens, pos.flip(-1)))
    errors = rel_errors(run_case(model, io, 'land'), io, 'land')
    assert max(errors.values()) > 1e-2, errors


def test_safetensors_round_trip(model, io, tmp_path):
    path = tmp_path / 'tiny.safetensors'
    save_safetensors(model, path)
    again = load_mast3r(path)
    for a, b in zip(run_case(model, io, 'land'), run_case(again, io, 'land')):
        for key in a:
            torch.testing.assert_close(a[key], b[key], rtol=0, atol=0)


def test_safetensors_with_hugging_face_config_json(model, io, tmp_path):
    """The Hugging Face layout of the official repositories: model.safetensors without
    metadata + config.json of the constructor's keyword arguments (lists, Infinity)."""
    from safetensors.torch import save_file
    from l3d_train.mast3r.checkpoint import constructor_string, to_official
    folder = tmp_path / 'hub'
    folder.mkdir()
    state = {k: v.contiguous() for k, v in to_official(model.state_dict()).items()}
    save_file(state, str(folder / 'model.safetensors'))
    with pytest.raises(ValueError, match='no constructor'):
        load_mast3r(folder / 'model.safetensors')
    _, kwargs = parse_constructor(constructor_string(model.cfg))
    text = json.dumps({k: list(v) if isinstance(v, tuple) else v for k, v in kwargs.items()})
    assert 'Infinity' in text
    (folder / 'config.json').write_text(text)
    again = load_mast3r(folder / 'model.safetensors')
    for a, b in zip(run_case(model, io, 'land'), run_case(again, io, 'land')):
        for key in a:
            torch.testing.assert_close(a[key], b[key], rtol=0, atol=0)


class _Evil:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f'touch {self.marker}',)


@pytest.mark.parametrize('how', ['pickle', 'torch_zip'])
def test_malicious_pth_is_refused_without_running(tmp_path, how):
    marker = tmp_path / 'pwned'
    payload = {'model': {'w': torch.zeros(1)}, 'args': _Evil(marker)}
    path = tmp_path / 'evil.pth'
    if how == 'pickle':
        path.write_bytes(pickle.dumps(payload))
    else:
        torch.save(payload, path)
    with pytest.raises(ValueError, match='refused to unpickle'):
        load_mast3r(path)
    assert not marker.exists()


def test_wrong_tensor_shape_is_named(tmp_path):
    state, text = read_pth(CKPT)
    state['enc_norm.weight'] = torch.zeros(5)
    path = tmp_path / 'bad.pth'
    torch.save({'model': state, 'args': argparse.Namespace(model=text)}, path)
    with pytest.raises(ValueError, match=r'encoder\.enc_norm\.weight: \(5,\)'):
        load_mast3r(path)


def test_constructor_parser_accepts_official_literals():
    name, kw = parse_constructor(
        "AsymmetricMASt3R(enc_depth=24, img_size=(512, 512), pos_embed='RoPE100', "
        "depth_mode=('exp', -inf, inf), conf_mode=('exp', 1, inf), landscape_only=False, "
        "desc_conf_mode=None, mlp_ratio=4.0)")
    assert name == 'AsymmetricMASt3R'
    assert kw['depth_mode'] == ('exp', -float('inf'), float('inf'))
    assert kw['img_size'] == (512, 512) and kw['landscape_only'] is False
    assert kw['desc_conf_mode'] is None and kw['enc_depth'] == 24


@pytest.mark.parametrize('text', [
    "AsymmetricMASt3R(enc_depth=__import__('os').system('touch x'))",
    'AsymmetricMASt3R(enc_depth=os.sep)',
    'AsymmetricMASt3R(img_size=tuple(512, 512))',
    "__import__('os').system('touch x')",
    'models.AsymmetricMASt3R(enc_depth=2)',
    'AsymmetricMASt3R(**kw)',
    'AsymmetricMASt3R(2)',
])
def test_constructor_parser_rejects_code(text):
    with pytest.raises(ValueError):
        parse_constructor(text)


def test_unknown_constructor_key_is_named(tmp_path):
    state, text = read_pth(CKPT)
    path = tmp_path / 'unknown.pth'
    torch.save({'model': state, 'args': argparse.Namespace(model=text[:-1] + ', warp=3)')},
               path)
    with pytest.raises(ValueError, match=r"unknown constructor keywords \['warp'\]"):
        load_mast3r(path)


class PlaneTeacher(torch.nn.Module):
    """Stand-in teacher with exact geometry: a tilted plane seen by a rectified pair, in
    teacher units (metres * 0.37) and with its own focal length (1.3 x the true one)."""

    def __init__(self, fx_px: float, cx_px: float, baseline_m: float):
        super().__init__()
        self.dummy = torch.nn.Parameter(torch.zeros(1))
        self.fx, self.cx, self.b = fx_px, cx_px, baseline_m
        self.units, self.f_t = 0.37, 1.3

    @staticmethod
    def depth_m(h, w):
        """A plane in normalised image coordinates, so any resolution sees the same scene."""
        v, u = np.mgrid[0:h, 0:w].astype(np.float64)
        return 20.0 + 5.0 * (u + 0.5) / w + 2.0 * (v + 0.5) / h

    def forward(self, view1, view2):
        h, w = view1['img'].shape[-2:]
        s = w / self.W                                         # resize factor of the input
        fx, cx = self.fx * s, (self.cx + 0.5) * s - 0.5
        f_t = self.f_t * fx
        v, u = np.mgrid[0:h, 0:w].astype(np.float64)
        z = self.depth_m(h, w) * self.units                   # same plane in both views (test)
        pts1 = np.stack([(u - cx) * z / f_t, v * z / f_t, z], -1)
        pts2 = np.stack([(u - cx) * z / f_t + self.b * self.units, v * z / f_t, z], -1)
        conf = torch.full((1, h, w), 3.0)
        return ({'pts3d': torch.tensor(pts1[None]), 'conf': conf},
                {'pts3d_in_other_view': torch.tensor(pts2[None]), 'conf': conf})


@pytest.mark.parametrize('shape', [(64, 96), (70, 100)])
def test_teacher_depth_recovers_metric_depth_from_baseline(shape):
    H, W = shape
    calib = StereoCalib(fx=80.0, fy=80.0, cx=W / 2, cy=H / 2, baseline_m=0.3, width=W, height=H)
    teacher = PlaneTeacher(calib.fx, calib.cx, calib.baseline_m)
    teacher.W = W
    rng = np.random.default_rng(0)
    left, right = rng.uniform(0, 1, (H, W)), rng.uniform(0, 1, (H, W, 3))
    depth_m, confidence = teacher_depth(teacher, left, right, calib)
    assert depth_m.shape == confidence.shape == (H, W) and depth_m.dtype == np.float32
    # (64, 96) runs unresized; (70, 100) runs at 64x96 and is resized back (bilinear keeps a
    # plane away from the border)
    np.testing.assert_allclose(depth_m[2:-2, 2:-2], teacher.depth_m(H, W)[2:-2, 2:-2],
                               rtol=1e-5 if shape == (64, 96) else 1e-3)
    np.testing.assert_allclose(confidence, 1 - 1 / 3.0, rtol=1e-6)

"""ONNX export and the torch-free runtime backend: parity, sha256 refusal, metric depth."""
import json
from pathlib import Path
import subprocess
import sys

import numpy as np
import pytest
import torch

from l3d_ros.backends.onnx_student import (disparity_to_result, EXPOSURE_GAIN_RANGE,
                                           match_exposure, OnnxStudentBackend)
from l3d_ros.config import StudentConfig
from l3d_ros.geometry import StereoCalib
from l3d_train.export import export_onnx, manifest_entry, training_input_mean, update_manifest
from l3d_train.students import StereoStudent, StudentSpec

SPEC = StudentSpec(name='tiny', enc_dim=32, enc_depth=1, enc_heads=2, dec_dim=32, dec_depth=1,
                   dec_heads=2, patch_size=8, input_size=(32, 48), max_disp_px=8, stem_dim=4,
                   head_dim=8)


@pytest.fixture(scope='module')
def exported(tmp_path_factory):
    torch.manual_seed(0)
    model = StereoStudent(SPEC).eval()
    folder = tmp_path_factory.mktemp('models')
    path = export_onnx(model, folder / 'tiny.onnx')
    update_manifest(folder, manifest_entry(model, path, 'tiny', {'recipe': 'test'}))
    return model, folder


def test_onnx_matches_torch(exported):
    model, folder = exported
    backend = OnnxStudentBackend.from_manifest(folder, StudentConfig(model='manifest.json'))
    rng = np.random.default_rng(0)
    left, right = rng.random((32, 48), np.float32), rng.random((32, 48), np.float32)
    disp, conf = backend.infer(left, right)
    with torch.no_grad():
        res = model(torch.from_numpy(left)[None, None], torch.from_numpy(right)[None, None])
    np.testing.assert_allclose(disp, res['disp'][0, 0].numpy(), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(conf, res['conf'][0, 0].numpy(), rtol=1e-4, atol=1e-4)


def test_sha256_mismatch_and_missing_file_are_refused(exported, tmp_path):
    _, folder = exported
    manifest = json.loads((folder / 'manifest.json').read_text())
    good = manifest['models'][0]['sha256']
    manifest['models'][0]['sha256'] = '0' * 64
    (tmp_path / 'manifest.json').write_text(json.dumps(manifest))
    (tmp_path / 'tiny.onnx').write_bytes((folder / 'tiny.onnx').read_bytes())
    with pytest.raises(ValueError, match=f'{good}.*{"0" * 64}'):
        OnnxStudentBackend.from_manifest(tmp_path, StudentConfig(model='manifest.json'))
    (tmp_path / 'tiny.onnx').unlink()
    with pytest.raises(FileNotFoundError, match='tiny.onnx'):
        OnnxStudentBackend.from_manifest(tmp_path, StudentConfig(model='manifest.json'))


def test_depth_from_the_baseline_not_a_learned_scale():
    calib = StereoCalib(fx=200.0, fy=200.0, cx=63.5, cy=31.5, baseline_m=2.0, width=128,
                        height=64)
    disp_in = np.full((32, 64), 5.0, np.float32)      # 5 px at half width = 10 px at full
    res = disparity_to_result(disp_in, np.full((32, 64), 0.8, np.float32), calib)
    assert res.depth_m.shape == (64, 128)
    np.testing.assert_allclose(res.depth_m, 200.0 * 2.0 / 10.0, rtol=1e-6)
    np.testing.assert_allclose(res.disparity_px, 10.0, rtol=1e-6)
    np.testing.assert_allclose(res.confidence, 0.8, rtol=1e-6)


def test_exposure_is_matched_with_one_gain_for_both_images():
    rng = np.random.default_rng(1)
    left = rng.uniform(0.4, 0.8, (32, 48)).astype(np.float32)      # a bright pair
    right = np.clip(left * 1.1, 0, 1)
    a, b = match_exposure(left, right, 0.24)
    assert 0.5 * (a.mean() + b.mean()) == pytest.approx(0.24, rel=1e-5)
    np.testing.assert_allclose(b / a, right / left, rtol=1e-5)     # the pair's match is kept
    assert a.dtype == np.float32 and a.max() <= 1.0
    dark = np.full((32, 48), 0.01, np.float32)                      # gain limited
    a, _ = match_exposure(dark, dark, 0.24)
    assert a.mean() == pytest.approx(0.01 * EXPOSURE_GAIN_RANGE[1])
    assert match_exposure(left, right, None)[0] is left
    assert match_exposure(0 * left, 0 * right, 0.24)[0].max() == 0


def test_manifest_input_mean_is_the_training_mean_and_is_used(exported, tmp_path):
    from l3d_ros.dataset import StereoPair, write_pair
    calib = StereoCalib(fx=40.0, fy=40.0, cx=23.5, cy=15.5, baseline_m=1.0, width=48, height=32)
    for i, level in enumerate((50, 100)):
        img = np.full((32, 48), level, np.uint8)
        write_pair(tmp_path / 'train' / f'pair_{i:05d}',
                   StereoPair(f'pair_{i:05d}', img, img, calib, None, None, np.eye(3),
                              np.zeros(3)))
    assert training_input_mean(tmp_path / 'train') == pytest.approx(75 / 255, abs=1e-4)
    model, folder = exported
    manifest = json.loads((folder / 'manifest.json').read_text())
    manifest['models'][0]['input_mean'] = 0.3
    (tmp_path / 'manifest.json').write_text(json.dumps(manifest))
    (tmp_path / 'tiny.onnx').write_bytes((folder / 'tiny.onnx').read_bytes())
    backend = OnnxStudentBackend.from_manifest(tmp_path, StudentConfig(model='manifest.json'))
    assert backend.input_mean == 0.3
    bright = np.full((32, 48), 0.9, np.float32)
    matched = np.full((32, 48), 0.3, np.float32)
    np.testing.assert_allclose(backend.infer(bright, bright)[0],
                               backend.infer(matched, matched)[0], rtol=1e-6)
    manifest['models'][0]['input_mean'] = 1.5
    (tmp_path / 'manifest.json').write_text(json.dumps(manifest))
    with pytest.raises(ValueError, match='input_mean=1.5'):
        OnnxStudentBackend.from_manifest(tmp_path, StudentConfig(model='manifest.json'))


def test_runtime_backend_never_imports_torch():
    code = ('import sys, l3d_ros.backends.onnx_student, l3d_ros.backends; '
            "sys.exit(1 if 'torch' in sys.modules else 0)")
    root = Path(__file__).resolve().parent.parent
    assert subprocess.run([sys.executable, '-c', code], cwd=root).returncode == 0

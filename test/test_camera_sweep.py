"""scripts/camera_sweep.py: its cameras are valid simulator configs, and the 12-bit copy."""
import importlib.util
from pathlib import Path

import cv2
import numpy as np
import pytest

spec = importlib.util.spec_from_file_location(
    'camera_sweep', Path(__file__).resolve().parents[1] / 'scripts' / 'camera_sweep.py')
camera_sweep = importlib.util.module_from_spec(spec)
spec.loader.exec_module(camera_sweep)


def test_every_camera_is_a_valid_simulator_config_with_its_overrides():
    for name, (overrides, what) in camera_sweep.CAMERAS.items():
        assert what
        sim = camera_sweep.camera_config(overrides)
        for section, values in overrides.items():
            for field, value in values.items():
                assert getattr(getattr(sim, section), field) == value, (name, field)
    for name, (base, change, what) in camera_sweep.DERIVED.items():
        assert what and callable(change) and base in camera_sweep.CAMERAS, name


def _pair_folder(root, left, right):
    folder = root / 'pair_00000'
    folder.mkdir(parents=True)
    cv2.imwrite(str(folder / 'left.png'), left)
    cv2.imwrite(str(folder / 'right.png'), right)
    (folder / 'calib.json').write_text('{}')
    return folder


def _read(folder, name):
    return cv2.imread(str(folder / name), cv2.IMREAD_UNCHANGED)


def test_twelve_bit_copy_shifts_16_bit_images_and_refuses_8_bit(tmp_path):
    img = np.array([[0, 16, 4095 * 16, 65535]], np.uint16)
    src = _pair_folder(tmp_path / 'src', img, img)
    change = camera_sweep.DERIVED['twelve_bit_in_16'][1]
    camera_sweep.derive(src.parent, tmp_path / 'dst', change, 0)
    for name in ('left.png', 'right.png'):
        np.testing.assert_array_equal(_read(tmp_path / 'dst' / 'pair_00000', name),
                                      [[0, 1, 4095, 4095]])
    assert (tmp_path / 'dst' / 'pair_00000' / 'calib.json').read_text() == '{}'
    src8 = _pair_folder(tmp_path / 'src8', img.astype(np.uint8), img.astype(np.uint8))
    with pytest.raises(ValueError, match='expected uint16'):
        camera_sweep.derive(src8.parent, tmp_path / 'dst8', change, 0)


def test_derived_cameras_change_the_images_as_named(tmp_path):
    rng = np.random.default_rng(0)
    texture = cv2.GaussianBlur(rng.uniform(0, 255, (64, 96)), (0, 0), 1.5)
    img = np.clip(60 + (texture - texture.mean()) * 4, 0, 255).astype(np.uint8)
    src = _pair_folder(tmp_path / 'src', img, img)
    out = {}
    for name in ('psf_blur', 'vignetting', 'gain_mismatch', 'srgb_gamma', 'vertical_offset'):
        camera_sweep.derive(src.parent, tmp_path / name, camera_sweep.DERIVED[name][1], 0)
        out[name] = tuple(_read(tmp_path / name / 'pair_00000', f).astype(float)
                          for f in ('left.png', 'right.png'))
    f = img.astype(float)

    def grad(a):
        return np.abs(np.diff(a, axis=1)).mean()

    assert grad(out['psf_blur'][0]) < 0.8 * grad(f)
    left, right = out['vignetting']
    assert left[0, 0] < 0.7 * f[0, 0] + 1 and abs(left[32, 48] - f[32, 48]) <= 1
    np.testing.assert_array_equal(out['gain_mismatch'][0], f)
    assert out['gain_mismatch'][1].mean() == pytest.approx(0.8 * f.mean(), rel=0.01)
    assert out['srgb_gamma'][0].mean() > 1.5 * f.mean()              # dark levels lifted
    left, right = out['vertical_offset']
    np.testing.assert_array_equal(left, f)
    half = 0.5 * (f[1:-1] + f[:-2])                 # 0.5 px lower: the mean of two rows
    assert np.abs(right[1:-1] - half).max() <= 1

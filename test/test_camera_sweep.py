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
        if overrides is None:                                 # derived from another camera
            continue
        sim = camera_sweep.camera_config(overrides)
        for section, values in overrides.items():
            for field, value in values.items():
                assert getattr(getattr(sim, section), field) == value, (name, field)


def test_twelve_bit_copy_shifts_16_bit_images_and_refuses_8_bit(tmp_path):
    src = tmp_path / 'src' / 'pair_00000'
    src.mkdir(parents=True)
    img = np.array([[0, 16, 4095 * 16, 65535]], np.uint16)
    cv2.imwrite(str(src / 'left.png'), img)
    (src / 'calib.json').write_text('{}')
    camera_sweep.shift_to_12_bit(src.parent, tmp_path / 'dst')
    out = cv2.imread(str(tmp_path / 'dst' / 'pair_00000' / 'left.png'), cv2.IMREAD_UNCHANGED)
    np.testing.assert_array_equal(out, [[0, 1, 4095, 4095]])
    assert (tmp_path / 'dst' / 'pair_00000' / 'calib.json').read_text() == '{}'
    cv2.imwrite(str(src / 'left.png'), img.astype(np.uint8))
    with pytest.raises(ValueError, match='expected uint16'):
        camera_sweep.shift_to_12_bit(src.parent, tmp_path / 'dst8')

"""scripts/stereo_ceiling.py: exact depth limited to what both cameras see, scored as `l3d eval`
scores a backend."""
import importlib.util
from pathlib import Path

import numpy as np

from l3d_ros.config import load_node_config
from l3d_ros.dataset import StereoPair, write_pair
from l3d_ros.geometry import StereoCalib
from l3d_ros.infer import DepthSource

spec = importlib.util.spec_from_file_location(
    'stereo_ceiling', Path(__file__).resolve().parents[1] / 'scripts' / 'stereo_ceiling.py')
stereo_ceiling = importlib.util.module_from_spec(spec)
spec.loader.exec_module(stereo_ceiling)


def test_ceiling_loses_the_left_strip_and_the_hazards_judged_from_it(tmp_path):
    calib = StereoCalib(700.0, 700.0, 127.5, 127.5, 2.0, 256, 256)
    depth = np.full((256, 256), 28.0, np.float32)                 # d = 50 px
    depth[120:140, 20:40] = 27.0                                  # a ~1 m block in the strip
    depth[120:140, 160:180] = 27.0                                # and one both cameras see
    hazard = np.zeros((256, 256), np.uint8)
    hazard[100:160, 0:60] = 1
    hazard[100:160, 140:200] = 1
    img = np.random.default_rng(0).integers(0, 255, (256, 256), dtype=np.uint8)
    write_pair(tmp_path / 'data' / 'pair_0',
               StereoPair('pair_0', img, img, calib, depth, hazard))
    out = stereo_ceiling.ceiling(tmp_path / 'data', DepthSource('oracle', load_node_config()))
    # 50 of 256 columns (51 on the block's rows) are unseen by the right camera
    assert abs(out['completeness_ceiling'] - (1 - 50.1 / 256)) < 2e-3
    assert out['hazard_f1_ceiling'] < out['hazard_f1_exact']
    assert out['hazard_recall_ceiling'] == 1.0          # the strip's block: unknown = hazard

"""scripts/uncertified_policy.py: the look phase's least-evidence rule replayed on an
uncertified landing's last map and judged on the ground truth."""
import importlib.util
import json
from pathlib import Path
import shutil

import numpy as np

spec = importlib.util.spec_from_file_location(
    'uncertified_policy',
    Path(__file__).resolve().parents[1] / 'scripts' / 'uncertified_policy.py')
uncertified_policy = importlib.util.module_from_spec(spec)
spec.loader.exec_module(uncertified_policy)
CONFIG = Path(__file__).resolve().parents[1] / 'config' / 'lunar_stereo.yaml'


def write_run(folder: Path, certified: bool, bias=(0.0, 0.0)) -> Path:
    """A landing on (0.1, 0.1) that no map certified: its last map grades the ground 70, a
    cell under the target 95 and ground 3-9 m east 55; truly, everything west of x = 2 m is
    a hazard (margin 2) and the rest safe (0.5)."""
    folder.mkdir(parents=True)
    shutil.copy(CONFIG, folder / 'params.yaml')
    occ = np.full((100, 100), 70, np.int8)                    # 0.2 m cells, 20 m square
    occ[50, 51] = 95
    occ[20:80, 65:95] = 55
    margin = np.full((100, 100), 0.5, np.float32)
    margin[:, :60] = 2.0                                      # true x < 2 m
    np.savez(folder / 'result.npz', map_occupancy=occ, map_cell_m=0.2,
             map_origin_xy_m=(-10.0 + bias[0], -10.0 + bias[1]), gt_margin=margin,
             gt_height_m=np.zeros_like(margin), gt_cell_m=0.2, gt_origin_xy_m=(-10.0, -10.0))
    (folder / 'result.json').write_text(json.dumps({
        'certified': certified, 'landed': True, 'ground_safe': False,
        'final_target_xy_m': [0.1 + bias[0], 0.1 + bias[1]], 'nominal_xy_m': [0.0, 0.0],
        'nav_bias_m': [bias[0], bias[1], 0.0]}))
    return folder


def test_least_evidence_spot_is_judged_at_its_true_ground(tmp_path):
    flown, judged, least = uncertified_policy.judge_run(write_run(tmp_path / 'a', False))
    assert (flown, judged, least) == (False, False, True)
    # the map in a navigation frame 1.5 m east of the truth: the same ground, the same verdicts
    shifted = uncertified_policy.judge_run(write_run(tmp_path / 'b', False, bias=(1.5, 0.0)))
    assert shifted == (False, False, True)
    assert uncertified_policy.judge_run(write_run(tmp_path / 'c', True)) is None
    assert uncertified_policy.judge_run(tmp_path / 'missing') is None


def test_judged_safe_needs_every_true_cell_under_the_footprint_known_and_safe():
    from l3d_ros.hazard import GridGeometry
    grid = GridGeometry((0.0, 0.0), 0.2, (50, 50))
    margin = np.full((50, 50), 0.5, np.float32)
    assert uncertified_policy.truly_safe((5.0, 5.0), (0.0, 0.0), margin, grid, 4.0)
    margin[25, 34] = 1.01                                     # 1.9 m east of (5, 5)
    assert not uncertified_policy.truly_safe((5.0, 5.0), (0.0, 0.0), margin, grid, 4.0)
    # a navigation frame 1 m east of the truth: the map point's true ground is 2.9 m from it
    assert uncertified_policy.truly_safe((5.0, 5.0), (1.0, 0.0), margin, grid, 4.0)
    margin[25, 34] = np.nan                                   # unknown is never safe
    assert not uncertified_policy.truly_safe((5.0, 5.0), (0.0, 0.0), margin, grid, 4.0)
    assert not uncertified_policy.truly_safe((30.0, 30.0), (0.0, 0.0), margin, grid, 4.0)

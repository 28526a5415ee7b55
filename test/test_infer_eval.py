"""`l3d infer` / `l3d eval`: metric definitions (INTERFACES.md section 6) and an oracle run."""
import argparse
import json

import numpy as np
import pytest

from l3d_ros import evaluate, infer
from l3d_ros.dataset import StereoPair, write_pair
from l3d_ros.evaluate import DepthCounts, HazardCounts
from l3d_ros.geometry import StereoCalib

NAN = np.nan


def test_depth_metrics_by_hand():
    gt = np.array([[10.0, 20.0, NAN, 40.0, 50.0]])
    pred = np.array([[11.0, 20.0, 5.0, NAN, 100.0]])
    c = DepthCounts()
    c.add(pred, gt)
    m = c.metrics()
    # scored: (11, 10), (20, 20), (100, 50): abs_rel (0.1 + 0 + 1) / 3
    assert m['abs_rel'] == pytest.approx(1.1 / 3)
    assert m['rmse_m'] == pytest.approx(np.sqrt((1 + 0 + 2500) / 3))
    assert m['delta_1_25'] == pytest.approx(2 / 3)
    assert m['completeness'] == pytest.approx(3 / 4)
    assert m['completeness_visible'] == m['completeness']       # no visibility given
    c.add(pred, gt, visible=np.array([[False, True, True, False, True]]))
    # this add: visible ground truth 20 and 50, both predicted; with the first add 5 of 6
    assert c.metrics()['completeness_visible'] == pytest.approx(5 / 6)


def test_depth_metrics_accumulate_over_pixels_not_pairs():
    c = DepthCounts()
    c.add(np.array([2.0]), np.array([1.0]))                  # abs_rel 1 on one pixel
    c.add(np.full(3, 1.0), np.full(3, 1.0))                  # 0 on three pixels
    assert c.metrics()['abs_rel'] == pytest.approx(0.25)


def test_hazard_metrics_by_hand():
    gt = np.array([1, 1, 0, 0, 1, 255, 0], np.uint8)
    pred = np.array([1, 255, 1, 0, 0, 1, 255], np.uint8)     # 255 predicted = hazard
    c = HazardCounts()
    c.add(pred, gt)
    assert (c.tp, c.fp, c.fn, c.tn) == (2, 2, 1, 1)
    m = c.metrics()
    assert m['hazard_precision'] == pytest.approx(0.5)
    assert m['hazard_recall'] == pytest.approx(2 / 3)
    assert m['hazard_f1'] == pytest.approx(2 * 0.5 * (2 / 3) / (0.5 + 2 / 3))


def _write_dataset(root, n=2, altitude_m=30.0):
    """Nadir pairs (the sim's fx, B) over flat ground `altitude_m` below with a 1 m block."""
    calib = StereoCalib(700.0, 700.0, 127.5, 127.5, 2.0, 256, 256)
    rng = np.random.default_rng(0)
    for i in range(n):
        depth = np.full((256, 256), altitude_m, np.float32)
        depth[120:140, 120:140] = altitude_m - 1.0                  # ~0.9 m block
        img = rng.integers(0, 255, (256, 256), dtype=np.uint8)
        write_pair(root / f'pair_{i}', StereoPair(f'pair_{i}', img, img, calib, depth,
                                                  np.zeros((256, 256), np.uint8)))
    return calib


def test_infer_oracle_writes_the_contract_files(tmp_path):
    _write_dataset(tmp_path / 'data')
    args = argparse.Namespace(dataset=tmp_path / 'data', out=tmp_path / 'out', backend='oracle',
                              config=None, stride=1, preview=True)
    assert infer.run(args) == 0
    for name in ('pair_0', 'pair_1'):
        out = tmp_path / 'out' / name
        depth, haz = np.load(out / 'depth.npy'), np.load(out / 'hazard.npy')
        conf = np.load(out / 'confidence.npy')
        assert depth.dtype == np.float32 and haz.dtype == np.uint8 and depth.shape == (256, 256)
        assert conf.dtype == np.float32 and conf.max() <= 1.0
        assert haz[130, 130] == 1                                   # on the block
        assert haz[60, 60] == 0                                     # 3.6 m from it: safe
        assert haz[5, 5] == 255                                     # disc off the swath
        assert set(np.unique(haz)) <= {0, 1, 255}
        assert (out / 'preview.png').is_file()


def test_eval_oracle_json(tmp_path):
    _write_dataset(tmp_path / 'data')
    args = argparse.Namespace(dataset=tmp_path / 'data', backend='oracle', config=None,
                              stride=2, json=tmp_path / 'm.json', md=tmp_path / 'm.md')
    assert evaluate.run(args) == 0
    m = json.loads((tmp_path / 'm.json').read_text())
    for key in ('n_pairs', 'backend', 'model', 'abs_rel', 'rmse_m', 'delta_1_25',
                'completeness', 'hazard_precision', 'hazard_recall', 'latency_ms_median',
                'latency_ms_p95', 'hazard_f1'):
        assert key in m
    assert m['n_pairs'] == 2 and m['backend'] == 'oracle'
    assert m['abs_rel'] == 0.0 and m['completeness'] == 1.0 and m['delta_1_25'] == 1.0
    assert m['completeness_visible'] == 1.0
    # the oracle's depth covers the strip the right camera misses: that strip is in the
    # denominator of completeness, not of completeness_visible
    assert m['depth_counts']['n_visible_gt'] < m['depth_counts']['n_valid_gt']
    assert m['hazard_precision'] == 0.0     # truth says all safe: every positive is false
    assert '| n_pairs | 2 |' in (tmp_path / 'm.md').read_text()


def test_oracle_depth_is_the_ground_truth_outside_the_node_range(tmp_path):
    """`--backend oracle` takes depth.npy as it is (INTERFACES.md section 6): depths beyond
    the node's depth_min_m / depth_max_m (10 / 400 m) stay; only NaN/inf/<= 0 are none."""
    _write_dataset(tmp_path / 'data', n=1)
    pair_dir = tmp_path / 'data' / 'pair_0'
    depth = np.load(pair_dir / 'depth.npy')
    depth[:10] = 450.0
    depth[10:20] = 5.0
    depth[20, :5] = np.inf
    depth[21, :5] = -1.0
    np.save(pair_dir / 'depth.npy', depth)
    args = argparse.Namespace(dataset=tmp_path / 'data', out=tmp_path / 'out', backend='oracle',
                              config=None, stride=2, preview=False)
    assert infer.run(args) == 0
    got = np.load(tmp_path / 'out' / 'pair_0' / 'depth.npy')
    conf = np.load(tmp_path / 'out' / 'pair_0' / 'confidence.npy')
    none = ~np.isfinite(depth) | (depth <= 0)
    np.testing.assert_array_equal(got[~none], depth[~none])
    assert np.isnan(got[none]).all() and (conf[none] == 0).all() and (conf[~none] == 1).all()


def test_oracle_carries_no_stereo_margin_at_altitude(tmp_path):
    """At 80 m the stereo sigma (~1.1 m) would leave nothing safe; exact depth needs none."""
    _write_dataset(tmp_path / 'data', n=1, altitude_m=80.0)
    args = argparse.Namespace(dataset=tmp_path / 'data', out=tmp_path / 'out', backend='oracle',
                              config=None, stride=1, preview=False)
    assert infer.run(args) == 0
    haz = np.load(tmp_path / 'out' / 'pair_0' / 'hazard.npy')
    assert haz[128, 128] == 1                                       # the block
    assert haz[128, 40] == 0 and haz[40, 128] == 0                  # 8 m from it: flat, safe


def test_oracle_hazard_on_simulated_scenes(tmp_path):
    """Issue 5's yardstick on simulator scenes (30-150 m, 512 px): the hazard pipeline fed the
    true depth (`--backend oracle`) finds the truth's hazards, precision and recall >= 0.95."""
    from l3d_ros.cli import main
    assert main(['sim', 'dataset', str(tmp_path / 'sim'), '--pairs', '8', '--seed', '7']) == 0
    assert main(['eval', str(tmp_path / 'sim'), '--backend', 'oracle',
                 '--json', str(tmp_path / 'm.json')]) == 0
    m = json.loads((tmp_path / 'm.json').read_text())
    assert m['n_pairs'] == 8
    assert m['hazard_precision'] >= 0.95 and m['hazard_recall'] >= 0.95, m

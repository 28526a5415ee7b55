"""The node serves the shipped student over ROS, and refuses a tampered one for SGBM."""
import dataclasses
import json
from pathlib import Path
import shutil
import subprocess
import sys

from diagnostic_msgs.msg import DiagnosticStatus
import numpy as np
import pytest

from l3d_ros import msg as conv
from l3d_ros.backends import finalize, make_backend, to_gray01
from l3d_ros.backends.subpixel import TEXTURE_MIN
from l3d_ros.config import load_node_config, replace, StudentConfig
from l3d_ros.dataset import list_pairs, read_pair
from l3d_ros.pipeline import StereoPipeline
from ros_harness import Peer, RunningNode, write_params

pytestmark = pytest.mark.ros
MANIFEST = Path(__file__).resolve().parent.parent / 'models' / 'manifest.json'


@pytest.fixture(scope='module')
def pair(tmp_path_factory):
    data = tmp_path_factory.mktemp('student_pair')
    subprocess.run([sys.executable, '-m', 'l3d_ros.cli', 'sim', 'dataset', str(data), '--pairs',
                    '1', '--seed', '4343', '--width', '256', '--height', '256'], check=True)
    return read_pair(list_pairs(data)[0])


def _values(diag) -> dict:
    return {kv.key: kv.value for s in diag.status for kv in s.values}


def _expected_depth(pair, backend_name: str, model: Path) -> np.ndarray:
    """The depth the node must publish: the backend's output under the node's validity rules."""
    cfg = load_node_config()
    cfg = replace(cfg, backend=backend_name, student=StudentConfig(model=str(model)))
    backend = make_backend(backend_name, cfg)
    raw = backend.compute(to_gray01(pair.left), to_gray01(pair.right), pair.calib)
    return finalize(raw.depth_m, raw.confidence, pair.calib, cfg.depth_min_m, cfg.depth_max_m,
                    cfg.confidence_min).depth_m


def _run_node(tmp_path, pair, manifest: Path, stamp_ns: int, binning: int = 1,
              encoding: str = 'mono8'):
    """Publish `pair` to a node serving `manifest`. The pair (seed 4343) is ground lit by
    earthshine alone, which the node matches binned by SGBM (l3d_ros.binning): binning 1
    keeps it at full resolution, so that the configured backend itself matches it."""
    params = write_params(tmp_path, backend='student', student={'model': str(manifest)},
                          low_light={'binning': binning})
    node, peer = RunningNode(params), Peer('l3d_student_peer')
    try:
        peer.wait_connected()
        depth = peer.wait_for('depth', lambda m: conv.stamp_to_ns(m.header.stamp) == stamp_ns,
                              timeout_s=60, republish=lambda: peer.publish_pair(
                                  pair.left, pair.right, pair.calib, stamp_ns, encoding,
                                  encoding))
        diag = peer.wait_for('/diagnostics', lambda m: int(_values(m).get('frames', 0)) >= 1,
                             timeout_s=30)
        first = peer.received['depth'][0]
    finally:
        peer.close()
        node.close()
    return conv.image_to_array(depth), conv.image_to_array(first), diag


def _assert_same_depth(got: np.ndarray, want: np.ndarray) -> None:
    both = np.isfinite(got) & np.isfinite(want)
    assert np.mean(np.isfinite(got) == np.isfinite(want)) > 0.999
    assert both.mean() > 0.5
    np.testing.assert_allclose(got[both], want[both], rtol=1e-4)


def test_node_publishes_the_student_depth(tmp_path, pair):
    manifest = json.loads(MANIFEST.read_text())
    entry = [m for m in manifest['models'] if m['name'] == manifest['default']][0]
    depth, _, diag = _run_node(tmp_path, pair, MANIFEST, 11_000_000_000)
    values = _values(diag)
    assert values['backend'] == 'student' and values['configured_backend'] == 'student'
    assert values['model_sha256'] == entry['sha256']
    assert float(values['last_frame_student_exposure_gain']) <= 4           # 8 bit
    assert float(values['last_frame_student_texture_min']) == TEXTURE_MIN
    # the pair's alignment check (backends/alignment.py): a matched pair, left as it is
    assert values['last_frame_pair_corrections'] == '0'
    assert abs(float(values['last_frame_pair_gain']) - 1) < 0.05
    # no ERROR (a refused model); a WARN for inputs dropped under load is allowed
    assert all(s.level != DiagnosticStatus.ERROR for s in diag.status)
    _assert_same_depth(depth, _expected_depth(pair, 'student', MANIFEST))


def test_tampered_model_falls_back_to_sgbm_in_the_first_frame(tmp_path, pair):
    manifest = json.loads(MANIFEST.read_text())
    for entry in manifest['models']:
        shutil.copy(MANIFEST.parent / entry['file'], tmp_path / entry['file'])
        entry['sha256'] = 'f' * 64                       # the file no longer matches
    tampered = tmp_path / 'manifest.json'
    tampered.write_text(json.dumps(manifest))
    depth, first, diag = _run_node(tmp_path, pair, tampered, 12_000_000_000)
    values = _values(diag)
    assert values['backend'] == 'sgbm' and values['configured_backend'] == 'student'
    assert values['model_sha256'] == ''
    assert any(s.level == DiagnosticStatus.ERROR for s in diag.status)
    want = _expected_depth(pair, 'sgbm', tampered)
    _assert_same_depth(first, want)                      # the very first frame is SGBM's
    _assert_same_depth(depth, want)


def test_earthshine_pair_is_matched_binned_by_sgbm_over_ros(tmp_path, pair):
    depth, _, diag = _run_node(tmp_path, pair, MANIFEST, 13_000_000_000, binning=2)
    values = _values(diag)
    assert values['backend'] == 'student'                # the student stays the primary
    assert values['last_frame_binning'] == '2' and values['last_frame_backend'] == 'sgbm'
    cfg = replace(load_node_config(), backend='student',
                  student=StudentConfig(model=str(MANIFEST)))
    want = StereoPipeline(cfg).process(pair.left, pair.right, pair.calib).result.depth_m
    _assert_same_depth(depth, want)


def test_node_reads_12_bit_data_in_mono16_as_the_8_bit_pair(tmp_path, pair):
    """A 12-bit camera whose driver publishes unshifted mono16 fills 1/16 of the grey scale.
    The student's exposure gain and texture test follow the images' scale and noise, so the
    node publishes the student's depth of the pair at 12 bits, agreeing with the 8-bit pair's
    where both have one (before, the 8-bit texture threshold called such frames flat). It
    keeps 82 % as many pixels on this earthshine pair: its noise estimate, inflated by texture
    as the 8-bit one is, raises a deeper image's threshold where the 8-bit rule is capped."""
    twelve = dataclasses.replace(pair, **{side: (getattr(pair, side).astype(np.uint32) * 4095
                                                 // 255).astype(np.uint16)
                                          for side in ('left', 'right')})
    depth, _, diag = _run_node(tmp_path, twelve, MANIFEST, 14_000_000_000, encoding='mono16')
    values = _values(diag)
    assert values['backend'] == 'student' and values['last_frame_backend'] == 'student'
    # the diagnostics say how the student read the images: lifted by more than the 8-bit
    # limit of 4, with a texture threshold below the 8-bit one
    assert float(values['last_frame_student_exposure_gain']) > 4
    assert float(values['last_frame_student_texture_min']) < TEXTURE_MIN
    assert values['last_frame_student_tiles'] == '1'
    want = _expected_depth(pair, 'student', MANIFEST)                  # the 8-bit pair's
    got_ok, want_ok = np.isfinite(depth), np.isfinite(want)
    assert want_ok.mean() > 0.9 and got_ok.sum() > 0.75 * want_ok.sum()
    both = got_ok & want_ok
    assert both.sum() > 0.95 * got_ok.sum()
    assert np.median(np.abs(depth[both] / want[both] - 1)) < 0.002

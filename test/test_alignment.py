"""The pair's gain field and row offset, read from its matches, and the right image corrected;
both backends match a misaligned pair as well as an aligned one."""
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import pytest

from l3d_ros.backends import alignment
from l3d_ros.backends.alignment import (correct_right, estimate_mismatch, matched_aligned,
                                        PairMismatch)
from test_subpixel import textured_pair

DISPARITY_PX = 6.3


def misaligned(right, gain=1.0, gain_x=0.0, gain_y=0.0, dy_px=0.0, shift_px=DISPARITY_PX):
    """`right` as a camera with that gain field relative to the left one (placed at the left
    pixels, shift_px to the right of the right ones) and rows dy_px off would take it:
    I_right'(u, v) = I_right(u, v - dy) / g, so that I_left = g I_right'(x - d, y + dy)."""
    h, w = right.shape
    cols = np.broadcast_to(np.arange(w, dtype=np.float32), (h, w))
    rows = np.broadcast_to(np.arange(h, dtype=np.float32)[:, None] - np.float32(dy_px), (h, w))
    moved = cv2.remap(right, np.ascontiguousarray(cols), np.ascontiguousarray(rows),
                      cv2.INTER_CUBIC, borderMode=cv2.BORDER_REPLICATE)
    x = (cols + shift_px - (w - 1) / 2) / ((w - 1) / 2)      # the left pixel's position
    y = (rows - (h - 1) / 2) / ((h - 1) / 2)
    return np.clip(moved / (gain + gain_x * x + gain_y * y), 0, 1).astype(np.float32)


def pair(seed=0):
    left, right, d = textured_pair(DISPARITY_PX, shape=(160, 224), seed=seed,
                                   wavelengths_px=(5.0, 24.0))
    return 0.1 + 0.8 * left, 0.1 + 0.8 * right, d


@pytest.mark.parametrize('truth', [dict(gain=1.25), dict(gain=0.9, gain_x=0.04, gain_y=-0.03),
                                   dict(dy_px=0.5), dict(gain=1.1, dy_px=-0.3)])
def test_the_fit_recovers_gain_field_and_row_offset_from_true_matches(truth):
    left, right, d = pair()
    bad = misaligned(right, **truth)
    assert estimate_mismatch(left, bad, d).needs_correction           # the per-frame check
    m = estimate_mismatch(left, bad, d, 0, alignment.FIT_ITERATIONS)
    want = PairMismatch(**{'gain': 1.0, 'gain_x': 0.0, 'gain_y': 0.0, 'dy_px': 0.0,
                           'pixels': 0, **truth})
    assert m.gain == pytest.approx(want.gain, abs=0.01)
    assert m.gain_x == pytest.approx(want.gain_x, abs=0.01)
    assert m.gain_y == pytest.approx(want.gain_y, abs=0.01)
    assert m.dy_px == pytest.approx(want.dy_px, abs=0.06)
    assert m.needs_correction


def test_an_aligned_pair_needs_no_correction_and_noisy_matches_do_not_make_one():
    left, right, d = pair()
    assert not estimate_mismatch(left, right, d).needs_correction
    rng = np.random.default_rng(1)        # a first pass's matches: 0.3 px errors, 10 % wild
    noisy = d + rng.normal(0, 0.3, d.shape).astype(np.float32)
    wild = rng.random(d.shape) < 0.1
    noisy[wild] += rng.uniform(-8, 8, wild.sum()).astype(np.float32)
    m = estimate_mismatch(left, right, noisy)
    assert abs(m.gain - 1) < 0.02 and abs(m.dy_px) < 0.1 and not m.needs_correction
    m = estimate_mismatch(left, misaligned(right, gain=1.25), noisy)
    assert m.gain == pytest.approx(1.25, abs=0.05) and m.needs_correction


def test_correction_restores_the_right_image():
    left, right, d = pair()
    truth = dict(gain=0.85, gain_x=0.05, dy_px=0.4)
    bad = misaligned(right, **truth)
    fixed = correct_right(bad, estimate_mismatch(left, bad, d), d)
    inner = (slice(8, -8), slice(8, -8))
    assert np.abs(fixed - right)[inner].mean() < 0.1 * np.abs(bad - right)[inner].mean()


def test_matching_runs_again_on_the_corrected_image_only_when_needed():
    left, right, d = pair()
    calls = []

    def match(lft, rgt):
        calls.append(rgt)
        return d, 'rest'

    values = {'pair_gain': 9.0, 'other': 1}
    out, used = matched_aligned(match, left, right, values)
    assert len(calls) == 1 and used is right and out == (d, 'rest')
    assert values['pair_corrections'] == 0 and values['other'] == 1
    assert abs(values['pair_gain'] - 1) < 0.01            # this frame's fit, not the last one's
    calls.clear()
    bad = misaligned(right, gain=1.25, dy_px=0.5)
    out, used = matched_aligned(match, left, bad, values)
    assert len(calls) == 2 and calls[0] is bad and calls[1] is used     # true matches: once
    assert values['pair_corrections'] == 1
    assert values['pair_gain'] == pytest.approx(1.25, 0.01)
    assert values['pair_dy_px'] == pytest.approx(0.5, abs=0.03)
    assert np.abs(used - right)[8:-8, 8:-8].mean() < 0.1 * np.abs(bad - right)[8:-8, 8:-8].mean()
    calls.clear()                                     # nothing matched: no fit, one run
    out, used = matched_aligned(lambda lft, rgt: (np.full_like(d, np.nan),), left, bad, values)
    assert used is bad and values['pair_fit_pixels'] == 0 and 'pair_gain' not in values
    assert values['pair_corrections'] == 0


def test_misalignments_compose_as_gain_fields_multiply_and_offsets_add():
    a = PairMismatch(1.2, 0.1, -0.05, 0.3, 10)
    b = PairMismatch(0.9, 0.02, 0.01, -0.1, 20)
    ab = a.then(b)
    x, y = 0.5, -0.25
    assert ab.gain + ab.gain_x * x + ab.gain_y * y == pytest.approx(
        (a.gain + a.gain_x * x + a.gain_y * y) * (b.gain + b.gain_x * x + b.gain_y * y),
        abs=abs(a.gain_x * b.gain_x) + abs(a.gain_y * b.gain_y) + 0.01)
    assert ab.dy_px == pytest.approx(0.2) and ab.pixels == 20


def test_a_badly_misaligned_pair_is_corrected_until_its_matches_show_no_more():
    left, right, d = pair()
    rng = np.random.default_rng(2)
    calls = []

    def match(lft, rgt):              # a matcher that errs more the worse the pair's gains agree
        calls.append(rgt)
        off = abs(float(np.mean(rgt)) / float(np.mean(lft)) - 1)
        return (d + rng.normal(0, 0.3 + 10 * off, d.shape).astype(np.float32),)

    values = {}
    _, used = matched_aligned(match, left, misaligned(right, gain=1.4, dy_px=0.6), values)
    assert 2 <= len(calls) <= 1 + alignment.MAX_CORRECTIONS
    assert values['pair_corrections'] == len(calls) - 1
    assert values['pair_gain'] == pytest.approx(1.4, abs=0.03)
    assert values['pair_dy_px'] == pytest.approx(0.6, abs=0.06)


def test_a_fit_beyond_any_camera_pair_corrects_nothing():
    assert not PairMismatch(3.0, 0.0, 0.0, 0.0, 10 ** 5).needs_correction
    assert not PairMismatch(1.0, 0.0, 0.0, 5.0, 10 ** 5).needs_correction
    assert PairMismatch(1.0, 0.0, 0.0, 0.5, 10 ** 5).needs_correction
    edge = PairMismatch(1.0 + alignment.GAIN_TOLERANCE / 2, alignment.RAMP_TOLERANCE / 4,
                        -alignment.RAMP_TOLERANCE / 8, alignment.DY_TOLERANCE_PX / 2, 10 ** 5)
    assert not edge.needs_correction
    assert replace(edge, gain_x=alignment.RAMP_TOLERANCE).needs_correction
    assert not edge.needs_correction
    left, right, _ = pair()
    assert estimate_mismatch(left, right, np.full(left.shape, np.nan, np.float32)) is None


def test_bad_input_names_the_shapes():
    left, right, d = pair()
    with pytest.raises(ValueError, match=r'disparity \(3, 4\)'):
        estimate_mismatch(left, right, np.zeros((3, 4), np.float32))


SHIPPED = Path(__file__).resolve().parent.parent / 'models' / 'manifest.json'


@pytest.mark.parametrize('backend', ['student', 'sgbm'])
def test_backends_match_a_pair_of_unequal_gains_and_offset_rows_as_an_aligned_one(
        backend, monkeypatch):
    """The right camera at 0.85x the left's gain with its rows 0.5 px off: matched as is,
    this 40-60 m pair's AbsRel was 10x the aligned pair's (student 0.0096 against 0.00087,
    SGBM 0.011 against 0.0011); corrected, 1.15x and 0.86x of it."""
    from l3d_ros.backends import make_backend
    from l3d_ros.config import load_node_config
    from test_onnx_student import _sim_pair
    cfg = load_node_config()
    matcher = make_backend(backend, cfg)
    left, right, frame = _sim_pair((40.0, 60.0), 21)
    bad = misaligned(right, gain=1 / 0.85, dy_px=0.5, shift_px=0.0)
    truth = frame.depth_m

    def scored(r):
        res = matcher.compute(left, r, frame.calib)
        ok = np.isfinite(truth) & np.isfinite(res.depth_m) & (res.confidence >= 0.3)
        return ok.sum() / np.isfinite(truth).sum(), float(np.mean(
            np.abs(res.depth_m[ok] / truth[ok] - 1)))

    kept, err = scored(right)
    assert matcher.last_values['pair_corrections'] == 0
    assert kept > 0.7
    fixed_kept, fixed_err = scored(bad)
    assert matcher.last_values['pair_corrections'] >= 1
    assert matcher.last_values['pair_gain'] == pytest.approx(1 / 0.85, abs=0.03)
    assert matcher.last_values['pair_dy_px'] == pytest.approx(0.5, abs=0.1)
    assert fixed_kept > kept - 0.03 and fixed_err < 1.5 * err
    for name in ('GAIN_TOLERANCE', 'RAMP_TOLERANCE', 'DY_TOLERANCE_PX'):    # as before
        monkeypatch.setattr(alignment, name, np.inf)
    raw_kept, raw_err = scored(bad)
    assert raw_err > 3 * fixed_err


def test_the_pipeline_reports_a_misaligned_pair_and_warns_when_it_persists():
    """As the node runs it: the frame's pair_* values reach the diagnostics (from whichever
    backend matched it); a pair corrected MISALIGNED_FRAMES_WARN frames in a row is a warning
    to recalibrate (one frame's gains can differ by the ground's photometry)."""
    from l3d_ros.config import load_node_config
    from l3d_ros.pipeline import MISALIGNED_FRAMES_WARN, StereoPipeline
    from test_onnx_student import _sim_pair
    pipe = StereoPipeline(load_node_config())
    left, right, frame = _sim_pair((40.0, 60.0), 21)
    left8 = np.round(255 * left).astype(np.uint8)
    bad8 = np.round(255 * misaligned(right, gain=1.25, dy_px=-0.4, shift_px=0.0)
                    ).astype(np.uint8)                              # as a mono8 camera
    warned = []
    for i in range(MISALIGNED_FRAMES_WARN):
        out = pipe.process(left8, bad8, frame.calib)
        assert out.backend_values['pair_corrections'] >= 1
        assert out.backend_values['pair_dy_px'] == pytest.approx(-0.4, abs=0.05)
        assert out.backend_values['pair_gain'] == pytest.approx(1.25, abs=0.02)
        warned.append([f for f in out.faults if 'misaligned' in f])
    assert warned[:-1] == [[]] * (MISALIGNED_FRAMES_WARN - 1)
    assert warned[-1] == [f'stereo pair misaligned in {MISALIGNED_FRAMES_WARN} or more frames '
                          'in a row (gains or rows, last_frame_pair_*): right images corrected '
                          'and matched again; recalibrate the pair']
    out = pipe.process(left8, bad8, frame.calib)            # the same words: listed once
    assert [f for f in out.faults if 'misaligned' in f] == warned[-1]
    out = pipe.process(left, right, frame.calib)
    assert out.backend_values['pair_corrections'] == 0 and pipe.misaligned_streak == 0
    assert not any('misaligned' in f for f in out.faults)


def test_eval_counts_the_pairs_it_corrected(tmp_path):
    """`l3d eval` as the node: a pair of unequal gains is corrected and counted
    (corrected_pairs), and scored as its matched twin."""
    from l3d_ros.config import load_node_config
    from l3d_ros.dataset import StereoPair, write_pair
    from l3d_ros.evaluate import evaluate
    from l3d_ros.infer import DepthSource
    from l3d_sim.config import load_sim_config
    from l3d_sim.dataset import render_pair
    cfg = load_node_config()
    frame, hazard = render_pair(load_sim_config(), cfg.hazard, 21, 0)[:2]
    dim = np.round(frame.right * 0.8).astype(np.uint8)                # right gain 0.8x
    for name, right in (('matched', frame.right), ('dim', dim)):
        write_pair(tmp_path / name / 'pair_00000', StereoPair(
            'pair_00000', frame.left, right, frame.calib, frame.depth_m, hazard))
    m = {name: evaluate(tmp_path / name, DepthSource('sgbm', cfg))
         for name in ('matched', 'dim')}
    assert m['matched']['corrected_pairs'] == 0 and m['dim']['corrected_pairs'] == 1
    assert m['dim']['abs_rel'] < 1.3 * m['matched']['abs_rel']
    assert m['dim']['completeness'] > m['matched']['completeness'] - 0.02


def test_a_binned_pair_matched_by_sgbm_for_the_student_is_listed_when_corrected():
    """low_light.backend: sgbm matches the student's binned pairs; their corrections count."""
    from l3d_ros.config import load_node_config
    from l3d_ros.dataset import StereoPair
    from l3d_ros.infer import DepthSource
    from test_onnx_student import _sim_pair
    left, right, frame = _sim_pair((40.0, 60.0), 21)
    source = DepthSource('student', load_node_config())
    pair = StereoPair('pair_00000', left, right, frame.calib)
    source.raw(pair, left, misaligned(right, gain=1.25, shift_px=0.0), binned=True)
    assert len(source.corrected) == 1 and 'pair_00000: pair misaligned' in source.corrected[0]
    assert 'of the binned pair' in source.corrected[0] and source.fallbacks == []

"""The pipeline's backend fallback: a failing or lying model never yields a safe site."""
import numpy as np
import pytest

from l3d_ros.backends.base import DepthResult
from l3d_ros.config import HazardConfig, StereoNodeConfig, StudentConfig
from l3d_ros.geometry import nadir_pose, StereoCalib
from l3d_ros.pipeline import RETRY_PRIMARY_EVERY, StereoPipeline
from l3d_sim.synthetic import plane_pair

CALIB = StereoCalib(400.0, 400.0, 159.5, 119.5, 0.5, 320, 240)
CFG = StereoNodeConfig(depth_min_m=2.0, depth_max_m=50.0, max_missed_frames=2,
                       hazard=HazardConfig(footprint_m=0.5, cell_m=0.05, map_size_m=20.0))


class FakeStudent:
    """Stands in for the ONNX student: scripted to raise or to return given depth."""

    name, sha256 = 'student', 'f' * 64

    def __init__(self, behaviour):
        self.behaviour, self.calls = behaviour, 0

    def compute(self, left, right, calib):
        self.calls += 1
        kind = self.behaviour(self.calls)
        if kind == 'raise':
            raise RuntimeError('onnxruntime: bad alloc')
        depth = np.full(calib.shape, 4.0 if kind == 'ok' else np.nan, np.float32)
        if kind == 'inf':
            depth[:] = np.inf
        conf = np.ones(calib.shape, np.float32)
        return DepthResult(depth, conf, np.full(calib.shape, 50.0, np.float32))


def pipeline_with(behaviour) -> StereoPipeline:
    pipe = StereoPipeline(CFG)
    pipe.primary = FakeStudent(behaviour)
    return pipe


@pytest.fixture(scope='module')
def pair():
    left, right, _ = plane_pair(CALIB, 4.0, seed=21)
    return left, right


def test_exception_mid_run_falls_back_within_the_frame(pair):
    pipe = pipeline_with(lambda n: 'raise' if n == 2 else 'ok')
    first = pipe.process(*pair, CALIB)
    second = pipe.process(*pair, CALIB)
    assert first.backend == 'student' and second.backend == 'sgbm'
    assert 'bad alloc' in second.faults[0]
    assert np.isfinite(second.result.depth_m).mean() > 0.5      # SGBM depth, this very frame
    assert pipe.process(*pair, CALIB).backend == 'student'       # recovered at once


def test_persistent_failure_stays_on_sgbm_and_retries_later(pair):
    pipe = pipeline_with(lambda n: 'raise')
    backends = [pipe.process(*pair, CALIB).backend for _ in range(CFG.max_missed_frames + 3)]
    assert set(backends) == {'sgbm'}
    assert pipe.primary.calls == CFG.max_missed_frames          # stopped hammering the model
    pipe.on_fallback_frames = RETRY_PRIMARY_EVERY
    pipe.process(*pair, CALIB)
    assert pipe.primary.calls == CFG.max_missed_frames + 1       # and tries it again later


@pytest.mark.parametrize('kind', ['nan', 'inf'])
def test_non_finite_model_output_is_unknown_never_safe(pair, kind):
    pipe = pipeline_with(lambda n: kind)
    out = pipe.process(*pair, CALIB, nadir_pose(4.0))
    assert not np.isfinite(out.result.depth_m).any()
    assert out.hazard.site is None
    assert (out.hazard.pixel_hazard == 255).all()
    assert (out.hazard.occupancy == -1).all()


def test_refused_model_is_reported_and_sgbm_runs(tmp_path, pair):
    missing = StereoNodeConfig(backend='student', depth_min_m=2.0, depth_max_m=50.0,
                               student=StudentConfig(model=str(tmp_path / 'absent.json')))
    pipe = StereoPipeline(missing)
    assert pipe.primary is None and 'refused' in pipe.init_fault
    assert pipe.process(*pair, CALIB).backend == 'sgbm'

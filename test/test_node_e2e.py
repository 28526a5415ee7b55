"""End to end over real DDS: a separate process runs l3d_stereo; this test is its camera."""
import time

from diagnostic_msgs.msg import DiagnosticStatus
import numpy as np
import pytest

from l3d_ros import msg as conv
from l3d_ros.geometry import StereoCalib
from l3d_sim.synthetic import plane_pair
from ros_harness import diag_value, Peer, RunningNode, write_near_params

pytestmark = pytest.mark.ros
CALIB = StereoCalib(400.0, 400.0, 159.5, 119.5, 0.5, 320, 240)


@pytest.fixture(scope='module')
def ros(tmp_path_factory):
    # a 3 m wide view: a 0.5 m "footprint" so the hazard disc fits many times in it
    params = write_near_params(tmp_path_factory.mktemp('params'),
                               hazard={'roughness_max_m': 0.05, 'divert_max_m': 5.0})
    node, peer = RunningNode(params), Peer()
    yield node, peer
    peer.close()
    node.close()


def stamp_is(ns):
    return lambda m: conv.stamp_to_ns(m.header.stamp) == ns


@pytest.mark.parametrize('depth_m, tilt_deg, stamp_ns',
                         [(4.0, 0.0, 1_000_000_000), (5.0, 30.0, 2_000_000_000)])
def test_depth_and_points_of_a_textured_plane(ros, depth_m, tilt_deg, stamp_ns):
    node, peer = ros
    left, right, truth = plane_pair(CALIB, depth_m, tilt_deg, seed=7)
    send = (lambda: peer.publish_pair(left, right, CALIB, stamp_ns))
    depth_msg = peer.wait_for('depth', stamp_is(stamp_ns), republish=send)
    assert depth_msg.encoding == '32FC1' and depth_msg.header.frame_id == 'l3d_left_optical'
    depth = conv.image_to_array(depth_msg)
    u = np.arange(CALIB.width)[None, :]
    visible = np.isfinite(truth) & (u >= CALIB.fx * CALIB.baseline_m / truth)
    good = np.abs(depth - truth) < 0.01 * truth
    assert (good & visible).sum() / visible.sum() >= 0.95

    cloud = peer.wait_for('points', stamp_is(stamp_ns))
    assert [f.name for f in cloud.fields] == ['x', 'y', 'z', 'intensity', 'confidence']
    assert cloud.header.frame_id == 'l3d_left_optical'
    assert (cloud.height, cloud.width) == CALIB.shape
    fields = conv.pointcloud2_to_arrays(cloud)
    np.testing.assert_array_equal(fields['z'], depth)      # z of the cloud is the depth
    finite = np.isfinite(depth)
    v = np.arange(CALIB.height)[:, None].repeat(CALIB.width, 1)
    np.testing.assert_allclose(fields['y'][finite],
                               ((v - CALIB.cy) * depth / CALIB.fy)[finite], rtol=1e-5)
    assert ((fields['confidence'] >= 0) & (fields['confidence'] <= 1)).all()
    assert node.alive()


def test_bad_frame_is_reported_and_the_node_keeps_working(ros):
    node, peer = ros
    left, right, _ = plane_pair(CALIB, 4.0, seed=8)
    small = right[:, :300].copy()
    peer.publish_pair(left, small, CALIB, 3_000_000_000)        # right size differs
    diag = peer.wait_for('/diagnostics', lambda m: any(
        '300' in kv.value for s in m.status for kv in s.values
        if kv.key in ('last_fault', 'recent_faults')),
        timeout_s=15, republish=lambda: peer.publish_pair(left, small, CALIB, 3_000_000_000))
    assert diag.status[0].level in (DiagnosticStatus.WARN, DiagnosticStatus.ERROR)
    good = peer.wait_for('depth', stamp_is(4_000_000_000),
                         republish=lambda: peer.publish_pair(left, right, CALIB, 4_000_000_000))
    assert np.isfinite(conv.image_to_array(good)).mean() > 0.5
    assert node.alive()


@pytest.mark.parametrize('tilt_deg, stamp_ns, safe', [(0.0, 5_000_000_000, True),
                                                      (30.0, 6_000_000_000, False)])
def test_hazard_map_and_safe_site(ros, tilt_deg, stamp_ns, safe):
    """Nadir view (no camera_pose): a level plane is safe ground, a 30 deg one is a hazard."""
    _, peer = ros
    left, right, _ = plane_pair(CALIB, 4.0, tilt_deg, seed=9)
    grid = peer.wait_for('hazard_map', stamp_is(stamp_ns), republish=lambda: peer.publish_pair(
        left, right, CALIB, stamp_ns))
    assert grid.header.frame_id == 'map'
    values, cell_m, _ = conv.occupancy_grid_to_array(grid)
    assert cell_m == pytest.approx(0.05)
    known = values[values >= 0]
    assert known.size > 100
    if safe:
        assert (known < 50).mean() > 0.8                 # 0..49: safe, graded by margin
        site = peer.wait_for('safe_site', stamp_is(stamp_ns))
        assert site.header.frame_id == 'map'
        # /diagnostics tells what the newest frame could see: this map's shares, a site
        safe_share = ((values >= 0) & (values < 50)).mean()
        diag = peer.wait_for('/diagnostics', lambda m: abs(float(diag_value(
            m, 'last_frame_map_safe_share', 'nan')) - safe_share) < 1e-3)
        assert diag_value(diag, 'last_frame_site_found') == 'True'
        assert float(diag_value(diag, 'last_frame_map_known_share')) == pytest.approx(
            (values >= 0).mean(), abs=1e-3)
        assert float(diag_value(diag, 'last_frame_valid_depth_share')) > 0.5
    else:
        assert (known == 100).mean() > 0.95
        peer.wait_for('depth', stamp_is(stamp_ns))          # the frame is fully processed
        time.sleep(0.5)
        with peer.lock:
            assert not [m for m in peer.received['safe_site'] if stamp_is(stamp_ns)(m)]
        # no earlier frame of this node lacked a site: only this one can report none
        diag = peer.wait_for('/diagnostics', lambda m: diag_value(
            m, 'last_frame_site_found', '') == 'False')
        assert float(diag_value(diag, 'last_frame_map_safe_share')) < 0.05

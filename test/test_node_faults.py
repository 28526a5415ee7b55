"""Faults injected over DDS: the node stays alive, says what happened, publishes nothing unsafe."""
import math
import time

from hypothesis import given, HealthCheck, settings, strategies as st
import numpy as np
import pytest
from sensor_msgs.msg import Image

from l3d_ros import msg as conv
from l3d_ros.geometry import StereoCalib
from l3d_sim.synthetic import plane_pair
from ros_harness import diag_value, Peer, RunningNode, Sink, write_near_params

pytestmark = pytest.mark.ros
CALIB = StereoCalib(400.0, 400.0, 159.5, 119.5, 0.5, 320, 240)


@pytest.fixture(scope='module')
def ros(tmp_path_factory):
    params = write_near_params(tmp_path_factory.mktemp('params'))
    node, peer = RunningNode(params), Peer('l3d_fault_peer')
    left, right, _ = plane_pair(CALIB, 4.0, seed=3)
    peer.wait_for('depth', republish=lambda: peer.publish_pair(left, right, CALIB, 1))  # warm
    yield node, peer
    peer.close()
    node.close()


def stamp_is(ns):
    return lambda m: conv.stamp_to_ns(m.header.stamp) == ns


def last_fault_contains(text):
    return lambda m: any(text in kv.value for s in m.status for kv in s.values
                         if kv.key in ('last_fault', 'recent_faults'))


def assert_processed_after(peer, stamp_ns, seed=4):
    """A good pair sent after the faults is processed: the node is alive and working."""
    left, right, _ = plane_pair(CALIB, 4.0, seed=seed)
    depth = peer.wait_for('depth', stamp_is(stamp_ns), republish=lambda: peer.publish_pair(
        left, right, CALIB, stamp_ns))
    assert np.isfinite(conv.image_to_array(depth)).mean() > 0.5


def no_output_with_stamp(peer, ns):
    with peer.lock:
        return not any(stamp_is(ns)(m) for topic in ('depth', 'points', 'safe_site', 'hazard_map')
                       for m in peer.received[topic])


images = st.builds(
    lambda enc, h, w, pad, big, fill: _image(enc, h, w, pad, big, fill),
    st.sampled_from(['mono8', 'mono16', 'rgb8', 'bgr8', '32FC1', 'yuv422', '', '8UC3']),
    st.integers(0, 300), st.integers(0, 400), st.integers(-8, 8), st.booleans(),
    st.sampled_from([0, 7, 255]))


def _image(enc, h, w, pad, big, fill):
    msg = Image(height=h, width=w, encoding=enc, is_bigendian=big)
    msg.step = max(0, w * 3 + pad)
    msg.data = bytes([fill]) * max(0, min(msg.step * h, 400_000) - (pad < 0) * 5)
    return msg


infos = st.builds(lambda fx, base, w: (fx, base, w),
                  st.sampled_from([400.0, 0.0, math.nan, math.inf, -400.0]),
                  st.sampled_from([0.5, 0.0, -0.5, math.nan]), st.sampled_from([320, 0, 321]))


@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
@given(left=images, info=infos, n=st.integers(100, 10_000))
def test_fuzzed_inputs_never_stop_the_node(ros, left, info, n):
    node, peer = ros
    fx, base, w = info
    stamp = conv.ns_to_stamp(10_000 + n)
    good_l, good_r, _ = plane_pair(CALIB, 4.0, seed=5)
    right = conv.array_to_image(good_r, 'mono8')
    info_l, info_r = conv.calib_to_camera_infos(CALIB, stamp=stamp)
    info_r.p[0], info_r.p[3], info_r.width = fx, -fx * base, w
    for m in (left, right):
        m.header.stamp = stamp
    for topic, m in (('left/image_rect', left), ('right/image_rect', right),
                     ('left/camera_info', info_l), ('right/camera_info', info_r)):
        peer.pub[topic].publish(m)
    assert node.alive()


def test_after_fuzzing_the_node_works_and_reported_faults(ros):
    node, peer = ros
    assert_processed_after(peer, 20_000_000_000)
    diag = peer.wait_for('/diagnostics', lambda m: any(
        kv.key == 'faults' and int(kv.value) > 0 for s in m.status for kv in s.values))
    assert diag.status[0].name.startswith('l3d_stereo')
    assert node.alive()


def test_bad_camera_info_is_named(ros):
    _, peer = ros
    left, right, _ = plane_pair(CALIB, 4.0, seed=6)
    bad = StereoCalib(400.0, 400.0, 159.5, 119.5, 0.5, 320, 240)
    ns = 30_000_000_000

    def send():
        stamp = conv.ns_to_stamp(ns)
        info_l, info_r = conv.calib_to_camera_infos(bad, stamp=stamp)
        info_r.p[3] = +200.0                                   # baseline -0.5 m
        peer.pub['left/camera_info'].publish(info_l)
        peer.pub['right/camera_info'].publish(info_r)
        for topic, img in (('left/image_rect', left), ('right/image_rect', right)):
            m = conv.array_to_image(img, 'mono8')
            m.header.stamp = stamp
            peer.pub[topic].publish(m)
    peer.wait_for('/diagnostics', last_fault_contains('baseline'), republish=send)
    assert no_output_with_stamp(peer, ns)
    assert_processed_after(peer, ns + 1_000_000)


def test_frozen_camera_is_refused(ros):
    _, peer = ros
    left, right, _ = plane_pair(CALIB, 4.0, seed=11)
    first = 40_000_000_000
    peer.wait_for('depth', stamp_is(first),
                  republish=lambda: peer.publish_pair(left, right, CALIB, first))
    frozen = first + 100_000_000
    peer.wait_for('/diagnostics', last_fault_contains('frozen camera'),
                  republish=lambda: peer.publish_pair(left, right, CALIB, frozen))
    assert no_output_with_stamp(peer, frozen)
    assert_processed_after(peer, frozen + 100_000_000, seed=12)


def test_dead_camera_is_reported(ros):
    _, peer = ros
    left, _, _ = plane_pair(CALIB, 4.0, seed=13)
    ns = [50_000_000_000]

    def left_only():
        ns[0] += 50_000_000
        stamp = conv.ns_to_stamp(ns[0])
        img = conv.array_to_image(left, 'mono8')
        img.header.stamp = stamp
        info_l, info_r = conv.calib_to_camera_infos(CALIB, stamp=stamp)
        peer.pub['left/image_rect'].publish(img)
        peer.pub['left/camera_info'].publish(info_l)
        peer.pub['right/camera_info'].publish(info_r)
    peer.wait_for('/diagnostics', last_fault_contains('right silent'), republish=left_only)
    assert_processed_after(peer, ns[0] + 1_000_000_000)


def test_time_going_backwards_keeps_stamps_and_clears_the_map(ros):
    _, peer = ros
    late, early = 90_000_000_000, 60_000_000_000
    assert_processed_after(peer, late, seed=14)
    assert_processed_after(peer, early, seed=15)
    diag = peer.wait_for('/diagnostics', last_fault_contains('time went backwards'))
    assert diag is not None


def test_camera_info_change_mid_run_is_followed(ros):
    _, peer = ros
    wide = StereoCalib(400.0, 400.0, 159.5, 119.5, 0.8, 320, 240)   # baseline 0.5 -> 0.8 m
    for calib, ns in ((CALIB, 100_000_000_000), (wide, 101_000_000_000)):
        left, right, truth = plane_pair(calib, 5.0, seed=16)
        depth = conv.image_to_array(peer.wait_for('depth', stamp_is(ns), republish=(
            lambda: peer.publish_pair(left, right, calib, ns))))
        ok = np.isfinite(depth)
        assert ok.mean() > 0.6
        assert np.median(np.abs(depth[ok] - truth[ok]) / truth[ok]) < 0.01


def set_parameter(peer, name, value):
    """SetParameters on the node (a double); the SetParametersResult."""
    from rcl_interfaces.msg import Parameter as ParameterMsg, ParameterType, ParameterValue
    from rcl_interfaces.srv import SetParameters
    client = peer.node.create_client(SetParameters, '/l3d_stereo/set_parameters')
    try:
        assert client.wait_for_service(timeout_sec=10)
        req = SetParameters.Request(parameters=[ParameterMsg(name=name, value=ParameterValue(
            type=ParameterType.PARAMETER_DOUBLE, double_value=value))])
        future = client.call_async(req)
        deadline = time.monotonic() + 10
        while not future.done() and time.monotonic() < deadline:
            time.sleep(0.02)
        return future.result().results[0]
    finally:
        peer.node.destroy_client(client)


def test_invalid_parameter_update_is_refused_with_a_reason(ros):
    _, peer = ros

    def set_value(name, value):
        return set_parameter(peer, name, value)

    bad = set_value('hazard.slope_max_deg', 120.0)
    assert not bad.successful and 'hazard.slope_max_deg=120.0' in bad.reason
    good = set_value('hazard.slope_max_deg', 12.0)
    assert good.successful
    fixed = set_value('sync.slop_s', 0.01)             # read once, at start-up: refused
    assert not fixed.successful and 'sync.slop_s: set at start-up only' in fixed.reason
    assert_processed_after(peer, 200_000_000_000, seed=17)   # applied between frames, alive


def test_a_frozen_subscriber_does_not_stall_the_node(ros, tmp_path):
    """A reliable subscriber of every output that stops taking messages (SIGSTOP: a hung RViz
    or recorder) must not stop the processing: the node goes on at its own pace."""
    node, peer = ros
    sink = Sink(tmp_path, 'l3d_frozen_sink')
    try:
        deadline = time.monotonic() + 20
        while peer.node.count_subscribers('points') < 2:     # the peer's and the sink's
            assert time.monotonic() < deadline, 'the sink was not discovered'
            time.sleep(0.05)
        frames = [plane_pair(CALIB, 4.0 + 0.5 * k, seed=20 + k) for k in range(4)]
        ns = 250_000_000_000

        def send(seconds):
            nonlocal ns
            end = time.monotonic() + seconds
            while time.monotonic() < end:
                left, right, _ = frames[ns // 33_333_333 % 4]
                peer.publish_pair(left, right, CALIB, ns)
                ns += 33_333_333
                time.sleep(1 / 30)

        deadline = time.monotonic() + 20
        while sink.counts().get('points', 0) == 0:          # until the sink takes outputs
            assert time.monotonic() < deadline, 'the sink received no point cloud'
            send(0.5)
        sink.freeze()
        send(0.5)                                           # its queues fill up
        before = int(diag_value(peer.wait_for('/diagnostics', lambda m: True), 'frames'))
        with peer.lock:
            before = max(before, *(int(diag_value(m, 'frames'))
                                   for m in peer.received['/diagnostics']))
        send(3.0)
        after = peer.wait_for('/diagnostics', lambda m: int(diag_value(m, 'frames')) >=
                              before + 30, timeout_s=10)
        assert node.alive() and after is not None
        assert_processed_after(peer, ns + 1_000_000_000, seed=21)
    finally:
        counts = sink.close()
    assert counts['points'] > 0                                # it was a real subscriber


def test_an_image_and_a_camera_info_of_different_cameras_are_refused(ros):
    _, peer = ros
    left, right, _ = plane_pair(CALIB, 4.0, seed=19)
    stamp = conv.ns_to_stamp(280_000_000_000)
    info_l, info_r = conv.calib_to_camera_infos(CALIB, 'l3d_left_optical', stamp=stamp)

    def publish():
        for topic, array, frame in (('left/image_rect', left, 'l3d_right_optical'),
                                    ('right/image_rect', right, 'l3d_right_optical')):
            img = conv.array_to_image(array, 'mono8')
            img.header.stamp, img.header.frame_id = stamp, frame
            peer.pub[topic].publish(img)
        peer.pub['left/camera_info'].publish(info_l)
        peer.pub['right/camera_info'].publish(info_r)
    peer.wait_for('/diagnostics', last_fault_contains(
        "left/image_rect frame 'l3d_right_optical', left/camera_info frame 'l3d_left_optical'"),
        republish=publish)


def test_a_pose_in_another_frame_is_refused(ros):
    from geometry_msgs.msg import PoseStamped
    _, peer = ros
    odom = PoseStamped()
    odom.header.stamp, odom.header.frame_id = conv.ns_to_stamp(290_000_000_000), 'odom'
    odom.pose.orientation.w = 1.0
    peer.wait_for('/diagnostics', last_fault_contains("camera_pose rejected: frame 'odom'"),
                  republish=lambda: peer.pub['camera_pose'].publish(odom))


def test_a_pose_from_another_time_is_not_used(ros):
    """Runs last: a camera_pose far from the pair's stamp is refused, the frame judged alone."""
    from geometry_msgs.msg import PoseStamped
    _, peer = ros
    stale = PoseStamped()
    stale.header.stamp, stale.header.frame_id = conv.ns_to_stamp(300_000_000_000), 'map'
    stale.pose.orientation.w = 1.0
    peer.pub['camera_pose'].publish(stale)
    time.sleep(0.2)
    ns = 310_000_000_000                                     # 10 s later than the pose
    left, right, _ = plane_pair(CALIB, 4.0, seed=18)
    peer.wait_for('/diagnostics', last_fault_contains('no camera_pose within'),
                  republish=lambda: peer.publish_pair(left, right, CALIB, ns))
    grid = peer.wait_for('hazard_map', stamp_is(ns))
    assert grid.header.frame_id == 'map'                     # still judged (nadir assumption)


def test_all_inputs_falling_silent_is_an_error_when_a_timeout_is_set(ros):
    from diagnostic_msgs.msg import DiagnosticStatus

    def error_status(m):
        return any(s.level == DiagnosticStatus.ERROR for s in m.status)
    _, peer = ros
    assert set_parameter(peer, 'input_timeout_s', 1.0).successful
    try:
        diag = peer.wait_for('/diagnostics', lambda m: error_status(m) and any(
            'input lost: no input for' in s.message for s in m.status))
        assert 'input_timeout_s=1' in diag_value(diag, 'recent_faults')
        left, right, _ = plane_pair(CALIB, 4.0, seed=18)
        ns = [300_000_000_000]

        def stream():                    # a camera streaming again, new stamps
            ns[0] += 100_000_000
            peer.publish_pair(left, right, CALIB, ns[0])
        peer.wait_for('depth', lambda m: conv.stamp_to_ns(m.header.stamp) > 300_000_000_000,
                      republish=stream)
        with peer.lock:
            peer.received['/diagnostics'].clear()
        recovered = peer.wait_for('/diagnostics', republish=stream)
        assert recovered is not None and not error_status(recovered)
    finally:
        assert set_parameter(peer, 'input_timeout_s', 0.0).successful

"""MCAP bags: ROS 2 profile read by an independent decoder; record -> replay -> same outputs."""
import itertools
import time

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from mcap.reader import make_reader
from mcap_ros2.decoder import DecoderFactory
import numpy as np
import pytest
import rclpy
from rclpy.serialization import serialize_message
from rosgraph_msgs.msg import Clock
from std_msgs.msg import Header

from l3d_ros import msg as conv
from l3d_ros.bag import (_field_type_to_msg, bag_topics, BagWriter, message_class,
                         message_definition, read_bag, Recorder, type_name_of)
from l3d_ros.geometry import StereoCalib
from l3d_ros.replay import replay
from l3d_sim.synthetic import plane_pair
from ros_harness import Peer, RunningNode, write_near_params

CALIB = StereoCalib(400.0, 400.0, 159.5, 119.5, 0.5, 320, 240)


@pytest.mark.parametrize('idl, msg', [('sequence<uint8>', 'uint8[]'), ('double[9]', 'double[9]'),
                                      ('sequence<int32, 4>', 'int32[<=4]'),
                                      ('string<8>', 'string<=8'), ('boolean', 'bool'),
                                      ('sequence<std_msgs/Header>', 'std_msgs/Header[]')])
def test_field_types_in_msg_syntax(idl, msg):
    assert _field_type_to_msg(idl) == msg


def _sample_messages():
    stamp = conv.ns_to_stamp(1_234_567_890_123)
    header = Header(stamp=stamp, frame_id='l3d_left_optical')
    left, _, depth = plane_pair(CALIB, 4.0, seed=3)
    info_l, _ = conv.calib_to_camera_infos(CALIB, stamp=stamp)
    cloud = conv.points_to_pointcloud2(np.ones((2, 3, 3), np.float32), np.zeros((2, 3)),
                                       np.full((2, 3), 0.5), header)
    diag = DiagnosticArray(header=header, status=[DiagnosticStatus(
        level=DiagnosticStatus.WARN, name='l3d', values=[KeyValue(key='frames', value='3')])])
    grid = conv.to_occupancy_grid(np.array([[0, 100], [-1, 50]], np.int8), 0.2, (1.0, -2.0),
                                  Header(stamp=stamp, frame_id='map'))
    return [('/left/image_rect', conv.array_to_image(left, 'mono8', header)),
            ('/depth', conv.array_to_image(depth, '32FC1', header)), ('/left/camera_info', info_l),
            ('/points', cloud), ('/diagnostics', diag), ('/hazard_map', grid),
            ('/safe_site', conv.rt_to_pose_stamped(np.eye(3), np.array([1.0, 2, 3]), header)),
            ('/disparity', conv.to_disparity_image(np.full((4, 5), 7.5, np.float32), CALIB,
                                                   header, 1.0, 64.0)),
            ('/clock', Clock(clock=stamp))]


def test_bag_is_ros2_mcap_an_independent_decoder_reads(tmp_path):
    """mcap_ros2 parses our ros2msg schemas and CDR into the same field values."""
    path, sent = tmp_path / 'sample.mcap', _sample_messages()
    with BagWriter(path) as bag:
        for i, (topic, msg) in enumerate(sent):
            bag.write(topic, type_name_of(type(msg)), serialize_message(msg), 1000 + i)
    with open(path, 'rb') as stream:
        reader = make_reader(stream, decoder_factories=[DecoderFactory()])
        assert reader.get_header().profile == 'ros2'
        decoded = list(reader.iter_decoded_messages(log_time_order=True))
    assert [c.topic for _, c, _, _ in decoded] == [t for t, _ in sent]
    for (schema, channel, message, ours), (_, msg) in zip(decoded, sent):
        assert schema.encoding == 'ros2msg' and channel.message_encoding == 'cdr'
        assert schema.name == type_name_of(type(msg))
        header = getattr(msg, 'header', None)
        if header is not None:
            assert (ours.header.stamp.sec, ours.header.stamp.nanosec) == (
                header.stamp.sec, header.stamp.nanosec)
            assert ours.header.frame_id == header.frame_id
    by_topic = {c.topic: d for _, c, _, d in decoded}
    assert bytes(by_topic['/depth'].data) == bytes(sent[1][1].data)
    assert list(by_topic['/left/camera_info'].p) == pytest.approx(list(sent[2][1].p))
    assert by_topic['/diagnostics'].status[0].values[0].value == '3'
    assert list(by_topic['/hazard_map'].data) == [0, 100, -1, 50]
    assert by_topic['/clock'].clock.sec == 1234
    # and our own reader returns the same bytes rclpy wrote
    back = {m.topic: m for m in read_bag(path)}
    assert back['/points'].deserialize() == sent[3][1]
    assert bag_topics(path)['/safe_site'] == 'geometry_msgs/msg/PoseStamped'


def test_generated_definition_when_no_interface_file(monkeypatch):
    """Without share/<pkg>/msg files, the schema is generated from the class and still parses."""
    monkeypatch.setattr('l3d_ros.bag._interface_file', lambda package, name: None)
    text = message_definition(message_class('sensor_msgs/msg/CameraInfo'))
    assert text.splitlines()[:3] == ['std_msgs/Header header', 'uint32 height', 'uint32 width']
    assert 'double[9] k' in text and 'MSG: sensor_msgs/RegionOfInterest' in text
    assert text.count('MSG: builtin_interfaces/Time') == 1


def test_writer_refuses_relative_topic_and_type_change(tmp_path):
    with BagWriter(tmp_path / 'b.mcap') as bag:
        with pytest.raises(ValueError, match='fully qualified'):
            bag.write('depth', 'sensor_msgs/msg/Image', b'', 0)
        bag.write('/depth', 'rosgraph_msgs/msg/Clock', serialize_message(Clock()), 0)
        with pytest.raises(ValueError, match='first recorded'):
            bag.write('/depth', 'sensor_msgs/msg/Image', b'', 1)


def stamp_is(ns):
    return lambda m: conv.stamp_to_ns(m.header.stamp) == ns


@pytest.mark.ros
def test_record_then_replay_gives_the_live_outputs_with_original_stamps(tmp_path):
    # reliable inputs: under load, best effort may lose a frame and the comparison needs all
    params = write_near_params(tmp_path, qos={'reliable': True},
                               hazard={'roughness_max_m': 0.05, 'divert_max_m': 5.0})
    # the peer takes only what it compares: a Python peer also taking 1.5 MB point clouds falls
    # behind under load, and the node then (rightly) drops superseded outputs
    node, peer = RunningNode(params), Peer(outputs=('depth', 'safe_site', '/diagnostics'))
    recorder, context = None, rclpy.Context()
    rclpy.init(context=context)
    try:
        warm = [plane_pair(CALIB, 6.0, seed=seed)[:2] for seed in (1, 2)]  # distinct frames
        peer.wait_for('depth', stamp_is(500_000_000), republish=lambda: peer.publish_pair(
            *warm[0], CALIB, 500_000_000))                      # node up and discovered
        inputs = ['/left/image_rect', '/right/image_rect', '/left/camera_info',
                  '/right/camera_info']
        recorder = Recorder(tmp_path / 'live.mcap', [*inputs, '/depth', '/safe_site'], context)
        deadline = time.monotonic() + 15
        for k in itertools.count(1):          # until the recorder gets inputs and outputs:
            if len(recorder.counts) >= 5:     # a reader can see a writer before it is seen
                break
            assert time.monotonic() < deadline, f'recorder got only {recorder.counts}'
            peer.publish_pair(*warm[k % 2], CALIB, 500_000_000 + k * 10_000_000)
            time.sleep(0.2)
        stamps = [1_000_000_000 + k * 200_000_000 for k in range(3)]
        expected = recorder.counts['/depth'] + len(stamps)
        for k, stamp in enumerate(stamps):
            left, right, _ = plane_pair(CALIB, 4.0 + 0.5 * k, 10.0 * k, seed=10 + k)
            peer.publish_pair(left, right, CALIB, stamp)
            peer.wait_for('depth', stamp_is(stamp), timeout_s=20)
        while recorder.counts['/depth'] < expected and time.monotonic() < deadline + 20:
            time.sleep(0.05)
        recorder.close()
        recorder = None
        live = [m for m in read_bag(tmp_path / 'live.mcap')]
        recorded_in = {conv.stamp_to_ns(m.deserialize().header.stamp) for m in live
                       if m.topic == '/left/image_rect'}
        assert set(stamps) <= recorded_in
        live_depth = {conv.stamp_to_ns(d.header.stamp): d for d in
                      (m.deserialize() for m in live if m.topic == '/depth')}
        assert set(stamps) <= set(live_depth)

        node.close()                   # a fresh node: this one has seen these stamps already
        node = RunningNode(params)
        with peer.lock:
            for queue in peer.received.values():
                queue.clear()
        # the fresh node is discovered (its diagnostics reach the peer) before the replay starts:
        # otherwise the replay may see the old node's lingering subscription and start too early
        peer.wait_for('/diagnostics', timeout_s=30)
        # at a fifth of the recorded pace: the node keeps only the newest pair when it falls
        # behind, and a loaded CI machine must not make it skip the pairs compared here
        counts = replay(tmp_path / 'live.mcap', rate=0.2, context=context)
        assert counts == {t: sum(m.topic == t for m in live) for t in inputs}
        for stamp in stamps:
            again = peer.wait_for('depth', stamp_is(stamp), timeout_s=40)
            np.testing.assert_array_equal(conv.image_to_array(again),
                                          conv.image_to_array(live_depth[stamp]))
            assert np.isfinite(conv.image_to_array(again)).mean() > 0.5
        assert node.alive()
    finally:
        if recorder is not None:
            recorder.close()
        context.try_shutdown()
        peer.close()
        node.close()

"""l3d_ros.msg against the message definitions: bytes built by hand, round trips, errors."""
import importlib.util
import math
import re
import struct

from builtin_interfaces.msg import Time
from hypothesis import given, settings
from hypothesis import strategies as st
from nav_msgs.msg import OccupancyGrid
import numpy as np
import pytest
from rclpy.serialization import deserialize_message, serialize_message
from sensor_msgs.msg import Image, PointCloud2, PointField
from std_msgs.msg import Header

from l3d_ros import msg as m
from l3d_ros.geometry import quaternion_to_matrix, StereoCalib

CALIB = StereoCalib(fx=500.0, fy=502.0, cx=319.5, cy=239.5, baseline_m=0.12, width=640,
                    height=480)
HEADER = Header(stamp=Time(sec=12, nanosec=345), frame_id='l3d_left_optical')


def hand_image(encoding, rows, step, bigendian=False):
    """Image from a list of rows of raw pixel bytes, each padded with 0xEE up to `step`."""
    data = b''.join(row + b'\xee' * (step - len(row)) for row in rows)
    return Image(height=len(rows), width=3, encoding=encoding, is_bigendian=bigendian, step=step,
                 data=data)


def random_array(encoding, h, w, rng):
    if encoding == '32FC1':
        return rng.normal(size=(h, w)).astype(np.float32)
    if encoding == 'mono16':
        return rng.integers(0, 2**16, (h, w), dtype=np.uint16)
    shape = (h, w, 3) if encoding in ('rgb8', 'bgr8') else (h, w)
    return rng.integers(0, 256, shape, dtype=np.uint8)


# --- Image: bytes laid out by hand (padded rows, both byte orders) --------------------------

@pytest.mark.parametrize('bigendian', [False, True])
def test_mono16_padded_rows_both_byte_orders(bigendian):
    fmt = '>3H' if bigendian else '<3H'
    expected = np.array([[1, 258, 65535], [4096, 7, 43981]], np.uint16)
    msg = hand_image('mono16', [struct.pack(fmt, *row) for row in expected.tolist()], step=8,
                     bigendian=bigendian)
    out = m.image_to_array(msg)
    assert out.dtype == np.dtype(np.uint16) and out.dtype.isnative
    np.testing.assert_array_equal(out, expected)


@pytest.mark.parametrize('bigendian', [False, True])
def test_32fc1_padded_rows_both_byte_orders(bigendian):
    fmt = '>3f' if bigendian else '<3f'
    expected = np.array([[0.5, -2.25, np.nan], [1e-3, 7.0, np.inf]], np.float32)
    msg = hand_image('32FC1', [struct.pack(fmt, *row) for row in expected.tolist()], step=13,
                     bigendian=bigendian)
    out = m.image_to_array(msg)
    assert out.dtype == np.dtype(np.float32) and out.dtype.isnative
    np.testing.assert_array_equal(out, expected)


def test_bgr8_and_rgb8_padded_rows_come_out_rgb():
    rgb = np.arange(18, dtype=np.uint8).reshape(2, 3, 3) * 10
    as_rgb = hand_image('rgb8', [rgb[r].tobytes() for r in range(2)], step=12)
    as_bgr = hand_image('bgr8', [rgb[r, :, ::-1].tobytes() for r in range(2)], step=11)
    np.testing.assert_array_equal(m.image_to_array(as_rgb), rgb)
    np.testing.assert_array_equal(m.image_to_array(as_bgr), rgb)


def test_mono8_padded_rows():
    msg = hand_image('mono8', [b'\x01\x02\x03', b'\xfd\xfe\xff'], step=5)
    np.testing.assert_array_equal(m.image_to_array(msg), [[1, 2, 3], [253, 254, 255]])


def test_decoded_array_is_fresh_and_contiguous():
    msg = hand_image('mono8', [b'\x01\x02\x03', b'\x04\x05\x06'], step=4)
    out = m.image_to_array(msg)
    msg.data[0] = 99
    assert out[0, 0] == 1 and out.flags.c_contiguous and out.flags.writeable
    assert not np.shares_memory(out, np.frombuffer(msg.data, np.uint8))


def test_array_to_image_writes_little_endian_unpadded_rows():
    msg = m.array_to_image(np.array([[1, 258]], np.uint16), 'mono16', HEADER)
    assert (msg.step, msg.is_bigendian, bytes(msg.data)) == (4, False, b'\x01\x00\x02\x01')
    bgr = m.array_to_image(np.array([[[10, 20, 30]]], np.uint8), 'bgr8')  # RGB in, BGR out
    assert (bgr.step, bytes(bgr.data)) == (3, bytes([30, 20, 10]))
    assert msg.header.stamp.nanosec == 345 and msg.header.frame_id == 'l3d_left_optical'


@pytest.mark.parametrize('encoding', sorted(m.IMAGE_ENCODINGS))
@pytest.mark.parametrize('pad', [0, 3])
def test_image_round_trip_with_padded_rows(encoding, pad):
    rng = np.random.default_rng(len(encoding) + pad)
    array = random_array(encoding, 7, 5, rng)
    msg = m.array_to_image(array, encoding)
    np.testing.assert_array_equal(m.image_to_array(msg), array)
    raw = np.frombuffer(msg.data, np.uint8).reshape(msg.height, msg.step)
    padded = np.concatenate([raw, np.full((msg.height, pad), 0xEE, np.uint8)], axis=1)
    msg.data, msg.step = padded.tobytes(), msg.step + pad
    np.testing.assert_array_equal(m.image_to_array(msg), array)


def test_big_endian_array_is_accepted_and_written_little_endian():
    array = np.array([[1.5, -2.0]], '>f4')
    msg = m.array_to_image(array, '32FC1')
    assert bytes(msg.data) == struct.pack('<2f', 1.5, -2.0)


@pytest.mark.parametrize('change, match', [
    (dict(encoding='yuv422'), "encoding='yuv422'"),
    (dict(height=0), 'height=0'),
    (dict(width=0), 'width=0'),
    (dict(step=5), r'step=5: expected >= width\*bytes_per_pixel = 3\*2 = 6'),
    (dict(data=b'\x00' * 15), r'len\(data\)=15: expected >= step\*height = 8\*2 = 16'),
])
def test_image_to_array_errors_name_the_value(change, match):
    msg = hand_image('mono16', [b'\x00' * 6, b'\x00' * 6], step=8)
    for key, value in change.items():
        setattr(msg, key, value)
    with pytest.raises(ValueError, match=match):
        m.image_to_array(msg)


@pytest.mark.parametrize('array, encoding, match', [
    (np.zeros((2, 2), np.float64), '32FC1', 'dtype=float64: expected float32'),
    (np.zeros((2, 2), np.uint16), 'mono8', 'dtype=uint16: expected uint8'),
    (np.zeros((2, 2), np.uint8), 'rgb8', r'shape=\(2, 2\): expected \(H, W, 3\)'),
    (np.zeros((2, 2, 4), np.uint8), 'bgr8', r'shape=\(2, 2, 4\)'),
    (np.zeros((0, 2), np.uint8), 'mono8', 'non-empty'),
    (np.zeros((2, 2), np.uint8), '8UC1', "encoding='8UC1'"),
])
def test_array_to_image_errors(array, encoding, match):
    with pytest.raises(ValueError, match=match):
        m.array_to_image(array, encoding)


# --- stamps ---------------------------------------------------------------------------------

@given(st.integers(-2**31 * 10**9, (2**31 - 1) * 10**9 + 999_999_999))
def test_stamp_round_trip(ns):
    stamp = m.ns_to_stamp(ns)
    assert 0 <= stamp.nanosec < 10**9 and m.stamp_to_ns(stamp) == ns


def test_stamp_known_answer_and_range():
    assert m.stamp_to_ns(Time(sec=3, nanosec=7)) == 3_000_000_007
    assert (m.ns_to_stamp(-1).sec, m.ns_to_stamp(-1).nanosec) == (-1, 999_999_999)
    with pytest.raises(ValueError, match='ns=2147483648000000000'):
        m.ns_to_stamp(2**31 * 10**9)


# --- CameraInfo -----------------------------------------------------------------------------

def test_camera_info_round_trip_and_baseline_sign():
    left, right = m.calib_to_camera_infos(CALIB, stamp=HEADER.stamp)
    assert right.p[3] == pytest.approx(-CALIB.fx * CALIB.baseline_m) and right.p[3] < 0
    assert left.p[3] == 0 and left.distortion_model == 'plumb_bob' and not any(left.d)
    np.testing.assert_array_equal(left.r, np.eye(3).ravel())
    assert (left.header.frame_id, right.header.frame_id) == ('l3d_left_optical',
                                                             'l3d_right_optical')
    assert m.stamp_to_ns(right.header.stamp) == 12_000_000_345
    assert m.camera_infos_to_calib(left, right) == CALIB


def test_calib_comes_from_p_not_k():
    left, right = m.calib_to_camera_infos(CALIB)
    for info in (left, right):
        info.k = np.array([900.0, 0, 100, 0, 900, 100, 0, 0, 1])   # unrectified intrinsics
    assert m.camera_infos_to_calib(left, right) == CALIB


def _broken(field, value, side='left'):
    left, right = m.calib_to_camera_infos(CALIB)
    info = left if side == 'left' else right
    if field.startswith('p['):
        p = info.p.copy()
        p[int(field[2:-1])] = value
        info.p = p
    elif field == 'p':
        info.p = np.zeros(12)
    else:
        setattr(info, field, value)
    return left, right


@pytest.mark.parametrize('args, match', [
    (('p[0]', math.nan), 'left.p=.*nan.*expected finite'),
    (('p[5]', math.inf), 'left.p=.*inf.*expected finite'),
    (('p[0]', 0.0), r'left.p\[0\] \(fx\)=0.0'),
    (('p', None), 'left.p=.*all zero, the camera is uncalibrated'),
    (('p', None, 'right'), 'right.p=.*uncalibrated'),
    (('p[3]', 60.0, 'right'), 'baseline_m=-0.12.*expected > 0'),
    (('p[3]', 0.0, 'right'), 'baseline_m=-?0.0.*expected > 0'),
    (('width', 320, 'right'), 'right size=320x480: expected the left size 640x480'),
    (('height', 0), 'left.height=0'),
    (('p[2]', 330.0, 'right'), r'right.p\[2\] \(cx\)=330.0: expected the left value 319.5'),
    (('binning_x', 2), 'left.binning_x=2'),
])
def test_camera_info_errors_name_the_field(args, match):
    with pytest.raises(ValueError, match=match):
        m.camera_infos_to_calib(*_broken(*args))


# --- PointCloud2 ----------------------------------------------------------------------------

def make_cloud(h=4, w=6, seed=0):
    rng = np.random.default_rng(seed)
    points = rng.normal(size=(h, w, 3)).astype(np.float32)
    points[1, 2] = np.nan
    intensity = rng.integers(0, 256, (h, w), dtype=np.uint8)
    confidence = rng.random((h, w), dtype=np.float32)
    return points, intensity, confidence


def test_pointcloud2_layout_matches_the_contract():
    points, intensity, confidence = make_cloud()
    msg = m.points_to_pointcloud2(points, intensity, confidence, HEADER)
    assert [(f.name, f.offset, f.datatype, f.count) for f in msg.fields] == [
        ('x', 0, 7, 1), ('y', 4, 7, 1), ('z', 8, 7, 1), ('intensity', 12, 7, 1),
        ('confidence', 16, 7, 1)]
    assert (msg.height, msg.width, msg.point_step, msg.row_step) == (4, 6, 20, 120)
    assert (msg.is_dense, msg.is_bigendian, len(msg.data)) == (False, False, 4 * 6 * 20)
    assert msg.header.frame_id == 'l3d_left_optical'
    for r, c in [(0, 0), (3, 5), (2, 1)]:
        base = r * msg.row_step + c * msg.point_step
        assert struct.unpack_from('<f', msg.data, base + 16)[0] == confidence[r, c]
        assert struct.unpack_from('<f', msg.data, base + 12)[0] == intensity[r, c]
        assert struct.unpack_from('<3f', msg.data, base) == tuple(points[r, c])
    assert all(math.isnan(v) for v in struct.unpack_from('<3f', msg.data, 1 * 120 + 2 * 20))


def test_pointcloud2_round_trip():
    points, intensity, confidence = make_cloud(5, 3, seed=1)
    out = m.pointcloud2_to_arrays(m.points_to_pointcloud2(points, intensity, confidence,
                                                          HEADER))
    assert list(out) == list(m.POINT_FIELDS)
    np.testing.assert_array_equal(np.stack([out['x'], out['y'], out['z']], -1), points)
    np.testing.assert_array_equal(out['intensity'], intensity.astype(np.float32))
    np.testing.assert_array_equal(out['confidence'], confidence)


def test_pointcloud2_reader_honours_padding_and_big_endian():
    fields = [PointField(name='x', offset=0, datatype=7, count=1),
              PointField(name='rgb', offset=8, datatype=7, count=1)]
    rows = []
    for r in range(2):
        row = b''.join(struct.pack('>f4sf', 10 * r + c, b'pad!', -(10 * r + c)) for c in range(3))
        rows.append(row + b'\x00' * 5)                  # point_step 12, row_step 41
    msg = PointCloud2(height=2, width=3, fields=fields, is_bigendian=True, point_step=12,
                      row_step=41, data=b''.join(rows))
    out = m.pointcloud2_to_arrays(msg)
    np.testing.assert_array_equal(out['x'], [[0, 1, 2], [10, 11, 12]])
    np.testing.assert_array_equal(out['rgb'], [[0, -1, -2], [-10, -11, -12]])


def test_pointcloud2_errors():
    points, intensity, confidence = make_cloud()
    with pytest.raises(ValueError, match=r'confidence shape=\(4, 5\): expected \(H, W\)'):
        m.points_to_pointcloud2(points, intensity, confidence[:, :5], HEADER)
    with pytest.raises(ValueError, match=r'points_m shape=\(4, 6, 2\)'):
        m.points_to_pointcloud2(points[..., :2], intensity, confidence, HEADER)
    msg = m.points_to_pointcloud2(points, intensity, confidence, HEADER)
    msg.fields[3].datatype = PointField.UINT8
    with pytest.raises(ValueError, match="field 'intensity' datatype=2"):
        m.pointcloud2_to_arrays(msg)
    msg = m.points_to_pointcloud2(points, intensity, confidence, HEADER)
    msg.data = bytes(msg.data)[:-1]
    with pytest.raises(ValueError, match=r'len\(data\)=479: expected >= 480'):
        m.pointcloud2_to_arrays(msg)


# --- DisparityImage -------------------------------------------------------------------------

def test_disparity_image_marks_invalid_below_min_and_fills_metadata():
    disp = np.full((6, 8), np.nan, np.float32)
    disp[2:4, 3:7] = np.arange(8, dtype=np.float32).reshape(2, 4) + 4.0
    msg = m.to_disparity_image(disp, CALIB, HEADER, min_disparity=2.0, max_disparity=66.0)
    image = m.image_to_array(msg.image)
    assert msg.image.encoding == '32FC1'
    np.testing.assert_array_equal(image[2:4, 3:7], disp[2:4, 3:7])
    assert np.all(image[~np.isfinite(disp)] == 1.0)                 # min_disparity - 1
    w = msg.valid_window
    assert (w.x_offset, w.y_offset, w.width, w.height) == (3, 2, 4, 2)
    assert (msg.f, msg.t, msg.delta_d) == (500.0, pytest.approx(0.12), 1 / 16)
    assert (msg.min_disparity, msg.max_disparity) == (2.0, 66.0)
    assert msg.header.stamp.sec == msg.image.header.stamp.sec == 12


def test_disparity_image_errors():
    disp = np.zeros((2, 2), np.float32)
    with pytest.raises(ValueError, match='min_disparity=5.0, max_disparity=5.0'):
        m.to_disparity_image(disp, CALIB, HEADER, 5.0, 5.0)
    with pytest.raises(ValueError, match='delta_d=0.0'):
        m.to_disparity_image(disp, CALIB, HEADER, 0.0, 64.0, delta_d=0.0)


# --- OccupancyGrid --------------------------------------------------------------------------

def test_occupancy_grid_round_trip_and_layout():
    values = np.array([[-1, 0, 5], [100, 50, 0]], np.int8)       # row 0 = lowest y
    header = Header(stamp=Time(sec=9), frame_id='map')
    msg = m.to_occupancy_grid(values, 0.25, (-3.0, 4.5), header)
    assert list(msg.data) == [-1, 0, 5, 100, 50, 0]
    assert (msg.info.width, msg.info.height, msg.info.resolution) == (3, 2, 0.25)
    assert (msg.info.origin.position.x, msg.info.origin.position.y) == (-3.0, 4.5)
    assert msg.info.origin.orientation.w == 1.0 and msg.info.map_load_time.sec == 9
    back, cell_m, origin = m.occupancy_grid_to_array(msg)
    assert back.dtype == np.int8 and (cell_m, origin) == (0.25, (-3.0, 4.5))
    np.testing.assert_array_equal(back, values)


@pytest.mark.parametrize('values, match', [
    (np.array([[0, 101]]), r'values=101 at \[0, 1\]: expected -1 or 0..100'),
    (np.array([[-2, 0]]), r'values=-2 at \[0, 0\]'),
    (np.array([[0.5]]), 'dtype=float64'),
])
def test_occupancy_grid_errors(values, match):
    with pytest.raises(ValueError, match=match):
        m.to_occupancy_grid(values, 0.1, (0.0, 0.0), Header())


def test_occupancy_grid_reader_rejects_bad_size():
    msg = m.to_occupancy_grid(np.zeros((2, 2), np.int8), 0.1, (0.0, 0.0), Header())
    msg.info.width = 3
    with pytest.raises(ValueError, match=r'len\(data\)=4: expected height\*width = 2\*3 = 6'):
        m.occupancy_grid_to_array(msg)


# --- PoseStamped ----------------------------------------------------------------------------

unit = st.floats(-1.0, 1.0, allow_nan=False)


@settings(max_examples=200)
@given(q=st.tuples(unit, unit, unit, unit).filter(lambda q: np.linalg.norm(q) > 0.1),
       t=st.tuples(*[st.floats(-1e4, 1e4, allow_nan=False)] * 3))
def test_pose_round_trip_over_random_rotations(q, t):
    R = quaternion_to_matrix(*q)                                          # noqa: N806
    R2, t2 = m.pose_stamped_to_rt(m.rt_to_pose_stamped(R, np.array(t), HEADER))  # noqa: N806
    np.testing.assert_allclose(R2, R, atol=1e-9)
    np.testing.assert_array_equal(t2, t)


def test_pose_known_answer_and_errors():
    R = np.array([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])  # noqa: N806 (+90 deg z)
    q = m.rt_to_pose_stamped(R, np.zeros(3), HEADER).pose.orientation
    np.testing.assert_allclose([q.x, q.y, q.z, q.w], [0, 0, math.sqrt(0.5), math.sqrt(0.5)])
    with pytest.raises(ValueError, match=r't=\[0.0, nan, 0.0\]'):
        m.rt_to_pose_stamped(R, np.array([0.0, np.nan, 0.0]), HEADER)
    with pytest.raises(ValueError, match='expected orthonormal with det \\+1'):
        m.rt_to_pose_stamped(2 * R, np.zeros(3), HEADER)
    with pytest.raises(ValueError, match='expected orthonormal with det \\+1'):
        m.rt_to_pose_stamped(-R, np.zeros(3), HEADER)
    msg = m.rt_to_pose_stamped(R, np.zeros(3), HEADER)
    msg.pose.position.z = math.inf
    with pytest.raises(ValueError, match=r'pose.position=\[0.0, 0.0, inf\]'):
        m.pose_stamped_to_rt(msg)
    msg.pose.position.z, msg.pose.orientation.w = 0.0, math.nan
    with pytest.raises(ValueError, match='quaternion'):
        m.pose_stamped_to_rt(msg)


# --- through rclpy's serialisation (what a publisher puts on the wire) -----------------------

def test_messages_survive_rclpy_serialisation():
    points, intensity, confidence = make_cloud(3, 4, seed=5)
    cloud = m.points_to_pointcloud2(points, intensity, confidence, HEADER)
    wire = serialize_message(cloud)
    assert len(wire) > len(cloud.data) == 3 * 4 * 20
    back = m.pointcloud2_to_arrays(deserialize_message(wire, PointCloud2))
    np.testing.assert_array_equal(back['confidence'], confidence)
    image = np.arange(12, dtype=np.uint16).reshape(3, 4) * 5000
    msg = deserialize_message(serialize_message(m.array_to_image(image, 'mono16')), Image)
    np.testing.assert_array_equal(m.image_to_array(msg), image)
    grid = np.array([[-1, 0], [100, 7]], np.int8)
    msg = deserialize_message(serialize_message(m.to_occupancy_grid(grid, 0.5, (1.0, 2.0),
                                                                    HEADER)), OccupancyGrid)
    np.testing.assert_array_equal(m.occupancy_grid_to_array(msg)[0], grid)


# --- optional cross-checks against the ROS libraries, where they are importable -------------

@pytest.mark.skipif(importlib.util.find_spec('cv_bridge') is None, reason='no cv_bridge')
@pytest.mark.parametrize('encoding', sorted(m.IMAGE_ENCODINGS))
def test_matches_cv_bridge(encoding):
    from cv_bridge import CvBridge
    array = random_array(encoding, 5, 4, np.random.default_rng(3))
    msg = m.array_to_image(array, encoding)
    theirs = CvBridge().imgmsg_to_cv2(msg, desired_encoding='passthrough')
    theirs = theirs[..., ::-1] if encoding == 'bgr8' else theirs
    np.testing.assert_array_equal(m.image_to_array(msg), theirs)


@pytest.mark.skipif(importlib.util.find_spec('sensor_msgs_py') is None,
                    reason='no sensor_msgs_py')
def test_matches_sensor_msgs_py():
    from sensor_msgs_py import point_cloud2
    points, intensity, confidence = make_cloud()
    msg = m.points_to_pointcloud2(points, intensity, confidence, HEADER)
    theirs = point_cloud2.read_points(msg, field_names=m.POINT_FIELDS, skip_nans=False)
    ours = m.pointcloud2_to_arrays(msg)
    for name in m.POINT_FIELDS:
        np.testing.assert_array_equal(np.asarray(theirs[name]).reshape(4, 6), ours[name])


@pytest.mark.parametrize('index, value, needle', [
    (6, -2000.0, 'cy=-2000.0: expected the principal point in the image'),
    (2, 900.0, 'cx=900.0: expected the principal point in the image'),
    (0, 1e-9, 'fx=1e-09: a field of view of'),
])
def test_implausible_intrinsics_are_refused_by_name(index, value, needle):
    """A principal point off the image (a sign or unit slip) or a degenerate focal length
    would turn into confident, wrong geometry: safe sites on a slope."""
    left, right = m.calib_to_camera_infos(StereoCalib(700.0, 700.0, 255.5, 239.5, 2.0, 512, 480))
    for info in (left, right):
        info.p[index] = value
        if index == 0:
            info.p[5] = value
    if index == 0:
        right.p[3] = -value * 2.0
    with pytest.raises(ValueError, match=re.escape(needle)):
        m.camera_infos_to_calib(left, right)


@pytest.mark.parametrize('side, index', [('left', 3), ('left', 7), ('right', 7)])
def test_offsets_other_than_the_right_baseline_are_refused(side, index):
    left, right = m.calib_to_camera_infos(StereoCalib(700.0, 700.0, 255.5, 239.5, 2.0, 512, 480))
    info = left if side == 'left' else right
    info.p[index] = -35.0
    with pytest.raises(ValueError, match=re.escape(f'{side}.p[{index}]')):
        m.camera_infos_to_calib(left, right)


def test_a_pose_quaternion_must_be_unit():
    from geometry_msgs.msg import PoseStamped
    msg = PoseStamped()
    msg.pose.orientation.w = 5.0
    with pytest.raises(ValueError, match='norm 5, expected a unit quaternion'):
        m.pose_stamped_to_rt(msg)
    msg.pose.orientation.w = 1.0 + 5e-4                    # float32 round trip: accepted
    R, _ = m.pose_stamped_to_rt(msg)
    np.testing.assert_allclose(R, np.eye(3), atol=1e-12)


def test_sgbm_refuses_a_baseline_that_puts_every_depth_beyond_the_image():
    from l3d_ros.backends.sgbm import disparity_range
    calib = StereoCalib(700.0, 700.0, 255.5, 255.5, 1e6, 512, 512)      # a 1000 km baseline
    with pytest.raises(ValueError, match=r'baseline_m=1000000.0 .* beyond the image width 512'):
        disparity_range(calib, 10.0, 400.0)
    rig = StereoCalib(700.0, 700.0, 255.5, 255.5, 2.0, 512, 512)       # the simulator's rig
    assert disparity_range(rig, 10.0, 400.0)[0] == 2                    # floor(1400 / 400) - 1


def test_a_float_image_must_hold_grey_levels():
    """32FC1 inputs were clipped and NaN -> 0 silently: a 0..255-scaled float pair gave no
    depth and no fault."""
    from l3d_ros.backends.base import to_gray01
    np.testing.assert_array_equal(to_gray01(np.array([[0.0, 0.5, 1.0005]], np.float32)),
                                  np.array([[0.0, 0.5, 1.0]], np.float32))
    with pytest.raises(ValueError, match=r'values 0 \.\. 255 \(0 not finite\): expected finite'):
        to_gray01(np.array([[0.0, 255.0]], np.float32))
    with pytest.raises(ValueError, match=r'\(1 not finite\)'):
        to_gray01(np.array([[0.2, np.nan]], np.float32))


def test_an_image_and_a_camera_info_must_name_the_same_frame():
    left, _ = m.calib_to_camera_infos(CALIB, 'l3d_left_optical')
    img = m.array_to_image(np.zeros((480, 640), np.uint8), 'mono8', HEADER)
    m.check_camera_frames(img, left, 'left')                        # same frame: accepted
    img.header.frame_id = ''
    m.check_camera_frames(img, left, 'left')                        # unnamed: not compared
    img.header.frame_id = 'l3d_right_optical'
    with pytest.raises(ValueError, match="left/image_rect frame 'l3d_right_optical', "
                                         "left/camera_info frame 'l3d_left_optical'"):
        m.check_camera_frames(img, left, 'left')

"""Gazebo export: SDF structure and numbers, heightmap rule, launch file wiring."""
from dataclasses import replace
import math
from pathlib import Path
import py_compile
from xml.etree import ElementTree as ET

import cv2
import numpy as np
import pytest

from l3d_sim.config import load_sim_config, TerrainConfig
from l3d_sim.gazebo import CAMERA_ROT, GZ_TOPICS, heightmap_side, write_world
from l3d_sim.render import rig_calib, sun_direction
from l3d_sim.terrain import make_terrain

LAUNCH = Path(__file__).resolve().parent.parent / 'launch' / 'gazebo_lunar.launch.py'


@pytest.fixture(scope='module')
def world(tmp_path_factory):
    cfg = load_sim_config()
    cfg = replace(cfg, terrain=TerrainConfig(size_m=30.0))
    out = tmp_path_factory.mktemp('gz')
    terrain = make_terrain(cfg.terrain, 4)
    path = write_world(out, cfg, 4, altitude_m=60.0, terrain=terrain)
    return cfg, terrain, path, ET.parse(path).getroot()


def _floats(text):
    return [float(v) for v in text.split()]


def test_heightmap_side_is_power_of_two_plus_one():
    assert [heightmap_side(n) for n in (3, 10, 300, 513, 2000)] == [3, 9, 257, 513, 1025]


def test_sdf_world_gravity_sun_and_heightmap(world):
    cfg, terrain, path, root = world
    assert root.tag == 'sdf' and float(root.get('version')) >= 1.9
    w = root.find('world')
    assert _floats(w.find('gravity').text) == pytest.approx([0, 0, -1.62])
    sun = w.find("light[@name='sun']")
    assert sun.get('type') == 'directional' and sun.find('cast_shadows').text == 'true'
    d = np.array(_floats(sun.find('direction').text))
    elevation = math.degrees(math.asin(-d[2] / np.linalg.norm(d)))
    assert elevation == pytest.approx(cfg.sun.elevation_deg, abs=1e-6)
    np.testing.assert_allclose(-d, sun_direction(cfg.sun), atol=1e-8)
    for hm in w.iter('heightmap'):
        img = cv2.imread(str(path.parent / hm.find('uri').text), cv2.IMREAD_UNCHANGED)
        n = img.shape[0]
        assert img.dtype == np.uint16 and img.shape == (n, n) and (n - 1) & (n - 2) == 0
        sx, sy, sz = _floats(hm.find('size').text)
        z0 = _floats(hm.find('pos').text)[2]
        assert sx == sy == pytest.approx(terrain.height_m.shape[0] * terrain.cell_m)
        # grey -> height reproduces the terrain (row 0 = +y edge) to the resampling error
        heights = z0 + img[::-1].astype(np.float64) / 65535 * sz
        coarse = cv2.resize(terrain.height_m, (n, n), interpolation=cv2.INTER_AREA)
        np.testing.assert_allclose(heights, coarse, atol=sz / 65535 + 1e-4)


def test_cameras_match_the_rig_and_the_node_calibration(world):
    cfg, _, _, root = world
    sensors = {s.get('name'): s for s in root.iter('sensor')}
    assert set(sensors) == {'left', 'right'}
    calib = rig_calib(cfg.rig)
    xs = {}
    for name, s in sensors.items():
        cam = s.find('camera')
        hfov = float(cam.find('horizontal_fov').text)
        width, height = int(cam.find('image/width').text), int(cam.find('image/height').text)
        assert (width, height) == (cfg.rig.width, cfg.rig.height)
        assert (width / 2) / math.tan(hfov / 2) == pytest.approx(calib.fx, rel=1e-9)
        assert s.find('topic').text == GZ_TOPICS[f'{name}_image']
        assert cam.find('camera_info_topic').text == GZ_TOPICS[f'{name}_info']
        pose = _floats(s.find('pose').text)
        xs[name] = pose[0]
        roll, pitch, yaw = pose[3:]
        rx = np.array([[1, 0, 0], [0, math.cos(roll), -math.sin(roll)],
                       [0, math.sin(roll), math.cos(roll)]])
        ry = np.array([[math.cos(pitch), 0, math.sin(pitch)], [0, 1, 0],
                       [-math.sin(pitch), 0, math.cos(pitch)]])
        rz = np.array([[math.cos(yaw), -math.sin(yaw), 0], [math.sin(yaw), math.cos(yaw), 0],
                       [0, 0, 1]])
        np.testing.assert_allclose(rz @ ry @ rx, CAMERA_ROT, atol=1e-9)
    assert CAMERA_ROT[:, 0] == pytest.approx([0, 0, -1])             # looks down
    assert xs['right'] - xs['left'] == pytest.approx(cfg.rig.baseline_m)  # along image right
    assert -CAMERA_ROT[:, 1] == pytest.approx([1, 0, 0])             # image right = map +x


def test_launch_file_compiles_and_names_the_right_nodes():
    py_compile.compile(str(LAUNCH), doraise=True)
    text = LAUNCH.read_text()
    for needle in ("package='l3d_ros', executable='l3d_stereo'", "'ros_gz_sim'",
                   "'gz_sim.launch.py'", "package='ros_gz_bridge', executable='parameter_bridge'",
                   "'lunar_stereo.yaml'", "'left/image_rect'", "'right/image_rect'",
                   "'left/camera_info'", "'gz/right/camera_info'",
                   "executable='l3d_gz_camera_info'", 'dds_environment(os.environ)'):
        assert needle in text, needle
    for gz_topic in GZ_TOPICS.values():
        assert f"'{gz_topic}'" in text


def test_camera_info_relay_adds_the_rig_baseline():
    from l3d_ros.msg import calib_to_camera_infos, camera_infos_to_calib
    from l3d_sim.gz_camera_info import with_baseline
    from l3d_sim.render import rig_calib
    cfg = load_sim_config()
    left, right = calib_to_camera_infos(rig_calib(cfg.rig))
    right.p[3] = 0.0                                       # what gz-sim publishes
    fixed = with_baseline(right, cfg.rig.baseline_m)
    assert camera_infos_to_calib(left, fixed).baseline_m == pytest.approx(cfg.rig.baseline_m)
    assert right.p[3] == 0.0                               # the input is not modified

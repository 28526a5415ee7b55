"""Export a terrain as a gz-sim world (SDF 1.9): heightmap, low sun, lander with a stereo rig.

Files written into OUT: `world.sdf`, `heightmap.png` (16-bit grey, (2^n + 1) square, row 0 at
the terrain's +y edge as Gazebo reads images top = +y), `albedo.png` and `normal.png` (the
heightmap's diffuse and flat normal textures). The heightmap spans `size x size` metres centred
on the map origin; grey 0..65535 maps linearly onto [z_min, z_max] (`<size>` z and `<pos>` z).
The lander is static at `altitude_m` above the ground at the origin; its two down-looking
cameras are oriented like `l3d_ros.geometry.nadir_pose` (image right = map +x, image up = map
+y), the right one `baseline_m` along image right, and publish gz topics
`l3d/{left,right}/image` and `l3d/{left,right}/camera_info` (bridged to ROS by
launch/gazebo_lunar.launch.py). Gazebo cameras are pinholes with fx = (W / 2) / tan(hfov / 2).
"""
from dataclasses import replace
import math
from pathlib import Path
from xml.etree import ElementTree as ET

import cv2
import numpy as np

from l3d_sim.config import SimConfig
from l3d_sim.render import sun_direction
from l3d_sim.terrain import make_terrain, Terrain

LUNAR_GRAVITY_MPS2 = 1.62
GZ_TOPICS = {'left_image': 'l3d/left/image', 'right_image': 'l3d/right/image',
             'left_info': 'l3d/left/camera_info', 'right_info': 'l3d/right/camera_info'}
MAX_HEIGHTMAP_PX = 1025


def heightmap_side(cells: int, cap: int = MAX_HEIGHTMAP_PX) -> int:
    """Largest 2^n + 1 <= min(cells, cap), at least 3: Gazebo's heightmap side rule."""
    side = 3
    while 2 * (side - 1) + 1 <= min(cells, cap):
        side = 2 * (side - 1) + 1
    return side


def heightmap_image(terrain: Terrain, side: int) -> tuple[np.ndarray, float, float]:
    """(side, side) uint16 image (row 0 = +y edge), z_min [m], z_range [m] (> 0)."""
    h = cv2.resize(terrain.height_m, (side, side), interpolation=cv2.INTER_AREA)
    z_min, z_max = float(h.min()), float(h.max())
    z_range = max(z_max - z_min, 1e-3)
    img = np.rint((h - z_min) / z_range * 65535).clip(0, 65535).astype(np.uint16)
    return img[::-1].copy(), z_min, z_range


def _rpy(R: np.ndarray) -> tuple[float, float, float]:  # noqa: N803
    """Roll, pitch, yaw (SDF's fixed-axis x-y-z convention) of a rotation matrix."""
    if abs(R[2, 0]) > 1 - 1e-12:                                  # pitch +-90 deg: yaw := 0
        sign = -math.copysign(1.0, R[2, 0])
        return math.atan2(sign * R[0, 1], sign * R[0, 2]), sign * math.pi / 2, 0.0
    pitch = math.asin(-R[2, 0])
    return math.atan2(R[2, 1], R[2, 2]), pitch, math.atan2(R[1, 0], R[0, 0])


# gz camera frame: x forward, y left, z up. Down-looking with image right = +x, up = +y:
# forward = -z, left = -x, up = +y (columns: gz axes in the lander/map frame).
CAMERA_ROT = np.array([[0.0, -1.0, 0.0], [0.0, 0.0, 1.0], [-1.0, 0.0, 0.0]])


def _sub(parent, tag, text=None, **attrib):
    el = ET.SubElement(parent, tag, {k: str(v) for k, v in attrib.items()})
    if text is not None:
        el.text = str(text)
    return el


def _camera(link, name, x_m, cfg: SimConfig):
    rig = cfg.rig
    sensor = _sub(link, 'sensor', name=name, type='camera')
    roll, pitch, yaw = _rpy(CAMERA_ROT)
    _sub(sensor, 'pose', f'{x_m:.6f} 0 0 {roll:.9f} {pitch:.9f} {yaw:.9f}')
    _sub(sensor, 'always_on', 1)
    _sub(sensor, 'update_rate', 5)
    _sub(sensor, 'topic', GZ_TOPICS[f'{name}_image'])
    cam = _sub(sensor, 'camera', name=name)
    _sub(cam, 'camera_info_topic', GZ_TOPICS[f'{name}_info'])
    _sub(cam, 'horizontal_fov', f'{math.radians(rig.hfov_deg):.9f}')
    image = _sub(cam, 'image')
    _sub(image, 'width', rig.width)
    _sub(image, 'height', rig.height)
    _sub(image, 'format', 'L8' if rig.bit_depth == 8 else 'L16')
    clip = _sub(cam, 'clip')
    _sub(clip, 'near', 0.5)
    _sub(clip, 'far', 2000.0)
    noise = _sub(cam, 'noise')
    _sub(noise, 'type', 'gaussian')
    _sub(noise, 'mean', 0.0)
    _sub(noise, 'stddev', f'{rig.noise_sigma_dn / (2 ** rig.bit_depth - 1):.6f}')


def world_sdf(cfg: SimConfig, terrain: Terrain, side: int, z_min: float, z_range: float,
              altitude_m: float) -> ET.Element:
    """The <sdf version="1.9"> tree of the lunar world."""
    sdf = ET.Element('sdf', version='1.9')
    world = _sub(sdf, 'world', name='lunar')
    _sub(world, 'gravity', f'0 0 {-LUNAR_GRAVITY_MPS2}')
    physics = _sub(world, 'physics', name='1ms', type='ignored')
    _sub(physics, 'max_step_size', 0.001)
    _sub(physics, 'real_time_factor', 1.0)
    for plugin, name in (('gz-sim-physics-system', 'gz::sim::systems::Physics'),
                         ('gz-sim-user-commands-system', 'gz::sim::systems::UserCommands'),
                         ('gz-sim-scene-broadcaster-system',
                          'gz::sim::systems::SceneBroadcaster'),
                         ('gz-sim-sensors-system', 'gz::sim::systems::Sensors')):
        p = _sub(world, 'plugin', filename=plugin, name=name)
        if plugin == 'gz-sim-sensors-system':
            _sub(p, 'render_engine', 'ogre2')
    scene = _sub(world, 'scene')
    _sub(scene, 'ambient', f'{cfg.sun.ambient:.3f} {cfg.sun.ambient:.3f} {cfg.sun.ambient:.3f} 1')
    _sub(scene, 'background', '0 0 0 1')
    _sub(scene, 'shadows', 'true')
    _sub(scene, 'grid', 'false')

    light = _sub(world, 'light', type='directional', name='sun')
    _sub(light, 'cast_shadows', 'true')
    _sub(light, 'pose', '0 0 1000 0 0 0')
    _sub(light, 'diffuse', '1 1 1 1')
    _sub(light, 'specular', '0 0 0 1')
    s = -sun_direction(cfg.sun)                                   # light travels away from it
    _sub(light, 'direction', f'{s[0]:.9f} {s[1]:.9f} {s[2]:.9f}')

    size = terrain.height_m.shape[1] * terrain.cell_m
    cx = terrain.origin_xy_m[0] + size / 2
    cy = terrain.origin_xy_m[1] + terrain.height_m.shape[0] * terrain.cell_m / 2
    model = _sub(world, 'model', name='terrain')
    _sub(model, 'static', 'true')
    link = _sub(model, 'link', name='surface')
    for kind in ('collision', 'visual'):
        el = _sub(link, kind, name=kind)
        hm = _sub(_sub(el, 'geometry'), 'heightmap')
        _sub(hm, 'uri', 'heightmap.png')
        _sub(hm, 'size', f'{size:.6f} {size:.6f} {z_range:.6f}')
        _sub(hm, 'pos', f'{cx:.6f} {cy:.6f} {z_min:.6f}')
        if kind == 'visual':
            tex = _sub(hm, 'texture')
            _sub(tex, 'diffuse', 'albedo.png')
            _sub(tex, 'normal', 'normal.png')
            _sub(tex, 'size', f'{size:.6f}')
    ground_z = float(terrain.height_at(0.0, 0.0))
    lander = _sub(world, 'model', name='lander')
    _sub(lander, 'static', 'true')
    _sub(lander, 'pose', f'0 0 {ground_z + altitude_m:.6f} 0 0 0')
    body = _sub(lander, 'link', name='body')
    _camera(body, 'left', -cfg.rig.baseline_m / 2, cfg)
    _camera(body, 'right', cfg.rig.baseline_m / 2, cfg)
    return sdf


def write_world(out: Path, cfg: SimConfig, seed: int, altitude_m: float = 100.0,
                terrain: Terrain | None = None) -> Path:
    """Write the world of `make_terrain(cfg.terrain, seed)` (or `terrain`) into OUT; returns
    the path of world.sdf."""
    if not altitude_m > 0:
        raise ValueError(f'altitude_m={altitude_m!r}: expected > 0 m')
    if terrain is None:
        terrain = make_terrain(replace(cfg.terrain), seed)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    side = heightmap_side(min(terrain.height_m.shape))
    img, z_min, z_range = heightmap_image(terrain, side)
    albedo = cv2.resize(terrain.albedo, (side, side), interpolation=cv2.INTER_AREA)[::-1]
    albedo8 = np.rint(np.clip(albedo * 0.5, 0, 1) * 255).astype(np.uint8)
    normal = np.zeros((8, 8, 3), np.uint8)
    normal[:] = (255, 128, 128)                                    # BGR of (0.5, 0.5, 1)
    for name, data in (('heightmap.png', img), ('albedo.png', albedo8), ('normal.png', normal)):
        if not cv2.imwrite(str(out / name), data):
            raise OSError(f'{out / name}: could not write')
    tree = ET.ElementTree(world_sdf(cfg, terrain, side, z_min, z_range, altitude_m))
    ET.indent(tree)
    path = out / 'world.sdf'
    tree.write(path, encoding='utf-8', xml_declaration=True)
    return path


__all__ = ['write_world', 'world_sdf', 'heightmap_side', 'heightmap_image', 'GZ_TOPICS',
           'CAMERA_ROT', 'LUNAR_GRAVITY_MPS2']

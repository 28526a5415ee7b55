"""Rendered stereo datasets: pair folders of INTERFACES.md section 3 with exact ground truth.

Pair `index` of a dataset with seed `seed` is a pure function of (seed, index) and the config:
its own terrain, sun and pose are drawn from `np.random.SeedSequence([seed, index])`, so pairs
are independent and any one can be regenerated alone. Beside the section 3 files each folder
holds `dem.npy` (float32 heights [m] of the ground in view, at the node's hazard.cell_m, the grid
the ground-truth hazard was computed on) and `dem.json` (its cell size, lower-left corner in
`map` and index convention) plus `sim.json` (seed, altitude, sun).
"""
from dataclasses import replace
import json
import logging
import math
from pathlib import Path

import numpy as np
from tqdm import tqdm

from l3d_ros.config import HazardConfig
from l3d_ros.dataset import StereoPair, write_pair
from l3d_ros.geometry import nadir_pose
from l3d_ros.hazard import pixel_hazard
from l3d_sim.config import SimConfig
from l3d_sim.groundtruth import view_hazard_layers
from l3d_sim.render import render_frame, RenderedFrame
from l3d_sim.terrain import make_terrain

log = logging.getLogger(__name__)


def rotation(axis: np.ndarray, angle_rad: float) -> np.ndarray:
    """(3, 3) rotation by `angle_rad` about unit `axis` (Rodrigues)."""
    k = np.asarray(axis, np.float64) / np.linalg.norm(axis)
    kx = np.array([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]])
    return np.eye(3) + math.sin(angle_rad) * kx + (1 - math.cos(angle_rad)) * kx @ kx


def descent_pose(altitude_m: float, tilt_deg: float, tilt_azimuth_deg: float, yaw_deg: float,
                 mount_tilt_deg: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """Left optical frame in `map` above the origin at `altitude_m`: nadir, then yawed about
    map z, then tilted off nadir by `tilt_deg` towards `tilt_azimuth_deg`; the rig's mounting
    tilt turns the optical axis about the camera x axis first."""
    R, t = nadir_pose(altitude_m)  # noqa: N806
    R = R @ rotation([1.0, 0.0, 0.0], math.radians(mount_tilt_deg))  # noqa: N806
    R = rotation([0.0, 0.0, 1.0], math.radians(yaw_deg)) @ R  # noqa: N806
    a = math.radians(tilt_azimuth_deg)
    R = rotation([-math.sin(a), math.cos(a), 0.0], math.radians(tilt_deg)) @ R  # noqa: N806
    return R, t


def view_half_width_m(cfg: SimConfig, altitude_m: float, footprint_m: float) -> float:
    """Half side of a terrain square that holds every ray of a pose drawn by `cfg.dataset`."""
    rig = cfg.rig
    half_diag = math.atan(math.hypot(rig.width, rig.height) / 2 / rig.fx)
    off_nadir = half_diag + math.radians(cfg.dataset.tilt_max_deg + rig.tilt_deg)
    if off_nadir >= math.radians(80):
        raise ValueError(f'view off-nadir angle {math.degrees(off_nadir):.1f} deg: expected < 80 '
                         '(rig.hfov_deg, rig.tilt_deg and dataset.tilt_max_deg too large)')
    reach = (altitude_m + 20.0) * math.tan(off_nadir)           # 20 m of relief margin
    return reach + rig.baseline_m + footprint_m + 2.0


def pair_seeds(seed: int, index: int) -> tuple[int, np.random.Generator]:
    """(terrain seed, generator for sun, pose and sensor noise) of pair `index`."""
    terrain_ss, draw_ss = np.random.SeedSequence([seed, index]).spawn(2)
    return int(terrain_ss.generate_state(1)[0]), np.random.default_rng(draw_ss)


def render_pair(cfg: SimConfig, hazard_cfg: HazardConfig, seed: int, index: int):
    """Pair `index`: (RenderedFrame, hazard (H, W) uint8, DemCrop, Terrain, meta dict)."""
    terrain_seed, rng = pair_seeds(seed, index)
    d = cfg.dataset
    altitude = float(rng.uniform(d.altitude_min_m, d.altitude_max_m))
    sun = replace(cfg.sun,
                  elevation_deg=float(rng.uniform(d.sun_elevation_min_deg,
                                                  d.sun_elevation_max_deg)),
                  azimuth_deg=float(rng.uniform(d.sun_azimuth_min_deg, d.sun_azimuth_max_deg)))
    tilt, tilt_az = float(rng.uniform(0, d.tilt_max_deg)), float(rng.uniform(0, 360))
    yaw = float(rng.uniform(-d.yaw_max_deg, d.yaw_max_deg))
    size_m = 2 * view_half_width_m(cfg, altitude, hazard_cfg.footprint_m)
    terrain = make_terrain(replace(cfg.terrain, size_m=size_m), terrain_seed)
    R, t = descent_pose(altitude, tilt, tilt_az, yaw, cfg.rig.tilt_deg)  # noqa: N806
    t = t + np.array([0.0, 0.0, float(terrain.height_at(0.0, 0.0))])  # altitude above ground
    frame = render_frame(terrain, replace(cfg, sun=sun), R, t, rng)
    crop, layers = view_hazard_layers(terrain, frame.points_world_m, hazard_cfg)
    hazard = pixel_hazard(frame.points_world_m, layers)
    meta = {'seed': seed, 'index': index, 'terrain_seed': terrain_seed,
            'altitude_m': altitude, 'tilt_deg': tilt, 'tilt_azimuth_deg': tilt_az,
            'yaw_deg': yaw, 'sun_elevation_deg': sun.elevation_deg,
            'sun_azimuth_deg': sun.azimuth_deg}
    return frame, hazard, crop, terrain, meta


def write_frame(folder: Path, frame: RenderedFrame, hazard: np.ndarray, crop, meta: dict) -> None:
    """One pair folder: section 3 files via `l3d_ros.dataset.write_pair`, DEM and sim.json."""
    folder = Path(folder)
    write_pair(folder, StereoPair(folder.name, frame.left, frame.right, frame.calib,
                                  frame.depth_m, hazard, frame.R_world_cam, frame.t_world_cam))
    np.save(folder / 'dem.npy', crop.height_m.astype(np.float32))
    dem_meta = {'cell_m': crop.cell_m, 'origin_xy_m': list(crop.origin_xy_m), 'frame': 'map',
                'convention': 'dem[i, j] is the height [m, z up] at x = origin_x + (j + 0.5) '
                              'cell_m, y = origin_y + (i + 0.5) cell_m'}
    (folder / 'dem.json').write_text(json.dumps(dem_meta, indent=2) + '\n')
    (folder / 'sim.json').write_text(json.dumps(meta, indent=2) + '\n')


def write_dataset(out: Path, pairs: int, seed: int, cfg: SimConfig, hazard_cfg: HazardConfig,
                  progress: bool = True) -> list[Path]:
    """Render `pairs` pair folders `OUT/pair_00000` ... ; returns their paths."""
    if not (isinstance(pairs, int) and pairs >= 1):
        raise ValueError(f'pairs={pairs!r}: expected an integer >= 1')
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    folders = []
    for index in tqdm(range(pairs), desc='rendering pairs', unit='pair', disable=not progress):
        frame, hazard, crop, _, meta = render_pair(cfg, hazard_cfg, seed, index)
        folder = out / f'pair_{index:05d}'
        write_frame(folder, frame, hazard, crop, meta)
        folders.append(folder)
    log.info('wrote %d pairs to %s', pairs, out)
    return folders


__all__ = ['rotation', 'descent_pose', 'view_half_width_m', 'pair_seeds', 'render_pair',
           'write_frame', 'write_dataset']

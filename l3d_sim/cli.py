"""`l3d sim`: render datasets, export a Gazebo world, benchmark the renderer, preview a pair."""
import argparse
from dataclasses import replace
import json
import os
from pathlib import Path
import platform
import time

import numpy as np

from l3d_sim.config import load_sim_config, SimConfig


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest='sim_command', required=True)
    ds = sub.add_parser('dataset', help='render pair folders (INTERFACES.md section 3)')
    ds.add_argument('out', type=Path, help='output folder (created)')
    ds.add_argument('--pairs', type=int, required=True, help='number of pairs, >= 1')
    ds.add_argument('--seed', type=int, required=True, help='dataset seed')
    gz = sub.add_parser('gazebo-world', help='export the terrain as a gz-sim SDF world')
    gz.add_argument('out', type=Path, help='output folder (world.sdf, heightmap PNG, model)')
    gz.add_argument('--seed', type=int, default=0, help='terrain seed')
    gz.add_argument('--altitude', type=float, default=100.0, help='lander altitude [m]')
    bench = sub.add_parser('bench', help='renderer throughput (JSON on stdout)')
    bench.add_argument('--pairs', type=int, default=10, help='timed pairs (after 1 warm-up)')
    bench.add_argument('--altitude', type=float, default=80.0, help='camera altitude [m]')
    bench.add_argument('--seed', type=int, default=0)
    bench.add_argument('--json', type=Path, help='also write the JSON here')
    prev = sub.add_parser('preview', help='PNG: left | right | depth | hazard of one pair')
    prev.add_argument('out', type=Path, help='output .png')
    prev.add_argument('--seed', type=int, default=0)
    prev.add_argument('--index', type=int, default=0, help='pair index within the seed')
    for p in (ds, gz, bench, prev):
        p.add_argument('--config', type=Path, help='parameter file (default: the package\'s)')
        if p is not gz:
            p.add_argument('--width', type=int, help='image width [px] (overrides rig.width)')
            p.add_argument('--height', type=int, help='image height [px] (overrides rig.height)')


def _config(args) -> SimConfig:
    cfg = load_sim_config(args.config)
    size = {k: v for k, v in (('width', getattr(args, 'width', None)),
                              ('height', getattr(args, 'height', None))) if v is not None}
    return replace(cfg, rig=replace(cfg.rig, **size)) if size else cfg


def run(args) -> int:
    from l3d_sim.groundtruth import node_hazard_config
    cfg = _config(args)
    if args.sim_command == 'dataset':
        from l3d_sim.dataset import write_dataset
        write_dataset(args.out, args.pairs, args.seed, cfg, node_hazard_config(args.config))
        return 0
    if args.sim_command == 'gazebo-world':
        from l3d_sim.gazebo import write_world
        world = write_world(args.out, cfg, args.seed, altitude_m=args.altitude)
        print(world)
        return 0
    if args.sim_command == 'bench':
        result = bench(cfg, args.pairs, args.altitude, args.seed)
        text = json.dumps(result, indent=2)
        print(text)
        if args.json:
            args.json.write_text(text + '\n')
        return 0
    if args.sim_command == 'preview':
        preview(args.out, cfg, node_hazard_config(args.config), args.seed, args.index)
        print(args.out)
        return 0
    raise ValueError(f'sim command={args.sim_command!r}: expected dataset, gazebo-world, bench '
                     'or preview')


def bench(cfg: SimConfig, pairs: int, altitude_m: float, seed: int) -> dict:
    """Time terrain, lighting, stereo rendering and GT hazard on one nadir view.

    Wall times depend on what else runs on the machine (`load_average_1min`); the CPU time per
    pair (both render threads summed) does not.
    """
    from l3d_ros.geometry import nadir_pose
    from l3d_sim.dataset import view_half_width_m
    from l3d_sim.groundtruth import ground_truth_hazard, node_hazard_config
    from l3d_sim.render import prepare_lighting, render_stereo
    from l3d_sim.terrain import make_terrain
    if pairs < 1:
        raise ValueError(f'pairs={pairs!r}: expected >= 1')
    hazard_cfg = node_hazard_config()
    size_m = 2 * view_half_width_m(cfg, altitude_m, hazard_cfg.footprint_m)
    t0 = time.perf_counter()
    terrain = make_terrain(replace(cfg.terrain, size_m=size_m), seed)
    t1 = time.perf_counter()
    lighting = prepare_lighting(terrain, cfg.sun)
    t2 = time.perf_counter()
    pose = nadir_pose(altitude_m)
    rng = np.random.default_rng(seed)
    frame = render_stereo(terrain, cfg.rig, cfg.sun, *pose, rng, lighting)   # warm-up
    times = []
    cpu0 = time.process_time()
    for _ in range(pairs):
        t = time.perf_counter()
        frame = render_stereo(terrain, cfg.rig, cfg.sun, *pose, rng, lighting)
        times.append(time.perf_counter() - t)
    cpu_per_pair = (time.process_time() - cpu0) / pairs     # both render threads together
    t3 = time.perf_counter()
    ground_truth_hazard(terrain, frame[3], hazard_cfg)
    t4 = time.perf_counter()
    return {'width': cfg.rig.width, 'height': cfg.rig.height, 'altitude_m': altitude_m,
            'terrain_cells': list(terrain.height_m.shape), 'pairs_timed': pairs,
            'render_pairs_per_s': 1.0 / float(np.median(times)),
            'render_ms_median': 1e3 * float(np.median(times)),
            'render_ms_best': 1e3 * float(np.min(times)),
            'render_cpu_ms_per_pair': 1e3 * cpu_per_pair,
            'load_average_1min': os.getloadavg()[0],    # other processes sharing the cores
            'terrain_s': t1 - t0, 'lighting_s': t2 - t1, 'gt_hazard_s': t4 - t3,
            'cpu_count': os.cpu_count(), 'machine': platform.machine(),
            'processor': platform.processor() or platform.machine()}


def preview(out: Path, cfg: SimConfig, hazard_cfg, seed: int, index: int) -> None:
    """Write left | right | depth (colour) | hazard overlay of dataset pair (seed, index)."""
    import cv2
    from l3d_sim.dataset import render_pair
    frame, hazard, _, _, meta = render_pair(cfg, hazard_cfg, seed, index)
    to8 = (lambda img: img if img.dtype == np.uint8 else (img >> 8).astype(np.uint8))
    left, right = to8(frame.left), to8(frame.right)
    depth = frame.depth_m
    lo, hi = np.nanpercentile(depth, [1, 99]) if np.isfinite(depth).any() else (0.0, 1.0)
    d8 = np.nan_to_num(255 * (depth - lo) / max(hi - lo, 1e-6), nan=0).clip(0, 255)
    depth_bgr = cv2.applyColorMap(d8.astype(np.uint8), cv2.COLORMAP_VIRIDIS)
    overlay = cv2.cvtColor(left, cv2.COLOR_GRAY2BGR)
    red = overlay.copy()
    red[hazard == 1] = (0, 0, 255)
    red[hazard == 255] = (255, 0, 0)
    overlay = cv2.addWeighted(overlay, 0.6, red, 0.4, 0)
    gray = [cv2.cvtColor(x, cv2.COLOR_GRAY2BGR) for x in (left, right)]
    panel = np.hstack(gray + [depth_bgr, overlay])
    text = (f"alt {meta['altitude_m']:.0f} m  sun el {meta['sun_elevation_deg']:.1f} az "
            f"{meta['sun_azimuth_deg']:.0f} deg  depth {lo:.1f}-{hi:.1f} m  red: hazard")
    cv2.putText(panel, text, (8, 20), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 255, 255), 1)
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(out), panel):
        raise OSError(f'{out}: could not write')

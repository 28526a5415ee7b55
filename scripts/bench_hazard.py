"""Hazard pipeline timing per stage, one 512x512 nadir frame at 30, 50, 100 and 150 m.

Usage: python scripts/bench_hazard.py [--repeat N] [--threads T]

The frame: the simulator rig (fx = 703 px, B = 2 m), a nadir camera over fBm-like relief with
boulders, depth = exact range plus the stereo noise sigma_Z = Z^2 sigma_d / (f B) and a few
holes; confidence 1. Each stage's median over N runs is printed [ms] (a fresh DEM per run, as
`l3d infer` does), with the machine and the OpenCV thread count: the yardstick of the issue is
hazard + safe site <= 20 ms median on 2 cores.
"""
import argparse
import os
import platform
import time

import cv2
import numpy as np

from l3d_ros.backends.base import DepthResult
from l3d_ros.config import HazardConfig
from l3d_ros.geometry import depth_sigma_m, StereoCalib
from l3d_ros.runtime import keep_freed_memory
from l3d_ros.site import frame_hazard

CALIB = StereoCalib(703.0, 703.0, 255.5, 255.5, 2.0, 512, 512)


def terrain_height_m(x_m: np.ndarray, y_m: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Smooth relief (blurred noise, 0.4 m rms) plus 0.2-1 m boulders, at map (x, y)."""
    n, cell = 1024, 0.25                                   # 256 m square around the origin
    base = cv2.GaussianBlur(rng.normal(0, 1, (n, n)).astype(np.float32), (0, 0), 24)
    base *= 0.4 / base.std()
    fine = cv2.GaussianBlur(rng.normal(0, 1, (n, n)).astype(np.float32), (0, 0), 2)
    relief = base + 0.03 * fine / fine.std()
    for cx, cy, r in zip(rng.integers(0, n, 300), rng.integers(0, n, 300), rng.uniform(1, 4, 300)):
        cv2.circle(relief, (int(cx), int(cy)), int(r), float(relief[cy, cx] + r * 0.25), -1)
    col = np.clip((x_m / cell + n / 2).astype(np.float32), 0, n - 1)
    row = np.clip((y_m / cell + n / 2).astype(np.float32), 0, n - 1)
    return cv2.remap(relief, col, row, cv2.INTER_LINEAR)


def nadir_frame(altitude_m: float, cfg: HazardConfig, seed: int = 0) -> DepthResult:
    """Noisy depth of a nadir view at `altitude_m` (two fixed-point iterations on the relief)."""
    rng = np.random.default_rng(seed)
    v, u = np.mgrid[0:CALIB.height, 0:CALIB.width].astype(np.float32)
    ray_x, ray_y = (u - CALIB.cx) / CALIB.fx, -(v - CALIB.cy) / CALIB.fy  # nadir: map y = -cam y
    depth = np.full(u.shape, altitude_m, np.float32)
    terrain_rng = np.random.default_rng(1000)              # the same terrain at every altitude
    state = terrain_rng.bit_generator.state
    for _ in range(2):
        terrain_rng.bit_generator.state = state
        depth = altitude_m - terrain_height_m(ray_x * depth, ray_y * depth, terrain_rng)
    sigma = depth_sigma_m(depth, CALIB.fx, CALIB.baseline_m, cfg.disparity_sigma_px)
    depth = (depth + rng.normal(0, 1, depth.shape) * sigma).astype(np.float32)
    depth[rng.random(depth.shape) < 0.02] = np.nan
    conf = np.isfinite(depth).astype(np.float32)
    disp = CALIB.fx * CALIB.baseline_m / depth
    return DepthResult(depth, conf, disp.astype(np.float32))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--repeat', type=int, default=7)
    parser.add_argument('--threads', type=int, default=2, help='cv2.setNumThreads')
    parser.add_argument('--altitudes', type=float, nargs='+', default=[30.0, 50.0, 100.0, 150.0])
    args = parser.parse_args()
    cv2.setNumThreads(args.threads)
    keep_freed_memory()                                    # as the node and `l3d` do
    cfg = HazardConfig()
    print(f'{platform.machine()} {os.cpu_count()} cpus, cv2 threads {cv2.getNumThreads()}, '
          f'{args.repeat} runs, median ms')
    for alt in args.altitudes:
        frame = nadir_frame(alt, cfg)
        frame_hazard(frame, CALIB, None, None, cfg)       # warm-up
        runs = []
        for _ in range(args.repeat):
            stages: dict[str, float] = {}
            t0 = time.perf_counter()
            out = frame_hazard(frame, CALIB, None, None, cfg, timings_ms=stages)
            stages['total'] = 1e3 * (time.perf_counter() - t0)
            runs.append(stages)
        med = {k: float(np.median([r[k] for r in runs])) for k in runs[0]}
        h = out.layers.hazard
        print(f'{alt:5.0f} m  lattice {h.shape[0]}x{h.shape[1]} (cell {out.layers.grid.cell_m:.2f}'
              f' m)  safe {np.mean(h == 0):.2f} hazard {np.mean(h == 1):.2f} unknown '
              f'{np.mean(h == 255):.2f}  site {"yes" if out.site else "none"}')
        print('        ' + '  '.join(f'{k} {v:.1f}' for k, v in med.items()))


if __name__ == '__main__':
    main()

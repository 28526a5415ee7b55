"""Stereo renderer of a `Terrain`: ray cast, lunar-Lambert photometry, cast shadows, noise.

Cameras are rectified pinholes (REP-103 optical frame: x right, y down, z forward). Pixel
(u, v) has its centre at integer coordinates (`l3d_ros.geometry.pixel_grid`), the principal point
is the image centre ((W - 1) / 2, (H - 1) / 2), fx = fy = (W / 2) / tan(hfov / 2), and the right
camera sits `baseline_m` along the left camera's +x with the same orientation.

Per camera, each pixel's ray C + t d (d = R_world_cam [x, y, 1], so t is the depth along the
optical axis) is intersected with the bilinear heightfield: conservative steps
t += gap / (|d_z| + L |d_xy|) with an assumed terrain Lipschitz bound L, then Newton steps on the
exact bilinear patch near the surface, and regula falsi once a step lands below the surface.
Shading uses one `Lighting` per terrain and sun: a cast-shadow mask from a sweep along the sun
azimuth, smooth DEM gradients for the normals, and the terrain albedo, all sampled bilinearly,
so both cameras see the same lit surface. Radiance is McEwen's lunar-Lambert law with the
phase-angle polynomial L(alpha), plus a small ambient (earthshine) term in shadow.
"""
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
import math

import cv2
import numpy as np

from l3d_ros.geometry import StereoCalib
from l3d_sim.config import RigConfig, SimConfig, SunConfig
from l3d_sim.terrain import Terrain

LIPSCHITZ = 1.0          # assumed |grad h| bound of the march; steeper flanks are bracketed
GAP_TOL_M = 1e-3         # a ray has hit when it is this close to the surface [m]
MAX_STEPS = 48           # march iterations per ray before it is declared a miss
NEWTON_STEPS = 10        # iterations that may take Newton steps; safe steps only afterwards
COARSE = 4               # the start guess comes from a cast at 1/COARSE resolution ...
COARSE_MARGIN_M = 1.0    # ... lifted this far above the lowest neighbouring hit [m]
NEWTON_GAP_M = 2.0       # Newton steps (capped at 4 safe steps) below this gap [m]
EXPOSURE_PERCENTILE = 99.5  # auto-exposure: this radiance percentile of the left view ...
EXPOSURE_LEVEL = 0.85       # ... maps to this fraction of full scale (times rig.gain)


@dataclass(frozen=True)
class Lighting:
    """Per terrain and sun: (N, M, 4) float32 channels gx, gy [m/m], lit (0/1), albedo."""

    sun_dir: np.ndarray      # (3,) unit vector towards the sun in `map`
    channels: np.ndarray     # (N, M, 4) float32
    ambient: float


@dataclass(frozen=True)
class RenderedFrame:
    """One rendered stereo pair with exact ground truth of the left view."""

    left: np.ndarray             # (H, W) uint8 or uint16
    right: np.ndarray            # (H, W) same dtype
    depth_m: np.ndarray          # (H, W) float32 optical-axis depth of the left view, NaN miss
    points_world_m: np.ndarray   # (H, W, 3) float32 map point seen by each left pixel, NaN miss
    calib: StereoCalib
    R_world_cam: np.ndarray      # (3, 3) left optical frame in `map`
    t_world_cam: np.ndarray      # (3,) [m]


def sun_direction(sun: SunConfig) -> np.ndarray:
    """Unit vector towards the sun in `map`: azimuth from +x towards +y, elevation from xy."""
    e, a = math.radians(sun.elevation_deg), math.radians(sun.azimuth_deg)
    return np.array([math.cos(e) * math.cos(a), math.cos(e) * math.sin(a), math.sin(e)])


def shadow_mask(height_m: np.ndarray, cell_m: float, sun: SunConfig) -> np.ndarray:
    """(N, M) float32: 1 where the cell centre sees the sun over the terrain, 0 in cast shadow.

    Sweeps the grid from the sun side, carrying the highest sun ray seen so far
    (S = max(h, S_sunward - step * tan(elevation))); a cell is shadowed where that ray passes
    above it. Cells beyond the grid edge cast no shadow.
    """
    s = sun_direction(sun)
    h = np.asarray(height_m, np.float32)
    transpose = abs(s[1]) > abs(s[0])                # sweep along the dominant sun axis
    if transpose:
        h, s = h.T, s[[1, 0, 2]]
    flip = s[0] > 0                                  # sun towards +col: sweep from the right
    if flip:
        h = h[:, ::-1]
    shift = float(s[1] / abs(s[0]))                  # row offset of the sunward neighbour
    drop = np.float32(cell_m * math.hypot(1.0, shift) * math.tan(math.radians(
        sun.elevation_deg)))
    k = math.floor(shift)
    f = np.float32(shift - k)
    n, m = h.shape
    lit = np.ones((n, m), np.float32)
    ray = h[:, 0].copy()
    prev = np.full(n + 2, -1e30, np.float32)         # padded: rows -1 .. n (no occluder)
    rows = np.arange(n)
    i0 = np.clip(rows + k + 1, 0, n + 1)
    i1 = np.clip(rows + k + 2, 0, n + 1)
    for j in range(1, m):
        prev[1:-1] = ray
        sunward = prev[i0] * (1 - f) + prev[i1] * f - drop
        col = h[:, j]
        lit[:, j] = col >= sunward
        ray = np.maximum(col, sunward)
    if flip:
        lit = lit[:, ::-1]
    return lit.T if transpose else lit


def sunlit_share(terrain: Terrain, lit: np.ndarray, centre_xy_m, radius_m: float) -> float:
    """Share of the terrain cells within `radius_m` of `centre_xy_m` that see the sun.

    lit: (N, M) 0/1 on `terrain`'s grid (`shadow_mask`, or a `Lighting`'s channel 2). A
    diagnostic of the scene, not of any perception: with the ground a lander may divert to all
    in cast shadow, only earthshine lights what its cameras see. NaN when no cell is that close.
    """
    n, m = terrain.height_m.shape
    if lit.shape != (n, m):
        raise ValueError(f'lit has shape {lit.shape}; expected the terrain grid {(n, m)}')
    x = terrain.origin_xy_m[0] + (np.arange(m) + 0.5) * terrain.cell_m
    y = terrain.origin_xy_m[1] + (np.arange(n) + 0.5) * terrain.cell_m
    cx, cy = (float(v) for v in np.asarray(centre_xy_m, np.float64).reshape(2))
    near = np.hypot(x[None, :] - cx, y[:, None] - cy) <= radius_m
    return float(lit[near].mean()) if near.any() else math.nan


def prepare_lighting(terrain: Terrain, sun: SunConfig) -> Lighting:
    """Shadow mask, smooth gradients and albedo of `terrain` under `sun` (once per pair)."""
    gy, gx = np.gradient(terrain.height_m, terrain.cell_m)
    lit = shadow_mask(terrain.height_m, terrain.cell_m, sun)
    channels = np.stack([gx, gy, lit, terrain.albedo], axis=-1).astype(np.float32)
    return Lighting(sun_direction(sun), channels, float(sun.ambient))


def rig_calib(rig: RigConfig) -> StereoCalib:
    """Calibration of the rectified pair of `rig` (section 3 calib.json content)."""
    return StereoCalib(rig.fx, rig.fx, (rig.width - 1) / 2, (rig.height - 1) / 2,
                       rig.baseline_m, rig.width, rig.height)


def camera_rays(calib: StereoCalib, R_world_cam: np.ndarray) -> np.ndarray:  # noqa: N803
    """(H*W, 3) float64 map directions R [x, y, 1]: unit optical-z component, row-major pixels."""
    R = np.asarray(R_world_cam, np.float64)  # noqa: N806
    xc = (np.arange(calib.width) - calib.cx) / calib.fx
    yc = (np.arange(calib.height) - calib.cy) / calib.fy
    out = np.empty((calib.height, calib.width, 3))
    for k in range(3):
        out[..., k] = R[k, 0] * xc[None, :] + R[k, 1] * yc[:, None] + R[k, 2]
    return out.reshape(-1, 3)


def _below(cells: int) -> np.float32:
    """A float32 clamp for an index into `cells` lattice points, strictly below the last one so
    that its cell has a next row and column: cells - 1.0001, or where that rounds up to
    cells - 1 (from 2049 cells on: a 70 deg camera at 150 m needs a 283 m terrain, 2829 cells
    of 0.1 m, and its rays off the terrain indexed past the array) the float32 just below."""
    return min(np.float32(cells - 1.0001), np.nextafter(np.float32(cells - 1), np.float32(0)))


def _patch(height: np.ndarray, row: np.ndarray, col: np.ndarray):
    """Height and its exact bilinear derivatives d/d(row), d/d(col) at fractional indices.

    Returns float32 (h, dh_drow, dh_dcol, inside); outside the cell-centre lattice is clamped.
    """
    n, m = height.shape
    inside = (row >= 0) & (row <= n - 1) & (col >= 0) & (col <= m - 1)
    r = np.clip(row, np.float32(0), _below(n))
    c = np.clip(col, np.float32(0), _below(m))
    r0, c0 = r.astype(np.int32), c.astype(np.int32)
    fr, fc = r - r0.astype(np.float32), c - c0.astype(np.float32)
    i00 = r0 * np.int32(m) + c0                          # int32: grids below 2^31 cells
    h00, h01 = np.take(height, i00), np.take(height, i00 + 1)
    h10, h11 = np.take(height, i00 + m), np.take(height, i00 + (m + 1))
    d_top, d_bottom = h01 - h00, h11 - h10
    top = h00 + d_top * fc
    d_row = h10 + d_bottom * fc - top
    return top + d_row * fr, d_row, d_top + (d_bottom - d_top) * fr, inside


def ray_cast(terrain: Terrain, origin_m: np.ndarray, dirs: np.ndarray,
             t_start: np.ndarray | None = None) -> np.ndarray:
    """Parameter t >= 0 [m of optical depth] where C + t d first meets the terrain; NaN on miss.

    origin_m: (3,) camera centre in `map`. dirs: (K, 3) directions (any length; t scales with
    them). Rays must point down (d_z < 0) to hit. t_start: optional (K,) guess known to lie
    above the surface (NaN: none); a ray found below it is re-marched from the top of the
    terrain. Returns (K,) float32. Works in the grid's index space with heights relative to the
    camera, in float32.
    """
    c = np.asarray(origin_m, np.float64)
    d = np.asarray(dirs, np.float64)
    inv_cell = 1.0 / terrain.cell_m
    out = np.full(len(d), np.nan, np.float32)
    height = terrain.height_m - np.float32(c[2])                 # camera at z = 0
    idx = np.flatnonzero(d[:, 2] < 0).astype(np.int32)
    f32 = np.float32
    row_c = f32((c[1] - terrain.origin_xy_m[1]) * inv_cell - 0.5)
    col_c = f32((c[0] - terrain.origin_xy_m[0]) * inv_cell - 0.5)
    drow, dcol = (d[idx, 1] * inv_cell).astype(f32), (d[idx, 0] * inv_cell).astype(f32)
    dz = d[idx, 2].astype(f32)
    t = np.maximum(f32(0), f32(height.max()) / dz)
    t_above = t.copy()                                           # last t seen above the surface
    if t_start is not None:
        guess = np.asarray(t_start, f32)[idx]
        t = np.where(np.isfinite(guess) & (guess > t), guess, t)
    rate = -dz + f32(LIPSCHITZ * terrain.cell_m) * np.hypot(drow, dcol)
    near_m = f32(2 * terrain.cell_m)
    newton_m = f32(NEWTON_GAP_M)
    ray = (height, row_c, col_c)
    for step in range(MAX_STEPS):
        if not len(idx):
            break
        newton_ok = step < NEWTON_STEPS                          # then only safe steps
        h, h_row, h_col, inside = _patch(height, row_c + t * drow, col_c + t * dcol)
        gap = t * dz - h
        done = inside & (np.abs(gap) < GAP_TOL_M)
        out[idx[done]] = t[done]
        slope = dz - (h_row * drow + h_col * dcol)               # d gap / d t on this patch
        # below the surface: a shallow dip on a patch the ray enters goes back by Newton,
        # anything else (a steep flank, a deep overshoot) is bracketed from the last t above
        under = inside & (gap <= -GAP_TOL_M) & ((gap < -near_m) | (slope >= 0) | (not newton_ok))
        if under.any():
            out[idx[under]] = _first_crossing(ray, drow[under], dcol[under], dz[under],
                                              t_above[under], t[under], near_m)
        safe = t + gap / rate
        newton = t - gap / np.minimum(slope, f32(-1e-6))
        near = (gap < newton_m) & (slope < 0) & newton_ok
        t_next = np.where(near, np.minimum(newton, 4 * safe - 3 * t), safe)
        keep = np.flatnonzero(inside & ~done & ~under)
        idx, drow, dcol, dz, rate = idx[keep], drow[keep], dcol[keep], dz[keep], rate[keep]
        t_above = np.where(gap[keep] > 0, t[keep], t_above[keep])
        t = t_next[keep]
    return out


def _first_crossing(ray, drow, dcol, dz, t_lo, t_hi, near_m):
    """Crossing in (t_lo above, t_hi below): the first one, by fine march then bisection."""
    height, row_c, col_c = ray

    def gap(t):
        return t * dz - _patch(height, row_c + t * drow, col_c + t * dcol)[0]

    step = np.minimum(0.25 * near_m / -dz, t_hi - t_lo)          # <= cell_m / 2 of drop
    probe = t_lo.copy()
    active = np.ones(len(dz), bool)
    for _ in range(MAX_STEPS):                                   # march until first below
        probe = np.where(active, np.minimum(probe + step, t_hi), probe)
        below = gap(probe) < 0
        t_hi = np.where(active & below, probe, t_hi)
        t_lo = np.where(active & ~below, probe, t_lo)
        active &= ~below & (probe < t_hi)
        if not active.any():
            break
    for _ in range(16):                                          # 0.05 m -> < 1 um
        mid = 0.5 * (t_lo + t_hi)
        above = gap(mid) > 0
        t_lo, t_hi = np.where(above, mid, t_lo), np.where(above, t_hi, mid)
    return 0.5 * (t_lo + t_hi)


def _shade(terrain: Terrain, lighting: Lighting, points: np.ndarray,
           origin_m: np.ndarray) -> np.ndarray:
    """Lunar-Lambert radiance (1 = flat albedo-1 surface facing the sun) at (K, 3) points."""
    f32 = np.float32
    n, m, _ = lighting.channels.shape
    r = np.clip((points[:, 1] - f32(terrain.origin_xy_m[1])) / f32(terrain.cell_m) - f32(0.5),
                f32(0), f32(n - 1.0001))
    c = np.clip((points[:, 0] - f32(terrain.origin_xy_m[0])) / f32(terrain.cell_m) - f32(0.5),
                f32(0), f32(m - 1.0001))
    r0, c0 = r.astype(np.int32), c.astype(np.int32)
    fr = (r - r0.astype(f32))[:, None]
    fc = (c - c0.astype(f32))[:, None]
    flat = lighting.channels.reshape(-1, 4)
    i00 = r0 * np.int32(m) + c0
    top = np.take(flat, i00, axis=0)
    top += (np.take(flat, i00 + 1, axis=0) - top) * fc
    bottom = np.take(flat, i00 + m, axis=0)
    bottom += (np.take(flat, i00 + (m + 1), axis=0) - bottom) * fc
    top += (bottom - top) * fr
    gx, gy, lit, albedo = top.T
    inv_n = 1 / np.sqrt(gx * gx + gy * gy + 1)                 # normal (-gx, -gy, 1) / |.|
    vx, vy, vz = (f32(origin_m[k]) - points[:, k] for k in range(3))
    inv_v = 1 / np.sqrt(vx * vx + vy * vy + vz * vz)
    s = lighting.sun_dir.astype(f32)
    cos_i = np.maximum((s[2] - gx * s[0] - gy * s[1]) * inv_n, 0)
    cos_e = np.maximum((vz - gx * vx - gy * vy) * inv_n * inv_v, f32(1e-3))
    cos_g = np.clip((vx * s[0] + vy * s[1] + vz * s[2]) * inv_v, -1, 1)
    alpha = np.degrees(np.arccos(cos_g))                       # phase angle [deg]
    limb = 1 - alpha * (f32(0.019) - alpha * (f32(2.42e-4) - alpha * f32(1.46e-6)))
    direct = cos_i * (2 * limb / (cos_i + cos_e) + (1 - limb))
    return albedo * (lit * direct + f32(lighting.ambient * s[2]))


def _coarse_start(terrain, origin, dirs, shape):
    """Per-ray start t from a cast at 1/COARSE of the resolution: the least t of the 3x3 coarse
    neighbours, raised COARSE_MARGIN_M above the surface they hit. (K,) float32, NaN: none."""
    h, w = shape
    grid = dirs.reshape(h, w, 3)
    coarse_dirs = grid[COARSE // 2::COARSE, COARSE // 2::COARSE]
    ch, cw = coarse_dirs.shape[:2]
    t = ray_cast(terrain, origin, coarse_dirs.reshape(-1, 3)).reshape(ch, cw)
    t = cv2.erode(np.where(np.isfinite(t), t, np.float32(-1)), np.ones((3, 3), np.uint8),
                  borderType=cv2.BORDER_REPLICATE)                 # 3x3 minimum
    full = np.repeat(np.repeat(t, COARSE, axis=0), COARSE, axis=1)
    full = np.pad(full, ((0, max(0, h - full.shape[0])), (0, max(0, w - full.shape[1]))),
                  mode='edge')[:h, :w].reshape(-1)
    start = full - np.float32(COARSE_MARGIN_M) / -dirs[:, 2].astype(np.float32)
    return np.where(full > 0, start, np.nan).astype(np.float32)


def _render_view(terrain, lighting, calib, R, origin):  # noqa: N803
    """(depth (K,), points (K, 3), radiance (K,)) float32 of one camera, row-major pixels."""
    dirs = camera_rays(calib, R)
    t = ray_cast(terrain, origin, dirs, _coarse_start(terrain, origin, dirs, calib.shape))
    points = np.empty(dirs.shape, np.float32)
    for k in range(3):
        points[:, k] = np.float32(origin[k]) + t * dirs[:, k].astype(np.float32)
    radiance = _shade(terrain, lighting, np.nan_to_num(points), origin)
    radiance[~np.isfinite(t)] = 0.0
    return t, points, radiance


def _expose(radiance: np.ndarray, scale: float, rig: RigConfig, rng: np.random.Generator):
    full = float(2 ** rig.bit_depth - 1)
    dn = radiance * np.float32(scale)
    if rig.noise_sigma_dn > 0:
        dn += rng.standard_normal(radiance.shape, np.float32) * np.float32(rig.noise_sigma_dn)
    dtype = np.uint8 if rig.bit_depth == 8 else np.uint16
    return np.clip(np.rint(dn), 0, full).astype(dtype)


def render_stereo(terrain: Terrain, rig: RigConfig, sun: SunConfig,
                  R_world_cam: np.ndarray, t_world_cam: np.ndarray,  # noqa: N803
                  rng: np.random.Generator, lighting: Lighting | None = None):
    """Render the rectified pair seen from the left optical frame pose (R_world_cam, t_world_cam).

    Returns (left, right, depth_m, points_world_m): (H, W) uint8/uint16 images, the (H, W)
    float32 optical-axis depth of the left view [m] and its (H, W, 3) float32 map points, NaN
    where a ray misses the terrain. `lighting` (from `prepare_lighting(terrain, sun)`) may be
    passed to reuse the shadow sweep across frames; `rng` draws only the sensor noise.
    """
    calib = rig_calib(rig)
    lighting = prepare_lighting(terrain, sun) if lighting is None else lighting
    R = np.asarray(R_world_cam, np.float64)  # noqa: N806
    c_left = np.asarray(t_world_cam, np.float64).reshape(3)
    c_right = c_left + R[:, 0] * rig.baseline_m
    with ThreadPoolExecutor(2) as pool:                  # numpy releases the GIL: 2 cores
        right_job = pool.submit(_render_view, terrain, lighting, calib, R, c_right)
        depth, points, rad_left = _render_view(terrain, lighting, calib, R, c_left)
        rad_right = right_job.result()[2]
    lit = rad_left[rad_left > 0]
    ref = float(np.percentile(lit, EXPOSURE_PERCENTILE)) if lit.size else 1.0
    scale = rig.gain * EXPOSURE_LEVEL * (2 ** rig.bit_depth - 1) / max(ref, 1e-6)
    left = _expose(rad_left, scale, rig, rng).reshape(calib.shape)
    right = _expose(rad_right, scale, rig, rng).reshape(calib.shape)
    points[~np.isfinite(depth)] = np.nan
    return left, right, depth.reshape(calib.shape), points.reshape(calib.height, calib.width, 3)


def render_frame(terrain: Terrain, cfg: SimConfig, R_world_cam: np.ndarray,  # noqa: N803
                 t_world_cam: np.ndarray, rng: np.random.Generator,
                 lighting: Lighting | None = None) -> RenderedFrame:
    """`render_stereo` with the rig and sun of `cfg`, packed with its calibration and pose."""
    left, right, depth, points = render_stereo(terrain, cfg.rig, cfg.sun, R_world_cam,
                                               t_world_cam, rng, lighting)
    return RenderedFrame(left, right, depth, points, rig_calib(cfg.rig),
                         np.asarray(R_world_cam, np.float64),
                         np.asarray(t_world_cam, np.float64).reshape(3))


__all__ = ['Lighting', 'RenderedFrame', 'sun_direction', 'shadow_mask', 'prepare_lighting',
           'rig_calib', 'camera_rays', 'ray_cast', 'render_stereo', 'render_frame',
           'sunlit_share']

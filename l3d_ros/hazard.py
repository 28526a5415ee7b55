"""Terrain hazard of INTERFACES.md section 4 on a height grid (pure numpy + OpenCV).

Grid convention (shared by the DEM, the hazard layers and nav_msgs/OccupancyGrid): cell (i, j)
of a grid with lower-left corner `origin_xy_m` and spacing `cell_m` has its centre at
x = origin_x + (j + 0.5) cell_m, y = origin_y + (i + 0.5) cell_m in `map`; rows run along +y,
columns along +x, heights are z up.

Per evaluated cell p, a least-squares plane z = a + g . d is fitted to the valid terrain samples
q in the disc of diameter `footprint_m` centred on p (d = q - p [m]); slope is the tilt of that
plane, roughness the largest |residual| r_pq = z_q - a - g . d of those samples to THAT plane.

How it stays exact and fast:
- Plane moments are disc sums of {1, x, y, x^2, xy, y^2, z, zx, zy} in grid coordinates, each
  a sum of per-row box sums read from row-wise prefix sums at the evaluated cells only, then
  shifted to p's local coordinates; the 3x3 normal equations are solved in closed form.
- Roughness decisions use bounds first. With D = max(maxdisc z - a, a - mindisc z) (disc
  max/min filters, a union of rectangle dilations), every |g . d| <= |g| R_max gives
  D - |g| R_max <= max_q |r_pq| <= D + |g| R_max. A cell whose upper bound passes the limit is
  safe, one whose lower bound fails it is hazard; only the cells in between (and only those
  whose slope does not already decide them) get the exact maximum over all their disc samples.
  The labels are therefore exactly those of the brute-force maximum (`exact_roughness=True`);
  `roughness_m` is exact where it was computed and the upper bound D + |g| R_max elsewhere, so
  it is never below the true value (occupancy grading stays conservative).
"""
from dataclasses import dataclass
import math

import cv2
import numpy as np

from l3d_ros.config import HazardConfig
from l3d_ros.dataset import HAZARD_HAZARD, HAZARD_SAFE, HAZARD_UNKNOWN

COVERAGE_MIN = 0.8          # fraction of a disc's cells that must hold terrain to judge it
LATTICE_MAX_CELLS = 150     # auto_stride keeps the evaluated lattice at most this many a side
_CHUNK_ELEMENTS = 1 << 21   # disc samples gathered per chunk of exact cells (8 MB float32)


@dataclass(frozen=True)
class GridGeometry:
    """Where a (rows, cols) grid lies in `map`: lower-left corner [m] and cell size [m]."""

    origin_xy_m: tuple[float, float]
    cell_m: float
    shape: tuple[int, int]

    def cell_index(self, x_m: np.ndarray, y_m: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Map coordinates -> (row, col) int64 indices; -1 in both where outside or NaN."""
        with np.errstate(invalid='ignore'):
            col = np.floor((np.asarray(x_m, np.float64) - self.origin_xy_m[0]) / self.cell_m)
            row = np.floor((np.asarray(y_m, np.float64) - self.origin_xy_m[1]) / self.cell_m)
            inside = (row >= 0) & (row < self.shape[0]) & (col >= 0) & (col < self.shape[1])
        row = np.where(inside, row, -1).astype(np.int64)
        col = np.where(inside, col, -1).astype(np.int64)
        return row, col

    def cell_centre(self, row: np.ndarray, col: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(row, col) -> (x, y) [m] of the cell centres in `map`."""
        return (self.origin_xy_m[0] + (np.asarray(col) + 0.5) * self.cell_m,
                self.origin_xy_m[1] + (np.asarray(row) + 0.5) * self.cell_m)


@dataclass(frozen=True)
class HazardLayers:
    """Hazard of every evaluated cell; all arrays (H, W) on `grid`."""

    slope_deg: np.ndarray       # float32 tilt of the disc's plane, NaN where unknown
    roughness_m: np.ndarray     # float32 max |residual| to that plane (exact, or an upper bound)
    hazard: np.ndarray          # uint8 0 safe, 1 hazard, 255 unknown
    coverage: np.ndarray        # float32 fraction of the disc's cells holding terrain
    margin: np.ndarray          # float32 max(slope/limit, roughness/limit) incl. sigma margins
    height_m: np.ndarray        # float32 height of the disc's plane at the cell centre [m]
    grid: GridGeometry
    stride: int = 1             # DEM cells between evaluated cells (grid.cell_m = stride * DEM)


def disc_offsets(footprint_m: float, cell_m: float) -> tuple[int, np.ndarray]:
    """Radius in cells and the (2R+1, 2R+1) bool mask of cells whose centre is in the disc."""
    radius_cells = int(math.floor(footprint_m / 2 / cell_m + 1e-9))
    d = np.arange(-radius_cells, radius_cells + 1)
    dy, dx = np.meshgrid(d, d, indexing='ij')
    inside = (dx * dx + dy * dy) * cell_m ** 2 <= (footprint_m / 2) ** 2 + 1e-9
    return radius_cells, inside


def auto_stride(shape: tuple[int, int], cell_m: float, footprint_m: float,
                max_cells: int = LATTICE_MAX_CELLS) -> int:
    """Evaluation stride keeping the lattice <= max_cells a side, spacing <= footprint_m / 4.

    Why the spacing cap: values at lattice cells are exact (each disc still sees every DEM cell),
    and a rock anywhere lies within spacing / sqrt(2) <= footprint / 5.7 of a lattice cell, so
    it sits well inside the discs (radius footprint / 2) of all the lattice cells around it;
    with the cap a 4 m footprint on 0.2 m cells never goes coarser than 1 m (stride 5).
    """
    need = max(1, math.ceil(max(shape) / max_cells))
    cap = max(1, int(math.floor(footprint_m / 4 / cell_m + 1e-9)))
    return int(min(need, cap))


def hazard_from_dem(dem_m: np.ndarray, cell_m: float, cfg: HazardConfig,
                    sigma_m: np.ndarray | None = None, stride: int = 1,
                    origin_xy_m: tuple[float, float] = (0.0, 0.0),
                    exact_roughness: bool = False) -> HazardLayers:
    """Slope, roughness and hazard (INTERFACES.md section 4) of a height grid.

    dem_m: (H, W) heights [m], NaN unknown. cell_m: its spacing [m]. origin_xy_m: lower-left
    corner of the DEM in `map` [m]. stride: evaluate every `stride`-th cell (exact values there,
    each disc still sees every DEM cell); the layers' grid then has cell stride * cell_m, each
    coarse cell centred on its evaluated DEM cell. A cell is unknown (255) when its centre has
    no terrain or fewer than COVERAGE_MIN of its disc's cells do (so cells within footprint/2
    of the DEM edge are unknown). exact_roughness: compute the exact maximum residual at every
    known cell (the brute-force reference; same labels, slower).

    Without sigma_m the labels are section 4 exactly: hazard iff slope > slope_max_deg or
    max |residual| > roughness_max_m. sigma_m: optional (H, W) height standard deviation [m]
    (the fused per-cell sigma of DemFusion; a cell with a non-finite sigma counts as no
    terrain). With it, k = cfg.sigma_margin and:
    - slope: hazard when gradient + k * (its standard error) > tan(slope_max_deg);
    - roughness: safe only when max_q (|r_pq| + k sigma_q) <= roughness_max_m, the margin of
      each residual being its own sample's sigma;
    - noise the statistic cannot see through: the measured max |residual| of n noisy samples
      is itself inflated by about sigma sqrt(2 ln n) (~3.4 sigma over a 4 m disc of 0.2 m
      cells). Where that noise floor plus k sigma (sigma: the disc's rms) already exceeds
      roughness_max_m, a smooth disc cannot be told from a rocky one: such a cell is never
      safe; it is unknown (255), or hazard (1) if its max |residual| exceeds roughness_max_m
      plus that noise floor (a rock too big for noise to explain) or its slope fails. Slope,
      averaged over the whole disc, is still judged there. With 0.25 px matching noise on the
      simulator rig this resolves rocks up to ~35-40 m in one frame (sigma ~0.04 m per fused
      cell); higher up, fusing frames over the descent is what brings sigma down.
    """
    dem = np.asarray(dem_m)
    if dem.ndim != 2:
        raise ValueError(f'dem_m.shape={dem.shape}: expected (H, W)')
    if not (cell_m > 0 and math.isfinite(cell_m)):
        raise ValueError(f'cell_m={cell_m!r}: expected a finite number > 0')
    if not (isinstance(stride, (int, np.integer)) and stride >= 1):
        raise ValueError(f'stride={stride!r}: expected an integer >= 1')
    if sigma_m is not None and np.shape(sigma_m) != dem.shape:
        raise ValueError(f'sigma_m.shape={np.shape(sigma_m)}: expected {dem.shape}')
    stride = int(stride)
    radius, inside = disc_offsets(cfg.footprint_m, cell_m)
    n_disc = float(inside.sum())
    valid = np.isfinite(dem)
    sig = None
    if sigma_m is not None:
        sig = np.asarray(sigma_m, np.float32)
        with np.errstate(invalid='ignore'):
            valid &= np.isfinite(sig) & (sig >= 0)
    h, w = dem.shape
    out_h, out_w = -(-h // stride), -(-w // stride)
    shape = (out_h, out_w)
    c = stride * cell_m
    corner = 0.5 * (cell_m - c)
    grid = GridGeometry((origin_xy_m[0] + corner, origin_xy_m[1] + corner), c, shape)
    ref_m = float(np.mean(dem[valid], dtype=np.float64)) if valid.any() else 0.0  # conditioning
    z = np.where(valid, dem - np.float32(ref_m), 0.0).astype(np.float32)

    # plane moments at the lattice: disc sums in grid coordinates [cells], shifted to p
    half_w = _row_half_widths(inside)
    s1 = _disc_sums(valid.astype(np.float64)[None], half_w, stride)[0]
    ok = valid[::stride, ::stride] & (s1 >= COVERAGE_MIN * n_disc)
    coverage = (s1 / n_disc).astype(np.float32)
    if not ok.any():
        nan = np.full(shape, np.nan, np.float32)
        return HazardLayers(nan, nan.copy(), np.full(shape, HAZARD_UNKNOWN, np.uint8),
                            coverage, nan.copy(), nan.copy(), grid, stride)
    xg = (np.arange(w) - 0.5 * (w - 1))[None, :]            # (1, W) column coordinate
    yg = (np.arange(h) - 0.5 * (h - 1))[:, None]            # (H, 1) row coordinate
    wv, zv = valid.astype(np.float64), z.astype(np.float64)
    srcs = [wv * xg, wv * yg, wv * (xg * xg), wv * (xg * yg), wv * (yg * yg),
            zv, zv * xg, zv * yg]
    if sig is not None:
        srcs.append(np.where(valid, sig.astype(np.float64) ** 2, 0.0))
    sums = _disc_sums(np.stack(srcs), half_w, stride)
    sx, sy, sxx, sxy, syy, sz, szx, szy = sums[:8]
    xp, yp = xg[:, ::stride], yg[::stride]
    su, sv = sx - xp * s1, sy - yp * s1
    suu = sxx - 2 * xp * sx + xp * xp * s1
    suv = sxy - xp * sy - yp * sx + xp * yp * s1
    svv = syy - 2 * yp * sy + yp * yp * s1
    szu, szv = szx - xp * sz, szy - yp * sz
    # closed-form inverse of the symmetric normal matrix [[s1, su, sv], [su, suu, suv], ...]
    c00, c01, c02 = suu * svv - suv * suv, sv * suv - su * svv, su * suv - suu * sv
    c11, c12, c22 = s1 * svv - sv * sv, su * sv - s1 * suv, s1 * suu - su * su
    det = s1 * c00 + su * c01 + sv * c02
    det = np.where(ok & (det > 0), det, np.inf)
    ok &= np.isfinite(det)
    a = (c00 * sz + c01 * szu + c02 * szv) / det           # plane height at p [m]
    b = (c01 * sz + c11 * szu + c12 * szv) / det           # dz per column [m / cell]
    cc = (c02 * sz + c12 * szu + c22 * szv) / det          # dz per row [m / cell]
    grad_cells = np.hypot(b, cc)
    grad = grad_cells / cell_m
    tan_max = math.tan(math.radians(cfg.slope_max_deg))
    limit = cfg.roughness_max_m
    k = cfg.sigma_margin if sig is not None else 0.0
    slope_ratio = grad / tan_max
    if sig is not None:
        var_mean = sums[8] / np.maximum(s1, 1.0)
        grad_se = np.sqrt(var_mean * np.maximum(c11, c22) / det) / cell_m
        slope_ratio = (grad + k * grad_se) / tan_max
    slope_haz = ok & (slope_ratio > 1.0)

    # roughness bounds from disc max / min filters
    corners = _disc_rectangles(half_w)
    zmax = _disc_extreme(np.where(valid, z, -np.inf).astype(np.float32), corners, stride, True)
    zmin = _disc_extreme(np.where(valid, z, np.inf).astype(np.float32), corners, stride, False)
    offs = np.nonzero(inside)
    r_max = float(np.sqrt(np.max((offs[0] - radius) ** 2 + (offs[1] - radius) ** 2)))
    dev = np.maximum(zmax - a, a - zmin)
    rough_hi = dev + grad_cells * r_max                     # >= max |residual|
    rough_lo = np.maximum(dev - grad_cells * r_max, 0.0)    # <= max |residual|
    zfill = (np.where(valid, z, -np.inf).astype(np.float32),
             np.where(valid, z, np.inf).astype(np.float32))
    cover, inner = _disc_tiles(inside)
    rough_hi = np.minimum(rough_hi, _tile_bound(zfill, cover, stride, a, b, cc, True))
    rough_lo = np.maximum(rough_lo, _tile_bound(zfill, inner, stride, a, b, cc, False))
    stat_hi = rough_hi
    if sig is not None:
        sig_max = _disc_extreme(np.where(valid, sig, -np.inf).astype(np.float32), corners,
                                stride, True)
        stat_hi = rough_hi + k * sig_max
        sig_rms = np.sqrt(var_mean)
        noise_m = sig_rms * np.sqrt(2.0 * np.log(np.maximum(s1, 2.0))) + k * sig_rms
        unresolved = ok & (noise_m > limit)
        limit_rock = limit + noise_m
    else:
        unresolved = np.zeros(shape, bool)
        limit_rock = np.full(shape, np.inf)
    eps = 1e-4 + 1e-6 * float(np.max(np.abs(z)))           # float32 rounding of the residuals
    todo = ok & ~slope_haz
    safe = todo & (stat_hi <= limit - eps)
    haz1 = todo & (rough_lo > limit + eps)                  # stat >= max |residual| too
    rock = unresolved & (rough_lo > limit_rock + eps)
    undecided = ((todo & ~unresolved & ~safe & ~haz1)
                 | (todo & unresolved & ~rock & (rough_hi > limit_rock - eps)))
    exact = ok if exact_roughness else undecided
    rough = np.where(ok, rough_hi, 0.0).astype(np.float32)
    stat = np.where(ok, stat_hi, 0.0).astype(np.float32)
    if exact.any():
        r_ex, s_ex = _exact_roughness(z, valid, sig, k, inside, stride, exact, a, b, cc)
        rough[exact], stat[exact] = r_ex, s_ex
        sel = exact & todo
        safe = np.where(sel, stat <= limit, safe)
        haz1 = np.where(sel, stat > limit, haz1)
        rock = np.where(exact & unresolved, rough > limit_rock, rock)
    hazard = np.full(shape, HAZARD_UNKNOWN, np.uint8)
    hazard[ok] = HAZARD_HAZARD
    hazard[todo & ~unresolved & safe] = HAZARD_SAFE
    hazard[todo & unresolved & ~rock] = HAZARD_UNKNOWN
    margin = np.maximum(slope_ratio, stat / limit)

    def known(v):
        return np.where(ok, v, np.nan).astype(np.float32)

    slope = known(np.degrees(np.arctan(grad)))
    return HazardLayers(slope, known(rough), hazard, coverage, known(margin),
                        known(a + ref_m), grid, stride)


def hazard_to_occupancy(layers: HazardLayers) -> np.ndarray:
    """nav_msgs/OccupancyGrid values, (H, W) int8, rows along +y as in the layers' grid.

    -1 unknown, 100 hazard; a safe cell gets floor(50 * margin) in 0..49, where margin is the
    larger of slope / limit and roughness / limit (sigma margins included): 0 is level and
    smooth, values near 49 are safe but close to a limit. Thresholds >= 50 see only hazards.
    """
    occ = np.full(layers.hazard.shape, -1, np.int8)
    occ[layers.hazard == HAZARD_HAZARD] = 100
    safe = layers.hazard == HAZARD_SAFE
    occ[safe] = np.clip(np.floor(50 * layers.margin[safe]), 0, 49).astype(np.int8)
    return occ


def pixel_hazard(points_map: np.ndarray, layers: HazardLayers) -> np.ndarray:
    """Hazard of each pixel's ground point: (H, W, 3) points in `map` [m] -> (H, W) uint8.

    The value of the layers' cell holding the point's (x, y); 255 where the point is NaN or
    falls outside the grid (and wherever that cell is unknown).
    """
    pts = np.asarray(points_map)
    if pts.ndim != 3 or pts.shape[2] != 3:
        raise ValueError(f'points_map.shape={pts.shape}: expected (H, W, 3)')
    row, col = layers.grid.cell_index(pts[..., 0], pts[..., 1])
    out = np.full(pts.shape[:2], HAZARD_UNKNOWN, np.uint8)
    inside = row >= 0
    out[inside] = layers.hazard[row[inside], col[inside]]
    return out


def _row_half_widths(inside: np.ndarray) -> np.ndarray:
    """(2R+1,) int: half width of the disc's span on each row offset -R..R."""
    radius = inside.shape[0] // 2
    return np.array([int(np.count_nonzero(row)) // 2 for row in inside]) if radius else \
        np.zeros(1, int)


def _disc_sums(src: np.ndarray, half_w: np.ndarray, stride: int) -> np.ndarray:
    """Disc sums of (m, H, W) float64 sources at every stride-th cell: (m, h, w) float64.

    Outside the grid counts as 0. Each row offset adds a box sum read from row-wise prefix sums
    at the lattice only: cost O(m H W) for the prefix sums + O(m (2R+1) h w) for the reads.
    """
    m, h, w = src.shape
    radius = len(half_w) // 2
    out_h, out_w = -(-h // stride), -(-w // stride)
    csum = np.zeros((m, h + 2 * radius, w + 2 * radius + 1))
    np.cumsum(src, axis=2, out=csum[:, radius:radius + h, radius + 1:radius + 1 + w])
    csum[:, radius:radius + h, radius + 1 + w:] = csum[:, radius:radius + h, radius + w:
                                                       radius + w + 1]
    out = np.zeros((m, out_h, out_w))
    rs, cs = stride * out_h, stride * out_w
    for di, hw in enumerate(half_w):                       # padded row = lattice row + di
        rows = csum[:, di:di + rs:stride]
        out += rows[:, :, radius + hw + 1:radius + hw + 1 + cs:stride]
        out -= rows[:, :, radius - hw:radius - hw + cs:stride]
    return out


def _disc_rectangles(half_w: np.ndarray) -> list[tuple[int, int]]:
    """(half width, half height) rectangles whose union is the disc: its staircase corners."""
    radius = len(half_w) // 2
    hw = half_w[radius:]                                   # row offsets 0..R
    return [(int(hw[i]), i) for i in range(radius + 1) if i == radius or hw[i] > hw[i + 1]]


def _disc_extreme(src: np.ndarray, corners: list[tuple[int, int]], stride: int,
                  maximum: bool) -> np.ndarray:
    """Disc max (or min) of a float32 grid at every stride-th cell; outside the grid ignored.

    The disc is a union of rectangles, so its max is the max of rectangle dilations, each two
    1-D passes (rows, then columns at the lattice columns only).
    """
    op, pick = (cv2.dilate, np.maximum) if maximum else (cv2.erode, np.minimum)
    out = None
    for hw, hh in corners:
        t = op(src, np.ones((1, 2 * hw + 1), np.uint8))[:, ::stride]
        t = op(np.ascontiguousarray(t), np.ones((2 * hh + 1, 1), np.uint8))[::stride]
        out = t if out is None else pick(out, t)
    return out.astype(np.float64)


def _disc_tiles(inside: np.ndarray) -> tuple[list, list]:
    """3x3 tiles over the disc: (cover, inner) lists of (i0, i1, j0, j1) offsets, inclusive.

    Cover tiles together hold every disc cell (they may reach beyond the disc: fine for upper
    bounds); inner tiles are shrunk towards the centre until every cell is in the disc (fine
    for lower bounds).
    """
    radius = inside.shape[0] // 2
    t = -(-(2 * radius + 1) // 3)
    t += 1 - t % 2                                         # odd side, centred tiles
    half = t // 2
    cover, inner = [], []
    for oi in (-t, 0, t):
        for oj in (-t, 0, t):
            i0, i1, j0, j1 = oi - half, oi + half, oj - half, oj + half
            if not inside[max(i0, -radius) + radius:min(i1, radius) + radius + 1,
                          max(j0, -radius) + radius:min(j1, radius) + radius + 1].any():
                continue
            cover.append((i0, i1, j0, j1))
            while True:                                    # shrink the far sides to fit
                i0, i1 = max(i0, -radius), min(i1, radius)
                j0, j1 = max(j0, -radius), min(j1, radius)
                if i0 > i1 or j0 > j1:
                    break
                if inside[i0 + radius:i1 + radius + 1, j0 + radius:j1 + radius + 1].all():
                    inner.append((i0, i1, j0, j1))
                    break
                i0, i1 = i0 + (oi > 0), i1 - (oi < 0)
                j0, j1 = j0 + (oj > 0), j1 - (oj < 0)
                if oi == 0 and oj == 0:
                    i0, i1, j0, j1 = i0 + 1, i1 - 1, j0 + 1, j1 - 1
    return cover, inner


def _tile_bound(zfill: tuple[np.ndarray, np.ndarray], tiles: list, stride: int,
                a: np.ndarray, b: np.ndarray, c: np.ndarray, upper: bool) -> np.ndarray:
    """Upper (cover tiles) or lower (inner tiles) bound of max |residual| at the lattice.

    On a rectangle of offsets with centre o and half sides (hi, hj), g . d lies within
    g . o +- (|c| hi + |b| hj), and max z / min z come from rectangle max / min filters.
    zfill: z with invalid cells -inf (for the max) and +inf (for the min).
    """
    out_h, out_w = a.shape
    pad = max(max(abs(x) for x in tile) for tile in tiles) + 1
    best = np.full(a.shape, -np.inf)
    for i0, i1, j0, j1 in tiles:
        kern = np.ones((i1 - i0 + 1, j1 - j0 + 1), np.uint8)
        ext = []
        for src, op, fill in ((zfill[0], cv2.dilate, -np.inf), (zfill[1], cv2.erode, np.inf)):
            padded = np.pad(src, pad, constant_values=fill)
            m = op(padded, kern, anchor=(0, 0), borderType=cv2.BORDER_CONSTANT,
                   borderValue=fill)
            r0, c0 = pad + i0, pad + j0
            ext.append(m[r0:r0 + stride * out_h:stride, c0:c0 + stride * out_w:stride])
        gd = b * (0.5 * (j0 + j1)) + c * (0.5 * (i0 + i1))
        spread = np.abs(c) * (0.5 * (i1 - i0)) + np.abs(b) * (0.5 * (j1 - j0))
        sign = 1.0 if upper else -1.0
        pos = ext[0] - a - gd + sign * spread              # bound of max (z - plane)
        neg = a + gd - ext[1] + sign * spread              # bound of max (plane - z)
        best = np.maximum(best, np.maximum(pos, neg))
    if upper:
        return best
    return np.where(np.isfinite(best), np.maximum(best, 0.0), 0.0)


def _exact_roughness(z: np.ndarray, valid: np.ndarray, sig: np.ndarray | None, k: float,
                     inside: np.ndarray, stride: int, cells: np.ndarray, a: np.ndarray,
                     b: np.ndarray, c: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Exact max |residual| and max (|residual| + k sigma) over every disc sample of `cells`.

    cells: (h, w) bool on the lattice; a [m], b, c [m / cell]: the planes. Returns two (n,)
    float32 arrays in the row-major order of cells' True entries.
    """
    radius = inside.shape[0] // 2
    zpad = np.pad(np.where(valid, z, np.nan).astype(np.float32), radius,
                  constant_values=np.nan)
    wp = zpad.shape[1]
    off_i, off_j = np.nonzero(inside)
    off_flat = off_i * wp + off_j                          # (K,) in the padded grid
    u = (off_j - radius).astype(np.float32)[:, None]       # (K, 1) column offset [cells]
    v = (off_i - radius).astype(np.float32)[:, None]
    ci, cj = np.nonzero(cells)
    base = ci * stride * wp + cj * stride                  # padded index of disc corner
    a_, b_, c_ = (x[cells].astype(np.float32) for x in (a, b, c))
    zflat = zpad.ravel()
    sflat = None
    if sig is not None and k > 0:
        sflat = np.pad(np.where(valid, sig, np.nan).astype(np.float32), radius,
                       constant_values=np.nan).ravel() * np.float32(k)
    rough = np.empty(len(base), np.float32)
    stat = np.empty(len(base), np.float32)
    step = max(1, _CHUNK_ELEMENTS // len(off_flat))
    for s0 in range(0, len(base), step):
        idx = off_flat[:, None] + base[None, s0:s0 + step]              # (K, n)
        res = np.abs(zflat[idx] - (a_[s0:s0 + step] + u * b_[s0:s0 + step]
                                   + v * c_[s0:s0 + step]))
        rough[s0:s0 + step] = np.fmax.reduce(res, axis=0)
        stat[s0:s0 + step] = (rough[s0:s0 + step] if sflat is None
                              else np.fmax.reduce(res + sflat[idx], axis=0))
    return rough, stat

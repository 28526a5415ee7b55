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
                    exact_roughness: bool = False, refine: bool = False) -> HazardLayers:
    """Slope, roughness and hazard (INTERFACES.md section 4) of a height grid.

    dem_m: (H, W) heights [m], NaN unknown. cell_m: its spacing [m]. origin_xy_m: lower-left
    corner of the DEM in `map` [m]. stride: evaluate every `stride`-th cell (exact values there,
    each disc still sees every DEM cell); the layers' grid then has cell stride * cell_m, each
    coarse cell centred on its evaluated DEM cell. A cell is unknown (255) when its centre has
    no terrain or fewer than COVERAGE_MIN of its disc's cells do (so cells within footprint/2
    of the DEM edge are unknown). exact_roughness: compute the exact maximum residual at every
    known cell (the brute-force reference; same labels, slower).

    refine: with stride > 1, return layers at full resolution (stride 1 grid) computed coarse
    to fine (`_refine`): the stride lattice is evaluated exactly, a DEM cell whose four
    surrounding lattice cells agree with margin inherits their label, and every other cell is
    evaluated exactly. See `_refine` for the margins and what is approximate.

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
    if refine and stride > 1:
        return _refine(dem, cell_m, cfg, sigma_m, stride, origin_xy_m)
    t = _Terrain.build(dem, cell_m, cfg, sigma_m)
    h, w = dem.shape
    shape = (-(-h // stride), -(-w // stride))
    c = stride * cell_m
    corner = 0.5 * (cell_m - c)
    grid = GridGeometry((origin_xy_m[0] + corner, origin_xy_m[1] + corner), c, shape)
    lat = _lattice(t, stride, exact_roughness)
    known = lat.ok & t.valid[::stride, ::stride]
    hazard = np.where(known, lat.label, HAZARD_UNKNOWN).astype(np.uint8)

    def kn(v):
        return np.where(known, v, np.nan).astype(np.float32)

    return HazardLayers(kn(_slope_deg(lat, cell_m)), kn(lat.rough), hazard, lat.coverage,
                        kn(_margin(lat, cfg.roughness_max_m)), kn(lat.a + t.ref_m), grid, stride)


@dataclass(frozen=True)
class _Terrain:
    """A DEM prepared for evaluation: heights relative to their mean, validity, disc."""

    z: np.ndarray               # (H, W) float32 height - ref_m [m], 0 where invalid
    valid: np.ndarray           # (H, W) bool: terrain (and a usable sigma) there
    sig: np.ndarray | None      # (H, W) float32 height sigma [m] or None
    ref_m: float
    cell_m: float
    cfg: HazardConfig
    inside: np.ndarray          # (2R+1, 2R+1) bool disc mask
    k: float                    # sigma margin (0 without sigma)

    @staticmethod
    def build(dem: np.ndarray, cell_m: float, cfg: HazardConfig,
              sigma_m: np.ndarray | None) -> '_Terrain':
        valid = np.isfinite(dem)
        sig = None
        if sigma_m is not None:
            sig = np.asarray(sigma_m, np.float32)
            with np.errstate(invalid='ignore'):
                valid &= np.isfinite(sig) & (sig >= 0)
        ref_m = float(np.mean(dem[valid], dtype=np.float64)) if valid.any() else 0.0
        z = np.where(valid, dem - np.float32(ref_m), np.float32(0)).astype(np.float32)
        _, inside = disc_offsets(cfg.footprint_m, cell_m)
        k = cfg.sigma_margin if sig is not None else 0.0
        return _Terrain(z, valid, sig, ref_m, cell_m, cfg, inside, k)


@dataclass
class _Eval:
    """Disc statistics at every stride-th cell, whether or not the centre holds terrain."""

    ok: np.ndarray              # bool: coverage >= COVERAGE_MIN and a well-posed plane
    coverage: np.ndarray        # float32 fraction of the disc's cells holding terrain
    a: np.ndarray               # plane height at the cell - ref_m [m]
    b: np.ndarray               # plane gradient per column [m / cell]
    c: np.ndarray               # plane gradient per row [m / cell]
    slope_ratio: np.ndarray     # (gradient + k se) / tan(slope_max)
    rough: np.ndarray           # exact max |residual| or an upper bound [m]
    stat: np.ndarray            # exact roughness statistic (incl. k sigma) or an upper bound [m]
    unresolved: np.ndarray      # bool: noise floor above the roughness limit
    limit_rock: np.ndarray      # residual a rock must exceed where unresolved [m]
    noise_m: np.ndarray         # the noise floor [m] (0 without sigma)
    label: np.ndarray           # uint8 0 / 1 / 255 of the disc
    exact: np.ndarray           # bool: rough and stat are exact there


def _plane(t: _Terrain, s1, su, sv, suu, suv, svv, sz, szu, szv, ssig2):
    """Closed-form plane from disc moments in local cell coordinates, and the slope verdict.

    Returns ok (well posed), a [m], b, c [m / cell], grad_cells, slope_ratio, var_mean.
    """
    c00, c01, c02 = suu * svv - suv * suv, sv * suv - su * svv, su * suv - suu * sv
    c11, c12, c22 = s1 * svv - sv * sv, su * sv - s1 * suv, s1 * suu - su * su
    det = s1 * c00 + su * c01 + sv * c02
    n_disc = float(t.inside.sum())
    ok = (s1 >= COVERAGE_MIN * n_disc) & (det > 0)
    det = np.where(ok, det, np.inf)
    a = (c00 * sz + c01 * szu + c02 * szv) / det
    b = (c01 * sz + c11 * szu + c12 * szv) / det
    cc = (c02 * sz + c12 * szu + c22 * szv) / det
    grad_cells = np.hypot(b, cc)
    tan_max = math.tan(math.radians(t.cfg.slope_max_deg))
    slope_ratio = grad_cells / t.cell_m / tan_max
    var_mean = None
    if t.sig is not None:
        var_mean = ssig2 / np.maximum(s1, 1.0)
        grad_se = np.sqrt(var_mean * np.maximum(c11, c22) / det) / t.cell_m
        slope_ratio = slope_ratio + t.k * grad_se / tan_max
    return ok, a, b, cc, grad_cells, slope_ratio, var_mean


def _noise(t: _Terrain, s1, var_mean, shape):
    """(unresolved, limit_rock): where noise hides rocks, and the residual a rock must pass."""
    limit = t.cfg.roughness_max_m
    if t.sig is None:
        return np.zeros(shape, bool), np.full(shape, np.inf), np.zeros(shape)
    sig_rms = np.sqrt(np.maximum(var_mean, 0.0))          # rounding can go below 0
    noise_m = sig_rms * np.sqrt(2.0 * np.log(np.maximum(s1, 2.0))) + t.k * sig_rms
    return noise_m > limit, limit + noise_m, noise_m


def _decide(ok, slope_haz, unresolved, limit_rock, limit, rough_lo, rough_hi, stat_hi,
            eps) -> tuple[np.ndarray, np.ndarray]:
    """Labels (uint8) from roughness bounds and the cells the bounds leave undecided.

    With rough_lo = rough_hi = exact max |residual|, stat_hi = exact statistic and eps = 0
    nothing is left undecided and the labels are the definition's.
    """
    todo = ok & ~slope_haz
    safe = todo & (stat_hi <= limit - eps)
    haz = todo & ((rough_lo > limit + eps) | ((eps == 0) & (stat_hi > limit)))
    rock = unresolved & (rough_lo > limit_rock + eps)
    undecided = ((todo & ~unresolved & ~safe & ~haz)
                 | (todo & unresolved & ~rock & (rough_hi > limit_rock - eps)))
    label = np.full(np.shape(ok), HAZARD_UNKNOWN, np.uint8)
    label[ok] = HAZARD_HAZARD
    label[todo & ~unresolved & safe] = HAZARD_SAFE
    label[todo & unresolved & ~rock] = HAZARD_UNKNOWN
    return label, undecided


def _lattice(t: _Terrain, stride: int, exact_roughness: bool) -> _Eval:
    """Disc statistics at every stride-th cell from moment sums and roughness bounds."""
    valid, z, sig, inside = t.valid, t.z, t.sig, t.inside
    radius = inside.shape[0] // 2
    n_disc = float(inside.sum())
    h, w = z.shape
    half_w = _row_half_widths(inside)
    s1 = _disc_sums([valid.astype(np.float64)], half_w, stride)[0]
    shape = s1.shape
    coverage = (s1 / n_disc).astype(np.float32)
    xg = (np.arange(w) - 0.5 * (w - 1))[None, :]            # (1, W) column coordinate
    yg = (np.arange(h) - 0.5 * (h - 1))[:, None]            # (H, 1) row coordinate
    wv, zv = valid.astype(np.float64), z.astype(np.float64)
    srcs = [wv * xg, wv * yg, wv * (xg * xg), wv * (xg * yg), wv * (yg * yg),
            zv, zv * xg, zv * yg]
    if sig is not None:
        srcs.append(np.where(valid, sig.astype(np.float64) ** 2, 0.0))
    sums = _disc_sums(srcs, half_w, stride)
    sx, sy, sxx, sxy, syy, sz, szx, szy = sums[:8]
    xp, yp = xg[:, ::stride], yg[::stride]
    su, sv = sx - xp * s1, sy - yp * s1
    suu = sxx - 2 * xp * sx + xp * xp * s1
    suv = sxy - xp * sy - yp * sx + xp * yp * s1
    svv = syy - 2 * yp * sy + yp * yp * s1
    szu, szv = szx - xp * sz, szy - yp * sz
    ok, a, b, cc, grad_cells, slope_ratio, var_mean = _plane(
        t, s1, su, sv, suu, suv, svv, sz, szu, szv, sums[8] if sig is not None else None)
    limit = t.cfg.roughness_max_m
    slope_haz = ok & (slope_ratio > 1.0)

    # roughness bounds from disc max / min filters
    corners = _disc_rectangles(half_w)
    zfill = (np.where(valid, z, -np.inf).astype(np.float32),
             np.where(valid, z, np.inf).astype(np.float32))
    zmax = _disc_extreme(zfill[0], corners, stride, True)
    zmin = _disc_extreme(zfill[1], corners, stride, False)
    offs = np.nonzero(inside)
    r_max = float(np.sqrt(np.max((offs[0] - radius) ** 2 + (offs[1] - radius) ** 2)))
    dev = np.maximum(zmax - a, a - zmin)
    rough_hi = dev + grad_cells * r_max                     # >= max |residual|
    rough_lo = np.maximum(dev - grad_cells * r_max, 0.0)    # <= max |residual|
    cover, inner = _disc_tiles(inside)
    rough_hi = np.minimum(rough_hi, _tile_bound(zfill, cover, stride, a, b, cc, True))
    rough_lo = np.maximum(rough_lo, _tile_bound(zfill, inner, stride, a, b, cc, False))
    stat_hi = rough_hi
    if sig is not None:
        sig_max = _disc_extreme(np.where(valid, sig, -np.inf).astype(np.float32), corners,
                                stride, True)
        stat_hi = rough_hi + t.k * sig_max
    unresolved, limit_rock, noise_m = _noise(t, s1, var_mean, shape)
    unresolved &= ok
    eps = 1e-4 + 1e-6 * float(np.max(np.abs(z)))           # float32 rounding of the residuals
    label, undecided = _decide(ok, slope_haz, unresolved, limit_rock, limit, rough_lo,
                               rough_hi, stat_hi, eps)
    exact = ok if exact_roughness else undecided
    rough = np.where(ok, rough_hi, 0.0).astype(np.float32)
    stat = np.where(ok, stat_hi, 0.0).astype(np.float32)
    rough_lo = rough_lo.astype(np.float32)
    if exact.any():
        ci, cj = np.nonzero(exact)
        r_ex, s_ex = _exact_roughness(t, ci * stride, cj * stride, a[exact], b[exact],
                                      cc[exact])
        rough[exact], stat[exact], rough_lo[exact] = r_ex, s_ex, r_ex
        label[exact] = _decide(ok[exact], slope_haz[exact], unresolved[exact],
                               limit_rock[exact], limit, r_ex, r_ex, s_ex, 0.0)[0]
    exact_all = np.zeros(shape, bool)
    exact_all[exact] = True
    return _Eval(ok, coverage, a, b, cc, slope_ratio, rough, stat, unresolved, limit_rock,
                 noise_m, label, exact_all)


REFINE_BAND = (0.93, 1.08)   # interpolated scores inside this band are evaluated exactly


def _refine(dem: np.ndarray, cell_m: float, cfg: HazardConfig, sigma_m: np.ndarray | None,
            stride: int, origin_xy_m: tuple[float, float]) -> HazardLayers:
    """Full-resolution layers, coarse to fine.

    1. The lattice of every stride-th cell (one lattice row / column more than the DEM needs,
       so every cell lies between four lattice cells) is evaluated exactly: exact labels, and
       exact roughness at every lattice cell next to a lattice cell of another label.
    2. Each lattice cell gets continuous scores, hazard exactly where a score exceeds 1:
       max(slope ratio, roughness statistic / limit) where noise resolves rocks, max(slope
       ratio, max |residual| / rock limit) where it does not; and the noise floor / limit and
       the coverage that choose between those regimes and unknown.
    3. Every DEM cell takes the bilinear interpolation of those fields between its four
       lattice cells (over the well-posed ones only) and applies the same thresholds; lattice
       cells keep their exact labels, a cell whose centre holds no terrain is unknown.
    Where all four lattice cells agree, a convex combination of scores on one side of 1 stays
    there: the cell inherits their label. Across a label change the scores are exact at both
    ends, so the boundary falls where the linear interpolation of the score crosses 1; it is
    not exact (a feature smaller than a lattice spacing can be missed between four lattice
    cells that all clear it; test_refined_matches_full_resolution measures how often).
    slope_deg, roughness_m, margin, height_m and coverage are interpolated likewise (exact at
    the lattice cells; elsewhere an estimate, not a bound).
    """
    h, w = dem.shape
    nh, nw = -(-(h - 1) // stride) + 1, -(-(w - 1) // stride) + 1        # lattice rows, cols
    hp, wp = (nh - 1) * stride + 1, (nw - 1) * stride + 1                # padded DEM
    dem_p = np.full((hp, wp), np.nan, np.float32)
    dem_p[:h, :w] = dem
    sig_p = None
    if sigma_m is not None:
        sig_p = np.full((hp, wp), np.nan, np.float32)
        sig_p[:h, :w] = sigma_m
    t = _Terrain.build(dem_p, cell_m, cfg, sig_p)
    grid = GridGeometry(tuple(map(float, origin_xy_m)), cell_m, (h, w))
    lat = _lattice(t, stride, False)
    lab = lat.label
    edge = np.zeros(lab.shape, bool)                 # lattice cells next to another label
    for d0, d1 in (((slice(1, None), slice(None)), (slice(None, -1), slice(None))),
                   ((slice(None), slice(1, None)), (slice(None), slice(None, -1))),
                   ((slice(1, None), slice(1, None)), (slice(None, -1), slice(None, -1))),
                   ((slice(1, None), slice(None, -1)), (slice(None, -1), slice(1, None)))):
        diff = lab[d0] != lab[d1]
        edge[d0] |= diff
        edge[d1] |= diff
    need = edge & lat.ok & ~lat.exact
    if need.any():
        ci, cj = np.nonzero(need)
        lat.rough[need], lat.stat[need] = _exact_roughness(
            t, ci * stride, cj * stride, lat.a[need], lat.b[need], lat.c[need])
    limit = cfg.roughness_max_m
    ok = lat.ok
    okw = ok.astype(np.float32)
    slope_deg, margin = _slope_deg(lat, cell_m), _margin(lat, limit)
    fields = [lat.coverage, okw]
    for v in (margin, np.maximum(lat.slope_ratio, lat.rough / lat.limit_rock),
              lat.noise_m / limit, slope_deg, lat.rough, lat.a):
        fields.append(np.where(ok, v, 0.0) * okw)
    fine = _upsample(np.stack(fields, -1).astype(np.float32), stride, (h, w))
    norm = np.maximum(fine[..., 1], np.float32(1e-6))
    score_res, score_unres, noise_r, slope_f, rough_f, height_f = (
        fine[..., i] / norm for i in range(2, 8))
    known = (fine[..., 0] >= COVERAGE_MIN) & (fine[..., 1] > 0) & t.valid[:h, :w]
    unres = noise_r > 1.0
    hazard = np.full((h, w), HAZARD_UNKNOWN, np.uint8)
    hazard[known & ~unres] = HAZARD_SAFE
    hazard[known & ((~unres & (score_res > 1.0)) | (unres & (score_unres > 1.0)))] = \
        HAZARD_HAZARD
    # mixed blocks: cells whose interpolated score is a close call are evaluated exactly
    lo, hi = REFINE_BAND
    mixed = np.zeros(lab.shape, bool)
    mixed[:-1, :-1] = edge[:-1, :-1] | edge[1:, :-1] | edge[:-1, 1:] | edge[1:, 1:]
    mixed = np.repeat(np.repeat(mixed, stride, 0), stride, 1)[:h, :w]
    score = np.where(unres, score_unres, score_res)
    close = mixed & t.valid[:h, :w] & (score > lo) & (score < hi)
    close[::stride, ::stride] = False
    if close.any():
        rows, cols = np.nonzero(close)
        ok_c, lab_c, slope_c, rough_c, margin_c, a_c = _cells(t, rows, cols)
        hazard[close] = np.where(ok_c, lab_c, HAZARD_UNKNOWN)
        known[close] = ok_c
        slope_f[close], rough_f[close], score_res[close], height_f[close] = (
            slope_c, rough_c, margin_c, a_c)
    lh, lw = -(-h // stride), -(-w // stride)                           # lattice cells kept
    node = lat.ok[:lh, :lw] & t.valid[:h:stride, :w:stride]
    hazard[::stride, ::stride] = np.where(node, lab[:lh, :lw], HAZARD_UNKNOWN)
    known[::stride, ::stride] = node
    height_f += np.float32(t.ref_m)

    def kn(v):
        return np.where(known, v, np.nan).astype(np.float32)

    return HazardLayers(kn(slope_f), kn(rough_f), hazard, fine[..., 0].copy(),
                        kn(score_res), kn(height_f), grid, 1)


def _cells(t: _Terrain, rows: np.ndarray, cols: np.ndarray) -> tuple[np.ndarray, ...]:
    """Exact evaluation at the DEM cells (rows, cols), (n,) each: plane from gathered samples.

    Returns (n,) arrays ok, label, slope_deg, roughness_m, margin, plane height - ref_m [m].
    """
    inside = t.inside
    radius = inside.shape[0] // 2
    off_i, off_j = np.nonzero(inside)
    u = (off_j - radius).astype(np.float64)
    v = (off_i - radius).astype(np.float64)
    geo = np.stack([np.ones_like(u), u, v, u * u, u * v, v * v], 1)      # (K, 6)
    zm = np.stack([np.ones_like(u), u, v], 1)                            # (K, 3)
    zpad = np.pad(np.where(t.valid, t.z, np.nan).astype(np.float32), radius,
                  constant_values=np.nan)
    wp = zpad.shape[1]
    off_flat = off_i * wp + off_j
    zflat = zpad.ravel()
    spad = None
    if t.sig is not None:
        spad = np.pad(np.where(t.valid, t.sig, np.nan).astype(np.float32), radius,
                      constant_values=np.nan).ravel()
    n = len(rows)
    mom = np.empty((n, 10))
    step = max(1, _CHUNK_ELEMENTS // len(off_flat))
    for s0 in range(0, n, step):
        idx = (rows[s0:s0 + step] * wp + cols[s0:s0 + step])[:, None] + off_flat[None]
        zs = zflat[idx]                                                  # (m, K)
        fin = np.isfinite(zs)
        mom[s0:s0 + step, :6] = fin.astype(np.float32) @ geo.astype(np.float32)
        mom[s0:s0 + step, 6:9] = np.where(fin, zs, 0).astype(np.float64) @ zm
        if spad is not None:
            ss = spad[idx]
            mom[s0:s0 + step, 9] = np.where(fin, ss * ss, 0).sum(1, dtype=np.float64)
    s1, su, sv, suu, suv, svv, sz, szu, szv, ssig2 = mom.T
    ok, a, b, cc, grad_cells, slope_ratio, var_mean = _plane(
        t, s1, su, sv, suu, suv, svv, sz, szu, szv, ssig2 if spad is not None else None)
    unresolved, limit_rock, noise_m = _noise(t, s1, var_mean, (n,))
    unresolved &= ok
    rough, stat = _exact_roughness(t, rows, cols, a, b, cc)
    label = _decide(ok, ok & (slope_ratio > 1.0), unresolved, limit_rock,
                    t.cfg.roughness_max_m, rough, rough, stat, 0.0)[0]
    slope = np.degrees(np.arctan(grad_cells / t.cell_m))
    return ok, label, slope, rough, np.maximum(slope_ratio, stat / t.cfg.roughness_max_m), a


def _upsample(v: np.ndarray, stride: int, shape: tuple[int, int]) -> np.ndarray:
    """Bilinear interpolation of lattice values (nh, nw, C) at every DEM cell: (H, W, C).

    Lattice cell (k, l) sits on DEM cell (k stride, l stride).
    """
    h, w = shape
    mx = np.broadcast_to((np.arange(w, dtype=np.float32) / stride)[None, :], (h, w))
    my = np.broadcast_to((np.arange(h, dtype=np.float32) / stride)[:, None], (h, w))
    mx, my = np.ascontiguousarray(mx), np.ascontiguousarray(my)
    out = np.empty((h, w, v.shape[2]), np.float32)
    for c0 in range(0, v.shape[2], 4):
        part = np.ascontiguousarray(v[..., c0:c0 + 4])
        r = cv2.remap(part, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        out[..., c0:c0 + 4] = r.reshape(h, w, -1)
    return out


def _slope_deg(lat: _Eval, cell_m: float) -> np.ndarray:
    return np.degrees(np.arctan(np.hypot(lat.b, lat.c) / cell_m))


def _margin(lat: _Eval, limit: float) -> np.ndarray:
    return np.maximum(lat.slope_ratio, lat.stat / limit)


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


def _disc_sums(src, half_w: np.ndarray, stride: int) -> np.ndarray:
    """Disc sums of m (H, W) float64 sources (a sequence) at every stride-th cell: (m, h, w).

    Outside the grid counts as 0. The disc is cut into horizontal bands of equal half width
    (about R / 2 of them); each band is a rectangle read from the source's integral image
    (cv2.integral) at the lattice only: O(m H W) + O(m * bands * h * w).
    """
    m, (h, w) = len(src), src[0].shape
    radius = len(half_w) // 2
    out_h, out_w = -(-h // stride), -(-w // stride)
    rs, cs = stride * out_h, stride * out_w
    out = np.zeros((m, out_h, out_w))
    for k in range(m):
        padded = cv2.copyMakeBorder(np.ascontiguousarray(src[k]), radius, radius + stride,
                                    radius, radius + stride, cv2.BORDER_CONSTANT, value=0.0)
        integral = cv2.integral(padded, sdepth=cv2.CV_64F)       # (H + 2R + s + 1, ...)
        for top, bottom, hw in _disc_bands(half_w):
            # padded row of lattice row i and row offset di (0..2R) is i + di
            rows_t, rows_b = integral[top:top + rs:stride], integral[bottom:bottom + rs:stride]
            left, right = radius - hw, radius + hw + 1
            out[k] += (rows_b[:, right:right + cs:stride] - rows_b[:, left:left + cs:stride]
                       - rows_t[:, right:right + cs:stride] + rows_t[:, left:left + cs:stride])
    return out


def _disc_bands(half_w: np.ndarray) -> list[tuple[int, int, int]]:
    """(first row offset, last row offset + 1, half width) of each run of equal half widths."""
    bands, start = [], 0
    for di in range(1, len(half_w) + 1):
        if di == len(half_w) or half_w[di] != half_w[start]:
            bands.append((start, di, int(half_w[start])))
            start = di
    return bands


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


def _exact_roughness(t: _Terrain, rows: np.ndarray, cols: np.ndarray, a: np.ndarray,
                     b: np.ndarray, c: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Exact max |residual| and max (|residual| + k sigma) over every disc sample of cells.

    rows, cols: (n,) DEM cell indices; a [m], b, c [m / cell]: their planes, (n,) each.
    Returns two (n,) float32 arrays.
    """
    inside = t.inside
    radius = inside.shape[0] // 2
    zpad = np.pad(np.where(t.valid, t.z, np.nan).astype(np.float32), radius,
                  constant_values=np.nan)
    wp = zpad.shape[1]
    off_i, off_j = np.nonzero(inside)
    off_flat = off_i * wp + off_j                          # (K,) in the padded grid
    u = (off_j - radius).astype(np.float32)[:, None]       # (K, 1) column offset [cells]
    v = (off_i - radius).astype(np.float32)[:, None]
    base = np.asarray(rows) * wp + np.asarray(cols)        # padded index of disc corner
    a_, b_, c_ = (np.asarray(x, np.float32) for x in (a, b, c))
    zflat = zpad.ravel()
    sflat = None
    if t.sig is not None and t.k > 0:
        sflat = np.pad(np.where(t.valid, t.sig, np.nan).astype(np.float32), radius,
                       constant_values=np.nan).ravel() * np.float32(t.k)
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

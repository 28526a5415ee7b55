"""Terrain hazard of INTERFACES.md section 4 on a height grid (pure numpy + OpenCV).

Grid convention (shared by the DEM, the hazard layers and nav_msgs/OccupancyGrid): cell (i, j)
of a grid with lower-left corner `origin_xy_m` and spacing `cell_m` has its centre at
x = origin_x + (j + 0.5) cell_m, y = origin_y + (i + 0.5) cell_m in `map`; rows run along +y,
columns along +x, heights are z up.

Per evaluated cell p, a least-squares plane z = a + g . d is fitted to the valid terrain samples
q in the disc of diameter `footprint_m` centred on p (d = q - p [m]); slope is the tilt of that
plane, roughness the largest |residual| r_pq = z_q - a - g . d of those samples to THAT plane.

How it stays exact and fast:
- Plane moments are disc sums of {1, u, v, u^2, uv, v^2, z, zu, zv} (u, v: offsets from p) at
  the evaluated cells only: on a sparse lattice (stride >= 3) by stride x stride blocks, one
  matrix product per source giving each block's masked, weighted sums for every offset it
  takes in a disc (`_block_moment_sums`); on dense lattices from integral images read per
  band of the disc (`_integral_moment_sums`). The 3x3 normal equations are solved in closed
  form.
- Roughness decisions use bounds first. The disc is covered by 3 x 3 rectangular tiles (and
  holds 3 x 3 shrunk ones); on a tile with centre o and half sides h, g . d lies within
  g . o +- |g| h, and the tile's max / min of z come from separable max / min filters read at
  the lattice. That bounds max_q |r_pq| from above (cover tiles, also per tile with its
  largest sigma for the statistic) and below (inner tiles). A cell whose upper bound passes
  the limit is safe, one whose lower bound fails it is hazard; only the cells in between (and
  only those whose slope does not already decide them) get the exact maximum over all their
  disc samples. The labels are therefore exactly those of the brute-force maximum
  (`exact_roughness=True`); `roughness_m` is exact where it was computed and an upper bound
  elsewhere, so it is never below the true value (occupancy grading stays conservative).
- Large DEMs are evaluated on a lattice and refined to every cell (`_refine`).
- Masks are applied by arithmetic (0 / 1 factors, finite +-3e38 fills), not by np.where:
  DEM holes at high altitude are scattered, which makes masked selects ~20x slower.
"""
from dataclasses import dataclass, field, replace
from functools import cached_property, lru_cache
import math
from typing import Callable

import cv2
import numpy as np

from l3d_ros.config import HazardConfig
from l3d_ros.dataset import HAZARD_HAZARD, HAZARD_SAFE, HAZARD_UNKNOWN

COVERAGE_MIN = 0.8          # fraction of a disc's cells that must hold terrain to judge it
# a rock as tall as the roughness limit is at least this many times as wide (boulders: height
# ~ half the diameter): an unseen patch that wide can hide a hazard (`hidden_patches`)
ROCK_WIDTH_PER_HEIGHT = 2.0
LATTICE_MAX_CELLS = 150     # auto_stride keeps the evaluated lattice at most this many a side
_CHUNK_ELEMENTS = 1 << 21   # disc samples gathered per chunk of exact cells (8 MB float32)
BLOCK_MIN_STRIDE = 3         # lattices at least this sparse take moments by blocks
# hazard_map (OccupancyGrid) grades, `hazard_to_occupancy`: 0..OCCUPANCY_SAFE_MAX safe,
# OCCUPANCY_UNPROVEN measured with no hazard shown, OCCUPANCY_HAZARD hazard, -1 unknown
OCCUPANCY_SAFE_MAX = 49
OCCUPANCY_UNPROVEN = (50, 99)
OCCUPANCY_HAZARD = 100


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
    """Hazard of every evaluated cell; all arrays (H, W) on `grid`.

    hazard, margin, evidence and coverage are computed with the layers; slope_deg,
    roughness_m and height_m (which the per-frame outputs do not need) on first access.

    margin decides the labels (sigma margins included: safe iff <= 1 where noise resolves
    rocks). evidence is what the data show without margins: max(point-estimate slope / limit,
    max |residual| / (roughness limit + noise floor)); above 1 the measurement shows a hazard
    through its noise, at or below 1 a cell that is not safe is only unproven (its roughness
    is not resolved, or it misses safe by its sigma margin). `hazard_to_occupancy` grades
    unproven cells apart from hazards; the labels do not use evidence.
    """

    hazard: np.ndarray          # uint8 0 safe, 1 hazard, 255 unknown
    margin: np.ndarray          # float32 max(slope/limit, roughness/limit) incl. sigma margins
    evidence: np.ndarray        # float32 the same without margins, rock limit + noise floor
    coverage: np.ndarray        # float32 fraction of the disc's cells holding terrain
    grid: GridGeometry
    stride: int                 # DEM cells between evaluated cells (grid.cell_m = stride * DEM)
    detail: Callable[[], tuple[np.ndarray, np.ndarray, np.ndarray]] = field(
        repr=False, compare=False)  # -> (slope_deg, roughness_m, height_m)

    @cached_property
    def _detail(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return self.detail()

    @property
    def slope_deg(self) -> np.ndarray:
        """float32 tilt of the disc's plane [deg], NaN where unknown."""
        return self._detail[0]

    @property
    def roughness_m(self) -> np.ndarray:
        """float32 max |residual| to that plane [m] (exact, or an upper bound), NaN unknown."""
        return self._detail[1]

    @property
    def height_m(self) -> np.ndarray:
        """float32 height of the disc's plane at the cell centre [m], NaN where unknown."""
        return self._detail[2]


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


def unknown_layers(grid: GridGeometry) -> HazardLayers:
    """Layers on `grid` with every cell unknown (nothing there can be judged)."""
    def nan():
        return np.full(grid.shape, np.nan, np.float32)

    return HazardLayers(np.full(grid.shape, HAZARD_UNKNOWN, np.uint8), nan(), nan(),
                        np.zeros(grid.shape, np.float32), grid, 1, lambda: (nan(), nan(), nan()))


def seen_hull(valid: np.ndarray) -> np.ndarray:
    """(H, W) bool: the convex hull of the cells holding terrain (the extent of what was seen)."""
    valid = np.asarray(valid, bool)
    rows = np.flatnonzero(valid.any(axis=1))
    hull = np.zeros(valid.shape, np.uint8)
    if rows.size:
        first = np.argmax(valid[rows], axis=1)                      # first and last valid
        last = valid.shape[1] - 1 - np.argmax(valid[rows, ::-1], axis=1)   # column per row
        pts = np.concatenate([np.stack([first, rows], 1), np.stack([last, rows], 1)])
        cv2.fillConvexPoly(hull, cv2.convexHull(pts.astype(np.int32)), 1)
    return hull.view(bool)


def hidden_patches(valid: np.ndarray, cell_m: float, cfg: HazardConfig) -> np.ndarray:
    """(H, W) bool: cells whose footprint disc holds an unseen patch that could hide a hazard.

    A disc is judged from COVERAGE_MIN of its cells, which tolerates the scattered holes of
    stereo sampling, but a contiguous patch without terrain inside what was seen (a shadow,
    an occlusion, ground the matcher could not match) can hold what the seen cells do not
    show: at low sun, the shadowed floor of a crater 0.5 m deep (held-out pairs at sun 2-6
    deg, 20-26 m, `l3d sim dataset --seed 5101`: SGBM discs of 82-95 % coverage were called
    safe around such floors, true roughness up to 0.88 m). A patch is a k x k square of cells
    without terrain, k = ceil(ROCK_WIDTH_PER_HEIGHT * roughness_max_m / cell_m) (3 cells of
    0.2 m at 0.3 m): narrower gaps (sampling holes, the thin shadow of a pebble) cannot hide a
    rock as tall as the limit. A disc holding a cell of such a square cannot be safe.

    Only patches within the convex hull of the seen cells count: beyond the edge of the view
    the coverage rule alone applies (there, in a descent, earlier and higher frames have
    usually seen the ground; counting it too took the oracle's per-pixel hazard F1 on single
    frames from 0.99 to 0.41 for no hazard found).
    """
    valid = np.asarray(valid, bool)
    k = max(1, math.ceil(ROCK_WIDTH_PER_HEIGHT * cfg.roughness_max_m / cell_m - 1e-9))
    unseen = (~valid & seen_hull(valid)).view(np.uint8)
    if k > 1:       # the union of the k x k all-unseen squares (an opening; off-grid: seen)
        kernel = np.ones((k, k), np.uint8)
        # erode's anchor is (k // 2): the square of an eroded cell spans -(k // 2) .. k - 1 -
        # k // 2 around it; dilating back needs the mirrored anchor (they differ for even k)
        back = ((k - 1) // 2, (k - 1) // 2)
        unseen = cv2.dilate(cv2.erode(unseen, kernel, borderType=cv2.BORDER_CONSTANT,
                                      borderValue=0), kernel, anchor=back)
    if not unseen.any():
        return np.zeros(unseen.shape, bool)
    # distance [cells] of every cell to the nearest patch cell (exact Euclidean); the disc
    # holds that cell when it is within footprint_m / 2 (disc_offsets' rule, cell centres)
    dist = cv2.distanceTransform(np.uint8(1) - unseen, cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
    return dist <= cfg.footprint_m / 2 / cell_m + 1e-6


def judgeable_window(valid: np.ndarray, cell_m: float, footprint_m: float
                     ) -> tuple[int, int, int, int] | None:
    """(row0, row1, col0, col1) of a (H, W) grid outside which no cell can be judged.

    A cell is judged only when COVERAGE_MIN of its disc holds terrain; its disc lies in the
    (2R+1)^2 square around it, so cells whose square holds fewer valid cells than that are
    unknown whatever the heights. The window is the bounding box of the other cells, grown
    by the disc radius (their discs' terrain) and by the largest auto_stride (the refine's
    interpolation reach), clipped to the grid; None when no cell can be judged. Evaluating
    the window instead of the grid changes no judgeable cell: at high altitude the DEM has
    scattered holes and stray stereo points that stretch its bounding box.
    """
    radius, inside = disc_offsets(footprint_m, cell_m)
    need = math.ceil(COVERAGE_MIN * int(inside.sum()) - 1e-9)
    h, w = valid.shape
    side = 2 * radius + 1
    padded = cv2.copyMakeBorder(valid.view(np.uint8), radius, radius, radius, radius,
                                cv2.BORDER_CONSTANT, value=0)
    integral = cv2.integral(padded, sdepth=cv2.CV_32S)
    square = (integral[side:, side:] - integral[:-side, side:] - integral[side:, :-side]
              + integral[:-side, :-side])                          # (H, W) valid per square
    cand = square >= need
    rows, cols = np.flatnonzero(cand.any(axis=1)), np.flatnonzero(cand.any(axis=0))
    if not len(rows):
        return None
    grow = radius + max(1, int(math.floor(footprint_m / 4 / cell_m + 1e-9)))
    return (max(int(rows[0]) - grow, 0), min(int(rows[-1]) + 1 + grow, h),
            max(int(cols[0]) - grow, 0), min(int(cols[-1]) + 1 + grow, w))


def hazard_from_dem(dem_m: np.ndarray, cell_m: float, cfg: HazardConfig,
                    sigma_m: np.ndarray | None = None, stride: int = 1,
                    origin_xy_m: tuple[float, float] = (0.0, 0.0),
                    exact_roughness: bool = False, refine: bool = False,
                    unseen_patches: bool = True) -> HazardLayers:
    """Slope, roughness and hazard (INTERFACES.md section 4) of a height grid.

    dem_m: (H, W) heights [m], NaN unknown. cell_m: its spacing [m]. origin_xy_m: lower-left
    corner of the DEM in `map` [m]. stride: evaluate every `stride`-th cell (exact values there,
    each disc still sees every DEM cell); the layers' grid then has cell stride * cell_m, each
    coarse cell centred on its evaluated DEM cell. A cell is unknown (255) when its centre has
    no terrain or fewer than COVERAGE_MIN of its disc's cells do (so cells within footprint/2
    of the DEM edge are unknown). exact_roughness: compute the exact maximum residual at every
    known cell (the brute-force reference; same labels, slower).

    unseen_patches: a disc holding an unseen patch inside the seen ground is never safe
    (`hidden_patches`); False only for a DEM whose holes hide nothing (the ground truth: the
    true terrain, cut to what the camera sees).

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
        layers = _refine(dem, cell_m, cfg, sigma_m, stride, origin_xy_m)
    else:
        layers = _strided(dem, cell_m, cfg, sigma_m, stride, origin_xy_m, exact_roughness)
    return _unsafe_where_hidden(layers, dem, sigma_m, cell_m, cfg) if unseen_patches else layers


def _strided(dem: np.ndarray, cell_m: float, cfg: HazardConfig, sigma_m: np.ndarray | None,
             stride: int, origin_xy_m: tuple[float, float], exact_roughness: bool
             ) -> HazardLayers:
    """Layers at every stride-th cell (hazard_from_dem without refine)."""
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

    return HazardLayers(hazard, kn(_margin(lat, cfg.roughness_max_m)),
                        kn(_evidence(lat, cell_m, cfg)), lat.coverage, grid, stride,
                        lambda: (kn(_slope_deg(lat, cell_m)), kn(lat.rough), kn(lat.a + t.ref_m)))


def _unsafe_where_hidden(layers: HazardLayers, dem: np.ndarray, sigma_m: np.ndarray | None,
                         cell_m: float, cfg: HazardConfig) -> HazardLayers:
    """Safe cells whose disc holds an unseen patch (`hidden_patches`) become not safe: hazard
    (1) with their evidence kept, so the occupancy grades them unproven unless the seen cells
    already show a hazard."""
    valid = usable_cells(dem, sigma_m)
    if valid.all():
        return layers
    s = layers.stride
    hidden = hidden_patches(valid, cell_m, cfg)[::s, ::s]
    turn = hidden & (layers.hazard == HAZARD_SAFE)
    if not turn.any():
        return layers
    hazard = layers.hazard.copy()
    hazard[turn] = HAZARD_HAZARD
    return replace(layers, hazard=hazard)


def usable_cells(dem: np.ndarray, sigma_m: np.ndarray | None) -> np.ndarray:
    """(H, W) bool: cells holding terrain: a finite height and, with sigma_m, a sigma in
    [0, inf) (0: an exact sample)."""
    valid = np.isfinite(dem)
    if sigma_m is not None:
        sig = np.asarray(sigma_m, np.float32)
        with np.errstate(invalid='ignore'):
            valid &= (sig >= 0) & (sig < np.inf)
    return valid


_BIG = np.float32(3e38)        # stands for +-inf where a finite fill keeps arithmetic cheap


@dataclass(frozen=True)
class _Terrain:
    """A DEM prepared for evaluation: heights relative to their mean, validity, disc.

    Invalid cells are masked by arithmetic (multiplying by `vf`), not np.where: DEM holes are
    scattered at high altitude, and a scattered mask makes np.where ~20x slower.
    """

    z: np.ndarray               # (H, W) float32 height - ref_m [m], 0 where invalid
    valid: np.ndarray           # (H, W) bool: terrain (and a usable sigma) there
    vf: np.ndarray              # (H, W) float32 valid as 1 / 0
    sig: np.ndarray | None      # (H, W) float32 height sigma [m], 0 where invalid; or None
    ref_m: float
    cell_m: float
    cfg: HazardConfig
    inside: np.ndarray          # (2R+1, 2R+1) bool disc mask
    k: float                    # sigma margin (0 without sigma)

    @staticmethod
    def build(dem: np.ndarray, cell_m: float, cfg: HazardConfig, sigma_m: np.ndarray | None,
              shape: tuple[int, int] | None = None) -> '_Terrain':
        """shape: pad the DEM with invalid cells at the high ends to this (H, W)."""
        dem = np.asarray(dem, np.float32)
        h, w = dem.shape
        shape = dem.shape if shape is None else shape
        valid = np.zeros(shape, bool)
        v = valid[:h, :w]
        v[...] = usable_cells(dem, sigma_m)
        vf = valid.astype(np.float32)
        n = int(np.count_nonzero(v))
        z = np.zeros(shape, np.float32)
        np.multiply(_finite(dem), vf[:h, :w], out=z[:h, :w])
        ref_m = float(np.sum(z, dtype=np.float64) / n) if n else 0.0
        z -= np.float32(ref_m)
        z *= vf
        sig = None
        if sigma_m is not None:
            sig = np.zeros(shape, np.float32)
            np.multiply(_finite(np.asarray(sigma_m, np.float32)), vf[:h, :w], out=sig[:h, :w])
        _, inside = disc_offsets(cfg.footprint_m, cell_m)
        k = cfg.sigma_margin if sig is not None else 0.0
        return _Terrain(z, valid, vf, sig, ref_m, cell_m, cfg, inside, k)

    def filled(self, sign: float) -> np.ndarray:
        """z with invalid cells at sign * 3e38 (-: for maxima, +: for minima), float32."""
        return self.z + (np.float32(sign) * _BIG) * (np.float32(1) - self.vf)

    @cached_property
    def padded(self) -> tuple[np.ndarray, np.ndarray | None, int]:
        """(z, sigma or None) padded by the disc radius, NaN where invalid, flattened; row
        length of the padded grid."""
        radius = self.inside.shape[0] // 2
        with np.errstate(invalid='ignore', divide='ignore'):
            nan_inv = self.vf / self.vf                 # 1 valid, NaN invalid

        def pad(v):
            return np.pad(v * nan_inv, radius, constant_values=np.nan)

        zpad = pad(self.z)
        spad = None if self.sig is None else pad(self.sig).ravel()
        return zpad.ravel(), spad, zpad.shape[1]


def _finite(v: np.ndarray) -> np.ndarray:
    """v with NaN and +-inf replaced by finite values (to be multiplied by a 0 / 1 mask)."""
    return np.fmin(np.fmax(v, -_BIG), _BIG)


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
    z, sig, inside = t.z, t.sig, t.inside
    radius = inside.shape[0] // 2
    n_disc = float(inside.sum())
    half_w = _row_half_widths(inside)
    sums = _moment_sums(t, half_w, stride)
    s1, su, sv, suu, suv, svv, sz, szu, szv = sums[:9]
    shape = s1.shape
    coverage = (s1 / n_disc).astype(np.float32)
    ok, a, b, cc, grad_cells, slope_ratio, var_mean = _plane(
        t, s1, su, sv, suu, suv, svv, sz, szu, szv, sums[9] if sig is not None else None)
    limit = t.cfg.roughness_max_m
    slope_haz = ok & (slope_ratio > 1.0)

    # roughness bounds from max / min filters over tiles of the disc
    offs = np.nonzero(inside)
    r_max = float(np.sqrt(np.max((offs[0] - radius) ** 2 + (offs[1] - radius) ** 2)))
    cover, inner = _disc_tiles(inside)
    tiles = cover + inner
    zmax = _tile_extremes(t.filled(-1.0), tiles, stride, shape, True)
    zmin = _tile_extremes(t.filled(1.0), tiles, stride, shape, False)
    n = len(cover)
    per_tile = _tile_bounds(zmax[:n], zmin[:n], cover, a, b, cc, True)
    rough_hi = np.minimum(np.max(per_tile, axis=0), np.maximum(
        np.max(zmax[:n], axis=0) - a, a - np.min(zmin[:n], axis=0)) + grad_cells * r_max)
    unresolved, limit_rock, noise_m = _noise(t, s1, var_mean, shape)
    unresolved &= ok
    stat_hi = rough_hi
    if sig is not None and not (ok & ~unresolved).any():   # the statistic decides nowhere:
        stat_hi = rough_hi + t.k * float(np.max(sig))       # a loose bound is enough
    elif sig is not None:        # per tile: its residual bound + k * its largest sigma
        sig_max = np.maximum(_tile_extremes(sig - _BIG * (np.float32(1) - t.vf), cover,
                                            stride, shape, True), np.float32(0))
        stat_hi = np.minimum(rough_hi + t.k * np.max(sig_max, axis=0),
                             np.max(per_tile + t.k * sig_max, axis=0))
    per_tile = _tile_bounds(zmax[n:], zmin[n:], inner, a, b, cc, False)
    rough_lo = np.maximum(np.max(per_tile, axis=0), np.maximum(
        np.max(zmax[n:], axis=0) - a, a - np.min(zmin[n:], axis=0)) - grad_cells * r_max)
    rough_lo = np.maximum(rough_lo, 0.0)
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
# label of a refined cell by code = 4 known + 2 (score > 1) + unresolved
_REFINE_LABELS = np.full(256, HAZARD_UNKNOWN, np.uint8)                # a cv2.LUT table
_REFINE_LABELS[[4, 6, 7]] = HAZARD_SAFE, HAZARD_HAZARD, HAZARD_HAZARD


def _refine(dem: np.ndarray, cell_m: float, cfg: HazardConfig, sigma_m: np.ndarray | None,
            stride: int, origin_xy_m: tuple[float, float]) -> HazardLayers:
    """Full-resolution layers, coarse to fine.

    1. The lattice of every stride-th cell (one lattice row / column more than the DEM needs,
       so every cell lies between four lattice cells) is evaluated exactly: exact labels, and
       exact roughness at every lattice cell next to a lattice cell of another label when one
       of the two is safe (elsewhere the roughness is an upper bound, which only moves a
       hazard / unknown boundary towards the hazard side).
    2. Each lattice cell gets continuous scores, hazard exactly where a score exceeds 1:
       max(slope ratio, roughness statistic / limit) where noise resolves rocks, max(slope
       ratio, max |residual| / rock limit) where it does not; and the noise floor / limit and
       the coverage that choose between those regimes and unknown.
    3. Every DEM cell takes the bilinear interpolation of those fields between its four
       lattice cells (over the well-posed ones only) and applies the same thresholds; lattice
       cells keep their exact labels, a cell whose centre holds no terrain is unknown.
    4. Between four lattice cells that do not all agree, cells are evaluated exactly where
       the interpolation could be wrong in a way that matters: with a safe lattice cell among
       the four, the close calls (interpolated score within REFINE_BAND); without one, every
       cell the interpolation calls safe. Hazard / unknown patchworks (noise-limited terrain)
       are not refined: a wrong label there is never a wrong "safe".
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
    t = _Terrain.build(dem, cell_m, cfg, sigma_m, (hp, wp))
    grid = GridGeometry(tuple(map(float, origin_xy_m)), cell_m, (h, w))
    lat = _lattice(t, stride, False)
    lab = lat.label
    edge = np.zeros(lab.shape, bool)                 # lattice cells next to another label
    edge_safe = np.zeros(lab.shape, bool)            # ... where one of the two is safe
    safe_lat = lab == HAZARD_SAFE
    for d0, d1 in (((slice(1, None), slice(None)), (slice(None, -1), slice(None))),
                   ((slice(None), slice(1, None)), (slice(None), slice(None, -1))),
                   ((slice(1, None), slice(1, None)), (slice(None, -1), slice(None, -1))),
                   ((slice(1, None), slice(None, -1)), (slice(None, -1), slice(1, None)))):
        diff = lab[d0] != lab[d1]
        edge[d0] |= diff
        edge[d1] |= diff
        diff &= safe_lat[d0] | safe_lat[d1]
        edge_safe[d0] |= diff
        edge_safe[d1] |= diff
    need = edge_safe & lat.ok & ~lat.exact
    if need.any():
        ci, cj = np.nonzero(need)
        lat.rough[need], lat.stat[need] = _exact_roughness(
            t, ci * stride, cj * stride, lat.a[need], lat.b[need], lat.c[need])
    limit = cfg.roughness_max_m
    ok = lat.ok
    okw = ok.astype(np.float32)

    def up(v):                        # lattice field -> every DEM cell, over well-posed cells
        return _upsample(np.where(ok, v, 0.0).astype(np.float32), stride, (h, w))

    coverage = _upsample(lat.coverage, stride, (h, w))
    weight = _upsample(okw, stride, (h, w))
    inv = np.float32(1) / np.maximum(weight, np.float32(1e-6))
    score_res = up(_margin(lat, limit)) * inv
    score_unres = up(np.maximum(lat.slope_ratio, lat.rough / lat.limit_rock)) * inv
    evidence = up(_evidence(lat, cell_m, cfg)) * inv
    unres = up(lat.noise_m / limit) * inv > 1.0
    known = (coverage >= COVERAGE_MIN) & (weight > 0) & t.valid[:h, :w]
    score = score_res + unres * (score_unres - score_res)     # the score of the cell's regime
    # label by table lookup on (known, score > 1, unresolved): scattered masks are slow
    code = (known.view(np.uint8) << 2) | ((score > 1.0).view(np.uint8) << 1) | unres.view(
        np.uint8)
    hazard = cv2.LUT(code, _REFINE_LABELS)
    # mixed blocks (a label change within one lattice step): cells that could wrongly be safe
    # are evaluated exactly, and close calls that could turn safe
    mixed = np.zeros(lab.shape, bool)
    mixed[:-1, :-1] = edge[:-1, :-1] | edge[1:, :-1] | edge[:-1, 1:] | edge[1:, 1:]
    exact_cells = None
    if mixed.any():
        with_safe = np.zeros(lab.shape, bool)        # a safe lattice cell among the four
        with_safe[:-1, :-1] = (safe_lat[:-1, :-1] | safe_lat[1:, :-1] | safe_lat[:-1, 1:]
                               | safe_lat[1:, 1:])
        lo, hi = REFINE_BAND
        close = (score > lo) & (score < hi)
        fine_safe = hazard == HAZARD_SAFE

        def fine(m):
            return np.repeat(np.repeat(m, stride, 0), stride, 1)[:h, :w]

        # with a safe corner: the close calls; without: any cell interpolated as safe
        exact = fine(mixed) & t.valid[:h, :w] & np.where(fine(with_safe), close, fine_safe)
        exact[::stride, ::stride] = False
        if exact.any():
            rows, cols = np.nonzero(exact)
            ok_c, lab_c, slope_c, rough_c, margin_c, a_c, evidence_c = _cells(t, rows, cols)
            hazard[exact] = np.where(ok_c, lab_c, HAZARD_UNKNOWN)
            known[exact] = ok_c
            score_res[exact] = margin_c
            evidence[exact] = evidence_c
            exact_cells = (exact, slope_c, rough_c, a_c + np.float32(t.ref_m))
    lh, lw = -(-h // stride), -(-w // stride)                           # lattice cells kept
    node = lat.ok[:lh, :lw] & t.valid[:h:stride, :w:stride]
    hazard[::stride, ::stride] = np.where(node, lab[:lh, :lw], HAZARD_UNKNOWN)
    known[::stride, ::stride] = node
    with np.errstate(invalid='ignore', divide='ignore'):
        one_or_nan = known.astype(np.float32)
        one_or_nan /= one_or_nan                                        # 1 known, NaN not

    def detail():
        fields = [up(v) * inv for v in (_slope_deg(lat, cell_m), lat.rough, lat.a + t.ref_m)]
        if exact_cells is not None:
            for f, v in zip(fields, exact_cells[1:]):
                f[exact_cells[0]] = v
        return tuple(f * one_or_nan for f in fields)

    return HazardLayers(hazard, score_res * one_or_nan, evidence * one_or_nan, coverage, grid,
                        1, detail)


def _cells(t: _Terrain, rows: np.ndarray, cols: np.ndarray) -> tuple[np.ndarray, ...]:
    """Exact evaluation at the DEM cells (rows, cols), (n,) each: plane from gathered samples.

    Returns (n,) arrays ok, label, slope_deg, roughness_m, margin, plane height - ref_m [m],
    evidence.
    """
    samples = _DiscSamples.of(t)
    geo = np.stack([np.ones_like(samples.u), samples.u, samples.v, samples.u * samples.u,
                    samples.u * samples.v, samples.v * samples.v], 1)     # (K, 6), integers
    zm = geo[:, :3]
    n = len(rows)
    parts = []
    for s0 in range(0, n, samples.step):
        zs, ss = samples.gather(rows[s0:s0 + samples.step], cols[s0:s0 + samples.step])
        fin = np.isfinite(zs).astype(np.float32)                         # (K, m)
        zs0 = np.fmax(zs, -_BIG) * fin                                   # NaN -> 0
        mom = [*(geo.T @ fin).astype(np.float64), *(zm.T @ zs0).astype(np.float64)]
        ssig2 = None
        if ss is not None:
            ss0 = np.fmax(ss, 0) * fin                                   # NaN -> 0
            ssig2 = np.einsum('ij,ij->j', ss0, ss0, dtype=np.float64)
        ok, a, b, cc, grad_cells, slope_ratio, var_mean = _plane(t, *mom, ssig2)
        rough, stat = samples.roughness(zs, ss, a, b, cc)
        parts.append((mom[0], ok, a, grad_cells, slope_ratio, var_mean, rough, stat))
    s1, ok, a, grad_cells, slope_ratio, var_mean, rough, stat = (
        None if parts[0][i] is None else np.concatenate([p[i] for p in parts])
        for i in range(8))
    unresolved, limit_rock, noise_m = _noise(t, s1, var_mean, (n,))
    unresolved &= ok
    label = _decide(ok, ok & (slope_ratio > 1.0), unresolved, limit_rock,
                    t.cfg.roughness_max_m, rough, rough, stat, 0.0)[0]
    slope = np.degrees(np.arctan(grad_cells / t.cell_m))
    evidence = _evidence_of(grad_cells, rough, noise_m, t.cell_m, t.cfg)
    return (ok, label, slope, rough, np.maximum(slope_ratio, stat / t.cfg.roughness_max_m), a,
            evidence)


@dataclass(frozen=True)
class _DiscSamples:
    """Gathering every disc sample of chosen DEM cells, in chunks of (K, m) float32."""

    t: _Terrain
    off_flat: np.ndarray        # (K,) sample offsets in the padded grid
    u: np.ndarray               # (K,) float32 column offset [cells]
    v: np.ndarray               # (K,) float32 row offset [cells]
    step: int                   # cells per chunk

    @staticmethod
    def of(t: _Terrain) -> '_DiscSamples':
        radius = t.inside.shape[0] // 2
        off_i, off_j = np.nonzero(t.inside)
        wp = t.padded[2]
        return _DiscSamples(t, off_i * wp + off_j, (off_j - radius).astype(np.float32),
                            (off_i - radius).astype(np.float32),
                            max(1, _CHUNK_ELEMENTS // len(off_i)))

    def gather(self, rows: np.ndarray, cols: np.ndarray):
        """(K, m) heights - ref_m (NaN invalid) and sigmas (or None) around the cells."""
        zflat, sflat, wp = self.t.padded
        idx = self.off_flat[:, None] + (np.asarray(rows) * wp + np.asarray(cols))[None]
        return np.take(zflat, idx), None if sflat is None else np.take(sflat, idx)

    def roughness(self, zs, ss, a, b, c) -> tuple[np.ndarray, np.ndarray]:
        """Exact max |residual| and max (|residual| + k sigma) of gathered samples to planes
        (a [m], b, c [m / cell], (m,) each); NaN samples are skipped. Two (m,) float32."""
        plane = np.stack([self.u, self.v], 1) @ np.stack([b, c]).astype(np.float32)  # (K, m)
        plane += np.asarray(a, np.float32)
        res = np.abs(zs - plane, out=plane)
        rough = np.fmax.reduce(res, axis=0)
        if ss is None or self.t.k <= 0:
            return rough, rough
        res += ss * np.float32(self.t.k)
        return rough, np.fmax.reduce(res, axis=0)


def _upsample(v: np.ndarray, stride: int, shape: tuple[int, int]) -> np.ndarray:
    """Bilinear interpolation of a lattice field (nh, nw) float32 at every DEM cell: (H, W).

    Lattice cell (k, l) sits on DEM cell (k stride, l stride); H <= (nh - 1) stride + 1.
    For an odd stride cv2.resize by `stride` maps output pixel x to input (x - (stride - 1)
    / 2) / stride, so the DEM cell j is output pixel j + (stride - 1) / 2: exact float
    weights. An even stride goes through cv2.warpAffine (weights in steps of 1/32).
    """
    h, w = shape
    if stride % 2:
        off = (stride - 1) // 2
        big = cv2.resize(v, (v.shape[1] * stride, v.shape[0] * stride),
                         interpolation=cv2.INTER_LINEAR)
        return big[off:off + h, off:off + w]
    m = np.array([[1.0 / stride, 0.0, 0.0], [0.0, 1.0 / stride, 0.0]])
    return cv2.warpAffine(v, m, (w, h), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                          borderMode=cv2.BORDER_REPLICATE)


def _slope_deg(lat: _Eval, cell_m: float) -> np.ndarray:
    return np.degrees(np.arctan(np.hypot(lat.b, lat.c) / cell_m))


def _margin(lat: _Eval, limit: float) -> np.ndarray:
    return np.maximum(lat.slope_ratio, lat.stat / limit)


def _evidence_of(grad_cells: np.ndarray, rough: np.ndarray, noise_m: np.ndarray,
                 cell_m: float, cfg: HazardConfig) -> np.ndarray:
    """max(point-estimate slope / limit, max |residual| / (limit + noise floor)) (HazardLayers).

    rough may be an upper bound of the max |residual| (the lattice's tile bounds): that only
    raises the evidence, so a cell is never called unproven on a bound.
    """
    tan_max = math.tan(math.radians(cfg.slope_max_deg))
    return np.maximum(grad_cells / cell_m / tan_max,
                      rough / (cfg.roughness_max_m + noise_m)).astype(np.float32)


def _evidence(lat: _Eval, cell_m: float, cfg: HazardConfig) -> np.ndarray:
    return _evidence_of(np.hypot(lat.b, lat.c), lat.rough, lat.noise_m, cell_m, cfg)


def hazard_to_occupancy(layers: HazardLayers) -> np.ndarray:
    """nav_msgs/OccupancyGrid values, (H, W) int8, rows along +y as in the layers' grid.

    - 0..49 safe, floor(50 * margin): the larger of slope / limit and roughness / limit
      (sigma margins included); 0 is level and smooth, values near 49 are safe but close to a
      limit. Thresholds >= 50 see only hazards, and nothing else is ever below 50.
    - 50..99 unproven: measured, not safe, but nothing in the data shows a hazard through its
      noise (`HazardLayers.evidence` <= 1), 50 + floor(49 * evidence): roughness not yet
      resolved at this range, or safe but for the sigma margin. A guidance may prefer such
      ground to look at closer; it is no landing site.
    - 100 hazard: the data show one (evidence > 1: slope, or a residual beyond the roughness
      limit plus the noise floor).
    - -1 unknown: no terrain at the cell, or too little in its disc to judge it.
    """
    occ = np.full(layers.hazard.shape, -1, np.int8)
    occ[layers.hazard == HAZARD_HAZARD] = OCCUPANCY_HAZARD
    safe = layers.hazard == HAZARD_SAFE
    occ[safe] = np.clip(np.floor((OCCUPANCY_SAFE_MAX + 1) * layers.margin[safe]), 0,
                        OCCUPANCY_SAFE_MAX).astype(np.int8)
    measured = ~safe & np.isfinite(layers.evidence)
    ev = layers.evidence[measured]
    lo, hi = OCCUPANCY_UNPROVEN
    occ[measured] = np.where(ev <= 1.0, lo + np.floor((hi - lo) * np.maximum(ev, 0)),
                             OCCUPANCY_HAZARD).astype(np.int8)
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


def _moment_sums(t: _Terrain, half_w: np.ndarray, stride: int) -> np.ndarray:
    """Disc sums of the plane moments at every stride-th cell: (9 or 10, h, w) float64.

    Channels 1, u, v, u^2, uv, v^2, z, zu, zv (and sigma^2 with sigma) over the valid cells of
    the disc, u and v the column and row offsets from the evaluated cell; outside the grid
    counts as 0. Strides >= BLOCK_MIN_STRIDE go through `_block_moment_sums`, smaller ones
    through integral images (`_integral_moment_sums`).
    """
    if stride >= BLOCK_MIN_STRIDE:
        return _block_moment_sums(t, stride)
    return _integral_moment_sums(t, half_w, stride)


def _block_moment_sums(t: _Terrain, stride: int) -> np.ndarray:
    """`_moment_sums` by blocks: the DEM is cut into stride x stride blocks, one per lattice
    cell; a disc is a fixed set of block offsets, each with a fixed mask of its cells in the
    disc. One matrix product per source (validity, z, sigma^2) gives, for every block and
    every offset it can take, the masked sums weighted by 1, u, v, ... in the lattice cell's
    own coordinates; the disc sums are the sums over the offsets of those, shifted.

    Exactness: the geometric moments are sums of small integers (exact in float32); z and
    sigma^2 sums are float32 over one block (<= stride^2 cells), accumulated in float64.
    """
    s = stride
    h, w = t.z.shape
    out_h, out_w = -(-h // s), -(-w // s)
    c, bmin, span, offsets, weights = _block_layout(s, t.inside.tobytes(), t.inside.shape[0])
    nb_h, nb_w = out_h + span, out_w + span
    top = c - s * bmin                          # padded row of DEM row 0

    def blocks(src: np.ndarray) -> np.ndarray:
        """(s*s, nb_h*nb_w) float32: column = one block's cells."""
        pad = np.zeros((s * nb_h, s * nb_w), np.float32)
        pad[top:top + h, top:top + w] = src[:s * nb_h - top, :s * nb_w - top]
        return pad.reshape(nb_h, s, nb_w, s).transpose(1, 3, 0, 2).reshape(s * s, -1)

    sources = [(t.vf, 6), (t.z, 3)]
    if t.sig is not None:
        sources.append((np.square(t.sig), 1))
    out = np.zeros((sum(k for _, k in sources), out_h, out_w))
    ch = 0
    for (src, k), wmat in zip(sources, weights):
        sums = (wmat @ blocks(src)).reshape(len(offsets), k, nb_h, nb_w)
        acc = out[ch:ch + k]
        for n, (oi, oj) in enumerate(offsets):
            acc += sums[n, :, oi:oi + out_h, oj:oj + out_w]
        ch += k
    return out


@lru_cache(maxsize=16)
def _block_layout(s: int, inside_bytes: bytes, side: int):
    """Blocks of `_block_moment_sums` for a disc mask (side x side) and stride s.

    Returns c (block (I, J) starts at DEM cell s I - c), bmin and span (the lowest block
    offset, highest - lowest), the (row, col) block offsets meeting the disc relative to
    bmin, and three float32 weight
    matrices (validity: 6 rows per offset, z: 3, sigma^2: 1; s*s columns): the offset's disc
    mask times 1, u, v, u^2, uv, v^2 (validity), 1, u, v (z) and 1 (sigma^2), with u, v the
    cell's column and row offset from the evaluated cell.
    """
    inside = np.frombuffer(inside_bytes, bool).reshape(side, side)
    radius = side // 2
    c = s // 2
    bmin, bmax = -((radius + s - 1 - c) // s), (radius + c) // s
    p, q = np.mgrid[0:s, 0:s]                  # cell within its block
    rows: list[list[np.ndarray]] = [[], [], []]
    offsets = []
    for bi in range(bmin, bmax + 1):
        for bj in range(bmin, bmax + 1):
            dv, du = s * bi - c + p, s * bj - c + q
            inb = (np.abs(du) <= radius) & (np.abs(dv) <= radius)
            mask = np.zeros((s, s), bool)
            mask[inb] = inside[dv[inb] + radius, du[inb] + radius]
            if not mask.any():
                continue
            offsets.append((bi - bmin, bj - bmin))
            m, u, v = mask.astype(np.float64), du.astype(np.float64), dv.astype(np.float64)
            rows[0] += [m, m * u, m * v, m * u * u, m * u * v, m * v * v]
            rows[1] += [m, m * u, m * v]
            rows[2] += [m]
    weights = tuple(np.stack([x.ravel() for x in r]).astype(np.float32) for r in rows)
    return c, bmin, bmax - bmin, tuple(offsets), weights


def _integral_moment_sums(t: _Terrain, half_w: np.ndarray, stride: int) -> np.ndarray:
    """`_moment_sums` by integral images: every source once at full resolution.

    The moments are summed in grid coordinates x, y from the grid's centre, then shifted to
    each evaluated cell. Each source is written as float32 into one zero-bordered buffer (x, y
    and their products are exact there: half-integers below 2^11) and summed by cv2.integral
    in float64; the disc is cut into horizontal bands of equal half width, each a rectangle
    read at the lattice only: O(m H W) + O(m * bands * h * w).
    """
    z, valid = t.z, t.valid
    h, w = z.shape
    radius = len(half_w) // 2
    out_h, out_w = -(-h // stride), -(-w // stride)
    rs, cs = stride * out_h, stride * out_w
    v = valid.astype(np.float32)
    xg = (np.arange(w, dtype=np.float32) - np.float32(0.5 * (w - 1)))[None, :]
    yg = (np.arange(h, dtype=np.float32) - np.float32(0.5 * (h - 1)))[:, None]
    factors = [(v,), (v, xg), (v, yg), (v, xg * xg), (v, xg, yg), (v, yg * yg),
               (z,), (z, xg), (z, yg)]
    if t.sig is not None:
        factors.append((t.sig, t.sig))
    widths: dict[int, list[tuple[int, int]]] = {}          # half width -> its bands' rows
    for top, bottom, hw in _disc_bands(half_w):
        widths.setdefault(hw, []).append((top, bottom))
    out = np.zeros((len(factors), out_h, out_w))

    buf = np.zeros((h + 2 * radius + stride, w + 2 * radius + stride), np.float32)
    inner = buf[radius:radius + h, radius:radius + w]
    for k, fs in enumerate(factors):
        if len(fs) == 1:
            inner[...] = fs[0]
        else:
            np.multiply(fs[0], fs[1], out=inner)
            for f in fs[2:]:
                np.multiply(inner, f, out=inner)
        integral = cv2.integral(buf, sdepth=cv2.CV_64F)         # (H + 2R + s + 1, ...)
        acc = out[k]
        for hw, spans in widths.items():
            # row sums of width 2 hw + 1 at the lattice columns, every row; then each band
            # (padded row of lattice row i and row offset di (0..2R) is i + di)
            left, right = radius - hw, radius + hw + 1
            rowsum = integral[:, right:right + cs:stride] - integral[:, left:left + cs:stride]
            for top, bottom in spans:
                acc += rowsum[bottom:bottom + rs:stride]
                acc -= rowsum[top:top + rs:stride]
    s1, sx, sy, sxx, sxy, syy, sz, szx, szy = out[:9]
    xp = (np.arange(0, w, stride) - 0.5 * (w - 1))[None, :]  # lattice coordinates, as sources
    yp = (np.arange(0, h, stride) - 0.5 * (h - 1))[:, None]
    local = [s1, sx - xp * s1, sy - yp * s1, sxx - 2 * xp * sx + xp * xp * s1,
             sxy - xp * sy - yp * sx + xp * yp * s1, syy - 2 * yp * sy + yp * yp * s1,
             sz, szx - xp * sz, szy - yp * sz]
    return np.stack(local + list(out[9:]))


def _disc_bands(half_w: np.ndarray) -> list[tuple[int, int, int]]:
    """(first row offset, last row offset + 1, half width) of each run of equal half widths."""
    bands, start = [], 0
    for di in range(1, len(half_w) + 1):
        if di == len(half_w) or half_w[di] != half_w[start]:
            bands.append((start, di, int(half_w[start])))
            start = di
    return bands


def _disc_tiles(inside: np.ndarray, n: int = 3) -> tuple[list, list]:
    """n x n tiles over the disc: (cover, inner) lists of (i0, i1, j0, j1) offsets, inclusive.

    Cover tiles together hold every disc cell (they may reach beyond the disc: fine for upper
    bounds); inner tiles are cover tiles with their far sides pulled in until every cell is
    in the disc (fine for lower bounds).
    """
    radius = inside.shape[0] // 2
    t = -(-(2 * radius + 1) // n)
    t += 1 - t % 2                                         # odd side, centred tiles
    half = t // 2
    cover, inner = [], []
    steps = [t * k for k in range(-(n // 2), n // 2 + 1)]
    for oi in steps:
        for oj in steps:
            i0, i1, j0, j1 = oi - half, oi + half, oj - half, oj + half
            if not inside[max(i0, -radius) + radius:min(i1, radius) + radius + 1,
                          max(j0, -radius) + radius:min(j1, radius) + radius + 1].any():
                continue
            cover.append((i0, i1, j0, j1))
            i0, i1 = max(i0, -radius), min(i1, radius)
            j0, j1 = max(j0, -radius), min(j1, radius)
            while i0 <= i1 and j0 <= j1:
                if inside[i0 + radius:i1 + radius + 1, j0 + radius:j1 + radius + 1].all():
                    inner.append((i0, i1, j0, j1))
                    break
                i0, i1 = i0 + (oi < 0), i1 - (oi > 0)
                j0, j1 = j0 + (oj < 0), j1 - (oj > 0)
                if oi == 0 and oj == 0:
                    i0, i1, j0, j1 = i0 + 1, i1 - 1, j0 + 1, j1 - 1
    return cover, inner


def _tile_extremes(src: np.ndarray, tiles: list, stride: int, shape: tuple[int, int],
                   maximum: bool) -> np.ndarray:
    """Max (or min) of src over each tile of offsets at every stride-th cell: (n_tiles, h, w).

    src: float32 with invalid cells at -3e38 (max) / +3e38 (min); outside the grid likewise.
    Separable: a row filter of the tile's width at full resolution (once per width), read at
    the lattice columns of the tile's left edge, then a column filter of its height on that
    thin array, read at the lattice rows of its top edge.
    """
    op, fill = (cv2.dilate, -_BIG) if maximum else (cv2.erode, _BIG)
    out_h, out_w = shape
    pad = max(max(abs(x) for x in tile) for tile in tiles) + 1
    padded = cv2.copyMakeBorder(src, pad, pad, pad, pad, cv2.BORDER_CONSTANT, value=float(fill))
    rows_f: dict[int, np.ndarray] = {}                 # per width: row filter
    cols_f: dict[tuple[int, int, int], np.ndarray] = {}  # per (width, left, height)
    out = np.empty((len(tiles), out_h, out_w), np.float32)
    for k, (i0, i1, j0, j1) in enumerate(tiles):
        kw, kh = j1 - j0 + 1, i1 - i0 + 1
        if kw not in rows_f:
            rows_f[kw] = op(padded, np.ones((1, kw), np.uint8), anchor=(0, 0),
                            borderType=cv2.BORDER_CONSTANT, borderValue=float(fill))
        if (kw, j0, kh) not in cols_f:
            cols = np.ascontiguousarray(rows_f[kw][:, pad + j0:pad + j0 + stride * out_w:stride])
            cols_f[kw, j0, kh] = op(cols, np.ones((kh, 1), np.uint8), anchor=(0, 0),
                                    borderType=cv2.BORDER_CONSTANT, borderValue=float(fill))
        out[k] = cols_f[kw, j0, kh][pad + i0:pad + i0 + stride * out_h:stride]
    return out


def _tile_bounds(zmax: np.ndarray, zmin: np.ndarray, tiles: list, a: np.ndarray,
                 b: np.ndarray, c: np.ndarray, upper: bool) -> np.ndarray:
    """Upper (cover tiles) or lower (inner tiles) bound of max |residual| over each tile at
    the lattice: (n_tiles, h, w).

    On a rectangle of offsets with centre o and half sides (hi, hj), g . d lies within
    g . o +- (|c| hi + |b| hj); zmax, zmin: (n_tiles, h, w) max / min of z over each tile
    (`_tile_extremes`).
    """
    t = np.array(tiles, np.float64)[:, :, None, None]               # (n, 4, 1, 1)
    i0, i1, j0, j1 = t[:, 0], t[:, 1], t[:, 2], t[:, 3]
    plane = a + b * (0.5 * (j0 + j1)) + c * (0.5 * (i0 + i1))        # (n, h, w) at centres
    spread = np.abs(c) * (0.5 * (i1 - i0)) + np.abs(b) * (0.5 * (j1 - j0))
    if not upper:
        spread = -spread
    return np.maximum(zmax - plane, plane - zmin) + spread


def _exact_roughness(t: _Terrain, rows: np.ndarray, cols: np.ndarray, a: np.ndarray,
                     b: np.ndarray, c: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Exact max |residual| and max (|residual| + k sigma) over every disc sample of cells.

    rows, cols: (n,) DEM cell indices; a [m], b, c [m / cell]: their planes, (n,) each.
    Returns two (n,) float32 arrays.
    """
    samples = _DiscSamples.of(t)
    rough = np.empty(len(rows), np.float32)
    stat = np.empty(len(rows), np.float32)
    for s0 in range(0, len(rows), samples.step):
        part = slice(s0, s0 + samples.step)
        zs, ss = samples.gather(rows[part], cols[part])
        rough[part], stat[part] = samples.roughness(zs, ss, a[part], b[part], c[part])
    return rough, stat

"""Landing guidance (pure numpy): approach, HDA retargeting, terminal vertical descent.

Phases, from the navigation estimate and the altimeter height h above the ground:
- approach (h > gate): fly towards the target while descending;
- hda (terminal < h <= gate): the perception node's scans arrive (`on_hazard`); the target
  moves to the node's `safe_site` when the current target is not safe in the newest hazard map,
  as long as the new site is within the divert budget. With no site certified, the target
  moves to the most promising ground (`_survey`: safe cells, and at half weight the unproven
  ones the hazard map grades 50..99, measured with no hazard shown), so that the next, lower
  scan sees it closer: from the gate down, where no 0.3 m rock can be resolved yet, this
  steers the lander off crater walls and boulder fields towards ground the final scans can
  certify. 200 closed-loop runs (docs/land200, SGBM): HDA safe rate 0.935 -> 0.990, oracle
  1.000. A target certified at one scan is held while later scans show no hazard in its
  footprint. A safe target is still traded for the node's site when its touchdown disc (the
  footprint widened by terminal_error_m) holds cells graded safe within 20 % of a limit
  (`HazardConfig.site_margin_max`; the node ranks its sites the same way) and the site's disc
  holds none: rocks just over the roughness limit are misread just under it;
- look: a scan at the lowest scan altitude (scan_altitudes_m[-1]) left the target uncertified:
  the lander holds its height (it flies on to the target) and looks again, for at most
  look_scans_max more hazard maps, then descends whether or not one certified a site. While
  it looks and no map certifies a site, the target moves to the ground whose worst cell under
  the touchdown disc is graded lowest (`Guidance._least_evidence`): where it lands
  uncertified, it lands on the least evidence of a hazard;
- terminal (h <= terminal_altitude_m): the target is frozen; the lander hovers until it is
  within `terminal_error_m` of it, then descends vertically at `touchdown_speed_m_s`.

The command is a thrust acceleration [m/s^2] in `map`: a speed loop on a height-scheduled
vertical speed and a position-to-speed horizontal loop, plus gravity compensation.
"""
from dataclasses import dataclass, field

import cv2
import numpy as np

from l3d_ros.config import HazardConfig
from l3d_ros.hazard import (GridGeometry, OCCUPANCY_HAZARD, OCCUPANCY_SAFE_MAX,
                            OCCUPANCY_UNPROVEN)
from l3d_sim.mission_config import GuidanceConfig


def footprint_values(occupancy: np.ndarray, grid: GridGeometry, xy_m: np.ndarray,
                     footprint_m: float) -> np.ndarray | None:
    """The map values (int8) of every cell whose square reaches within footprint/2 of `xy_m`
    (every cell holding ground under the disc, not only those whose centre lies in it: the
    map's cells and the terrain's are squares on different origins, and a cell centred up to
    half a diagonal beyond the rim still covers ground under it), or None when part of that
    set is off the grid."""
    x, y = (float(v) for v in np.asarray(xy_m).reshape(2))
    r = footprint_m / 2
    rows, cols = grid.shape
    c = grid.cell_m
    j0 = int(np.floor((x - r - grid.origin_xy_m[0]) / c))
    i0 = int(np.floor((y - r - grid.origin_xy_m[1]) / c))
    j1 = int(np.ceil((x + r - grid.origin_xy_m[0]) / c))
    i1 = int(np.ceil((y + r - grid.origin_xy_m[1]) / c))
    ii, jj = np.mgrid[i0:i1 + 1, j0:j1 + 1]
    cx, cy = grid.cell_centre(ii, jj)
    # distance from xy to the nearest point of each cell's square
    dx = np.maximum(np.abs(cx - x) - c / 2, 0.0)
    dy = np.maximum(np.abs(cy - y) - c / 2, 0.0)
    disc = np.hypot(dx, dy) <= r
    if not disc.any():
        return None
    ii, jj = ii[disc], jj[disc]
    if ii.min() < 0 or jj.min() < 0 or ii.max() >= rows or jj.max() >= cols:
        return None
    return occupancy[ii, jj]


def clear_by_margin(occupancy: np.ndarray, grid: GridGeometry, xy_m: np.ndarray,
                    diameter_m: float, margin_max: float = 1.0) -> bool:
    """True when every map cell under the disc of `diameter_m` at `xy_m` (`footprint_values`)
    is known and safe with a grade below 50 * margin_max (`HazardConfig.site_margin_max`; at
    0.8, grades 40-49 are near a limit): well inside the limits. margin_max 1: safe (0..49)."""
    values = footprint_values(occupancy, grid, xy_m, diameter_m)
    return values is not None and bool(
        ((values >= 0) & (values < (OCCUPANCY_SAFE_MAX + 1) * margin_max)).all())


def target_is_safe(occupancy: np.ndarray, grid: GridGeometry, xy_m: np.ndarray,
                   footprint_m: float) -> bool:
    """True when every map cell under the footprint at `xy_m` (`footprint_values`) is known
    and safe (0..49).

    occupancy: (H, W) int8 OccupancyGrid values on `grid`; cells off the grid are unknown.
    """
    return clear_by_margin(occupancy, grid, xy_m, footprint_m)


def disc_kernel(radius_m: float, cell_m: float) -> np.ndarray:
    """(2r+1, 2r+1) uint8 disc of r = round(radius_m / cell_m) >= 1 cells."""
    r = max(1, int(round(radius_m / cell_m)))
    return cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1))


def touch_kernel(radius_m: float, cell_m: float) -> np.ndarray:
    """uint8 kernel of the cells whose square reaches within radius_m of the centre cell's
    centre (the cells `footprint_values` takes for a point at a cell centre)."""
    n = int(np.ceil(radius_m / cell_m + 0.5))
    d = np.abs(np.arange(-n, n + 1, dtype=np.float64)) * cell_m
    gap = np.maximum(d - cell_m / 2, 0.0)
    return (np.hypot(gap[:, None], gap[None, :]) <= radius_m).astype(np.uint8)


UNPROVEN_WEIGHT = 0.5       # an unproven cell counts this much of a safe one in a survey
# a map decided this far above the lowest scan altitude is one of the lowest (altimeter noise)
LOOK_SLACK_M = 1.0


def survey_share(occupancy: np.ndarray, grid: GridGeometry, radius_m: float,
                 measured: bool = False) -> np.ndarray:
    """(H, W) share of the cells within `radius_m` of each cell that promise a landing site:
    a cell labelled safe counts 1, an unproven one (measured, no hazard shown, roughness not
    yet certified) UNPROVEN_WEIGHT, hazard and unknown cells 0. measured: the share of cells
    that are not unknown instead."""
    if measured:
        safe = (occupancy >= 0).astype(np.float32)
    else:
        safe = ((occupancy >= 0) & (occupancy <= OCCUPANCY_SAFE_MAX)).astype(np.float32)
        lo, hi = OCCUPANCY_UNPROVEN
        safe += np.float32(UNPROVEN_WEIGHT) * ((occupancy >= lo) & (occupancy <= hi))
    disc = disc_kernel(radius_m, grid.cell_m).astype(np.float32)
    return cv2.filter2D(safe, -1, disc / disc.sum(), borderType=cv2.BORDER_CONSTANT)


@dataclass
class Guidance:
    """State of the guidance for one landing; `command` and `on_hazard` advance it."""

    cfg: GuidanceConfig
    hazard: HazardConfig
    nominal_xy_m: np.ndarray
    gravity_m_s2: float = 1.62
    target_xy_m: np.ndarray = field(init=False)
    phase: str = field(init=False, default='approach')
    retargets: int = field(init=False, default=0)
    # promise of the target (survey_share; 1 once certified) when a map last showed it: a
    # scan whose window does not reach the target (the lander still far from it) keeps it
    target_promise: float = field(init=False, default=0.0)
    looks: int = field(init=False, default=0)   # hazard maps decided while looking

    def __post_init__(self):
        self.nominal_xy_m = np.asarray(self.nominal_xy_m, np.float64).reshape(2)
        self.target_xy_m = self.nominal_xy_m.copy()

    def on_hazard(self, occupancy: np.ndarray | None, grid: GridGeometry | None,
                  site_xy_m: np.ndarray | None, position_m: np.ndarray,
                  altitude_m: float) -> str:
        """One scan's hazard map and safe site (None: none safe). Returns the decision:
        'keep' (target safe), 'retarget' (to the site: the target is not safe, or it is but
        its touchdown disc - the footprint widened by terminal_error_m on each side, where the
        lander may touch down - holds cells safe only near a limit and the site's does not),
        'hold' (the target was certified at an earlier scan; this one shows no hazard in its
        footprint, only cells it cannot certify, and no other site: it is kept rather than
        traded for uncertified ground), 'survey', 'settle' (looking, nothing certified: the
        least-evidence ground, `_least_evidence`), 'no_site',
        'out_of_budget' or 'frozen'. A map decided at the lowest scan altitude that leaves the
        target uncertified starts (or continues) the look phase while looks are left."""
        if self.phase == 'terminal':
            return 'frozen'
        decision = self._decide(occupancy, grid, site_xy_m, position_m, altitude_m)
        if self.phase == 'look':
            self.looks += 1
        lowest = self.cfg.scan_altitudes_m[-1] if self.cfg.scan_altitudes_m else 0.0
        # looking goes on wherever the ground under the hovering lander takes its height
        if (self.target_promise < 1.0 and self.looks < self.cfg.look_scans_max
                and (self.phase == 'look' or altitude_m <= lowest + LOOK_SLACK_M)):
            self.phase = 'look'
        elif self.phase == 'look':
            self.phase = 'hda'
        return decision

    def _decide(self, occupancy, grid, site_xy_m, position_m, altitude_m) -> str:
        """on_hazard's decision, before the look phase is updated."""
        if occupancy is not None and target_is_safe(occupancy, grid, self.target_xy_m,
                                                    self.hazard.footprint_m):
            self.target_promise = 1.0
            if site_xy_m is None or not self._wider_site(occupancy, grid, site_xy_m):
                return 'keep'
            return self._retarget(site_xy_m, position_m, altitude_m, otherwise='keep')
        if site_xy_m is None:
            if self.target_promise >= 1.0 and not self._hazard_shown(occupancy, grid):
                return 'hold'
            if self.phase == 'look':
                return self._least_evidence(occupancy, grid, position_m, altitude_m)
            return self._survey(occupancy, grid, position_m, altitude_m)
        return self._retarget(site_xy_m, position_m, altitude_m)

    def _retarget(self, site_xy_m, position_m, altitude_m, otherwise='out_of_budget') -> str:
        """Move the target to the site if the divert budget allows, else `otherwise`."""
        site = np.asarray(site_xy_m, np.float64).reshape(2)
        from_nominal = float(np.linalg.norm(site - self.nominal_xy_m))
        step = float(np.linalg.norm(site - np.asarray(position_m)[:2]))
        if (from_nominal > self.cfg.divert_max_m
                or step > self.cfg.divert_per_altitude * max(altitude_m, 0.0)):
            return otherwise
        self.target_xy_m = site
        self.target_promise = 1.0
        self.retargets += 1
        return 'retarget'

    def _wider_site(self, occupancy, grid, site_xy_m) -> bool:
        """The (safe) target's touchdown disc holds a cell safe only near a limit, the site's
        does not: a rock misread just under the roughness limit is where a sigma too small
        bites, and the lander lands anywhere within terminal_error_m of its target."""
        diameter, margin = self.touchdown_diameter_m, self.hazard.site_margin_max
        return (not clear_by_margin(occupancy, grid, self.target_xy_m, diameter, margin)
                and clear_by_margin(occupancy, grid, site_xy_m, diameter, margin))

    @property
    def touchdown_diameter_m(self) -> float:
        """The disc the lander may touch down in: footprint + terminal_error_m each side."""
        return self.hazard.footprint_m + 2 * self.cfg.terminal_error_m

    def _hazard_shown(self, occupancy, grid) -> bool:
        """The map shows a hazard (OCCUPANCY_HAZARD) within the target's footprint."""
        if occupancy is None:
            return False
        values = footprint_values(occupancy, grid, self.target_xy_m, self.hazard.footprint_m)
        return values is not None and bool((values == OCCUPANCY_HAZARD).any())

    def _survey(self, occupancy, grid, position_m, altitude_m) -> str:
        """No site certified: head for the most promising ground within the divert budget, so
        that the next, lower scan sees it closer: 'survey'. Promise is `survey_share` over a
        footprint-radius disc (certified cells 1, unproven ones 1/2: high up, where no 0.3 m
        rock can be resolved yet, it is the ground without slopes, crater walls or boulders
        the data show), less `survey_distance_weight` per divert_max_m of distance from the
        current target; a move needs a promise of survey_share_min and, less that distance
        term, 0.1 more than the current target has (so a far move must promise more): in this
        map where it shows the target's disc (half of it measured), else
        as last shown (`target_promise`; a map of the ground below a lander still far from
        its target says nothing of the target, and reading that as no promise made the
        target jump tens of metres at every scan). Ground whose touchdown disc (footprint +
        2 terminal_error_m) shows a hazard is no candidate, and a target whose disc shows one
        promises nothing: any candidate of survey_share_min beats it. The new target is not a
        site: nothing was certified there. Else 'no_site'."""
        c = self.cfg
        if occupancy is None or c.survey_share_min <= 0:
            return 'no_site'
        share = survey_share(occupancy, grid, self.hazard.footprint_m)
        rows, cols = grid.shape
        x, y = grid.cell_centre(*np.mgrid[0:rows, 0:cols])
        p = np.asarray(position_m, np.float64)[:2]
        hazard_near = cv2.dilate((occupancy == OCCUPANCY_HAZARD).view(np.uint8),
                                 disc_kernel(self.touchdown_diameter_m / 2, grid.cell_m)) > 0
        reach = (np.hypot(x - p[0], y - p[1]) <= c.divert_per_altitude * max(altitude_m, 0.0)
                 ) & (np.hypot(x - self.nominal_xy_m[0], y - self.nominal_xy_m[1])
                      <= c.divert_max_m) & ~hazard_near
        away = np.hypot(x - self.target_xy_m[0], y - self.target_xy_m[1])
        score = share - c.survey_distance_weight * away / max(c.divert_max_m, grid.cell_m)
        k = int(np.argmax(np.where(reach, score, -np.inf)))
        best = float(share.flat[k]) if reach.flat[k] else 0.0
        i, j = grid.cell_index(np.array([self.target_xy_m[0]]), np.array([self.target_xy_m[1]]))
        measured = survey_share(occupancy, grid, self.hazard.footprint_m, measured=True)
        if i[0] >= 0 and measured[i[0], j[0]] >= 0.5:
            self.target_promise = 0.0 if hazard_near[i[0], j[0]] else float(share[i[0], j[0]])
        if best < c.survey_share_min or float(score.flat[k]) < self.target_promise + 0.1:
            return 'no_site'
        self.target_xy_m = np.array([x.flat[k], y.flat[k]])
        self.target_promise = best
        return 'survey'

    def _least_evidence(self, occupancy, grid, position_m, altitude_m) -> str:
        """Looking, and no map certifies a site: move the target to the ground whose worst
        cell under the touchdown disc (`footprint_values` of footprint + 2 terminal_error_m)
        is graded lowest (unknown counts as hazard): 'settle'. Below the lowest scan the
        lander lands where the looks leave it, certified or not, and the grade of an unproven
        cell (50 + 49 * evidence) is what the data say of it through their noise; the survey's
        promise counts every unproven cell alike. Applied offline to the last hazard map of
        every uncertified landing of earlier campaigns, it picked truly safe ground more often
        than the flown target was (`scripts/uncertified_policy.py`: 37 against 34 of 40 in
        stop 28's seeds 0/4/5, 234 against 213 of 260 in stops 23-27's, 36 against 36 of 46
        in the stress worlds). Ties go to the ground nearest the target, and the target moves
        only for a strictly lower worst grade within the divert budget; else 'no_site'."""
        if occupancy is None:
            return 'no_site'
        c = self.cfg
        grade = np.where(occupancy >= 0, occupancy, OCCUPANCY_HAZARD).astype(np.float32)
        worst = cv2.dilate(grade, touch_kernel(self.touchdown_diameter_m / 2, grid.cell_m),
                           borderType=cv2.BORDER_CONSTANT, borderValue=OCCUPANCY_HAZARD)
        rows, cols = grid.shape
        x, y = grid.cell_centre(*np.mgrid[0:rows, 0:cols])
        p = np.asarray(position_m, np.float64)[:2]
        reach = ((np.hypot(x - p[0], y - p[1]) <= c.divert_per_altitude * max(altitude_m, 0.0))
                 & (np.hypot(x - self.nominal_xy_m[0], y - self.nominal_xy_m[1])
                    <= c.divert_max_m))
        values = footprint_values(occupancy, grid, self.target_xy_m, self.touchdown_diameter_m)
        current = (float(OCCUPANCY_HAZARD) + 1 if values is None else
                   float(np.where(values >= 0, values, OCCUPANCY_HAZARD).max()))
        away = np.hypot(x - self.target_xy_m[0], y - self.target_xy_m[1])
        best = np.where(reach & (worst < current), worst, np.inf)
        if not np.isfinite(best).any():
            return 'no_site'
        k = int(np.argmin(best + away / (away.max() + 1.0)))     # ties: the nearest
        self.target_xy_m = np.array([x.flat[k], y.flat[k]])
        return 'settle'

    def command(self, position_m: np.ndarray, velocity_m_s: np.ndarray,
                altitude_m: float) -> np.ndarray:
        """(3,) thrust acceleration [m/s^2] in `map` for the navigation estimate and height."""
        c = self.cfg
        p, v = np.asarray(position_m, np.float64), np.asarray(velocity_m_s, np.float64)
        if altitude_m <= c.terminal_altitude_m:
            self.phase = 'terminal'
        elif altitude_m <= c.gate_altitude_m and self.phase == 'approach':
            self.phase = 'hda'
        error = self.target_xy_m - p[:2]
        speed_ref = c.position_gain_1_s * error
        norm = float(np.linalg.norm(speed_ref))
        if norm > c.lateral_speed_max_m_s:
            speed_ref *= c.lateral_speed_max_m_s / norm
        accel_xy = c.velocity_gain_1_s * (speed_ref - v[:2])
        norm = float(np.linalg.norm(accel_xy))
        if norm > c.lateral_accel_max_m_s2:
            accel_xy *= c.lateral_accel_max_m_s2 / norm
        descent = float(np.clip(c.descent_gain_1_s * altitude_m, c.touchdown_speed_m_s,
                                c.descent_speed_max_m_s))
        if self.phase == 'look':
            descent = 0.0
        elif self.phase == 'terminal':
            over_target = (np.linalg.norm(error) <= c.terminal_error_m
                           and np.linalg.norm(v[:2]) <= 0.5 * c.terminal_error_m)
            descent = c.touchdown_speed_m_s if over_target else 0.0
        accel_z = self.gravity_m_s2 + c.velocity_gain_1_s * (-descent - v[2])
        return np.array([accel_xy[0], accel_xy[1], max(accel_z, 0.0)])


__all__ = ['clear_by_margin', 'disc_kernel', 'footprint_values', 'Guidance',
           'target_is_safe', 'survey_share', 'touch_kernel']

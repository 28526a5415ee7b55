"""Guidance logic without ROS: target safety on a hazard map, retarget rules, closed loop."""
from dataclasses import replace

from hypothesis import given, settings, strategies as st
import numpy as np
import pytest

from l3d_ros.config import HazardConfig
from l3d_ros.hazard import GridGeometry
from l3d_sim.guidance import footprint_values, Guidance, target_is_safe, touch_kernel
from l3d_sim.lander import initial_state, site_is_safe, step, touchdown_verdict
from l3d_sim.mission_config import GuidanceConfig, LanderConfig, TouchdownConfig
from l3d_sim.sim_node import plant_hazard
from l3d_sim.terrain import Terrain

HAZARD = HazardConfig()
GRID = GridGeometry((-10.0, -10.0), 0.2, (100, 100))     # 20 m square around the origin


def safe_map() -> np.ndarray:
    return np.full(GRID.shape, 10, np.int8)


def test_target_safety_needs_every_cell_of_the_footprint_known_and_safe():
    occ = safe_map()
    assert target_is_safe(occ, GRID, [0.0, 0.0], HAZARD.footprint_m)
    occ[50 + 9, 50] = 100                            # 1.9 m from the centre cell: inside
    assert not target_is_safe(occ, GRID, [0.1, 0.1], HAZARD.footprint_m)
    occ = safe_map()
    occ[50 + 11, 50] = 100                           # 2.3 m away: outside the 2 m radius
    assert target_is_safe(occ, GRID, [0.1, 0.1], HAZARD.footprint_m)
    occ[50, 50] = -1                                 # unknown is never safe
    assert not target_is_safe(occ, GRID, [0.1, 0.1], HAZARD.footprint_m)
    assert not target_is_safe(safe_map(), GRID, [9.0, 0.0], HAZARD.footprint_m)  # off the map


def test_target_safety_covers_cells_reaching_under_the_footprint_rim():
    """A cell's label holds for its square: one centred 2.08 m from the target (beyond the
    2 m radius) whose square reaches 1.98 m holds ground under the footprint; one whose square
    stays 2.18 m away does not."""
    occ = safe_map()
    target = [0.1, 0.02]                             # column 50's centre, just above row 49/50
    occ[60, 50] = 100                                # centre y 2.1: 2.08 m, square from 1.98 m
    assert not target_is_safe(occ, GRID, target, HAZARD.footprint_m)
    occ[60, 50], occ[61, 50] = 10, 100               # centre y 2.3: square from 2.18 m
    assert target_is_safe(occ, GRID, target, HAZARD.footprint_m)


def test_retarget_rules():
    g = Guidance(GuidanceConfig(), HAZARD, [0.0, 0.0])
    occ = safe_map()
    assert g.on_hazard(occ, GRID, np.array([5.0, 5.0]), np.zeros(3), 100.0) == 'keep'
    occ[50, 50] = 100                                # the target is now a hazard
    assert g.on_hazard(np.full(GRID.shape, 100, np.int8), GRID, None, np.zeros(3),
                       100.0) == 'no_site'           # nowhere to go
    assert g.on_hazard(occ, GRID, np.array([70.0, 0.0]), np.zeros(3), 100.0) == 'out_of_budget'
    assert g.on_hazard(occ, GRID, np.array([8.0, 0.0]), np.zeros(3), 5.0) == 'out_of_budget'
    assert g.on_hazard(occ, GRID, np.array([5.0, 5.0]), np.zeros(3), 100.0) == 'retarget'
    np.testing.assert_allclose(g.target_xy_m, [5.0, 5.0])
    assert g.retargets == 1
    g.command(np.array([5.0, 5.0, 10.0]), np.zeros(3), 10.0)   # below terminal altitude
    assert g.phase == 'terminal'
    assert g.on_hazard(None, None, np.array([0.0, 5.0]), np.zeros(3), 10.0) == 'frozen'


def test_a_safe_target_near_ground_graded_at_a_limit_is_traded_for_a_wider_site():
    """Cells graded safe within 20 % of a limit (40-49) 2.2 m from the target: outside its
    footprint (it stays safe) but inside the disc it may touch down in (footprint + 2 x
    terminal_error_m): the guidance takes an offered site whose disc is clear, keeps the target
    when the site is no better or out of the divert budget, and ignores ones graded below 40."""
    occ = safe_map()
    occ[50 + 11, 50] = 45                            # 2.2 m from the target at (0.1, 0.1)
    cfg = GuidanceConfig()
    assert HAZARD.footprint_m / 2 < 2.2 < HAZARD.footprint_m / 2 + cfg.terminal_error_m
    g = Guidance(cfg, HAZARD, [0.1, 0.1])
    assert g.on_hazard(occ, GRID, None, np.zeros(3), 100.0) == 'keep'       # no site offered
    marginal_site = np.array([0.3, 0.5])                                    # also near the 45
    assert g.on_hazard(occ, GRID, marginal_site, np.zeros(3), 100.0) == 'keep'
    far = np.array([5.0, -5.0])
    assert g.on_hazard(occ, GRID, far, np.zeros(3), 3.0) == 'keep'          # budget: 3 m step
    assert g.on_hazard(occ, GRID, far, np.zeros(3), 100.0) == 'retarget'
    np.testing.assert_allclose(g.target_xy_m, far)
    occ[50 + 11, 50] = 39                            # well inside the limits: nothing to trade
    g = Guidance(cfg, HAZARD, [0.1, 0.1])
    assert g.on_hazard(occ, GRID, far, np.zeros(3), 100.0) == 'keep'


def test_survey_leaves_a_target_whose_touchdown_disc_shows_a_hazard():
    """Nothing certified, all ground measured but unproven (60): the target's touchdown disc
    (footprint + 2 terminal_error_m) shows one hazard cell. Every other disc promises as much,
    which before was no reason to move; now the target promises nothing and the survey moves
    to the nearest ground whose disc shows no hazard, never onto one that does."""
    occ = np.full(GRID.shape, 60, np.int8)
    occ[50, 50 + 12] = 100                           # 2.4 m east of the target (0.1, 0.1)
    cfg = GuidanceConfig()
    g = Guidance(cfg, HAZARD, [0.1, 0.1])
    assert g.on_hazard(occ, GRID, None, np.array([0.1, 0.1, 30.0]), 30.0) == 'survey'
    assert g.target_promise == pytest.approx(0.5, abs=0.05)
    gap = np.hypot(g.target_xy_m[0] - 2.5, g.target_xy_m[1] - 0.1)
    assert gap > HAZARD.footprint_m / 2 + cfg.terminal_error_m
    assert np.hypot(*(g.target_xy_m - 0.1)) < 1.5  # a short move: the distance term
    # the same map without the hazard cell: no reason to move
    g = Guidance(cfg, HAZARD, [0.1, 0.1])
    assert g.on_hazard(np.full(GRID.shape, 60, np.int8), GRID, None,
                       np.array([0.1, 0.1, 30.0]), 30.0) == 'no_site'


def looking(cfg: GuidanceConfig | None = None) -> Guidance:
    g = Guidance(cfg or GuidanceConfig(), HAZARD, [0.1, 0.1])
    g.phase = 'look'
    return g


def test_touch_kernel_takes_the_cells_footprint_values_takes():
    # radii off the half-cell lattice: at an exact tie (a square touching the rim) the
    # kernel takes the cell and footprint_values may or may not, by rounding
    for radius in (2.05, 2.45, 0.33):
        occ = np.arange(GRID.shape[0] * GRID.shape[1], dtype=np.int64).reshape(GRID.shape)
        k = touch_kernel(radius, GRID.cell_m)
        n = k.shape[0] // 2
        window = occ[50 - n:50 + n + 1, 50 - n:50 + n + 1]
        x, y = GRID.cell_centre(np.array([50]), np.array([50]))
        expected = footprint_values(occ, GRID, np.array([x[0], y[0]]), 2 * radius)
        assert sorted(window[k > 0].tolist()) == sorted(expected.tolist())


def test_looking_uncertified_moves_to_the_touchdown_disc_of_least_worst_grade():
    """No site certified while looking: every cell measured, unproven. The target's touchdown
    disc holds a cell of strong evidence (95); ground 3-9 m east is unproven but weakly
    (55), the rest 70. The target moves there, onto a disc wholly of 55, and stays when the
    next map shows the same; the survey (not looking) would not move for a 0.5 promise."""
    occ = np.full(GRID.shape, 70, np.int8)
    occ[50, 51] = 95                                   # under the target's disc
    occ[20:80, 65:95] = 55                             # 3-9 m east, 12 m tall
    g = looking()
    assert g.on_hazard(occ, GRID, None, np.array([0.1, 0.1, 20.0]), 20.0) == 'settle'
    values = footprint_values(occ, GRID, g.target_xy_m, g.touchdown_diameter_m)
    assert values is not None and values.max() == 55
    assert g.target_xy_m[0] < 6.5                      # the nearest such disc, not any
    assert g.on_hazard(occ, GRID, None, np.array([*g.target_xy_m, 20.0]), 20.0) == 'no_site'
    survey = Guidance(GuidanceConfig(), HAZARD, [0.1, 0.1])
    survey.phase = 'hda'
    assert survey.on_hazard(occ, GRID, None, np.array([0.1, 0.1, 30.0]), 30.0) != 'settle'


def test_looking_uncertified_treats_unknown_as_hazard_and_keeps_the_budget():
    """Unknown ground (a shadow) promises nothing: a patch graded nowhere is never the least
    worst. A better disc beyond the divert budget or this height's reach is not taken."""
    occ = np.full(GRID.shape, 70, np.int8)
    occ[30:70, 70:95] = -1                             # unknown 4-9 m east
    g = looking()
    assert g.on_hazard(occ, GRID, None, np.array([0.1, 0.1, 20.0]), 20.0) == 'no_site'
    np.testing.assert_allclose(g.target_xy_m, [0.1, 0.1])
    occ = np.full(GRID.shape, 70, np.int8)
    occ[20:80, 65:95] = 55                             # 3-9 m east
    low = looking()                                    # 3 m of reach at 3 m of height
    assert low.on_hazard(occ, GRID, None, np.array([0.1, 0.1, 3.0]), 3.0) == 'no_site'
    tight = looking(replace(GuidanceConfig(), divert_max_m=4.0))
    assert tight.on_hazard(occ, GRID, None, np.array([0.1, 0.1, 20.0]), 20.0) == 'no_site'
    np.testing.assert_allclose(tight.target_xy_m, [0.1, 0.1])


@settings(max_examples=8, deadline=None)
@given(azimuth=st.floats(0, 2 * np.pi), target=st.lists(st.floats(-20, 20), min_size=2,
                                                        max_size=2))
def test_guided_descent_lands_on_target_slowly_and_upright(azimuth, target):
    cfg, lander = GuidanceConfig(), LanderConfig()
    heading = np.array([np.cos(azimuth), np.sin(azimuth), 0.0])
    state = initial_state(lander, np.array([0, 0, cfg.start_altitude_m]) - 60 * heading,
                          8 * heading + [0, 0, -5])
    g = Guidance(cfg, HAZARD, [0.0, 0.0])
    g.target_xy_m = np.array(target, np.float64)
    while state.position_m[2] > 0 and state.t_s < 200:
        cmd = g.command(state.position_m, state.velocity_m_s, state.position_m[2])
        state, _ = step(state, cmd, 0.1, lander)
    assert state.position_m[2] <= 0
    assert np.linalg.norm(state.position_m[:2] - target) < cfg.terminal_error_m
    assert -state.velocity_m_s[2] <= 1.1 * cfg.touchdown_speed_m_s
    assert np.linalg.norm(state.velocity_m_s[:2]) < 0.2
    assert state.mass_kg > lander.dry_mass_kg


def flat_terrain() -> Terrain:
    h = np.zeros((300, 300), np.float32)
    return Terrain(h, np.ones_like(h), 0.1, (-15.0, -15.0))


def test_ground_truth_site_safety_on_flat_ground_and_on_a_planted_boulder():
    flat = flat_terrain()
    assert site_is_safe(flat, [0.0, 0.0], HAZARD)
    rocky = plant_hazard(flat, 'boulder', (0.0, 0.0))
    assert not site_is_safe(rocky, [0.0, 0.0], HAZARD)
    assert not site_is_safe(rocky, [3.0, 0.0], HAZARD)      # leg disc reaches the boulder
    assert site_is_safe(rocky, [6.0, 0.0], HAZARD)
    crater = plant_hazard(flat, 'crater', (0.0, 0.0))
    assert not site_is_safe(crater, [3.0, 0.0], HAZARD)


def test_touchdown_verdict_applies_speed_limits():
    flat, limits = flat_terrain(), TouchdownConfig()
    state = initial_state(LanderConfig(), [0, 0, 0], [0, 0, -1.0])
    assert touchdown_verdict(flat, state, HAZARD, limits)['safe']
    fast = replace(state, velocity_m_s=np.array([0.0, 0.0, -2.5]))
    verdict = touchdown_verdict(flat, fast, HAZARD, limits)
    assert verdict['ground_safe'] and not verdict['speed_ok'] and not verdict['safe']
    sliding = replace(state, velocity_m_s=np.array([0.6, 0.0, -1.0]))
    assert not touchdown_verdict(flat, sliding, HAZARD, limits)['safe']


def test_guidance_config_refuses_bad_scans():
    with pytest.raises(ValueError, match='scan_altitudes_m'):
        GuidanceConfig(scan_altitudes_m=(40.0, 80.0))


def test_guidance_config_refuses_bad_looks():
    for bad in (-1, 1.5, True):
        with pytest.raises(ValueError, match='look_scans_max'):
            GuidanceConfig(look_scans_max=bad)
    with pytest.raises(ValueError, match='look_period_s'):
        GuidanceConfig(look_period_s=0.0)


def test_nothing_certified_at_the_lowest_scan_holds_height_for_more_looks():
    """A map at the lowest scan altitude that certifies nothing starts the look phase: the
    guidance stops the descent (vertical speed target 0) and takes up to look_scans_max more
    maps; a map certifying the target, or the last look, resumes the descent. Above the lowest
    scan altitude, or with look_scans_max = 0, an uncertified target never stops it."""
    cfg = GuidanceConfig()
    lowest = cfg.scan_altitudes_m[-1]
    unproven = np.full(GRID.shape, 60, np.int8)
    pos, sinking = np.array([0.1, 0.1, lowest]), np.array([0.0, 0.0, -1.5])

    def vertical_accel(g):                           # thrust acceleration - gravity, up +
        return g.command(pos, sinking, lowest - 0.5)[2] - g.gravity_m_s2

    g = Guidance(cfg, HAZARD, [0.1, 0.1])
    g.phase = 'hda'
    assert g.on_hazard(unproven, GRID, None, pos, 2 * lowest) == 'no_site'
    assert g.phase == 'hda'                          # higher up: no look
    descending = vertical_accel(g)
    assert g.on_hazard(unproven, GRID, None, pos, lowest - 0.5) == 'no_site'
    assert g.phase == 'look'
    assert vertical_accel(g) == pytest.approx(cfg.velocity_gain_1_s * 1.5)   # brakes to 0
    assert vertical_accel(g) > descending
    for k in range(cfg.look_scans_max - 1):           # ground falling away under the hover
        g.on_hazard(unproven, GRID, None, pos, lowest - 2.0 + 2.0 * k)
        assert g.phase == 'look'
    g.on_hazard(unproven, GRID, None, pos, lowest - 2.0)          # the last look
    assert g.phase == 'hda' and g.looks == cfg.look_scans_max
    assert vertical_accel(g) == pytest.approx(descending)

    g = Guidance(cfg, HAZARD, [0.1, 0.1])                          # a look certifies a site
    g.phase = 'hda'
    g.on_hazard(unproven, GRID, None, pos, lowest - 0.5)
    assert g.phase == 'look'
    assert g.on_hazard(safe_map(), GRID, None, pos, lowest - 2.0) == 'keep'
    assert g.phase == 'hda' and g.looks == 1

    g = Guidance(replace(cfg, look_scans_max=0), HAZARD, [0.1, 0.1])
    g.phase = 'hda'
    g.on_hazard(unproven, GRID, None, pos, lowest - 0.5)
    assert g.phase == 'hda'


def test_survey_high_up_heads_for_unproven_ground_and_prefers_certified_and_near():
    """High up nothing is certified: the survey reads unproven cells (50..99: measured, no
    hazard shown) at half weight, takes certified ground over unproven, the nearer of two
    equal patches, and never hazards or unknown ground."""
    cfg = replace(GuidanceConfig(), survey_share_min=0.3)
    grid = GridGeometry((-20.0, -20.0), 0.2, (200, 200))               # 40 m square

    def patch(occ, x, y, value):                                     # 8 m square at (x, y)
        i, j = int((y + 20.0) / 0.2), int((x + 20.0) / 0.2)
        occ[i - 20:i + 20, j - 20:j + 20] = value

    occ = np.full(grid.shape, -1, np.int8)
    patch(occ, 0.0, 0.0, 100)                        # a crater around the target
    patch(occ, 8.0, 8.0, 60)                         # unproven ground 11 m away
    g = Guidance(cfg, HAZARD, [0.0, 0.0])
    assert g.on_hazard(occ, grid, None, np.zeros(3), 120.0) == 'survey'
    np.testing.assert_allclose(g.target_xy_m, [8.0, 8.0], atol=1.5)
    patch(occ, -12.0, -12.0, 60)                     # the same ground 17 m away
    g = Guidance(cfg, HAZARD, [0.0, 0.0])
    g.on_hazard(occ, grid, None, np.zeros(3), 120.0)
    np.testing.assert_allclose(g.target_xy_m, [8.0, 8.0], atol=1.5)
    patch(occ, -12.0, -12.0, 20)                     # ... certified safe there: it wins
    g = Guidance(cfg, HAZARD, [0.0, 0.0])
    g.on_hazard(occ, grid, None, np.zeros(3), 120.0)
    np.testing.assert_allclose(g.target_xy_m, [-12.0, -12.0], atol=1.5)
    occ[:] = 100                                     # hazards and unknown promise nothing
    occ[::2] = -1
    g = Guidance(cfg, HAZARD, [0.0, 0.0])
    assert g.on_hazard(occ, grid, None, np.zeros(3), 120.0) == 'no_site'


def test_survey_keeps_its_target_when_a_scan_does_not_reach_it():
    """A scan's map covers the ground below the lander; while it flies towards a survey target
    beyond that window, the target keeps the promise it was chosen for, so a window of
    mediocre ground does not make it jump (docs/land200: 20-40 m jumps at every scan, then a
    landing where nothing was certified)."""
    cfg = replace(GuidanceConfig(), survey_share_min=0.3)
    far_grid = GridGeometry((-40.0, -10.0), 0.2, (100, 200))          # x -40..0, y -10..10
    occ = np.full(far_grid.shape, -1, np.int8)
    occ[:, 130:170] = 60                                               # unproven, x -14..-6
    g = Guidance(cfg, HAZARD, [0.0, 0.0])
    assert g.on_hazard(occ, far_grid, None, np.zeros(3), 120.0) == 'survey'
    target = g.target_xy_m.copy()
    assert g.target_promise == pytest.approx(0.5, abs=0.01)
    near = GridGeometry((10.0, -10.0), 0.2, (100, 100))                # x 10..30: not the target
    occ2 = np.full(near.shape, -1, np.int8)
    occ2[:, 20:80] = 60                                                # as promising, no better
    assert g.on_hazard(occ2, near, None, np.array([8.0, 0.0, 0.0]), 80.0) == 'no_site'
    np.testing.assert_allclose(g.target_xy_m, target)
    occ2[:, 20:80] = 20                                                # certified there: better
    assert g.on_hazard(occ2, near, None, np.array([8.0, 0.0, 0.0]), 80.0) == 'survey'
    assert g.target_xy_m[0] > 10.0 and g.target_promise > 0.9
    # a map that shows the target worse than promised updates the promise, and moves on
    g = Guidance(cfg, HAZARD, [0.0, 0.0])
    g.on_hazard(occ, far_grid, None, np.zeros(3), 120.0)
    occ[:] = 100
    occ[:, 0:40] = 60                                                  # unproven, x -40..-32
    assert g.on_hazard(occ, far_grid, None, np.zeros(3), 100.0) == 'survey'
    assert g.target_xy_m[0] < -30.0


def test_a_certified_target_is_held_until_a_scan_shows_a_hazard_in_its_footprint():
    """Certified at one scan, merely uncertifiable at the next (a close call, shadow): the
    target is held, not traded for uncertified ground; a hazard in its footprint releases it,
    and a site certified now still wins."""
    cfg = replace(GuidanceConfig(), survey_share_min=0.3)
    g = Guidance(cfg, HAZARD, [0.0, 0.0])
    assert g.on_hazard(safe_map(), GRID, None, np.zeros(3), 30.0) == 'keep'
    occ = np.full(GRID.shape, 60, np.int8)           # nothing certifiable any more ...
    occ[:, 75:] = 10                                 # ... but safe ground 5-10 m east
    occ[45:55, 45:55] = -1                           # and a shadow on the target
    assert g.on_hazard(occ, GRID, None, np.zeros(3), 24.0) == 'hold'
    np.testing.assert_allclose(g.target_xy_m, [0.0, 0.0])
    assert g.on_hazard(occ, GRID, np.array([7.0, 0.0]), np.zeros(3), 24.0) == 'retarget'
    g = Guidance(cfg, HAZARD, [0.0, 0.0])
    g.on_hazard(safe_map(), GRID, None, np.zeros(3), 30.0)
    occ[50, 52] = 100                                # a hazard 0.4 m from the target
    assert g.on_hazard(occ, GRID, None, np.zeros(3), 24.0) == 'survey'
    assert g.target_xy_m[0] > 5.0


def test_survey_heads_for_the_ground_the_map_calls_safe_and_only_when_asked():
    occ = np.full(GRID.shape, -1, np.int8)           # nothing known ...
    occ[40:60, 40:60] = 100                          # ... a hazard around the target ...
    occ[35:65, 75:95] = 10                           # ... and safe ground 5-9 m east
    quiet = Guidance(replace(GuidanceConfig(), survey_share_min=0.0), HAZARD, [0.0, 0.0])
    assert quiet.on_hazard(occ, GRID, None, np.zeros(3), 40.0) == 'no_site'
    np.testing.assert_allclose(quiet.target_xy_m, [0.0, 0.0])
    g = Guidance(replace(GuidanceConfig(), survey_share_min=0.3), HAZARD, [0.0, 0.0])
    assert g.on_hazard(occ, GRID, None, np.zeros(3), 40.0) == 'survey'
    x, y = g.target_xy_m
    assert 5.0 <= x <= 9.0 and -3.0 <= y <= 3.0 and g.retargets == 0
    # already there: no second move; a certified site still wins over surveying
    assert g.on_hazard(occ, GRID, None, np.zeros(3), 30.0) == 'no_site'
    assert g.on_hazard(occ, GRID, np.array([7.0, 1.0]), np.zeros(3), 30.0) == 'retarget'
    # out of reach at low altitude (1 m of divert per metre of height): stay
    far = Guidance(replace(GuidanceConfig(), survey_share_min=0.3), HAZARD, [0.0, 0.0])
    assert far.on_hazard(occ, GRID, None, np.zeros(3), 3.0) == 'no_site'

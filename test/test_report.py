"""Campaign report: the safe-rate interval and its plot at the ends of the range."""
import matplotlib
import pytest

from l3d_sim.report import plot_safe_rates, wilson_interval

matplotlib.use('Agg')


@pytest.mark.parametrize('n', [1, 3, 100, 200])
def test_wilson_interval_holds_the_rate_at_every_count(n):
    for k in range(n + 1):
        lo, hi = wilson_interval(k, n)
        assert 0.0 <= lo <= k / n <= hi <= 1.0
    assert wilson_interval(0, n)[0] == 0.0 and wilson_interval(n, n)[1] == 1.0
    assert wilson_interval(n, n)[0] < 1.0 and wilson_interval(0, n)[1] > 0.0


def test_safe_rate_plot_of_a_perfect_and_a_zero_mode(tmp_path):
    """100/100 once had an upper bound 1e-16 below the rate: a negative error bar that
    matplotlib refuses, which ended `l3d land` after its JSON, without a report."""
    modes = {'hda': {'safe_rate': 1.0, 'safe_landings': 100, 'runs': 100},
             'blind': {'safe_rate': 0.0, 'safe_landings': 0, 'runs': 100}}
    plot_safe_rates({'modes': modes}, tmp_path / 'rates.png')
    assert (tmp_path / 'rates.png').stat().st_size > 1000


def test_headline_safe_rate_is_the_hda_loops_or_none():
    """safe_rate is HDA's (INTERFACES.md section 6); a campaign without it must not report
    the oracle's rate under that name."""
    from l3d_sim.campaign import summarize

    def row(safe):
        return {'safe': safe, 'nominal_safe': False, 'divert_m': 1.0, 'fuel_kg': 40.0,
                'vertical_speed_m_s': 1.0, 'frames': [{'latency_s': 0.1}]}
    oracle = [row(True), row(True)]
    both = summarize({'oracle': oracle, 'hda': [row(True), row(False)]}, {})
    assert both['safe_rate'] == 0.5 and both['oracle_safe_rate'] == 1.0
    assert both['runs'] == 2 and both['safe_landings'] == 1
    alone = summarize({'oracle': oracle}, {})
    assert alone['safe_rate'] is None and alone['safe_landings'] is None
    assert alone['oracle_safe_rate'] == 1.0 and alone['runs'] == 2


def test_safe_landings_binned_by_the_sunlit_share_of_the_scene():
    """Each run falls in the bin of its sunlit_share (0.02 in 'partly lit', not 'dark'); runs of
    older results without one fall in none; the report's table shows the counts."""
    from l3d_sim.campaign import summarize
    from l3d_sim.report import _sunlit_table

    def row(safe, share):
        return {'safe': safe, 'nominal_safe': False, 'divert_m': 1.0, 'fuel_kg': 40.0,
                'vertical_speed_m_s': 1.0, 'frames': [], 'sunlit_share': share}
    hda = [row(False, 0.0), row(True, 0.019), row(True, 0.02), row(False, 0.5), row(True, 1.0),
           row(True, None)]
    s = summarize({'hda': hda, 'blind': [row(True, r['sunlit_share']) for r in hda]}, {})
    bins = s['modes']['hda']['by_sunlit']
    assert [(b['runs'], b['safe_landings']) for b in bins.values()] == [(2, 1), (1, 1), (2, 1)]
    assert s['per_run']['hda'][1]['sunlit_share'] == 0.019
    table = _sunlit_table(s)
    assert '| hda | 1/2 (0.50) | 1/1 (1.00) | 1/2 (0.50) |' in table
    assert '| blind | 2/2 (1.00) | 1/1 (1.00) | 2/2 (1.00) |' in table
    assert _sunlit_table(summarize({'hda': [row(True, None)]}, {})) == []


def test_certified_landings_and_how_many_of_them_were_safe():
    """A campaign counts the landings on a target the HDA certified and the safe ones among
    them (an unsafe certified landing is the failure that must not happen); blind runs and
    older results record no certification: None, shown as '-' in the report."""
    from l3d_sim.campaign import summarize
    from l3d_sim.report import _table

    def row(safe, certified):
        return {'safe': safe, 'nominal_safe': False, 'divert_m': 1.0, 'fuel_kg': 40.0,
                'vertical_speed_m_s': 1.0, 'frames': [], 'certified': certified}
    hda = [row(True, True), row(False, True), row(True, False), row(False, False)]
    s = summarize({'hda': hda, 'blind': [row(True, None), row(False, None)]}, {})
    assert (s['modes']['hda']['certified'], s['modes']['hda']['certified_safe']) == (2, 1)
    assert s['modes']['blind']['certified'] is None
    assert [r['certified'] for r in s['per_run']['hda']] == [True, True, False, False]
    table = _table(s)
    assert any(line.startswith('| hda | 4 | 2 | 0.500') and '| 1 / 2 |' in line
               for line in table)
    assert any(line.startswith('| blind |') and '| - |' in line for line in table)


def test_a_scan_map_certifies_a_target_only_with_its_whole_footprint_known_and_safe():
    import numpy as np
    from l3d_ros import msg as conv
    from l3d_sim.sim_node import map_certifies
    from std_msgs.msg import Header
    occupancy = np.full((50, 50), 20, np.int8)            # 0.2 m cells, 10 m square at 0, 0
    occupancy[10, 40] = 100                               # a hazard 2.0 m beside (8.1, 2.1)

    def grid(occ):
        return conv.to_occupancy_grid(occ, 0.2, (0.0, 0.0), Header(frame_id='map'))
    assert map_certifies(grid(occupancy), np.array([3.0, 5.0]), 4.0)
    assert not map_certifies(grid(occupancy), np.array([7.0, 2.1]), 4.0)   # hazard inside
    assert not map_certifies(grid(occupancy), np.array([1.0, 5.0]), 4.0)   # off the map
    unproven = occupancy.copy()
    unproven[25, 15] = 60                                 # measured, not certified
    assert not map_certifies(grid(unproven), np.array([3.0, 5.0]), 4.0)
    unknown = occupancy.copy()
    unknown[25, 15] = -1
    assert not map_certifies(grid(unknown), np.array([3.0, 5.0]), 4.0)
    assert not map_certifies(None, np.array([3.0, 5.0]), 4.0)
    assert not map_certifies(grid(occupancy), None, 4.0)


def test_false_safe_cells_judge_each_safe_graded_cell_at_its_true_ground():
    """A map cell graded safe (0..49) is compared with the true margin of the ground under it,
    the map being off by the navigation bias; unproven, hazard and unknown map cells are not
    counted, nor cells whose true ground is unknown (NaN) or off the truth's grid."""
    import numpy as np
    from l3d_ros.hazard import GridGeometry
    from l3d_sim.groundtruth import false_safe_cells, map_false_safe
    occ = np.full((10, 10), -1, np.int8)                  # 1 m cells on (0, 0)..(10, 10)
    occ[2, 3] = 10                                        # safe-graded at (3.5, 2.5)
    occ[2, 4] = 49                                        # safe-graded at (4.5, 2.5)
    occ[2, 5] = 60                                        # unproven: not counted
    occ[2, 6] = 100                                       # hazard: not counted
    occ[9, 9] = 0                                         # safe-graded; true ground off grid
    margin = np.full((8, 8), 0.5, np.float32)             # 1 m cells on (-1, -1)..(7, 7)
    margin[4, 4] = 1.1                                    # hazard at true (3.5, 3.5)
    margin[4, 5] = np.nan                                 # unknown at true (4.5, 3.5)
    margin[3, 4] = 1.5                                    # gross hazard at true (3.5, 2.5)
    m_grid = GridGeometry((0.0, 0.0), 1.0, occ.shape)
    t_grid = GridGeometry((-1.0, -1.0), 1.0, margin.shape)
    # no bias: (3.5, 2.5) on the gross hazard, (4.5, 2.5) on safe ground
    assert false_safe_cells(occ, m_grid, margin, t_grid, [0.0, 0.0]) == (2, 1, 1)
    # a bias of -1 m in y: the map lies 1 m south of the truth, so map (3.5, 2.5) is true
    # (3.5, 3.5), a hazard 10 % over; its neighbour is unknown ground, (9.5, 9.5) off the grid
    assert false_safe_cells(occ, m_grid, margin, t_grid, [0.0, -1.0]) == (1, 1, 0)
    arrays = {'map_occupancy': occ, 'map_cell_m': 1.0, 'map_origin_xy_m': (0.0, 0.0),
              'gt_margin': margin, 'gt_cell_m': 1.0, 'gt_origin_xy_m': (-1.0, -1.0)}
    assert map_false_safe(arrays, [0.0, -1.0]) == (1, 1, 0)
    # within a disc: only the cells centred in it; none around (9.5, 9.5) is judged
    assert false_safe_cells(occ, m_grid, margin, t_grid, [0.0, 0.0], ((3.5, 2.5), 0.5)) == (
        1, 1, 1)
    assert map_false_safe(arrays, [0.0, 0.0], ((9.5, 9.5), 3.0)) == (0, 0, 0)
    assert map_false_safe({'gt_margin': margin}, [0.0, 0.0]) is None     # no map received
    with pytest.raises(ValueError, match='expected the shapes'):
        false_safe_cells(occ, t_grid, margin, t_grid, [0.0, 0.0])


def test_older_runs_are_judged_from_their_true_heights():
    """Results without true margins (older code) are judged from the saved true heights with
    the hazard parameters given: a 0.6 m step under half the map is a gross hazard."""
    import numpy as np
    from l3d_ros.config import HazardConfig
    from l3d_sim.groundtruth import map_false_safe
    heights = np.zeros((60, 60), np.float32)              # 0.2 m cells, 12 m square
    heights[:, 30:] = 0.6
    arrays = {'map_occupancy': np.zeros((60, 60), np.int8), 'map_cell_m': 0.2,
              'map_origin_xy_m': (0.0, 0.0), 'gt_height_m': heights, 'gt_cell_m': 0.2,
              'gt_origin_xy_m': (0.0, 0.0)}
    judged, wrong, gross = map_false_safe(arrays, [0.0, 0.0], cfg=HazardConfig())
    assert judged > 0 and 0 < gross <= wrong < judged
    assert map_false_safe(arrays, [0.0, 0.0]) is None                    # no parameters


def test_campaign_sums_the_last_maps_false_safe_cells():
    from l3d_sim.campaign import summarize
    from l3d_sim.report import _table

    def row(judged, wrong, gross):
        return {'safe': True, 'nominal_safe': False, 'divert_m': 1.0, 'fuel_kg': 40.0,
                'vertical_speed_m_s': 1.0, 'frames': [], 'certified': True,
                'site_safe_cells': judged, 'site_false_safe_cells': wrong,
                'site_gross_false_safe_cells': gross}
    s = summarize({'hda': [row(300, 3, 1), row(100, 1, 0), row(None, None, None)],
                   'blind': [row(None, None, None)]}, {})
    hda = s['modes']['hda']
    assert (hda['site_safe_cells'], hda['site_false_safe_cells'],
            hda['site_gross_false_safe_cells']) == (400, 4, 1)
    assert hda['site_false_safe_share'] == pytest.approx(0.01)
    assert hda['site_gross_false_safe_share'] == pytest.approx(0.0025)
    assert s['modes']['blind']['site_false_safe_share'] is None
    assert [r['site_false_safe_cells'] for r in s['per_run']['hda']] == [3, 1, None]
    table = _table(s)
    assert any(line.startswith('| hda |') and line.endswith('| 1.000 % / 0.250 % of 400 |')
               for line in table)
    assert any(line.startswith('| blind |') and line.endswith('| - |') for line in table)

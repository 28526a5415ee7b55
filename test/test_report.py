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

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

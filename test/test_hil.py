"""`l3d hil`: the node in its own network namespace; an injected link delay shows in latency;
a closed-loop landing flies with the node on the flight computer."""
import json
import os
import subprocess

import pytest
import yaml

from l3d_sim.hil import HilConfig, LinkCondition, netns_permitted, run_hil
from ros_harness import write_params
from test_closed_loop import small_world    # the closed-loop test's small world

NETNS_OK, NETNS_WHY = netns_permitted()


def test_condition_parsing_and_limits():
    assert LinkCondition.parse('lossy:20:5:0.02') == LinkCondition('lossy', 20.0, 5.0, 0.02)
    assert LinkCondition.parse('d:50') == LinkCondition('d', 50.0)
    for bad in ('d', ':5', 'd:5:1:0.1:9'):
        with pytest.raises(ValueError, match='NAME:DELAY_MS'):
            LinkCondition.parse(bad)
    with pytest.raises(ValueError, match='loss=1.0'):
        LinkCondition('x', 0, 0, 1.0)
    with pytest.raises(ValueError, match='delay_ms=-1'):
        LinkCondition('x', -1)


@pytest.mark.ros
@pytest.mark.skipif(not NETNS_OK, reason=f'network namespaces not permitted: {NETNS_WHY}')
def test_injected_delay_shows_in_end_to_end_latency(tmp_path):
    # reliable inputs: with best effort, a pinned, busy node loses frames to its UDP socket
    # buffer (a real finding of the harness, reported by `l3d hil`, but not what this tests)
    params = write_params(tmp_path, qos={'reliable': True})
    cfg = HilConfig(params, (LinkCondition('clean'), LinkCondition('delay50', 50.0)),
                    duration_s=2.5, rate_hz=4.0, width=256, height=192, isolate='netns')
    result = run_hil(cfg, tmp_path / 'hil')
    clean, delayed = result['conditions']
    assert result['mode'] == 'netns' and clean['sent'] >= 10
    # on a clean link every pair is answered, unless the busy node skipped it (newest wins)
    assert clean['received'] + clean['node_frames_replaced'] >= clean['sent'], clean
    assert delayed['received'] >= 0.7 * delayed['sent'], delayed
    # 50 ms held each way: no answer can come back in under 100 ms; queueing under load only
    # adds, so the fastest answers measure the link best (medians also move with the load)
    assert delayed['latency_ms']['min'] >= 90.0, result
    assert delayed['latency_ms']['min'] - clean['latency_ms']['min'] >= 40.0, result
    assert delayed['latency_ms']['median'] > clean['latency_ms']['median'], result
    assert json.loads((tmp_path / 'hil' / 'hil.json').read_text()) == result
    assert '| delay50 | 50 |' in (tmp_path / 'hil' / 'hil.md').read_text()
    names = subprocess.run(['ip', 'netns', 'list'], capture_output=True, text=True).stdout
    tag = os.getpid() % 100000
    assert f'l3d_fc_{tag}' not in names and f'l3d_gnd_{tag}' not in names   # cleaned up


@pytest.mark.ros
@pytest.mark.skipif(not NETNS_OK, reason=f'network namespaces not permitted: {NETNS_WHY}')
def test_closed_loop_landing_with_the_node_on_the_flight_computer(tmp_path):
    # the closed-loop test's small world, 256 px, boulder at the target, and its relaxed stereo
    # noise (disparity_sigma_px 0.1, sigma_margin 1: the shipped 0.25 px / 2 sigma declare
    # nothing safe from SGBM at 256 px); l3d_stereo in the flight namespace, pinned to a core
    params = tmp_path / 'world.yaml'
    params.write_text(yaml.safe_dump(small_world()))
    cfg = HilConfig(params, (LinkCondition('clean'),), duration_s=0.0, landings=1,
                    image_px=256, target_hazard='boulder', isolate='netns')
    result = run_hil(cfg, tmp_path / 'hil')
    assert result['mode'] == 'netns' and result['landings_per_condition'] == 1
    (clean,) = result['conditions']
    s = clean['landings']
    assert set(s) >= {'landings', 'safe_landings', 'safe_rate', 'landed', 'touchdown_error_m',
                      'divert_m', 'perception_latency_ms', 'scans', 'scans_answered',
                      'frame_timeouts', 'node_frames_replaced', 'link', 'errors', 'runs'}, s
    (run,) = s['runs']
    assert run['error'] is None and run['landed'] and s['landings'] == 1, run
    assert isinstance(run['safe'], bool) and s['safe_landings'] == int(run['safe'])
    # every scan crossed the link both ways: the images up, the node's hazard_map back down
    assert run['scans'] == 3 and run['scans_answered'] == 3 and run['frame_timeouts'] == 0, run
    assert len(run['latency_ms']) == 3 and min(run['latency_ms']) > 0, run
    assert s['perception_latency_ms']['max'] == max(run['latency_ms'])
    assert s['link']['up']['forwarded'] >= 3 * 5 and s['link']['down']['forwarded'] >= 3, s
    assert s['link']['up']['dropped'] == s['link']['up']['repaired'] == 0, s  # clean link
    # the boulder sits on the nominal target: the node's map moved the lander off it
    assert run['nominal_safe'] is False and run['divert_m'] > 1.5, run
    assert run['touchdown_error_m'] < 2.0
    assert json.loads((tmp_path / 'hil' / 'hil.json').read_text()) == result
    assert '| clean | %d / 1 |' % s['safe_landings'] in (tmp_path / 'hil' / 'hil.md').read_text()

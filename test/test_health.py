import numpy as np

from l3d_ros.health import ERROR, Health, OK, scene_values, SILENT_AFTER_S, WARN


def report(health, active='sgbm', configured='sgbm', refused=False, drops=None, timeout=0.0):
    return health.report(active, configured, '', refused, drops or {}, timeout)


def test_quiet_node_is_ok_and_faults_are_listed_once():
    h = Health()
    assert report(h).level == OK
    h.fault('frame dropped: bad encoding')
    h.fault('frame dropped: bad encoding')
    first = report(h)
    assert first.level == WARN and first.values['recent_faults'] == 'frame dropped: bad encoding'
    assert first.values['faults'] == '2'
    second = report(h)
    assert second.level == OK and second.values['recent_faults'] == ''
    assert second.values['last_fault'] == 'frame dropped: bad encoding'   # history kept


def test_fallback_warns_and_a_refused_model_is_an_error_every_time():
    assert report(Health(), active='sgbm', configured='student').level == WARN
    h = Health('backend student refused: sha256 mismatch')
    assert report(h, refused=True).level == ERROR
    assert report(h, refused=True).level == ERROR


def test_a_silent_camera_is_named():
    h = Health()
    for stream in ('left', 'right', 'left_info', 'right_info'):
        h.arrived(stream, 10.0)
    for stream in ('left', 'left_info', 'right_info'):
        h.arrived(stream, 10.0 + 2 * SILENT_AFTER_S)
    r = report(h)
    assert r.level == WARN and 'right silent for 2.0 s' in r.values['recent_faults']


def test_drops_are_reported_when_they_grow():
    h = Health()
    r = report(h, drops={'dropped_stale': 3, 'duplicates': 0, 'replaced': 7})
    assert '3 stale' in r.values['recent_faults'] and r.values['drops_replaced'] == '7'
    assert report(h, drops={'dropped_stale': 3, 'duplicates': 0}).level == OK


def test_latency_statistics():
    h = Health()
    for ms in range(1, 101):
        h.frame_done(float(ms), {'inference': 2.0 * ms})
    v = report(h).values
    assert v['frames'] == '100' and v['latency_ms_median'] == '50.5'
    assert v['stage_ms_inference'] == '101.0'


def test_latency_since_start_in_fixed_memory():
    rng = np.random.default_rng(3)
    ms = np.concatenate([rng.lognormal(np.log(35.0), 0.2, 20_000), [12_000.0, 0.05]])
    h = Health()
    for v in ms:
        h.frame_done(float(v), {})
    v = report(h).values
    assert h.latency_all.counts.size < 2000                   # memory does not grow with frames
    for q, key in ((50, 'median'), (99, 'p99')):
        exact = np.sort(ms)[int(np.ceil(q / 100 * len(ms))) - 1]    # nearest rank
        got = float(v[f'latency_ms_{key}_since_start'])
        assert exact <= got * 1.0001 and got <= exact * 1.0101 + 0.05
    assert v['latency_ms_max_since_start'] == '12000.0'
    assert float(v['latency_ms_median']) > 30                 # the window saw only the last 200


def test_latency_since_start_before_any_frame_is_nan():
    v = report(Health()).values
    assert {v[f'latency_ms_{k}_since_start'] for k in ('median', 'p99', 'max')} == {'nan'}


def test_inputs_without_a_partner_are_a_reported_drop():
    h = Health()
    r = report(h, drops={'dropped_unmatched': 4})
    assert r.level == WARN and '4 inputs that found no partner stamp' in r.values['recent_faults']


def test_the_age_of_the_newest_input_is_reported():
    import time
    h = Health()
    assert report(h).values['input_age_s'] == 'none'
    h.arrived('left', time.monotonic() - 7.0)
    assert 6.9 <= float(report(h).values['input_age_s']) < 8.0


def test_no_input_at_all_for_longer_than_the_timeout_is_an_error():
    import time
    h = Health()
    assert report(h, timeout=0.0).level == OK                 # off: silence is not a fault
    h.started_s = time.monotonic() - 5.0
    r = report(h, timeout=2.0)
    assert r.level == ERROR and r.message.startswith('input lost: no input since start for 5.')
    assert 'input_timeout_s=2' in r.message
    for stream in ('left', 'right', 'left_info', 'right_info'):
        h.arrived(stream, time.monotonic() - 3.0)
    assert report(h, timeout=2.0).message.startswith('input lost: no input for 3.')
    assert report(h, timeout=10.0).level == OK                # within the timeout
    for stream in ('left', 'right', 'left_info', 'right_info'):
        h.arrived(stream, time.monotonic())
    assert report(h, timeout=2.0).level == OK                 # inputs back


def test_what_the_last_frame_could_see_is_reported():
    """A frame in shadow: a quarter of its pixels with depth, its map half unknown, a tenth
    certified (0..49; 50..99 is unproven, not safe), no site; reported to 3 digits."""
    depth = np.full((4, 8), np.nan, np.float32)
    depth[:2, :4] = 30.0
    occupancy = np.full((10, 10), -1, np.int8)
    occupancy[:5] = 100
    occupancy[0, :] = 49
    occupancy[1, :] = 50
    scene = scene_values(depth, occupancy, False, 2, 'sgbm')
    assert scene == {'valid_depth_share': 0.25, 'map_known_share': 0.5,
                     'map_safe_share': 0.1, 'site_found': False, 'binning': 2,
                     'backend': 'sgbm'}
    h = Health()
    assert not any(k.startswith('last_frame_') for k in report(h).values)   # no frame yet
    h.frame_done(10.0, {}, scene)
    values = report(h).values
    assert values['last_frame_valid_depth_share'] == '0.250'
    assert values['last_frame_map_safe_share'] == '0.100'
    assert values['last_frame_site_found'] == 'False'
    assert values['last_frame_binning'] == '2'
    assert values['last_frame_backend'] == 'sgbm'
    assert scene_values(depth[:0], occupancy[:0], True)['map_known_share'] == 0.0

"""Lander dynamics against closed forms: free fall, energy, rocket equation, limits."""
import math

from hypothesis import given, settings, strategies as st
import numpy as np
import pytest

from l3d_sim.lander import camera_pose, initial_state, LanderState, limit_tilt, step
from l3d_sim.mission_config import G0_M_S2, LanderConfig

CFG = LanderConfig()


def test_free_fall_matches_the_parabola():
    state = initial_state(CFG, [1.0, 2.0, 300.0], [3.0, -1.0, 4.0])
    for _ in range(100):
        state, thrust = step(state, np.zeros(3), 0.1, CFG)
        assert thrust == 0.0
    t = 10.0
    np.testing.assert_allclose(state.position_m, [1 + 3 * t, 2 - t, 300 + 4 * t - 0.81 * t * t],
                               rtol=1e-12, atol=1e-9)
    np.testing.assert_allclose(state.velocity_m_s, [3.0, -1.0, 4.0 - 1.62 * t], atol=1e-12)
    assert state.mass_kg == CFG.dry_mass_kg + CFG.propellant_kg


@settings(max_examples=50, deadline=None)
@given(v=st.lists(st.floats(-20, 20), min_size=3, max_size=3),
       dt=st.floats(0.01, 1.0), steps=st.integers(1, 50))
def test_unpowered_flight_conserves_energy(v, dt, steps):
    state = initial_state(CFG, [0.0, 0.0, 500.0], v)

    def energy(s):
        return 0.5 * float(s.velocity_m_s @ s.velocity_m_s) + CFG.gravity_m_s2 * s.position_m[2]

    e0 = energy(state)
    for _ in range(steps):
        state = step(state, np.zeros(3), dt, CFG)[0]
    assert energy(state) == pytest.approx(e0, rel=1e-12, abs=1e-9)


def test_vertical_burn_matches_the_rocket_equation_and_isp():
    cfg = LanderConfig(gravity_m_s2=1e-12)        # isolate the engine
    state = initial_state(cfg, [0, 0, 0], [0, 0, 0])
    thrust = 6000.0
    for _ in range(200):                            # 20 s at constant thrust
        state, applied = step(state, [0, 0, thrust / state.mass_kg], 0.1, cfg)
        assert applied == pytest.approx(thrust)
    ve = cfg.isp_s * G0_M_S2
    m0 = cfg.dry_mass_kg + cfg.propellant_kg
    assert m0 - state.mass_kg == pytest.approx(thrust * 20.0 / ve, rel=1e-9)   # mdot = T / ve
    assert state.velocity_m_s[2] == pytest.approx(ve * math.log(m0 / state.mass_kg), rel=1e-9)
    # position: integral of the rocket equation, by fine trapezoids of v(t)
    t = np.linspace(0, 20.0, 200001)
    v = -ve * np.log1p(-thrust / ve / m0 * t)
    assert state.position_m[2] == pytest.approx(np.trapezoid(v, t), rel=1e-8)


def test_propellant_runs_out_and_the_engine_stops():
    cfg = LanderConfig(propellant_kg=10.0)
    state = initial_state(cfg, [0, 0, 1000], [0, 0, 0])
    for _ in range(100):
        state, _ = step(state, [0, 0, 5.0], 0.1, cfg)
    assert state.mass_kg == pytest.approx(cfg.dry_mass_kg)
    v_before = state.velocity_m_s.copy()
    state, thrust = step(state, [0, 0, 5.0], 1.0, cfg)
    assert thrust == 0.0
    np.testing.assert_allclose(state.velocity_m_s - v_before, [0, 0, -cfg.gravity_m_s2])


@settings(max_examples=100, deadline=None)
@given(cmd=st.lists(st.floats(-50, 50), min_size=3, max_size=3), dt=st.floats(0.01, 0.5))
def test_thrust_tilt_and_slew_limits_hold(cmd, dt):
    state = initial_state(CFG, [0, 0, 100], [0, 0, 0])
    new, thrust = step(state, cmd, dt, CFG)
    assert thrust == 0.0 or CFG.thrust_min_n - 1e-9 <= thrust <= CFG.thrust_max_n + 1e-9
    tilt = math.degrees(math.acos(np.clip(new.thrust_dir[2], -1, 1)))
    assert tilt <= CFG.tilt_max_deg + 1e-6
    turned = math.degrees(math.acos(np.clip(new.thrust_dir @ state.thrust_dir, -1, 1)))
    assert turned <= CFG.attitude_rate_max_deg_s * dt + 1e-6
    assert np.linalg.norm(new.thrust_dir) == pytest.approx(1.0)


def test_limit_tilt_keeps_the_azimuth():
    d = limit_tilt(np.array([1.0, 1.0, 0.1]), 30.0)
    assert math.degrees(math.acos(d[2])) == pytest.approx(30.0)
    assert d[0] == pytest.approx(d[1])


def test_camera_looks_down_and_rides_the_body_axis():
    upright = initial_state(CFG, [5, 6, 50], [0, 0, 0])
    R, t = camera_pose(upright, CFG)  # noqa: N806
    np.testing.assert_allclose(R[:, 2], [0, 0, -1], atol=1e-12)        # optical z = nadir
    np.testing.assert_allclose(t, [5, 6, 50 + CFG.camera_height_m])
    axis = np.array([math.sin(0.2), 0.0, math.cos(0.2)])
    tilted = LanderState(0.0, upright.position_m, upright.velocity_m_s, upright.mass_kg, axis)
    R, _ = camera_pose(tilted, CFG)  # noqa: N806
    np.testing.assert_allclose(R[:, 2], -axis, atol=1e-12)
    np.testing.assert_allclose(R.T @ R, np.eye(3), atol=1e-12)


def test_bad_step_inputs_are_refused():
    state = initial_state(CFG, [0, 0, 10], [0, 0, 0])
    with pytest.raises(ValueError, match='dt_s'):
        step(state, [0, 0, 1], 0.0, CFG)
    with pytest.raises(ValueError, match='accel_cmd_m_s2'):
        step(state, [0, np.nan, 1], 0.1, CFG)

"""Closed-loop landings over real ROS 2 topics: sim node -> l3d_stereo -> guidance -> dynamics.

A small, benign world (60 m terrain, 256 x 256 px images, scans from 30 m down to 18 m) with a
3 m boulder planted at the nominal target: HDA must see it, divert to a site that the ground
truth calls safe, and touch down slowly there; the same seed must give the same landing. The
small rig is noisier than the shipped 512 px one, and the shipped stereo noise model
(disparity_sigma_px 0.25 with a 2-sigma margin) then declares nothing safe from SGBM depth, so
this world uses 0.1 px and 1.5 sigma (at 1 sigma the node certified a site whose footprint
holds 2 true hazard cells of 0.34 m at the boulder skirt); the ground truth judges the landing.
"""
from dataclasses import replace
import os
from pathlib import Path

import numpy as np
import pytest
import yaml

from l3d_ros.config import default_config_path, load_node_config
from l3d_sim.campaign import fly, run_params
from l3d_sim.config import load_sim_config
from l3d_sim.groundtruth import map_false_safe
from l3d_sim.lander import site_is_safe
from l3d_sim.mission_config import load_mission_config
from l3d_sim.render import prepare_lighting, sunlit_share
from l3d_sim.sim_node import landing_terrain

pytestmark = pytest.mark.ros


def small_world() -> dict:
    params = yaml.safe_load(default_config_path().read_text())
    sim = params['l3d_sim']['ros__parameters']
    sim['terrain'].update(size_m=60.0, cell_m=0.1, crater_density_per_ha=0.0,
                          boulder_density_per_m2=0.0, ejecta_boulders_per_100m2=0.0,
                          roughness_1m_m=0.02, regional_slope_max_deg=3.0)
    sim['rig'].update(width=256, height=256)
    stereo = params['l3d_stereo']['ros__parameters']
    stereo['hazard'].update(sigma_margin=1.5, disparity_sigma_px=0.1)
    guidance = params['l3d_lander']['ros__parameters']['guidance']
    guidance.update(start_altitude_m=45.0, start_offset_m=8.0, start_speed_m_s=1.0,
                    gate_altitude_m=30.0, scan_altitudes_m=[30.0, 24.0, 18.0],
                    terminal_altitude_m=10.0, divert_max_m=20.0)
    run = params['l3d_lander']['ros__parameters']['run']
    run.update(sun_elevation_deg=30.0, step_timeout_s=20.0, frame_timeout_s=30.0)
    return params


def land(tmp_path: Path, name: str, mode: str = 'hda', seed: int = 7,
         world: dict | None = None) -> tuple[dict, Path]:
    workdir = tmp_path / name
    params = run_params(world or small_world(),
                        {'seed': seed, 'mode': mode, 'target_hazard': 'boulder',
                         'result_path': str(workdir / 'result.json')})
    result = fly(params, workdir, int(os.environ['ROS_DOMAIN_ID']), timeout_s=120.0)
    return result, workdir / 'params.yaml'


def test_hda_diverts_from_a_boulder_to_a_safe_site_and_repeats_exactly(tmp_path):
    first, params_file = land(tmp_path, 'a')
    assert 'error' not in first, first
    assert first['landed'] and first['frame_timeouts'] == 0 and first['step_timeouts'] == 0

    # the planted boulder makes the nominal target unsafe by ground truth
    terrain = landing_terrain(load_sim_config(params_file), load_mission_config(params_file))
    hazard_cfg = load_node_config(params_file).hazard
    assert not first['nominal_safe']
    assert not site_is_safe(terrain, np.zeros(2), hazard_cfg)

    # HDA moved the target clear of the boulder (3 m wide + half a footprint) ...
    target = np.array(first['final_target_xy_m'])
    assert np.linalg.norm(target) > 1.5 + hazard_cfg.footprint_m / 2
    assert site_is_safe(terrain, target, hazard_cfg)
    # ... and the lander touched down there (within navigation error), safely and slowly
    touchdown = np.array(first['touchdown_xy_m'])
    assert np.linalg.norm(touchdown - target) < 2.0
    assert first['ground_safe'] and first['speed_ok'] and first['safe']
    # ... on a target a scan's map certified (what the campaign counts as certified)
    assert first['certified'] is True
    assert any(f['target_certified'] for f in first['frames'])
    assert len(first['frames']) == 3                       # certified: no look again
    assert first['vertical_speed_m_s'] <= 2.0 and first['horizontal_speed_m_s'] <= 0.5
    # the last map judged the touchdown disc it certified right: every safe-graded cell within
    # footprint/2 + terminal_error_m of the target is safe ground (as the saved arrays give it)
    disc = (target, hazard_cfg.footprint_m / 2
            + load_mission_config(params_file).guidance.terminal_error_m)
    with np.load(tmp_path / 'a' / 'result.npz') as z:
        recount = map_false_safe({k: z[k] for k in z.files}, first['nav_bias_m'][:2], disc)
    assert (first['site_safe_cells'], first['site_false_safe_cells'],
            first['site_gross_false_safe_cells']) == recount
    assert first['site_safe_cells'] > 300 and first['site_false_safe_cells'] == 0

    second, _ = land(tmp_path, 'b')
    assert second['touchdown_xy_m'] == first['touchdown_xy_m']
    assert second['final_target_xy_m'] == first['final_target_xy_m']
    assert second['fuel_kg'] == first['fuel_kg']


def test_blind_lander_lands_on_the_boulder(tmp_path):
    result, params_file = land(tmp_path, 'blind', mode='blind')
    assert result['landed'] and result['divert_m'] == 0.0
    # the scene's sunlit share (no lighting is prepared without scans) is the one the HDA
    # modes take from their renderer's lighting: lit but for the boulder's shadow
    sim, mission = load_sim_config(params_file), load_mission_config(params_file)
    sun = replace(sim.sun, elevation_deg=mission.run.sun_elevation_deg,
                  azimuth_deg=mission.run.sun_azimuth_deg)
    terrain = landing_terrain(sim, mission)
    lit = prepare_lighting(terrain, sun).channels[..., 2]
    assert result['sunlit_share'] == pytest.approx(
        sunlit_share(terrain, lit, np.zeros(2), mission.guidance.divert_max_m), abs=1e-9)
    assert 0.95 < result['sunlit_share'] < 1.0
    assert np.linalg.norm(result['touchdown_xy_m']) < 2.0      # nominal target + nav bias
    assert not result['ground_safe'] and not result['safe']
    assert result['certified'] is None                     # no HDA, nothing to vouch for


def test_nothing_certified_at_the_lowest_scan_hovers_and_looks_again(tmp_path):
    """A 0.5 deg slope limit on ground sloping up to 3 deg: no map certifies anything (oracle
    depth, so only the guidance and the simulator's look frames are under test). After the
    lowest scan the lander stops its descent above the terminal altitude, takes
    look_scans_max more maps look_period_s apart, then lands, uncertified."""
    world = small_world()
    world['l3d_stereo']['ros__parameters']['hazard']['slope_max_deg'] = 0.5
    result, params_file = land(tmp_path, 'look', mode='oracle', world=world)
    assert 'error' not in result, result
    g = load_mission_config(params_file).guidance
    frames = result['frames']
    assert len(frames) == len(g.scan_altitudes_m) + g.look_scans_max
    assert not any(f['target_certified'] for f in frames) and result['certified'] is False
    looks = frames[len(g.scan_altitudes_m):]
    times = [f['t_s'] for f in frames[len(g.scan_altitudes_m) - 1:]]
    assert min(np.diff(times)) >= g.look_period_s - 1e-6
    camera_above_feet = frames[0]['camera_height_m'] - (g.scan_altitudes_m[0])
    for f in looks:                                     # hovering between the two heights
        assert g.terminal_altitude_m < f['camera_height_m'] - camera_above_feet
        assert f['camera_height_m'] < frames[len(g.scan_altitudes_m) - 1]['camera_height_m']
    assert result['landed'] and result['vertical_speed_m_s'] <= 2.0
    log = (params_file.parent / 'l3d_guidance.log').read_text()
    assert f'holding height ({g.look_scans_max} looks left)' in log
    assert '(0 looks left)' not in log                  # the last look resumes the descent

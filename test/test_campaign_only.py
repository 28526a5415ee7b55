"""`l3d land --only`: re-flying chosen runs of a campaign flies them as the full campaign does."""
import argparse

import pytest

from l3d_sim import campaign as campaign_mod
from l3d_sim.campaign import add_arguments, campaign, plan_runs
from l3d_sim.mission_config import load_mission_config


def test_only_flies_the_chosen_runs_with_their_campaign_terrain_and_sun(monkeypatch, tmp_path):
    flown = []

    def fake_fly(params, workdir, domain_id, timeout_s, ground_station=None):
        run = params['l3d_lander']['ros__parameters']['run']
        flown.append(dict(run))
        return {'mode': run['mode'], 'seed': run['seed'], 'safe': run['seed'] % 2 == 0,
                'landed': True}

    monkeypatch.setattr(campaign_mod, 'fly', fake_fly)
    summary, results = campaign(200, 5, tmp_path, modes=('hda',), only=[7, 2, 7],
                                progress=lambda _: None)
    full = plan_runs(8, 5, load_mission_config().campaign)
    assert sorted((r['seed'], r['sun_elevation_deg'], r['sun_azimuth_deg']) for r in flown) \
        == sorted((full[i]['seed'], full[i]['sun_elevation_deg'], full[i]['sun_azimuth_deg'])
                  for i in (2, 7))
    assert [r['run_index'] for r in summary['per_run']['hda']] == [2, 7]
    assert [r['seed'] for r in summary['per_run']['hda']] == [full[2]['seed'], full[7]['seed']]
    assert summary['runs'] == 2 and summary['run_indices'] == [2, 7]
    assert summary['safe_landings'] == sum(full[i]['seed'] % 2 == 0 for i in (2, 7))


@pytest.mark.parametrize('text', ['', 'a,b', '3,-1'])
def test_only_rejects_what_is_not_a_list_of_run_indices(text, capsys):
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    with pytest.raises(SystemExit):
        parser.parse_args(['--json', 'x.json', '--only', text])
    assert 'expected comma-separated run indices >= 0' in capsys.readouterr().err

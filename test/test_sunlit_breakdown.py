"""scripts/sunlit_breakdown.py on a finished campaign folder: a run's recorded share is kept, a
missing one is rebuilt from its params.yaml as the simulator node computes it."""
import importlib.util
import json
from pathlib import Path

import yaml

from l3d_ros.config import default_config_path
from l3d_sim.campaign import run_params

spec = importlib.util.spec_from_file_location(
    'sunlit_breakdown', Path(__file__).resolve().parents[1] / 'scripts' / 'sunlit_breakdown.py')
breakdown = importlib.util.module_from_spec(spec)
spec.loader.exec_module(breakdown)


def write_run(folder, run: dict, result: dict) -> None:
    base = yaml.safe_load(default_config_path().read_text())
    base['l3d_sim']['ros__parameters']['terrain'].update(size_m=40.0, crater_density_per_ha=0.0)
    base['l3d_lander']['ros__parameters']['guidance']['divert_max_m'] = 15.0
    folder.mkdir(parents=True)
    (folder / 'params.yaml').write_text(yaml.safe_dump(run_params(base, run)))
    (folder / 'result.json').write_text(json.dumps(result))


def test_breakdown_keeps_recorded_shares_and_rebuilds_missing_ones(tmp_path, capsys):
    out = tmp_path / 'camp'
    high = {'seed': 3, 'mode': 'hda', 'sun_elevation_deg': 60.0, 'sun_azimuth_deg': 0.0}
    write_run(out / 'land' / 'hda' / 'run_0000', high, {'safe': True})       # no share
    write_run(out / 'land' / 'hda' / 'run_0001', dict(high, seed=4),
              {'safe': False, 'sunlit_share': 0.01})
    write_run(out / 'land' / 'blind' / 'run_0000', dict(high, mode='blind'), {'safe': False})
    rebuilt = breakdown.scene_share(str(out / 'land' / 'hda' / 'run_0000' / 'params.yaml'))
    assert rebuilt > 0.95                                    # a 60 deg sun: nearly all lit
    assert breakdown.main([str(out), '--workers', '1', '--json', str(tmp_path / 'b.json')]) == 0
    printed = capsys.readouterr().out
    assert '| hda | 0/1 (0.00) | 0/0 | 1/1 (1.00) |' in printed
    assert '| blind | 0/0 | 0/0 | 0/1 (0.00) |' in printed
    runs = json.loads((tmp_path / 'b.json').read_text())['runs'][str(out)]
    assert runs['hda']['run_0000']['sunlit_share'] == rebuilt
    assert runs['blind']['run_0000']['sunlit_share'] == rebuilt   # one scene, any mode
    assert runs['hda']['run_0001']['sunlit_share'] == 0.01

"""How existing `l3d land` campaigns' last maps judged the touchdown discs, as new campaigns
record it (`site_safe_cells`, `site_false_safe_cells`, `site_gross_false_safe_cells`).

    python scripts/map_calibration.py OUT [OUT ...]

OUT is a campaign's per-landing folder (`l3d land --out`, default: the --json path without
its suffix), holding <mode>/run_<i>/result.json, result.npz and params.yaml. For each mode,
over the certified runs and over all: the cells the last hazard map graded safe within the
final target's touchdown disc (footprint/2 + terminal_error_m), and those of them whose true
margin exceeds 1 (hazard) and 1.2 (grossly; `l3d_sim.groundtruth.false_safe_cells`). Runs of
older code, which saved no true margins, are judged from their saved true heights with their
own hazard parameters.
"""
import argparse
import json
from pathlib import Path

import numpy as np

from l3d_ros.config import load_node_config
from l3d_sim.groundtruth import map_false_safe
from l3d_sim.mission_config import load_mission_config

KEYS = ('safe_cells', 'false_safe_cells', 'gross_false_safe_cells')


def campaign_calibration(out: Path) -> dict:
    """{mode: {'runs', 'certified_runs', KEYS..., 'certified_' + KEYS...}}."""
    table = {}
    for mode_dir in sorted(p for p in Path(out).iterdir() if p.is_dir()):
        row = dict.fromkeys(('runs', 'certified_runs', *KEYS,
                             *(f'certified_{k}' for k in KEYS)), 0)
        for run in sorted(mode_dir.glob('run_*')):
            try:
                result = json.loads((run / 'result.json').read_text())
                with np.load(run / 'result.npz') as z:
                    arrays = {k: z[k] for k in z.files}
            except FileNotFoundError:
                continue
            hazard = load_node_config(run / 'params.yaml').hazard
            guidance = load_mission_config(run / 'params.yaml').guidance
            disc = (result['final_target_xy_m'],
                    hazard.footprint_m / 2 + guidance.terminal_error_m)
            judged = map_false_safe(arrays, result.get('nav_bias_m', [0.0, 0.0])[:2], disc,
                                    hazard)
            if judged is None:
                continue
            row['runs'] += 1
            row['certified_runs'] += bool(result.get('certified'))
            for k, v in zip(KEYS, judged):
                row[k] += v
                if result.get('certified'):
                    row[f'certified_{k}'] += v
        if row['runs']:
            table[mode_dir.name] = row
    return table


def _fmt(row: dict, prefix: str = '') -> str:
    n, wrong, gross = (row[prefix + k] for k in KEYS)
    return (f'{wrong} ({100 * wrong / max(n, 1):.3f} %) truly hazard, {gross} '
            f'({100 * gross / max(n, 1):.3f} %) grossly, of {n} safe-graded cells')


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('out', type=Path, nargs='+', help='campaign per-landing folders')
    args = parser.parse_args()
    for out in args.out:
        for mode, row in campaign_calibration(out).items():
            print(f'{out} {mode}: certified runs {row["certified_runs"]}: '
                  f'{_fmt(row, "certified_")}; all {row["runs"]} runs: {_fmt(row)}')
    return 0


if __name__ == '__main__':
    raise SystemExit(main())

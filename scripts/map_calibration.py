"""The last maps' calibration of existing `l3d land` campaigns, as new campaigns record it.

    python scripts/map_calibration.py OUT [OUT ...]

OUT is a campaign's per-landing folder (`l3d land --out`, default: the --json path without
its suffix), holding <mode>/run_<i>/result.json, result.npz and params.yaml. For each mode:
the cells the landings' last hazard maps graded safe that the ground truth judges, and those of
them whose true margin exceeds 1 (hazard) and 1.2 (grossly; `l3d_sim.groundtruth.
false_safe_cells`), over all runs and over the certified ones. Runs of older code, which saved
no true margins, are judged from their saved true heights with their own hazard parameters.
"""
import argparse
import json
from pathlib import Path

import numpy as np

from l3d_ros.config import load_node_config
from l3d_sim.groundtruth import map_false_safe


def campaign_calibration(out: Path) -> dict:
    """{mode: {'runs', 'safe_cells', 'false_safe_cells', 'gross_false_safe_cells', and the
    same three over the certified runs}}."""
    keys = ('safe_cells', 'false_safe_cells', 'gross_false_safe_cells')
    table = {}
    for mode_dir in sorted(p for p in Path(out).iterdir() if p.is_dir()):
        row = dict.fromkeys(('runs', 'certified_runs', *keys,
                             *(f'certified_{k}' for k in keys)), 0)
        for run in sorted(mode_dir.glob('run_*')):
            try:
                result = json.loads((run / 'result.json').read_text())
                with np.load(run / 'result.npz') as z:
                    arrays = {k: z[k] for k in z.files}
            except FileNotFoundError:
                continue
            cfg = load_node_config(run / 'params.yaml').hazard
            judged = map_false_safe(arrays, result.get('nav_bias_m', [0.0, 0.0])[:2], cfg)
            if judged is None:
                continue
            row['runs'] += 1
            row['certified_runs'] += bool(result.get('certified'))
            for k, v in zip(keys, judged):
                row[k] += v
                if result.get('certified'):
                    row[f'certified_{k}'] += v
        if row['runs']:
            table[mode_dir.name] = row
    return table


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('out', type=Path, nargs='+', help='campaign per-landing folders')
    args = parser.parse_args()
    for out in args.out:
        for mode, row in campaign_calibration(out).items():
            n = max(row['safe_cells'], 1)
            wrong, gross = row['false_safe_cells'], row['gross_false_safe_cells']
            print(f'{out} {mode}: of {row["safe_cells"]} safe-graded cells over {row["runs"]} '
                  f'last maps, truly hazard {wrong} ({100 * wrong / n:.3f} %), grossly {gross} '
                  f'({100 * gross / n:.3f} %); certified runs {row["certified_runs"]}: '
                  f'{row["certified_false_safe_cells"]} / '
                  f'{row["certified_gross_false_safe_cells"]} of {row["certified_safe_cells"]}')
    return 0


if __name__ == '__main__':
    raise SystemExit(main())

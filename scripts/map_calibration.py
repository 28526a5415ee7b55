"""The last maps' calibration of existing `l3d land` campaigns, as new campaigns record it.

    python scripts/map_calibration.py OUT [OUT ...]

OUT is a campaign's per-landing folder (`l3d land --out`, default: the --json path without
its suffix), holding <mode>/run_<i>/result.json and result.npz. For each mode: the cells the
landings' last hazard maps graded safe that the ground truth judges, and those of them truly
hazard (`l3d_sim.groundtruth.false_safe_cells`), over all runs and over the certified ones.
"""
import argparse
import json
from pathlib import Path

import numpy as np

from l3d_sim.groundtruth import map_false_safe


def campaign_calibration(out: Path) -> dict:
    """{mode: {'runs', 'safe_cells', 'false_safe_cells', 'certified_runs', ...}}."""
    table = {}
    for mode_dir in sorted(p for p in Path(out).iterdir() if p.is_dir()):
        row = dict.fromkeys(('runs', 'safe_cells', 'false_safe_cells', 'certified_runs',
                             'certified_safe_cells', 'certified_false_safe_cells'), 0)
        for run in sorted(mode_dir.glob('run_*')):
            try:
                result = json.loads((run / 'result.json').read_text())
                with np.load(run / 'result.npz') as z:
                    arrays = {k: z[k] for k in z.files}
            except FileNotFoundError:
                continue
            judged = map_false_safe(arrays, result.get('nav_bias_m', [0.0, 0.0])[:2])
            if judged is None:
                continue
            row['runs'] += 1
            row['safe_cells'] += judged[0]
            row['false_safe_cells'] += judged[1]
            if result.get('certified'):
                row['certified_runs'] += 1
                row['certified_safe_cells'] += judged[0]
                row['certified_false_safe_cells'] += judged[1]
        if row['runs']:
            table[mode_dir.name] = row
    return table


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('out', type=Path, nargs='+', help='campaign per-landing folders')
    args = parser.parse_args()
    for out in args.out:
        for mode, row in campaign_calibration(out).items():
            share = row['false_safe_cells'] / max(row['safe_cells'], 1)
            print(f'{out} {mode}: {row["false_safe_cells"]} of {row["safe_cells"]} safe-graded '
                  f'cells truly hazard ({100 * share:.3f} %) over {row["runs"]} last maps; '
                  f'certified runs {row["certified_runs"]}: {row["certified_false_safe_cells"]} '
                  f'of {row["certified_safe_cells"]}')
    return 0


if __name__ == '__main__':
    raise SystemExit(main())

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
from l3d_sim.campaign import false_safe_totals
from l3d_sim.groundtruth import map_false_safe, SITE_KEYS
from l3d_sim.mission_config import load_mission_config


def campaign_rows(out: Path) -> dict:
    """{mode: [{'certified', 'site_safe_cells', 'site_false_safe_cells',
    'site_gross_false_safe_cells'}, ...]} of a campaign's run folders, as `l3d land` records
    them."""
    table = {}
    for mode_dir in sorted(p for p in Path(out).iterdir() if p.is_dir()):
        rows = []
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
            if judged is not None:
                rows.append({'certified': bool(result.get('certified')),
                             **dict(zip(SITE_KEYS, judged))})
        if rows:
            table[mode_dir.name] = rows
    return table


def _fmt(rows: list[dict]) -> str:
    t = false_safe_totals(rows)
    if t['site_safe_cells'] is None:
        return 'no safe-graded cells'
    n = max(t['site_safe_cells'], 1)
    wrong, gross = t['site_false_safe_cells'], t['site_gross_false_safe_cells']
    return (f'{wrong} ({100 * wrong / n:.3f} %) truly hazard, {gross} '
            f'({100 * gross / n:.3f} %) grossly, of {t["site_safe_cells"]} safe-graded cells')


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('out', type=Path, nargs='+', help='campaign per-landing folders')
    args = parser.parse_args()
    for out in args.out:
        for mode, rows in campaign_rows(out).items():
            certified = [r for r in rows if r['certified']]
            print(f'{out} {mode}: certified runs {len(certified)}: {_fmt(certified)}; '
                  f'all {len(rows)} runs: {_fmt(rows)}')
    return 0


if __name__ == '__main__':
    raise SystemExit(main())

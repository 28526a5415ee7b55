"""Where uncertified landings of existing `l3d land` campaigns would have touched down under the
look phase's least-evidence rule (`l3d_sim.guidance.Guidance._least_evidence`), judged on the
ground truth, against where they did.

    python scripts/uncertified_policy.py OUT [OUT ...]

OUT is a campaign's per-landing folder (`l3d land --out`, default: the --json path without
its suffix) holding <mode>/run_<i>/result.json, result.npz and params.yaml. For every run that
landed on a target no hazard map certified, the rule is applied once to the last hazard map
(the lander hovering over its final target at the lowest scan altitude) and the spot it picks
is judged as a touchdown there would be: safe when every true cell within footprint/2 of it
(the map lies in the navigation frame, off by the run's bias) has a known true margin <= 1.
The flown final target is judged the same way, as a check of the judge against the
simulator's verdicts. Offline only: in a closed loop the looks that follow a move see the new
ground closer, so campaigns are what decide (README, closed loop).
"""
import argparse
import json
from pathlib import Path

import numpy as np

from l3d_ros.config import load_node_config
from l3d_ros.hazard import GridGeometry
from l3d_sim.groundtruth import saved_true_margin
from l3d_sim.guidance import Guidance
from l3d_sim.mission_config import load_mission_config


def truly_safe(xy_map_m, nav_bias_xy_m, margin: np.ndarray, grid: GridGeometry,
               footprint_m: float) -> bool:
    """Every true cell within footprint/2 of the map point's true ground is known and safe."""
    x, y = np.asarray(xy_map_m, float) - np.asarray(nav_bias_xy_m, float)[:2]
    rows, cols = np.mgrid[0:margin.shape[0], 0:margin.shape[1]]
    cx, cy = grid.cell_centre(rows, cols)
    disc = np.hypot(cx - x, cy - y) <= footprint_m / 2
    return bool(disc.any() and (margin[disc] <= 1.0).all())


def judge_run(run: Path) -> tuple[bool, bool, bool] | None:
    """(simulator's verdict, flown target judged, least-evidence spot judged) of an
    uncertified landing, or None for any other run."""
    try:
        result = json.loads((run / 'result.json').read_text())
        with np.load(run / 'result.npz') as z:
            arrays = {k: z[k] for k in z.files}
    except FileNotFoundError:
        return None
    if result.get('certified') or not result.get('landed') or 'map_occupancy' not in arrays:
        return None
    hazard = load_node_config(run / 'params.yaml').hazard
    guidance_cfg = load_mission_config(run / 'params.yaml').guidance
    truth = saved_true_margin(arrays, hazard)
    if truth is None:
        return None
    margin, gt_grid = truth
    occ = np.asarray(arrays['map_occupancy'])
    grid = GridGeometry(tuple(np.asarray(arrays['map_origin_xy_m'], float)),
                        float(arrays['map_cell_m']), occ.shape)
    target = np.asarray(result['final_target_xy_m'], float)
    g = Guidance(guidance_cfg, hazard, result['nominal_xy_m'])
    g.target_xy_m, g.phase = target.copy(), 'look'
    height = guidance_cfg.scan_altitudes_m[-1] if guidance_cfg.scan_altitudes_m else 20.0
    g.on_hazard(occ, grid, None, np.array([*target, height]), height)
    bias = result['nav_bias_m']
    return (bool(result['ground_safe']),
            truly_safe(target, bias, margin, gt_grid, hazard.footprint_m),
            truly_safe(g.target_xy_m, bias, margin, gt_grid, hazard.footprint_m))


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    ap.add_argument('out', nargs='+', type=Path, help='campaign run folders (l3d land --out)')
    args = ap.parse_args(argv)
    for out in args.out:
        for mode_dir in sorted(p for p in out.iterdir() if p.is_dir()):
            rows = [r for r in map(judge_run, sorted(mode_dir.glob('run_*'))) if r]
            if not rows:
                continue
            flown, judged, least = (sum(col) for col in zip(*rows))
            print(f'{mode_dir}: {len(rows)} uncertified landings; safe: flown {flown} '
                  f'(judged here {judged}), least evidence {least}')


if __name__ == '__main__':
    main()

"""Safe landings of finished `l3d land` campaigns binned by how sunlit each scene was.

Usage: python scripts/sunlit_breakdown.py OUT [OUT ...] [--workers N]

OUT is a campaign's output folder (`l3d land --json OUT/land.json` writes the runs under
OUT/land/<mode>/run_NNNN/ with params.yaml and result.json). Each run's scene is rebuilt from
its params.yaml (l3d_sim.sim_node.landing_terrain) and its `sunlit_share` computed as the
simulator node now records it (l3d_sim.render.sunlit_share within guidance.divert_max_m of the
nominal target, under the run's sun); results that already hold one keep it. Prints one
markdown table per campaign and one over all of them, in l3d_sim.campaign.SUNLIT_BINS, and
with --json F writes the per-run shares and counts.
"""
import argparse
from concurrent.futures import ProcessPoolExecutor
from dataclasses import replace
import json
from pathlib import Path

import numpy as np

from l3d_sim.campaign import by_sunlit
from l3d_sim.config import load_sim_config
from l3d_sim.mission_config import load_mission_config
from l3d_sim.render import shadow_mask, sunlit_share
from l3d_sim.report import sunlit_rows
from l3d_sim.sim_node import landing_terrain


def scene_share(params_file: str) -> float:
    """sunlit_share of the run described by `params_file`, as l3d_sim.sim_node computes it."""
    sim, mission = load_sim_config(Path(params_file)), load_mission_config(Path(params_file))
    sun = replace(sim.sun, elevation_deg=mission.run.sun_elevation_deg,
                  azimuth_deg=mission.run.sun_azimuth_deg)
    terrain = landing_terrain(replace(sim, sun=sun), mission)
    lit = shadow_mask(terrain.height_m, terrain.cell_m, sun)
    return sunlit_share(terrain, lit, np.array(mission.guidance.nominal_xy_m),
                        mission.guidance.divert_max_m)


def load_runs(out: Path) -> dict[str, dict[str, dict]]:
    """{mode: {run folder name: result}} of a campaign folder."""
    modes = {}
    for mode_dir in sorted(p for p in (out / 'land').iterdir() if p.is_dir()):
        modes[mode_dir.name] = {run.name: json.loads((run / 'result.json').read_text())
                                for run in sorted(mode_dir.glob('run_*'))
                                if (run / 'result.json').is_file()}
    if not modes:
        raise SystemExit(f'{out}: no land/<mode>/run_NNNN/result.json; expected the output '
                         f'folder of an `l3d land` campaign')
    return modes


def table(title: str, rows_by_mode: dict[str, list[dict]]) -> list[str]:
    bins = {mode: by_sunlit(rows) for mode, rows in rows_by_mode.items()}
    return [f'### {title}', '', *sunlit_rows(bins), '']


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('out', nargs='+', type=Path, help='campaign output folders')
    parser.add_argument('--workers', type=int, default=2)
    parser.add_argument('--json', type=Path, default=None, help='per-run shares and counts')
    args = parser.parse_args(argv)
    campaigns = {out: load_runs(out) for out in args.out}
    todo = sorted({str(out / 'land' / mode / name / 'params.yaml')
                   for out, modes in campaigns.items() for mode, runs in modes.items()
                   for name, r in runs.items() if r.get('sunlit_share') is None})
    # a run's scene does not depend on its mode: one share per run folder and campaign
    by_scene = {}
    for path in todo:
        by_scene.setdefault((Path(path).parents[2], Path(path).parent.name), path)
    if args.workers > 1:
        with ProcessPoolExecutor(args.workers) as pool:
            shares = dict(zip(by_scene, pool.map(scene_share, by_scene.values())))
    else:
        shares = dict(zip(by_scene, map(scene_share, by_scene.values())))
    lines, everything, dump = [], {}, {}
    for out, modes in campaigns.items():
        rows_by_mode = {}
        for mode, runs in modes.items():
            rows = []
            for name, r in runs.items():
                share = r.get('sunlit_share')
                if share is None:
                    share = shares[(out / 'land', name)]
                rows.append({'safe': r.get('safe'), 'sunlit_share': share})
                dump.setdefault(str(out), {}).setdefault(mode, {})[name] = rows[-1]
            rows_by_mode[mode] = rows
            everything.setdefault(mode, []).extend(rows)
        lines += table(str(out), rows_by_mode)
    if len(campaigns) > 1:
        lines += table('all campaigns', everything)
    print('\n'.join(lines))
    if args.json is not None:
        args.json.write_text(json.dumps({'runs': dump, 'counts': {
            mode: by_sunlit(rows) for mode, rows in everything.items()}}, indent=1) + '\n')
    return 0


if __name__ == '__main__':
    raise SystemExit(main())

"""Campaign report: markdown + HTML page and PNG plots (matplotlib, Agg backend).

Plots: safe-rate bars per mode (with 95 % Wilson intervals), side and top views of the
trajectories, and for the first runs the last perceived hazard map beside the true hazard over
the same ground, with the nominal target, the chosen target and the touchdown point.
"""
import html
import json
import math
from pathlib import Path

import matplotlib
matplotlib.use('Agg')
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

MAP_PLOTS = 3               # runs that get a hazard-map figure
COLORS = {'hda': 'tab:blue', 'oracle': 'tab:green', 'blind': 'tab:red'}


def wilson_interval(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """95 % Wilson score interval of a rate k / n."""
    if n == 0:
        return (math.nan, math.nan)
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    lo, hi = centre - half, centre + half
    # exact at the ends: rounding put 100/100's upper bound at 1 - 1e-16, below the rate
    return (0.0 if k == 0 else max(0.0, lo), 1.0 if k == n else min(1.0, hi))


def _load_arrays(out: Path, mode: str, index: int) -> dict | None:
    path = out / mode / f'run_{index:04d}' / 'result.npz'
    if not path.is_file():
        return None
    with np.load(path) as z:
        return {k: z[k] for k in z.files}


def plot_safe_rates(summary: dict, path: Path) -> None:
    modes = list(summary['modes'])
    fig, ax = plt.subplots(figsize=(5, 3.5))
    for i, mode in enumerate(modes):
        m = summary['modes'][mode]
        rate = m['safe_rate'] or 0.0
        lo, hi = wilson_interval(m['safe_landings'], m['runs'])
        ax.bar(i, rate, color=COLORS.get(mode, 'grey'))
        ax.errorbar(i, rate, yerr=[[max(rate - lo, 0.0)], [max(hi - rate, 0.0)]], color='k',
                    capsize=4)
        ax.text(i, min(rate + 0.03, 1.02), f'{m["safe_landings"]}/{m["runs"]}', ha='center')
    ax.set_xticks(range(len(modes)), modes)
    ax.set_ylim(0, 1.1)
    ax.set_ylabel('safe landing rate')
    ax.set_title('safe landings per mode (95 % Wilson)')
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_trajectories(results: dict, out: Path, path: Path) -> None:
    fig, (side, top) = plt.subplots(1, 2, figsize=(10, 4))
    for mode, rows in results.items():
        for r in rows:
            if r is None:
                continue
            arrays = _load_arrays(out, mode, r.get('run_index', 0))
            if arrays is None or not len(arrays['trajectory']):
                continue
            t = arrays['trajectory']
            nominal = np.array(r['nominal_xy_m'])
            rng = np.hypot(t[:, 1] - nominal[0], t[:, 2] - nominal[1])
            style = dict(color=COLORS.get(mode, 'grey'), lw=0.8, alpha=0.7)
            side.plot(rng, t[:, 3] - t[-1, 3], **style)
            top.plot(t[:, 1], t[:, 2], **style)
            top.plot(*r['touchdown_xy_m'], 'x' if not r.get('safe') else '.',
                     color=COLORS.get(mode, 'grey'))
    side.set_xlabel('horizontal distance to nominal target [m]')
    side.set_ylabel('height above touchdown [m]')
    side.set_title('descent profiles')
    top.set_xlabel('x [m]')
    top.set_ylabel('y [m]')
    top.set_aspect('equal')
    top.set_title('ground tracks (x: unsafe touchdown)')
    handles = [plt.Line2D([], [], color=c, label=m) for m, c in COLORS.items() if m in results]
    top.legend(handles=handles, loc='best')
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _extent(origin, cell, shape):
    return [origin[0], origin[0] + shape[1] * cell, origin[1], origin[1] + shape[0] * cell]


def plot_hazard_map(result: dict, arrays: dict, path: Path) -> None:
    """Perceived hazard (last scan) beside the ground truth, targets and touchdown marked."""
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.6))
    gt = arrays['gt_hazard'].astype(np.float32)
    gt[gt == 255] = np.nan
    ext_gt = _extent(arrays['gt_origin_xy_m'], float(arrays['gt_cell_m']), gt.shape)
    axes[1].imshow(gt, origin='lower', extent=ext_gt, cmap='RdYlGn_r', vmin=0, vmax=1)
    axes[1].set_title('true hazard (red) on the DEM, INTERFACES section 4')
    if 'map_occupancy' in arrays:
        occ = arrays['map_occupancy'].astype(np.float32)
        occ[occ < 0] = np.nan
        ext = _extent(arrays['map_origin_xy_m'], float(arrays['map_cell_m']), occ.shape)
        axes[0].imshow(occ, origin='lower', extent=ext, cmap='RdYlGn_r', vmin=0, vmax=100)
        axes[0].set_xlim(ext_gt[:2])
        axes[0].set_ylim(ext_gt[2:])
    axes[0].set_title(f'{result["mode"]}: last hazard_map (green safe, orange unproven, '
                      'red hazard, grey unknown)', fontsize=9)
    for ax in axes:
        ax.set_facecolor('0.6')
        ax.plot(*result['nominal_xy_m'], 'k+', ms=14, mew=2, label='nominal')
        ax.plot(*result['final_target_xy_m'], 'bo', mfc='none', ms=12, mew=2, label='target')
        ax.plot(*result['touchdown_xy_m'], 'mx', ms=10, mew=2, label='touchdown')
        ax.set_xlabel('x [m]')
        ax.set_ylabel('y [m]')
    axes[1].legend(loc='upper right', fontsize=8)
    verdict = 'SAFE' if result.get('safe') else 'UNSAFE'
    fig.suptitle(f'seed {result["seed"]}: {verdict}, divert {result["divert_m"]:.1f} m')
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _table(summary: dict) -> list[str]:
    rows = ['| mode | runs | safe | safe rate (95 % CI) | certified: safe / landed | '
            'ground safe | speeds ok | divert median / max [m] | fuel mean [kg] | '
            'latency median / p95 [s] | touchdown discs: safe cells truly hazard / grossly |',
            '|---|---|---|---|---|---|---|---|---|---|---|']
    for mode, m in summary['modes'].items():
        lo, hi = wilson_interval(m['safe_landings'], m['runs'])
        lat = m['perception_latency_s']
        fmt = (lambda v: '-' if v is None else f'{v:.2f}')
        cert = ('-' if m.get('certified') is None
                else f'{m["certified_safe"]} / {m["certified"]}')
        false_safe = ('-' if m.get('site_false_safe_share') is None else
                      f'{100 * m["site_false_safe_share"]:.3f} % / '
                      f'{100 * m["site_gross_false_safe_share"]:.3f} % of '
                      f'{m["site_safe_cells"]}')
        rows.append(f'| {mode} | {m["runs"]} | {m["safe_landings"]} | {m["safe_rate"]:.3f} '
                    f'({lo:.2f}-{hi:.2f}) | {cert} | {m["ground_safe"]} | {m["speed_ok"]} | '
                    f'{fmt(m["divert_m"]["median"])} / {fmt(m["divert_m"]["max"])} | '
                    f'{fmt(m["fuel_kg"]["mean"])} | {fmt(lat["median"])} / {fmt(lat["p95"])} | '
                    f'{false_safe} |')
    return rows


def sunlit_rows(bins_by_mode: dict[str, dict]) -> list[str]:
    """Markdown table of safe landings / runs per mode and sunlit-share bin
    (`l3d_sim.campaign.by_sunlit` of each mode); [] when no run has a share."""
    if not any(b['runs'] for bins in bins_by_mode.values() for b in bins.values()):
        return []
    first = next(iter(bins_by_mode.values()))
    head = [f'{n} ({100 * b["lo"]:.0f}-{100 * b["hi"]:.0f} %)' for n, b in first.items()]
    rows = ['| mode | ' + ' | '.join(head) + ' |', '|---' * (len(head) + 1) + '|']
    for mode, bins in bins_by_mode.items():
        cells = [f'{b["safe_landings"]}/{b["runs"]}'
                 + (f' ({b["safe_landings"] / b["runs"]:.2f})' if b['runs'] else '')
                 for b in bins.values()]
        rows.append(f'| {mode} | ' + ' | '.join(cells) + ' |')
    return rows


def _sunlit_table(summary: dict) -> list[str]:
    """The report's sunlit section; [] when no run has a share."""
    rows = sunlit_rows({mode: m['by_sunlit'] for mode, m in summary['modes'].items()
                        if 'by_sunlit' in m})
    if not rows:
        return []
    return ['Safe landings by the share of the ground within the divert budget that sees the '
            'sun (`sunlit_share`, true terrain; below 2 % only earthshine lights the scene):',
            '', *rows, '']


def write_report(folder: Path, summary: dict, results: dict, out: Path) -> Path:
    """report.md, report.html and PNGs in `folder`; returns the markdown path."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    plot_safe_rates(summary, folder / 'safe_rates.png')
    plot_trajectories(results, Path(out), folder / 'trajectories.png')
    maps = []
    for mode in ('hda', 'oracle'):
        for r in (results.get(mode) or [])[:MAP_PLOTS]:
            arrays = _load_arrays(Path(out), mode, r.get('run_index', 0)) if r else None
            if arrays is not None and 'gt_hazard' in arrays:
                name = f'hazard_{mode}_{r["run_index"]:04d}.png'
                plot_hazard_map(r, arrays, folder / name)
                maps.append(name)
    n = summary['runs']
    lines = [
        '# Closed-loop landing campaign', '',
        f'{n} runs per mode, campaign seed {summary["seed"]}, backend '
        f'`{summary["backend"]}`, images {summary["image_px"] or "as configured"} px, '
        f'planted target hazard: {summary["target_hazard"]}, wall time '
        f'{summary["wall_s"]:.0f} s with {summary["workers"]} worker(s).', '',
        f'- safe_rate (HDA, l3d_stereo): **{summary["safe_rate"]}**'
        + (' (HDA not flown in this campaign)' if summary['safe_rate'] is None else ''),
        f'- oracle_safe_rate (true depth, same hazard code): {summary["oracle_safe_rate"]}',
        f'- blind_safe_rate (no HDA, nominal target): {summary["blind_safe_rate"]}',
        f'- nominal target safe by ground truth in {summary["nominal_safe_rate"]:.2f} of runs',
        '', *_table(summary), '',
        'Touchdown discs: of the cells the last hazard map graded safe (OccupancyGrid 0-49) '
        'within footprint/2 + terminal_error_m of the final target (where the lander may touch '
        'down), the share whose true section 4 margin (max of slope / limit, roughness / '
        'limit) exceeds 1 (hazard) and 1.2 (grossly: a 0.36 m rock, a 12 deg slope), judged at '
        'the true ground under each cell (the map lies in the navigation frame, off by the '
        'run\'s position bias): how far the certification can be trusted, before landings '
        'fail. The oracle-depth loop shows the floor that the 0.2 m grids leave.', '',
        *_sunlit_table(summary),
        'Command of this campaign: `' + (summary.get('command') or 'l3d demo') + '`', '',
        'The target campaign (issue 8): `l3d land --runs 200 --seed 0 --workers 2 '
        '--json out/land200.json --report out/land200`', '',
        '![safe rates](safe_rates.png)', '', '![trajectories](trajectories.png)', '',
        *[f'![{m}]({m})' for m in maps], '',
        'Touchdown is safe when every DEM cell within footprint/2 of the touchdown point is '
        'safe by INTERFACES.md section 4 on the true terrain (block-averaged to hazard.cell_m) '
        'and the vertical speed, horizontal speed and tilt are within `l3d_lander.touchdown`.',
    ]
    md = folder / 'report.md'
    md.write_text('\n'.join(lines) + '\n')
    body = []
    for line in lines:
        if line.startswith('!['):
            src = line[line.index('(') + 1:-1]
            body.append(f'<p><img src="{html.escape(src)}"></p>')
        elif line.startswith('|'):
            body.append(f'<pre>{html.escape(line)}</pre>')
        elif line:
            body.append(f'<p>{html.escape(line)}</p>')
    (folder / 'report.html').write_text('<!doctype html><html><body>' + '\n'.join(body)
                                        + '</body></html>\n')
    (folder / 'summary.json').write_text(json.dumps(summary, indent=1) + '\n')
    return md


__all__ = ['write_report', 'wilson_interval', 'plot_safe_rates', 'plot_trajectories',
           'plot_hazard_map', 'sunlit_rows']

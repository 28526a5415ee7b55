"""`l3d land`: closed-loop Monte Carlo landings over ROS 2, JSON summary and report.

Run i of a campaign with seed S has its own terrain, sun and navigation noise, drawn from
`np.random.SeedSequence([S, i])`; it is flown in each mode (hda: l3d_stereo; oracle: true depth
through the same hazard code; blind: no HDA) on the same terrain, sun and noise, so the modes
are compared pair by pair. Each landing is its own set of processes - the nodes of
`l3d_ros.bringup.launch_nodes(with_sim=True)`, started the way `l3d bringup` starts them, with
`use_sim_time` - in its own ROS_DOMAIN_ID, so parallel landings never hear each other.
"""
import argparse
from concurrent.futures import ThreadPoolExecutor
import json
import os
from pathlib import Path
import queue
import shlex
import subprocess
import sys
import tempfile
import time

import numpy as np
import yaml

from l3d_ros.bringup import launch_nodes, stop
from l3d_ros.config import default_config_path, NODE_NAME
from l3d_sim.config import SIM_NODE_NAME
from l3d_sim.groundtruth import SITE_KEYS
from l3d_sim.mission_config import HDA_MODES, load_mission_config, MISSION_SECTION

DOMAIN_FIRST, DOMAIN_COUNT = 102, 130     # ROS_DOMAIN_IDs 102..231 (valid on Linux)


def run_params(base: dict, run: dict, image_px: int | None = None) -> dict:
    """The parameter file of one landing: `base` with `l3d_lander.run` entries replaced,
    reliable perception inputs (a lost image would cost a scan), optionally square images."""
    params = json.loads(json.dumps(base))             # deep copy of plain YAML data
    body = params.setdefault(MISSION_SECTION, {'ros__parameters': {}})['ros__parameters']
    body.setdefault('run', {}).update(run)
    stereo = params.setdefault(NODE_NAME, {'ros__parameters': {}})['ros__parameters']
    stereo.setdefault('qos', {})['reliable'] = True
    if image_px:
        rig = params[SIM_NODE_NAME]['ros__parameters'].setdefault('rig', {})
        rig['width'] = rig['height'] = int(image_px)
    return params


def fly(params: dict, workdir: Path, domain_id: int, timeout_s: float,
        ground_station: tuple[list[str], dict] | None = None) -> dict:
    """One landing in its own processes and DDS domain; returns the simulator's result.
    `ground_station` = (command prefix, environment): start only the simulator and guidance,
    each command prefixed (e.g. `ip netns exec NS`) and in that environment; the perception
    node runs elsewhere (`l3d hil`'s flight computer)."""
    workdir.mkdir(parents=True, exist_ok=True)
    params_file = workdir / 'params.yaml'
    params_file.write_text(yaml.safe_dump(params, sort_keys=False))
    mode = params[MISSION_SECTION]['ros__parameters']['run']['mode']
    result_path = Path(params[MISSION_SECTION]['ros__parameters']['run']['result_path'])
    nodes = [n for n in launch_nodes(params_file, with_sim=True)
             if mode == 'hda' and ground_station is None or n.name != NODE_NAME]
    prefix, env = ground_station or ([], dict(os.environ,
                                              ROS_AUTOMATIC_DISCOVERY_RANGE='LOCALHOST'))
    env = dict(env, ROS_DOMAIN_ID=str(domain_id), PYTHONUNBUFFERED='1')
    procs, logs = [], []
    try:
        for n in nodes:
            extra = [] if n.name == SIM_NODE_NAME else ['-p', 'use_sim_time:=true']
            log = open(workdir / f'{n.name}.log', 'w')
            logs.append(log)
            procs.append(subprocess.Popen(
                [*prefix, sys.executable, '-m', n.module, *n.ros_args(params_file), *extra],
                env=env, stdout=log, stderr=subprocess.STDOUT))
        sim = procs[[n.name for n in nodes].index(SIM_NODE_NAME)]
        try:
            sim.wait(timeout_s)
        except subprocess.TimeoutExpired:
            pass
    finally:
        stop(procs)
        for log in logs:
            log.close()
    if not result_path.is_file():
        return {'mode': mode, 'safe': False, 'landed': False,
                'error': f'no result after {timeout_s} s; logs in {workdir}'}
    return json.loads(result_path.read_text())


def run_exclusive(jobs: list, domains: list[int], fn) -> None:
    """fn(job, domain) for every job, len(domains) at once, each holding its domain alone.

    Every landing uses the same sim-time stamps, so two landings sharing a DDS domain would
    answer each other's scans and commands: a domain goes back to the pool only when its
    landing's processes have exited.
    """
    free = queue.Queue()
    for d in domains:
        free.put(d)

    def one(j):
        domain = free.get()
        try:
            fn(j, domain)
        finally:
            free.put(domain)

    with ThreadPoolExecutor(len(domains)) as pool:
        list(pool.map(one, jobs))


def plan_runs(runs: int, seed: int, campaign) -> list[dict]:
    """The `run` entries of each landing: seed, sun (drawn per run)."""
    out = []
    for i in range(runs):
        ss = np.random.SeedSequence([seed, i])
        rng = np.random.default_rng(ss)
        out.append({
            'seed': int(ss.generate_state(1)[0] % (2 ** 31)),
            'sun_elevation_deg': float(rng.uniform(campaign.sun_elevation_min_deg,
                                                   campaign.sun_elevation_max_deg)),
            'sun_azimuth_deg': float(rng.uniform(campaign.sun_azimuth_min_deg,
                                                 campaign.sun_azimuth_max_deg)),
        })
    return out


def _stats(values: list) -> dict:
    v = np.array([x for x in values if x is not None], np.float64)
    if not len(v):
        return {'mean': None, 'median': None, 'p95': None, 'max': None}
    return {'mean': float(v.mean()), 'median': float(np.median(v)),
            'p95': float(np.percentile(v, 95)), 'max': float(v.max())}


# Scenes by the share of the ground within the divert budget that sees the sun (the result's
# `sunlit_share`): below 2 % only earthshine lights what the cameras see (neither backend
# certified a pixel of such scenes, true depth does: docs/sunlit); up to 30 % shadows cover
# most candidate sites.
SUNLIT_BINS = ((0.0, 0.02, 'dark'), (0.02, 0.3, 'partly lit'), (0.3, 1.01, 'lit'))


def by_sunlit(rows: list[dict]) -> dict:
    """{bin name: {'lo', 'hi', 'runs', 'safe_landings'}} over SUNLIT_BINS; runs without a
    `sunlit_share` (results of older code) fall in no bin."""
    out = {}
    for lo, hi, name in SUNLIT_BINS:
        sel = [r for r in rows if r.get('sunlit_share') is not None
               and lo <= r['sunlit_share'] < hi]
        out[name] = {'lo': lo, 'hi': min(hi, 1.0), 'runs': len(sel),
                     'safe_landings': sum(bool(r.get('safe')) for r in sel)}
    return out


def _count(rows: list[dict], test) -> int | None:
    """Rows passing `test`; None when no row records `certified` (blind runs, older code)."""
    if all(r.get('certified') is None for r in rows):
        return None
    return sum(bool(test(r)) for r in rows)


def false_safe_totals(rows: list[dict]) -> dict:
    """The touchdown discs' safe-graded cells summed over the rows recording them: judged,
    truly hazard and grossly so, and the shares; None: none recorded."""
    rec = [r for r in rows if all(r.get(k) is not None for k in SITE_KEYS)]
    if not rec:
        return dict.fromkeys((*SITE_KEYS, 'site_false_safe_share',
                              'site_gross_false_safe_share'))
    judged, wrong, gross = (sum(r[k] for r in rec) for k in SITE_KEYS)
    return {'site_safe_cells': judged, 'site_false_safe_cells': wrong,
            'site_gross_false_safe_cells': gross,
            'site_false_safe_share': wrong / judged if judged else None,
            'site_gross_false_safe_share': gross / judged if judged else None}


def summarize(results: dict[str, list[dict]], meta: dict) -> dict:
    """Campaign JSON: the section 6 keys first, then per-mode statistics and per-run rows."""
    per_mode = {}
    for mode, rows in results.items():
        n = len(rows)
        per_mode[mode] = {
            'runs': n, 'safe_landings': sum(bool(r.get('safe')) for r in rows),
            'safe_rate': sum(bool(r.get('safe')) for r in rows) / n if n else None,
            'landed': sum(bool(r.get('landed')) for r in rows),
            'ground_safe': sum(bool(r.get('ground_safe')) for r in rows),
            'speed_ok': sum(bool(r.get('speed_ok')) for r in rows),
            # landings on a target the HDA certified, and how many of those were safe (the
            # failure a lander must not have is an unsafe one among them); None: not recorded
            'certified': _count(rows, lambda r: r.get('certified')),
            'certified_safe': _count(rows, lambda r: r.get('certified') and r.get('safe')),
            'errors': [r['error'] for r in rows if r.get('error')],
            'divert_m': _stats([r.get('divert_m') for r in rows]),
            'fuel_kg': _stats([r.get('fuel_kg') for r in rows]),
            'touchdown_vertical_speed_m_s': _stats([r.get('vertical_speed_m_s') for r in rows]),
            'perception_latency_s': _stats([f.get('latency_s') for r in rows
                                            for f in r.get('frames', [])]),
            # how the last maps judged the touchdown discs of the final targets: cells graded
            # safe that the ground truth judges, those truly hazard and grossly so
            # (l3d_sim.groundtruth.false_safe_cells); None: not recorded (older results)
            **false_safe_totals(rows),
            'frame_timeouts': sum(r.get('frame_timeouts', 0) for r in rows),
            'step_timeouts': sum(r.get('step_timeouts', 0) for r in rows),
            'by_sunlit': by_sunlit(rows),
        }
    # the headline figures are the HDA loop's; None when it was not flown (--modes oracle)
    headline = ('safe_landings', 'safe_rate', 'divert_m', 'fuel_kg', 'perception_latency_s')
    main = per_mode.get('hda') or dict.fromkeys(headline)
    anyrows = next(iter(results.values()))
    return {
        'runs': len(anyrows), 'safe_landings': main['safe_landings'],
        'safe_rate': main['safe_rate'],
        'oracle_safe_rate': per_mode.get('oracle', {}).get('safe_rate'),
        'blind_safe_rate': per_mode.get('blind', {}).get('safe_rate'),
        'nominal_safe_rate': float(np.mean([bool(r.get('nominal_safe')) for r in anyrows])),
        'divert_m': main['divert_m'], 'fuel_kg': main['fuel_kg'],
        'perception_latency_s': main['perception_latency_s'],
        **meta, 'modes': per_mode,
        'per_run': {mode: [{k: r.get(k) for k in ('run_index', 'seed', 'safe', 'landed',
                                                  'ground_safe', 'speed_ok', 'nominal_safe',
                                                  'divert_m', 'fuel_kg', 'vertical_speed_m_s',
                                                  'touchdown_xy_m', 'sunlit_share',
                                                  'certified', *SITE_KEYS, 'error')}
                           for r in rows] for mode, rows in results.items()},
    }


def campaign(runs: int, seed: int, out: Path, modes=HDA_MODES, workers: int = 1,
             config: Path | None = None, image_px: int | None = None,
             target_hazard: str = 'none', progress=print,
             only: list[int] | None = None) -> tuple[dict, dict]:
    """Fly runs x modes landings; returns (summary, {mode: [result, ...]}). Results and
    per-landing logs go to OUT/<mode>/run_<i>/. only: fly just these run indices of the
    campaign (each with the terrain, sun and noise it has in the full campaign), in place of
    0..runs-1."""
    config = Path(config or default_config_path()).resolve()
    base = yaml.safe_load(config.read_text())
    mission = load_mission_config(config)
    indices = sorted(set(only)) if only else list(range(runs))
    plan = plan_runs(indices[-1] + 1, seed, mission.campaign)
    jobs = [(mode, i) for i in indices for mode in modes]
    domain0 = DOMAIN_FIRST + (os.getpid() * 7) % DOMAIN_COUNT
    domains = [DOMAIN_FIRST + (domain0 - DOMAIN_FIRST + k) % DOMAIN_COUNT
               for k in range(max(1, workers))]
    results = {mode: {} for mode in modes}
    t0 = time.monotonic()

    def job(mode_i, domain):
        mode, i = mode_i
        workdir = out / mode / f'run_{i:04d}'
        run = dict(plan[i], mode=mode, target_hazard=target_hazard,
                   result_path=str((workdir / 'result.json').resolve()))
        r = fly(run_params(base, run, image_px), workdir, domain,
                mission.campaign.run_timeout_s)
        r['run_index'] = i
        results[mode][i] = r
        progress(f'l3d land: {mode} run {i}: safe={r.get("safe")} landed={r.get("landed")} '
                 f'divert={r.get("divert_m", float("nan")):.1f} m '
                 f'({time.monotonic() - t0:.0f} s){" " + r["error"] if r.get("error") else ""}')

    run_exclusive(jobs, domains, job)
    results = {mode: [rows[i] for i in indices] for mode, rows in results.items()}
    meta = {'seed': seed, 'run_indices': indices if only else None,
            'modes_flown': list(modes), 'image_px': image_px,
            'target_hazard': target_hazard, 'config': str(config), 'workers': workers,
            'wall_s': time.monotonic() - t0,
            'backend': base.get(NODE_NAME, {}).get('ros__parameters', {}).get('backend', 'sgbm'),
            'command': 'l3d land ' + ' '.join(shlex.quote(a) for a in sys.argv[2:])
            if len(sys.argv) > 1 and sys.argv[1] == 'land' else None}
    return summarize(results, meta), results


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument('--runs', type=int, default=10, help='landings per mode')
    parser.add_argument('--seed', type=int, default=0, help='campaign seed')
    parser.add_argument('--json', type=Path, required=True, help='summary JSON to write')
    parser.add_argument('--workers', type=int, default=1,
                        help='landings flown at once (each uses ~1-2 cores in hda mode)')
    parser.add_argument('--report', type=Path, default=None,
                        help='folder for the markdown/HTML report and PNG plots')
    parser.add_argument('--out', type=Path, default=None,
                        help='per-landing results and logs (default: beside --json)')
    parser.add_argument('--modes', default=','.join(HDA_MODES),
                        help=f'comma-separated subset of {",".join(HDA_MODES)}')
    parser.add_argument('--image-size', type=int, default=None,
                        help='square image size [px] instead of the rig config (faster)')
    parser.add_argument('--target-hazard', default='none', choices=('none', 'boulder', 'crater'),
                        help='plant a hazard at the nominal target of every run')
    parser.add_argument('--config', type=Path, default=None,
                        help='ROS 2 parameter file (default: config/lunar_stereo.yaml)')
    parser.add_argument('--only', type=_run_indices, default=None, metavar='I[,J...]',
                        help='fly only these run indices of the campaign (e.g. its failures, '
                        'with the same terrain, sun and noise); --runs is then not used')


def _run_indices(text: str) -> list[int]:
    try:
        indices = [int(v) for v in text.split(',') if v.strip()]
    except ValueError:
        indices = []
    if not indices or min(indices) < 0:
        raise argparse.ArgumentTypeError(
            f'{text!r}: expected comma-separated run indices >= 0, e.g. 81,116')
    return indices


def run(args) -> int:
    modes = tuple(m for m in args.modes.split(',') if m)
    if bad := [m for m in modes if m not in HDA_MODES]:
        raise ValueError(f'--modes={args.modes!r}: unknown {bad}; expected of {HDA_MODES}')
    if args.runs < 1 and not args.only:
        raise ValueError(f'--runs={args.runs!r}: expected >= 1')
    out = args.out or args.json.with_suffix('')
    if out == args.json:
        out = Path(tempfile.mkdtemp(prefix='l3d_land_'))
    summary, results = campaign(args.runs, args.seed, out, modes, args.workers, args.config,
                                args.image_size, args.target_hazard, only=args.only)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(summary, indent=1) + '\n')
    print(f'l3d land: safe_rate {summary["safe_rate"]}, oracle {summary["oracle_safe_rate"]}, '
          f'blind {summary["blind_safe_rate"]} over {summary["runs"]} runs -> {args.json}')
    if args.report:
        from l3d_sim.report import write_report
        path = write_report(args.report, summary, results, out)
        print(f'l3d land: report {path}')
    return 0

"""`l3d hil`: the perception node as a separate flight computer behind an impaired link.

Topology (netns mode, when `ip netns add` works as root):

    [ns l3d_gnd_T]  ground side (domain G, lo) -- relay ==veth 10.213.X.1/.2==
    [ns l3d_fc_T]   l3d_stereo (domain F, one CPU core, optional CPU quota)

Both namespaces hold only loopback and their veth end, so the test subnet exists nowhere else
and no packet reaches another host. DDS runs over UDPv4 only (shared memory would bypass the
veth) with ROS_AUTOMATIC_DISCOVERY_RANGE=SUBNET and the peer's address in ROS_STATIC_PEERS.
Link impairment, each direction: `tc qdisc netem` on both veth ends when the kernel has it
(latency phase only: the ground station then talks to the node directly); otherwise a relay
process between two DDS domains (l3d_sim.hil_link). Without netns the node is a separate
process on the same host (LOCALHOST discovery) behind the same relay. `--board-domain N`
starts no node and no namespace: the ground side and relay talk to a real board on DDS
domain N with the environment's discovery settings.

Two phases per link condition:
- latency (`--duration` s, 0 skips it): a ground station publishes synthetic stereo pairs
  stamped with its wall clock and measures, per pair, stamp -> arrival of the node's `depth`
  at the ground: end-to-end latency on one clock, so no clock synchronisation with a board is
  needed; plus the node's processing latency, skipped pairs (newest pair wins) and input drops
  from its /diagnostics.
- landings (`--landings N`): N closed-loop landings (l3d_sim.campaign.fly with the simulator
  and guidance on the ground side, `use_sim_time`) while l3d_stereo - a fresh process per
  landing, pinned and throttled - runs on the flight computer. The relay carries the node's
  inputs (images, camera_info, camera_pose, latched landing_target, /clock) up and hazard_map
  (latched), safe_site and /diagnostics down; every topic is reliable, so a lost message is
  repaired by a resend one round trip later instead of vanishing. The same runs (terrain, sun,
  noise: l3d_sim.campaign.plan_runs) are flown under every condition. Reported: safe landings,
  touchdown error (touchdown to the final target), divert, perception latency (image publish
  -> hazard_map at the ground, the simulator's clock), scans unanswered and skipped.
"""
from dataclasses import asdict, dataclass
import json
import logging
import os
from pathlib import Path
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from typing import Optional

import numpy as np
import yaml

from l3d_ros.bringup import stop
from l3d_ros.config import default_config_path
from l3d_sim.campaign import fly, plan_runs, run_params
from l3d_sim.hil_link import (child_command, GroundPlan, isolation_mode, Link, LinkCondition,
                              netns_permitted, Placement, RelaySpec)
from l3d_sim.mission_config import load_mission_config

__all__ = ['HilConfig', 'LinkCondition', 'netns_permitted', 'run_hil']
log = logging.getLogger(__name__)
READY_TIMEOUT_S = 60.0      # flight node discovered by the relay, wall time
DIAG_LINGER_S = 1.2         # > the node's 1 s /diagnostics period: a final snapshot


@dataclass(frozen=True)
class HilConfig:
    params_file: Path
    conditions: tuple[LinkCondition, ...]
    duration_s: float = 5.0               # latency phase per condition; 0 skips it
    rate_hz: float = 5.0
    width: int = 320
    height: int = 240
    cpu_core: Optional[int] = None        # None: the last core this process may use
    cpu_quota: float = 1.0                # fraction of that core (cgroup cpu quota)
    board_domain: Optional[int] = None    # a real board on this DDS domain: start no node
    isolate: str = 'auto'                 # auto | netns | process
    seed: int = 0
    landings: int = 0                     # closed-loop landings per condition
    image_px: Optional[int] = 256         # square landing images; None: the rig's
    target_hazard: str = 'boulder'        # planted at the nominal target of every landing
    landing_timeout_s: float = 300.0      # wall time of one landing


def _dist(values) -> dict:
    """min/median/p95/p99/max/mean of `values` (rounded), {} when empty."""
    v = np.asarray([x for x in values if x is not None], float)
    return ({k: round(float(f(v)), 2) for k, f in (
        ('min', np.min), ('median', np.median), ('p95', lambda a: np.percentile(a, 95)),
        ('p99', lambda a: np.percentile(a, 99)), ('max', np.max), ('mean', np.mean))}
        if v.size else {})


def _summary(latency_ms: list[float], sent: int) -> dict:
    return {'sent': sent, 'received': len(latency_ms),
            'lost_fraction': round(1.0 - len(latency_ms) / sent, 4) if sent else None,
            'latency_ms': _dist(latency_ms)}


def _latency_phase(cfg: HilConfig, h: Placement, tmp: Path) -> tuple[list[dict], bool]:
    """The ground station's pairs under every condition; (rows, impaired by netem)."""
    link = h.link
    netem = link is not None and link.netem
    procs, cpu, rows = [], None, []
    try:
        if h.mode != 'board':
            node, cpu = h.start_node(cfg.params_file)
            procs.append(node)
        for k, cond in enumerate(cfg.conditions):
            relay = None
            if netem:
                link.impair(cond)
            else:
                relay = h.start_relay(RelaySpec(h.ground_domain, h.flight_domain, asdict(cond),
                                                cfg.seed + k))
            plan = GroundPlan(h.flight_domain if netem else h.ground_domain, cfg.duration_s,
                              cfg.rate_hz, cfg.width, cfg.height, cfg.seed,
                              str(tmp / f'ground_{k}.json'),
                              linger_s=1.5 + 4 * (cond.delay_ms + 3 * cond.jitter_ms) * 1e-3)
            prefix, env = h.ground(h.flight_domain)
            ground = subprocess.Popen([*prefix, *child_command('ground', plan)], env=env)
            try:
                code = ground.wait(timeout=plan.duration_s + plan.discovery_timeout_s
                                   + plan.linger_s + 20)
            finally:
                stop([p for p in (ground, relay) if p is not None])
            if code != 0:
                raise RuntimeError(f'ground station for condition {cond.name!r} exited with '
                                   f'{code}; is the flight node reachable on domain '
                                   f'{h.flight_domain}?')
            raw = json.loads(Path(plan.result_path).read_text())
            rows.append({**_summary(raw['latency_ms'], raw['sent']),
                         'node_latency_ms_median': raw['node_latency_ms_median'],
                         'node_frames_replaced': raw['node_frames_replaced'],
                         'node_inputs_dropped': raw['node_inputs_dropped']})
            if procs and procs[0].poll() is not None:
                raise RuntimeError(f'flight node exited with {procs[0].returncode}')
    finally:
        stop(procs)
        if cpu is not None:
            cpu.close()
    return rows, netem


def fly_hil(h: Placement, params: dict, workdir: Path, cond: LinkCondition, seed: int,
            timeout_s: float = 300.0) -> dict:
    """One closed-loop landing with l3d_stereo on the flight computer behind `cond`."""
    workdir.mkdir(parents=True, exist_ok=True)
    params_file = workdir / 'params.yaml'
    params_file.write_text(yaml.safe_dump(params, sort_keys=False))
    spec = RelaySpec(h.ground_domain, h.flight_domain, asdict(cond), seed, 'landing', True,
                     str(workdir / 'relay.ready'), str(workdir / 'relay.json'))
    procs, cpu, logs, result = [], None, [], None
    try:
        logs = [open(workdir / f'{name}.log', 'w') for name in ('l3d_stereo_fc', 'relay')]
        if h.mode != 'board':
            node, cpu = h.start_node(params_file, ['-p', 'use_sim_time:=true'], logs[0])
            procs.append(node)
        procs.insert(0, h.start_relay(spec, logs[1]))     # stopped first: its stats
        deadline = time.monotonic() + READY_TIMEOUT_S
        while not Path(spec.ready_path).exists():
            if time.monotonic() > deadline or any(p.poll() is not None for p in procs):
                result = {'safe': False, 'landed': False, 'error': 'flight node not reached '
                          f'on domain {h.flight_domain} within {READY_TIMEOUT_S} s'}
                break
            time.sleep(0.1)
        if result is None:
            result = fly(params, workdir, h.ground_domain, timeout_s,
                         ground_station=h.ground(h.ground_domain))
            time.sleep(DIAG_LINGER_S)
    finally:
        stop(procs)
        if cpu is not None:
            cpu.close()
        for f in logs:
            f.close()
    stats_path = Path(spec.stats_path)
    link = json.loads(stats_path.read_text()) if stats_path.is_file() else {}
    diag = link.pop('node_diagnostics', {})
    frames = result.get('frames', [])
    touchdown, target = result.get('touchdown_xy_m'), result.get('final_target_xy_m')
    return {
        'seed': result.get('seed'), 'safe': bool(result.get('safe')),
        'landed': bool(result.get('landed')), 'ground_safe': result.get('ground_safe'),
        'speed_ok': result.get('speed_ok'), 'nominal_safe': result.get('nominal_safe'),
        'divert_m': result.get('divert_m'), 'touchdown_xy_m': touchdown,
        'final_target_xy_m': target,
        'touchdown_error_m': (float(np.hypot(*np.subtract(touchdown, target)))
                              if touchdown and target else None),
        'scans': len(frames),
        'scans_answered': sum(f.get('latency_s') is not None for f in frames),
        'latency_ms': [round(f['latency_s'] * 1e3, 2) for f in frames
                       if f.get('latency_s') is not None],
        'frame_timeouts': result.get('frame_timeouts'),
        'step_timeouts': result.get('step_timeouts'),
        'node_frames_replaced': _num(diag.get('drops_replaced')),
        'node_latency_ms_median': _num(diag.get('latency_ms_median')),
        'link': link, 'error': result.get('error'),
    }


def _num(text) -> Optional[float]:
    try:
        return float(text)
    except (TypeError, ValueError):
        return None


def _landing_summary(rows: list[dict]) -> dict:
    n = len(rows)
    safe = sum(r['safe'] for r in rows)

    def total(key):
        return sum(r[key] or 0 for r in rows)
    link = {d: {k: sum(r['link'].get(d, {}).get(k, 0) for r in rows)
                for k in ('forwarded', 'dropped', 'repaired')} for d in ('up', 'down')}
    return {'landings': n, 'safe_landings': safe, 'safe_rate': safe / n if n else None,
            'landed': sum(r['landed'] for r in rows),
            'touchdown_error_m': _dist(r['touchdown_error_m'] for r in rows),
            'divert_m': _dist(r['divert_m'] for r in rows),
            'perception_latency_ms': _dist(x for r in rows for x in r['latency_ms']),
            'scans': total('scans'), 'scans_answered': total('scans_answered'),
            'frame_timeouts': total('frame_timeouts'), 'step_timeouts': total('step_timeouts'),
            'node_frames_replaced': total('node_frames_replaced'), 'link': link,
            'errors': [r['error'] for r in rows if r['error']], 'runs': rows}


def _landing_phase(cfg: HilConfig, h: Placement, out_dir: Path) -> list[dict]:
    base = yaml.safe_load(cfg.params_file.read_text())
    plan = plan_runs(cfg.landings, cfg.seed, load_mission_config(cfg.params_file).campaign)
    summaries = []
    for k, cond in enumerate(cfg.conditions):
        rows = []
        for i, run in enumerate(plan):
            workdir = (out_dir / 'landings' / cond.name / f'run_{i:03d}').resolve()
            run = dict(run, mode='hda', target_hazard=cfg.target_hazard,
                       result_path=str(workdir / 'result.json'))
            rows.append(fly_hil(h, run_params(base, run, cfg.image_px), workdir, cond,
                                cfg.seed + 1000 * k + i, cfg.landing_timeout_s))
            r = rows[-1]
            log.info('%s landing %d: safe=%s landed=%s divert=%s m scans %d/%d%s', cond.name,
                     i, r['safe'], r['landed'], r['divert_m'], r['scans_answered'],
                     r['scans'], f" ({r['error']})" if r['error'] else '')
        summaries.append(_landing_summary(rows))
    return summaries


def run_hil(cfg: HilConfig, out_dir: Path) -> dict:
    """Run every condition; writes out_dir/hil.json and hil.md and returns the JSON dict."""
    out_dir.mkdir(parents=True, exist_ok=True)
    mode, tag = isolation_mode(cfg.board_domain, cfg.isolate), str(os.getpid() % 100000)
    link, netem = None, False
    latency, landings = [{}] * len(cfg.conditions), [None] * len(cfg.conditions)
    tmp = Path(tempfile.mkdtemp(prefix='l3d_hil_'))
    try:
        if mode == 'netns':
            link = Link(tag)
        h = Placement(mode, link, cfg.board_domain, cfg.cpu_core, cfg.cpu_quota)
        if cfg.duration_s > 0:
            latency, netem = _latency_phase(cfg, h, tmp)
        if link is not None and netem:
            link.impair(LinkCondition('clean'))        # landings: the relay impairs
        if cfg.landings > 0:
            landings = _landing_phase(cfg, h, out_dir)
    finally:
        if link is not None:
            link.close()
        shutil.rmtree(tmp, ignore_errors=True)
    result = {'mode': mode, 'impairment': 'netem' if netem else 'relay',
              'flight_domain': h.flight_domain, 'cpu_core': None if mode == 'board' else h.core,
              'cpu_quota': cfg.cpu_quota, 'cpu_limit': ', '.join(sorted(h.cpu_methods)) or None,
              'rate_hz': cfg.rate_hz, 'duration_s': cfg.duration_s,
              'image': [cfg.width, cfg.height], 'landings_per_condition': cfg.landings,
              'landing_image_px': cfg.image_px, 'target_hazard': cfg.target_hazard,
              'conditions': [{**asdict(c), **lat, 'landings': land} for c, lat, land in
                             zip(cfg.conditions, latency, landings)]}
    (out_dir / 'hil.json').write_text(json.dumps(result, indent=2))
    (out_dir / 'hil.md').write_text(_markdown(result))
    return result


def _fmt(stats: dict, key: str) -> str:
    return f'{stats[key]:.1f}' if stats else '-'


def _markdown(result: dict) -> str:
    where = {'netns': 'own network namespace behind a veth pair', 'process':
             'separate process on this host', 'board': f"board on DDS domain "
             f"{result['flight_domain']}"}[result['mode']]
    text = (f"# l3d hil\n\nFlight node: {where}; CPU core {result['cpu_core']}, quota "
            f"{result['cpu_quota']:g} ({result['cpu_limit']}); link impairment by "
            f"{result['impairment']} (each direction).\n")
    conds = result['conditions']
    if result['duration_s'] > 0:
        rows = ['| condition | delay ms | jitter ms | loss | sent | answered | median ms '
                '| p95 ms | p99 ms | max ms | node ms | node skipped |', '|' + '---|' * 12]
        for c in conds:
            lat = c['latency_ms']
            rows.append(f"| {c['name']} | {c['delay_ms']:g} | {c['jitter_ms']:g} | "
                        f"{c['loss']:g} | {c['sent']} | {c['received']} | "
                        f"{' | '.join(_fmt(lat, k) for k in ('median', 'p95', 'p99', 'max'))} "
                        f"| {c['node_latency_ms_median']} | {c['node_frames_replaced']} |")
        text += (f"\n## Latency\n\n{result['image'][0]}x{result['image'][1]} synthetic pairs "
                 f"at {result['rate_hz']:g} Hz for {result['duration_s']:g} s per condition. "
                 "Latency: left-image stamp -> `depth` at the ground station, one clock.\n\n"
                 + '\n'.join(rows) + '\n')
    if result['landings_per_condition'] > 0:
        rows = ['| condition | safe / landings | touchdown err m (max) | divert m (median) '
                '| latency median ms | p95 ms | max ms | scans answered | node skipped '
                '| resent up/down |', '|' + '---|' * 10]
        for c in conds:
            s = c['landings']
            lat = s['perception_latency_ms']
            rows.append(f"| {c['name']} | {s['safe_landings']} / {s['landings']} | "
                        f"{_fmt(s['touchdown_error_m'], 'max')} | "
                        f"{_fmt(s['divert_m'], 'median')} | {_fmt(lat, 'median')} | "
                        f"{_fmt(lat, 'p95')} | {_fmt(lat, 'max')} | {s['scans_answered']} / "
                        f"{s['scans']} | {s['node_frames_replaced']:g} | "
                        f"{s['link']['up']['repaired']}/{s['link']['down']['repaired']} |")
        text += (f"\n## Closed-loop landings\n\n{result['landings_per_condition']} landings "
                 f"per condition (the same runs under each), {result['landing_image_px']} px "
                 f"images, `{result['target_hazard']}` at the nominal target. Latency: image "
                 "publish -> hazard_map at the simulator.\n\n" + '\n'.join(rows) + '\n')
    return text


def add_arguments(parser) -> None:
    parser.add_argument('--config', type=Path, default=None,
                        help='ROS 2 parameter file (default: config/lunar_stereo.yaml)')
    parser.add_argument('--condition', action='append', type=LinkCondition.parse,
                        help='NAME:DELAY_MS[:JITTER_MS[:LOSS]] one way, each direction; '
                        'repeatable (default: clean:0, delay50:50, lossy:20:5:0.02)')
    parser.add_argument('--duration', type=float, default=10.0,
                        help='seconds of latency frames per condition (0: none)')
    parser.add_argument('--rate', type=float, default=5.0, help='stereo pairs per second')
    parser.add_argument('--width', type=int, default=320, help='latency image width [px]')
    parser.add_argument('--height', type=int, default=240, help='latency image height [px]')
    parser.add_argument('--landings', type=int, default=2,
                        help='closed-loop landings per condition (0: latency only)')
    parser.add_argument('--image-size', type=int, default=256,
                        help='square landing image size [px] (0: the rig config)')
    parser.add_argument('--target-hazard', default='boulder',
                        choices=('none', 'boulder', 'crater'),
                        help='hazard planted at the nominal target of every landing')
    parser.add_argument('--cpu-core', type=int, default=None,
                        help='core the node is pinned to (default: the last one allowed)')
    parser.add_argument('--cpu-quota', type=float, default=1.0,
                        help='fraction of that core the node may use, (0, 1] (default 1)')
    parser.add_argument('--board-domain', type=int, default=None,
                        help='a real board runs the node on this DDS domain: start none')
    parser.add_argument('--isolate', choices=('auto', 'netns', 'process'), default='auto',
                        help='netns: own network namespace (root), process: same host')
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--out', type=Path, default=Path('out/hil'), help='report folder')


def run(args) -> int:
    if not 0.0 < args.cpu_quota <= 1.0:
        raise ValueError(f'--cpu-quota={args.cpu_quota!r}: expected a fraction in (0, 1]')
    if not (args.duration >= 0 and args.rate > 0):
        raise ValueError(f'--duration={args.duration!r}, --rate={args.rate!r}: expected '
                         'duration >= 0 and rate > 0')
    if args.landings < 0 or args.image_size < 0:
        raise ValueError(f'--landings={args.landings!r}, --image-size={args.image_size!r}: '
                         'expected >= 0')
    if args.duration == 0 and args.landings == 0:
        raise ValueError('--duration=0 and --landings=0: expected something to run')
    conditions = tuple(args.condition or (LinkCondition('clean'), LinkCondition('delay50', 50),
                                          LinkCondition('lossy', 20, 5, 0.02)))
    cfg = HilConfig((args.config or default_config_path()).resolve(), conditions,
                    args.duration, args.rate, args.width, args.height, args.cpu_core,
                    args.cpu_quota, args.board_domain, args.isolate, args.seed, args.landings,
                    args.image_size or None, args.target_hazard)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))    # finally blocks clean up
    logging.basicConfig(level=logging.INFO, format='l3d hil: %(message)s')
    result = run_hil(cfg, args.out)
    print((args.out / 'hil.md').read_text())
    print(f"l3d hil: {args.out / 'hil.json'} ({result['mode']}, {result['impairment']})")
    return 0

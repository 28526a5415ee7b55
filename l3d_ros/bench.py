"""`l3d bench`: per-stage latency, throughput and memory of each backend, SGBM as the yardstick.

Every backend runs the same frames in the same process; the SGBM pipeline is measured in the
same run and every ratio is against it. Stages: decode (Image msgs -> arrays), normalise,
inference, geometry, hazard, encode (arrays -> output msgs, serialised as DDS would), and the
end-to-end span of the node's worker for one frame.
"""
import json
import os
from pathlib import Path
import platform
import time

import numpy as np
from rclpy.serialization import serialize_message
from std_msgs.msg import Header

from l3d_ros import msg as conv
from l3d_ros.config import load_node_config, replace
from l3d_ros.dataset import list_pairs, read_pair
from l3d_ros.node import output_messages
from l3d_ros.pipeline import StereoPipeline

STAGES = ('decode', 'normalise', 'inference', 'geometry', 'hazard', 'encode')
# parts of the hazard stage (pipeline timings hazard_<part>); map_site: hazard map + safe site
# of one frame, the yardstick of issue #5 (<= 20 ms median on 2 cores)
HAZARD_PARTS = ('points', 'fusion', 'map', 'lookup', 'site', 'map_site')


def rss_mb() -> float:
    """Resident set size of this process [MiB] (Linux /proc)."""
    for line in Path('/proc/self/status').read_text().splitlines():
        if line.startswith('VmRSS:'):
            return int(line.split()[1]) / 1024.0
    return float('nan')


def load_frames(dataset: Path | None, n: int, seed: int, config: Path | None = None):
    """[(left, right, calib, pose)] from a pair-folder dataset, or rendered by the simulator."""
    if dataset is not None:
        pairs = [read_pair(p) for p in list_pairs(dataset)[:n]]
        return [(p.left, p.right, p.calib,
                 None if p.R_world_cam is None else (p.R_world_cam, p.t_world_cam))
                for p in pairs]
    from l3d_sim.config import load_sim_config      # the simulator only when no dataset
    from l3d_sim.dataset import render_pair
    sim, hazard = load_sim_config(config), load_node_config(config).hazard
    frames = [render_pair(sim, hazard, seed, i)[0] for i in range(n)]
    return [(f.left, f.right, f.calib, (f.R_world_cam, f.t_world_cam)) for f in frames]


def frame_messages(frames):
    """The input messages of each frame, built once (decode is timed, not construction)."""
    out = []
    for left, right, calib, pose in frames:
        enc = 'mono8' if left.dtype == np.uint8 else 'mono16'
        info_l, info_r = conv.calib_to_camera_infos(calib)
        out.append((conv.array_to_image(left, enc), conv.array_to_image(right, enc),
                    info_l, info_r, pose))
    return out


def run_backend(cfg, messages, repeat: int) -> dict:
    """Time every stage of the node's per-frame work for one backend configuration."""
    pipeline = StereoPipeline(cfg)
    if pipeline.init_fault:
        return {'error': pipeline.init_fault}
    header = Header(frame_id='l3d_left_optical')
    stage_ms = {s: [] for s in STAGES}
    total_ms, used = [], set()
    rss_before = rss_mb()
    for i in range(repeat * len(messages) + 1):           # the first frame is a warm-up
        img_l, img_r, info_l, info_r, pose = messages[i % len(messages)]
        # the frames are unrelated scenes (a terrain each, all around the map origin): fusing
        # them into one descent map would average different terrains, so each starts afresh
        pipeline.reset_map()
        t0 = time.perf_counter()
        calib = conv.camera_infos_to_calib(info_l, info_r)
        left, right = conv.image_to_array(img_l), conv.image_to_array(img_r)
        t1 = time.perf_counter()
        out = pipeline.process(left, right, calib, pose)
        t2 = time.perf_counter()
        for m in output_messages(header, calib, out, cfg).values():
            serialize_message(m)
        t3 = time.perf_counter()
        if i == 0:
            continue
        used.add(out.backend)
        stage_ms['decode'].append(1e3 * (t1 - t0))
        stage_ms['encode'].append(1e3 * (t3 - t2))
        for k, v in out.timings_ms.items():
            stage_ms.setdefault(k, []).append(v)
        stage_ms.setdefault('hazard_map_site', []).append(
            out.timings_ms.get('hazard_map', np.nan) + out.timings_ms.get('hazard_site', np.nan))
        total_ms.append(1e3 * (t3 - t0))
    total = np.array(total_ms)
    return {
        'backend_used': sorted(used),
        'model_sha256': pipeline.model_sha256,
        'frames': len(total_ms),
        'stage_ms_median': {k: float(np.median(v)) for k, v in stage_ms.items() if v},
        'hazard_map_site_ms_max': float(np.max(stage_ms['hazard_map_site'])),
        'end_to_end_ms_median': float(np.median(total)),
        'end_to_end_ms_p95': float(np.percentile(total, 95)),
        'end_to_end_ms_p99': float(np.percentile(total, 99)),
        'throughput_hz': float(1e3 / np.mean(total)),
        'rss_mb_before': rss_before, 'rss_mb_after': rss_mb(),
    }


def model_figures(cfg) -> dict:
    """Parameter and FLOP counts of the configured student against its teacher (manifest)."""
    from l3d_ros.config import package_root
    path = Path(cfg.student.model)
    path = path if path.is_absolute() else package_root() / path
    if not path.is_file():
        return {}
    manifest = json.loads(path.read_text())
    keep = ('file', 'params', 'flops_per_pair', 'teacher', 'teacher_params', 'input_size')
    return {m.get('name', m.get('file')): {k: m[k] for k in keep if k in m}
            for m in manifest.get('models', [])}


def markdown(report: dict) -> str:
    rows = ['| backend | used | e2e median ms | p95 | p99 | Hz | vs SGBM | ' +
            ' | '.join(f'{s} ms' for s in STAGES) + ' | RSS MiB |',
            '|' + '---|' * (8 + len(STAGES))]
    for name, r in report['backends'].items():
        if 'error' in r:
            rows.append(f'| {name} | error: {r["error"]} |' + ' |' * (6 + len(STAGES)))
            continue
        st = r['stage_ms_median']
        rows.append(f'| {name} | {",".join(r["backend_used"])} | {r["end_to_end_ms_median"]:.1f}'
                    f' | {r["end_to_end_ms_p95"]:.1f} | {r["end_to_end_ms_p99"]:.1f} | '
                    f'{r["throughput_hz"]:.2f} | {r["ratio_to_sgbm"]:.2f}x | ' +
                    ' | '.join(f'{st.get(s, float("nan")):.1f}' for s in STAGES) +
                    f' | {r["rss_mb_after"]:.0f} |')
    parts = ['| backend | ' + ' | '.join(f'{p} ms' for p in HAZARD_PARTS[:-1])
             + ' | map + site ms (median, max) |', '|' + '---|' * (len(HAZARD_PARTS) + 1)]
    for name, r in report['backends'].items():
        if 'error' not in r:
            st = r['stage_ms_median']
            parts.append(f'| {name} | ' + ' | '.join(
                f'{st.get("hazard_" + p, float("nan")):.1f}' for p in HAZARD_PARTS[:-1])
                + f' | {st["hazard_map_site"]:.1f}, {r["hazard_map_site_ms_max"]:.1f} |')
    m = report['machine']
    return (f'# l3d bench\n\n{report["frames"]} frames of {report["image_size"]} px, '
            f'{report["repeat"]} repeats, on {m["cpus"]} CPU(s), {m["machine"]}, '
            f'{m["processor"] or "cpu"}.\nRatios: end-to-end median over the SGBM pipeline '
            f'measured in the same run (< 1 is faster).\n\n' + '\n'.join(rows) + '\n\n'
            '## Hazard stage\n\nPoints to `map`, DEM fusion, hazard map (slope, roughness, '
            'labels), per-pixel lookup and safe site, medians per frame; map + site is the '
            'per-frame sum.\n\n' + '\n'.join(parts) + '\n')


def add_arguments(parser) -> None:
    parser.add_argument('--dataset', type=Path, default=None,
                        help='pair folders to run (default: render frames with the simulator)')
    parser.add_argument('--frames', type=int, default=4, help='distinct frames (default 4)')
    parser.add_argument('--repeat', type=int, default=5, help='passes over the frames')
    parser.add_argument('--backends', default='sgbm,student', help='comma-separated')
    parser.add_argument('--seed', type=int, default=1000, help='simulator seed for the frames')
    parser.add_argument('--config', type=Path, default=None, help='ROS 2 parameter file')
    parser.add_argument('--out', type=Path, default=Path('out/bench'),
                        help='folder for bench.json and bench.md')


def run(args) -> int:
    if args.frames < 1 or args.repeat < 1:
        raise ValueError(f'--frames={args.frames}, --repeat={args.repeat}: expected >= 1')
    base = load_node_config(args.config)
    frames = load_frames(args.dataset, args.frames, args.seed, args.config)
    messages = frame_messages(frames)
    names = [b for b in args.backends.split(',') if b]
    if 'sgbm' not in names:
        names.insert(0, 'sgbm')                         # the yardstick is always measured
    results = {name: run_backend(replace(base, backend=name), messages, args.repeat)
               for name in names}
    ref = results['sgbm']['end_to_end_ms_median']
    for r in results.values():
        if 'error' not in r:
            r['ratio_to_sgbm'] = r['end_to_end_ms_median'] / ref
    report = {'frames': len(frames), 'repeat': args.repeat,
              'image_size': f'{frames[0][2].width}x{frames[0][2].height}',
              'machine': {'cpus': os.cpu_count(), 'machine': platform.machine(),
                          'processor': platform.processor(), 'python': platform.python_version()},
              'backends': results, 'models': model_figures(base)}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / 'bench.json').write_text(json.dumps(report, indent=2) + '\n')
    (args.out / 'bench.md').write_text(markdown(report))
    print(markdown(report))
    print(f'wrote {args.out / "bench.json"} and {args.out / "bench.md"}')
    return 0

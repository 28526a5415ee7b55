"""Student and SGBM on cameras other than the simulator's rig: `l3d eval`'s figures per camera.

Usage: python scripts/camera_sweep.py WORK [--pairs 8] [--seed 6100] [--only NAME,...]
                                      [--json F] [--md F]

Each camera is the package's `l3d_sim` rig and dataset with a few parameters overridden
(CAMERAS); its held-out pairs are rendered into WORK/<name> as `l3d sim dataset --pairs N
--seed S` would render them (kept: a second run re-uses them), and scored by `l3d_ros.evaluate`
with each backend as the node runs it. `twelve_bit_in_16` is the 16-bit camera's pairs with
their grey levels shifted right by 4 bits (12-bit data stored unshifted in mono16, as many
12-bit camera drivers publish it): the same scenes at 1/16 of the scale.
"""
import argparse
from dataclasses import replace
import json
from pathlib import Path
import shutil
import sys

import cv2

from l3d_ros.config import load_node_config
from l3d_ros.dataset import list_pairs
from l3d_ros.evaluate import evaluate
from l3d_ros.infer import DepthSource
from l3d_sim.config import load_sim_config
from l3d_sim.dataset import write_dataset
from l3d_sim.groundtruth import node_hazard_config

# name -> ({config section: {parameter: value}}, what it is)
CAMERAS = {
    'shipped': ({}, 'the shipped rig: 512 x 512, 40 deg, 8 bit, 1 DN'),
    'sixteen_bit': ({'rig': {'bit_depth': 16}}, 'rig.bit_depth 16 (1 DN of 16 bit)'),
    'twelve_bit_in_16': (None, 'sixteen_bit shifted to 12 bits, stored in mono16'),
    'noisy_8_bit': ({'rig': {'noise_sigma_dn': 3.0}}, 'rig.noise_sigma_dn 3'),
    'vga': ({'rig': {'width': 640, 'height': 480}}, '640 x 480 (4:3)'),
    'wide_16_9': ({'rig': {'width': 1280, 'height': 720, 'hfov_deg': 70.0}},
                  '1280 x 720 (16:9), 70 deg'),
    'megapixel': ({'rig': {'width': 1024, 'height': 1024}}, '1024 x 1024'),
    'tilted_25': ({'rig': {'tilt_deg': 25.0}}, 'optical axis 25 deg off nadir'),
    'short_baseline': ({'rig': {'baseline_m': 0.5},
                        'dataset': {'altitude_min_m': 15.0, 'altitude_max_m': 60.0}},
                       'baseline 0.5 m, 15-60 m'),
    'high_sun': ({'dataset': {'sun_elevation_min_deg': 25.0, 'sun_elevation_max_deg': 45.0}},
                 'sun 25-45 deg'),
    'high_altitude': ({'dataset': {'altitude_min_m': 150.0, 'altitude_max_m': 300.0}},
                      '150-300 m, above the HDA gate and the student\'s training range'),
}
BACKENDS = ('student', 'sgbm')
# column -> its format in the Markdown table
COLUMNS = {'abs_rel': '.4f', 'completeness': '.3f', 'hazard_f1': '.3f', 'fallback_pairs': 'd',
           'latency_ms_median': '.0f'}


def camera_config(overrides: dict):
    """The package's simulator config with `overrides` ({section: {field: value}})."""
    sim = load_sim_config()
    for section, values in overrides.items():
        sim = replace(sim, **{section: replace(getattr(sim, section), **values)})
    return sim


def shift_to_12_bit(src: Path, dst: Path) -> None:
    """Copy the pair folders of `src` to `dst` with 16-bit images shifted right by 4 bits."""
    shutil.copytree(src, dst)
    for png in sorted(dst.glob('pair_*/*.png')):
        img = cv2.imread(str(png), cv2.IMREAD_UNCHANGED)
        if img.dtype != 'uint16':
            raise ValueError(f'{png}: dtype {img.dtype}, expected uint16 (a 16-bit camera)')
        cv2.imwrite(str(png), img >> 4)


def dataset(work: Path, name: str, pairs: int, seed: int) -> Path:
    """WORK/<name>, rendered (or shifted) unless already there with `pairs` pairs."""
    out = work / name
    if out.is_dir() and len(list_pairs(out)) == pairs:
        return out
    if out.exists():
        raise FileExistsError(f'{out} holds another dataset; remove it or choose another WORK')
    overrides, _ = CAMERAS[name]
    partial = out.with_name(out.name + '.partial')      # renamed once whole
    shutil.rmtree(partial, ignore_errors=True)
    if overrides is None:
        shift_to_12_bit(dataset(work, 'sixteen_bit', pairs, seed), partial)
    else:
        write_dataset(partial, pairs, seed, camera_config(overrides), node_hazard_config(),
                      progress=False)
    partial.rename(out)
    return out


def to_markdown(rows: list[dict], command: str) -> str:
    lines = ['# Cameras (generated, do not edit)', '', f'Command: `{command}`.', '',
             'Held-out pairs of each camera (`l3d sim dataset` with the rig / dataset '
             'overrides named), scored by `l3d eval` with each backend as the node runs it '
             '(the student hands a frame it cannot verify to SGBM: fallback_pairs). '
             'latency_ms_median: the depth computation per pair on this machine, while '
             'nothing else ran.', '',
             '| camera | what | backend | ' + ' | '.join(COLUMNS) + ' |',
             '|---' * (len(COLUMNS) + 3) + '|']
    for r in rows:
        cells = [format(r[k], fmt) for k, fmt in COLUMNS.items()]
        lines.append(f"| {r['camera']} | {CAMERAS[r['camera']][1]} | {r['backend']} | "
                     + ' | '.join(cells) + ' |')
    return '\n'.join(lines) + '\n'


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('work', type=Path, help='folder for the rendered pairs (kept)')
    parser.add_argument('--pairs', type=int, default=8)
    parser.add_argument('--seed', type=int, default=6100)
    parser.add_argument('--only', default=None, help='comma-separated cameras (default all)')
    parser.add_argument('--json', type=Path, default=None)
    parser.add_argument('--md', type=Path, default=None)
    args = parser.parse_args()
    names = args.only.split(',') if args.only else list(CAMERAS)
    unknown = [n for n in names if n not in CAMERAS]
    if unknown:
        parser.error(f'--only {unknown}: expected names from {list(CAMERAS)}')
    cfg = load_node_config()
    rows = []
    for name in names:
        data = dataset(args.work, name, args.pairs, args.seed)
        for backend in BACKENDS:
            m = evaluate(data, DepthSource(backend, cfg))
            rows.append({'camera': name, 'backend': backend, 'n_pairs': m['n_pairs'],
                         **{k: m[k] for k in COLUMNS}})
            print(f"{name:18s} {backend:8s} AbsRel {m['abs_rel']:.4f} completeness "
                  f"{m['completeness']:.3f} hazard F1 {m['hazard_f1']:.3f} fallbacks "
                  f"{m['fallback_pairs']} {m['latency_ms_median']:.0f} ms", flush=True)
    command = 'python scripts/camera_sweep.py ' + ' '.join(sys.argv[1:])
    if args.json:
        args.json.write_text(json.dumps({'command': command, 'seed': args.seed,
                                         'pairs': args.pairs, 'rows': rows}, indent=2) + '\n')
    if args.md:
        args.md.write_text(to_markdown(rows, command))
    return 0


if __name__ == '__main__':
    raise SystemExit(main())

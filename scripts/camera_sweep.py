"""Student and SGBM on cameras other than the simulator's rig: `l3d eval`'s figures per camera.

Usage: python scripts/camera_sweep.py WORK [--pairs 8] [--seed 6100] [--only NAME,...]
                                      [--json F] [--md F]

Each camera is the package's `l3d_sim` rig and dataset with a few parameters overridden
(CAMERAS); its held-out pairs are rendered into WORK/<name> as `l3d sim dataset --pairs N
--seed S` would render them (kept: a second run re-uses them), and scored by `l3d_ros.evaluate`
with each backend as the node runs it. A derived camera (DERIVED) is another camera's pairs with
their images changed as a real camera or its driver changes them, the geometry (depth, hazard,
calibration) untouched: `twelve_bit_in_16` is the 16-bit camera's grey levels shifted right by
4 bits (12-bit data stored unshifted in mono16, as many 12-bit camera drivers publish it); the
others are optics (a point-spread function, vignetting), electronics (the two cameras' gains
unequal, sRGB gamma encoding) and a rectification residual of the shipped rig's pairs.
"""
import argparse
from dataclasses import replace
import json
from pathlib import Path
import shutil
import sys

import cv2
import numpy as np

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


def _levels(img: np.ndarray) -> float:
    return float(np.iinfo(img.dtype).max)


def _requantised(img01: np.ndarray, like: np.ndarray, rng: np.random.Generator,
                 noise_dn: float = 1.0) -> np.ndarray:
    """Grey levels in [0, 1] back to `like`'s integer type, with `noise_dn` of read noise."""
    full = _levels(like)
    v = img01 * full + rng.normal(0.0, noise_dn, img01.shape)
    return np.clip(np.rint(v), 0, full).astype(like.dtype)


def shift_to_12_bit(left, right, rng):
    """16-bit grey levels shifted right by 4 bits: 12-bit data stored unshifted in mono16."""
    for img in (left, right):
        if img.dtype != np.uint16:
            raise ValueError(f'dtype {img.dtype}, expected uint16 (a 16-bit camera)')
    return left >> 4, right >> 4


def psf_blur(left, right, rng):
    """A Gaussian point-spread function of sigma 1 px (optics, defocus), then 1 DN of noise."""
    return tuple(_requantised(cv2.GaussianBlur(img / _levels(img), (0, 0), 1.0), img, rng)
                 for img in (left, right))


def vignetting(left, right, rng):
    """cos^4 falloff of a lens whose corners see 40 % less light: a ground point is dimmer in
    the view where it lies farther off axis."""
    h, w = left.shape[:2]
    y, x = np.mgrid[0:h, 0:w]
    cx, cy = (w - 1) / 2, (h - 1) / 2
    r2 = ((x - cx) ** 2 + (y - cy) ** 2) / (cx ** 2 + cy ** 2)      # 1 at the corners
    fall = 1.0 / (1.0 + r2 * (0.6 ** -0.5 - 1)) ** 2                # cos^4: 0.6 at the corners
    return tuple(_requantised(img / _levels(img) * fall, img, rng, 0.0) for img in (left, right))


def gain_mismatch(left, right, rng):
    """The right camera's gain 0.8 x the left's (unequal exposure or sensor response)."""
    return left, _requantised(right / _levels(right) * 0.8, right, rng, 0.0)


def srgb_gamma(left, right, rng):
    """Grey levels sRGB-encoded (the gamma of many camera drivers), not linear in radiance."""
    def encode(img):
        v = img / _levels(img)
        e = np.where(v <= 0.0031308, 12.92 * v, 1.055 * np.power(v, 1 / 2.4) - 0.055)
        return _requantised(e, img, rng, 0.0)
    return encode(left), encode(right)


def vertical_offset(left, right, rng):
    """The right image 0.5 px lower than rectification puts it (a calibration residual);
    bilinear, so it is also a little blurred, which a real camera's image would not be."""
    m = np.float32([[1, 0, 0], [0, 1, 0.5]])
    h, w = right.shape[:2]
    r = cv2.warpAffine(right.astype(np.float32), m, (w, h), flags=cv2.INTER_LINEAR,
                       borderMode=cv2.BORDER_REPLICATE)
    return left, np.clip(np.rint(r), 0, _levels(right)).astype(right.dtype)


# name -> (the camera whose pairs it changes, the change, what it is)
DERIVED = {
    'twelve_bit_in_16': ('sixteen_bit', shift_to_12_bit,
                         'sixteen_bit shifted to 12 bits, stored in mono16'),
    'psf_blur': ('shipped', psf_blur, 'optics: Gaussian PSF, sigma 1 px'),
    'vignetting': ('shipped', vignetting, 'optics: cos^4 vignetting, corners 40 % dimmer'),
    'gain_mismatch': ('shipped', gain_mismatch, 'right camera at 0.8 x the left\'s gain'),
    'srgb_gamma': ('shipped', srgb_gamma, 'grey levels sRGB gamma-encoded'),
    'vertical_offset': ('shipped', vertical_offset, 'right image 0.5 px off rectification'),
}
BACKENDS = ('student', 'sgbm')
# column -> its format in the Markdown table
COLUMNS = {'abs_rel': '.4f', 'completeness': '.3f', 'hazard_f1': '.3f', 'fallback_pairs': 'd',
           'corrected_pairs': 'd', 'latency_ms_median': '.0f'}


def camera_config(overrides: dict):
    """The package's simulator config with `overrides` ({section: {field: value}})."""
    sim = load_sim_config()
    for section, values in overrides.items():
        sim = replace(sim, **{section: replace(getattr(sim, section), **values)})
    return sim


def derive(src: Path, dst: Path, change, seed: int) -> None:
    """Copy the pair folders of `src` to `dst` with each pair's images changed by `change`."""
    shutil.copytree(src, dst)
    rng = np.random.default_rng(seed)
    for pair in list_pairs(dst):
        paths = [pair / 'left.png', pair / 'right.png']
        images = change(*(cv2.imread(str(p), cv2.IMREAD_UNCHANGED) for p in paths), rng)
        for path, img in zip(paths, images):
            cv2.imwrite(str(path), img)


def dataset(work: Path, name: str, pairs: int, seed: int) -> Path:
    """WORK/<name>, rendered (or shifted) unless already there with `pairs` pairs."""
    out = work / name
    if out.is_dir() and len(list_pairs(out)) == pairs:
        return out
    if out.exists():
        raise FileExistsError(f'{out} holds another dataset; remove it or choose another WORK')
    partial = out.with_name(out.name + '.partial')      # renamed once whole
    shutil.rmtree(partial, ignore_errors=True)
    if name in DERIVED:
        base, change, _ = DERIVED[name]
        derive(dataset(work, base, pairs, seed), partial, change, seed)
    else:
        write_dataset(partial, pairs, seed, camera_config(CAMERAS[name][0]),
                      node_hazard_config(), progress=False)
    partial.rename(out)
    return out


def to_markdown(rows: list[dict], command: str) -> str:
    lines = ['# Cameras (generated, do not edit)', '', f'Command: `{command}`.', '',
             'Held-out pairs of each camera (`l3d sim dataset` with the rig / dataset '
             'overrides named; the derived cameras below twelve_bit_in_16: the shipped '
             "rig's pairs with their images changed as named, depth and hazard untouched), "
             'scored by `l3d eval` with each backend as the node runs it (the student hands '
             'a frame it cannot verify to SGBM: fallback_pairs; a pair whose gains or rows '
             'disagree is corrected and matched again: corrected_pairs). '
             'latency_ms_median: the depth computation per pair on this machine, while '
             'nothing else ran.', '',
             '| camera | what | backend | ' + ' | '.join(COLUMNS) + ' |',
             '|---' * (len(COLUMNS) + 3) + '|']
    for r in rows:
        cells = [format(r[k], fmt) for k, fmt in COLUMNS.items()]
        what = DERIVED[r['camera']][2] if r['camera'] in DERIVED else CAMERAS[r['camera']][1]
        lines.append(f"| {r['camera']} | {what} | {r['backend']} | "
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
    known = list(CAMERAS) + list(DERIVED)
    names = args.only.split(',') if args.only else known
    unknown = [n for n in names if n not in known]
    if unknown:
        parser.error(f'--only {unknown}: expected names from {known}')
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
                  f"{m['fallback_pairs']} corrected {m['corrected_pairs']} "
                  f"{m['latency_ms_median']:.0f} ms", flush=True)
    command = 'python scripts/camera_sweep.py ' + ' '.join(sys.argv[1:])
    if args.json:
        args.json.write_text(json.dumps({'command': command, 'seed': args.seed,
                                         'pairs': args.pairs, 'rows': rows}, indent=2) + '\n')
    if args.md:
        args.md.write_text(to_markdown(rows, command))
    return 0


if __name__ == '__main__':
    raise SystemExit(main())

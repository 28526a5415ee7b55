"""What one stereo frame can score at most: `l3d eval`'s completeness and hazard F1 when the
depth is exact but only where the right camera sees the left pixel's ground point.

Usage: python scripts/stereo_ceiling.py DATASET [DATASET ...] [--json F] [--md F] [--config F]

For each pair (section 3 folder with depth.npy and hazard.npy): the pixels both cameras see
(l3d_ros.geometry.stereo_visible: not in the left strip about f B / Z wide, not occluded),
and the node's hazard pipeline on the ground-truth depth (`l3d eval --backend oracle`) once on
every pixel and once on those alone. Completeness and hazard F1 are counted as `l3d eval`
counts them (missing and unknown predictions count as hazard), so the second run is the
ceiling of any stereo backend that measures and does not extrapolate into what it cannot see.
Printed per pair and over each dataset; --json writes the totals, --md a Markdown table.
"""
import argparse
from dataclasses import replace
import json
from pathlib import Path
import sys

import numpy as np

from l3d_ros.dataset import list_pairs, read_pair
from l3d_ros.evaluate import DepthCounts, HazardCounts
from l3d_ros.geometry import stereo_visible
from l3d_ros.infer import DepthSource, node_config, process_pair


def ceiling(dataset: Path, source: DepthSource) -> dict:
    """Totals over the dataset: visible share, completeness and F1 of exact depth (all pixels
    / the stereo-visible ones)."""
    full_h, seen_h, seen_d = HazardCounts(), HazardCounts(), DepthCounts()
    folders = list_pairs(dataset)
    for folder in folders:
        pair = read_pair(folder)
        if pair.depth_m is None or pair.hazard is None:
            raise FileNotFoundError(f'{folder}: needs depth.npy and hazard.npy')
        visible = stereo_visible(pair.depth_m, pair.calib)
        seen = replace(pair, depth_m=np.where(visible, pair.depth_m, np.float32(np.nan)))
        counts = []
        for view, total in ((pair, full_h), (seen, seen_h)):
            _, frame, _, _ = process_pair(view, source)
            counts.append(HazardCounts())
            for c in (counts[-1], total):
                c.add(frame.pixel_hazard, pair.hazard)
        seen_d.add(seen.depth_m, pair.depth_m)
        gt = np.isfinite(pair.depth_m)
        print(f'{folder.name}: median depth {np.nanmedian(pair.depth_m):6.1f} m, visible '
              f'{visible[gt].mean():.3f}, hazard F1 exact {counts[0].metrics()["hazard_f1"]:.3f}'
              f', stereo-visible {counts[1].metrics()["hazard_f1"]:.3f}')
    return {'dataset': str(dataset), 'n_pairs': len(folders),
            'completeness_ceiling': seen_d.metrics()['completeness'],
            'hazard_f1_exact': full_h.metrics()['hazard_f1'],
            'hazard_f1_ceiling': seen_h.metrics()['hazard_f1'],
            'hazard_precision_ceiling': seen_h.metrics()['hazard_precision'],
            'hazard_recall_ceiling': seen_h.metrics()['hazard_recall']}


COLUMNS = ('n_pairs', 'completeness_ceiling', 'hazard_f1_exact', 'hazard_f1_ceiling',
           'hazard_precision_ceiling', 'hazard_recall_ceiling')


def to_markdown(totals: list[dict], command: str) -> str:
    lines = ['# Stereo ceiling (generated, do not edit)', '',
             f'Command: `{command}`.', '',
             'Exact (ground-truth) depth through the node\'s hazard pipeline, scored as '
             '`l3d eval` scores a backend: on every pixel (hazard_f1_exact), and only on the '
             'pixels both cameras see (the *_ceiling columns: no stereo backend that measures '
             'rather than extrapolates can do better; completeness_ceiling is the share of '
             'ground-truth pixels they are). Unlit shadow, which the images show but without '
             'texture, counts as seen. Datasets named as `l3d distill ablate` names its '
             'held-out sets (docs/ablation.md): eval_s<seed>_n<pairs> from `l3d sim dataset '
             '--seed <seed> --pairs <pairs>`, eval_hazard_..._<lo>-<hi>m the same with the '
             'dataset altitudes set to lo-hi m.', '',
             '| dataset | ' + ' | '.join(COLUMNS) + ' |', '|---' * (len(COLUMNS) + 1) + '|']
    for t in totals:
        cells = [str(t[k]) if isinstance(t[k], int) else f'{t[k]:.3f}' for k in COLUMNS]
        lines.append(f"| {t['dataset']} | " + ' | '.join(cells) + ' |')
    return '\n'.join(lines) + '\n'


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('datasets', type=Path, nargs='+')
    parser.add_argument('--config', type=Path, default=None,
                        help='ROS parameter file (default: config/lunar_stereo.yaml)')
    parser.add_argument('--json', type=Path, default=None, help='write the totals here')
    parser.add_argument('--md', type=Path, default=None, help='and as a Markdown table here')
    args = parser.parse_args()
    cfg, _ = node_config(args.config, 'sgbm')
    source = DepthSource('oracle', cfg)
    totals = [ceiling(d, source) for d in args.datasets]
    for t in totals:
        print(f"{t['dataset']}: {t['n_pairs']} pairs, completeness ceiling "
              f"{t['completeness_ceiling']:.3f}, hazard F1 exact depth {t['hazard_f1_exact']:.3f}"
              f", stereo-visible ceiling {t['hazard_f1_ceiling']:.3f} (precision "
              f"{t['hazard_precision_ceiling']:.3f}, recall {t['hazard_recall_ceiling']:.3f})")
    if args.json:
        args.json.write_text(json.dumps(totals, indent=2) + '\n')
    if args.md:
        args.md.write_text(to_markdown(totals, 'python scripts/stereo_ceiling.py '
                                       + ' '.join(sys.argv[1:])))
    return 0


if __name__ == '__main__':
    raise SystemExit(main())

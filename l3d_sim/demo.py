"""`l3d demo` (what `make demo` runs): a short closed-loop campaign over ROS 2, with a report.

A few landings (default 3) in each mode - hda (l3d_stereo), oracle (true depth) and blind -
on fresh terrains with a 3 m boulder planted at the nominal target, so every landing needs a
divert to be safe. It prints where the markdown/HTML report and its plots are.
"""
import argparse
import json
from pathlib import Path

from l3d_sim.campaign import campaign
from l3d_sim.mission_config import HDA_MODES
from l3d_sim.report import write_report


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument('--out', type=Path, default=Path('out/demo'),
                        help='folder for the landings, the JSON summary and the report')
    parser.add_argument('--runs', type=int, default=3, help='landings per mode')
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--workers', type=int, default=1, help='landings flown at once')
    parser.add_argument('--image-size', type=int, default=None,
                        help='square image size [px] (default: the rig config, 512)')
    parser.add_argument('--target-hazard', default='boulder',
                        choices=('none', 'boulder', 'crater'))
    parser.add_argument('--config', type=Path, default=None)


def run(args) -> int:
    if args.runs < 1:
        raise ValueError(f'--runs={args.runs!r}: expected >= 1')
    out = args.out.resolve()
    print(f'l3d demo: {args.runs} landing(s) per mode ({", ".join(HDA_MODES)}) over ROS 2, '
          f'boulder at the target: {args.target_hazard}; results in {out}')
    summary, results = campaign(args.runs, args.seed, out / 'landings', HDA_MODES,
                                args.workers, args.config, args.image_size, args.target_hazard)
    summary['command'] = (f'l3d demo --runs {args.runs} --seed {args.seed} --target-hazard '
                          f'{args.target_hazard}' + (f' --image-size {args.image_size}'
                                                     if args.image_size else ''))
    (out / 'summary.json').write_text(json.dumps(summary, indent=1) + '\n')
    report = write_report(out / 'report', summary, results, out / 'landings')
    print(f'l3d demo: safe_rate {summary["safe_rate"]} (HDA), oracle '
          f'{summary["oracle_safe_rate"]}, blind {summary["blind_safe_rate"]}')
    print(f'l3d demo: report {report} (HTML beside it), summary {out / "summary.json"}')
    return 0

"""`l3d`: one command line over the runtime, simulator and training packages.

Each sub-command lives in its own module, imported only when that command runs, so `l3d infer`
never imports torch. A command module provides `add_arguments(parser)` and `run(args) -> int`.
"""
import argparse
import importlib
import sys

from l3d_ros.runtime import keep_freed_memory

# name -> (module, one-line help)
COMMANDS = {
    'demo': ('l3d_sim.demo', 'closed-loop lunar landing on the built-in simulator over ROS 2'),
    'bringup': ('l3d_ros.bringup', 'run the nodes of lunar_stereo.launch.py without the ROS CLI'),
    'sim': ('l3d_sim.cli', 'simulator: dataset rendering, Gazebo world export, benchmark'),
    'infer': ('l3d_ros.infer', 'depth, confidence and hazard for a folder of stereo pairs'),
    'eval': ('l3d_ros.evaluate', 'depth and hazard metrics of a backend on a dataset (JSON)'),
    'land': ('l3d_sim.campaign', 'closed-loop Monte Carlo landings (JSON + report)'),
    'hil': ('l3d_sim.hil', 'hardware-in-the-loop harness: node as a separate flight computer'),
    'record': ('l3d_ros.bag', 'record topics to an MCAP bag (ROS 2 profile)'),
    'replay': ('l3d_ros.replay', 'feed a recorded MCAP bag back into the node'),
    'bench': ('l3d_ros.bench', 'latency, throughput and memory of each backend (JSON + md)'),
    'train': ('l3d_train.train_cli', 'teacher training / fine-tuning'),
    'distill': ('l3d_train.distill_cli', 'student distillation and the ablation table'),
    'export': ('l3d_train.export', 'ONNX export of a student + models/manifest.json'),
    'data': ('l3d_train.data_cli', 'dataset import (StereoLunar) and conversion'),
}


def _usage() -> str:
    width = max(map(len, COMMANDS))
    rows = '\n'.join(f'  {name:<{width}}  {text}' for name, (_, text) in COMMANDS.items())
    return f'usage: l3d COMMAND [ARGS]\n\ncommands:\n{rows}\n\n`l3d COMMAND --help` for more.'


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ('-h', '--help'):
        print(_usage())
        return 0 if argv else 2
    name, rest = argv[0], argv[1:]
    keep_freed_memory()             # steady per-frame latency (see l3d_ros.runtime)
    if name not in COMMANDS:
        print(f'l3d: unknown command {name!r}; expected one of {", ".join(COMMANDS)}',
              file=sys.stderr)
        return 2
    module_name, text = COMMANDS[name]
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and module_name.startswith(exc.name):
            print(f'l3d {name}: not available in this build ({module_name} is missing)',
                  file=sys.stderr)
            return 2
        if exc.name == 'torch':
            print(f"l3d {name}: needs torch; install it with 'pip install torch==2.13.0' "
                  "(or 'make model', which sets up the training environment)", file=sys.stderr)
            return 2
        raise
    parser = argparse.ArgumentParser(prog=f'l3d {name}', description=text)
    module.add_arguments(parser)
    args = parser.parse_args(rest)
    try:
        return int(module.run(args) or 0)
    except (ValueError, FileNotFoundError) as exc:
        print(f'l3d {name}: error: {exc}', file=sys.stderr)
        return 1


if __name__ == '__main__':
    sys.exit(main())

"""`l3d bringup`: the nodes of `lunar_stereo.launch.py`, started without the ROS 2 CLI.

Both the launch file and this command take their node list from `launch_nodes`, so they start
the same executables with the same names, parameter file and remappings. Each node runs in its
own process, as `ros2 launch` would, and rcl reads the parameter file (`--params-file`).
"""
from dataclasses import dataclass
import os
from pathlib import Path
import signal
import subprocess
import sys
import time

from l3d_ros.config import default_config_path, package_root, read_params_file

# a user's own Fast DDS transport choice, which dds_environment leaves alone
DDS_USER_VARS = ('FASTDDS_DEFAULT_PROFILES_FILE', 'FASTRTPS_DEFAULT_PROFILES_FILE',
                 'FASTDDS_BUILTIN_TRANSPORTS')


@dataclass(frozen=True)
class NodeSpec:
    """One node of the bring-up, in launch_ros.actions.Node's terms."""

    package: str
    executable: str          # console_scripts name (setup.py) = the launch file's executable
    module: str              # python module whose main() it runs
    name: str
    namespace: str = ''
    remappings: tuple[tuple[str, str], ...] = ()

    def ros_args(self, params_file: Path) -> list[str]:
        args = ['--ros-args', '-r', f'__node:={self.name}', '--params-file', str(params_file)]
        if self.namespace:
            args += ['-r', f'__ns:=/{self.namespace.strip("/")}']
        for src, dst in self.remappings:
            args += ['-r', f'{src}:={dst}']
        return args


def launch_nodes(params_file: Path, namespace: str = '', with_sim: bool = False) -> list[NodeSpec]:
    """The node list of lunar_stereo.launch.py; `with_sim` adds the simulator that feeds it."""
    params = read_params_file(params_file)    # validates the file's shape early
    nodes = [NodeSpec('l3d_ros', 'l3d_stereo', 'l3d_ros.node', 'l3d_stereo', namespace)]
    if with_sim:
        if 'l3d_sim' not in params:
            raise ValueError(f'{params_file}: with_sim needs an l3d_sim section')
        nodes.append(NodeSpec('l3d_ros', 'l3d_sim_node', 'l3d_sim.sim_node', 'l3d_sim',
                              namespace))
        nodes.append(NodeSpec('l3d_ros', 'l3d_guidance', 'l3d_sim.guidance_node',
                              'l3d_guidance', namespace))
    return nodes


def dds_environment(env) -> dict[str, str]:
    """Variables to add to `env` for the nodes: FASTDDS_DEFAULT_PROFILES_FILE =
    config/fastdds_images.xml (a 16 MiB shared-memory segment, so images larger than Fast
    DDS's 512 KiB default, e.g. 512x512 rgb8, are not lost under best-effort QoS), when the
    RMW is Fast DDS and the user set none of DDS_USER_VARS; else nothing."""
    if env.get('RMW_IMPLEMENTATION', 'rmw_fastrtps_cpp') != 'rmw_fastrtps_cpp':
        return {}
    if any(env.get(name) for name in DDS_USER_VARS):
        return {}
    return {'FASTDDS_DEFAULT_PROFILES_FILE': str(package_root() / 'config' / 'fastdds_images.xml')}


def add_arguments(parser) -> None:
    parser.add_argument('--config', type=Path, default=None,
                        help='ROS 2 parameter file (default: config/lunar_stereo.yaml)')
    parser.add_argument('--namespace', default='', help='namespace of every node')
    parser.add_argument('--with-sim', action='store_true',
                        help='also start the simulator node that feeds the stereo topics')


def start(nodes: list[NodeSpec], params_file: Path, env=None) -> list[subprocess.Popen]:
    """Start each node in its own process; returns the processes (caller stops them).
    env (default: this process's) gets dds_environment's additions, as in the launch file."""
    env = dict(os.environ if env is None else env)
    env.update(dds_environment(env))
    return [subprocess.Popen([sys.executable, '-m', n.module, *n.ros_args(params_file)],
                             env=env) for n in nodes]


def stop(procs: list[subprocess.Popen], timeout_s: float = 5.0) -> None:
    """SIGINT (rclpy's clean shutdown), then SIGKILL whatever is still alive."""
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGINT)
    deadline = time.monotonic() + timeout_s
    for p in procs:
        try:
            p.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def run(args) -> int:
    params_file = (args.config or default_config_path()).resolve()
    nodes = launch_nodes(params_file, args.namespace, args.with_sim)
    procs = start(nodes, params_file)
    print(f'l3d bringup: {", ".join(n.name for n in nodes)} with {params_file}; Ctrl-C stops')
    try:
        while all(p.poll() is None for p in procs):
            time.sleep(0.2)
    except KeyboardInterrupt:
        pass
    finally:
        stop(procs)
    failed = [(n.name, p.returncode) for n, p in zip(nodes, procs) if p.returncode not in (0, -2)]
    for name, code in failed:
        print(f'l3d bringup: {name} exited with {code}', file=sys.stderr)
    return 1 if failed else 0

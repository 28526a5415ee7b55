"""lunar_stereo.launch.py and `l3d bringup` must start the same nodes with the same parameters.

launch/launch_ros are not installable here, so the launch file is executed against minimal
stand-ins of the four launch classes it uses; they record what the real ones would receive.
"""
import ast
import importlib.util
import os
from pathlib import Path
import sys
import types

import pytest

from l3d_ros.bringup import dds_environment, launch_nodes
from l3d_ros.config import default_config_path

ROOT = Path(__file__).resolve().parent.parent


class Recorder:
    def __init__(self, *args, **kwargs):
        self.args, self.kwargs = args, kwargs


class LaunchConfiguration:
    def __init__(self, name):
        self.name = name

    def perform(self, context):
        return context[self.name]


def load_launch_module(monkeypatch):
    stubs = {
        'launch': types.SimpleNamespace(LaunchDescription=lambda actions: actions),
        'launch.actions': types.SimpleNamespace(DeclareLaunchArgument=Recorder,
                                                OpaqueFunction=Recorder,
                                                SetEnvironmentVariable=Recorder),
        'launch.substitutions': types.SimpleNamespace(LaunchConfiguration=LaunchConfiguration),
        'launch_ros.actions': types.SimpleNamespace(Node=Recorder),
        'ament_index_python.packages': types.SimpleNamespace(
            get_package_share_directory=lambda pkg: str(ROOT)),
    }
    for name, module in stubs.items():
        monkeypatch.setitem(sys.modules, name, module)
    spec = importlib.util.spec_from_file_location('lunar_launch',
                                                  ROOT / 'launch' / 'lunar_stereo.launch.py')
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def console_scripts() -> dict[str, str]:
    tree = ast.parse((ROOT / 'setup.py').read_text())
    scripts = next(node for node in ast.walk(tree) if isinstance(node, ast.Dict)
                   and any(isinstance(k, ast.Constant) and k.value == 'console_scripts'
                           for k in node.keys))
    entries = ast.literal_eval(scripts.values[0])
    return dict(e.replace(' ', '').split('=') for e in entries)


@pytest.mark.parametrize('with_sim', [False, True])
def test_launch_file_starts_what_bringup_starts(monkeypatch, with_sim):
    module = load_launch_module(monkeypatch)
    actions = module.generate_launch_description()
    declared = {a.args[0]: a.kwargs['default_value'] for a in actions
                if isinstance(a, Recorder) and 'default_value' in a.kwargs}
    assert Path(declared['config']) == default_config_path()
    opaque = next(a for a in actions if 'function' in a.kwargs)
    context = dict(declared, with_sim=str(with_sim).lower(), namespace='lander')
    actions = opaque.kwargs['function'](context)
    launched = [a for a in actions if 'package' in a.kwargs]
    env = [a.args for a in actions if 'package' not in a.kwargs]
    assert dict(env) == dds_environment(os.environ)         # what bringup.start adds

    expected = launch_nodes(default_config_path(), 'lander', with_sim)
    assert [(n.kwargs['package'], n.kwargs['executable'], n.kwargs['name'],
             n.kwargs['namespace'], n.kwargs['parameters'], n.kwargs['remappings'])
            for n in launched] == [
        (e.package, e.executable, e.name, e.namespace, [str(default_config_path())],
         list(e.remappings)) for e in expected]


def test_bringup_runs_the_modules_the_launch_executables_run():
    scripts = console_scripts()
    for spec in launch_nodes(default_config_path(), with_sim=True):
        assert scripts[spec.executable] == f'{spec.module}:main'
        assert importlib.util.find_spec(spec.module) is not None


def test_bringup_passes_the_params_file_to_rcl():
    spec = launch_nodes(default_config_path(), 'ns')[0]
    args = spec.ros_args(Path('/x/lunar_stereo.yaml'))
    assert args[:1] == ['--ros-args'] and '--params-file' in args
    assert args[args.index('--params-file') + 1] == '/x/lunar_stereo.yaml'
    assert '__ns:=/ns' in args and f'__node:={spec.name}' in args


def test_dds_profile_is_added_only_where_the_user_chose_no_transport():
    base = {'PATH': '/usr/bin'}
    added = dds_environment(base)
    profile = Path(added['FASTDDS_DEFAULT_PROFILES_FILE'])
    assert profile.is_file() and '<segment_size>16777216</segment_size>' in profile.read_text()
    for name in ('FASTDDS_DEFAULT_PROFILES_FILE', 'FASTRTPS_DEFAULT_PROFILES_FILE',
                 'FASTDDS_BUILTIN_TRANSPORTS'):
        assert dds_environment({**base, name: 'theirs'}) == {}
    assert dds_environment({**base, 'RMW_IMPLEMENTATION': 'rmw_cyclonedds_cpp'}) == {}
    assert dds_environment({**base, 'RMW_IMPLEMENTATION': 'rmw_fastrtps_cpp'}) == added

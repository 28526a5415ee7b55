"""ament_flake8's rules (setup.cfg) over all three packages, the launch files and the tests."""
from pathlib import Path
import subprocess
import sys

ROOT = Path(__file__).resolve().parent.parent


def test_flake8_clean():
    paths = [p for p in ('l3d_ros', 'l3d_train', 'l3d_sim', 'launch', 'test', 'scripts')
             if (ROOT / p).exists()]
    proc = subprocess.run([sys.executable, '-m', 'flake8', *paths], cwd=ROOT,
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_flight_runtime_never_imports_torch():
    code = ('import sys, l3d_ros.node, l3d_ros.pipeline, l3d_ros.backends.sgbm, l3d_ros.cli; '
            'import l3d_ros.hazard; assert "torch" not in sys.modules, "torch imported"')
    subprocess.run([sys.executable, '-c', code], cwd=ROOT, check=True)

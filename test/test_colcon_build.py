"""`colcon build` of the package into a scratch workspace, as on a robot."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
EXECUTABLES = {"camera_window_node", "inference_node", "teleop_node", "recorder_node", "sim_node", "mobile-vla"}


@pytest.fixture(scope="module")
def workspace(colcon_install):
    return colcon_install / "mobile_vla_ros"


def test_executables_are_installed_where_ros2_run_looks(workspace):
    lib = workspace / "lib" / "mobile_vla_ros"
    installed = {path.name for path in lib.iterdir() if os.access(path, os.X_OK)}
    assert EXECUTABLES <= installed


def test_launch_config_and_index_files_are_installed(workspace):
    share = workspace / "share" / "mobile_vla_ros"
    for name in (
        "package.xml",
        "launch/drive.launch.py",
        "launch/record.launch.py",
        "config/drive.yaml",
        "config/record.yaml",
        "config/fastdds_large_frames.xml",
        "config/gamepads/xbox.yaml",
        "config/gamepads/dragonrise.yaml",
        "models/README.md",
    ):
        assert (share / name).is_file(), name
    assert (workspace / "share" / "ament_index" / "resource_index" / "packages" / "mobile_vla_ros").is_file()


def test_installed_cli_runs_from_the_install_space(workspace):
    site = next((workspace / "lib").glob("python3*/site-packages"))
    env = {**os.environ, "PYTHONPATH": f"{site}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    result = subprocess.run(
        [str(workspace / "lib" / "mobile_vla_ros" / "mobile-vla"), "--help"],
        capture_output=True,
        text=True,
        env=env,
        cwd=workspace,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "make-tiny-model" in result.stdout and "bench" in result.stdout

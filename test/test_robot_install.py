"""The documented robot install (README: Install on a robot), resolved as pip would on a Jetson with
ROS 2 Humble (Python 3.10, aarch64): NumPy stays below 2 and no OpenCV wheel lands beside the
system's cv2, which is what keeps ROS's compiled Python packages importable."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from packaging.version import Version

REPO = Path(__file__).resolve().parents[1]


def test_the_humble_jetson_requirements_keep_numpy_1_and_the_systems_opencv(tmp_path):
    report = tmp_path / "report.json"
    command = [
        sys.executable, "-m", "pip", "install", "--dry-run", "--quiet", "--ignore-installed",
        "--report", str(report),
        "--python-version", "3.10", "--platform", "manylinux_2_28_aarch64", "--platform", "manylinux2014_aarch64",
        "--only-binary=:all:",
        "-c", str(REPO / "constraints-humble.txt"), "-r", str(REPO / "requirements-humble.txt"),
    ]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    planned = {
        item["metadata"]["name"].lower(): item["metadata"]["version"]
        for item in json.loads(report.read_text())["install"]
    }
    assert "transformers" in planned and "peft" in planned  # the resolution is the real one
    assert Version(planned["numpy"]) < Version("2"), planned["numpy"]
    assert not [name for name in planned if name.startswith("opencv")], planned


def test_the_humble_files_name_what_they_leave_to_the_system():
    requirements = (REPO / "requirements-humble.txt").read_text()
    listed = [line.split("#")[0].strip() for line in requirements.splitlines()]
    assert not [line for line in listed if line.startswith(("torch", "opencv", "numpy"))]
    constraints = (REPO / "constraints-humble.txt").read_text()
    assert "numpy<2" in constraints and "opencv-python-headless<0" in constraints

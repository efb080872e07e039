"""docs/reference.md is what scripts/reference.py generates from the code, and every node declares
its parameters through the one helper that the reference reads (its topics and services:
test/test_interfaces.py)."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _reference_script():
    spec = importlib.util.spec_from_file_location("reference", REPO / "scripts" / "reference.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_reference_is_generated_from_the_code():
    expected = _reference_script().render()
    assert (REPO / "docs" / "reference.md").read_text() == expected, "run: python scripts/reference.py --write"


def test_the_reference_lists_every_node_and_launch_argument():
    text = (REPO / "docs" / "reference.md").read_text()
    for node in ("camera_window_node", "inference_node", "sim_node", "teleop_node", "recorder_node"):
        assert f"### {node}" in text
    assert "| `max_speed` |" in text and "| `quantize` |" in text and "| `cmd_vel_topic` |" in text
    assert "| `sim/reset` | `std_srvs/srv/Trigger` | service server |" in text and "| `~/state` |" in text


def test_parameters_are_declared_only_through_the_shared_table_helper():
    declaring = [
        path.relative_to(REPO).as_posix()
        for path in (REPO / "mobile_vla_ros").rglob("*.py")
        if re.search(r"\.declare_parameters?\(", path.read_text())
    ]
    assert declaring == ["mobile_vla_ros/nodes/parameters.py"], declaring

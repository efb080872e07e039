"""docs/reference.md is what scripts/reference.py generates from the code, and every node declares
its parameters through the one helper that the reference reads (its topics and services:
test/test_interfaces.py)."""

from __future__ import annotations

import ast
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


# Settings whose defaults live in a control/ or sim/ dataclass; a node's table must refer to it.
DEFAULTS_ELSEWHERE = {
    "max_linear_x",
    "max_linear_y",
    "max_speed",
    "max_accel",
    "max_model_output",
    "override_hold_s",
    "start_enabled",
    "require_deadman",
    "joy_timeout_s",
    "time_limit_s",
}


def test_safety_defaults_exist_once_in_code():
    """A node parameter for a limit, the enable gate or a timeout takes its default from the
    dataclass the logic uses (VelocityLimits, SafetySettings, RoomConfig): a literal in a node's
    table is a second default that can drift (the speed limit once said 1.2 in one and 1.15 in the other)."""
    literal_defaults = []
    for path in sorted((REPO / "mobile_vla_ros" / "nodes").glob("*.py")):
        for call in ast.walk(ast.parse(path.read_text())):
            if not (isinstance(call, ast.Call) and getattr(call.func, "id", None) == "NodeParameter"):
                continue
            name, default = call.args[0], call.args[1]
            if (
                isinstance(name, ast.Constant)
                and name.value in DEFAULTS_ELSEWHERE
                and isinstance(default, ast.Constant)
            ):
                literal_defaults.append(f"{path.name}: {name.value} = {default.value!r}")
    assert not literal_defaults, literal_defaults

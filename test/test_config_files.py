"""The YAML under config/ is the one home of every parameter: each key is declared by its node with
the same type, the shipped values agree with the nodes' own defaults, and an edited value reaches
the node. (The `joy` package's joy_node declares its own parameters; it is not ours to check.)"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

rclpy = pytest.importorskip("rclpy")
from rclpy.parameter import Parameter  # noqa: E402

from mobile_vla_ros.nodes.camera_window_node import CameraWindowNode  # noqa: E402
from mobile_vla_ros.nodes.inference_node import InferenceNode  # noqa: E402
from mobile_vla_ros.nodes.node_specs import flatten_parameters  # noqa: E402
from mobile_vla_ros.nodes.recorder_node import RecorderNode  # noqa: E402
from mobile_vla_ros.nodes.sim_node import SimNode  # noqa: E402
from mobile_vla_ros.nodes.teleop_node import TeleopNode  # noqa: E402

pytestmark = pytest.mark.ros

CONFIG = Path(__file__).resolve().parents[1] / "config"
NODES = {
    "camera_window_node": CameraWindowNode,
    "inference_node": InferenceNode,
    "recorder_node": RecorderNode,
    "sim_node": SimNode,
    "teleop_node": TeleopNode,
}
NOT_OURS = {"joy_node"}
NODE_FILES = [CONFIG / name for name in ("drive.yaml", "record.yaml", "sim.yaml")]  # train*.yaml: mobile-vla train
CONFIG_FILES = NODE_FILES + sorted(CONFIG.glob("gamepads/*.yaml"))


def sections(path: Path) -> dict[str, dict]:
    document = yaml.safe_load(path.read_text())
    ours = {node: body for node, body in document.items() if node not in NOT_OURS}
    return {node: flatten_parameters(body["ros__parameters"]) for node, body in ours.items()}


@pytest.fixture(scope="module")
def ros():
    rclpy.init()
    yield
    rclpy.shutdown()


@pytest.fixture(scope="module")
def required(tiny_checkpoint, tiny_base_model, tmp_path_factory):
    """The parameters a launch file passes on the command line (no YAML holds them)."""
    return {
        "camera_window_node": {"model_dir": str(tiny_checkpoint)},
        "inference_node": {"model_dir": str(tiny_checkpoint), "base_model_dir": str(tiny_base_model)},
        "recorder_node": {"output_dir": str(tmp_path_factory.mktemp("episodes"))},
    }


def make_node(name: str, values: dict):
    return NODES[name](parameter_overrides=[Parameter(key, value=value) for key, value in values.items()])


@pytest.mark.parametrize("path", CONFIG_FILES, ids=lambda path: str(path.relative_to(CONFIG)))
def test_every_key_is_declared_and_its_value_reaches_the_node(ros, required, path):
    for name, values in sections(path).items():
        assert name in NODES, f"{path.name}: section {name} is no node of this package"
        node = make_node(name, {**values, **required.get(name, {})})
        try:
            undeclared = sorted(key for key in values if not node.has_parameter(key))
            assert not undeclared, f"{path.name}: {name} does not declare {undeclared}"
            for key, value in values.items():
                if key not in required.get(name, {}):
                    assert node.get_parameter(key).value == value, f"{path.name}: {name}.{key}"
        finally:
            if name == "inference_node":
                node.worker.stop()
            node.destroy_node()


@pytest.mark.parametrize("path", NODE_FILES, ids=lambda path: path.name)
def test_shipped_values_agree_with_the_node_defaults(ros, required, path):
    """Gamepad profiles are deliberate per-pad overrides; the main files restate the defaults."""
    for name, values in sections(path).items():
        node = make_node(name, required.get(name, {}))
        try:
            disagree = {
                key: (value, node.get_parameter(key).value)
                for key, value in values.items()
                if key not in required.get(name, {}) and node.get_parameter(key).value != value
            }
            assert not disagree, f"{path.name}: {name} yaml vs code default: {disagree}"
        finally:
            if name == "inference_node":
                node.worker.stop()
            node.destroy_node()


def test_an_edited_value_reaches_the_node(ros, required):
    values = {**sections(CONFIG / "drive.yaml")["inference_node"], "max_accel": 1.25, **required["inference_node"]}
    node = make_node("inference_node", values)
    try:
        assert node.controller.limiter.limits.max_accel == 1.25
    finally:
        node.worker.stop()
        node.destroy_node()

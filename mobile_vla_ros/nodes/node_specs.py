"""What each node is started with (executable, parameters from the YAML plus overrides, remappings),
built in one place: drive.launch.py turns `drive_nodes` into launch_ros Nodes, the demo and
bench-record start theirs as processes with `node_command`, so no two starters can disagree.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from mobile_vla_ros.policy.config import PolicyConfig

PACKAGE = "mobile_vla_ros"
CAMERA, INFERENCE, SIM = "camera_window_node", "inference_node", "sim_node"
IMAGE_TOPIC = "/camera/image_raw"


@dataclass(frozen=True)
class NodeSpec:
    """One node to start: `name` is also its executable; `parameters` by their ROS names, with
    every source already merged (later ones win), as the node will hold them."""

    name: str
    parameters: dict[str, object]
    remappings: list[tuple[str, str]] = field(default_factory=list)
    namespace: str = ""
    package: str = PACKAGE


def yaml_section(params_yaml: str | Path, node: str) -> dict[str, object]:
    """`node`'s parameters in a parameter YAML, nested keys joined with dots as ROS names them."""
    document = yaml.safe_load(Path(params_yaml).read_text()) or {}
    return flatten_parameters(document.get(node, {}).get("ros__parameters", {}))


def flatten_parameters(parameters: dict, prefix: str = "") -> dict[str, object]:
    """A YAML parameter block with nested keys joined by dots, as ROS names them."""
    flat: dict[str, object] = {}
    for key, value in parameters.items():
        if isinstance(value, dict):
            flat.update(flatten_parameters(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def lockstep_sim_parameters(drive_params_file: str | Path, model_dir: str | Path) -> dict[str, object]:
    """sim_node's parameters for lockstep: one physics step per control tick of inference_node (from
    the drive parameter file in use) and one camera frame per model frame (from the checkpoint)."""
    control_rate_hz = float(yaml_section(drive_params_file, INFERENCE)["control_rate_hz"])
    return {
        "lockstep": True,
        "physics_rate_hz": control_rate_hz,
        "camera_rate_hz": 1.0 / PolicyConfig.load(model_dir).action_dt,
    }


def drive_nodes(
    drive_yaml: str | Path,
    model_dir: str | Path,
    base_model_dir: str | Path,
    *,
    namespace: str = "",
    image_topic: str = IMAGE_TOPIC,
    cmd_vel_topic: str = "cmd_vel",
    camera: dict | None = None,
    inference: dict | None = None,
    gamepad_yaml: str | Path | None = None,
    use_joy: bool = True,
    sim_yaml: str | Path | None = None,
    lockstep: bool = False,
    sim: dict | None = None,
) -> list[NodeSpec]:
    """camera_window_node and inference_node from `drive_yaml`, `camera` and `inference` on top;
    with `gamepad_yaml` the deadman and teleop_node (and joy_node with `use_joy`); with `sim_yaml`
    sim_node (`sim` on top), and with `lockstep` simulated time for all of them."""
    sim_time = {"use_sim_time": True} if lockstep else {}  # sim_node publishes /clock
    model = {"model_dir": str(model_dir)}
    cmd_vel = [("cmd_vel", cmd_vel_topic)]
    pad = {} if gamepad_yaml is None else {**yaml_section(gamepad_yaml, INFERENCE), "require_deadman": True}
    nodes = [
        NodeSpec(
            CAMERA,
            {**yaml_section(drive_yaml, CAMERA), **model, **(camera or {}), **sim_time},
            [("image", image_topic), ("image/compressed", f"{image_topic}/compressed")],
            namespace,
        ),
        NodeSpec(
            INFERENCE,
            {
                **yaml_section(drive_yaml, INFERENCE),
                **pad,
                **model,
                "base_model_dir": str(base_model_dir),
                **(inference or {}),
                **sim_time,
            },
            cmd_vel,
            namespace,
        ),
    ]
    if gamepad_yaml is not None:
        teleop = {**yaml_section(drive_yaml, "teleop_node"), **yaml_section(gamepad_yaml, "teleop_node")}
        nodes.append(NodeSpec("teleop_node", teleop, [("cmd_vel", "cmd_vel_teleop")], namespace))
        if use_joy:
            nodes.append(NodeSpec("joy_node", yaml_section(drive_yaml, "joy_node"), [], namespace, package="joy"))
    if sim_yaml is not None:
        lockstep_parameters = lockstep_sim_parameters(drive_yaml, model_dir) if lockstep else {}
        parameters = {**yaml_section(sim_yaml, SIM), **lockstep_parameters, **(sim or {})}
        nodes.append(NodeSpec(SIM, parameters, [("camera/image_raw", image_topic), *cmd_vel], namespace))
    return nodes


def node_command(node: NodeSpec, params_dir: Path, log_level: str | None = None) -> list[str]:
    """The command that starts `node` as `ros2 launch` would, from this Python without a colcon
    install; its parameters go to a file in `params_dir`, which must outlive the process's start."""
    if node.package != PACKAGE:
        raise ValueError(f"{node.package}'s {node.name} is started by ros2 launch only")
    params_file = Path(params_dir) / f"{node.name}.yaml"
    params_file.write_text(yaml.safe_dump({"/**": {"ros__parameters": node.parameters}}))
    command = [sys.executable, "-m", f"{PACKAGE}.nodes.{node.name}", "--ros-args", "--params-file", str(params_file)]
    for old, new in [*([("__ns", node.namespace)] if node.namespace else []), *node.remappings]:
        command += ["-r", f"{old}:={new}"]
    return command + ([] if log_level is None else ["--log-level", log_level])

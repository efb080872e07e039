"""`mobile-vla demo` and `ros2 launch mobile_vla_ros drive.launch.py use_sim:=true lockstep:=true` start
the same nodes with the same parameters and remappings; only the trials' own settings differ, by name."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

pytest.importorskip("launch_ros")
pytest.importorskip("rclpy")

from launch_ros.parameter_descriptions import ParameterValue  # noqa: E402

from launch import LaunchContext  # noqa: E402
from mobile_vla_ros.demo.closed_loop import closed_loop_nodes  # noqa: E402
from mobile_vla_ros.nodes.node_specs import NodeSpec, node_command  # noqa: E402
from mobile_vla_ros.policy.config import PolicyConfig  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
# What the demo sets for its trials on top of the launch's nodes; anything else that differs is a bug.
TRIAL_SETTINGS = {
    "sim_node": {
        "seed",
        "first_episode",
        "time_limit_s",
        "freeze_camera",
        "scene",
        "start_hold_s",
        "max_real_time_factor",
        "next_episode_on_end",  # the conductor resets the simulator itself, trial by trial
    },
    "camera_window_node": set(),
    "inference_node": {"familiarity_action"},  # no launch argument: a params_file changes it there
}


def launched_nodes(monkeypatch, **arguments: str) -> dict[str, dict]:
    """The keyword arguments drive.launch.py gives each launch_ros Node, by node name, for `arguments`."""
    spec = importlib.util.spec_from_file_location("drive_launch", REPO / "launch" / "drive.launch.py")
    drive_launch = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(drive_launch)
    monkeypatch.setattr(drive_launch, "get_package_share_directory", lambda package: str(REPO))
    monkeypatch.setattr(drive_launch, "Node", lambda **node: node)
    context = LaunchContext(argv=[f"{name}:={value}" for name, value in arguments.items()])
    context.launch_configurations.update({row.name: row.default or "" for row in drive_launch.ARGUMENTS})
    context.launch_configurations.update(arguments)
    return {node["name"]: node for node in drive_launch._nodes(context)}


def plain(parameters: list[dict]) -> dict[str, object]:
    [merged] = parameters
    return {name: value.value if isinstance(value, ParameterValue) else value for name, value in merged.items()}


def differing(one: dict, other: dict) -> set[str]:
    return {name for name in one.keys() | other.keys() if one.get(name, KeyError) != other.get(name, KeyError)}


@pytest.fixture
def model_dir(tmp_path):
    PolicyConfig(action_dt=0.4, base_model={"name": "tiny", "fingerprint": "0" * 16}).save(tmp_path)
    return tmp_path


@pytest.mark.parametrize(
    "demo, launch",
    [
        ({}, {}),
        (
            {"device": "cpu", "dtype": "fp32", "corrections_dir": "/tmp/corrections", "familiarity_action": "warn"},
            {"device": "cpu", "dtype": "fp32", "record_corrections": "true", "corrections_dir": "/tmp/corrections"},
        ),
    ],
)
def test_the_demo_starts_the_nodes_drive_launch_starts_with_use_sim_and_lockstep(monkeypatch, model_dir, demo, launch):
    demo_nodes = {
        node.name: node for node in closed_loop_nodes(model_dir, "/models/kosmos-2", seed=7, scene="dark", **demo)
    }
    launched = launched_nodes(
        monkeypatch,
        model_dir=str(model_dir),
        base_model_dir="/models/kosmos-2",
        use_sim="true",
        lockstep="true",
        enable="false",
        **{"device": "auto", **launch},
    )

    assert list(demo_nodes) == list(launched) == ["camera_window_node", "inference_node", "sim_node"]
    for name, node in demo_nodes.items():
        launch_parameters = plain(launched[name]["parameters"])
        assert differing(node.parameters, launch_parameters) <= TRIAL_SETTINGS[name], name
        assert node.remappings == launched[name]["remappings"], name
    assert demo_nodes["sim_node"].parameters["camera_rate_hz"] == 2.5  # the checkpoint's frame rate
    for name in ("camera_window_node", "inference_node"):
        assert demo_nodes[name].parameters["use_sim_time"] is True


def test_the_demo_keeps_drive_yaml_values_it_does_not_set(model_dir):
    """dtype, familiarity_action and every other drive.yaml value reach the demo's inference node
    unless the demo is told otherwise (an earlier demo forced dtype fp32)."""
    from mobile_vla_ros.nodes.node_specs import yaml_section

    drive_yaml = yaml_section(REPO / "config" / "drive.yaml", "inference_node")
    [inference] = [node for node in closed_loop_nodes(model_dir, "/base", seed=1) if node.name == "inference_node"]
    assert differing(inference.parameters, drive_yaml) == {"model_dir", "base_model_dir", "use_sim_time"}


def test_a_node_command_carries_namespace_remappings_and_a_parameter_file_of_typed_values(tmp_path):
    import yaml

    node = NodeSpec(
        "recorder_node",
        {"output_dir": "/data", "sample_rate_hz": 10.0, "compressed": True, "instruction": "true"},
        [("image", "camera")],
        namespace="/bench",
    )
    command = node_command(node, tmp_path, log_level="warn")
    assert command[1:] == [
        "-m",
        "mobile_vla_ros.nodes.recorder_node",
        "--ros-args",
        "--params-file",
        str(tmp_path / "recorder_node.yaml"),
        "-r",
        "__ns:=/bench",
        "-r",
        "image:=camera",
        "--log-level",
        "warn",
    ]
    written = yaml.safe_load((tmp_path / "recorder_node.yaml").read_text())
    assert written == {"/**": {"ros__parameters": node.parameters}}
    with pytest.raises(ValueError, match="ros2 launch"):
        node_command(NodeSpec("joy_node", {}, package="joy"), tmp_path)


def test_teleop_adds_the_gamepad_nodes_and_its_deadman_to_the_inference_node(monkeypatch, model_dir):
    """The gamepad branch, which the ros2 launch tests cannot run without the `joy` package."""
    launched = launched_nodes(monkeypatch, model_dir=str(model_dir), base_model_dir="/base", teleop="true")

    assert list(launched) == ["camera_window_node", "inference_node", "teleop_node", "joy_node"]
    inference = plain(launched["inference_node"]["parameters"])
    assert inference["require_deadman"] is True and inference["deadman_button"] == 2  # xbox.yaml's X
    teleop = plain(launched["teleop_node"]["parameters"])
    assert teleop["enable_button"] == 4 and teleop["scale_linear.x"] == 0.4  # xbox.yaml and drive.yaml
    assert launched["teleop_node"]["remappings"] == [("cmd_vel", "cmd_vel_teleop")]
    assert launched["joy_node"]["package"] == "joy" and launched["joy_node"]["on_exit"] is None

"""Every node has exactly the topics and services of its INTERFACES table (rendered into
docs/reference.md): each node is started for real, once per mode a row's `when` names, and its
publishers, subscriptions and services (name, type, direction, latched or not) are compared with the
table. rclpy's own endpoints (parameter services, type description, /parameter_events) aside."""

from __future__ import annotations

import importlib
import importlib.util
import time
from pathlib import Path

import pytest

rclpy = pytest.importorskip("rclpy")
from rclpy.executors import SingleThreadedExecutor  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402
from rclpy.qos import DurabilityPolicy  # noqa: E402

from mobile_vla_ros.nodes.camera_qos import DISCOVERY_POLL_S  # noqa: E402
from mobile_vla_ros.nodes.interfaces import CAMERA_QOS, LATCHED, PUBLISHES, SERVES, SUBSCRIBES, type_name  # noqa: E402

pytestmark = pytest.mark.ros

REPO = Path(__file__).resolve().parents[1]
CLASSES = {
    "camera_window_node": "CameraWindowNode",
    "inference_node": "InferenceNode",
    "sim_node": "SimNode",
    "teleop_node": "TeleopNode",
    "recorder_node": "RecorderNode",
}
# (node, parameters): every node, and every `when` of its table with each value it names.
CASES = [
    ("camera_window_node", {"compressed": False}),
    ("camera_window_node", {"compressed": True}),
    ("inference_node", {}),
    ("sim_node", {"lockstep": False}),
    ("sim_node", {"lockstep": True, "camera_rate_hz": 10.0}),  # lockstep: a whole number of physics steps
    ("teleop_node", {}),
    ("recorder_node", {"compressed": False}),
    ("recorder_node", {"compressed": True}),
]
AUTOMATIC = ("rcl_interfaces/", "type_description_interfaces/")
# A camera subscription appears once the node's discovery poll has seen the camera's publisher
# (nodes/camera_qos.py): spin a few polls before comparing, and up to SETTLE_S for a missing one.
CAMERA_POLLS_S = 3 * DISCOVERY_POLL_S
SETTLE_S = 5.0


def _module(node: str):
    return importlib.import_module(f"mobile_vla_ros.nodes.{node}")


def _endpoints(node) -> set[tuple[str, str, str, bool]]:
    """(resolved name, type, direction, latched) of what `node` really created."""
    found = set()
    for direction, entities in ((PUBLISHES, node.publishers), (SUBSCRIBES, node.subscriptions)):
        for entity in entities:
            latched = entity.qos_profile.durability == DurabilityPolicy.TRANSIENT_LOCAL
            found.add((entity.topic_name, type_name(entity.msg_type), direction, latched))
    for service in node.services:
        found.add((node.resolve_service_name(service.srv_name), type_name(service.srv_type), SERVES, False))
    return {endpoint for endpoint in found if not endpoint[1].startswith(AUTOMATIC)}


def _table(node, table) -> set[tuple[str, str, str, bool]]:
    """What the table says `node`, with its parameters as they are, has."""
    rows = [row for row in table if row.when is None or node.get_parameter(row.when[0]).value == row.when[1]]
    resolve = {SERVES: node.resolve_service_name}
    return {
        (
            resolve.get(row.direction, node.resolve_topic_name)(row.name),
            type_name(row.type),
            row.direction,
            row.qos == LATCHED,
        )
        for row in rows
    }


@pytest.fixture(scope="module")
def context():
    """One context for the module, with a publisher on every camera topic a table names."""
    context = rclpy.Context()
    rclpy.init(context=context)
    camera = rclpy.create_node("interfaces_test_camera", context=context)
    cameras = {(row.type, row.name) for node in CLASSES for row in _module(node).INTERFACES if row.qos == CAMERA_QOS}
    for message_type, name in cameras:
        camera.create_publisher(message_type, name, 1)
    yield context
    camera.destroy_node()
    rclpy.try_shutdown(context=context)


def _required(node: str, request, tmp_path) -> dict:
    """Parameters a node cannot start without: the tiny test checkpoint, an output directory."""
    if node in ("camera_window_node", "inference_node"):
        required = {"model_dir": str(request.getfixturevalue("tiny_checkpoint"))}
        if node == "inference_node":
            required |= {"base_model_dir": str(request.getfixturevalue("tiny_base_model")), "device": "cpu"}
        return required
    return {"output_dir": str(tmp_path)} if node == "recorder_node" else {}


@pytest.mark.parametrize(("node_name", "parameters"), CASES, ids=[f"{n}-{p}" for n, p in CASES])
def test_a_running_node_has_exactly_the_topics_and_services_of_its_table(
    context, node_name, parameters, request, tmp_path
):
    module = _module(node_name)
    values = {**_required(node_name, request, tmp_path), **parameters}
    node = getattr(module, CLASSES[node_name])(
        context=context, parameter_overrides=[Parameter(name, value=value) for name, value in values.items()]
    )
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(node)
    try:
        expected = _table(node, module.INTERFACES)
        started = time.monotonic()
        polls_s = CAMERA_POLLS_S if any(row.qos == CAMERA_QOS for row in module.INTERFACES) else 0.0
        while time.monotonic() < started + polls_s or (
            _endpoints(node) != expected and time.monotonic() < started + SETTLE_S
        ):
            executor.spin_once(timeout_sec=0.05)
        actual = _endpoints(node)
        assert actual == expected, (
            f"{node_name} differs from its INTERFACES table (then: python scripts/reference.py --write)\n"
            f"  not in the table: {sorted(actual - expected)}\n  not created by the node: {sorted(expected - actual)}"
        )
    finally:
        if hasattr(node, "stop"):
            node.stop()
        executor.shutdown()
        node.destroy_node()


def test_every_node_of_the_reference_and_every_mode_of_its_table_is_started():
    spec = importlib.util.spec_from_file_location("reference", REPO / "scripts" / "reference.py")
    reference = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(reference)
    assert sorted(reference.NODES) == sorted(CLASSES) == sorted({node for node, _ in CASES})
    started = {(node, name, value) for node, parameters in CASES for name, value in parameters.items()}
    for node in CLASSES:
        for row in _module(node).INTERFACES:
            if row.when is not None:
                assert (node, *row.when) in started, f"{node}: no case starts it with {row.when}"
                assert (node, row.when[0], not row.when[1]) in started, f"{node}: no case without {row.when}"

"""Recording over real DDS: joy -> teleop_node -> cmd_vel -> recorder_node, camera frames, services,
a SIGKILLed recorder subprocess and its recovery."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

rclpy = pytest.importorskip("rclpy")
from geometry_msgs.msg import Twist  # noqa: E402
from rclpy.executors import SingleThreadedExecutor  # noqa: E402
from rclpy.node import Node  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402
from rclpy.qos import DurabilityPolicy, QoSProfile  # noqa: E402
from sensor_msgs.msg import Image, Joy  # noqa: E402
from std_msgs.msg import String  # noqa: E402
from std_srvs.srv import Trigger  # noqa: E402

from mobile_vla_ros.data.episode import list_episodes, read_episode  # noqa: E402
from mobile_vla_ros.nodes.recorder_node import RecorderNode  # noqa: E402
from mobile_vla_ros.nodes.ros_image import rgb_to_image_msg  # noqa: E402
from mobile_vla_ros.nodes.teleop_node import TeleopNode  # noqa: E402
from mobile_vla_ros.policy.instructions import LAB_INSTRUCTIONS  # noqa: E402

pytestmark = pytest.mark.ros

# Xbox layout (config/gamepads/xbox.yaml): LB deadman, Start/A/Back episode buttons, D-pad axis 6.
DEADMAN, START, SAVE, DISCARD, DPAD_X = 4, 7, 0, 6, 6
SCALE_X, SCALE_Y = 0.3, 0.2


def wait_for(predicate, timeout_s=5.0, period_s=0.02):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(period_s)
    return False


class Operator(Node):
    """Plays the camera, the gamepad and the script that calls the recorder's services."""

    def __init__(self, namespace: str):
        super().__init__("operator", namespace=namespace)
        self.camera_on = True
        self.joy_on = True
        self.axes = [0.0] * 8
        self.buttons = [0] * 11
        self.frames_sent: dict[float, int] = {}  # stamp -> red value
        self.twists: list[tuple[float, Twist]] = []
        self.state: dict = {}
        self.camera = self.create_publisher(Image, "camera", 10)
        self.joy = self.create_publisher(Joy, "joy", 10)
        self.cmd_vel = self.create_publisher(Twist, "cmd_vel", 10)
        self.instruction = self.create_publisher(String, "instruction", 10)
        self.create_subscription(Twist, "cmd_vel", lambda msg: self.twists.append((time.monotonic(), msg)), 10)
        self.create_subscription(
            String,
            "recorder_node/state",
            self._on_state,
            QoSProfile(depth=1, durability=DurabilityPolicy.TRANSIENT_LOCAL),
        )
        self.create_timer(1 / 30, self._publish_frame)
        self.create_timer(1 / 20, self._publish_joy)
        self._count = 0
        self.clients_ = {
            name: self.create_client(Trigger, f"recorder_node/{name}")
            for name in ("start", "stop", "discard", "select_left", "select_right")
        }

    def _on_state(self, msg):
        self.state = json.loads(msg.data)

    def _publish_frame(self):
        if not self.camera_on:
            return
        self._count += 1
        value = self._count % 250
        image = np.zeros((48, 64, 3), np.uint8)
        image[..., 0] = value
        msg = rgb_to_image_msg(image, stamp=self.get_clock().now().to_msg())
        self.frames_sent[msg.header.stamp.sec + msg.header.stamp.nanosec * 1e-9] = value
        self.camera.publish(msg)

    def _publish_joy(self):
        if self.joy_on:
            self.joy.publish(Joy(axes=list(self.axes), buttons=list(self.buttons)))

    def press(self, button: int):
        self.buttons[button] = 1
        time.sleep(0.15)
        self.buttons[button] = 0
        time.sleep(0.15)

    def call(self, name: str) -> Trigger.Response:
        client = self.clients_[name]
        assert client.wait_for_service(timeout_sec=5.0), f"service {name} not available"
        future = client.call_async(Trigger.Request())
        assert wait_for(future.done, 10.0), f"service {name} did not answer"
        return future.result()


@pytest.fixture(scope="module")
def ros():
    rclpy.init()
    executor = SingleThreadedExecutor()
    thread = threading.Thread(target=executor.spin, daemon=True)
    thread.start()
    yield executor
    executor.shutdown()
    thread.join(timeout=5)
    rclpy.shutdown()


def start_nodes(ros, namespace, tmp_path, **recorder_params):
    params = {"output_dir": str(tmp_path), "sample_rate_hz": 10.0, **recorder_params}
    recorder = RecorderNode(
        namespace=namespace,
        parameter_overrides=[Parameter(name, value=value) for name, value in params.items()],
        cli_args=["--ros-args", "-r", "image:=camera"],
    )
    teleop = TeleopNode(
        namespace=namespace,
        parameter_overrides=[
            Parameter("enable_button", value=DEADMAN),
            Parameter("scale_linear.x", value=SCALE_X),
            Parameter("scale_linear.y", value=SCALE_Y),
            Parameter("joy_timeout_s", value=0.5),
        ],
    )
    operator = Operator(namespace)
    for node in (recorder, teleop, operator):
        ros.add_node(node)
    assert wait_for(lambda: operator.state.get("state") == "idle", 10.0), "recorder state never arrived"
    assert wait_for(
        lambda: (
            operator.joy.get_subscription_count() == 2
            and operator.camera.get_subscription_count() == 1
            and operator.cmd_vel.get_subscription_count() == 2
        ),
        10.0,
    ), "discovery incomplete"
    time.sleep(0.2)  # the first Joy messages only set the button baseline
    return recorder, teleop, operator


@pytest.fixture
def nodes(ros, tmp_path, request):
    created = start_nodes(ros, f"/{request.node.name}", tmp_path)
    yield created
    for node in created:
        ros.remove_node(node)
        node.destroy_node()


def test_gamepad_episode_has_the_frames_actions_and_instruction_sent(nodes, tmp_path):
    recorder, _, operator = nodes
    operator.axes[DPAD_X] = -1.0  # D-pad right
    time.sleep(0.15)
    operator.axes[DPAD_X] = 0.0
    assert wait_for(lambda: operator.state.get("instruction") == LAB_INSTRUCTIONS["right"])
    operator.buttons[DEADMAN] = 1  # hold the deadman with the stick centred: teleop publishes zeros
    assert wait_for(lambda: len(operator.twists) > 0)
    operator.press(START)
    assert wait_for(lambda: operator.state.get("state") == "recording")
    time.sleep(0.5)
    operator.axes[0], operator.axes[1] = -1.0, 0.5  # stick right and half forward
    time.sleep(1.5)
    operator.axes[0] = operator.axes[1] = 0.0
    operator.buttons[DEADMAN] = 0
    time.sleep(0.5)
    operator.press(SAVE)
    assert wait_for(lambda: operator.state.get("episodes_saved") == 1)

    [path] = list_episodes(tmp_path)
    episode = read_episode(path)
    assert episode.instruction == LAB_INSTRUCTIONS["right"] and path.stem.endswith("_right")
    assert 22 <= episode.num_frames <= 32  # about 2.8 s at 10 Hz
    steps = np.diff(
        episode.timestamps
    )  # one fresh frame per sample, at the sample rate (jitter of a busy machine aside)
    assert np.all(steps > 0) and abs(np.median(steps) - 0.1) < 0.02, steps
    assert not episode.flags["camera_lag"].any() and recorder.recorder.dropped_samples == 0
    for stamp, image in zip(episode.timestamps, episode.images):  # every stored image is the one sent at its stamp
        sent = min(operator.frames_sent, key=lambda s: abs(s - stamp))
        assert abs(sent - stamp) < 1e-6 and image[0, 0].tolist() == [operator.frames_sent[sent], 0, 0]
    moving = np.abs(episode.actions).sum(axis=1) > 0
    assert 12 <= moving.sum() <= 17  # 1.5 s of driving
    np.testing.assert_allclose(
        episode.actions[moving], [[0.5 * SCALE_X, -1.0 * SCALE_Y, 0.0]] * moving.sum(), atol=1e-6
    )
    assert episode.flags["idle_start_frames"] >= 3 and episode.flags["idle_end_frames"] >= 3
    assert episode.event_types[0] == "episode_start" and "start_action" in episode.event_types
    assert episode.sample_rate_hz == 10.0 and episode.attrs["camera_topic"] == f"{operator.get_namespace()}/camera"
    # the quality verdicts stored in the file are the ones the state topic reported
    assert wait_for(lambda: "last_quality" in operator.state)
    assert operator.state["last_quality"] == [verdict.to_dict() for verdict in episode.stored_verdicts]


def test_discard_leaves_no_file_and_stale_camera_blocks_start(nodes, tmp_path):
    _, _, operator = nodes
    operator.call("select_left")
    assert operator.call("start").success
    assert wait_for(lambda: list(tmp_path.glob("*.partial")), 3.0)  # frames are on disk
    assert operator.call("discard").success
    assert list(tmp_path.iterdir()) == []
    operator.camera_on = False
    time.sleep(0.8)
    response = operator.call("start")
    assert not response.success and "camera is stale" in response.message
    assert operator.state["state"] == "idle" and list(tmp_path.iterdir()) == []


def test_stop_with_zero_frames_saves_nothing(ros, tmp_path):
    # One sample every 5 s: start and stop land between samples.
    created = start_nodes(ros, "/slow", tmp_path, sample_rate_hz=0.2, instruction="left")
    operator = created[2]
    try:
        assert operator.call("start").success
        response = operator.call("stop")
        assert response.success and response.message == "stopped with no frames; nothing saved"
        assert list(tmp_path.iterdir()) == []
    finally:
        for node in created:
            ros.remove_node(node)
            node.destroy_node()


def test_vanished_joy_stream_stops_teleop(nodes):
    _, _, operator = nodes
    operator.buttons[DEADMAN] = 1
    operator.axes[1] = 1.0
    assert wait_for(lambda: operator.twists and operator.twists[-1][1].linear.x == pytest.approx(SCALE_X))
    operator.joy_on = False
    gone = time.monotonic()
    assert wait_for(lambda: operator.twists[-1][1].linear.x == 0.0, 2.0)
    stop_time = operator.twists[-1][0]
    assert stop_time - gone < 0.5 + 0.2  # timeout plus a watchdog period and delivery
    time.sleep(0.5)
    assert operator.twists[-1][0] == stop_time  # one stop, then silence


def test_sigkilled_recorder_is_recovered_on_restart(ros, tmp_path):
    operator = Operator("/crash")
    ros.add_node(operator)
    command = [
        sys.executable,
        "-m",
        "mobile_vla_ros.nodes.recorder_node",
        "--ros-args",
        "-r",
        "__ns:=/crash",
        "-p",
        f"output_dir:={tmp_path}",
        "-r",
        "image:=camera",
        "-p",
        "instruction:=left",
    ]
    process = None
    try:
        process = subprocess.Popen(command, env=os.environ.copy(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        timer = operator.create_timer(0.05, lambda: operator.cmd_vel.publish(Twist()))
        assert wait_for(lambda: operator.state.get("state") == "idle", 20.0)
        # The fresh process may not have matched the camera yet: it refuses until it has a frame.
        responses = []
        assert wait_for(lambda: responses.append(operator.call("start")) or responses[-1].success, 10.0, 0.2), (
            responses[-1].message
        )
        assert wait_for(lambda: operator.state.get("frames", 0) >= 20, 10.0)
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=10)
        assert len(list(tmp_path.glob("*.h5.partial"))) == 1 and list_episodes(tmp_path) == []

        operator.state = {}
        process = subprocess.Popen(command, env=os.environ.copy(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        assert wait_for(lambda: operator.state.get("state") == "idle", 20.0)
        [path] = list_episodes(tmp_path)
        episode = read_episode(path)
        assert episode.flags["truncated"] is True and episode.num_frames >= 10
        assert episode.instruction == LAB_INSTRUCTIONS["left"]
        assert not list(tmp_path.glob("*.partial"))
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=10) == 0
        timer.cancel()
    finally:
        if process is not None and process.poll() is None:
            process.kill()
        ros.remove_node(operator)
        operator.destroy_node()


@pytest.mark.parametrize("gamepad", ["xbox", "dragonrise"])
def test_record_yaml_and_gamepad_profiles_set_only_declared_parameters(ros, gamepad):
    import ast
    from pathlib import Path

    import yaml

    from mobile_vla_ros.nodes.node_specs import flatten_parameters

    root = Path(__file__).resolve().parents[1]
    sections = {}
    for path in (root / "config/record.yaml", root / f"config/gamepads/{gamepad}.yaml"):
        for node_name, body in yaml.safe_load(path.read_text()).items():
            sections.setdefault(node_name, {}).update(flatten_parameters(body["ros__parameters"]))
    for node_class, name in ((TeleopNode, "teleop_node"), (RecorderNode, "recorder_node")):
        values = sections[name]
        node = node_class(
            namespace=f"/yaml_{gamepad}", parameter_overrides=[Parameter(k, value=v) for k, v in values.items()]
        )
        try:  # wrong types would have raised above; unknown names are silently ignored, so check them
            assert [key for key in values if not node.has_parameter(key)] == []
            assert all(node.get_parameter(key).value == value for key, value in values.items())
        finally:
            node.destroy_node()
    launch = ast.parse((root / "launch/record.launch.py").read_text())
    executables = {
        node.value.value for node in ast.walk(launch) if isinstance(node, ast.keyword) and node.arg == "executable"
    }
    assert executables == {"joy_node", "teleop_node", "recorder_node"}
    setup = (root / "setup.py").read_text()
    assert '"teleop_node"' in setup and '"recorder_node"' in setup

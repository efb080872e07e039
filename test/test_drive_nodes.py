"""The drive runtime over real DDS: camera_window_node + inference_node (tiny checkpoint) in this
process, driven by a harness node that plays the camera, the operator and the robot base."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch

rclpy = pytest.importorskip("rclpy")
from diagnostic_msgs.msg import DiagnosticArray  # noqa: E402
from geometry_msgs.msg import Twist  # noqa: E402
from rclpy.executors import SingleThreadedExecutor  # noqa: E402
from rclpy.node import Node  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402
from rclpy.qos import DurabilityPolicy, QoSProfile, qos_profile_sensor_data  # noqa: E402
from sensor_msgs.msg import Image, TimeReference  # noqa: E402
from std_msgs.msg import String  # noqa: E402

from mobile_vla_ros.nodes.camera_window_node import CameraWindowNode  # noqa: E402
from mobile_vla_ros.nodes.inference_node import InferenceNode  # noqa: E402
from mobile_vla_ros.nodes.ros_image import rgb_to_image_msg  # noqa: E402
from mobile_vla_ros.policy.config import SCHEMA_VERSION, PolicyConfig  # noqa: E402

pytestmark = pytest.mark.ros

CAMERA_HZ = 30.0
CONTROL_HZ = 20.0
CONTROL_PERIOD = 1.0 / CONTROL_HZ
# DDS delivery and thread scheduling on a busy 2-core machine, on top of the bounds the issue sets.
DELIVERY_SLACK = 0.1


class Harness(Node):
    """Camera (bgr8 frames at 30 Hz), operator (instruction, teleop) and base (records cmd_vel)."""

    def __init__(self, context):
        super().__init__("drive_test_harness", context=context)
        self.rng = np.random.default_rng(0)
        self.lock = threading.Lock()
        self.streaming = False
        self.last_frame_stamp = None
        self.twists: list[tuple[float, float, float]] = []  # (receipt time, linear.x, linear.y)
        self.full_twists: list[Twist] = []
        self.windows: list[tuple[float, int]] = []  # (receipt time, height)
        self.window_stamps: list[float] = []
        self.built: list[tuple[float, float]] = []  # window/built: (capture stamp, build time)
        self.answered: list[tuple[float, float, str]] = []  # window/answered: (capture stamp, time, source)
        self.active: list[str] = []
        self.status: dict[str, str] = {}
        self.image_pub = self.create_publisher(Image, "image", qos_profile_sensor_data)
        self.instruction_pub = self.create_publisher(String, "instruction", 10)
        self.teleop_pub = self.create_publisher(Twist, "cmd_vel_teleop", 10)
        latched = QoSProfile(depth=1, durability=DurabilityPolicy.TRANSIENT_LOCAL)
        self.create_subscription(Twist, "cmd_vel", self._on_twist, 50)
        self.create_subscription(Image, "window", self._on_window, 10)
        self.create_subscription(TimeReference, "window/built", self._on_built, 10)
        self.create_subscription(TimeReference, "window/answered", self._on_answered, 10)
        self.create_subscription(String, "instruction/active", lambda msg: self.active.append(msg.data), latched)
        self.create_subscription(DiagnosticArray, "/diagnostics", self._on_status, 10)
        self.create_timer(1.0 / CAMERA_HZ, self._on_camera_tick)

    def now(self) -> float:
        return self.get_clock().now().nanoseconds * 1e-9

    def frame_msg(self, height=120, width=160) -> Image:
        msg = rgb_to_image_msg(
            self.rng.integers(0, 256, (height, width, 3), dtype=np.uint8), self.get_clock().now().to_msg(), "camera"
        )
        msg.encoding = "bgr8"  # any 3-channel content will do; exercises the BGR -> RGB path
        return msg

    def _on_camera_tick(self):
        if self.streaming:
            msg = self.frame_msg()
            self.image_pub.publish(msg)
            self.last_frame_stamp = msg.header.stamp.sec + msg.header.stamp.nanosec * 1e-9

    def _on_twist(self, msg: Twist):
        with self.lock:
            self.twists.append((self.now(), msg.linear.x, msg.linear.y))
            self.full_twists.append(msg)

    def _on_window(self, msg: Image):
        with self.lock:
            self.windows.append((self.now(), msg.height))
            self.window_stamps.append(msg.header.stamp.sec + msg.header.stamp.nanosec * 1e-9)

    def _on_built(self, msg: TimeReference):
        with self.lock:
            self.built.append(
                (msg.header.stamp.sec + msg.header.stamp.nanosec * 1e-9, msg.time_ref.sec + msg.time_ref.nanosec * 1e-9)
            )

    def _on_answered(self, msg: TimeReference):
        with self.lock:
            self.answered.append(
                (
                    msg.header.stamp.sec + msg.header.stamp.nanosec * 1e-9,
                    msg.time_ref.sec + msg.time_ref.nanosec * 1e-9,
                    msg.source,
                )
            )

    def _on_status(self, msg: DiagnosticArray):
        for status in msg.status:
            if status.name.startswith("inference_node"):
                self.status = {kv.key: kv.value for kv in status.values}

    def twists_since(self, t0: float) -> np.ndarray:
        with self.lock:
            return np.array([row for row in self.twists if row[0] >= t0]).reshape(-1, 3)


def wait_until(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = predicate()
        if result:
            return result
        time.sleep(0.01)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


class Spinning:
    """A node spun by its own executor thread, as if it were its own process."""

    def __init__(self, node: Node, context):
        self.node = node
        # One thread per node, as one process per node would have: rclpy's multi-threaded executor
        # burns interpreter time in its wait loop that the control timer then lacks on 2 cores.
        self.executor = SingleThreadedExecutor(context=context)
        self.executor.add_node(node)
        self.thread = threading.Thread(target=self.executor.spin, daemon=True)
        self.thread.start()

    def stop(self):
        self.executor.shutdown()
        self.thread.join(5)
        self.node.destroy_node()


@pytest.fixture(scope="module")
def ros(tiny_checkpoint):
    context = rclpy.Context()
    rclpy.init(context=context)
    camera = CameraWindowNode(context=context, parameter_overrides=[Parameter("model_dir", value=str(tiny_checkpoint))])
    harness = Harness(context)
    spinning = [Spinning(camera, context), Spinning(harness, context)]
    yield context, camera, harness
    for item in spinning:
        item.stop()
    rclpy.try_shutdown(context=context)


@pytest.fixture
def start_inference(ros, tiny_checkpoint, tiny_base_model):
    """Start an inference node with parameter overrides; stops it after the test."""
    context = ros[0]
    started = []

    def start(**params):
        defaults = dict(
            model_dir=str(tiny_checkpoint),
            base_model_dir=str(tiny_base_model),
            device="cpu",
            control_rate_hz=CONTROL_HZ,
            start_enabled=True,
            status_period_s=0.2,
        )
        defaults.update(params)
        node = InferenceNode(context=context, parameter_overrides=[Parameter(k, value=v) for k, v in defaults.items()])
        started.append(Spinning(node, context))
        return node

    yield start
    for item in started:
        item.node.stop()
        item.stop()


@pytest.fixture
def camera_on(ros):
    harness = ros[2]
    harness.streaming = True
    yield harness
    harness.streaming = False


def wait_for_motion(harness: Harness, sign: float, timeout=20.0) -> float:
    """Until cmd_vel has linear.y with the given sign; returns the receipt time."""
    t0 = harness.now()
    return wait_until(
        lambda: next((t for t, _, y in harness.twists_since(t0) if np.sign(y) == sign), None),
        timeout,
        f"cmd_vel with linear.y sign {sign:+.0f}",
    )


def test_frames_become_windows_and_the_policy_drives_by_its_instruction(start_inference, camera_on, tiny_checkpoint):
    config = PolicyConfig.load(tiny_checkpoint)
    node = start_inference(instruction="left", max_accel=50.0)
    harness = camera_on
    wait_for_motion(harness, +1)  # left: positive linear.y (REP 103: y points left)
    t0 = harness.now()
    time.sleep(1.5)
    twists = harness.twists_since(t0)
    with harness.lock:
        windows = [row for row in harness.windows if row[0] >= t0]
        full = list(harness.full_twists[-len(twists) :])
    # cmd_vel at the control rate, every one moving left; windows at the model's rate, full size.
    assert len(twists) == pytest.approx(1.5 * CONTROL_HZ, rel=0.2)
    assert np.all(twists[:, 2] > 0.05)
    assert len(windows) == pytest.approx(1.5 / config.action_dt, rel=0.25)
    assert {height for _, height in windows} == {config.window_size * config.image_size}
    assert all(t.linear.z == t.angular.x == t.angular.y == t.angular.z == 0.0 for t in full)
    # The status reports what the issue asks for.
    status = wait_until(lambda: harness.status if harness.status.get("state") == "DRIVING" else None, 3, "status")
    for key in ("inference_latency_ms_p50", "obs_to_cmd_age_ms_p95", "control_rate_hz"):
        assert float(status[key]) > 0, key
    assert float(status["control_rate_hz"]) == pytest.approx(CONTROL_HZ, rel=0.2)
    assert status["instruction"] == node.active_instruction == config.instructions[0]
    # Observation-to-command age stays inside the chunk, i.e. the executor indexes by elapsed time.
    assert float(status["obs_to_cmd_age_ms_p95"]) < config.chunk_size * config.action_dt * 1000


STAGES = (
    "frame_age_at_build",
    "window_transport",
    "preprocess",
    "queue_wait",
    "backbone",
    "head",
    "inference_latency",
    "executor_delay",
    "obs_to_cmd_age",
)


def test_diagnostics_show_every_latency_stage(start_inference, camera_on):
    """A late robot tells where the time went: p50/p95/p99 of each stage in /diagnostics."""
    start_inference(instruction="left")
    harness = camera_on
    wait_for_motion(harness, +1)
    status = wait_until(
        lambda: harness.status if all(harness.status.get(f"{stage}_ms_p95") for stage in STAGES) else None,
        10,
        "every stage's p95 in /diagnostics",
    )
    for stage in STAGES:
        p50, p95, p99 = (float(status[f"{stage}_ms_p{q}"]) for q in (50, 95, 99))
        assert 0 <= p50 <= p95 <= p99 < 5000, stage
    assert float(status["backbone_ms_p50"]) > 0 and float(status["frame_age_at_build_ms_p50"]) > 0
    # The whole step contains its backbone; a command's observation is at least as old as its window.
    assert float(status["inference_latency_ms_p50"]) >= float(status["backbone_ms_p50"]) - 0.1
    assert float(status["obs_to_cmd_age_ms_p50"]) >= float(status["frame_age_at_build_ms_p50"]) - 0.1
    # window/built is the window's own header (capture stamp) plus its build time: standard messages.
    with harness.lock:
        built, stamps = list(harness.built), set(harness.window_stamps)
        answered = list(harness.answered)
    assert built and all(capture in stamps and build >= capture for capture, build in built[-5:])
    # window/answered: the node is done with a window (what the simulator's lockstep waits for).
    assert answered and all(
        capture in stamps and done >= capture and source == "chunk" for capture, done, source in answered[-5:]
    )


def test_switching_left_to_right_flips_linear_y_within_one_inference_and_one_control_period(
    start_inference, camera_on, tiny_checkpoint
):
    config = PolicyConfig.load(tiny_checkpoint)
    node = start_inference(instruction="left", max_accel=50.0)
    harness = camera_on
    wait_for_motion(harness, +1)
    time.sleep(0.5)
    switched_at = harness.now()
    harness.instruction_pub.publish(String(data="right"))
    flipped_at = wait_for_motion(harness, -1, timeout=5)
    latency_p95 = node.status.latency.percentile_ms("inference_latency", 95) / 1000.0
    inference_period = config.action_dt + latency_p95  # next window + its inference
    assert flipped_at - switched_at <= inference_period + CONTROL_PERIOD + DELIVERY_SLACK
    right = wait_until(lambda: [a for a in harness.active if "right" in a], 2, "instruction/active")
    assert right[-1] == next(text for text in config.instructions if text.endswith("right"))
    # A late subscriber still gets the active instruction (transient local).
    late = []
    late_sub = harness.create_subscription(
        String,
        "instruction/active",
        lambda msg: late.append(msg.data),
        QoSProfile(depth=1, durability=DurabilityPolicy.TRANSIENT_LOCAL),
    )
    wait_until(lambda: late, 3, "latched instruction")
    assert late == [right[-1]]
    harness.destroy_subscription(late_sub)
    # Empty text is refused; the robot keeps going right.
    harness.instruction_pub.publish(String(data="   "))
    time.sleep(0.5)
    assert node.active_instruction == right[-1]
    assert harness.twists_since(harness.now() - 0.3)[:, 2].max() < 0


def test_a_repeated_instruction_is_a_no_op(start_inference, camera_on, capfd):
    """`ros2 topic pub` without --once repeats the message: no log line, no switch, the cache kept."""
    node = start_inference(instruction="left", max_accel=50.0)
    harness = camera_on
    wait_for_motion(harness, +1)
    time.sleep(0.5)
    capfd.readouterr()
    announced = len(harness.active)
    cache_sizes = []
    for _ in range(30):
        harness.instruction_pub.publish(String(data="left"))
        cache_sizes.append(len(node.runner._features))
        time.sleep(1 / 30)
    time.sleep(0.3)
    assert len(harness.active) == announced  # instruction/active was not re-published
    assert "instruction 'left'" not in capfd.readouterr().err
    assert min(cache_sizes) > 1  # a switch would have emptied the feature cache down to the newest frame
    assert harness.twists_since(harness.now() - 0.3)[:, 2].min() > 0


def test_stopping_the_camera_zeroes_cmd_vel_within_the_stale_timeout(start_inference, camera_on):
    stale_timeout = 0.3
    start_inference(camera_stale_timeout_s=stale_timeout, max_accel=50.0)
    harness = camera_on
    wait_for_motion(harness, +1)
    harness.streaming = False
    time.sleep(0.05)
    last_frame = harness.last_frame_stamp
    stopped_at = wait_until(
        lambda: next((t for t, x, y in harness.twists_since(last_frame) if x == 0.0 and y == 0.0), None),
        3,
        "zero cmd_vel",
    )
    assert stopped_at - last_frame <= stale_timeout + CONTROL_PERIOD + DELIVERY_SLACK
    time.sleep(0.5)
    after = harness.twists_since(stopped_at)
    assert len(after) >= 8 and np.all(after[:, 1:] == 0.0)  # zero keeps being published
    # Fresh frames: no motion before a fresh window has been built and inferred.
    with harness.lock:
        windows_before = len(harness.windows)
    restart = harness.now()
    harness.streaming = True
    first_motion = wait_for_motion(harness, +1)
    with harness.lock:
        fresh_windows = [t for t, _ in harness.windows[windows_before:]]
    assert fresh_windows and first_motion > fresh_windows[0] > restart


def test_malformed_frames_are_logged_and_dropped(ros, camera_on, capfd):
    camera, harness = ros[1], camera_on
    wait_until(lambda: harness.windows, 5, "a window")
    harness.streaming = False
    time.sleep(0.3)
    dropped_before, windows_before = camera.dropped_frames, camera.windows_published
    wrong_encoding = harness.frame_msg()
    wrong_encoding.encoding = "rgb161"
    short = harness.frame_msg()
    short.data = bytes(short.data)[: short.step * short.height // 2]
    empty = harness.frame_msg()
    empty.height = empty.width = empty.step = 0
    empty.data = b""
    bad = [wrong_encoding, short, empty]
    for msg in bad:
        msg.header.stamp = harness.get_clock().now().to_msg()
        harness.image_pub.publish(msg)
        time.sleep(0.15)  # each one is due at the model's rate
    wait_until(lambda: camera.dropped_frames - dropped_before == len(bad), 3, "three dropped frames")
    assert camera.windows_published == windows_before
    harness.streaming = True
    wait_until(lambda: camera.windows_published > windows_before, 5, "windows after the malformed frames")
    assert "dropping malformed camera frame" in capfd.readouterr().err


def test_limits_hold_for_policy_output(start_inference, camera_on):
    max_y, max_speed, max_accel = 0.2, 0.25, 1.0
    start_inference(max_linear_y=max_y, max_speed=max_speed, max_accel=max_accel)
    harness = camera_on
    t0 = harness.now()
    wait_for_motion(harness, +1)
    harness.instruction_pub.publish(String(data="right"))
    wait_for_motion(harness, -1)
    time.sleep(0.5)
    twists = harness.twists_since(t0)[:, 1:]
    speeds = np.linalg.norm(twists, axis=1)
    steps = np.linalg.norm(np.diff(twists, axis=0), axis=1)
    assert np.abs(twists[:, 1]).max() <= max_y + 1e-9
    assert speeds.max() <= max_speed + 1e-9
    assert steps.max() <= max_accel * CONTROL_PERIOD + 1e-9
    # The limits were really in play: the policy asks for more than they allow.
    assert speeds.max() == pytest.approx(max_speed, abs=0.01)
    assert steps.max() == pytest.approx(max_accel * CONTROL_PERIOD, abs=1e-3)


def test_disabled_node_publishes_zero_until_enabled_and_teleop_overrides(start_inference, camera_on):
    from std_msgs.msg import Bool

    node = start_inference(start_enabled=False, max_accel=50.0, override_hold_s=0.3)
    harness = camera_on
    enable_pub = harness.create_publisher(Bool, "enable", 10)
    time.sleep(1.5)  # windows and chunks flow, but the gate is closed
    assert node.status.counts["chunks"] > 0
    assert np.all(harness.twists_since(harness.now() - 1.0)[:, 1:] == 0.0)
    teleop = Twist()
    teleop.linear.x = 0.15
    t0 = harness.now()
    for _ in range(5):
        harness.teleop_pub.publish(teleop)
        time.sleep(0.05)
    assert np.any(np.isclose(harness.twists_since(t0)[:, 1], 0.15))
    wait_until(lambda: enable_pub.get_subscription_count() > 0, 3, "enable subscriber")
    enable_pub.publish(Bool(data=True))
    wait_for_motion(harness, +1)
    harness.destroy_publisher(enable_pub)


@pytest.mark.parametrize("broken", ["policy_json", "base_model"])
def test_a_model_that_fails_to_load_exits_nonzero_before_publishing(
    broken, ros, tiny_checkpoint, tiny_base_model, tmp_path
):
    model_dir, base_dir = tiny_checkpoint, tiny_base_model
    if broken == "policy_json":
        model_dir = tmp_path / "model"
        model_dir.mkdir()
        (model_dir / "policy.json").write_text(
            json.dumps({"schema_version": SCHEMA_VERSION, "window_size": 8, "bogus": 1})
        )
    else:
        base_dir = tmp_path / "not_a_model"
        base_dir.mkdir()
    harness = ros[2]
    topic = f"cmd_vel_broken_{broken}"
    heard = []
    sub = harness.create_subscription(Twist, topic, heard.append, 10)
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "mobile_vla_ros.nodes.inference_node",
            "--ros-args",
            "-p",
            f"model_dir:={model_dir}",
            "-p",
            f"base_model_dir:={base_dir}",
            "-r",
            f"cmd_vel:={topic}",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        env=dict(os.environ),
    )
    time.sleep(0.2)
    harness.destroy_subscription(sub)
    assert result.returncode == 1, result.stderr
    assert "cannot start" in result.stderr and ("bogus" in result.stderr or "not_a_model" in result.stderr), (
        result.stderr
    )
    assert "Traceback" not in result.stderr
    assert heard == []


def test_compressed_camera_with_rotation(ros, tiny_checkpoint):
    """compressed: true reads <image>/compressed JPEGs; rotate_180 turns the frame upside down."""
    from sensor_msgs.msg import CompressedImage

    from mobile_vla_ros.data.images import encode_jpeg, split_window

    context, _, harness = ros
    config = PolicyConfig.load(tiny_checkpoint)
    camera = CameraWindowNode(
        context=context,
        cli_args=["--ros-args", "-r", "image/compressed:=jpeg_camera/compressed", "-r", "window:=jpeg_window"],
        parameter_overrides=[
            Parameter("model_dir", value=str(tiny_checkpoint)),
            Parameter("compressed", value=True),
            Parameter("rotate_180", value=True),
        ],
    )
    spinning = Spinning(camera, context)
    windows = []
    sub = harness.create_subscription(Image, "jpeg_window", windows.append, 10)
    pub = harness.create_publisher(CompressedImage, "jpeg_camera/compressed", 10)
    top_white = np.zeros((120, 160, 3), np.uint8)
    top_white[:60] = 255
    try:
        wait_until(lambda: pub.get_subscription_count() > 0, 5, "compressed subscriber")
        for _ in range(config.window_size + 2):
            msg = CompressedImage(format="jpeg", data=encode_jpeg(top_white))
            msg.header.stamp = harness.get_clock().now().to_msg()
            pub.publish(msg)
            time.sleep(config.action_dt + 0.01)
        wait_until(lambda: windows, 5, "a window from compressed frames")
    finally:
        harness.destroy_subscription(sub)
        harness.destroy_publisher(pub)
        spinning.stop()
    tall = np.frombuffer(bytes(windows[-1].data), np.uint8).reshape(windows[-1].height, windows[-1].width, 3)
    frames = split_window(tall, config.image_size)
    assert frames.shape[0] == config.window_size
    half = config.image_size // 2
    assert frames[-1, : half - 4].mean() < 10 and frames[-1, half + 4 :].mean() > 245  # white now at the bottom


def test_a_camera_mounted_otherwise_than_in_training_is_refused(ros, tiny_checkpoint, tmp_path):
    """A policy trained on upside-down frames must not drive on upright ones (or the other way round)."""
    import shutil

    from mobile_vla_ros.errors import MobileVlaError

    model = Path(shutil.copytree(tiny_checkpoint, tmp_path / "rotated_policy"))
    config = json.loads((model / "policy.json").read_text())
    config["camera"] = {"rotate_180": True, "color_order": "rgb", "resize": "squash"}
    (model / "policy.json").write_text(json.dumps(config))
    context = ros[0]

    def camera(**settings):
        return CameraWindowNode(
            context=context,
            parameter_overrides=[
                Parameter("model_dir", value=str(model)),
                *(Parameter(k, value=v) for k, v in settings.items()),
            ],
        )

    with pytest.raises(MobileVlaError, match=r"rotate_180 True in training, False here.*allow_camera_mismatch"):
        camera(rotate_180=False)
    for settings in ({"rotate_180": True}, {"rotate_180": False, "allow_camera_mismatch": True}):
        camera(**settings).destroy_node()


def test_a_takeover_becomes_a_correction_episode_with_both_action_streams(start_inference, camera_on, tmp_path):
    """drive.launch.py record_corrections:=true: the person takes over on cmd_vel_teleop while the policy
    drives left; the takeover is saved with the person's commands as actions and the policy's beside them."""
    from mobile_vla_ros.data.correction_episodes import HUMAN, POLICY_ACTIONS
    from mobile_vla_ros.data.episode import list_episodes, read_episode
    from mobile_vla_ros.policy.instructions import LAB_INSTRUCTIONS

    out = tmp_path / "corrections"
    node = start_inference(
        record_corrections=True,
        corrections_dir=str(out),
        correction_context_s=1.0,
        correction_end_hold_s=0.5,
        override_hold_s=0.3,
        max_accel=50.0,
    )
    harness = camera_on
    wait_for_motion(harness, +1)
    time.sleep(1.5)  # context: the policy drives
    teleop = Twist()
    teleop.linear.x, teleop.linear.y = 0.2, -0.4  # the person steers right where the policy goes left
    for _ in range(30):
        harness.teleop_pub.publish(teleop)
        time.sleep(0.05)
    saved = wait_until(lambda: list_episodes(out) if out.exists() else [], 10, "the correction episode")
    assert not node.corrections.recording
    episode = read_episode(saved[0])
    human, proposals = episode.extras[HUMAN], episode.extras[POLICY_ACTIONS]
    assert episode.attrs["correction"] and episode.instruction == LAB_INSTRUCTIONS["left"]
    assert len(human) == len(proposals) == episode.num_frames
    assert 8 <= human.sum() <= 20  # 1.5 s of teleop at 10 Hz, up to override_hold_s longer
    assert 8 <= np.argmax(human) <= 11  # the context: 1 s before the takeover
    assert np.allclose(episode.actions[human, :2], [0.2, -0.4])
    assert np.all(episode.actions[: np.argmax(human), 1] > 0.3)  # before: the policy's left motion, executed
    # What the policy wanted meanwhile: still left. NaN marks a frame with no proposal (under load the
    # harness's camera stamps can jump and the window refills); most frames must have one.
    meanwhile = proposals[human, 1]
    proposed = meanwhile[~np.isnan(meanwhile)]
    assert len(proposed) >= 0.6 * len(meanwhile) and np.all(proposed > 0.3), meanwhile


# ---- familiarity monitor (issue 25): frames from another scene stop the robot until familiar ones return
FLOOR_GREY, FOREIGN_RED = (110, 120, 115), (200, 30, 30)


def scene_frame(colour, rng, height=120, width=160) -> np.ndarray:
    """A flat scene with sensor noise: the 'room' of the familiarity test."""
    noise = rng.integers(-6, 7, (height, width, 3))
    return np.clip(np.array(colour) + noise, 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def familiar_checkpoint(tiny_checkpoint, tiny_base_model, tmp_path_factory):
    """The tiny checkpoint with its familiarity statistics and thresholds taken from the grey scene,
    at every precision the node may run, as training makes them."""
    from mobile_vla_ros.data.images import resize_for_model
    from mobile_vla_ros.policy.checkpoint import load_policy, save_policy
    from mobile_vla_ros.policy.precision import backbone_at
    from mobile_vla_ros.training.metrics import encode_episode

    policy = load_policy(tiny_checkpoint, tiny_base_model)
    rng = np.random.default_rng(1)
    size = policy.config.image_size
    frames = {
        colour: np.stack([resize_for_model(scene_frame(colour, rng), size) for _ in range(48)])
        for colour in (FLOOR_GREY, FOREIGN_RED)
    }
    instruction = policy.config.instructions[0]
    features = {"fp32": {colour: encode_episode(policy, frames[colour], instruction) for colour in frames}}
    for dtype in ("bf16", "fp16"):
        with backbone_at(policy, dtype):
            features[dtype] = {colour: encode_episode(policy, frames[colour], instruction).float() for colour in frames}
    errors = torch.cat(
        [features[dtype][FLOOR_GREY][:32] - features["fp32"][FLOOR_GREY][:32] for dtype in ("bf16", "fp16")]
    )
    policy.normalizer.set_feature_statistics(features["fp32"][FLOOR_GREY][:32], errors)
    scores = {
        colour: torch.stack([policy.normalizer.familiarity(by_colour[colour]) for by_colour in features.values()])
        for colour in frames
    }
    threshold = 2.0 * float(scores[FLOOR_GREY].max())
    assert float(scores[FOREIGN_RED].min()) > 2 * threshold, "the test scenes must differ for the score"
    policy.config.familiarity = {"thresholds": {"p99": threshold, "p99.9": threshold}, "validation_frames": 16}
    return save_policy(policy, tmp_path_factory.mktemp("familiar_policy"))


def test_unfamiliar_frames_stop_the_robot_until_familiar_ones_return(start_inference, camera_on, familiar_checkpoint):
    harness = camera_on
    rng = np.random.default_rng(2)
    scene = {"colour": FLOOR_GREY}

    def frame_msg(height=120, width=160) -> Image:
        msg = rgb_to_image_msg(
            scene_frame(scene["colour"], rng, height, width), harness.get_clock().now().to_msg(), "c"
        )
        return msg

    harness.frame_msg = frame_msg
    harness.status = {}  # not a status of an earlier test's node
    start_inference(model_dir=str(familiar_checkpoint), familiarity_action="stop", max_accel=50.0)
    wait_until(
        lambda: harness.status.get("state") == "DRIVING" and harness.status.get("familiarity") == "familiar",
        30,
        "DRIVING in the familiar scene",
    )

    scene["colour"] = FOREIGN_RED  # a scene the statistics never saw
    status = wait_until(
        lambda: harness.status if harness.status.get("state") == "UNFAMILIAR" else None, 10, "UNFAMILIAR"
    )
    assert status["familiarity"] == "unfamiliar"
    assert float(status["familiarity_latest"]) > float(status["familiarity_threshold"])
    time.sleep(0.3)  # commands in flight
    t0 = harness.now()
    time.sleep(0.5)
    stopped = harness.twists_since(t0)
    assert len(stopped) > 5 and np.all(stopped[:, 1:] == 0.0), "the robot stops, at the control rate"

    scene["colour"] = FLOOR_GREY  # back in the familiar room
    wait_until(lambda: harness.status.get("state") == "DRIVING", 10, "DRIVING again")
    wait_for_motion(harness, +1)
    del harness.frame_msg


def test_ros2_param_set_changes_the_instruction_and_its_presets(start_inference, camera_on, tiny_checkpoint):
    """The parameter services over DDS, as `ros2 param set` calls them: `instruction` switches as a message
    on the instruction topic does and refuses what the topic refuses; new `instruction_presets` serve the
    next instruction message, and a malformed list is refused with the old presets kept."""
    from rcl_interfaces.srv import SetParameters

    config = PolicyConfig.load(tiny_checkpoint)
    left, right = (next(text for text in config.instructions if text.endswith(side)) for side in ("left", "right"))
    harness = camera_on
    harness.status = {}  # not a status of an earlier test's node
    node = start_inference(instruction="left", max_accel=50.0)
    client = harness.create_client(SetParameters, f"{node.get_name()}/set_parameters")  # what `ros2 param set` calls
    assert client.wait_for_service(10)

    def param_set(name: str, value):
        future = client.call_async(SetParameters.Request(parameters=[Parameter(name, value=value).to_parameter_msg()]))
        wait_until(future.done, 10, f"the answer to setting {name}")
        return future.result().results[0]

    def reported(instruction: str) -> None:
        wait_until(lambda: harness.status.get("instruction") == instruction, 10, f"{instruction!r} on /diagnostics")

    reported(left)
    wait_for_motion(harness, +1)
    assert param_set("instruction", "right").successful
    reported(right)
    wait_for_motion(harness, -1)
    for refused, why in (("   ", "empty instruction"), ("x" * 300, "instruction too long")):
        result = param_set("instruction", refused)
        assert not result.successful and why in result.reason, result
    assert node.get_parameter("instruction").value == "right" and node.requested_instruction == right

    assert param_set("instruction_presets", [f"detour={left}"]).successful
    harness.instruction_pub.publish(String(data="detour"))
    reported(left)
    wait_for_motion(harness, +1)
    result = param_set("instruction_presets", ["detour"])
    assert not result.successful and "is not of the form 'name=full instruction'" in result.reason, result
    assert node.get_parameter("instruction_presets").value == [f"detour={left}"]
    harness.instruction_pub.publish(String(data="right"))
    reported(right)
    harness.instruction_pub.publish(String(data="detour"))  # the presets in force before the refused list
    reported(left)
    harness.destroy_client(client)

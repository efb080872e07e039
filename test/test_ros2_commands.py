"""The literal commands of the README, run with the real ROS 2 tools on a colcon-built workspace:
`ros2 launch`, `ros2 topic pub/echo`, `ros2 service call`, `ros2 param get`, and Ctrl-C as a terminal
sends it (SIGINT to the launch's whole process group). Nothing here stands in for `launch`."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

rclpy = pytest.importorskip("rclpy")
if shutil.which("ros2") is None and not Path(sys.executable).with_name("ros2").exists():
    pytest.skip(
        "the ROS 2 command-line tools are not installed (make setup installs them from ../shared/ros2/wheels)",
        allow_module_level=True,
    )

from geometry_msgs.msg import Twist  # noqa: E402
from rclpy.executors import SingleThreadedExecutor  # noqa: E402
from rclpy.node import Node  # noqa: E402
from rclpy.qos import DurabilityPolicy, QoSProfile  # noqa: E402
from sensor_msgs.msg import CompressedImage, Image  # noqa: E402
from std_msgs.msg import String  # noqa: E402

from mobile_vla_ros.data.episode import list_episodes, read_episode  # noqa: E402
from mobile_vla_ros.nodes.ros_image import rgb_to_image_msg  # noqa: E402
from mobile_vla_ros.policy.config import PolicyConfig  # noqa: E402
from mobile_vla_ros.policy.instructions import LAB_INSTRUCTIONS  # noqa: E402

pytestmark = pytest.mark.ros

REPO = Path(__file__).resolve().parents[1]
CONTROL_RATE_HZ = yaml.safe_load((REPO / "config" / "drive.yaml").read_text())["inference_node"]["ros__parameters"][
    "control_rate_hz"
]
HEALTHY_DRIVING_S = 30.0  # the measure: no stop-and-go over 30 s of healthy driving


@pytest.fixture(scope="module")
def ros2_env(colcon_install):
    """The environment of a shell that sourced the workspace (and, without a ROS install, the venv)."""
    shell = f"PATH={Path(sys.executable).parent}:$PATH; . {colcon_install}/setup.sh && env -0"
    output = subprocess.run(["bash", "-c", shell], capture_output=True, check=True, timeout=60).stdout
    env = dict(entry.split("=", 1) for entry in output.decode().split("\0") if "=" in entry)
    env["PYTHONUNBUFFERED"] = "1"
    yield env
    subprocess.run(["ros2", "daemon", "stop"], env=env, capture_output=True, timeout=30)


def ros2(env, *arguments, timeout=60) -> subprocess.CompletedProcess:
    """A `ros2` command as a user types it; one that hangs past `timeout` counts as failed (status 124)."""
    try:
        return subprocess.run(["ros2", *arguments], env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as expired:
        return subprocess.CompletedProcess(expired.cmd, 124, str(expired.stdout or ""), str(expired.stderr or ""))


class Launch:
    """`ros2 launch ...` in its own session, as a terminal runs it; `interrupt()` is Ctrl-C."""

    def __init__(self, env, log_path: Path, *arguments):
        self.log_path = log_path
        self._log = log_path.open("w")
        self.process = subprocess.Popen(
            ["ros2", "launch", "mobile_vla_ros", *arguments],
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def log(self) -> str:
        return self.log_path.read_text()

    def signal_group(self, sig) -> int:
        os.killpg(self.process.pid, sig)
        try:
            return self.process.wait(timeout=30)
        finally:
            self._log.close()

    def kill(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)
        self._log.close()


class Listener(Node):
    """Hears cmd_vel, the active instruction and the drive state the way any other ROS node would."""

    def __init__(self):
        super().__init__("listener")
        self.commands: list[tuple[float, float, float]] = []  # (receipt time, linear.x, linear.y)
        self.last_twist: Twist | None = None
        self.active = None
        self.states: list[str] = []
        self.create_subscription(Twist, "/cmd_vel", self._on_twist, 100)
        self.create_subscription(
            String,
            "/instruction/active",
            lambda msg: setattr(self, "active", msg.data),
            QoSProfile(depth=1, durability=DurabilityPolicy.TRANSIENT_LOCAL),
        )
        from diagnostic_msgs.msg import DiagnosticArray

        self.create_subscription(DiagnosticArray, "/diagnostics", self._on_diagnostics, 10)

    def _on_twist(self, msg: Twist) -> None:
        self.last_twist = msg
        self.commands.append((time.monotonic(), msg.linear.x, msg.linear.y))

    def _on_diagnostics(self, msg) -> None:
        for status in msg.status:
            values = {item.key: item.value for item in status.values}
            if "state" in values:
                self.states.append(values["state"])

    def since(self, t0: float):
        return [(t, x, y) for t, x, y in self.commands if t >= t0]


@pytest.fixture(scope="module")
def listener():
    rclpy.init()
    node = Listener()
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    thread = threading.Thread(target=executor.spin, daemon=True)
    thread.start()
    yield node
    executor.shutdown()
    thread.join(timeout=5)
    node.destroy_node()
    rclpy.shutdown()


def wait_for(predicate, timeout_s: float, period_s: float = 0.1) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(period_s)
    return False


def start_drive(ros2_env, tmp_path, tiny_checkpoint, tiny_base_model, *extra) -> Launch:
    return Launch(
        ros2_env,
        tmp_path / "drive.log",
        "drive.launch.py",
        f"model_dir:={tiny_checkpoint}",
        f"base_model_dir:={tiny_base_model}",
        "use_sim:=true",
        *extra,
    )


def wait_driving(launch: Launch, listener: Listener, sign: float, timeout_s: float = 90.0) -> None:
    def moving():
        recent = listener.since(time.monotonic() - 1.0)
        return len(recent) > 5 and all(np.sign(y) == sign and x > 0 for _, x, y in recent[-5:])

    if not wait_for(moving, timeout_s):
        launch.kill()
        pytest.fail(f"no {'left' if sign > 0 else 'right'} motion on cmd_vel; launch log:\n{launch.log()[-4000:]}")


def test_drive_launch_follows_the_instruction_topic_and_stops_on_ctrl_c(
    ros2_env, tmp_path, tiny_checkpoint, tiny_base_model, listener
):
    """At bf16, what `dtype: auto` runs on GPUs and CPUs with native bf16 (the policy once lost its
    instruction there while fp32 looked fine)."""
    launch = start_drive(ros2_env, tmp_path, tiny_checkpoint, tiny_base_model, "dtype:=bf16")
    try:
        wait_driving(launch, listener, sign=+1.0)
        t0, flips_before = time.monotonic(), launch.log().count("DRIVING -> STALE")
        time.sleep(HEALTHY_DRIVING_S)
        commands = listener.since(t0)
        stamps = [t for t, _, _ in commands]
        rate = (len(stamps) - 1) / (stamps[-1] - stamps[0])
        assert abs(rate - CONTROL_RATE_HZ) <= 0.1 * CONTROL_RATE_HZ, f"cmd_vel at {rate:.1f} Hz"
        stops = sum(1 for _, x, y in commands if x == 0.0 and y == 0.0)
        flips = launch.log().count("DRIVING -> STALE") - flips_before
        assert (flips, stops) == (0, 0), (
            f"stop-and-go: {flips} DRIVING -> STALE, {stops} zero commands in "
            f"{HEALTHY_DRIVING_S:.0f} s; launch log:\n{launch.log()[-3000:]}"
        )

        published = ros2(ros2_env, "topic", "pub", "--once", "/instruction", "std_msgs/msg/String", "{data: right}")
        sent = time.monotonic()  # the message is out once the command has returned
        assert published.returncode == 0, published.stderr
        wait_driving(launch, listener, sign=-1.0, timeout_s=30.0)
        # The mean linear.y over the last 0.25 s (5 commands at 20 Hz) turns negative within 2 s.
        commands = listener.since(sent - 0.25)
        flipped = next(
            t
            for index, (t, _, _) in enumerate(commands)
            if index >= 4 and np.mean([y for _, _, y in commands[index - 4 : index + 1]]) < 0
        )
        print(f"instruction switch: mean linear.y negative {flipped - sent:.2f} s after `ros2 topic pub` returned")
        assert flipped - sent <= 2.0, f"linear.y turned {flipped - sent:.2f} s after the instruction"
        echoed = retry(lambda: ros2(ros2_env, "topic", "echo", "--once", "/instruction/active", timeout=30))
        assert LAB_INSTRUCTIONS["right"] in echoed.stdout

        assert listener.last_twist.linear.y < 0
        code = launch.signal_group(signal.SIGINT)
    except BaseException:
        launch.kill()
        raise
    time.sleep(0.5)  # the last messages in flight
    last = listener.last_twist
    assert (last.linear.x, last.linear.y, last.linear.z, last.angular.x, last.angular.y, last.angular.z) == (0.0,) * 6
    assert code == 0, launch.log()[-3000:]


DRIVE_ARGUMENTS_GIVEN = {  # argument -> value given; with use_sim:=true, model_dir and base_model_dir
    "image_topic": "/front_camera/image_raw",
    "compressed": "false",
    "rotate_180": "true",
    "instruction": "right",
    "device": "cpu",
    "dtype": "fp32",
    "quantize": "int8",
    "enable": "true",
    "record_corrections": "true",
    "lockstep": "true",
}
EXERCISED_ELSEWHERE = {"backend", "onnx_dir"}  # test_drive_launch_runs_kosmos2_in_onnx_runtime
EXERCISED_ELSEWHERE |= {"namespace", "cmd_vel_topic"}  # test_drive_launch_in_a_namespace_with_cmd_vel_renamed
NOT_RUNNABLE_HERE = {  # need the `joy` driver package, which has no wheel (README: what is not tested)
    "teleop",
    "use_joy",
    "gamepad",
    "gamepad_config",
}


def test_drive_launch_runs_kosmos2_in_onnx_runtime(ros2_env, tmp_path, tiny_checkpoint, tiny_base_model, listener):
    """backend:=onnxruntime: the graph of `mobile-vla export-onnx` encodes the frames and the
    simulated robot drives to the instructed side; Ctrl-C still leaves a zero command."""
    from mobile_vla_ros.cli.main import main

    onnx_dir = tmp_path / "onnx"
    export = ["export-onnx", str(tiny_checkpoint), "--base-model", str(tiny_base_model), "--out", str(onnx_dir)]
    assert main(export) == 0
    launch = start_drive(
        ros2_env,
        tmp_path,
        tiny_checkpoint,
        tiny_base_model,
        "backend:=onnxruntime",
        f"onnx_dir:={onnx_dir}",
        "instruction:=right",
    )
    try:
        wait_driving(launch, listener, sign=-1.0)
        for name, value in (("backend", "onnxruntime"), ("onnx_dir", str(onnx_dir))):
            got = retry(lambda name=name: ros2(ros2_env, "param", "get", "/inference_node", name, timeout=30)).stdout
            assert got.strip().endswith(value), f"{name}: {got}"
        assert "(onnxruntime, cpu, fp32: the ONNX graph" in launch.log(), launch.log()[-3000:]
        code = launch.signal_group(signal.SIGINT)
    except BaseException:
        launch.kill()
        raise
    time.sleep(0.5)
    assert (listener.last_twist.linear.x, listener.last_twist.linear.y) == (0.0, 0.0)
    assert code == 0, launch.log()[-3000:]


def edited_yaml(tmp_path: Path, name: str, node: str, key: str, value) -> Path:
    document = yaml.safe_load((REPO / "config" / name).read_text())
    document[node]["ros__parameters"][key] = value
    path = tmp_path / f"edited_{name}"
    path.write_text(yaml.safe_dump(document))
    return path


def test_every_drive_argument_reaches_its_node_and_sigterm_leaves_a_zero_command(
    ros2_env, tmp_path, tiny_checkpoint, tiny_base_model, listener
):
    listed = show_args(ros2_env, "drive.launch.py")
    given = {**DRIVE_ARGUMENTS_GIVEN, "corrections_dir": tmp_path / "corrections"}
    exercised = {"model_dir", "base_model_dir", "use_sim", "params_file", *given, *EXERCISED_ELSEWHERE}
    assert listed == exercised | NOT_RUNNABLE_HERE, "a launch argument without a test, or a test without an argument"
    params = edited_yaml(tmp_path, "drive.yaml", "inference_node", "max_accel", 1.75)
    launch = start_drive(
        ros2_env,
        tmp_path,
        tiny_checkpoint,
        tiny_base_model,
        f"params_file:={params}",
        *(f"{name}:={value}" for name, value in given.items()),
    )
    try:
        wait_driving(launch, listener, sign=-1.0)  # image_topic, use_sim, enable, instruction:=right
        expected = {
            ("/camera_window_node", "rotate_180"): "True",
            ("/camera_window_node", "compressed"): "False",
            ("/inference_node", "device"): "cpu",
            ("/inference_node", "dtype"): "fp32",
            ("/inference_node", "quantize"): "int8",
            ("/inference_node", "instruction"): "right",
            ("/inference_node", "start_enabled"): "True",
            ("/inference_node", "max_accel"): "1.75",
            ("/inference_node", "record_corrections"): "True",
            ("/inference_node", "corrections_dir"): str(tmp_path / "corrections"),
            ("/sim_node", "lockstep"): "True",  # one physics step per control tick, a frame per model frame
            ("/sim_node", "physics_rate_hz"): str(float(CONTROL_RATE_HZ)),
            ("/sim_node", "camera_rate_hz"): str(1.0 / PolicyConfig.load(tiny_checkpoint).action_dt),
            ("/inference_node", "use_sim_time"): "True",
            ("/camera_window_node", "use_sim_time"): "True",
        }
        for (node, name), value in expected.items():
            got = retry(lambda node=node, name=name: ros2(ros2_env, "param", "get", node, name, timeout=30)).stdout
            assert got.strip().endswith(value), f"{node} {name}: {got}"
        clock = retry(lambda: ros2(ros2_env, "topic", "echo", "--once", "/clock", timeout=30)).stdout
        assert "sec:" in clock, clock

        # A speed limit changes while driving; a value the limits refuse changes nothing.
        assert max(np.hypot(x, y) for _, x, y in listener.since(time.monotonic() - 1.0)) > 0.5
        limited = ros2(ros2_env, "param", "set", "/inference_node", "max_speed", "0.3", timeout=30)
        assert "Set parameter successful" in limited.stdout, limited
        set_at = time.monotonic()

        def obeys() -> bool:
            recent = [np.hypot(x, y) for t, x, y in listener.since(set_at) if t > time.monotonic() - 1.0]
            return len(recent) >= 5 and max(recent) <= 0.3 + 1e-6 and max(recent) > 0.05  # slower, still driving

        assert wait_for(obeys, 15.0), listener.since(set_at)[-10:]
        refused = ros2(ros2_env, "param", "set", "/inference_node", "max_speed", "-1.0", timeout=30)
        assert "must be a positive number" in refused.stdout + refused.stderr, refused
        got = ros2(ros2_env, "param", "get", "/inference_node", "max_speed", timeout=30).stdout
        assert got.strip().endswith("0.3"), got
        launch.signal_group(signal.SIGTERM)
    except BaseException:
        launch.kill()
        raise
    time.sleep(0.5)
    last = listener.last_twist
    assert (last.linear.x, last.linear.y) == (0.0, 0.0)


class Camera(Node):
    def __init__(self, topic: str):
        super().__init__("camera")
        self.publisher = self.create_publisher(Image, topic, 10)
        self.count = 0
        self.create_timer(1 / 30, self._publish)

    def _publish(self):
        self.count += 1
        image = np.full((48, 64, 3), self.count % 250, np.uint8)
        self.publisher.publish(rgb_to_image_msg(image, stamp=self.get_clock().now().to_msg()))


def test_record_launch_service_start_then_ctrl_c_saves_a_complete_episode(ros2_env, tmp_path, listener):
    out = tmp_path / "episodes"
    camera = Camera("/test_camera")
    executor = SingleThreadedExecutor()
    executor.add_node(camera)
    thread = threading.Thread(target=executor.spin, daemon=True)
    thread.start()
    launch = Launch(
        ros2_env,
        tmp_path / "record.log",
        "record.launch.py",
        "use_joy:=false",
        f"output_dir:={out}",
        "image_topic:=/test_camera",
        "instruction:=left",
        "gamepad:=dragonrise",
    )
    try:

        def started():
            result = ros2(ros2_env, "service", "call", "/recorder_node/start", "std_srvs/srv/Trigger", timeout=30)
            return result.returncode == 0 and "success=True" in result.stdout

        assert wait_for(started, 60.0, period_s=1.0), launch.log()[-3000:]
        dragonrise_start = retry(lambda: ros2(ros2_env, "param", "get", "/recorder_node", "start_button"))
        assert dragonrise_start.stdout.strip().endswith("9"), dragonrise_start.stdout  # config/gamepads/dragonrise.yaml
        time.sleep(2.0)
        assert list(out.glob("*.partial")), "recording did not create its partial file"
        code = launch.signal_group(signal.SIGINT)
    except BaseException:
        launch.kill()
        raise
    finally:
        executor.shutdown()
        thread.join(timeout=5)
        camera.destroy_node()
    assert code == 0, launch.log()[-3000:]
    assert not list(out.glob("*.partial")), launch.log()[-3000:]
    episodes = list_episodes(out)
    assert len(episodes) == 1
    episode = read_episode(episodes[0])
    assert len(episode.images) >= 10 and episode.instruction == LAB_INSTRUCTIONS["left"]
    assert not episode.flags.get("truncated", False)


def show_args(env, launch_file: str) -> set[str]:
    result = ros2(env, "launch", "mobile_vla_ros", launch_file, "--show-args")
    assert result.returncode == 0, result.stderr
    return set(re.findall(r"^\s+'([a-z_0-9]+)':", result.stdout, flags=re.MULTILINE))


def retry(command, attempts: int = 5) -> subprocess.CompletedProcess:
    """A `ros2` command that may first meet the daemon's still-empty graph."""
    for _ in range(attempts):
        result = command()
        if result.returncode == 0:
            return result
        time.sleep(1.0)
    pytest.fail(f"{result.args} failed {attempts} times: {result.stdout[-500:]} {result.stderr[-1000:]}")


def test_every_record_argument_reaches_its_node(ros2_env, tmp_path, listener):
    listed = show_args(ros2_env, "record.launch.py")
    pad = tmp_path / "my_pad.yaml"
    pad.write_text(
        yaml.safe_dump(
            {
                "recorder_node": {"ros__parameters": {"start_button": 3}},
                "teleop_node": {"ros__parameters": {"enable_button": 1}},
            }
        )
    )
    params = edited_yaml(tmp_path, "record.yaml", "recorder_node", "sample_rate_hz", 12.5)
    given = {
        "params_file": params,
        "image_topic": "/cam/stream",
        "compressed": "true",
        "namespace": "rec",
        "cmd_vel_topic": "cmd_vel_human",
        "rotate_180": "true",
        "output_dir": tmp_path / "out",
        "instruction": "right",
        "gamepad": "dragonrise",
        "gamepad_config": pad,
        "use_joy": "false",
    }
    assert listed == set(given), "a launch argument without a test, or a test without an argument"
    camera = listener.create_publisher(CompressedImage, "/cam/stream/compressed", 1)  # what the recorder waits for
    launch = Launch(
        ros2_env, tmp_path / "record.log", "record.launch.py", *(f"{name}:={value}" for name, value in given.items())
    )
    try:
        expected = {
            ("/rec/recorder_node", "sample_rate_hz"): "12.5",
            ("/rec/recorder_node", "compressed"): "True",
            ("/rec/recorder_node", "rotate_180"): "True",
            ("/rec/recorder_node", "output_dir"): str(tmp_path / "out"),
            ("/rec/recorder_node", "instruction"): "right",
            ("/rec/recorder_node", "start_button"): "3",
            ("/rec/teleop_node", "enable_button"): "1",
        }
        for (node, name), value in expected.items():
            got = retry(lambda node=node, name=name: ros2(ros2_env, "param", "get", node, name, timeout=30)).stdout
            assert got.strip().endswith(value), f"{node} {name}: {got}"
        nodes = retry(lambda: ros2(ros2_env, "node", "list")).stdout
        assert "joy_node" not in nodes  # use_joy:=false

        def subscribed() -> bool:  # the camera, as <image_topic>/compressed; cmd_vel renamed, in the namespace
            info = ros2(ros2_env, "node", "info", "/rec/recorder_node", timeout=30).stdout
            return "/cam/stream/compressed: sensor_msgs/msg/CompressedImage" in info and "/rec/cmd_vel_human:" in info

        assert wait_for(subscribed, 30.0, 1.0), ros2(ros2_env, "node", "info", "/rec/recorder_node").stdout
        teleop = ros2(ros2_env, "node", "info", "/rec/teleop_node", timeout=30).stdout
        assert "/rec/cmd_vel_human: geometry_msgs/msg/Twist" in teleop.split("Publishers:")[1], teleop
        assert launch.signal_group(signal.SIGINT) == 0, launch.log()[-3000:]
    except BaseException:
        launch.kill()
        raise
    finally:
        listener.destroy_publisher(camera)


@pytest.mark.parametrize("launch_file", ["drive.launch.py", "record.launch.py"])
def test_a_misspelt_launch_argument_stops_the_launch_and_names_the_known_ones(
    ros2_env, launch_file, tiny_checkpoint, tiny_base_model
):
    """`ros2 launch` drops an argument nobody declared; quntize:=int8 would leave quantization off."""
    models = [f"model_dir:={tiny_checkpoint}", f"base_model_dir:={tiny_base_model}"]
    given = [*(models if launch_file == "drive.launch.py" else []), "quntize:=int8", "use_joy:=false"]
    result = ros2(ros2_env, "launch", "mobile_vla_ros", launch_file, *given, timeout=60)
    output = result.stdout + result.stderr
    assert result.returncode not in (0, 124), output[-2000:]
    assert "has no argument quntize" in output and "known arguments:" in output, output[-2000:]
    assert "image_topic" in output.split("known arguments:")[1]
    if launch_file == "drive.launch.py":
        assert "(did you mean quantize?)" in output


def test_show_args_names_the_yaml_value_an_argument_left_out_keeps(ros2_env):
    shown = ros2(ros2_env, "launch", "mobile_vla_ros", "drive.launch.py", "--show-args").stdout
    dtype = yaml.safe_load((REPO / "config" / "drive.yaml").read_text())["inference_node"]["ros__parameters"]["dtype"]
    assert f"drive.yaml inference_node.dtype = {dtype!r}" in " ".join(shown.split()), shown


def test_drive_launch_in_a_namespace_with_cmd_vel_renamed(ros2_env, tmp_path, tiny_checkpoint, tiny_base_model):
    """A second robot, or a twist_mux in front of the base: the policy's command lands on
    /<namespace>/<cmd_vel_topic>, the instruction and enable topics move with the namespace."""
    launch = start_drive(
        ros2_env, tmp_path, tiny_checkpoint, tiny_base_model, "namespace:=robot1", "cmd_vel_topic:=cmd_vel_policy"
    )
    try:
        echoed = retry(lambda: ros2(ros2_env, "topic", "echo", "--once", "/robot1/cmd_vel_policy", timeout=60))
        assert "linear:" in echoed.stdout
        wanted = {"/robot1/instruction", "/robot1/enable", "/robot1/instruction/active"}  # once the model is loaded
        listed = lambda: set(ros2(ros2_env, "topic", "list", timeout=30).stdout.split())  # noqa: E731
        assert wait_for(lambda: wanted <= listed(), 60.0, 1.0), listed()
        plain = ros2(ros2_env, "topic", "info", "/cmd_vel", timeout=30)  # other tests' listener may subscribe it
        assert plain.returncode != 0 or "Publisher count: 0" in plain.stdout, plain.stdout
        got = retry(lambda: ros2(ros2_env, "param", "get", "/robot1/inference_node", "control_rate_hz", timeout=30))
        assert got.stdout.strip().endswith(str(float(CONTROL_RATE_HZ)))  # drive.yaml reaches a namespaced node
        refused = ros2(ros2_env, "param", "set", "/robot1/inference_node", "dtype", "fp16", timeout=30)
        assert "read-only" in refused.stdout + refused.stderr, refused  # fixed for the run, and says so
        assert launch.signal_group(signal.SIGINT) == 0, launch.log()[-3000:]
    except BaseException:
        launch.kill()
        raise


def test_a_gamepad_profile_that_does_not_exist_is_named(ros2_env, tmp_path):
    result = ros2(
        ros2_env,
        "launch",
        "mobile_vla_ros",
        "record.launch.py",
        "use_joy:=false",
        "gamepad:=nintendo",
        f"output_dir:={tmp_path}",
        timeout=60,
    )
    assert result.returncode != 0
    assert (
        "nintendo.yaml does not exist" in result.stdout + result.stderr
        and "dragonrise" in result.stdout + result.stderr
    )


def test_lockstep_without_the_simulator_is_refused_by_name(ros2_env, tiny_checkpoint, tiny_base_model):
    result = ros2(
        ros2_env,
        "launch",
        "mobile_vla_ros",
        "drive.launch.py",
        f"model_dir:={tiny_checkpoint}",
        f"base_model_dir:={tiny_base_model}",
        "lockstep:=true",
        timeout=60,
    )
    assert result.returncode not in (0, 124)
    assert "lockstep:=true needs use_sim:=true" in result.stdout + result.stderr


def test_drive_launch_refuses_a_dtype_at_which_the_policy_failed_its_check(
    ros2_env, tmp_path, tiny_checkpoint, tiny_base_model
):
    model = Path(shutil.copytree(tiny_checkpoint, tmp_path / "fails_at_fp16"))
    config = json.loads((model / "policy.json").read_text())
    figures = {"instruction_separation": 0.1, "sign_accuracy": 0.5, "mae_vs_blind": 2.0, "frame_sensitivity": 0.2}
    config["precision_checks"] = {
        "fp32": {**figures, "instruction_separation": 1.0, "passed": True, "behind": []},
        "fp16": {**figures, "passed": False, "behind": ["instruction_separation 0.100 against fp32's 1.000"]},
    }
    (model / "policy.json").write_text(json.dumps(config))
    arguments = ("launch", "mobile_vla_ros", "drive.launch.py", f"model_dir:={model}")
    arguments += (f"base_model_dir:={tiny_base_model}", "use_sim:=true")
    result = ros2(ros2_env, *arguments, "dtype:=fp16", timeout=120)
    output = result.stdout + result.stderr
    assert result.returncode != 124, f"the launch kept running:\n{output[-3000:]}"
    assert "fell behind fp32 at fp16" in output and "allow_failed_precision_check" in output, output[-3000:]
    assert re.search(r"process\[inference_node-\d+\] was required: shutting down", output), output[-3000:]
    assert "loading policy" not in output, "refused before the model loads"

    allowed = edited_yaml(tmp_path, "drive.yaml", "inference_node", "allow_failed_precision_check", True)
    launch = Launch(ros2_env, tmp_path / "allowed.log", *arguments[2:], "dtype:=fp16", f"params_file:={allowed}")
    try:
        assert wait_for(lambda: "fell behind fp32 at fp16" in launch.log(), 90.0), launch.log()[-3000:]
        assert wait_for(lambda: "DRIVING" in launch.log(), 90.0), launch.log()[-3000:]
    finally:
        launch.kill()


def test_drive_launch_refuses_a_camera_mounted_otherwise_than_in_training(
    ros2_env, tmp_path, tiny_checkpoint, tiny_base_model
):
    model = Path(shutil.copytree(tiny_checkpoint, tmp_path / "upside_down_policy"))
    config = yaml.safe_load((model / "policy.json").read_text())  # JSON is YAML
    config["camera"] = {"rotate_180": True, "color_order": "rgb", "resize": "squash"}
    (model / "policy.json").write_text(json.dumps(config))
    result = ros2(
        ros2_env,
        "launch",
        "mobile_vla_ros",
        "drive.launch.py",
        f"model_dir:={model}",
        f"base_model_dir:={tiny_base_model}",
        "use_sim:=true",
        timeout=120,
    )
    output = result.stdout + result.stderr
    assert result.returncode != 124, f"the launch kept running:\n{output[-3000:]}"
    assert "rotate_180 True in training, False here" in output, output[-3000:]
    assert re.search(r"process\[camera_window_node-\d+\] was required: shutting down", output), output[-3000:]


def test_mobile_vla_runs_with_ros2_run_after_colcon_build(ros2_env):
    """The command line after the robot install (colcon build + source), as README documents it."""
    result = ros2(ros2_env, "run", "mobile_vla_ros", "mobile-vla", "--help", timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "train" in result.stdout and "eval" in result.stdout

"""sim_node over real DDS: the node runs as its own process (as `ros2 run` would start it) with
config/sim.yaml; a probe node in this process drives it through cmd_vel and watches its topics."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

rclpy = pytest.importorskip("rclpy")
from geometry_msgs.msg import PoseStamped, Twist  # noqa: E402
from rclpy.executors import SingleThreadedExecutor  # noqa: E402
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy  # noqa: E402
from sensor_msgs.msg import Image  # noqa: E402
from std_msgs.msg import String  # noqa: E402
from std_srvs.srv import Trigger  # noqa: E402

from mobile_vla_ros.sim.expert import ScriptedExpert  # noqa: E402
from mobile_vla_ros.sim.world import Layout  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SEED = 11


def sim_command(*arguments: str) -> list[str]:
    """sim_node with config/sim.yaml and the test's layout seed; `arguments` go after them."""
    return [
        sys.executable,
        "-m",
        "mobile_vla_ros.nodes.sim_node",
        "--ros-args",
        "--params-file",
        str(REPO / "config" / "sim.yaml"),
        *("-p", f"seed:={SEED}"),
        *arguments,
    ]


def wait_for(predicate, timeout: float, interval: float = 0.02) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()


class Probe:
    """Subscribes to everything sim_node publishes and drives it."""

    def __init__(self, setup=None, namespace: str | None = None):
        """`setup(node)`: more subscriptions and publishers, made before the node spins; `namespace`:
        that of the sim_node under test (the module's sim_node keeps running beside it)."""
        self.context = rclpy.Context()
        rclpy.init(context=self.context)
        self.node = rclpy.create_node("sim_probe", namespace=namespace, context=self.context)
        self.lock = threading.Lock()
        self.images, self.poses, self.results = [], [], []
        self.node.create_subscription(Image, "camera/image_raw", self._on_image, 5)
        self.node.create_subscription(PoseStamped, "sim/pose", lambda m: self._keep(self.poses, m), 50)
        latched = QoSProfile(
            depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL
        )
        self.node.create_subscription(
            String, "sim/result", lambda m: self._keep(self.results, json.loads(m.data)), latched
        )
        self.cmd_vel = self.node.create_publisher(Twist, "cmd_vel", 10)
        self.reset_client = self.node.create_client(Trigger, "sim/reset")
        if setup is not None:
            setup(self.node)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self.thread = threading.Thread(target=self.executor.spin, daemon=True)
        self.thread.start()

    def _on_image(self, msg: Image) -> None:
        # Keep only what the tests check; the pixel payload is not needed.
        stamp = msg.header.stamp.sec + msg.header.stamp.nanosec * 1e-9
        self._keep(self.images, (time.monotonic(), stamp, msg.width, msg.height, msg.encoding, len(msg.data)))

    def _keep(self, store: list, item) -> None:
        with self.lock:
            store.append(item)

    def pose(self) -> tuple[float, float]:
        with self.lock:
            message = self.poses[-1]
        return message.pose.position.x, message.pose.position.y

    def latest_result(self) -> dict | None:
        with self.lock:
            return self.results[-1] if self.results else None

    def drive(self, linear_x: float, linear_y: float) -> None:
        twist = Twist()
        twist.linear.x, twist.linear.y = float(linear_x), float(linear_y)
        self.cmd_vel.publish(twist)

    def reset(self) -> dict:
        assert self.reset_client.wait_for_service(timeout_sec=10.0)
        future = self.reset_client.call_async(Trigger.Request())
        assert wait_for(future.done, 10.0)
        response = future.result()
        assert response.success
        info = json.loads(response.message)
        assert wait_for(lambda: (self.latest_result() or {}).get("episode") == info["episode"], 5.0)
        with self.lock:
            self.poses.clear()
        assert wait_for(lambda: self.poses, 5.0)
        return info

    def close(self) -> None:
        self.executor.shutdown()
        self.node.destroy_node()
        rclpy.shutdown(context=self.context)
        self.thread.join(timeout=5.0)


@pytest.fixture(scope="module")
def sim():
    command = sim_command("-p", "time_limit_s:=12.0")
    process = subprocess.Popen(
        command, env=os.environ.copy(), cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    probe = Probe()
    try:
        assert wait_for(lambda: probe.images and probe.poses and probe.results, 20.0), "sim_node published nothing"
        yield probe
    finally:
        probe.close()
        process.terminate()
        try:
            output, _ = process.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            output, _ = process.communicate()
        print(output)


def test_camera_images_arrive_at_about_30_hz_with_capture_stamps(sim):
    with sim.lock:
        sim.images.clear()
    time.sleep(2.0)
    with sim.lock:
        images = list(sim.images)
    arrivals = [image[0] for image in images]
    rate = (len(arrivals) - 1) / (arrivals[-1] - arrivals[0])
    assert 24.0 <= rate <= 33.0, f"{rate:.1f} Hz"
    _, stamp, width, height, encoding, size = images[-1]
    assert (width, height, encoding, size) == (640, 480, "rgb8", 640 * 480 * 3)
    stamps = [image[1] for image in images]
    assert all(later > earlier for earlier, later in zip(stamps, stamps[1:]))
    assert abs(time.time() - stamp) < 1.0  # stamped with the clock at capture, not a counter from zero


def test_cmd_vel_moves_the_robot_and_a_silent_or_bad_command_stops_it(sim):
    sim.reset()
    x0, y0 = sim.pose()
    started = time.monotonic()
    while time.monotonic() - started < 1.0:
        sim.drive(0.3, 0.3)  # stays clear of the nearest box the layouts place (front face at x >= 1.1 m)
        time.sleep(0.05)
    x1, y1 = sim.pose()
    assert x1 - x0 == pytest.approx(0.3, abs=0.1) and y1 - y0 == pytest.approx(0.3, abs=0.1)
    time.sleep(0.8)  # longer than cmd_timeout_s: the robot has stopped by now
    x2, y2 = sim.pose()
    time.sleep(0.5)
    assert sim.pose() == pytest.approx((x2, y2), abs=1e-9)
    for _ in range(10):
        sim.drive(float("nan"), 0.5)  # dropped with an error log; the robot stays put
        time.sleep(0.05)
    assert sim.pose() == pytest.approx((x2, y2), abs=1e-9)
    assert sim.latest_result()["outcome"] == "running"


def test_reset_starts_the_next_layout_of_the_seed(sim):
    before = sim.reset()
    after = sim.reset()
    assert after["episode"] == before["episode"] + 1 and after["seed"] == SEED
    assert after["layout"] != before["layout"]
    result = sim.latest_result()
    assert result["outcome"] == "running" and result["layout"] == after["layout"]
    assert sim.pose() == pytest.approx(tuple(after["layout"]["start"]), abs=0.02)


@pytest.mark.parametrize("side", ["left", "right"])
def test_closed_loop_expert_over_topics_reaches_the_bottle_on_its_side(sim, side):
    layout = Layout.from_dict(sim.reset()["layout"])
    expert = ScriptedExpert(layout, side, speed=1.0)
    deadline = time.monotonic() + 10.0
    while (sim.latest_result() or {}).get("outcome") == "running" and time.monotonic() < deadline:
        sim.drive(*expert.act(*sim.pose()))
        time.sleep(0.05)
    result = sim.latest_result()
    assert result["outcome"] == f"reached_{side}", result
    tx, ty = layout.target
    assert math.hypot(tx - result["x"], ty - result["y"]) <= 0.45 + 1e-6


def test_ros2_param_set_checks_the_writable_settings_as_at_start_and_applies_them(sim):
    """What `ros2 param set` calls: a scene the simulator has not is refused with the start-up check's
    reason (before, it was accepted and the next camera frame crashed the node); a new seed serves
    the next sim/reset."""
    from rcl_interfaces.srv import SetParameters
    from rclpy.parameter import Parameter

    client = sim.node.create_client(SetParameters, "/sim_node/set_parameters")
    assert client.wait_for_service(timeout_sec=10.0)

    def param_set(name: str, value):
        request = SetParameters.Request(parameters=[Parameter(name, value=value).to_parameter_msg()])
        future = client.call_async(request)
        assert wait_for(future.done, 10.0)
        return future.result().results[0]

    refused = param_set("scene", "foggy")
    assert not refused.successful and "scene must be one of" in refused.reason
    assert not param_set("cmd_timeout_s", 0.0).successful
    images = len(sim.images)
    assert wait_for(lambda: len(sim.images) > images + 3, 5.0), "the camera stopped after a refused scene"
    try:
        assert param_set("seed", SEED + 1).successful
        assert sim.reset()["seed"] == SEED + 1
    finally:
        assert param_set("seed", SEED).successful
        sim.reset()


def test_bad_parameters_exit_non_zero_with_a_reason():
    command = [sys.executable, "-m", "mobile_vla_ros.nodes.sim_node", "--ros-args", "-p", "camera_rate_hz:=0.0"]
    finished = subprocess.run(command, env=os.environ.copy(), cwd=REPO, capture_output=True, text=True, timeout=60)
    assert finished.returncode == 1
    assert "camera_rate_hz must be positive" in finished.stdout + finished.stderr


def test_lockstep_time_advances_only_when_the_pipeline_answers():
    """lockstep: time runs at the real-time cap until the first cmd_vel; from then on one physics
    step per cmd_vel, and once windows flow a camera frame holds the clock until window/answered
    says the pipeline is done with it; the robot holds at the start, then integrates fixed steps."""
    from rosgraph_msgs.msg import Clock
    from sensor_msgs.msg import TimeReference

    command = sim_command(
        *("-p", "lockstep:=true", "-p", "physics_rate_hz:=20.0", "-p", "camera_rate_hz:=10.0"),
        *("-p", "start_hold_s:=3.0", "-p", "image_width:=64", "-p", "image_height:=48"),
        *("-r", "__ns:=/lockstep"),
    )
    process = subprocess.Popen(
        command, env=os.environ.copy(), cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    clock, publishers = [], {}

    def setup(node) -> None:
        node.create_subscription(Clock, "/clock", lambda m: clock.append(m.clock.sec + m.clock.nanosec * 1e-9), 10)
        publishers["answered"] = node.create_publisher(TimeReference, "window/answered", 10)

    probe = Probe(setup, namespace="/lockstep")
    answered = publishers["answered"]

    def now() -> float:
        with probe.lock:
            return clock[-1] if clock else -1.0

    def answer_cmd_vel(vx: float = 0.0) -> float:
        """The control tick's cmd_vel; returns the simulated time it moved on to."""
        before = now()
        probe.drive(vx, 0.0)
        assert wait_for(lambda: now() > before, 5.0), f"the clock stayed at {before}"
        return now()

    def answer_frame(stamp_s: float) -> None:
        msg = TimeReference(source="chunk")
        msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(round(stamp_s * 1e9), 1_000_000_000)
        answered.publish(msg)

    def x_at(t: float) -> float:
        def pose():
            with probe.lock:
                stamps = ((p, p.header.stamp.sec + p.header.stamp.nanosec * 1e-9) for p in probe.poses)
                return next((p for p, stamp in stamps if abs(stamp - t) < 1e-6), None)

        assert wait_for(lambda: pose() is not None, 5.0), f"no sim/pose stamped {t}"
        return pose().pose.position.x

    try:
        assert wait_for(lambda: clock and probe.results, 20.0), "sim_node published no /clock"
        start_x = probe.latest_result()["x"]
        # Nobody commands yet: a first cmd_vel lost to discovery must not stop the clock for ever.
        assert wait_for(lambda: now() >= 0.3 and probe.images, 5.0), "the clock stood before any cmd_vel"
        probe.drive(0.5, 0.0)  # commands flow from now on: each step waits for its cmd_vel
        time.sleep(0.3)
        stood = now()
        time.sleep(0.6)
        assert now() == pytest.approx(stood) and stood < 3.0, "the clock ran on without cmd_vel"
        t = stood
        while t < 3.0 - 1e-9 or round(t / 0.05) % 2:  # through the start hold, to a camera step
            t = answer_cmd_vel(0.5)
        assert x_at(t) == start_x, "held at the start until start_hold_s, whatever was commanded"
        assert answer_cmd_vel(0.5) == pytest.approx(t + 0.05)  # a camera step: the frame of t
        assert wait_for(lambda: probe.images[-1][1] == pytest.approx(t), 5.0)
        answer_frame(t)  # windows flow from now on
        assert answer_cmd_vel(0.5) == pytest.approx(t + 0.10)
        probe.drive(0.5, 0.0)  # the tick of t + 0.10: its frame goes out, the clock waits for its answer
        assert wait_for(lambda: probe.images[-1][1] == pytest.approx(t + 0.10), 5.0)
        time.sleep(0.5)
        assert now() == pytest.approx(t + 0.10), "the clock moved on before the frame was answered"
        answer_frame(t + 0.10)
        assert wait_for(lambda: now() == pytest.approx(t + 0.15), 5.0)
        assert x_at(t + 0.15) - x_at(t) == pytest.approx(0.5 * 0.15, abs=1e-9)  # three fixed steps at 0.5 m/s
    finally:
        probe.close()
        process.terminate()
        print(process.communicate(timeout=10)[0].decode())


def test_lockstep_publishes_a_scheduled_switch_and_holds_the_clock_until_it_is_confirmed():
    """sim/instruction_at: the instruction goes out just before the clock reaches its time, and the
    clock stands until instruction/active confirms it: the switch lands on the same tick every run."""
    from rosgraph_msgs.msg import Clock

    command = sim_command(
        *("-p", "lockstep:=true", "-p", "physics_rate_hz:=20.0", "-p", "camera_rate_hz:=10.0"),
        *("-p", "image_width:=64", "-p", "image_height:=48", "-r", "__ns:=/switching"),
    )
    process = subprocess.Popen(
        command, env=os.environ.copy(), cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    clock, heard, publishers = [], [], {}
    latched = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)

    def setup(node) -> None:
        node.create_subscription(Clock, "/clock", lambda m: clock.append(m.clock.sec + m.clock.nanosec * 1e-9), 10)
        node.create_subscription(String, "instruction", lambda m: heard.append((m.data, clock[-1])), 10)
        publishers["at"] = node.create_publisher(String, "sim/instruction_at", 10)
        publishers["active"] = node.create_publisher(String, "instruction/active", latched)

    probe = Probe(setup, namespace="/switching")

    def now() -> float:
        with probe.lock:
            return clock[-1] if clock else -1.0

    try:
        assert wait_for(lambda: clock and publishers["at"].get_subscription_count() > 0, 20.0)
        probe.drive(0.0, 0.0)  # commands flow: one step per cmd_vel
        time.sleep(0.3)
        switch_at = round(now() + 0.30, 2)
        publishers["at"].publish(String(data=json.dumps({"time_s": switch_at, "instruction": "right"})))
        time.sleep(0.3)
        while not heard:
            before = now()
            assert before < switch_at + 1e-9, f"the clock passed {switch_at} without the switch"
            probe.drive(0.0, 0.0)
            assert wait_for(lambda before=before: now() > before or heard, 5.0)
        assert heard[0] == ("right", pytest.approx(switch_at - 0.05)), "published on the tick before its time"
        time.sleep(0.5)
        probe.drive(0.0, 0.0)  # a cmd_vel does not move the clock on while the switch is unconfirmed
        time.sleep(0.5)
        assert now() == pytest.approx(switch_at - 0.05), "the clock ran on before instruction/active"
        publishers["active"].publish(String(data="right"))
        assert wait_for(lambda: now() == pytest.approx(switch_at), 5.0), "the confirmation did not release it"
        assert len(heard) == 1
    finally:
        probe.close()
        process.terminate()
        print(process.communicate(timeout=10)[0].decode())


def test_next_episode_on_end_starts_the_next_layout_by_itself():
    """drive.launch.py use_sim:=true sets it: after an episode ends the next layout starts 1 s later."""
    command = sim_command(
        *("-p", "next_episode_on_end:=true", "-p", "time_limit_s:=1.0"),
        *("-p", "image_width:=64", "-p", "image_height:=48", "-r", "__ns:=/auto"),
    )
    process = subprocess.Popen(
        command, env=os.environ.copy(), cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    probe = Probe(namespace="/auto")
    try:
        assert wait_for(lambda: probe.latest_result(), 20.0), "sim_node published no sim/result"
        first = probe.latest_result()["episode"]

        def outcomes(episode: int) -> list[str]:
            with probe.lock:
                return [result["outcome"] for result in probe.results if result["episode"] == episode]

        assert wait_for(lambda: "timed_out" in outcomes(first), 10.0), probe.results
        assert wait_for(lambda: "running" in outcomes(first + 1), 5.0), probe.results
        assert wait_for(lambda: "timed_out" in outcomes(first + 1), 10.0), "and so on"
    finally:
        probe.close()
        process.terminate()
        print(process.communicate(timeout=10)[0].decode())

"""The demo's operator as a ROS node: sends the instruction, enable and sim/reset, collects the
simulator's poses, results and familiarity verdicts, and with takeover rules plays the person who
takes over on `cmd_vel_teleop`.
"""

from __future__ import annotations

import json
import threading
import time

from geometry_msgs.msg import PoseStamped, Twist
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import TimeReference
from std_msgs.msg import Bool, String
from std_srvs.srv import Trigger

from mobile_vla_ros.errors import MobileVlaError
from mobile_vla_ros.sim.takeover import TakeoverSupervisor

LATCHED = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)
SUPERVISE_RATE_HZ = 20.0  # the person's judgement and teleop rate (the inference node's control rate)


class ClosedLoopError(MobileVlaError):
    """The closed loop did not come up or stopped answering."""


def wait_for(predicate, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise ClosedLoopError(f"timed out after {timeout_s:g} s waiting for {what}")
        time.sleep(0.01)


class TrialConductor(Node):
    """Plays the operator: instruction and enable out, simulator poses and results in; with a
    supervisor also the person who takes over on `cmd_vel_teleop`."""

    def __init__(self, **kwargs):
        super().__init__("demo_conductor", parameter_overrides=[Parameter("use_sim_time", value=True)], **kwargs)
        self._lock = threading.Lock()
        self._path: list[tuple[float, float, float]] | None = None
        self._path_start = 0.0  # simulated time of the robot's release
        self._sim_time = 0.0  # header stamp of the newest sim/pose
        self._pose: tuple[float, float] | None = None
        self._velocity = (0.0, 0.0)  # the inference node's latest cmd_vel: where the robot is going
        self._supervisor: TakeoverSupervisor | None = None
        self.result: dict = {}
        self.windows_answered = False  # the inference node has answered a window: the lockstep is engaged
        self.active_instruction = ""
        self.instruction_pub = self.create_publisher(String, "instruction", 10)
        self.switch_pub = self.create_publisher(String, "sim/instruction_at", 10)
        self.enable_pub = self.create_publisher(Bool, "enable", 10)
        self.teleop_pub = self.create_publisher(Twist, "cmd_vel_teleop", 10)
        self.create_subscription(PoseStamped, "sim/pose", self._on_pose, 50)
        self.create_subscription(Twist, "cmd_vel", self._on_cmd_vel, 10)
        self.create_timer(1.0 / SUPERVISE_RATE_HZ, self._supervise)
        self.create_subscription(String, "sim/result", self._on_result, LATCHED)
        self.create_subscription(TimeReference, "window/answered", self._on_answered, 10)
        self.create_subscription(Bool, "familiarity/unfamiliar", self._on_familiarity, LATCHED)
        # (simulated time, unfamiliar) of each verdict: the monitor's verdict on a frame goes out before
        # the node answers its window, so it arrives before the clock moves on and carries that tick
        self._familiarity_verdicts: list[tuple[float, bool]] = []
        self.create_subscription(
            String,
            "instruction/active",
            self._on_active,
            QoSProfile(depth=1, durability=DurabilityPolicy.TRANSIENT_LOCAL),
        )
        self.reset_client = self.create_client(Trigger, "sim/reset")

    def _on_pose(self, msg: PoseStamped) -> None:
        stamp = msg.header.stamp.sec + msg.header.stamp.nanosec * 1e-9
        with self._lock:
            self._pose = (msg.pose.position.x, msg.pose.position.y)
            self._sim_time = max(self._sim_time, stamp)
            if self._path is not None and stamp >= self._path_start:
                self._path.append((stamp - self._path_start, msg.pose.position.x, msg.pose.position.y))

    def switch_at(self, sim_time: float, side: str) -> None:
        """Instruction `side` from simulated time `sim_time` on: the simulator publishes it and holds
        its clock until the inference node has switched (sim_node, sim/instruction_at), so the
        switch lands on the same tick in every run. A reset of the simulator cancels it."""
        self.switch_pub.publish(String(data=json.dumps({"time_s": sim_time, "instruction": side})))

    def sim_time(self) -> float:
        with self._lock:
            return self._sim_time

    def _on_cmd_vel(self, msg: Twist) -> None:
        with self._lock:
            self._velocity = (msg.linear.x, msg.linear.y)

    def _supervise(self) -> None:
        with self._lock:
            supervisor, pose, velocity = self._supervisor, self._pose, self._velocity
            elapsed = self._sim_time - self._path_start
            if supervisor is None or pose is None or self._path is None or elapsed < 0:
                return
            command = supervisor.command(elapsed, *pose, *velocity)
        if command is not None:
            twist = Twist()
            twist.linear.x, twist.linear.y = float(command[0]), float(command[1])
            self.teleop_pub.publish(twist)

    def supervise(self, supervisor: TakeoverSupervisor | None) -> TakeoverSupervisor | None:
        """Install the person for the next trial (None: nobody takes over); returns the previous one."""
        with self._lock:
            previous, self._supervisor = self._supervisor, supervisor
        return previous

    def _on_answered(self, msg: TimeReference) -> None:
        self.windows_answered = True

    def _on_familiarity(self, msg: Bool) -> None:
        with self._lock:
            self._familiarity_verdicts.append((self._sim_time, msg.data))

    def take_familiarity_verdicts(self) -> list[tuple[float, bool]]:
        """The verdicts received since the last call, as (simulated time, unfamiliar), after the one
        standing before them: the node sends a verdict only when it changes, so one that stands
        (a dark scene from one layout to the next) is the last one received."""
        with self._lock:
            verdicts = self._familiarity_verdicts
            self._familiarity_verdicts = verdicts[-1:]
        return verdicts

    def _on_result(self, msg: String) -> None:
        with self._lock:
            self.result = json.loads(msg.data)

    def _on_active(self, msg: String) -> None:
        with self._lock:
            self.active_instruction = msg.data

    def latest_result(self) -> dict:
        with self._lock:
            return dict(self.result)

    def start_path(self, release_time: float) -> None:
        """Collect poses from `release_time` (simulated) on."""
        with self._lock:
            self._path, self._path_start = [], release_time

    def take_path(self) -> list:
        with self._lock:
            path, self._path = self._path or [], None
        return path

    def instruct(self, instruction: str) -> None:
        self.instruction_pub.publish(String(data=instruction))

    def enable(self, on: bool) -> None:
        self.enable_pub.publish(Bool(data=on))

    def reset_sim(self, timeout_s: float) -> dict:
        future = self.reset_client.call_async(Trigger.Request())
        wait_for(future.done, timeout_s, "sim/reset")
        info = json.loads(future.result().message)
        wait_for(lambda: self.latest_result().get("episode") == info["episode"], timeout_s, "the new episode's result")
        return info

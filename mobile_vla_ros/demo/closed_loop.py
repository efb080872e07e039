"""Closed-loop trials in the simulated room through the real drive nodes, in one process.

    sim_node --camera/image_raw--> camera_window_node --window--> inference_node --cmd_vel--> sim_node
                                        TrialConductor --instruction, enable, sim/reset-->

The three nodes run as separate processes, exactly as `ros2 launch` would start them (an earlier
single-process version starved the control timer and the camera path of the interpreter lock on
a 2-core machine); the conductor runs in the calling process. The whole graph keeps to itself: a
private domain id claimed for the loop's lifetime and localhost-only discovery
(mobile_vla_ros.ros_domain), so two demos on one machine, or a robot on the network, never meet it.

Time is simulated and in lockstep (sim_node's `lockstep`, every node with use_sim_time): the
simulator advances its clock one control period at a time, each once the inference node has
published that tick's cmd_vel and answered the newest camera frame. Trials therefore do not depend
on how fast or busy the machine is — the same policy on the same layouts drives the same paths,
only later on a slow machine. (With the real clock, late commands and stale windows under load
changed several of 20 outcomes from run to run; docs/demo.md has the measurements.)

A trial (the policy disabled since the last one): publish the instruction, enable
(the previous episode has ended: the robot stays put), reset the simulator to its next layout.
The simulator holds the robot at the start for `start_hold_s` of simulated time: the camera window
then holds only frames of the new layout (it equals the padded start of a training episode) and
the inference node's acceleration limit has ramped up to the policy's command, so every trial is
released the same way. The path is collected from `sim/pose` from the release until `sim/result`
reports the end.

With takeover rules (`mobile-vla demo --corrections`) the conductor also plays the person who
takes over: at the control rate it judges the robot's pose and commanded velocity
(sim/takeover.py) and, while it is in charge, publishes the scripted expert's command on
`cmd_vel_teleop`, the inference node's human override. With `corrections_dir` the inference node
records each takeover as a correction episode (`record_corrections`), exactly as with a gamepad.
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import typing

import numpy as np
import rclpy
import yaml
from geometry_msgs.msg import PoseStamped, Twist
from rclpy.executors import MultiThreadedExecutor
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import TimeReference
from std_msgs.msg import Bool, String
from std_srvs.srv import Trigger

from mobile_vla_ros.demo.trials import Trial, first_unfamiliar
from mobile_vla_ros.errors import MobileVlaError
from mobile_vla_ros.nodes.launch_arguments import lockstep_sim_parameters
from mobile_vla_ros.paths import config_file
from mobile_vla_ros.policy.config import PolicyConfig
from mobile_vla_ros.policy.instructions import instruction_side
from mobile_vla_ros.ros_domain import LOCALHOST_ONLY_ENV, claim_private_domain
from mobile_vla_ros.sim.takeover import TakeoverRules, TakeoverSupervisor
from mobile_vla_ros.sim.world import SIDES, Layout

LATCHED = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)
STALL_TIMEOUT_S = 60.0  # real seconds without simulated time advancing before the loop counts as dead
MONITOR_SETTLE_S = 0.5  # simulated s after the release before the familiarity verdict counts for a trial
SUPERVISE_RATE_HZ = 20.0  # the person's judgement and teleop rate (the inference node's control rate)
# Held at the start beyond the window's refill: the inference node's acceleration limit reaches
# the policy's command there (from any previous command), so the robot is released the same way each time.
START_HOLD_MARGIN_S = 2.0
# Simulated time may run this much faster than real time when the pipeline keeps up (the trials'
# outcome does not depend on it: lockstep).
MAX_REAL_TIME_FACTOR = 4.0


class ClosedLoopError(MobileVlaError):
    """The closed loop did not come up or stopped answering."""


def _wait(predicate, timeout_s: float, what: str) -> None:
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

    def enable(self, on: bool) -> None:
        self.enable_pub.publish(Bool(data=on))

    def reset_sim(self, timeout_s: float) -> dict:
        future = self.reset_client.call_async(Trigger.Request())
        _wait(future.done, timeout_s, "sim/reset")
        info = json.loads(future.result().message)
        _wait(lambda: self.latest_result().get("episode") == info["episode"], timeout_s, "the new episode's result")
        return info


class ClosedLoopSim:
    """sim_node, camera_window_node and inference_node as separate processes (as `ros2 launch`
    starts them; each has its own interpreter lock), the conductor in this process.

    Use as a context manager; `run_trial(side)` drives one episode and returns a Trial.
    """

    def __init__(
        self,
        model_dir,
        base_model_dir,
        seed: int,
        time_limit_s: float = 20.0,
        device: str = "auto",
        dtype: str | None = None,
        quiet: bool = False,
        torch_threads: int = 1,
        freeze_camera: bool = False,
        scene: str = "plain",
        familiarity_action: str | None = None,
        corrections_dir=None,
        first_episode: int = 0,
    ):
        """`corrections_dir`: the inference node records takeovers there (record_corrections);
        `first_episode`: the simulator's layout number at start (the first trial drives the next);
        `dtype` None: drive.yaml's (auto), the precision the robot would run; `scene`: sim_node's
        (plain, dark, recoloured); `familiarity_action` None: drive.yaml's."""
        config = PolicyConfig.load(model_dir)
        self.time_limit_s = float(time_limit_s)
        self.corrections_dir = corrections_dir
        drive_params = yaml.safe_load(config_file("drive.yaml").read_text())["inference_node"]["ros__parameters"]
        self.correction_end_hold_s = float(drive_params["correction_end_hold_s"])
        # The window must hold frames of the new layout only, plus one sample and the hold's margin.
        start_hold_s = (config.window_size + 1) * config.action_dt + START_HOLD_MARGIN_S
        sim_time = ["-p", "use_sim_time:=true"]
        self.processes: list[subprocess.Popen] = []
        self.domain = claim_private_domain()
        os.environ.update(LOCALHOST_ONLY_ENV)  # read by rclpy.init below: the conductor stays on loopback too
        self.context = rclpy.Context()
        rclpy.init(context=self.context, domain_id=self.domain.domain_id)
        self.conductor = None
        self._thread = None
        # The tiny demo model gains nothing from intra-op threads, and idle-spinning OpenMP threads
        # next to the simulator's renderer slow a 2-core machine down badly.
        env = {**os.environ, **self.domain.env, "OMP_NUM_THREADS": str(torch_threads)}
        output = subprocess.DEVNULL if quiet else None
        # Quiet nodes still keep their log, so a node that dies can say why (_wait_alive).
        self._logs: dict[str, typing.IO[bytes]] = {}
        try:
            node_args = {
                "sim_node": (
                    "sim.yaml",
                    [
                        "-p",
                        f"seed:={int(seed)}",
                        "-p",
                        f"first_episode:={int(first_episode)}",
                        "-p",
                        f"time_limit_s:={self.time_limit_s}",
                        "-p",
                        f"freeze_camera:={str(bool(freeze_camera)).lower()}",
                        "-p",
                        f"scene:={scene}",
                        *(
                            argument
                            for name, value in lockstep_sim_parameters(config_file("drive.yaml"), model_dir).items()
                            for argument in ("-p", f"{name}:={str(value).lower()}")
                        ),
                        "-p",
                        f"start_hold_s:={start_hold_s}",
                        "-p",
                        f"max_real_time_factor:={MAX_REAL_TIME_FACTOR}",
                    ],
                ),
                "camera_window_node": (
                    "drive.yaml",
                    ["-p", f"model_dir:={model_dir}", "-r", "image:=camera/image_raw", *sim_time],
                ),
                "inference_node": (
                    "drive.yaml",
                    [
                        "-p",
                        f"model_dir:={model_dir}",
                        "-p",
                        f"base_model_dir:={base_model_dir}",
                        "-p",
                        f"device:={device}",
                        *([] if dtype is None else ["-p", f"dtype:={dtype}"]),
                        *([] if familiarity_action is None else ["-p", f"familiarity_action:={familiarity_action}"]),
                        "-p",
                        "start_enabled:=false",
                        *sim_time,
                        *(
                            []
                            if corrections_dir is None
                            else ["-p", "record_corrections:=true", "-p", f"corrections_dir:={corrections_dir}"]
                        ),
                    ],
                ),
            }
            for name, (params, extra) in node_args.items():
                command = [
                    sys.executable,
                    "-m",
                    f"mobile_vla_ros.nodes.{name}",
                    "--ros-args",
                    "--params-file",
                    str(config_file(params)),
                    *extra,
                ]
                if quiet:
                    command += ["--log-level", "warn"]
                log = self._logs[name] = tempfile.TemporaryFile() if quiet else None
                self.processes.append(subprocess.Popen(command, env=env, stdout=output, stderr=log))
            self.conductor = TrialConductor(context=self.context)
            self.executor = MultiThreadedExecutor(num_threads=2, context=self.context)
            self.executor.add_node(self.conductor)
            self._thread = threading.Thread(target=self.executor.spin, name="closed-loop", daemon=True)
            self._thread.start()
            conductor = self.conductor
            self._wait_alive(lambda: conductor.reset_client.service_is_ready(), 60.0, "the sim/reset service")
            self._wait_alive(
                lambda: (
                    conductor.enable_pub.get_subscription_count() > 0
                    and conductor.instruction_pub.get_subscription_count() > 0
                    and conductor.switch_pub.get_subscription_count() > 0
                ),
                60.0,
                "the inference node's inputs",
            )
            self._wait_alive(lambda: conductor.latest_result(), 60.0, "the first sim/result")
            # Until then the simulator does not wait for the camera path (nothing answers a window
            # before the camera window is full): the trials start once it does.
            self._wait_alive(lambda: conductor.windows_answered, 120.0, "the inference node's first window/answered")
        except BaseException:
            self.close()
            raise

    def _wait_alive(self, predicate, timeout_s: float, what: str) -> None:
        """Wait, but fail at once (with the exit status) when a node process died."""

        def ready() -> bool:
            dead = [(p.args[2], p.returncode) for p in self.processes if p.poll() is not None]
            if dead:
                module, status = dead[0]
                raise ClosedLoopError(f"node process {module} exited with status {status}{self._log_tail(module)}")
            return predicate()

        _wait(ready, timeout_s, what)

    def _log_tail(self, module: str, lines: int = 3) -> str:
        """The last lines a quiet node wrote (its FATAL reason), for the error; '' when not quiet."""
        log = self._logs.get(module.rsplit(".", 1)[-1])
        if log is None:
            return ""
        log.seek(0)
        tail = [line for line in log.read().decode(errors="replace").splitlines() if line.strip()][-lines:]
        return ":\n  " + "\n  ".join(tail) if tail else ""

    def __enter__(self) -> ClosedLoopSim:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def run_trial(
        self, index: int, side: str, takeover: TakeoverRules | None = None, switch_after_s: float | None = None
    ) -> Trial:
        """One episode towards `side`; with `takeover` rules the scripted person takes over when they
        say so; with `switch_after_s` it starts with the other instruction and switches to `side` on
        the topic that long (simulated) after the release."""
        conductor = self.conductor
        first = side if switch_after_s is None else next(other for other in SIDES if other != side)
        conductor.instruction_pub.publish(String(data=first))
        _wait(lambda: instruction_side(conductor.active_instruction) == first, 10.0, f"instruction {first!r} to apply")
        # Enabled before the reset: the previous episode has ended, so the robot stays where it is,
        # and the new one holds it at the start until the release (however fast the machine is).
        conductor.enable(True)
        try:
            info = conductor.reset_sim(10.0)
            layout = Layout.from_dict(info["layout"])
            conductor.start_path(info["release_time"])
            if switch_after_s is not None:
                conductor.switch_at(info["release_time"] + switch_after_s, side)
            if takeover is not None:
                conductor.supervise(TakeoverSupervisor(layout, side, rules=takeover))
            self._wait_simulated(lambda: self._finished(info["episode"]), f"the end of episode {info['episode']}")
        finally:
            supervisor = conductor.supervise(None)
            conductor.enable(False)
        result = conductor.latest_result()
        duration = float(result["time_s"])
        path = conductor.take_path()
        path.append((duration, result["x"], result["y"]))
        reasons = supervisor.reasons if supervisor is not None else []
        if reasons and self.corrections_dir is not None:
            # Let the takeover's episode end (correction_end_hold_s) while the camera still shows
            # this layout, so no frame of the next one is appended to it.
            until = conductor.sim_time() + self.correction_end_hold_s + 0.3
            self._wait_simulated(lambda: conductor.sim_time() >= until, "the end of the correction")
        trial = Trial(index, side, info["episode"], layout, np.array(path), result["outcome"], duration, list(reasons))
        release = info["release_time"]
        verdicts = conductor.take_familiarity_verdicts()
        trial.unfamiliar_s = first_unfamiliar(verdicts, release, release + MONITOR_SETTLE_S, release + duration)
        trial.switched_after_s = switch_after_s
        return trial

    def _finished(self, episode: int) -> bool:
        result = self.conductor.latest_result()
        return result.get("episode") == episode and result.get("outcome") != "running"

    def _wait_simulated(self, predicate, what: str) -> None:
        """Wait however long the simulation takes, but fail when its time stops advancing."""
        progress = {"sim": self.conductor.sim_time(), "at": time.monotonic()}

        def done_or_stalled() -> bool:
            if predicate():
                return True
            now_sim = self.conductor.sim_time()
            if now_sim > progress["sim"]:
                progress.update(sim=now_sim, at=time.monotonic())
            elif time.monotonic() - progress["at"] > STALL_TIMEOUT_S:
                raise ClosedLoopError(
                    f"simulated time stood still at {now_sim:.2f} s for {STALL_TIMEOUT_S:g} s waiting for {what}"
                )
            return False

        self._wait_alive(done_or_stalled, math.inf, what)

    def close(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.send_signal(signal.SIGINT)
        for process in self.processes:
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self.processes = []
        for log in self._logs.values():
            if log is not None:
                log.close()
        if getattr(self, "executor", None) is not None:
            self.executor.shutdown()
        if self.conductor is not None:
            self.conductor.destroy_node()
            self.conductor = None
        rclpy.try_shutdown(context=self.context)
        if self._thread is not None:
            self._thread.join(timeout=5.0)
        self.domain.release()

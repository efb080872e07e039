"""Closed-loop trials in the simulated room: sim_node, camera_window_node and inference_node as
separate processes, started as drive.launch.py use_sim:=true lockstep:=true starts them, on a
private ROS graph, with the trial conductor in the calling process.
"""

from __future__ import annotations

import math
import os
import signal
import subprocess
import tempfile
import threading
import time
import typing

import numpy as np
import rclpy
from rclpy.executors import MultiThreadedExecutor

from mobile_vla_ros.demo.conductor import ClosedLoopError, TrialConductor, wait_for
from mobile_vla_ros.demo.trials import Trial, first_unfamiliar
from mobile_vla_ros.nodes.node_specs import INFERENCE, NodeSpec, drive_nodes, node_command
from mobile_vla_ros.paths import config_file
from mobile_vla_ros.policy.config import PolicyConfig
from mobile_vla_ros.policy.instructions import instruction_side
from mobile_vla_ros.ros_domain import LOCALHOST_ONLY_ENV, claim_private_domain
from mobile_vla_ros.sim.takeover import TakeoverRules, TakeoverSupervisor
from mobile_vla_ros.sim.world import SIDES, Layout

STALL_TIMEOUT_S = 60.0  # real seconds without simulated time advancing before the loop counts as dead
# Real seconds a node may take to answer the conductor (an instruction applied, sim/reset): on a busy
# 2-core machine a process can stall for seconds (10 s was once too short with two loops side by side).
ANSWER_TIMEOUT_S = 60.0
MONITOR_SETTLE_S = 0.5  # simulated s after the release before the familiarity verdict counts for a trial
# Held at the start beyond the window's refill: the inference node's acceleration limit reaches
# the policy's command there (from any previous command), so the robot is released the same way each time.
START_HOLD_MARGIN_S = 2.0
# Simulated time may run this much faster than real time when the pipeline keeps up (the trials'
# outcome does not depend on it: lockstep).
MAX_REAL_TIME_FACTOR = 4.0


def closed_loop_nodes(
    model_dir,
    base_model_dir,
    seed: int,
    time_limit_s: float = 20.0,
    device: str = "auto",
    dtype: str | None = None,
    freeze_camera: bool = False,
    scene: str = "plain",
    familiarity_action: str | None = None,
    corrections_dir=None,
    first_episode: int = 0,
) -> list[NodeSpec]:
    """The nodes of drive.launch.py use_sim:=true lockstep:=true enable:=false, with the trials'
    settings on top. `dtype` and `familiarity_action` None: drive.yaml's; `scene`: sim_node's (plain,
    dark, recoloured); `corrections_dir`: the inference node records takeovers there;
    `first_episode`: the simulator's layout number at start (the first trial drives the next)."""
    config = PolicyConfig.load(model_dir)
    inference = {"device": device, "start_enabled": False}
    if dtype is not None:
        inference["dtype"] = dtype
    if familiarity_action is not None:
        inference["familiarity_action"] = familiarity_action
    if corrections_dir is not None:
        inference.update(record_corrections=True, corrections_dir=str(corrections_dir))
    sim = {
        "seed": int(seed),
        "first_episode": int(first_episode),
        "time_limit_s": float(time_limit_s),
        "freeze_camera": bool(freeze_camera),
        "scene": scene,
        # The window must hold frames of the new layout only, plus one sample and the hold's margin.
        "start_hold_s": (config.window_size + 1) * config.action_dt + START_HOLD_MARGIN_S,
        "max_real_time_factor": MAX_REAL_TIME_FACTOR,
    }
    return drive_nodes(
        config_file("drive.yaml"),
        model_dir,
        base_model_dir,
        inference=inference,
        sim_yaml=config_file("sim.yaml"),
        lockstep=True,
        sim=sim,
    )


class ClosedLoopSim:
    """The nodes as separate processes (each with its own interpreter lock: in one process the
    control timer and the camera path starved each other on a 2-core machine), the conductor here.

    Time is simulated and in lockstep: the simulator advances its clock one control period at a time,
    each once the inference node has published that tick's cmd_vel and answered the newest frame, so
    a trial drives the same path however busy the machine is (docs/demo.md has the measurements).
    Use as a context manager; `run_trial(index, side)` drives one episode and returns a Trial.
    """

    def __init__(self, model_dir, base_model_dir, seed: int, quiet: bool = False, torch_threads: int = 1, **settings):
        """`settings`: closed_loop_nodes's; `quiet`: the nodes log warnings and errors only."""
        nodes = closed_loop_nodes(model_dir, base_model_dir, seed, **settings)
        inference = next(node.parameters for node in nodes if node.name == INFERENCE)
        self.record_corrections = bool(inference["record_corrections"])
        self.correction_end_hold_s = float(inference["correction_end_hold_s"])
        self.processes: dict[str, subprocess.Popen] = {}
        self.domain = claim_private_domain()
        os.environ.update(LOCALHOST_ONLY_ENV)  # read by rclpy.init below: the conductor stays on loopback too
        self.context = rclpy.Context()
        rclpy.init(context=self.context, domain_id=self.domain.domain_id)
        self.conductor = None
        self._thread = None
        self._params_dir = tempfile.TemporaryDirectory(prefix="closed_loop_")  # read as each node starts
        # The tiny demo model gains nothing from intra-op threads, and idle-spinning OpenMP threads
        # next to the simulator's renderer slow a 2-core machine down badly.
        env = {**os.environ, **self.domain.env, "OMP_NUM_THREADS": str(torch_threads)}
        output = subprocess.DEVNULL if quiet else None
        # Quiet nodes still keep their log, so a node that dies can say why (_wait_alive).
        self._logs: dict[str, typing.IO[bytes]] = {}
        try:
            for node in nodes:
                command = node_command(node, self._params_dir.name, log_level="warn" if quiet else None)
                log = self._logs[node.name] = tempfile.TemporaryFile() if quiet else None
                self.processes[node.name] = subprocess.Popen(command, env=env, stdout=output, stderr=log)
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
            dead = [(name, p.returncode) for name, p in self.processes.items() if p.poll() is not None]
            if dead:
                name, status = dead[0]
                raise ClosedLoopError(f"node process {name} exited with status {status}{self._log_tail(name)}")
            return predicate()

        wait_for(ready, timeout_s, what)

    def _log_tail(self, name: str, lines: int = 3) -> str:
        """The last lines a quiet node wrote (its FATAL reason), for the error; '' when not quiet."""
        log = self._logs.get(name)
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
        the topic that long (simulated) after the release. The simulator holds the robot at its start
        until the camera window shows the new layout only (start_hold_s); the path runs from that
        release to the end that sim/result reports."""
        conductor = self.conductor
        first = side if switch_after_s is None else next(other for other in SIDES if other != side)
        conductor.instruct(first)
        wait_for(
            lambda: instruction_side(conductor.active_instruction) == first,
            ANSWER_TIMEOUT_S,
            f"instruction {first!r} to apply",
        )
        # Enabled before the reset: the previous episode has ended, so the robot stays where it is,
        # and the new one holds it at the start until the release (however fast the machine is).
        conductor.enable(True)
        try:
            info = conductor.reset_sim(ANSWER_TIMEOUT_S)
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
        if reasons and self.record_corrections:
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
        for process in self.processes.values():
            if process.poll() is None:
                process.send_signal(signal.SIGINT)
        for process in self.processes.values():
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self.processes = {}
        for log in self._logs.values():
            if log is not None:
                log.close()
        self._params_dir.cleanup()
        if getattr(self, "executor", None) is not None:
            self.executor.shutdown()
        if self.conductor is not None:
            self.conductor.destroy_node()
            self.conductor = None
        rclpy.try_shutdown(context=self.context)
        if self._thread is not None:
            self._thread.join(timeout=5.0)
        self.domain.release()

"""inference_node: windows -> policy (control.worker thread) -> cmd_vel from a fixed-rate control timer.
The ROS side only: parameters and topics (nodes/inference_tables.py), message conversion and logging; the
decisions are control.drive.DriveController's, the set-up control.inference_setup's, the figures on
/diagnostics control.drive_status's (docs/architecture.md, "Drive runtime").
"""

from __future__ import annotations

import dataclasses
import functools
import os
import sys
import threading
import time
from pathlib import Path

import numpy as np
from builtin_interfaces.msg import Time as StampMsg
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from geometry_msgs.msg import Twist
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, QoSProfile
from sensor_msgs.msg import Image, Joy, TimeReference
from std_msgs.msg import Bool, String

from mobile_vla_ros.control.correction_capture import correction_sample, correction_writer
from mobile_vla_ros.control.corrections import CorrectionSettings
from mobile_vla_ros.control.drive import DriveState, future_stamp_problem
from mobile_vla_ros.control.drive_status import DriveStatus
from mobile_vla_ros.control.inference_setup import (
    FAMILIARITY_UNCALIBRATED,
    describe_familiarity,
    drive_controller,
    load_runner,
    parse_presets,
)
from mobile_vla_ros.control.limits import VelocityLimits
from mobile_vla_ros.control.stamps import seconds
from mobile_vla_ros.control.worker import DelayedPolicy, InferenceWorker
from mobile_vla_ros.data.images import split_window
from mobile_vla_ros.errors import ImageError, InstructionError, MobileVlaError
from mobile_vla_ros.nodes.inference_tables import (
    CMD_VEL,
    CMD_VEL_TELEOP,
    DIAGNOSTICS,
    ENABLE,
    INSTRUCTION,
    INSTRUCTION_ACTIVE,
    INTERFACES,  # noqa: F401 (with PARAMETERS: the tables scripts/reference.py and test_interfaces.py read here)
    JOY,
    LIMIT_NAMES,
    PARAMETERS,
    UNFAMILIAR,
    WINDOW,
    WINDOW_ANSWERED,
    WINDOW_BUILT,
)
from mobile_vla_ros.nodes.parameters import accept_changes, declare_parameters
from mobile_vla_ros.nodes.process import publish_final_stop, run_node
from mobile_vla_ros.nodes.ros_image import image_msg_to_rgb
from mobile_vla_ros.policy.config import PolicyConfig
from mobile_vla_ros.policy.instructions import expand_instruction

LOG_THROTTLE_S = 5.0
# Test hook, not a setting: every policy step takes this many seconds longer (tests hold a step in
# flight while they stop the node). Logged as a warning when set.
STEP_DELAY_ENV = "MOBILE_VLA_STEP_DELAY_S"
CORRECTIONS_SAVE_TIMEOUT_S = 10.0  # at shutdown, after the zero is out: the takeover's file is finished
_LEVELS = {
    DriveState.DRIVING: DiagnosticStatus.OK,
    DriveState.OVERRIDE: DiagnosticStatus.OK,
    DriveState.FAULT: DiagnosticStatus.ERROR,
}


def nanoseconds(stamp) -> int:
    """A builtin_interfaces/Time as integer nanoseconds: exact, unlike float seconds."""
    return stamp.sec * 1_000_000_000 + stamp.nanosec


class InferenceNode(Node):
    def __init__(self, **kwargs):
        super().__init__("inference_node", **kwargs)
        p = declare_parameters(self, PARAMETERS)
        for name in ("model_dir", "base_model_dir"):
            if not getattr(p, name):
                raise MobileVlaError(f"parameter {name} is not set")
        self.presets = parse_presets(p.instruction_presets)
        limits = VelocityLimits(*(getattr(p, name) for name in LIMIT_NAMES))
        if not p.control_rate_hz > 0:
            raise MobileVlaError(f"control_rate_hz must be > 0, got {p.control_rate_hz}")

        # Everything that policy.json alone decides is checked before the (slow) model load.
        self.config = PolicyConfig.load(p.model_dir)
        first_instruction = self._expand(p.instruction)
        self.controller, notes = drive_controller(p, self.config, limits)
        for note in notes:
            self.get_logger().info(note)
        if self.controller.familiarity.active:
            self.get_logger().info(describe_familiarity(self.controller.familiarity))
        elif self.controller.familiarity.settings.action != "none":
            self.get_logger().warning(FAMILIARITY_UNCALIBRATED)
        self.deadman_button = p.deadman_button
        self._lock = threading.Lock()
        self._stopped = False
        changes = {name: functools.partial(self._limit_change, name) for name in LIMIT_NAMES}
        changes.update(instruction_presets=self._presets_change, instruction=self._instruction_switch)
        accept_changes(self, PARAMETERS, changes)
        self.corrections = None
        if p.record_corrections:
            logger = self.get_logger()
            self.corrections = correction_writer(
                Path(p.corrections_dir).expanduser(),
                CorrectionSettings(p.correction_context_s, p.correction_end_hold_s),
                self.config,
                p.model_dir,
                lambda: self.active_instruction,
                logger.info,
                logger.warning,
                lambda message: logger.error(message, throttle_duration_sec=LOG_THROTTLE_S),
            )
        step_delay_s = float(os.environ.get(STEP_DELAY_ENV) or 0.0)

        # torch is imported from here on: only once parameters are sane
        self.runner = load_runner(p, self.config, self.get_logger().info, self.get_logger().warning)
        self.config = self.runner.config
        self.runner.set_instruction(first_instruction)
        self._executed = np.zeros(2)
        self.status = DriveStatus()
        self._chunk_ready_ns: int | None = None
        self.state = None
        self.reason = ""
        self.active_instruction = self.requested_instruction = first_instruction

        # Publishers exist only once the policy has loaded.
        self.cmd_pub = self.create_publisher(Twist, CMD_VEL.name, 10)
        latched = QoSProfile(depth=1, durability=DurabilityPolicy.TRANSIENT_LOCAL)
        self.instruction_pub = self.create_publisher(String, INSTRUCTION_ACTIVE.name, latched)
        self.status_pub = self.create_publisher(DiagnosticArray, DIAGNOSTICS.name, 10)
        self.answered_pub = self.create_publisher(TimeReference, WINDOW_ANSWERED.name, 10)
        self.familiarity_pub = self.create_publisher(Bool, UNFAMILIAR.name, latched)
        self.familiarity_pub.publish(Bool(data=False))
        self.instruction_pub.publish(String(data=first_instruction))

        if step_delay_s > 0:
            self.get_logger().warning(f"{STEP_DELAY_ENV}={step_delay_s:g}: every policy step is slowed (a test hook)")
        self.worker = InferenceWorker(
            DelayedPolicy(self.runner, step_delay_s) if step_delay_s > 0 else self.runner,
            self._on_chunk,
            self._on_inference_error,
            self._on_instruction_applied,
            self._on_instruction_refused,
            on_discard=lambda stamp_ns: self._answer(stamp_ns, "dropped"),
            on_died=self._on_worker_died,
        )
        self.worker.start()
        self.create_subscription(Image, WINDOW.name, self._on_window, 1)
        self.create_subscription(TimeReference, WINDOW_BUILT.name, self._on_window_built, 10)
        self.create_subscription(String, INSTRUCTION.name, self._on_instruction, 10)
        self.create_subscription(Bool, ENABLE.name, self._on_enable, 10)
        self.create_subscription(Joy, JOY.name, self._on_joy, 10)
        self.create_subscription(Twist, CMD_VEL_TELEOP.name, self._on_teleop, 10)
        self.create_timer(1.0 / p.control_rate_hz, self._on_control_tick)
        self.create_timer(p.status_period_s, self._publish_status)
        self.get_logger().info(
            f"ready: {self.config.window_size}-frame windows, chunks of {self.config.chunk_size} x "
            f"{self.config.action_dt:.3f} s, control at {p.control_rate_hz:g} Hz, "
            f"{'enabled' if p.start_enabled else 'disabled until enable=true'}, instruction {first_instruction!r}"
        )

    def now_ns(self) -> int:
        """The node's clock, as control/ counts time: integer nanoseconds, like the header stamps."""
        return self.get_clock().now().nanoseconds

    def _expand(self, text: str) -> str:
        return expand_instruction(text, self.config.instructions, self.presets, self.config.max_instruction_chars)

    # ---- inputs (executor thread) -------------------------------------------------------------
    def _on_window(self, msg: Image) -> None:
        received_ns, decode_started = self.now_ns(), time.perf_counter()
        stamp_ns = nanoseconds(msg.header.stamp)
        problem = future_stamp_problem(stamp_ns, received_ns)
        if problem is not None:  # kept out of the controller: it would make every later window look old
            self.status.counts["bad_windows"] += 1
            self._fault(problem)
            self._answer(stamp_ns, "rejected")
            return
        try:
            frames = split_window(image_msg_to_rgb(msg), self.config.image_size)
        except ImageError as error:
            self.status.counts["bad_windows"] += 1
            self.get_logger().error(f"dropping window: {error}", throttle_duration_sec=LOG_THROTTLE_S)
            self._answer(stamp_ns, "dropped")
            return
        self.status.window_received(stamp_ns, received_ns, time.perf_counter() - decode_started)
        with self._lock:
            self.controller.on_window(stamp_ns)
        self.worker.submit(frames[-self.config.window_size :], stamp_ns)
        if self.corrections is not None:
            with self._lock:
                now_ns = self.now_ns()
                override, proposal = self.controller.override_velocity(now_ns), self.controller.proposal(now_ns)
            self.corrections.submit(correction_sample(frames[-1], stamp_ns, self._executed, override, proposal))

    def _on_window_built(self, msg: TimeReference) -> None:
        self.status.window_built(nanoseconds(msg.header.stamp), nanoseconds(msg.time_ref))

    def _on_instruction(self, msg: String) -> None:
        try:
            self._instruction_switch(msg.data)()
        except InstructionError as error:
            self.get_logger().error(
                f"instruction {msg.data!r} rejected: {error}; keeping {self.active_instruction!r}",
                throttle_duration_sec=LOG_THROTTLE_S,
            )

    def _instruction_switch(self, text: str):
        """The switch to `text` (InstructionError: no instruction), for the topic and `ros2 param set` alike.
        Only a change switches: a GUI or `ros2 topic pub` repeating the instruction at 30 Hz costs nothing."""
        instruction = self._expand(text)

        def switch() -> None:
            if instruction != self.requested_instruction:
                self.requested_instruction = instruction
                self.get_logger().info(f"instruction {text!r} -> {instruction!r} (from the next inference)")
                self.worker.request_instruction(instruction)

        return switch

    def _limit_change(self, name: str, value):
        """A speed limit, from the next command on; one VelocityLimits refuses (not positive, not finite) raises."""
        dataclasses.replace(self.controller.limiter.limits, **{name: value})  # the check: ValueError

        def change() -> None:
            limits = dataclasses.replace(self.controller.limiter.limits, **{name: value})
            self.controller.limiter.set_limits(limits)
            self.get_logger().info(f"speed limits now {limits}")

        return change

    def _presets_change(self, entries):
        """Presets for the instructions from now on; entries not of the form 'name=text' raise."""
        presets = parse_presets(entries)

        def change() -> None:
            self.presets = presets
            self.get_logger().info(f"instruction presets now {', '.join(presets) or 'none'}")

        return change

    def _on_enable(self, msg: Bool) -> None:
        """Disabling stops at once: the zero goes out now, not on the next tick, and the step in
        flight is discarded (its chunk came from before the stop)."""
        with self._lock:
            self.controller.set_enabled(msg.data)
        if not msg.data:
            self._publish_command(self.now_ns())
            self.worker.cancel()

    def _on_joy(self, msg: Joy) -> None:
        pressed = 0 <= self.deadman_button < len(msg.buttons) and msg.buttons[self.deadman_button] == 1
        with self._lock:
            self.controller.on_joy(pressed, self.now_ns())

    def _on_teleop(self, msg: Twist) -> None:
        with self._lock:
            self.controller.on_override([msg.linear.x, msg.linear.y], self.now_ns())

    # ---- worker thread callbacks --------------------------------------------------------------
    def _on_chunk(self, chunk: np.ndarray, stamp_ns: int, step_s: float) -> None:
        now_ns = self.now_ns()
        self.status.step_done(stamp_ns, step_s, now_ns, self.runner.last_timing)
        score = self.runner.last_familiarity
        with self._lock:
            problem = self.controller.on_chunk(chunk, stamp_ns)
            if problem is None:
                self._chunk_ready_ns = now_ns
            change = None if score is None else self.controller.familiarity.observe(score, stamp_ns)
        if score is not None:
            self.status.familiarity_scores.add(score)
        if change is not None:
            self.familiarity_pub.publish(Bool(data=self.controller.familiarity.unfamiliar))
        if change is not None and self.controller.familiarity.unfamiliar:  # rclpy: one severity per call site
            self.status.counts["unfamiliar_events"] += 1
            self.get_logger().warning(change)
        elif change is not None:
            self.get_logger().info(change)
        if problem is None:
            self.status.counts["chunks"] += 1
        else:
            self.status.counts["faults"] += 1
            self.get_logger().error(f"model output rejected, stopping: {problem}", throttle_duration_sec=LOG_THROTTLE_S)
        self._answer(stamp_ns, "chunk" if problem is None else "rejected")

    def _answer(self, stamp_ns: int, outcome: str) -> None:
        """window/answered: the window captured at `stamp_ns` is dealt with (the simulator's lockstep waits for it)."""
        msg = TimeReference(time_ref=self.get_clock().now().to_msg(), source=outcome)
        msg.header.stamp = StampMsg(sec=stamp_ns // 1_000_000_000, nanosec=stamp_ns % 1_000_000_000)
        self.answered_pub.publish(msg)

    def _on_inference_error(self, message: str, stamp_ns: int) -> None:
        self._fault(message)
        self._answer(stamp_ns, "failed")

    def _fault(self, message: str) -> None:
        self.status.counts["faults"] += 1
        with self._lock:
            self.controller.on_fault(message)
        self.get_logger().error(f"{message}; stopping", throttle_duration_sec=LOG_THROTTLE_S)

    def _on_worker_died(self, message: str) -> None:
        self.status.counts["faults"] += 1
        with self._lock:
            self.controller.on_fatal(message)
        self.get_logger().error(f"{message}; stopped for good (restart the node)")

    def _on_instruction_applied(self, instruction: str) -> None:
        self.active_instruction = instruction
        self.instruction_pub.publish(String(data=instruction))

    def _on_instruction_refused(self, instruction: str, error: Exception) -> None:
        self.requested_instruction = self.active_instruction
        self.get_logger().error(
            f"policy refused instruction {instruction!r}: {error}; keeping {self.active_instruction!r}"
        )

    # ---- outputs (executor thread) ------------------------------------------------------------
    def _on_control_tick(self) -> None:
        now_ns = self.now_ns()
        command = self._publish_command(now_ns)
        if command is None:
            return
        self.status.control_rate.tick(seconds(now_ns))
        if command.obs_age_s is not None:
            self.status.latency.add("obs_to_cmd_age", command.obs_age_s)
        if command.state != self.state:
            text = f"state {self.state.value if self.state else 'START'} -> {command.state.value}: {command.reason}"
            # Two call sites: rclpy refuses one call site logging at two severities (it raised here, which
            # ended the executor's spin on the first FAULT after an INFO transition).
            if command.state == DriveState.FAULT:
                self.get_logger().error(text)
            else:
                self.get_logger().info(text)
        self.state, self.reason = command.state, command.reason

    def _publish_command(self, now_ns: int):
        """The controller's command for `now_ns` on cmd_vel; None once stopped (the final zero is out)."""
        with self._lock:
            if self._stopped:
                return None
            command = self.controller.tick(now_ns)
            chunk_ready_ns, self._chunk_ready_ns = self._chunk_ready_ns, None
            if chunk_ready_ns is not None and command.state == DriveState.DRIVING:
                self.status.latency.add("executor_delay", seconds(now_ns - chunk_ready_ns))
            twist = Twist()
            twist.linear.x, twist.linear.y = float(command.velocity[0]), float(command.velocity[1])
            self._executed = command.velocity
            self.cmd_pub.publish(twist)
        return command

    def status_values(self) -> dict[str, str]:
        state = self.state.value if self.state else ""
        return self.status.values(
            state, self.reason, self.active_instruction, self.worker.skipped_windows, self.controller.familiarity
        )

    def _publish_status(self) -> None:
        values = self.status_values()
        status = DiagnosticStatus(
            level=_LEVELS.get(self.state, DiagnosticStatus.WARN),
            name=f"{self.get_name()}: drive",
            message=f"{values['state']}: {values['reason']}",
            hardware_id="mobile_vla_ros",
            values=[KeyValue(key=key, value=value) for key, value in values.items()],
        )
        self.status.start_period()
        array = DiagnosticArray(status=[status])
        array.header.stamp = self.get_clock().now().to_msg()
        self.status_pub.publish(array)

    def stop(self) -> None:
        """Leave the robot with a zero command, delivered first; then tell the worker to stop (a step in
        flight is discarded, never waited for) and finish the correction being recorded."""
        with self._lock:
            self._stopped = True  # no control tick publishes after the final zero
        publish_final_stop(self.cmd_pub)
        self.worker.stop()
        if self.corrections is not None:
            self.corrections.close(CORRECTIONS_SAVE_TIMEOUT_S)


def main(args=None) -> int:
    return run_node("inference_node", InferenceNode, InferenceNode.stop, args)


if __name__ == "__main__":
    sys.exit(main())

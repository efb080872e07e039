"""inference_node: windows -> policy (worker thread) -> cmd_vel from a fixed-rate control timer.

Topics: INTERFACES below (docs/reference.md): windows, instruction, enable, joy and cmd_vel_teleop
in; cmd_vel at a fixed rate in every state, window/answered per window, instruction/active and
familiarity/unfamiliar latched, and /diagnostics with the state and every latency stage.

The decision per tick is control.drive.DriveController (see its docstring for the states and
their priority). Every setting is checked against the checkpoint's policy.json before the model
loads (a refusal costs no loading time); a policy that cannot be loaded is logged and the process
exits with status 1 before any publisher exists. Stale timeouts left at 0 come from the model's
`action_dt` (control.drive.resolve_stale_timeouts) and are logged at start.

Stopping does not wait for the model: on SIGINT/SIGTERM (`stop`) the zero goes out first, then the
worker is told to stop; on `enable: false` a zero is published at once and the step in flight is
discarded. A worker thread that dies, or a window stamped more than 1 s ahead of the node's clock,
is a FAULT (zero, /diagnostics ERROR with the reason). Correction episodes are written by their own
thread (control.corrections.CorrectionWriter), never on the control executor.

An instruction switch empties the runner's per-frame feature cache (features depend on the prompt);
the next window starts again from its newest frame.

Longer than most nodes on purpose: its parameter table, latency bookkeeping, stop paths and the
corrections hook are thin wiring around control/ and policy/; the logic lives there.
"""

from __future__ import annotations

import dataclasses
import os
import sys
import threading
import time
from pathlib import Path

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from geometry_msgs.msg import Twist
from rcl_interfaces.msg import SetParametersResult
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, QoSProfile
from rclpy.time import Time
from sensor_msgs.msg import Image, Joy, TimeReference
from std_msgs.msg import Bool, String

from mobile_vla_ros.control.corrections import CorrectionRecorder, CorrectionSettings, CorrectionWriter, Sample
from mobile_vla_ros.control.drive import (
    DriveController,
    DriveState,
    SafetySettings,
    future_stamp_problem,
    resolve_stale_timeouts,
)
from mobile_vla_ros.control.familiarity import FamiliarityMonitor, FamiliaritySettings
from mobile_vla_ros.control.latency import ByStamp, StageLatency
from mobile_vla_ros.control.limits import VelocityLimits
from mobile_vla_ros.control.stats import RateMeter, RollingStats
from mobile_vla_ros.control.worker import DelayedPolicy, InferenceWorker
from mobile_vla_ros.data.correction_episodes import CORRECTION_ATTR, CORRECTION_COLUMNS
from mobile_vla_ros.data.episode_recovery import recover_partial_episodes
from mobile_vla_ros.data.episode_writer import EpisodeWriter
from mobile_vla_ros.data.images import split_window
from mobile_vla_ros.errors import ImageError, InstructionError, MobileVlaError
from mobile_vla_ros.nodes.camera_window_node import WINDOW, WINDOW_BUILT, stamp_seconds
from mobile_vla_ros.nodes.interfaces import LATCHED, PUBLISHES, SUBSCRIBES, Topic
from mobile_vla_ros.nodes.parameters import NodeParameter, declare_parameters
from mobile_vla_ros.nodes.process import publish_final_stop, run_node
from mobile_vla_ros.nodes.ros_image import image_msg_to_rgb
from mobile_vla_ros.policy.config import PolicyConfig
from mobile_vla_ros.policy.instructions import LAB_INSTRUCTIONS, expand_instruction

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


LIMITS = VelocityLimits()  # the speed limits' defaults (drive.yaml sets the robot's)
LIMIT_NAMES = ("max_linear_x", "max_linear_y", "max_speed", "max_accel")
# Read-only, fixed for the run, except the speed limits: `ros2 param set` changes them while driving.
PARAMETERS = (
    NodeParameter("model_dir", "", "policy checkpoint directory (policy.json + safetensors)"),
    NodeParameter("base_model_dir", "", "local Kosmos-2 directory the policy was trained on"),
    NodeParameter("device", "auto", "torch device: auto (CUDA when available), cpu, cuda, cuda:1, ..."),
    NodeParameter(
        "dtype",
        "auto",
        "auto (from the hardware: CUDA bf16 or fp16, CPU bf16 only with native bf16, else fp32), fp32, fp16 or bf16",
    ),
    NodeParameter(
        "quantize",
        "none",
        "none, or int8 (dynamic int8 Linear weights; CPU with dtype fp32; a checkpoint "
        "made by `mobile-vla quantize` loads its stored int8 backbone)",
    ),
    NodeParameter(
        "backend",
        "pytorch",
        "what runs Kosmos-2: pytorch, or onnxruntime (the graph of `mobile-vla export-onnx`, fp32; providers "
        "TensorRT, CUDA, CPU in that order, whichever is installed)",
    ),
    NodeParameter("onnx_dir", "", "with backend onnxruntime: the export directory; empty: MODEL_DIR/onnx"),
    NodeParameter(
        "allow_failed_precision_check",
        False,
        "drive at a dtype at which the policy fell behind fp32 in its training check (policy.json precision_checks)",
    ),
    NodeParameter(
        "max_new_frames_per_step",
        1,
        "frames the model encodes per step at most; when it fell further behind, "
        "skipped frames repeat the previous one (bounds the latency tail)",
    ),
    NodeParameter("control_rate_hz", 20.0, "cmd_vel publishing rate"),
    NodeParameter("max_linear_x", LIMITS.max_linear_x, "speed limit for |linear.x| in m/s", read_only=False),
    NodeParameter("max_linear_y", LIMITS.max_linear_y, "speed limit for |linear.y| in m/s", read_only=False),
    NodeParameter("max_speed", LIMITS.max_speed, "limit for the norm of (linear.x, linear.y) in m/s", read_only=False),
    NodeParameter(
        "max_accel",
        LIMITS.max_accel,
        "limit for the change of (linear.x, linear.y) in m/s^2; safety stops are immediate",
        read_only=False,
    ),
    NodeParameter("max_model_output", 3.0, "model actions beyond this magnitude (m/s) are a fault, not clipped"),
    NodeParameter(
        "camera_stale_timeout_s",
        0.0,
        "stop when the newest window's capture stamp is older than this (s); 0: from the model "
        "(3 windows + 1 control period, at least 0.5 s); a set value must be >= 2 windows + 1 control period",
    ),
    NodeParameter(
        "chunk_stale_timeout_s",
        0.0,
        "stop when the chunk's observation is older than this (s); 0: from the model "
        "(6 windows + 1 control period, at least 1.0 s); a set value must be >= 2 windows + 1 control period",
    ),
    NodeParameter(
        "familiarity_action",
        "stop",
        "none, warn, slow or stop: what the robot does while its camera shows frames unlike the training "
        "frames (the policy's calibrated familiarity threshold exceeded for familiarity_hold_s)",
    ),
    NodeParameter(
        "familiarity_threshold", "p99.9", "which threshold of policy.json familiarity: p99.9 or p99 (more alarms)"
    ),
    NodeParameter(
        "familiarity_hold_s", 0.3, "scores above (below) the threshold this long make the frames unfamiliar (familiar)"
    ),
    NodeParameter(
        "familiarity_slow_factor", 0.3, "with familiarity_action slow: commands scaled by this while unfamiliar"
    ),
    NodeParameter("override_hold_s", 0.5, "a cmd_vel_teleop message overrides the policy for this long"),
    NodeParameter("start_enabled", False, "value of the enable gate before the first message on enable"),
    NodeParameter("require_deadman", False, "also require the joy deadman button to be held for policy motion"),
    NodeParameter("deadman_button", 2, "joy button index of the deadman"),
    NodeParameter("joy_timeout_s", 0.5, "the deadman counts as released when joy is older than this"),
    NodeParameter("instruction", "left", "initial instruction (same rules as the instruction topic)"),
    NodeParameter(
        "instruction_presets",
        [f"bottle_{side}={text}" for side, text in LAB_INSTRUCTIONS.items()],
        "extra names for the instruction topic, 'name=full text'",
    ),
    NodeParameter("status_period_s", 1.0, "period of the /diagnostics status"),
    NodeParameter("record_corrections", False, "save each human takeover on cmd_vel_teleop as a correction episode"),
    NodeParameter("corrections_dir", "~/mobile_vla_corrections", "directory of the correction episodes"),
    NodeParameter("correction_context_s", 2.0, "seconds of frames before a takeover kept in its episode"),
    NodeParameter("correction_end_hold_s", 1.0, "a takeover ends after this long without a teleop command"),
)
INSTRUCTION = Topic(
    "instruction",
    String,
    SUBSCRIBES,
    "'left', 'right', a preset name (instruction_presets) or free text; a change applies from the next inference",
)
ENABLE = Topic("enable", Bool, SUBSCRIBES, "gate for the policy's motion (start_enabled until the first message)")
JOY = Topic("joy", Joy, SUBSCRIBES, "deadman button (deadman_button), used when require_deadman is true")
CMD_VEL_TELEOP = Topic(
    "cmd_vel_teleop",
    Twist,
    SUBSCRIBES,
    "a human command: wins over the policy for override_hold_s; with record_corrections each takeover is "
    "saved as a correction episode",
)
CMD_VEL = Topic(
    "cmd_vel",
    Twist,
    PUBLISHES,
    "linear.x, linear.y (REP 103: y > 0 is left), all else zero, at control_rate_hz in every state "
    "(zero when not driving)",
)
WINDOW_ANSWERED = Topic(
    "window/answered",
    TimeReference,
    PUBLISHES,
    "one per window once the node is done with it: header = the window's header (capture stamp), time_ref = "
    "when, source = chunk, rejected, failed or dropped (sim_node's lockstep waits for it)",
)
INSTRUCTION_ACTIVE = Topic("instruction/active", String, PUBLISHES, "the instruction in force", LATCHED)
UNFAMILIAR = Topic(
    "familiarity/unfamiliar",
    Bool,
    PUBLISHES,
    "true while the newest frames are unlike the training frames (control/familiarity.py), on each change",
    LATCHED,
)
DIAGNOSTICS = Topic(
    "/diagnostics",
    DiagnosticArray,
    PUBLISHES,
    "every status_period_s: state, reason, instruction, control rate, and p50/p95/p99 of each latency stage: "
    "frame_age_at_build, window_transport, preprocess, queue_wait, backbone, head, inference_latency, "
    "executor_delay, obs_to_cmd_age (keys <stage>_ms_p95 etc., docs/performance.md)",
)
INTERFACES = (
    Topic(WINDOW.name, Image, SUBSCRIBES, "windows from camera_window_node"),
    Topic(WINDOW_BUILT.name, TimeReference, SUBSCRIBES, "when each window was built (for the latency stages)"),
    INSTRUCTION,
    ENABLE,
    JOY,
    CMD_VEL_TELEOP,
    CMD_VEL,
    WINDOW_ANSWERED,
    INSTRUCTION_ACTIVE,
    UNFAMILIAR,
    DIAGNOSTICS,
)


def parse_presets(entries) -> dict[str, str]:
    presets = {}
    for entry in entries or ():
        name, separator, text = entry.partition("=")
        if not separator or not name.strip() or not text.strip():
            raise MobileVlaError(f"instruction_presets entry {entry!r} is not of the form 'name=full instruction'")
        presets[name.strip().lower()] = text.strip()
    return presets


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
        timeouts, notes = resolve_stale_timeouts(
            {name: getattr(p, name) for name in ("camera_stale_timeout_s", "chunk_stale_timeout_s")},
            self.config.action_dt,
            1.0 / p.control_rate_hz,
        )
        for note in notes:
            self.get_logger().info(note)
        familiarity = self._familiarity_monitor(p)
        self.deadman_button = p.deadman_button
        self._lock = threading.Lock()
        self._stopped = False
        self.controller = DriveController(
            self.config.action_dt,
            1.0 / p.control_rate_hz,
            limits,
            SafetySettings(
                camera_stale_s=timeouts["camera_stale_timeout_s"],
                chunk_stale_s=timeouts["chunk_stale_timeout_s"],
                override_hold_s=p.override_hold_s,
                joy_timeout_s=p.joy_timeout_s,
                max_model_output=p.max_model_output,
                start_enabled=p.start_enabled,
                require_deadman=p.require_deadman,
            ),
            familiarity,
        )
        self.add_on_set_parameters_callback(self._on_set_parameters)
        self.corrections = self._correction_recorder(p) if p.record_corrections else None
        step_delay_s = float(os.environ.get(STEP_DELAY_ENV) or 0.0)

        # torch import: only once parameters are sane
        from mobile_vla_ros.policy.backbone import resolve_device, resolve_dtype
        from mobile_vla_ros.policy.runner import PolicyRunner

        device = resolve_device(p.device)
        if p.backend == "onnxruntime":
            from mobile_vla_ros.policy.onnx_encoder import check_onnx_settings

            onnx_dir = check_onnx_settings(p.model_dir, p.onnx_dir or None, p.dtype, p.quantize)
            dtype, why = "fp32", f"the ONNX graph in {onnx_dir} is fp32"
        elif p.backend == "pytorch":
            dtype, why = resolve_dtype(p.dtype, device, p.quantize)
        else:
            raise MobileVlaError(f"backend must be pytorch or onnxruntime, got {p.backend!r}")
        self._check_precision(p, "int8" if p.quantize == "int8" else dtype)
        self.get_logger().info(
            f"loading policy {p.model_dir} on base model {p.base_model_dir} ({p.backend}, {device}, {dtype}: {why}) ..."
        )
        self.runner = PolicyRunner.load(
            p.model_dir,
            p.base_model_dir,
            device=str(device),
            dtype=dtype,
            quantize=p.quantize,
            max_new_frames=p.max_new_frames_per_step,
            backend=p.backend,
            onnx_dir=p.onnx_dir or None,
        )
        self.config = self.runner.config
        self.runner.set_instruction(first_instruction)
        self._executed = np.zeros(2)
        self.latency = StageLatency()
        self.familiarity_scores = RollingStats()  # newest-frame scores since the last status
        self._arrivals = ByStamp()  # capture stamp -> window received, until its build time arrives
        self._builds = ByStamp()  # capture stamp -> window built, until the window arrives
        self._jobs = ByStamp()  # capture stamp -> (received, decode seconds), until its chunk is ready
        self._captures = ByStamp()  # capture stamp -> the window's header stamp, until window/answered
        self._chunk_ready_at: float | None = None
        self.control_rate = RateMeter()
        self.state = None
        self.reason = ""
        self.active_instruction = self.requested_instruction = first_instruction
        self.counts = {
            "windows": 0,
            "bad_windows": 0,
            "chunks": 0,
            "faults": 0,
            "unfamiliar_events": 0,
            "encoded_frames": 0,
            "held_frames": 0,
        }

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
            on_discard=lambda stamp: self._answer(stamp, "dropped"),
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

    def now(self) -> float:
        return self.get_clock().now().nanoseconds * 1e-9

    def _expand(self, text: str) -> str:
        return expand_instruction(text, self.config.instructions, self.presets, self.config.max_instruction_chars)

    # ---- inputs (executor thread) -------------------------------------------------------------
    def _on_window(self, msg: Image) -> None:
        received, decode_started = self.now(), time.perf_counter()
        stamp = stamp_seconds(msg.header.stamp)
        self._captures.put(stamp, msg.header.stamp)
        problem = future_stamp_problem(stamp, received)
        if problem is not None:  # kept out of the controller: it would make every later window look old
            self.counts["bad_windows"] += 1
            self._fault(problem)
            self._answer(stamp, "rejected")
            return
        try:
            frames = split_window(image_msg_to_rgb(msg), self.config.image_size)
        except ImageError as error:
            self.counts["bad_windows"] += 1
            self.get_logger().error(f"dropping window: {error}", throttle_duration_sec=LOG_THROTTLE_S)
            self._answer(stamp, "dropped")
            return
        self._jobs.put(stamp, (received, time.perf_counter() - decode_started))
        built = self._builds.pop(stamp)
        if built is None:
            self._arrivals.put(stamp, received)
        else:
            self.latency.add("window_transport", received - built)
        self.counts["windows"] += 1
        with self._lock:
            self.controller.on_window(stamp)
        self.worker.submit(frames[-self.config.window_size :], stamp)
        if self.corrections is not None:
            self._record_correction(frames[-1], stamp)

    def _on_window_built(self, msg: TimeReference) -> None:
        stamp, built = stamp_seconds(msg.header.stamp), stamp_seconds(msg.time_ref)
        self.latency.add("frame_age_at_build", built - stamp)
        received = self._arrivals.pop(stamp)
        if received is None:
            self._builds.put(stamp, built)
        else:
            self.latency.add("window_transport", received - built)

    def _on_instruction(self, msg: String) -> None:
        """Only a change switches: a GUI or `ros2 topic pub` repeating the instruction at 30 Hz costs nothing."""
        try:
            instruction = self._expand(msg.data)
        except InstructionError as error:
            self.get_logger().error(
                f"instruction {msg.data!r} rejected: {error}; keeping {self.active_instruction!r}",
                throttle_duration_sec=LOG_THROTTLE_S,
            )
            return
        if instruction == self.requested_instruction:
            return
        self.requested_instruction = instruction
        self.get_logger().info(f"instruction {msg.data!r} -> {instruction!r} (from the next inference)")
        self.worker.request_instruction(instruction)

    def _on_set_parameters(self, parameters) -> SetParametersResult:
        """`ros2 param set` on a speed limit applies from the next command; a value VelocityLimits
        refuses (not positive, not finite) is refused with its reason and nothing changes."""
        changed = {parameter.name: parameter.value for parameter in parameters if parameter.name in LIMIT_NAMES}
        if not changed:
            return SetParametersResult(successful=True)
        try:
            limits = dataclasses.replace(self.controller.limiter.limits, **changed)
        except ValueError as error:
            return SetParametersResult(successful=False, reason=str(error))
        self.controller.limiter.set_limits(limits)
        self.get_logger().info(f"speed limits now {limits}")
        return SetParametersResult(successful=True)

    def _on_enable(self, msg: Bool) -> None:
        """Disabling stops at once: the zero goes out now, not on the next tick, and the step in
        flight is discarded (its chunk came from before the stop)."""
        with self._lock:
            self.controller.set_enabled(msg.data)
        if not msg.data:
            self._publish_command(self.now())
            self.worker.cancel()

    def _on_joy(self, msg: Joy) -> None:
        pressed = 0 <= self.deadman_button < len(msg.buttons) and msg.buttons[self.deadman_button] == 1
        with self._lock:
            self.controller.on_joy(pressed, self.now())

    def _on_teleop(self, msg: Twist) -> None:
        with self._lock:
            self.controller.on_override([msg.linear.x, msg.linear.y], self.now())

    # ---- worker thread callbacks --------------------------------------------------------------
    def _on_chunk(self, chunk: np.ndarray, stamp: float, latency: float) -> None:
        now = self.now()
        self._record_step_latency(stamp, latency, now)
        score = self.runner.last_familiarity
        with self._lock:
            problem = self.controller.on_chunk(chunk, stamp)
            if problem is None:
                self._chunk_ready_at = now
            change = None if score is None else self.controller.familiarity.observe(score, stamp)
        if score is not None:
            self.familiarity_scores.add(score)
        if change is not None:
            self.familiarity_pub.publish(Bool(data=self.controller.familiarity.unfamiliar))
        if change is not None and self.controller.familiarity.unfamiliar:  # rclpy: one severity per call site
            self.counts["unfamiliar_events"] += 1
            self.get_logger().warning(change)
        elif change is not None:
            self.get_logger().info(change)
        if problem is None:
            self.counts["chunks"] += 1
        else:
            self.counts["faults"] += 1
            self.get_logger().error(f"model output rejected, stopping: {problem}", throttle_duration_sec=LOG_THROTTLE_S)
        self._answer(stamp, "chunk" if problem is None else "rejected")

    def _answer(self, stamp: float, outcome: str) -> None:
        """window/answered: the window captured at `stamp` is dealt with (the simulator's lockstep waits for it)."""
        msg = TimeReference(time_ref=self.get_clock().now().to_msg(), source=outcome)
        capture = self._captures.pop(stamp)  # the exact stamp: float seconds lose nanoseconds
        msg.header.stamp = capture if capture is not None else Time(nanoseconds=round(stamp * 1e9)).to_msg()
        self.answered_pub.publish(msg)

    def _record_step_latency(self, stamp: float, latency: float, now: float) -> None:
        self.latency.add("inference_latency", latency)
        timing, job = self.runner.last_timing, self._jobs.pop(stamp)
        if timing is not None:
            self.latency.add("backbone", timing.backbone_s)
            self.latency.add("head", timing.head_s)
            self.counts["encoded_frames"] += timing.frames_encoded
            self.counts["held_frames"] += timing.frames_held
        if job is not None:
            received, decode_s = job
            self.latency.add("queue_wait", max(now - latency - received, 0.0))
            if timing is not None:
                self.latency.add("preprocess", decode_s + timing.preprocess_s)

    def _on_inference_error(self, message: str, stamp: float) -> None:
        self._fault(message)
        self._answer(stamp, "failed")

    def _fault(self, message: str) -> None:
        self.counts["faults"] += 1
        with self._lock:
            self.controller.on_fault(message)
        self.get_logger().error(f"{message}; stopping", throttle_duration_sec=LOG_THROTTLE_S)

    def _on_worker_died(self, message: str) -> None:
        self.counts["faults"] += 1
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
        now = self.now()
        command = self._publish_command(now)
        if command is None:
            return
        self.control_rate.tick(now)
        if command.obs_age_s is not None:
            self.latency.add("obs_to_cmd_age", command.obs_age_s)
        if command.state != self.state:
            text = f"state {self.state.value if self.state else 'START'} -> {command.state.value}: {command.reason}"
            # Two call sites: rclpy refuses one call site logging at two severities (it raised here, which
            # ended the executor's spin on the first FAULT after an INFO transition).
            if command.state == DriveState.FAULT:
                self.get_logger().error(text)
            else:
                self.get_logger().info(text)
        self.state, self.reason = command.state, command.reason

    def _publish_command(self, now: float):
        """The controller's command for `now` on cmd_vel; None once stopped (the final zero is out)."""
        with self._lock:
            if self._stopped:
                return None
            command = self.controller.tick(now)
            chunk_ready_at, self._chunk_ready_at = self._chunk_ready_at, None
            if chunk_ready_at is not None and command.state == DriveState.DRIVING:
                self.latency.add("executor_delay", now - chunk_ready_at)
            twist = Twist()
            twist.linear.x, twist.linear.y = float(command.velocity[0]), float(command.velocity[1])
            self._executed = command.velocity
            self.cmd_pub.publish(twist)
        return command

    # ---- corrections (executor thread) --------------------------------------------------------
    def _familiarity_monitor(self, p: dict) -> FamiliarityMonitor:
        settings = FamiliaritySettings(
            p.familiarity_action, p.familiarity_threshold, p.familiarity_hold_s, p.familiarity_slow_factor
        )
        problems = settings.problems()
        thresholds = self.config.familiarity.get("thresholds", {})
        if thresholds and settings.threshold not in thresholds:
            problems.append(f"familiarity_threshold must be one of {', '.join(thresholds)}, got {settings.threshold!r}")
        if problems:
            raise MobileVlaError("; ".join(problems))
        monitor = FamiliarityMonitor(thresholds.get(settings.threshold), settings)
        if monitor.active:
            self.get_logger().info(
                f"familiarity monitor: {settings.action} when frames score above {monitor.threshold:.3g} "
                f"({settings.threshold} of the validation frames) for {settings.hold_s:g} s"
            )
        elif settings.action != "none":
            self.get_logger().warning(
                "familiarity monitor off: the policy has no calibrated threshold (trained without validation "
                "episodes?); unfamiliar frames will not slow or stop the robot"
            )
        return monitor

    def _check_precision(self, p: dict, precision: str) -> None:
        """Refuse a dtype at which the policy fell behind fp32 in training; warn at one never checked
        (a policy trained without validation episodes has no checks; its whitening still covers
        bf16 and fp16). Read from policy.json before the model loads."""
        from mobile_vla_ros.policy.precision import precision_verdict

        passed, message = precision_verdict(self.config, precision)
        if passed is False and not p.allow_failed_precision_check:
            raise MobileVlaError(
                f"{message}. Drive at fp32 (dtype: fp32) or another checked dtype, retrain, or set "
                "allow_failed_precision_check: true"
            )
        if passed:  # rclpy: one severity per call site
            self.get_logger().info(message)
        else:
            self.get_logger().warning(message)

    def _correction_recorder(self, p) -> CorrectionWriter:
        directory = Path(p.corrections_dir).expanduser()
        for path in recover_partial_episodes(directory):
            self.get_logger().warning(f"recovered a correction interrupted by a crash: {path} (flagged truncated)")

        def open_episode() -> EpisodeWriter:
            self.get_logger().info(f"takeover: recording a correction for {self.active_instruction!r}")
            return EpisodeWriter(
                directory,
                self.active_instruction,
                1.0 / self.config.action_dt,
                rotated_180=self.config.camera.get("rotate_180"),
                extra_columns=CORRECTION_COLUMNS,
                **{CORRECTION_ATTR: True},
                policy_model=str(Path(p.model_dir).resolve()),
                recorder="mobile_vla_ros inference_node",
            )

        settings = CorrectionSettings(p.correction_context_s, p.correction_end_hold_s)
        recorder = CorrectionRecorder(settings, self.config.action_dt, open_episode)
        self.get_logger().info(f"recording corrections to {directory}")
        logger = self.get_logger()
        return CorrectionWriter(
            recorder, logger.info, lambda message: logger.error(message, throttle_duration_sec=LOG_THROTTLE_S)
        )

    def _record_correction(self, frame: np.ndarray, stamp: float) -> None:
        """One sample per window: the person's command while they are in charge, else what was executed,
        with the policy's proposal beside it; written by the corrections thread."""
        with self._lock:
            now = self.now()
            override, proposal = self.controller.override_velocity(now), self.controller.proposal(now)
        sample = Sample(
            frame,
            stamp,
            self._executed if override is None else override,
            np.full(2, np.nan) if proposal is None else proposal,
            human=override is not None,
        )
        self.corrections.submit(sample)

    def status_values(self) -> dict[str, str]:
        def ms(stats: RollingStats, q: float) -> str:
            value = stats.percentile(q)
            return "" if value is None else f"{value * 1000:.1f}"

        rate = self.control_rate.rate_hz
        values = {
            "state": self.state.value if self.state else "",
            "reason": self.reason,
            "instruction": self.active_instruction,
            **self.latency.values(),
            "control_rate_hz": "" if rate is None else f"{rate:.2f}",
            "control_period_ms_p99": ms(self.control_rate.periods, 99),
            "skipped_windows": str(self.worker.skipped_windows),
            **self._familiarity_values(),
        }
        values.update({name: str(count) for name, count in self.counts.items()})
        return values

    def _familiarity_values(self) -> dict[str, str]:
        monitor = self.controller.familiarity

        def number(value) -> str:
            return "" if value is None else f"{value:.4g}"

        return {
            "familiarity": "off" if not monitor.active else "unfamiliar" if monitor.unfamiliar else "familiar",
            "familiarity_latest": number(monitor.latest),
            "familiarity_p50": number(self.familiarity_scores.percentile(50)),
            "familiarity_p95": number(self.familiarity_scores.percentile(95)),
            "familiarity_threshold": number(monitor.threshold),
        }

    def _publish_status(self) -> None:
        values = self.status_values()
        status = DiagnosticStatus(
            level=_LEVELS.get(self.state, DiagnosticStatus.WARN),
            name=f"{self.get_name()}: drive",
            message=f"{values['state']}: {values['reason']}",
            hardware_id="mobile_vla_ros",
            values=[KeyValue(key=key, value=value) for key, value in values.items()],
        )
        self.familiarity_scores = RollingStats()
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

"""The drive state machine: what the inference node publishes on each control tick.

Priority, highest first (the first that applies decides the state):

1. OVERRIDE — a human teleop command arrived within `override_hold_s`: it is published
   (through the same speed/acceleration limits) whatever the policy wants, even when the policy
   is disabled; the human is in charge.
   FAULT (fatal) — the inference worker is gone (`on_fatal`): zero for the rest of the run,
   whatever the gate or the camera say, so /diagnostics keeps reporting why.
2. DISABLED — the enable gate is closed (`enable` topic false, or the gamepad deadman is
   required and not held on a fresh `joy` message): zero.
3. WAITING_FOR_CAMERA — no window received yet: zero.
4. STALE — the newest window's capture stamp is older than `camera_stale_s`, or the chunk's
   observation is older than `chunk_stale_s`, or the chunk is used up: zero.
5. FAULT — the last inference failed or produced non-finite / out-of-range actions: zero until a
   good chunk arrives.
6. WAITING_FOR_MODEL — windows arrive but the first chunk is still being computed: zero.
7. UNFAMILIAR — the newest frames are unlike the training frames (control/familiarity.py): with
   the action `stop` zero, with `slow` the due action scaled down; with `warn` the state stays DRIVING.
8. DRIVING — the due action of the newest chunk, speed- and acceleration-limited.

Every state but DRIVING and OVERRIDE commands zero, immediately (no deceleration ramp), and zero
keeps being published at the control rate so a base-side watchdog sees a live, stopped stream.
All times are on one clock (the node's ROS clock; header stamps use the same clock): stamps and
`now_ns` in integer nanoseconds, settings in seconds (control/stamps.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

import numpy as np

from mobile_vla_ros.control.executor import ChunkExecutor
from mobile_vla_ros.control.familiarity import FamiliarityMonitor, FamiliaritySettings
from mobile_vla_ros.control.limits import VelocityLimiter, VelocityLimits
from mobile_vla_ros.control.stamps import nanoseconds, seconds


class DriveState(str, Enum):
    WAITING_FOR_MODEL = "WAITING_FOR_MODEL"
    WAITING_FOR_CAMERA = "WAITING_FOR_CAMERA"
    DISABLED = "DISABLED"
    OVERRIDE = "OVERRIDE"
    DRIVING = "DRIVING"
    STALE = "STALE"
    FAULT = "FAULT"
    UNFAMILIAR = "UNFAMILIAR"


@dataclass(frozen=True)
class SafetySettings:
    camera_stale_s: float = 0.5  # newest window capture stamp older than this -> stop
    chunk_stale_s: float = 1.0  # chunk observation older than this -> stop
    override_hold_s: float = 0.5  # a teleop command wins for this long after it arrives
    joy_timeout_s: float = 0.5  # deadman counts as released when joy is older than this
    max_model_output: float = 3.0  # |action| above this (m/s) is a model fault, not clipped
    start_enabled: bool = False
    require_deadman: bool = False


@dataclass(frozen=True)
class Command:
    velocity: np.ndarray  # (linear_x, linear_y), finite, within limits
    state: DriveState
    reason: str = ""
    obs_age_s: float | None = None  # set when the command comes from a policy chunk


def check_chunk(chunk, action_dim: int, max_abs: float) -> str | None:
    """Why a model output cannot be executed, or None when it can."""
    array = np.asarray(chunk)
    if array.ndim != 2 or array.shape[1] != action_dim or array.shape[0] == 0:
        return f"chunk has shape {array.shape}, expected (N, {action_dim})"
    if not np.all(np.isfinite(array)):
        return "chunk contains NaN or infinite values"
    peak = float(np.max(np.abs(array)))
    if peak > max_abs:
        return f"chunk value {peak:.3g} exceeds the plausible range ±{max_abs:g}"
    return None


# A healthy pipeline delivers a window every action_dt; the newest one is read on a control tick.
# A stale timeout shorter than two window periods plus a tick would stop a robot whose camera is
# merely one window late (a jerk on a real base), so such a setting is refused at start.
STALE_MARGIN_WINDOWS = 2


def minimum_stale_timeout(action_dt: float, control_period_s: float) -> float:
    return STALE_MARGIN_WINDOWS * action_dt + control_period_s


# A stale timeout of 0 (drive.yaml's default) means "from the model": one more window than the
# floor, and never below the values tuned for a 10 Hz model (camera 0.5 s, chunk 1.0 s). A 2.5 Hz
# model (legacy recordings, windows 0.4 s apart) thus gets 1.25 s and 2.45 s.
FROM_MODEL = 0.0
DERIVED_MARGIN_WINDOWS = {"camera_stale_timeout_s": 1, "chunk_stale_timeout_s": 4}
DERIVED_MINIMUM_S = {"camera_stale_timeout_s": 0.5, "chunk_stale_timeout_s": 1.0}


def resolve_stale_timeouts(
    settings: dict[str, float], action_dt: float, control_period_s: float
) -> tuple[dict[str, float], list[str]]:
    """Stale timeouts in seconds from the parameters (name -> value; 0 = from the model), and one line
    per derived value saying how. A value the user set is checked against the floor (ValueError)."""
    floor = minimum_stale_timeout(action_dt, control_period_s)
    resolved, notes = {}, []
    for name, value in settings.items():
        if value == FROM_MODEL:
            derived = max(DERIVED_MINIMUM_S[name], floor + DERIVED_MARGIN_WINDOWS[name] * action_dt)
            resolved[name] = round(derived, 6)
            notes.append(
                f"{name} = {resolved[name]:g} s from the model "
                f"({STALE_MARGIN_WINDOWS + DERIVED_MARGIN_WINDOWS[name]} windows of {action_dt:g} s "
                f"+ one control period, at least {DERIVED_MINIMUM_S[name]:g} s)"
            )
        elif not value >= floor:  # also refuses negative values and NaN
            raise ValueError(
                f"{name} = {value:g} s is shorter than {STALE_MARGIN_WINDOWS} windows of the model "
                f"({action_dt:g} s each) plus one control period ({control_period_s:g} s) = {floor:g} s: "
                f"a healthy camera would stop the robot between windows (0 derives it from the model)"
            )
        else:
            resolved[name] = float(value)
    return resolved, notes


# A window stamped further ahead of the node's clock than this is refused: its stamp would pin the
# camera watchdog (never stale) and make every honest window after it look old. 1 s is far beyond
# any clock skew between processes on one robot, yet small against a wrong clock (sim vs wall time).
MAX_FUTURE_STAMP_S = 1.0


def future_stamp_problem(stamp_ns: int, now_ns: int) -> str | None:
    """Why a window stamped `stamp_ns` cannot be used at `now_ns`, or None when it can."""
    ahead_ns = stamp_ns - now_ns
    if ahead_ns > nanoseconds(MAX_FUTURE_STAMP_S):
        return (
            f"window stamped {seconds(ahead_ns):.3f} s in the future (limit {MAX_FUTURE_STAMP_S:g} s): "
            "the camera's clock is not the node's (use_sim_time? another machine's clock?); window refused"
        )
    return None


class DriveController:
    def __init__(
        self,
        action_dt: float,
        control_period_s: float,
        limits: VelocityLimits,
        safety: SafetySettings,
        familiarity: FamiliarityMonitor | None = None,
    ):
        floor = minimum_stale_timeout(action_dt, control_period_s)
        for name, value in (
            ("camera_stale_timeout_s", safety.camera_stale_s),
            ("chunk_stale_timeout_s", safety.chunk_stale_s),
        ):
            if not value >= floor:
                raise ValueError(
                    f"{name} = {value:g} s is shorter than {STALE_MARGIN_WINDOWS} windows of the model "
                    f"({action_dt:g} s each) plus one control period ({control_period_s:g} s) = {floor:g} s: "
                    "a healthy camera would stop the robot between windows"
                )
        self.safety = safety
        self._camera_stale_ns, self._override_hold_ns, self._joy_timeout_ns = (
            nanoseconds(getattr(safety, name), name) for name in ("camera_stale_s", "override_hold_s", "joy_timeout_s")
        )
        self.familiarity = familiarity or FamiliarityMonitor(None, FamiliaritySettings(action="none"))
        self.executor = ChunkExecutor(action_dt, safety.chunk_stale_s)
        self.limiter = VelocityLimiter(limits, control_period_s)
        self.enabled = safety.start_enabled
        self.fault: str | None = None
        self.fatal: str | None = None
        self._window_stamp_ns: int | None = None
        self._deadman_ns: int | None = None  # when the deadman was last seen held
        self._override: tuple[int, np.ndarray] | None = None  # (when, the person's command)

    # ---- inputs -------------------------------------------------------------------------------
    def on_window(self, stamp_ns: int) -> None:
        if self._window_stamp_ns is None or stamp_ns > self._window_stamp_ns:
            self._window_stamp_ns = stamp_ns

    def on_chunk(self, chunk, obs_stamp_ns: int) -> str | None:
        """Adopt a model output; returns the fault message when it is rejected."""
        problem = check_chunk(chunk, 2, self.safety.max_model_output)
        if problem is not None:
            self.on_fault(problem)
            return problem
        if self.executor.set_chunk(chunk, obs_stamp_ns):
            self.fault = None
        return None

    def on_fault(self, message: str) -> None:
        """Inference failed: drop the chunk so nothing computed before it keeps driving."""
        self.fault = message
        self.executor.clear()

    def on_fatal(self, message: str) -> None:
        """The policy can no longer answer (its worker died): FAULT for good, not cleared by a chunk."""
        self.fatal = message
        self.executor.clear()

    def set_enabled(self, enabled: bool) -> None:
        self.enabled = bool(enabled)

    def on_joy(self, deadman_pressed: bool, now_ns: int) -> None:
        self._deadman_ns = now_ns if deadman_pressed else None

    def on_override(self, velocity, now_ns: int) -> None:
        command = np.asarray(velocity, dtype=np.float64)[:2]
        # A garbled teleop message must not move the robot; zero still stops it.
        self._override = (now_ns, command if np.all(np.isfinite(command)) else np.zeros(2))

    # ---- decision -----------------------------------------------------------------------------
    def gate_open(self, now_ns: int) -> bool:
        held = self._deadman_ns is not None and now_ns - self._deadman_ns <= self._joy_timeout_ns
        return self.enabled and (held or not self.safety.require_deadman)

    def tick(self, now_ns: int) -> Command:
        override = self.override_velocity(now_ns)
        if override is not None:
            return Command(self.limiter.limit(override), DriveState.OVERRIDE, "teleop command")
        if self.fatal is not None:
            return self._stop(DriveState.FAULT, self.fatal)
        if not self.gate_open(now_ns):
            reason = "enable is false" if not self.enabled else "deadman button not held"
            return self._stop(DriveState.DISABLED, reason)
        if self._window_stamp_ns is None:
            return self._stop(DriveState.WAITING_FOR_CAMERA, "no camera window received yet")
        camera_age_ns = now_ns - self._window_stamp_ns
        if camera_age_ns > self._camera_stale_ns:
            return self._stop(DriveState.STALE, f"newest camera frame is {seconds(camera_age_ns):.3f} s old")
        if self.fault is not None:
            return self._stop(DriveState.FAULT, self.fault)
        if not self.executor.has_chunk:
            return self._stop(DriveState.WAITING_FOR_MODEL, "first inference running")
        due = self.executor.due(now_ns)
        if due.action is None:
            return self._stop(DriveState.STALE, due.reason)
        monitor = self.familiarity
        if monitor.unfamiliar and monitor.settings.action == "stop":
            return self._stop(DriveState.UNFAMILIAR, "frames unlike the training frames")
        if monitor.unfamiliar and monitor.settings.action == "slow":
            slowed = due.action * monitor.settings.slow_factor
            return Command(self.limiter.limit(slowed), DriveState.UNFAMILIAR, "frames unfamiliar: slowed", due.age_s)
        return Command(self.limiter.limit(due.action), DriveState.DRIVING, f"chunk action {due.index}", due.age_s)

    def override_velocity(self, now_ns: int) -> np.ndarray | None:
        """The person's command while they are in charge (OVERRIDE), else None."""
        if self._override is not None and now_ns - self._override[0] <= self._override_hold_ns:
            return self._override[1]
        return None

    def proposal(self, now_ns: int) -> np.ndarray | None:
        """What the policy would command now (before limits), whatever the state; None when it has
        nothing valid. Recorded beside a person's corrections."""
        if self.fault is not None or self.fatal is not None or not self.executor.has_chunk:
            return None
        return self.executor.due(now_ns).action

    def _stop(self, state: DriveState, reason: str) -> Command:
        return Command(self.limiter.reset(), state, reason)

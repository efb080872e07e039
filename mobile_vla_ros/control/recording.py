"""The recorder's state machine (no ROS; recorder_node feeds it messages and clock ticks).

idle --start--> recording --stop-and-save--> saving --> idle
                    \\--discard--> idle

While recording, `tick()` runs at the sample rate: it takes the newest camera frame and pairs it
with the velocity command that was in force at the frame's capture stamp (the robot was doing
that when the picture was taken). When no fresh frame has arrived since the last sample, the
sample waits for the next frame up to `FRESH_FRAME_GRACE` of a period (rclpy runs a due timer
before the frames that arrived meanwhile, so a busy moment would otherwise re-sample the previous
frame); without one by then, the old frame is stored flagged `camera_lag`, as is a frame older
than `camera_lag_s` when sampled; a moving command whose stream went silent reads as zero and is flagged
`command_stale`. All times are seconds on one clock (the node's ROS clock). A saved episode is
judged by data/quality.py; its verdicts go into the file, the state (`last_quality`) and the log line.

The recorder's settings, buttons and state machine live together because they change together.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any

import numpy as np

from mobile_vla_ros.data.episode_writer import EpisodeWriter
from mobile_vla_ros.data.quality import IDLE_SPEED
from mobile_vla_ros.errors import MobileVlaError
from mobile_vla_ros.policy.instructions import LAB_INSTRUCTIONS, MAX_INSTRUCTION_CHARS, expand_instruction

FRESH_FRAME_GRACE = 0.4  # of a sample period: how long a sample may wait for a fresh frame
_COMMAND_HISTORY_S = 10.0


class RecorderState(str, Enum):
    IDLE = "idle"
    RECORDING = "recording"
    SAVING = "saving"


@dataclass(frozen=True)
class RecorderSettings:
    sample_rate_hz: float = 10.0
    camera_timeout_s: float = 0.5  # no frame for this long: the camera is stale, start refused
    command_timeout_s: float = 0.5  # a motion command older than this is no longer in force
    camera_lag_s: float = 0.2  # a sampled frame older than this (or sampled before) is flagged

    def __post_init__(self):
        for name in ("sample_rate_hz", "camera_timeout_s", "command_timeout_s", "camera_lag_s"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")


@dataclass(frozen=True)
class Outcome:
    ok: bool
    message: str
    path: Path | None = None


class CommandHistory:
    """Velocity commands by receipt time, to answer 'what was in force at time t?'."""

    def __init__(self, timeout_s: float):
        self.timeout_s = timeout_s
        self._stamps: list[float] = []
        self._commands: list[np.ndarray] = []

    def add(self, command: Sequence[float], stamp_s: float) -> None:
        if self._stamps and stamp_s < self._stamps[-1]:
            stamp_s = self._stamps[-1]  # keep the history sorted if the clock steps back
        self._stamps.append(stamp_s)
        self._commands.append(np.asarray(command, dtype=np.float32).reshape(3))
        # Forget old commands but keep the newest one before the horizon: it may still be in force.
        keep_from = max(0, bisect.bisect_left(self._stamps, stamp_s - _COMMAND_HISTORY_S) - 1)
        if keep_from:
            del self._stamps[:keep_from], self._commands[:keep_from]

    def stalled_while_moving(self, now_s: float) -> bool:
        """The newest command is a motion that nobody has renewed or stopped in time."""
        return bool(self._stamps) and _moving(self._commands[-1]) and now_s - self._stamps[-1] > self.timeout_s

    def at(self, t_s: float) -> tuple[np.ndarray, bool]:
        """(command in force at t, stale) - zero when none was received yet or it timed out."""
        index = bisect.bisect_right(self._stamps, t_s) - 1
        if index < 0:
            return np.zeros(3, np.float32), False
        command = self._commands[index]
        if _moving(command) and t_s - self._stamps[index] > self.timeout_s:
            return np.zeros(3, np.float32), True
        return command.copy(), False


def _moving(command: np.ndarray) -> bool:
    return bool(np.any(np.abs(command) >= IDLE_SPEED))


WriterFactory = Callable[[str], EpisodeWriter]


class EpisodeRecorder:
    """Start / sample / save / discard episodes; every state change is reported to `on_change`.

    `prepare_frame` turns whatever `on_frame` was given (e.g. a ROS message, kept undecoded so that
    only sampled frames cost CPU) into an RGB uint8 array; it raises MobileVlaError for bad frames.
    """

    def __init__(
        self,
        settings: RecorderSettings,
        open_writer: WriterFactory,
        prepare_frame: Callable[[Any], np.ndarray],
        instruction: str = "",
        presets: dict[str, str] = LAB_INSTRUCTIONS,
        on_change: Callable[[dict, str], None] | None = None,
    ):
        self.settings = settings
        self.presets = dict(presets)
        self.state = RecorderState.IDLE
        self.instruction = (
            expand_instruction(instruction, (), self.presets, MAX_INSTRUCTION_CHARS) if instruction else ""
        )
        self.episodes_saved = 0
        self.dropped_samples = 0
        self.last_path: Path | None = None
        self.last_quality: list[dict] = []  # verdicts of the last saved episode
        self.frames_received = 0  # camera messages received during the current (or last) episode
        self._sample_lags: list[float] = []  # seconds from capture to sampling, current (or last) episode
        self._delivery_lags: list[float] = []  # seconds from capture to receipt (the transport's share of the above)
        self.missed_samples = 0  # sample periods without a tick (the process was busy), current (or last) episode
        self._first_tick: float | None = None
        self._ticks = 0
        self._waiting_tick: float | None = None  # a tick that found no fresh frame and waits for one
        self._open_writer = open_writer
        self._prepare_frame = prepare_frame
        self._on_change = on_change or (lambda status, message: None)
        self._commands = CommandHistory(settings.command_timeout_s)
        self._frame: Any = None
        self._frame_stamp: float | None = None
        self._frame_seq = 0
        self._sampled_seq = -1
        self._writer: EpisodeWriter | None = None
        self._was_moving = False

    # ----------------------------------------------------------------------------------- inputs
    def on_frame(self, frame: Any, stamp_s: float, now_s: float | None = None) -> Outcome | None:
        """A camera frame captured at `stamp_s`, received at `now_s` (default: the stamp); returns
        the outcome of the sample it completes, if a tick was waiting for a fresh frame."""
        now_s = stamp_s if now_s is None else now_s
        waiting = self.state is RecorderState.RECORDING and self._waiting_tick is not None
        late = waiting and now_s - self._waiting_tick > FRESH_FRAME_GRACE / self.settings.sample_rate_hz
        outcome = self._sample(now_s) if late else None  # too late: that sample keeps the old frame, flagged
        self._frame, self._frame_stamp = frame, stamp_s
        self._frame_seq += 1
        if self.state is RecorderState.RECORDING:
            self.frames_received += 1
            self._delivery_lags.append(now_s - stamp_s)
        if waiting:
            self._waiting_tick = None
            if not late:
                outcome = self._sample(now_s)
        return outcome

    def on_command(self, command: Sequence[float], stamp_s: float) -> None:
        self._commands.add(command, stamp_s)

    # ---------------------------------------------------------------------------------- actions
    def set_instruction(self, text: str) -> Outcome:
        if self.state is not RecorderState.IDLE:
            return Outcome(False, "the instruction cannot change during an episode; save or discard first")
        try:
            instruction = expand_instruction(text, (), self.presets, MAX_INSTRUCTION_CHARS)
        except ValueError as error:
            return Outcome(False, str(error))
        if instruction != self.instruction:
            self.instruction = instruction
            self._report(f"instruction: {instruction}")
        return Outcome(True, f"instruction: {instruction}")

    def start(self, now_s: float, command_publishers: int) -> Outcome:
        if self.state is not RecorderState.IDLE:
            return Outcome(False, f"cannot start: already {self.state.value}")
        refusal = self._start_refusal(now_s, command_publishers)
        if refusal:
            return Outcome(False, f"cannot start: {refusal}")
        self._writer = self._open_writer(self.instruction)
        self._sampled_seq = self._frame_seq - 1  # the newest frame is fresh for the first sample
        self._was_moving = False
        self.frames_received, self._sample_lags, self._delivery_lags, self.missed_samples = 0, [], [], 0
        self._first_tick, self._ticks = None, 0
        self._waiting_tick = None
        self.state = RecorderState.RECORDING
        self._report("recording started")
        return Outcome(True, "recording started")

    def _start_refusal(self, now_s: float, command_publishers: int) -> str | None:
        if not self.instruction:
            return "no instruction chosen (D-pad left/right, or the instruction topic)"
        if self._frame_stamp is None:
            return "no camera frame received yet"
        age = now_s - self._frame_stamp
        if age > self.settings.camera_timeout_s:
            return f"camera is stale (newest frame {age:.2f} s old, limit {self.settings.camera_timeout_s:.2f} s)"
        if command_publishers <= 0:
            return "nothing publishes velocity commands (is teleop running?)"
        if self._commands.stalled_while_moving(now_s):
            return "the velocity command stream stopped while moving (teleop dead?)"
        return None

    def tick(self, now_s: float) -> Outcome | None:
        """Take one sample (or wait for a fresh frame, see the module docstring); call at
        `sample_rate_hz` while recording (a no-op otherwise)."""
        if self.state is not RecorderState.RECORDING:
            return None
        # Periods since the first tick minus ticks seen. Not per gap: ROS timers keep their phase, so
        # a tick 1.5 periods late is followed by one half a period later and nothing was missed.
        self._first_tick = now_s if self._first_tick is None else self._first_tick
        self._ticks += 1
        periods = round((now_s - self._first_tick) * self.settings.sample_rate_hz) + 1
        self.missed_samples = max(0, periods - self._ticks)
        outcome = None
        if self._waiting_tick is not None:  # no fresh frame since the last tick: that sample keeps the old one
            self._waiting_tick = None
            outcome = self._sample(now_s)
        if self._sampled_seq == self._frame_seq:
            self._waiting_tick = now_s
            return outcome or Outcome(True, "waiting for a fresh frame")
        return self._sample(now_s)

    def _sample(self, now_s: float) -> Outcome:
        camera_lag = self._sampled_seq == self._frame_seq or now_s - self._frame_stamp > self.settings.camera_lag_s
        stamp = self._frame_stamp
        self._sample_lags.append(now_s - stamp)
        try:
            image = self._prepare_frame(self._frame)
            command, command_stale = self._commands.at(stamp)
            moving = _moving(command)
            if self._writer.num_frames == 0:
                event = "episode_start"
            elif moving != self._was_moving:
                event = "start_action" if moving else "stop_action"
            else:
                event = "step"
            self._writer.append(image, command, stamp, event, camera_lag=camera_lag, command_stale=command_stale)
        except MobileVlaError as error:
            self.dropped_samples += 1
            return Outcome(False, f"sample dropped: {error}")
        self._was_moving = moving
        self._sampled_seq = self._frame_seq
        return Outcome(True, "sampled")

    def stop_and_save(self) -> Outcome:
        if self.state is not RecorderState.RECORDING:
            return Outcome(False, "not recording")
        frames = self._writer.num_frames
        if frames == 0:
            self._writer.discard()
            self._finish("stopped with no frames; nothing saved")
            return Outcome(True, "stopped with no frames; nothing saved")
        self.state = RecorderState.SAVING
        self._report(f"saving {frames} frames")
        try:
            path = self._writer.save()
        except (MobileVlaError, OSError) as error:
            partial = self._writer.partial_path
            self._finish(f"save failed, frames kept in {partial}: {error}")
            return Outcome(False, f"save failed, frames kept in {partial}: {error}")
        self.episodes_saved += 1
        self.last_path = path
        quality = self._writer.quality
        self.last_quality = [verdict.to_dict() for verdict in quality.verdicts]
        self._finish(f"saved {frames} frames to {path.name}; quality: {quality.summary()}")
        return Outcome(True, f"saved {frames} frames to {path}; quality: {quality.summary()}", path)

    def discard(self) -> Outcome:
        if self.state is not RecorderState.RECORDING:
            return Outcome(False, "not recording")
        frames = self._writer.num_frames
        self._writer.discard()
        self._finish(f"discarded {frames} frames")
        return Outcome(True, f"discarded {frames} frames")

    def _finish(self, message: str) -> None:
        self._writer = None
        self.state = RecorderState.IDLE
        self._report(message)

    # ----------------------------------------------------------------------------------- status
    def status(self, now_s: float | None = None) -> dict:
        status = {
            "state": self.state.value,
            "instruction": self.instruction,
            "episodes_saved": self.episodes_saved,
            "frames": self._writer.num_frames if self._writer else 0,
            "dropped_samples": self.dropped_samples,
            "last_episode": self.last_path.name if self.last_path else "",
            "last_quality": self.last_quality,
            "frames_received": self.frames_received,
            "missed_samples": self.missed_samples,
        }
        for name, lags in (("sample_lag", self._sample_lags), ("delivery", self._delivery_lags)):
            if lags:  # age of the sampled / of the received frames, this or the last episode
                p50, p99 = np.percentile(lags, [50, 99])
                status[f"{name}_ms_p50"], status[f"{name}_ms_p99"] = round(p50 * 1e3, 1), round(p99 * 1e3, 1)
        if now_s is not None and self._frame_stamp is not None:
            status["camera_age_s"] = round(now_s - self._frame_stamp, 3)
        return status

    def _report(self, message: str) -> None:
        self._on_change(self.status(), message)


def status_line(status: dict, message: str) -> str:
    """One readable log line per state change."""
    return (
        f"[{status['state']}] {message} | episodes saved: {status['episodes_saved']}"
        f" | frames: {status['frames']} | instruction: {status['instruction'] or '(none)'}"
    )


@dataclass(frozen=True)
class EpisodeButtons:
    """Gamepad layout of the episode controls; -1 disables one."""

    start_button: int = 7
    save_button: int = 0
    discard_button: int = 6
    instruction_axis: int = 6  # D-pad left/right; joy_node reports left as +1
    instruction_axis_left_sign: float = 1.0


class EpisodeButtonReader:
    """Joy messages -> episode commands ('start', 'save', 'discard', 'left', 'right') on press.

    Only presses count (released -> pressed), and the first message only sets the baseline, so a
    button held while the recorder starts does nothing.
    """

    def __init__(self, layout: EpisodeButtons):
        self.layout = layout
        self._previous: dict[str, bool] | None = None

    def on_joy(self, axes: Sequence[float], buttons: Sequence[int]) -> list[str]:
        layout = self.layout

        def pressed(index: int) -> bool:
            return 0 <= index < len(buttons) and bool(buttons[index])

        dpad = float(axes[layout.instruction_axis]) if 0 <= layout.instruction_axis < len(axes) else 0.0
        dpad *= layout.instruction_axis_left_sign
        current = {
            "start": pressed(layout.start_button),
            "save": pressed(layout.save_button),
            "discard": pressed(layout.discard_button),
            "left": dpad > 0.5,
            "right": dpad < -0.5,
        }
        previous, self._previous = self._previous, current
        if previous is None:
            return []
        return [name for name, down in current.items() if down and not previous[name]]

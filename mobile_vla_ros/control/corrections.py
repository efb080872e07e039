"""Takeovers become training data (human-gated DAgger).

A policy trained on demonstrations fails in states the demonstrations never reached; a person who
takes over there (on `cmd_vel_teleop`) shows what it should have done. Each takeover is saved as one
episode flagged `correction`:

- `context_s` of frames before the takeover: the history the policy's window saw, with the command
  the robot executed as their action (`human` false: training never imitates them);
- every frame while the person is in charge (the inference node's OVERRIDE state), with the
  person's command as the action (`human` true);
- until the person has been silent for `end_hold_s`; the frames of that pause are kept (`human` false).

The policy's proposal (what it would have commanded, NaN when it had none) is stored beside every
frame, so `mobile-vla inspect` can overlay both and a reader sees where the person disagreed.
The episode layout is data/correction_episodes.py.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from mobile_vla_ros.control.background import BackgroundQueue
from mobile_vla_ros.control.stamps import lasted, nanoseconds, seconds
from mobile_vla_ros.data.correction_episodes import HUMAN, POLICY_ACTIONS


class EpisodeSink(Protocol):
    def append(self, image_rgb, action3, stamp_s: float, *, extras: dict) -> None: ...
    def save(self) -> Path: ...


@dataclass(frozen=True)
class CorrectionSettings:
    context_s: float = 2.0  # frames kept from before the takeover
    end_hold_s: float = 1.0  # the takeover ends after this long without a human command

    def validate(self, sample_period_s: float) -> CorrectionSettings:
        if self.context_s < 0 or self.end_hold_s < sample_period_s:
            raise ValueError(
                f"correction context_s must be >= 0 and end_hold_s >= one sample ({sample_period_s:g} s); "
                f"got {self.context_s:g} / {self.end_hold_s:g}"
            )
        return self


@dataclass(frozen=True)
class Sample:
    frame: np.ndarray  # (H, W, 3) uint8 RGB, as the policy saw it
    stamp_ns: int  # capture stamp
    action: np.ndarray  # (2,) what moved the robot: the person's command, else the executed command
    proposal: np.ndarray  # (2,) the policy's proposal, NaN when none
    human: bool


class CorrectionRecorder:
    """Feed one sample per window (`on_sample`); a finished takeover is saved and its path returned."""

    def __init__(self, settings: CorrectionSettings, sample_period_s: float, open_episode: Callable[[], EpisodeSink]):
        self.settings = settings.validate(sample_period_s)
        self._open_episode = open_episode
        self._context: deque[Sample] = deque(maxlen=max(1, round(settings.context_s / sample_period_s)) + 1)
        self._end_hold_ns = nanoseconds(settings.end_hold_s, "correction_end_hold_s")
        self._episode: EpisodeSink | None = None
        self._last_human_ns = 0  # set by the human sample that opens an episode, before it is read
        self.saved: list[Path] = []

    @property
    def recording(self) -> bool:
        return self._episode is not None

    def on_sample(self, sample: Sample) -> Path | None:
        if sample.human:
            self._last_human_ns = sample.stamp_ns
        if self._episode is None:
            self._context.append(sample)
            if not sample.human:
                return None
            self._episode = self._open_episode()
            for earlier in self._context:
                self._write(earlier)
            self._context.clear()
            return None
        self._write(sample)
        if lasted(sample.stamp_ns - self._last_human_ns, self._end_hold_ns):
            return self.finish()
        return None

    def finish(self) -> Path | None:
        """Save the takeover in progress (also on shutdown); None when there is none."""
        if self._episode is None:
            return None
        episode, self._episode = self._episode, None
        self.saved.append(episode.save())
        return self.saved[-1]

    def drop(self) -> None:
        """Give up the takeover in progress after a write error; its partial file stays on disk and
        is recovered (flagged truncated) at the next start."""
        self._episode = None

    def _write(self, sample: Sample) -> None:
        action = np.zeros(3, np.float32)
        action[:2] = sample.action
        self._episode.append(
            sample.frame,
            action,
            seconds(sample.stamp_ns),
            extras={POLICY_ACTIONS: sample.proposal, HUMAN: sample.human},
        )


class CorrectionWriter:
    """A CorrectionRecorder fed from the control executor and run by its own thread (control.background):
    HDF5 appends and saves never delay a control tick or a stop. Only that thread touches the recorder.
    A failing disk must not stop the robot: the error is logged and the takeover dropped (its partial
    file is recovered at the next start)."""

    def __init__(self, recorder: CorrectionRecorder, info: Callable[[str], None], error: Callable[[str], None]):
        self.recorder = recorder
        self._info, self._error = info, error
        self._jobs = BackgroundQueue("corrections", self._on_error)

    @property
    def recording(self) -> bool:
        return self.recorder.recording

    def submit(self, sample: Sample) -> None:
        if not self._jobs.submit(lambda: self._write(sample)):
            self._error("correction frame dropped: the disk does not keep up")

    def close(self, timeout_s: float) -> None:
        """Save the takeover in progress after what is queued; waits `timeout_s` at most."""

        def finish() -> None:
            if self.recorder.recording:
                self._info(f"correction saved at shutdown: {self.recorder.finish()}")

        if not self._jobs.close(timeout_s, last=finish):
            self._error("the correction being recorded was not saved in time (recovered at the next start)")

    def _write(self, sample: Sample) -> None:
        saved = self.recorder.on_sample(sample)
        if saved is not None:
            self._info(f"correction saved: {saved}")

    def _on_error(self, error: Exception) -> None:
        self.recorder.drop()
        self._error(f"correction not recorded: {error}")

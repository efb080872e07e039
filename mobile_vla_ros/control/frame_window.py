"""Camera frames -> evenly spaced windows at the rate the model was trained at.

The camera usually runs faster than the model's `action_dt` (30 Hz vs 10 Hz): frames are taken
on a schedule of capture stamps `action_dt` apart, with a quarter period of slack for jitter.
When the camera skips more than `MAX_GAP_PERIODS` sample periods, or its stamps jump backwards
(a restarted driver, a looping bag), the history no longer spans the time the model was trained
on, so the window starts again from empty — no window, no motion, until it has refilled.
"""

from __future__ import annotations

from collections import deque

import numpy as np

from mobile_vla_ros.control.stats import RateMeter

MAX_GAP_PERIODS = 2.0
SLACK_FRACTION = 0.25


class FrameWindow:
    def __init__(self, window_size: int, action_dt: float):
        if window_size < 1 or not action_dt > 0:
            raise ValueError(f"need window_size >= 1 and action_dt > 0, got {window_size}, {action_dt}")
        self.window_size = window_size
        self.action_dt = float(action_dt)
        self.camera_rate = RateMeter(size=60)
        self._frames: deque[np.ndarray] = deque(maxlen=window_size)
        self._last_stamp: float | None = None
        self._next_due: float | None = None
        self.resets = 0

    def wants(self, stamp: float) -> bool:
        """Whether a frame captured at `stamp` is due (call before the costly conversion)."""
        self.camera_rate.tick(stamp)
        if self._next_due is None or self._last_stamp is None:
            return True
        if stamp < self._last_stamp or stamp - self._last_stamp > MAX_GAP_PERIODS * self.action_dt:
            return True
        return stamp >= self._next_due - SLACK_FRACTION * self.action_dt

    def add(self, frame: np.ndarray, stamp: float) -> np.ndarray | None:
        """Take a due frame; returns the full window (T, S, S, 3), oldest first, once it has T frames."""
        if self._last_stamp is not None and (
            stamp < self._last_stamp or stamp - self._last_stamp > MAX_GAP_PERIODS * self.action_dt
        ):
            self._frames.clear()
            self.resets += 1
            self._next_due = None
        self._next_due = stamp + self.action_dt if self._next_due is None else self._next_due + self.action_dt
        # Keep the schedule anchored to real frames when the camera drifts.
        self._next_due = max(self._next_due, stamp + (1 - SLACK_FRACTION) * self.action_dt)
        self._last_stamp = stamp
        self._frames.append(frame)
        if len(self._frames) < self.window_size:
            return None
        return np.stack(self._frames)

    def camera_slower_than_model(self) -> float | None:
        """The camera's measured rate when it is below the model's rate (with 10% tolerance)."""
        rate = self.camera_rate.rate_hz
        if rate is not None and len(self.camera_rate.periods) >= 10 and rate < 0.9 / self.action_dt:
            return rate
        return None

"""Action-chunk execution: which action of the newest chunk is due now.

The policy predicts `chunk_size` actions spaced `action_dt` apart, the first one in force at the
moment the window's newest frame was captured (the observation stamp). Inference takes time, so
by the time a chunk arrives some of its actions already lie in the past; the executor skips them
by indexing with the time elapsed since the observation, never with "chunks received".
Stamps and clock readings are integer nanoseconds (control/stamps.py).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from mobile_vla_ros.control.stamps import nanoseconds, seconds


@dataclass(frozen=True)
class DueAction:
    """The action due now (None when the chunk is used up or too old) and why."""

    action: np.ndarray | None
    age_s: float  # now - observation stamp, in seconds
    index: int
    reason: str = ""


class ChunkExecutor:
    """Holds the newest chunk and answers "what is due at time t"."""

    def __init__(self, action_dt: float, stale_timeout_s: float):
        if not action_dt > 0:
            raise ValueError(f"action_dt must be > 0, got {action_dt}")
        if not stale_timeout_s > 0:
            raise ValueError(f"stale_timeout_s must be > 0, got {stale_timeout_s}")
        self.action_dt_ns = nanoseconds(action_dt)
        self.stale_timeout_ns = nanoseconds(stale_timeout_s, "chunk_stale_s")
        self._chunk: np.ndarray | None = None
        self._obs_stamp_ns = 0

    @property
    def has_chunk(self) -> bool:
        return self._chunk is not None

    def set_chunk(self, chunk: np.ndarray, obs_stamp_ns: int) -> bool:
        """Adopt `chunk` unless a chunk from a newer observation is already held."""
        if self._chunk is not None and obs_stamp_ns < self._obs_stamp_ns:
            return False
        self._chunk = np.asarray(chunk, dtype=np.float64)
        self._obs_stamp_ns = obs_stamp_ns
        return True

    def clear(self) -> None:
        self._chunk = None

    def due(self, now_ns: int) -> DueAction:
        if self._chunk is None:
            return DueAction(None, math.inf, -1, "no chunk yet")
        age_ns = now_ns - self._obs_stamp_ns
        age, limit = seconds(age_ns), seconds(self.stale_timeout_ns)
        if age_ns > self.stale_timeout_ns:
            return DueAction(None, age, -1, f"chunk observation is {age:.3f} s old (limit {limit:.3f} s)")
        if age_ns < -self.stale_timeout_ns:
            return DueAction(None, age, -1, f"chunk observation stamp lies {-age:.3f} s in the future: clocks disagree")
        # A stamp slightly ahead of our clock (small clock offset) counts as "just captured".
        index = max(age_ns, 0) // self.action_dt_ns
        if index >= len(self._chunk):
            return DueAction(None, age, index, f"chunk used up ({len(self._chunk)} actions, {age:.3f} s old)")
        return DueAction(self._chunk[index].copy(), age, index)

"""Rolling latency/rate statistics for the drive status (the last N samples, percentiles)."""

from __future__ import annotations

from collections import deque

import numpy as np


class RollingStats:
    def __init__(self, size: int = 200):
        self._values: deque[float] = deque(maxlen=size)

    def add(self, value: float) -> None:
        self._values.append(float(value))

    def __len__(self) -> int:
        return len(self._values)

    def percentile(self, q: float) -> float | None:
        """The q-th percentile (0..100) of the recent samples; None before the first sample."""
        return float(np.percentile(np.fromiter(self._values, float), q)) if self._values else None


class RateMeter:
    """Event rate from the periods between recent events (robust to one late tick)."""

    def __init__(self, size: int = 200):
        self.periods = RollingStats(size)
        self._last: float | None = None

    def tick(self, now: float) -> None:
        if self._last is not None and now > self._last:
            self.periods.add(now - self._last)
        self._last = now

    @property
    def rate_hz(self) -> float | None:
        median = self.periods.percentile(50)
        return 1.0 / median if median else None

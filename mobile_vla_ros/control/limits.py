"""Speed and acceleration limits applied to every motion command after the policy.

Speed: each axis is clipped to its own limit, then the vector is scaled down (direction kept)
when its norm exceeds `max_speed`. Acceleration: the change between two consecutive commands is
scaled down so its norm is at most `max_accel * period` (the nominal control period, so a late
timer tick can only make the real acceleration smaller). Stops for safety reasons bypass the
acceleration limit: `reset()` makes the next command start from rest immediately.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class VelocityLimits:
    max_linear_x: float = 1.15  # m/s, |linear.x| (the lab's robot moved at 1.15 m/s)
    max_linear_y: float = 1.15  # m/s, |linear.y|
    max_speed: float = 1.15  # m/s, norm of (linear.x, linear.y)
    max_accel: float = 2.0  # m/s^2, norm of the change per second

    def __post_init__(self):
        for name in ("max_linear_x", "max_linear_y", "max_speed", "max_accel"):
            value = getattr(self, name)
            if not (np.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be a positive number, got {value}")

    def clamp_speed(self, velocity: np.ndarray) -> np.ndarray:
        clipped = np.clip(
            np.asarray(velocity, dtype=np.float64),
            [-self.max_linear_x, -self.max_linear_y],
            [self.max_linear_x, self.max_linear_y],
        )
        norm = float(np.linalg.norm(clipped))
        return clipped * (self.max_speed / norm) if norm > self.max_speed else clipped


class VelocityLimiter:
    """Stateful: remembers the last command to bound the next step."""

    def __init__(self, limits: VelocityLimits, period_s: float):
        if not period_s > 0:
            raise ValueError(f"period_s must be > 0, got {period_s}")
        self.period_s = period_s
        self.set_limits(limits)
        self._last = np.zeros(2)

    def set_limits(self, limits: VelocityLimits) -> None:
        """New limits from the next command on (a lower speed limit is reached within max_accel)."""
        self.limits, self.max_step = limits, limits.max_accel * self.period_s

    def reset(self) -> np.ndarray:
        """Immediate stop (safety): returns zero and makes it the new starting point."""
        self._last = np.zeros(2)
        return self._last.copy()

    def limit(self, target: np.ndarray) -> np.ndarray:
        wanted = self.limits.clamp_speed(target)
        step = wanted - self._last
        size = float(np.linalg.norm(step))
        if size > self.max_step:
            step *= self.max_step / size
        self._last = self._last + step
        return self._last.copy()

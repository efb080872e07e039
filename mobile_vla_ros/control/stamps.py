"""Time in control/: stamps and clock readings are integer nanoseconds, exactly as a header's
builtin_interfaces/Time holds them, so two stamps compare as the camera set them; settings and
durations stay float seconds, converted once (`nanoseconds`) where a stamp meets them."""

from __future__ import annotations

import math

# A camera whose period is not a whole number of nanoseconds (30 Hz: 33 333 333 ns) stamps 30 frames
# 999 999 990 ns apart; a duration of whole frames must still count as that long (`lasted`).
STAMP_TOLERANCE_NS = 1_000


def seconds(nanoseconds: int) -> float:
    return nanoseconds * 1e-9


def nanoseconds(seconds: float, name: str = "a time setting") -> int:
    """A setting in seconds as integer nanoseconds (to the nearest one); ValueError naming `name` when
    it is not finite."""
    if not math.isfinite(seconds):
        raise ValueError(f"{name} must be a finite number of seconds, got {seconds}")
    return int(round(seconds * 1e9))


def lasted(elapsed_ns: int, duration_ns: int) -> bool:
    """Whether stamps `elapsed_ns` apart span `duration_ns`, up to the camera's rounding."""
    return elapsed_ns >= duration_ns - STAMP_TOLERANCE_NS

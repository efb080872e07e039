"""Time in control/: stamps and clock readings are integer nanoseconds, exactly as a header's
builtin_interfaces/Time holds them, so two stamps compare as the camera set them; settings and
durations stay float seconds, converted once (`nanoseconds`) where a stamp meets them."""

from __future__ import annotations

import math


def seconds(nanoseconds: int) -> float:
    return nanoseconds * 1e-9


def nanoseconds(seconds: float) -> int:
    """A setting in seconds as integer nanoseconds (to the nearest one); ValueError when it is not finite."""
    if not math.isfinite(seconds):
        raise ValueError(f"a time setting must be a finite number of seconds, got {seconds}")
    return int(round(seconds * 1e9))

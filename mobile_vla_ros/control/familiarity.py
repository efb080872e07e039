"""The familiarity monitor: whether the newest frames look like the training frames, and what the
robot does when they stop doing so (docs/architecture.md, "Familiarity").

A frame's score is `Normalizer.familiarity` (its squared Mahalanobis distance to the training
frames, per dimension); the threshold is calibrated in training (policy.json `familiarity`). The
frames count as unfamiliar once every score for `hold_s` of capture time was above the threshold,
and as familiar again once every score for `hold_s` was below it: one stray frame changes nothing,
and the state does not flicker at the boundary.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from mobile_vla_ros.control.stamps import lasted, nanoseconds

# "none", not "off": YAML (and so ROS parameter files and `-p name:=off`) reads off as false.
ACTIONS = ("none", "warn", "slow", "stop")


@dataclass(frozen=True)
class FamiliaritySettings:
    action: str = "stop"  # none | warn | slow | stop
    threshold: str = "p99.9"  # which calibrated threshold of policy.json `familiarity`
    hold_s: float = 0.3  # scores above (below) the threshold this long -> unfamiliar (familiar again)
    slow_factor: float = 0.3  # `slow`: the speed limits scaled by this while unfamiliar

    def problems(self) -> list[str]:
        found = []
        if self.action not in ACTIONS:
            found.append(f"familiarity_action must be one of {', '.join(ACTIONS)}, got {self.action!r}")
        if not (self.hold_s >= 0 and math.isfinite(self.hold_s)):
            found.append(f"familiarity_hold_s must be >= 0, got {self.hold_s}")
        if not 0 < self.slow_factor <= 1:
            found.append(f"familiarity_slow_factor must be in (0, 1], got {self.slow_factor}")
        return found


class FamiliarityMonitor:
    """Feed it each window's newest-frame score with its capture stamp (integer ns); `unfamiliar` is the verdict."""

    def __init__(self, threshold: float | None, settings: FamiliaritySettings):
        self.threshold = threshold
        self.settings = settings
        self.unfamiliar = False
        self._hold_ns = nanoseconds(settings.hold_s)
        self._since_ns: int | None = None  # first stamp of the current run of scores on the other side
        self.latest: float | None = None

    @property
    def active(self) -> bool:
        return self.threshold is not None and self.settings.action != "none"

    def observe(self, score: float, stamp_ns: int) -> str | None:
        """A one-line message when the verdict changes, else None."""
        self.latest = score
        if not self.active:
            return None
        crossed = not (score <= self.threshold) if not self.unfamiliar else score <= self.threshold  # NaN: above
        if not crossed:
            self._since_ns = None
            return None
        if self._since_ns is None:
            self._since_ns = stamp_ns
        if not lasted(stamp_ns - self._since_ns, self._hold_ns):
            return None
        self.unfamiliar, self._since_ns = not self.unfamiliar, None
        if self.unfamiliar:
            return (
                f"frames unfamiliar: score {score:.3g} above the threshold {self.threshold:.3g} "
                f"({self.settings.threshold}) for {self.settings.hold_s:g} s; action: {self.settings.action}"
            )
        return f"frames familiar again: score {score:.3g} below the threshold {self.threshold:.3g}"

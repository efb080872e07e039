"""What inference_node reports on /diagnostics: the latency stages (control.latency), each matched to
its window by the capture stamp across topics and threads, the counters, the control rate and the
familiarity scores. Stamps are integer nanoseconds, exactly as in the header; durations are seconds.
"""

from __future__ import annotations

from mobile_vla_ros.control.familiarity import FamiliarityMonitor
from mobile_vla_ros.control.latency import ByStamp, StageLatency
from mobile_vla_ros.control.stamps import seconds
from mobile_vla_ros.control.stats import RateMeter, RollingStats

COUNTS = ("windows", "bad_windows", "chunks", "faults", "unfamiliar_events", "encoded_frames", "held_frames")


class DriveStatus:
    """Fed from the executor (windows, build times, control ticks) and the worker thread (steps)."""

    def __init__(self):
        self.latency = StageLatency()
        self.counts = dict.fromkeys(COUNTS, 0)
        self.control_rate = RateMeter()
        self.familiarity_scores = RollingStats()  # newest-frame scores since the last status
        self._arrivals = ByStamp()  # capture stamp -> window received (ns), until its build time arrives
        self._builds = ByStamp()  # capture stamp -> window built (ns), until the window arrives
        self._jobs = ByStamp()  # capture stamp -> (received ns, decode seconds), until its step is done

    def window_built(self, stamp_ns: int, built_ns: int) -> None:
        """window/built: camera_window_node built the window captured at `stamp_ns` at `built_ns`."""
        self.latency.add("frame_age_at_build", seconds(built_ns - stamp_ns))
        received_ns = self._arrivals.pop(stamp_ns)
        if received_ns is None:
            self._builds.put(stamp_ns, built_ns)
        else:
            self.latency.add("window_transport", seconds(received_ns - built_ns))

    def window_received(self, stamp_ns: int, received_ns: int, decode_s: float) -> None:
        """A decoded window, on its way to the worker; its build time may come before or after it."""
        self.counts["windows"] += 1
        self._jobs.put(stamp_ns, (received_ns, decode_s))
        built_ns = self._builds.pop(stamp_ns)
        if built_ns is None:
            self._arrivals.put(stamp_ns, received_ns)
        else:
            self.latency.add("window_transport", seconds(received_ns - built_ns))

    def step_done(self, stamp_ns: int, step_s: float, now_ns: int, timing) -> None:
        """The policy step on the window captured at `stamp_ns` took `step_s` and ended at `now_ns`;
        `timing`: the runner's policy.runner.StepTiming of that step, or None."""
        self.latency.add("inference_latency", step_s)
        job = self._jobs.pop(stamp_ns)
        if timing is not None:
            self.latency.add("backbone", timing.backbone_s)
            self.latency.add("head", timing.head_s)
            self.counts["encoded_frames"] += timing.frames_encoded
            self.counts["held_frames"] += timing.frames_held
        if job is not None:
            received_ns, decode_s = job
            self.latency.add("queue_wait", max(seconds(now_ns - received_ns) - step_s, 0.0))
            if timing is not None:
                self.latency.add("preprocess", decode_s + timing.preprocess_s)

    def values(
        self, state: str, reason: str, instruction: str, skipped_windows: int, monitor: FamiliarityMonitor
    ) -> dict[str, str]:
        """The /diagnostics key/value pairs (docs/performance.md), '' for a figure without samples yet."""
        rate, period_p99 = self.control_rate.rate_hz, self.control_rate.periods.percentile(99)
        return {
            "state": state,
            "reason": reason,
            "instruction": instruction,
            **self.latency.values(),
            "control_rate_hz": "" if rate is None else f"{rate:.2f}",
            "control_period_ms_p99": "" if period_p99 is None else f"{period_p99 * 1000:.1f}",
            "skipped_windows": str(skipped_windows),
            "familiarity": "off" if not monitor.active else "unfamiliar" if monitor.unfamiliar else "familiar",
            "familiarity_latest": _number(monitor.latest),
            "familiarity_p50": _number(self.familiarity_scores.percentile(50)),
            "familiarity_p95": _number(self.familiarity_scores.percentile(95)),
            "familiarity_threshold": _number(monitor.threshold),
            **{name: str(count) for name, count in self.counts.items()},
        }

    def start_period(self) -> None:
        """After each status: its familiarity percentiles cover one status period."""
        self.familiarity_scores = RollingStats()


def _number(value: float | None) -> str:
    return "" if value is None else f"{value:.4g}"

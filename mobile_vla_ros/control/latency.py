"""Per-stage latency of the drive pipeline, so a late robot shows where the time went.

    frame_age_at_build  window built (camera_window_node) - newest frame's capture stamp
    window_transport    window received (inference_node) - window built
    preprocess          window message decode + frame hashing / cache lookup
    queue_wait          inference started - window received (the model was busy with an older one)
    backbone            Kosmos-2 on the new frame(s)
    head                action head
    inference_latency   the whole policy step (preprocess in the runner + backbone + head)
    executor_delay      the next control tick - chunk ready (counted when that tick drives)
    obs_to_cmd_age      command published - capture stamp of the observation it came from

All in seconds on the ROS clock (capture and build stamps are header stamps, so camera_window_node
and inference_node on different machines need synchronised clocks, as ROS assumes anyway).
"""

from __future__ import annotations

import threading
from collections import OrderedDict

from mobile_vla_ros.control.stats import RollingStats

STAGES = (
    "frame_age_at_build",
    "window_transport",
    "preprocess",
    "queue_wait",
    "backbone",
    "head",
    "inference_latency",
    "executor_delay",
    "obs_to_cmd_age",
)
QUANTILES = (50, 95, 99)


class StageLatency:
    """Rolling p50/p95/p99 per stage; safe to feed from the worker and the executor threads."""

    def __init__(self, size: int = 200):
        self._lock = threading.Lock()
        self._stats = {stage: RollingStats(size) for stage in STAGES}

    def add(self, stage: str, seconds: float) -> None:
        with self._lock:
            self._stats[stage].add(seconds)

    def percentile_ms(self, stage: str, q: float) -> float | None:
        with self._lock:
            value = self._stats[stage].percentile(q)
        return None if value is None else value * 1000.0

    def values(self) -> dict[str, str]:
        """`<stage>_ms_p50/p95/p99` -> milliseconds with one decimal ('' before the first sample)."""
        values = {}
        for stage in STAGES:
            for q in QUANTILES:
                value = self.percentile_ms(stage, q)
                values[f"{stage}_ms_p{q}"] = "" if value is None else f"{value:.1f}"
        return values


class ByStamp:
    """Values keyed by a window's capture stamp (integer ns), for matching what arrives on different topics or
    threads; only the newest `size` are kept (skipped windows never come back)."""

    def __init__(self, size: int = 32):
        self._size = size
        self._values: OrderedDict[int, object] = OrderedDict()
        self._lock = threading.Lock()

    def put(self, stamp_ns: int, value) -> None:
        with self._lock:
            self._values[stamp_ns] = value
            while len(self._values) > self._size:
                self._values.popitem(last=False)

    def pop(self, stamp_ns: int, default=None):
        with self._lock:
            return self._values.pop(stamp_ns, default)

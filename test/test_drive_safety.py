"""Pure drive-runtime logic added for stopping without waiting: stale timeouts derived from the
model, windows from the future, a dead inference worker, discarded steps, the corrections thread."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from mobile_vla_ros.control.background import BackgroundQueue
from mobile_vla_ros.control.drive import (
    MAX_FUTURE_STAMP_S,
    DriveController,
    DriveState,
    SafetySettings,
    future_stamp_problem,
    resolve_stale_timeouts,
)
from mobile_vla_ros.control.limits import VelocityLimits
from mobile_vla_ros.control.stamps import nanoseconds as ns
from mobile_vla_ros.control.worker import DelayedPolicy, InferenceWorker

PERIOD = 0.05
UNSET = {"camera_stale_timeout_s": 0.0, "chunk_stale_timeout_s": 0.0}


# ---- stale timeouts from the model ------------------------------------------------------------
def test_unset_stale_timeouts_follow_the_models_frame_period():
    ten_hz, notes = resolve_stale_timeouts(UNSET, 0.1, PERIOD)
    assert ten_hz == {"camera_stale_timeout_s": 0.5, "chunk_stale_timeout_s": 1.0}  # the 10 Hz values as before
    legacy, notes = resolve_stale_timeouts(UNSET, 0.4, PERIOD)  # 2.5 Hz legacy recordings
    assert legacy == {"camera_stale_timeout_s": 1.25, "chunk_stale_timeout_s": 2.45}
    assert len(notes) == 2 and "camera_stale_timeout_s = 1.25 s from the model" in notes[0]
    for action_dt in (0.02, 0.1, 0.4, 1.0):  # always accepted by the controller it configures
        values, _ = resolve_stale_timeouts(UNSET, action_dt, PERIOD)
        DriveController(
            action_dt,
            PERIOD,
            VelocityLimits(),
            SafetySettings(values["camera_stale_timeout_s"], values["chunk_stale_timeout_s"]),
        )


def test_a_stale_timeout_the_user_set_is_kept_or_refused_by_the_same_floor():
    kept, notes = resolve_stale_timeouts({"camera_stale_timeout_s": 0.9, "chunk_stale_timeout_s": 0.0}, 0.4, PERIOD)
    assert kept["camera_stale_timeout_s"] == 0.9 and len(notes) == 1
    for bad in (0.5, -1.0, float("nan")):
        with pytest.raises(ValueError, match=r"camera_stale_timeout_s = .* shorter than 2 windows .* = 0.85 s"):
            resolve_stale_timeouts({"camera_stale_timeout_s": bad}, 0.4, PERIOD)


# ---- windows from the future, a dead worker ---------------------------------------------------
def test_a_window_stamped_far_ahead_of_the_clock_is_refused():
    assert future_stamp_problem(ns(100.0 + MAX_FUTURE_STAMP_S - 0.01), ns(100.0)) is None
    assert future_stamp_problem(ns(100.0 + MAX_FUTURE_STAMP_S), ns(100.0)) is None  # the limit itself: still usable
    assert future_stamp_problem(ns(99.0), ns(100.0)) is None
    problem = future_stamp_problem(ns(105.0), ns(100.0))
    assert "5.000 s in the future" in problem and "refused" in problem


def test_a_fatal_fault_outranks_the_gate_and_is_not_cleared_by_a_chunk():
    ctl = DriveController(0.1, PERIOD, VelocityLimits(max_accel=100.0), SafetySettings(start_enabled=True))
    ctl.on_window(ns(10.0))
    ctl.on_chunk(np.full((10, 2), 0.2), ns(10.0))
    assert ctl.tick(ns(10.05)).state == DriveState.DRIVING
    ctl.on_fatal("inference worker died: RuntimeError: boom")
    ctl.on_chunk(np.full((10, 2), 0.2), ns(10.05))
    ctl.set_enabled(False)
    command = ctl.tick(ns(10.1))
    assert command.state == DriveState.FAULT and "boom" in command.reason
    assert np.all(command.velocity == 0.0) and ctl.proposal(ns(10.1)) is None
    ctl.on_override([0.1, 0.0], ns(10.1))  # a person still can move the robot
    assert ctl.tick(ns(10.15)).state == DriveState.OVERRIDE


# ---- the worker --------------------------------------------------------------------------------
class SlowPolicy:
    def __init__(self, delay_s: float):
        self.delay_s, self.started = delay_s, threading.Event()

    def set_instruction(self, instruction: str) -> None:
        pass

    def step(self, window):
        self.started.set()
        time.sleep(self.delay_s)
        return np.full((5, 2), 0.1, np.float32)


def worker_with(policy, events: list):
    return InferenceWorker(
        policy,
        on_chunk=lambda chunk, stamp_ns, latency: events.append(("chunk", stamp_ns)),
        on_error=lambda message, stamp_ns: events.append(("error", stamp_ns)),
        on_instruction=lambda text: None,
        on_instruction_error=lambda text, error: None,
        on_discard=lambda stamp_ns: events.append(("discarded", stamp_ns)),
        on_died=lambda message: events.append(("died", message)),
    )


def worker_in_a_step(seconds: float):
    """A started worker whose policy is inside a step of `seconds` on the window stamped 1 s (in ns)."""
    events, policy = [], SlowPolicy(seconds)
    worker = worker_with(policy, events)
    worker.start()
    worker.submit(np.zeros((1, 2, 2, 3), np.uint8), ns(1.0))
    assert policy.started.wait(5)
    return events, worker


def test_stop_returns_at_once_and_the_step_in_flight_is_never_delivered():
    events, worker = worker_in_a_step(0.5)
    started = time.monotonic()
    worker.stop()
    assert time.monotonic() - started < 0.05
    time.sleep(0.7)
    assert events == [] and not worker.alive


def test_cancel_discards_the_step_in_flight_and_later_windows_still_run():
    events, worker = worker_in_a_step(0.3)
    worker.cancel()
    deadline = time.monotonic() + 5
    while ("discarded", ns(1.0)) not in events and time.monotonic() < deadline:
        time.sleep(0.01)
    worker.submit(np.zeros((1, 2, 2, 3), np.uint8), ns(2.0))
    while ("chunk", ns(2.0)) not in events and time.monotonic() < deadline:
        time.sleep(0.01)
    worker.stop(timeout=1.0)
    assert events == [("discarded", ns(1.0)), ("chunk", ns(2.0))]


def test_a_worker_killed_by_its_callback_reports_why():
    died = threading.Event()
    messages = []

    def on_chunk(chunk, stamp_ns, latency):
        raise KeyError("lost stamp")

    worker = InferenceWorker(
        DelayedPolicy(SlowPolicy(0.0), 0.01),
        on_chunk,
        on_error=lambda message, stamp_ns: None,
        on_instruction=lambda text: None,
        on_instruction_error=lambda text, error: None,
        on_died=lambda message: (messages.append(message), died.set()),
    )
    worker.start()
    worker.submit(np.zeros((1, 2, 2, 3), np.uint8), ns(1.0))
    assert died.wait(5)
    assert messages == ["inference worker died: KeyError: 'lost stamp'"] and worker.failure == messages[0]
    time.sleep(0.05)
    assert not worker.alive


# ---- the corrections thread --------------------------------------------------------------------
def test_background_jobs_run_in_order_off_the_caller_and_errors_do_not_stop_the_queue():
    done, errors, callers = [], [], []
    jobs = BackgroundQueue("test", errors.append, max_jobs=3)
    gate, running = threading.Event(), threading.Event()
    assert jobs.submit(lambda: (running.set(), gate.wait()))
    assert running.wait(5)  # the queue holds 3 more
    assert jobs.submit(lambda: (callers.append(threading.current_thread().name), done.append(1)))
    assert jobs.submit(lambda: 1 / 0)
    assert jobs.submit(lambda: done.append(2))
    assert not jobs.submit(lambda: done.append(3)), "a full queue refuses"
    gate.set()
    assert jobs.close(timeout=5)
    assert done == [1, 2] and callers == ["test"] and isinstance(errors[0], ZeroDivisionError)

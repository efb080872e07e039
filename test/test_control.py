"""Pure drive-runtime logic: chunk execution, limits, the safety state machine, frame sampling."""

from __future__ import annotations

import numpy as np
import pytest

from mobile_vla_ros.control.drive import Command, DriveController, DriveState, SafetySettings, check_chunk
from mobile_vla_ros.control.executor import ChunkExecutor
from mobile_vla_ros.control.frame_window import FrameWindow
from mobile_vla_ros.control.limits import VelocityLimiter, VelocityLimits
from mobile_vla_ros.control.stamps import nanoseconds as ns
from mobile_vla_ros.control.stats import RateMeter, RollingStats

DT = 0.1
PERIOD = 0.05


def ramp_chunk(n=10):
    """Action k = (k, -k) / 10, so the chosen index is visible in the value."""
    return np.stack([np.arange(n), -np.arange(n)], axis=1).astype(np.float32) / 10


# ---- executor ---------------------------------------------------------------------------------
@pytest.mark.parametrize("age, index", [(0.0, 0), (0.099, 0), (0.1, 1), (0.35, 3), (0.999, 9)])
def test_executor_picks_the_action_due_by_elapsed_time(age, index):
    executor = ChunkExecutor(DT, stale_timeout_s=2.0)
    executor.set_chunk(ramp_chunk(), obs_stamp_ns=ns(100.0))
    due = executor.due(ns(100.0 + age))
    assert due.index == index
    np.testing.assert_allclose(due.action, [index / 10, -index / 10], atol=1e-6)


def test_executor_returns_nothing_past_the_chunk_end_or_when_stale():
    executor = ChunkExecutor(DT, stale_timeout_s=0.5)
    assert executor.due(ns(5.0)).action is None  # no chunk yet
    executor.set_chunk(ramp_chunk(3), obs_stamp_ns=ns(10.0))
    assert executor.due(ns(10.25)).index == 2
    assert executor.due(ns(10.31)).action is None and "used up" in executor.due(ns(10.31)).reason
    executor.set_chunk(ramp_chunk(10), obs_stamp_ns=ns(11.0))
    assert executor.due(ns(11.45)).action is not None
    assert "old" in executor.due(ns(11.51)).reason and executor.due(ns(11.51)).action is None
    assert "future" in executor.due(ns(10.0)).reason


def test_executor_keeps_the_newest_observation():
    executor = ChunkExecutor(DT, stale_timeout_s=1.0)
    assert executor.set_chunk(ramp_chunk(), obs_stamp_ns=ns(2.0))
    assert not executor.set_chunk(ramp_chunk() + 5, obs_stamp_ns=ns(1.9))  # late result of an older window
    assert executor.due(ns(2.0)).action[0] == pytest.approx(0.0)


def test_stamps_are_integer_nanoseconds_and_settings_convert_once():
    assert ns(0.1) == 100_000_000 and ns(1e-9) == 1
    with pytest.raises(ValueError, match="finite"):
        ns(float("inf"))
    executor = ChunkExecutor(DT, stale_timeout_s=1.0)
    stamp = 1_796_527_220_897_353_089  # a wall-clock stamp: in float seconds, 1 ns later is the same number
    assert executor.set_chunk(ramp_chunk(), stamp + 1)
    assert not executor.set_chunk(ramp_chunk() + 5, stamp)  # 1 ns older: a late result, refused
    assert executor.due(stamp + 1 + ns(0.2)).index == 2


# ---- limits -----------------------------------------------------------------------------------
def test_speed_limits_per_axis_and_norm():
    limits = VelocityLimits(max_linear_x=0.5, max_linear_y=0.8, max_speed=0.6, max_accel=100)
    np.testing.assert_allclose(limits.clamp_speed([2.0, 0.0]), [0.5, 0.0])
    np.testing.assert_allclose(limits.clamp_speed([0.0, -2.0]), [0.0, -0.6])
    diagonal = limits.clamp_speed([0.5, 0.5])
    assert np.linalg.norm(diagonal) == pytest.approx(0.6)
    assert diagonal[0] == pytest.approx(diagonal[1])  # direction kept
    with pytest.raises(ValueError, match="max_speed"):
        VelocityLimits(max_speed=0.0)


def test_acceleration_limit_bounds_every_step_and_reset_stops_at_once():
    limiter = VelocityLimiter(VelocityLimits(max_accel=2.0), period_s=PERIOD)
    outputs = [limiter.limit([1.0, -1.0]) for _ in range(30)]
    steps = np.linalg.norm(np.diff(np.vstack([[0, 0], outputs]), axis=0), axis=1)
    assert steps.max() <= 2.0 * PERIOD + 1e-9
    assert np.linalg.norm(outputs[-1]) == pytest.approx(VelocityLimits().max_speed)  # reaches the speed limit
    np.testing.assert_array_equal(limiter.reset(), [0, 0])
    assert np.linalg.norm(limiter.limit([1.0, 0.0])) == pytest.approx(0.1)


# ---- model output checks ----------------------------------------------------------------------
@pytest.mark.parametrize(
    "chunk, message",
    [
        (np.array([[0.1, np.nan]]), "NaN"),
        (np.array([[np.inf, 0.0]]), "NaN or infinite"),
        (np.array([[0.1, 9.0]]), "plausible range"),
        (np.zeros((3, 3)), "shape"),
        (np.zeros((0, 2)), "shape"),
    ],
)
def test_bad_model_output_is_rejected(chunk, message):
    assert message in check_chunk(chunk, 2, 3.0)


# ---- state machine ----------------------------------------------------------------------------
def controller(**safety):
    settings = dict(camera_stale_s=0.5, chunk_stale_s=1.0, start_enabled=True)
    settings.update(safety)
    return DriveController(DT, PERIOD, VelocityLimits(max_accel=1000.0), SafetySettings(**settings))


def drive_ready(ctl, t=10.0, chunk=None):
    ctl.on_window(ns(t))
    assert ctl.on_chunk(ramp_chunk() if chunk is None else chunk, ns(t)) is None
    return ctl


def assert_zero(command: Command, state: DriveState):
    assert command.state == state, command
    np.testing.assert_array_equal(command.velocity, [0.0, 0.0])


def test_state_progression_to_driving():
    ctl = controller()
    assert_zero(ctl.tick(ns(1.0)), DriveState.WAITING_FOR_CAMERA)
    ctl.on_window(ns(1.0))
    assert_zero(ctl.tick(ns(1.01)), DriveState.WAITING_FOR_MODEL)
    ctl.on_chunk(ramp_chunk(), ns(1.0))
    command = ctl.tick(ns(1.25))
    assert command.state == DriveState.DRIVING
    np.testing.assert_allclose(command.velocity, [0.2, -0.2])
    assert command.obs_age_s == pytest.approx(0.25)


def test_disabled_by_default_and_by_topic():
    ctl = drive_ready(controller(start_enabled=False))
    assert_zero(ctl.tick(ns(10.1)), DriveState.DISABLED)
    ctl.set_enabled(True)
    assert ctl.tick(ns(10.1)).state == DriveState.DRIVING
    ctl.set_enabled(False)
    assert_zero(ctl.tick(ns(10.15)), DriveState.DISABLED)


def test_deadman_must_be_held_on_fresh_joy_messages():
    ctl = drive_ready(controller(require_deadman=True, joy_timeout_s=0.3))
    assert_zero(ctl.tick(ns(10.1)), DriveState.DISABLED)
    ctl.on_joy(True, ns(10.1))
    assert ctl.tick(ns(10.2)).state == DriveState.DRIVING
    assert_zero(ctl.tick(ns(10.45)), DriveState.DISABLED)  # joy went quiet: counts as released
    ctl.on_joy(True, ns(10.5))
    ctl.on_joy(False, ns(10.52))
    assert_zero(ctl.tick(ns(10.55)), DriveState.DISABLED)


def test_camera_staleness_stops_within_the_timeout():
    ctl = drive_ready(controller(camera_stale_s=0.3, chunk_stale_s=5.0))
    assert ctl.tick(ns(10.29)).state == DriveState.DRIVING
    assert_zero(ctl.tick(ns(10.31)), DriveState.STALE)
    assert "camera" in ctl.tick(ns(10.31)).reason


@pytest.mark.parametrize("setting", ["camera_stale_s", "chunk_stale_s"])
def test_a_stale_timeout_without_margin_for_the_window_rate_is_refused(setting):
    # 2 windows of 0.1 s + one 0.05 s tick = 0.25 s: 0.2 s would stop a healthy robot between windows.
    with pytest.raises(ValueError, match=r"_stale_timeout_s = 0.2 s is shorter than 2 windows .* = 0.25 s"):
        controller(**{setting: 0.2})
    assert controller(**{setting: 0.25}).tick(ns(10.0)).state == DriveState.WAITING_FOR_CAMERA


def test_stale_chunk_stops_until_a_fresh_one_arrives():
    ctl = drive_ready(controller(camera_stale_s=5.0, chunk_stale_s=0.4))
    ctl.on_window(ns(10.6))  # windows still arrive, but inference stalls
    assert ctl.tick(ns(10.39)).state == DriveState.DRIVING
    assert_zero(ctl.tick(ns(10.41)), DriveState.STALE)
    ctl.on_chunk(ramp_chunk(), ns(10.6))
    assert ctl.tick(ns(10.61)).state == DriveState.DRIVING


def test_fault_zeroes_and_clears_with_a_good_chunk():
    ctl = drive_ready(controller())
    assert "NaN" in ctl.on_chunk(np.full((10, 2), np.nan), ns(10.1))
    command = ctl.tick(ns(10.15))
    assert_zero(command, DriveState.FAULT)
    assert "NaN" in command.reason
    ctl.on_fault("inference raised RuntimeError")
    assert ctl.tick(ns(10.2)).state == DriveState.FAULT
    drive_ready(ctl, t=10.3)
    assert ctl.tick(ns(10.3)).state == DriveState.DRIVING


def test_override_wins_even_when_disabled_and_expires():
    ctl = drive_ready(controller(start_enabled=False, override_hold_s=0.2))
    ctl.on_override([0.3, 0.4, 9.0], ns(10.0))
    command = ctl.tick(ns(10.1))
    assert command.state == DriveState.OVERRIDE
    np.testing.assert_allclose(command.velocity, [0.3, 0.4])
    assert_zero(ctl.tick(ns(10.25)), DriveState.DISABLED)
    ctl.on_override([np.nan, 1.0], ns(10.3))
    assert_zero(ctl.tick(ns(10.31)), DriveState.OVERRIDE)


def test_limits_apply_to_policy_output():
    ctl = DriveController(
        DT, PERIOD, VelocityLimits(max_linear_x=0.2, max_accel=1.0), SafetySettings(start_enabled=True)
    )
    drive_ready(ctl, chunk=np.full((10, 2), 2.0))
    velocities = []
    for k in range(15):
        ctl.on_window(ns(10.0 + k * PERIOD))  # camera stays fresh; the chunk lasts 1 s
        velocities.append(ctl.tick(ns(10.0 + k * PERIOD)).velocity)
    velocities = np.array(velocities)
    steps = np.linalg.norm(np.diff(np.vstack([[0, 0], velocities]), axis=0), axis=1)
    assert steps.max() <= 1.0 * PERIOD + 1e-9
    assert np.abs(velocities[:, 0]).max() <= 0.2 + 1e-9
    assert np.linalg.norm(velocities, axis=1).max() <= VelocityLimits().max_speed + 1e-9


# ---- stats ------------------------------------------------------------------------------------
def test_rolling_percentiles_and_rate():
    stats = RollingStats(size=100)
    assert stats.percentile(50) is None
    for value in range(1, 201):
        stats.add(value)  # only the last 100 (101..200) count
    assert stats.percentile(50) == pytest.approx(150.5)
    assert stats.percentile(95) == pytest.approx(195.05)
    meter = RateMeter()
    for k in range(21):
        meter.tick(k * 0.05)
    assert meter.rate_hz == pytest.approx(20.0)


# ---- frame sampling ---------------------------------------------------------------------------
def feed(window: FrameWindow, stamps):
    """Returns the stamps of the frames taken and the windows produced."""
    taken, windows = [], []
    for stamp in stamps:
        if window.wants(stamp):
            taken.append(stamp)
            result = window.add(np.full((2, 2, 3), len(taken), np.uint8), stamp)
            if result is not None:
                windows.append(result)
    return taken, windows


def test_30hz_camera_is_sampled_at_the_model_rate():
    window = FrameWindow(window_size=8, action_dt=DT)
    jitter = np.random.default_rng(0).uniform(-0.004, 0.004, 90)
    taken, windows = feed(window, np.arange(90) / 30 + jitter)
    spacing = np.diff(taken)
    assert len(taken) == 30
    assert np.all(np.abs(spacing - DT) < 0.02)
    assert len(windows) == 30 - 7
    assert windows[0].shape == (8, 2, 2, 3)
    assert [frame[0, 0, 0] for frame in windows[-1]] == list(range(23, 31))  # oldest first
    assert window.camera_slower_than_model() is None


def test_a_camera_gap_or_backward_jump_restarts_the_window():
    window = FrameWindow(window_size=3, action_dt=DT)
    _, windows = feed(window, [0.0, 0.1, 0.2, 0.3])
    assert len(windows) == 2
    _, windows = feed(window, [0.9, 1.0])  # 0.6 s gap
    assert windows == [] and window.resets == 1
    _, windows = feed(window, [0.5, 0.6, 0.7])  # stamps went backwards
    assert len(windows) == 1 and window.resets == 2


def test_slow_camera_is_reported():
    window = FrameWindow(window_size=8, action_dt=DT)
    feed(window, np.arange(20) / 5.0)  # 5 Hz camera, but gaps of 0.2 s = 2 periods are allowed
    assert window.camera_slower_than_model() == pytest.approx(5.0)

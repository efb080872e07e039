"""The familiarity monitor (issue 25): its verdict over time and what the drive controller does with it."""

from __future__ import annotations

import numpy as np
import pytest

from mobile_vla_ros.control.drive import DriveController, DriveState, SafetySettings
from mobile_vla_ros.control.familiarity import FamiliarityMonitor, FamiliaritySettings
from mobile_vla_ros.control.limits import VelocityLimits
from mobile_vla_ros.control.stamps import nanoseconds as ns


def test_one_stray_frame_changes_nothing_a_held_one_does_and_recovery_is_held_too():
    monitor = FamiliarityMonitor(10.0, FamiliaritySettings(action="stop", hold_s=0.3))
    assert monitor.observe(50.0, ns(0.0)) is None and not monitor.unfamiliar  # one frame above
    assert monitor.observe(1.0, ns(0.1)) is None  # back below: the run above is forgotten
    for stamp in (0.2, 0.3, 0.4):
        assert monitor.observe(50.0, ns(stamp)) is None
    message = monitor.observe(50.0, ns(0.5))  # exactly hold_s after the first: integer stamps compare exactly
    assert monitor.unfamiliar and "frames unfamiliar" in message and "stop" in message
    assert monitor.observe(float("nan"), ns(0.6)) is None and monitor.unfamiliar  # NaN counts as unfamiliar
    assert monitor.observe(1.0, ns(0.7)) is None and monitor.unfamiliar  # familiar only after hold_s below
    assert "familiar again" in monitor.observe(1.0, ns(1.0)) and not monitor.unfamiliar


def test_a_camera_period_of_fractional_nanoseconds_still_counts_whole_frames():
    """30 Hz stamps are 33 333 333 ns apart: nine periods are 0.3 s less 3 ns and must count as 0.3 s."""
    monitor = FamiliarityMonitor(10.0, FamiliaritySettings(action="stop", hold_s=0.3))
    fired = [monitor.observe(50.0, frame * 33_333_333) is not None for frame in range(12)]
    assert fired.index(True) == 9


@pytest.mark.parametrize("threshold, action", [(None, "stop"), (10.0, "none")])
def test_no_threshold_or_none_never_fires(threshold, action):
    monitor = FamiliarityMonitor(threshold, FamiliaritySettings(action=action, hold_s=0.0))
    assert all(monitor.observe(1e9, ns(t)) is None for t in np.arange(0, 2, 0.1))
    assert not monitor.unfamiliar and monitor.latest == 1e9


def test_settings_that_cannot_work_are_named():
    problems = FamiliaritySettings(action="brake", hold_s=-1, slow_factor=0).problems()
    assert [p.split()[0] for p in problems] == ["familiarity_action", "familiarity_hold_s", "familiarity_slow_factor"]


@pytest.mark.parametrize(
    "action, state, speed",
    [("stop", DriveState.UNFAMILIAR, 0.0), ("slow", DriveState.UNFAMILIAR, 0.3), ("warn", DriveState.DRIVING, 1.0)],
)
def test_the_controller_stops_slows_or_only_warns(action, state, speed):
    monitor = FamiliarityMonitor(10.0, FamiliaritySettings(action=action, hold_s=0.0, slow_factor=0.3))
    limits = VelocityLimits(1.15, 1.15, 1.15, 100.0)
    controller = DriveController(0.1, 0.05, limits, SafetySettings(start_enabled=True), monitor)
    controller.on_window(0)
    controller.on_chunk(np.tile([[0.5, 0.5]], (10, 1)), 0)
    assert controller.tick(ns(0.05)).state == DriveState.DRIVING
    monitor.observe(99.0, 0)
    command = controller.tick(ns(0.1))
    assert command.state == state
    assert command.velocity == pytest.approx(np.array([0.5, 0.5]) * speed)


def test_the_calibrated_threshold_is_exceeded_by_at_most_its_share_of_new_frames():
    """Split conformal: over many calibration sets of 150 frames, a new frame from the same
    distribution is above the p99 threshold in at most 1 % of cases; the plain percentile of the
    same frames lets more through. With too few frames for a percentile the highest score stands."""
    from math import erfc, sqrt

    from mobile_vla_ros.training.metrics import conformal_quantile

    rng = np.random.default_rng(0)
    calibrations = rng.standard_normal((2000, 150))

    def exceeded(threshold: float) -> float:  # P(a new standard normal frame is above it)
        return 0.5 * erfc(threshold / sqrt(2))

    conformal = np.mean([exceeded(conformal_quantile(scores, 99)) for scores in calibrations])
    plain = np.mean([exceeded(np.percentile(scores, 99)) for scores in calibrations])
    assert conformal <= 0.01 < plain
    scores = np.arange(1.0, 151.0)
    assert conformal_quantile(scores, 99.9) == 150.0 and conformal_quantile(scores, 99) == 150.0
    assert conformal_quantile(np.arange(1.0, 1001.0), 99) == 991.0

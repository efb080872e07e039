"""Joy -> Twist mapping: deadman, turbo, stop once, joy timeout, missing inputs."""

from __future__ import annotations

import pytest

from mobile_vla_ros.control.teleop import STOP, TeleopConfig, TeleopMapper, VelocityCommand

CONFIG = TeleopConfig(
    enable_button=4,
    enable_turbo_button=5,
    axis_linear_x=1,
    axis_linear_y=0,
    axis_angular_yaw=3,
    scale_linear_x=0.5,
    scale_linear_y=0.4,
    scale_angular_yaw=1.0,
    scale_linear_turbo_x=1.0,
    scale_linear_turbo_y=0.8,
    scale_angular_turbo_yaw=2.0,
    joy_timeout_s=0.5,
)
AXES = [0.5, 1.0, 0.0, -0.25]  # stick half left, full forward, right stick a bit right
HELD = [0, 0, 0, 0, 1, 0]
TURBO = [0, 0, 0, 0, 0, 1]
RELEASED = [0] * 6


def test_deadman_held_maps_left_stick_to_holonomic_motion():
    command = TeleopMapper(CONFIG).on_joy(AXES, HELD, 0.0)
    assert command == pytest.approx(VelocityCommand(0.5, 0.2, -0.25))


def test_turbo_uses_turbo_scales_and_enables_alone():
    assert TeleopMapper(CONFIG).on_joy(AXES, TURBO, 0.0) == pytest.approx(VelocityCommand(1.0, 0.4, -0.5))


def test_no_deadman_no_motion_and_release_stops_once():
    mapper = TeleopMapper(CONFIG)
    assert mapper.on_joy(AXES, RELEASED, 0.0) is None
    assert mapper.on_joy(AXES, HELD, 0.1) is not None
    assert mapper.on_joy(AXES, RELEASED, 0.2) == STOP
    assert mapper.on_joy(AXES, RELEASED, 0.3) is None


def test_silent_joy_stream_stops_once():
    mapper = TeleopMapper(CONFIG)
    mapper.on_joy(AXES, HELD, 1.0)
    assert mapper.on_tick(1.4) is None
    assert mapper.on_tick(1.6) == STOP
    assert mapper.on_tick(1.8) is None
    assert mapper.on_joy(AXES, HELD, 2.0) is not None  # the pad is back: driving resumes


def test_missing_axes_and_buttons_read_as_released():
    mapper = TeleopMapper(CONFIG)
    assert mapper.on_joy([1.0], [0, 0], 0.0) is None  # pad without button 4: never enabled
    assert CONFIG.missing_inputs(num_axes=2, num_buttons=2) == [
        "enable_button=4 (pad has 2)",
        "enable_turbo_button=5 (pad has 2)",
        "axis_angular.yaw=3 (pad has 2)",
    ]
    command = TeleopMapper(CONFIG).on_joy([float("nan"), 3.0], HELD, 0.0)
    assert command == pytest.approx(VelocityCommand(0.5, 0.0, 0.0))  # NaN centred, overrange clipped


def test_enable_not_required():
    mapper = TeleopMapper(TeleopConfig(require_enable_button=False))
    assert mapper.on_joy([0.0, 1.0], [], 0.0).linear_x > 0


def test_config_refuses_nonsense():
    with pytest.raises(ValueError, match="joy_timeout_s"):
        TeleopConfig(joy_timeout_s=0)
    with pytest.raises(ValueError, match="require_enable_button"):
        TeleopConfig(enable_button=-1, enable_turbo_button=-1)

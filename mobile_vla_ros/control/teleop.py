"""Gamepad -> velocity mapping for a holonomic base (no ROS; teleop_node wires it to topics).

Parameter names follow teleop_twist_joy (enable_button, enable_turbo_button, axis_linear.x,
scale_linear.x, scale_linear_turbo.x, axis_angular.yaw, ...), so a profile written for it reads
the same here. Axis values are ROS joy conventions: stick left/up is positive, which with
REP 103 (x forward, y left) maps the left stick straight onto linear.x / linear.y.

Safety rules:
- no enable (deadman) button held -> no motion; releasing it publishes one zero command;
- the joy stream going silent for `joy_timeout_s` (pad unplugged, joy_node dead) publishes one
  zero command; joy_node repeats its message at `autorepeat_rate`, so silence means trouble;
- a button or axis index the pad does not have reads as released / centred.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple


class VelocityCommand(NamedTuple):
    linear_x: float = 0.0
    linear_y: float = 0.0
    angular_z: float = 0.0


STOP = VelocityCommand()


@dataclass(frozen=True)
class TeleopConfig:
    """Index -1 disables an axis or button."""

    require_enable_button: bool = True
    enable_button: int = 4
    enable_turbo_button: int = -1
    axis_linear_x: int = 1
    axis_linear_y: int = 0
    axis_angular_yaw: int = -1
    scale_linear_x: float = 0.4
    scale_linear_y: float = 0.4
    scale_angular_yaw: float = 0.0
    scale_linear_turbo_x: float = 1.15
    scale_linear_turbo_y: float = 1.15
    scale_angular_turbo_yaw: float = 0.0
    joy_timeout_s: float = 0.5

    def __post_init__(self):
        if self.joy_timeout_s <= 0:
            raise ValueError(f"joy_timeout_s must be positive, got {self.joy_timeout_s}")
        if self.require_enable_button and self.enable_button < 0 and self.enable_turbo_button < 0:
            raise ValueError("require_enable_button is set but neither enable_button nor enable_turbo_button is")

    def missing_inputs(self, num_axes: int, num_buttons: int) -> list[str]:
        """Configured indices this pad does not have (for a warning when the first message arrives)."""
        wanted = {
            "enable_button": (self.enable_button, num_buttons),
            "enable_turbo_button": (self.enable_turbo_button, num_buttons),
            "axis_linear.x": (self.axis_linear_x, num_axes),
            "axis_linear.y": (self.axis_linear_y, num_axes),
            "axis_angular.yaw": (self.axis_angular_yaw, num_axes),
        }
        return [f"{name}={index} (pad has {count})" for name, (index, count) in wanted.items() if index >= count]


def _button(buttons: Sequence[int], index: int) -> bool:
    return 0 <= index < len(buttons) and bool(buttons[index])


def _axis(axes: Sequence[float], index: int) -> float:
    if not 0 <= index < len(axes):
        return 0.0
    value = float(axes[index])
    return max(-1.0, min(1.0, value)) if value == value else 0.0  # NaN reads as centred


class TeleopMapper:
    """Joy messages and clock ticks in, the command to publish (or None for nothing) out."""

    def __init__(self, config: TeleopConfig):
        self.config = config
        self._moving = False  # the last command published was motion, so a stop is owed
        self._last_joy_s: float | None = None

    def on_joy(self, axes: Sequence[float], buttons: Sequence[int], now_s: float) -> VelocityCommand | None:
        self._last_joy_s = now_s
        config = self.config
        turbo = _button(buttons, config.enable_turbo_button)
        enabled = turbo or _button(buttons, config.enable_button) or not config.require_enable_button
        if not enabled:
            return self._stop_once()
        if turbo:
            scales = (config.scale_linear_turbo_x, config.scale_linear_turbo_y, config.scale_angular_turbo_yaw)
        else:
            scales = (config.scale_linear_x, config.scale_linear_y, config.scale_angular_yaw)
        command = VelocityCommand(
            scales[0] * _axis(axes, config.axis_linear_x),
            scales[1] * _axis(axes, config.axis_linear_y),
            scales[2] * _axis(axes, config.axis_angular_yaw),
        )
        self._moving = True  # even a zero stick while enabled: publish, the operator is driving
        return command

    def on_tick(self, now_s: float) -> VelocityCommand | None:
        """Call periodically: a silent joy stream owes the base one stop."""
        if self._last_joy_s is not None and now_s - self._last_joy_s > self.config.joy_timeout_s:
            return self._stop_once()
        return None

    def _stop_once(self) -> VelocityCommand | None:
        if self._moving:
            self._moving = False
            return STOP
        return None

"""teleop_node: sensor_msgs/Joy on `joy` -> geometry_msgs/Twist on `cmd_vel` (holonomic base).

The mapping and its safety rules live in control/teleop.py; parameter names follow
teleop_twist_joy. Gamepad layouts: config/gamepads/*.yaml.
"""

from __future__ import annotations

import sys

from geometry_msgs.msg import Twist
from rclpy.node import Node
from sensor_msgs.msg import Joy

from mobile_vla_ros.control.teleop import TeleopConfig, TeleopMapper, VelocityCommand
from mobile_vla_ros.nodes.interfaces import PUBLISHES, SUBSCRIBES, Topic
from mobile_vla_ros.nodes.parameters import NodeParameter, declare_parameters
from mobile_vla_ros.nodes.process import publish_final_stop, run_node

DEFAULTS = TeleopConfig()  # the parameters' defaults; their names are its fields with '.' for '_'
PARAMETERS = (
    NodeParameter(
        "require_enable_button",
        DEFAULTS.require_enable_button,
        "publish motion only while the enable (deadman) button is held",
    ),
    NodeParameter("enable_button", DEFAULTS.enable_button, "deadman button index for normal speed (-1: none)"),
    NodeParameter(
        "enable_turbo_button", DEFAULTS.enable_turbo_button, "deadman button index for turbo speed (-1: none)"
    ),
    NodeParameter("axis_linear.x", DEFAULTS.axis_linear_x, "axis for forward/backward (left stick up/down)"),
    NodeParameter("axis_linear.y", DEFAULTS.axis_linear_y, "axis for sideways motion (left stick left/right)"),
    NodeParameter("axis_angular.yaw", DEFAULTS.axis_angular_yaw, "axis for turning (right stick left/right; -1: none)"),
    NodeParameter("scale_linear.x", DEFAULTS.scale_linear_x, "m/s at full stick, normal speed"),
    NodeParameter("scale_linear.y", DEFAULTS.scale_linear_y, "m/s at full stick, normal speed"),
    NodeParameter("scale_angular.yaw", DEFAULTS.scale_angular_yaw, "rad/s at full stick, normal speed"),
    NodeParameter("scale_linear_turbo.x", DEFAULTS.scale_linear_turbo_x, "m/s at full stick, turbo"),
    NodeParameter("scale_linear_turbo.y", DEFAULTS.scale_linear_turbo_y, "m/s at full stick, turbo"),
    NodeParameter("scale_angular_turbo.yaw", DEFAULTS.scale_angular_turbo_yaw, "rad/s at full stick, turbo"),
    NodeParameter("joy_timeout_s", DEFAULTS.joy_timeout_s, "send one stop when no Joy message arrived for this long"),
)
JOY = Topic("joy", Joy, SUBSCRIBES, "the gamepad (joy_node)")
CMD_VEL = Topic(
    "cmd_vel",
    Twist,
    PUBLISHES,
    "linear.x, linear.y, angular.z from the sticks while an enable button is held; one zero when it is "
    "released, when joy is silent for joy_timeout_s, and at shutdown",
)
INTERFACES = (JOY, CMD_VEL)
WATCHDOG_PERIOD_S = 0.05


class TeleopNode(Node):
    def __init__(self, **node_options):
        super().__init__("teleop_node", **node_options)
        self.config = TeleopConfig(**vars(declare_parameters(self, PARAMETERS)))
        self.mapper = TeleopMapper(self.config)
        self._layout_checked = False
        self.publisher = self.create_publisher(Twist, CMD_VEL.name, 10)
        self.create_subscription(Joy, JOY.name, self.on_joy, 10)
        self.create_timer(WATCHDOG_PERIOD_S, self.on_watchdog)
        self.get_logger().info(
            f"teleop ready: hold button {self.config.enable_button} to drive "
            f"(turbo {self.config.enable_turbo_button}), stop after {self.config.joy_timeout_s} s without joy"
        )

    def now_s(self) -> float:
        return self.get_clock().now().nanoseconds * 1e-9

    def on_joy(self, msg: Joy) -> None:
        if not self._layout_checked:
            self._layout_checked = True
            missing = self.config.missing_inputs(len(msg.axes), len(msg.buttons))
            if missing:
                self.get_logger().warning(
                    f"this gamepad lacks configured inputs (they read as released): {', '.join(missing)}"
                )
        self.publish(self.mapper.on_joy(msg.axes, msg.buttons, self.now_s()))

    def on_watchdog(self) -> None:
        command = self.mapper.on_tick(self.now_s())
        if command is not None:
            self.get_logger().warning("joy stream went silent: stopping")
        self.publish(command)

    def publish(self, command: VelocityCommand | None) -> None:
        if command is None:
            return
        twist = Twist()
        twist.linear.x, twist.linear.y, twist.angular.z = (float(value) for value in command)
        self.publisher.publish(twist)

    def stop(self) -> None:
        """The base keeps a teleop's last command: leave it a zero one."""
        publish_final_stop(self.publisher)


def main(args=None) -> int:
    return run_node("teleop_node", TeleopNode, TeleopNode.stop, args)


if __name__ == "__main__":
    sys.exit(main())

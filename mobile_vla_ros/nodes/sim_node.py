"""sim_node: the simulated room as ROS topics, so the real nodes can drive it.

Subscribes ``cmd_vel`` (geometry_msgs/Twist: linear.x forward, linear.y left; angular.z is
ignored, the simulated robot keeps facing forward). Publishes ``camera/image_raw``
(sensor_msgs/Image rgb8), ``sim/pose`` (geometry_msgs/PoseStamped) and ``sim/result``
(std_msgs/String JSON, latched: outcome, time, position, layout, episode). ``sim/reset``
(std_srvs/Trigger) starts the next randomised layout of the series chosen by ``seed``.

The simulation runs in step with the node's clock: before every camera frame and pose the world
is advanced to "now", so each header stamp is the time the pictured state was reached. A
``cmd_vel`` older than ``cmd_timeout_s`` counts as zero: the robot stops rather than coasting on
a command nobody is sending any more.
"""

from __future__ import annotations

import json
import math

from geometry_msgs.msg import PoseStamped, Twist
from rcl_interfaces.msg import ParameterDescriptor
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import Image
from std_msgs.msg import String
from std_srvs.srv import Trigger

from mobile_vla_ros.errors import MobileVlaError
from mobile_vla_ros.nodes.process import run_node
from mobile_vla_ros.nodes.ros_image import rgb_to_image_msg
from mobile_vla_ros.sim.render import CameraConfig, Renderer
from mobile_vla_ros.sim.world import RoomConfig, World, sample_layout

# name -> (default, description, read_only)
PARAMETERS = {
    "seed": (0, "series of random layouts; sim/reset moves to the next layout of the current seed", False),
    "first_episode": (0, "layout number of the episode at start; sim/reset moves on from there", True),
    "physics_rate_hz": (50.0, "rate of the integration and sim/pose messages", True),
    "camera_rate_hz": (30.0, "rate of camera/image_raw", True),
    "image_width": (640, "camera image width in pixels", True),
    "image_height": (480, "camera image height in pixels", True),
    "hfov_deg": (100.0, "horizontal field of view of the camera", True),
    "max_speed": (1.15, "per-axis speed limit in m/s; faster commands are clipped", True),
    "time_limit_s": (20.0, "an episode that has not ended by then is timed_out", True),
    "cmd_timeout_s": (0.5, "a cmd_vel older than this counts as zero velocity", False),
    "freeze_camera": (
        False,
        "camera/image_raw shows the episode's first view throughout (the demo's check of "
        "what a policy does when its images stop changing)",
        False,
    ),
    "camera_frame_id": ("sim_camera", "header.frame_id of the camera images", True),
    "world_frame_id": ("sim_room", "header.frame_id of sim/pose (room frame: x forward, y left)", True),
}


class SimNode(Node):
    def __init__(self, **kwargs):
        super().__init__("sim_node", **kwargs)
        for name, (default, description, read_only) in PARAMETERS.items():
            self.declare_parameter(name, default, ParameterDescriptor(description=description, read_only=read_only))
        value = lambda name: self.get_parameter(name).value  # noqa: E731
        for rate in ("physics_rate_hz", "camera_rate_hz", "cmd_timeout_s"):
            if not value(rate) > 0:
                raise MobileVlaError(f"parameter {rate} must be positive, got {value(rate)}")
        if value("first_episode") < 0:
            raise MobileVlaError(f"parameter first_episode must be >= 0, got {value('first_episode')}")
        self._room = RoomConfig(max_speed=float(value("max_speed")), time_limit_s=float(value("time_limit_s")))
        self._renderer = Renderer(
            self._room, CameraConfig(int(value("image_width")), int(value("image_height")), float(value("hfov_deg")))
        )
        self._camera_frame, self._world_frame = value("camera_frame_id"), value("world_frame_id")

        self._image_pub = self.create_publisher(Image, "camera/image_raw", 2)
        self._pose_pub = self.create_publisher(PoseStamped, "sim/pose", 10)
        latched = QoSProfile(
            depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL
        )
        self._result_pub = self.create_publisher(String, "sim/result", latched)
        self.create_subscription(Twist, "cmd_vel", self._on_cmd_vel, 10)
        self.create_service(Trigger, "sim/reset", self._on_reset)

        self._command = (0.0, 0.0)
        self._command_time_ns = None
        self._episode = int(value("first_episode")) - 1
        self._start_episode()
        self.create_timer(1.0 / value("physics_rate_hz"), self._on_physics_tick)
        self.create_timer(1.0 / value("camera_rate_hz"), self._on_camera_tick)

    # -- episode ------------------------------------------------------------------------------
    def _start_episode(self) -> None:
        self._episode += 1
        seed = int(self.get_parameter("seed").value)
        self._world = World(sample_layout(seed, self._episode, self._room), self._room)
        self._seed = seed
        self._last_ns = self.get_clock().now().nanoseconds
        self._command, self._command_time_ns = (0.0, 0.0), None
        self._publish_result()
        self.get_logger().info(f"episode {self._episode} (seed {seed}): {self._world.layout.to_dict()}")

    def _publish_result(self) -> None:
        summary = {**self._world.summary(), "episode": self._episode, "seed": self._seed}
        self._result_pub.publish(String(data=json.dumps(summary)))

    def _on_reset(self, request, response):
        self._start_episode()
        response.success = True
        response.message = json.dumps(
            {"episode": self._episode, "seed": self._seed, "layout": self._world.layout.to_dict()}
        )
        return response

    # -- motion -------------------------------------------------------------------------------
    def _on_cmd_vel(self, msg: Twist) -> None:
        command = (msg.linear.x, msg.linear.y)
        if not all(math.isfinite(v) for v in command):
            self.get_logger().error(f"non-finite cmd_vel {command} ignored; stopping", throttle_duration_sec=1.0)
            command = (0.0, 0.0)
        self._advance()  # the previous command was in force until now
        self._command, self._command_time_ns = command, self.get_clock().now().nanoseconds

    def _advance(self):
        """Integrate from the last update to now with the command in force; returns now."""
        now = self.get_clock().now()
        now_ns = now.nanoseconds
        dt = (now_ns - self._last_ns) * 1e-9
        if dt <= 0:
            return now
        self._last_ns = now_ns
        timeout_ns = self.get_parameter("cmd_timeout_s").value * 1e9
        fresh = self._command_time_ns is not None and now_ns - self._command_time_ns <= timeout_ns
        was_running = not self._world.outcome.finished
        self._world.step(self._command if fresh else (0.0, 0.0), dt)
        if was_running and self._world.outcome.finished:
            self._publish_result()
            self.get_logger().info(f"episode {self._episode} ended: {self._world.summary()['outcome']}")
        return now

    def _on_physics_tick(self) -> None:
        now = self._advance()
        pose = PoseStamped()
        pose.header.stamp = now.to_msg()
        pose.header.frame_id = self._world_frame
        pose.pose.position.x, pose.pose.position.y = float(self._world.state.x), float(self._world.state.y)
        pose.pose.orientation.w = 1.0  # always facing +x
        self._pose_pub.publish(pose)

    def _on_camera_tick(self) -> None:
        now = self._advance()
        state, layout = self._world.state, self._world.layout
        x, y = layout.start if self.get_parameter("freeze_camera").value else (state.x, state.y)
        image = self._renderer.render(layout, x, y)
        self._image_pub.publish(rgb_to_image_msg(image, now.to_msg(), self._camera_frame))


def main(args=None) -> int:
    return run_node("sim_node", SimNode, args=args)


if __name__ == "__main__":
    raise SystemExit(main())

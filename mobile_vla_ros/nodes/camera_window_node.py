"""camera_window_node: camera frames -> windows of the model's size and frame rate.

Subscribes to `image` (sensor_msgs/Image, any encoding data.images decodes) or, with
`compressed: true`, to `image/compressed` (sensor_msgs/CompressedImage). Frames are converted to
RGB, optionally rotated 180°, squashed to the model's image size and sampled at the model's
`action_dt` by their capture stamps. Every new sample publishes the last `window_size` frames on
`window` as one rgb8 Image (frames stacked vertically, oldest on top, width = image size,
stamp = newest frame's capture stamp). Window size, rate and image size come from the
checkpoint's policy.json, never from parameters: the window must span the time it did in training.
"""
from __future__ import annotations

import sys

from rcl_interfaces.msg import ParameterDescriptor
from rclpy.node import Node
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import CompressedImage, Image

from mobile_vla_ros.control.frame_window import FrameWindow
from mobile_vla_ros.data.images import ImageError, resize_for_model, rotate_180, stack_window
from mobile_vla_ros.errors import MobileVlaError
from mobile_vla_ros.nodes.ros_image import compressed_msg_to_rgb, image_msg_to_rgb, rgb_to_image_msg
from mobile_vla_ros.policy.config import PolicyConfig
from mobile_vla_ros.nodes.process import run_node

LOG_THROTTLE_S = 5.0


def stamp_seconds(stamp) -> float:
    return stamp.sec + stamp.nanosec * 1e-9


class CameraWindowNode(Node):
    def __init__(self, **kwargs):
        super().__init__("camera_window_node", **kwargs)
        self.declare_parameter("model_dir", "", ParameterDescriptor(
            description="policy checkpoint directory; its policy.json gives window size, frame rate and image size",
            read_only=True))
        self.declare_parameter("compressed", False, ParameterDescriptor(
            description="subscribe to image/compressed (sensor_msgs/CompressedImage) instead of image", read_only=True))
        self.declare_parameter("rotate_180", False, ParameterDescriptor(
            description="rotate frames by 180 degrees (camera mounted upside down)", read_only=True))
        model_dir = self.get_parameter("model_dir").value
        if not model_dir:
            raise MobileVlaError("parameter model_dir is not set: point it at a policy checkpoint directory")
        config = PolicyConfig.load(model_dir)
        self.image_size = config.image_size
        self.rotate = bool(self.get_parameter("rotate_180").value)
        self.window = FrameWindow(config.window_size, config.action_dt)
        self.dropped_frames = 0
        self.windows_published = 0

        self.publisher = self.create_publisher(Image, "window", 2)
        if self.get_parameter("compressed").value:
            self.create_subscription(CompressedImage, "image/compressed", self._on_compressed, qos_profile_sensor_data)
        else:
            self.create_subscription(Image, "image", self._on_image, qos_profile_sensor_data)
        self.get_logger().info(
            f"windows of {config.window_size} frames at {1 / config.action_dt:.1f} Hz, "
            f"{self.image_size}x{self.image_size} px, from {model_dir}"
        )

    def _on_image(self, msg: Image) -> None:
        self._take(msg, image_msg_to_rgb)

    def _on_compressed(self, msg: CompressedImage) -> None:
        self._take(msg, compressed_msg_to_rgb)

    def _take(self, msg, to_rgb) -> None:
        stamp = stamp_seconds(msg.header.stamp)
        if not self.window.wants(stamp):
            return
        try:
            rgb = to_rgb(msg)
        except ImageError as error:
            self.dropped_frames += 1
            self.get_logger().error(
                f"dropping malformed camera frame ({self.dropped_frames} so far): {error}",
                throttle_duration_sec=LOG_THROTTLE_S)
            return
        if self.rotate:
            rgb = rotate_180(rgb)
        frames = self.window.add(resize_for_model(rgb, self.image_size), stamp)
        slow_rate = self.window.camera_slower_than_model()
        if slow_rate is not None:
            self.get_logger().warning(
                f"camera delivers {slow_rate:.1f} Hz, slower than the model's {1 / self.window.action_dt:.1f} Hz: "
                "windows will span more time than in training", throttle_duration_sec=30.0)
        if frames is None:
            return
        self.publisher.publish(rgb_to_image_msg(stack_window(frames), msg.header.stamp, msg.header.frame_id))
        self.windows_published += 1


def main(args=None) -> int:
    return run_node("camera_window_node", CameraWindowNode, args=args)


if __name__ == "__main__":
    sys.exit(main())

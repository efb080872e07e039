"""camera_window_node: camera frames -> windows of the model's size and frame rate.

Subscribes to `image` (sensor_msgs/Image, any encoding data.images decodes) or, with
`compressed: true`, to `image/compressed` (sensor_msgs/CompressedImage). Frames are converted to
RGB, optionally rotated 180°, squashed to the model's image size and sampled at the model's
`action_dt` by their capture stamps. Every new sample publishes the last `window_size` frames on
`window` as one rgb8 Image (frames stacked vertically, oldest on top, width = image size,
stamp = newest frame's capture stamp). Window size, rate and image size come from the
checkpoint's policy.json, never from parameters: the window must span the time it did in training.
Beside each window, `window/built` (sensor_msgs/TimeReference) carries when it was built: header =
the window's header (capture stamp), time_ref = build time; inference_node turns the pair into the
frame-age and transport latencies of its /diagnostics (`ros2 topic echo window/built` shows them).
"""

from __future__ import annotations

import sys

from rclpy.node import Node
from sensor_msgs.msg import CompressedImage, Image, TimeReference

from mobile_vla_ros.control.frame_window import FrameWindow
from mobile_vla_ros.data.images import camera_mismatch, resize_for_model, rotate_180, stack_window
from mobile_vla_ros.errors import ImageError, MobileVlaError
from mobile_vla_ros.nodes.camera_qos import subscribe_matching_camera
from mobile_vla_ros.nodes.interfaces import CAMERA_QOS, PUBLISHES, SUBSCRIBES, Topic
from mobile_vla_ros.nodes.parameters import NodeParameter, declare_parameters
from mobile_vla_ros.nodes.process import run_node
from mobile_vla_ros.nodes.ros_image import compressed_msg_to_rgb, image_msg_to_rgb, rgb_to_image_msg
from mobile_vla_ros.policy.config import PolicyConfig

LOG_THROTTLE_S = 5.0


def stamp_seconds(stamp) -> float:
    return stamp.sec + stamp.nanosec * 1e-9


PARAMETERS = (
    NodeParameter(
        "model_dir", "", "policy checkpoint directory; its policy.json gives window size, frame rate and image size"
    ),
    NodeParameter("compressed", False, "subscribe to image/compressed (sensor_msgs/CompressedImage) instead of image"),
    NodeParameter("rotate_180", False, "rotate frames by 180 degrees (camera mounted upside down)"),
    NodeParameter(
        "allow_camera_mismatch",
        False,
        "drive even when the camera settings differ from those the policy was trained with",
    ),
)
IMAGE = Topic(
    "image",
    Image,
    SUBSCRIBES,
    "camera frames (rgb8, bgr8, mono8, yuv422, yuyv); the launch files remap it to image_topic",
    CAMERA_QOS,
    when=("compressed", False),
)
IMAGE_COMPRESSED = Topic(
    "image/compressed", CompressedImage, SUBSCRIBES, "camera frames, JPEG or PNG", CAMERA_QOS, when=("compressed", True)
)
WINDOW = Topic(
    "window",
    Image,
    PUBLISHES,
    "the last window_size frames sampled at the model's rate, stacked vertically (oldest on top), rgb8, "
    "the model's image size wide; stamp = the newest frame's capture stamp",
)
WINDOW_BUILT = Topic(
    "window/built",
    TimeReference,
    PUBLISHES,
    "per window: header = the window's header (capture stamp), time_ref = when it was built",
)
INTERFACES = (IMAGE, IMAGE_COMPRESSED, WINDOW, WINDOW_BUILT)


class CameraWindowNode(Node):
    def __init__(self, **kwargs):
        super().__init__("camera_window_node", **kwargs)
        p = declare_parameters(self, PARAMETERS)
        model_dir = p.model_dir
        if not model_dir:
            raise MobileVlaError("parameter model_dir is not set: point it at a policy checkpoint directory")
        config = PolicyConfig.load(model_dir)
        self.allow_camera_mismatch = p.allow_camera_mismatch
        self.image_size = config.image_size
        self.rotate = p.rotate_180
        self._check_camera_settings(config, model_dir)
        self.window = FrameWindow(config.window_size, config.action_dt)
        self.dropped_frames = 0
        self.windows_published = 0

        self.publisher = self.create_publisher(Image, WINDOW.name, 2)
        self.built_publisher = self.create_publisher(TimeReference, WINDOW_BUILT.name, 10)
        if p.compressed:
            subscribe_matching_camera(self, CompressedImage, IMAGE_COMPRESSED.name, self._on_compressed)
        else:
            subscribe_matching_camera(self, Image, IMAGE.name, self._on_image)
        self.get_logger().info(
            f"windows of {config.window_size} frames at {1 / config.action_dt:.1f} Hz, "
            f"{self.image_size}x{self.image_size} px, from {model_dir}"
        )

    def _check_camera_settings(self, config: PolicyConfig, model_dir: str) -> None:
        """An upside-down camera on a policy trained upright drives confidently into the wrong side:
        refuse to start unless the user says otherwise."""
        mismatch = camera_mismatch(config.camera, self.rotate)
        if mismatch is not None:
            message = f"camera settings differ from the policy's training ({model_dir}): {mismatch}"
            if not self.allow_camera_mismatch:
                raise MobileVlaError(f"{message}. Set rotate_180 as in training, or allow_camera_mismatch: true")
            self.get_logger().warning(f"{message} (allowed by allow_camera_mismatch)")
        elif config.camera.get("rotate_180") is None:
            self.get_logger().warning(
                f"{model_dir} does not record whether its training frames were rotated: "
                f"make sure rotate_180 ({self.rotate}) matches the recordings"
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
                throttle_duration_sec=LOG_THROTTLE_S,
            )
            return
        if self.rotate:
            rgb = rotate_180(rgb)
        resets = self.window.resets
        frames = self.window.add(resize_for_model(rgb, self.image_size), stamp)
        if self.window.resets != resets:
            self.get_logger().warning(
                f"camera stamps jumped (gap or time going backwards): window restarted ({self.window.resets} so far); "
                "no windows until it has refilled",
                throttle_duration_sec=LOG_THROTTLE_S,
            )
        slow_rate = self.window.camera_slower_than_model()
        if slow_rate is not None:
            self.get_logger().warning(
                f"camera delivers {slow_rate:.1f} Hz, slower than the model's {1 / self.window.action_dt:.1f} Hz: "
                "windows will span more time than in training",
                throttle_duration_sec=30.0,
            )
        if frames is None:
            return
        window = rgb_to_image_msg(stack_window(frames), msg.header.stamp, msg.header.frame_id)
        built = TimeReference(header=window.header, time_ref=self.get_clock().now().to_msg(), source=self.get_name())
        self.publisher.publish(window)
        self.built_publisher.publish(built)
        self.windows_published += 1


def main(args=None) -> int:
    return run_node("camera_window_node", CameraWindowNode, args=args)


if __name__ == "__main__":
    sys.exit(main())

"""recorder_node: records camera frames + the commanded velocity + the instruction as H5 episodes.

Inputs: the camera (`image`, sensor_msgs/Image, or `image/compressed`, CompressedImage, when `compressed`),
`cmd_vel` (whatever commanded the base), `joy` (episode buttons), `instruction` (std_msgs/String;
"left"/"right" expand to the trained sentences). Services (std_srvs/Trigger): ~/start, ~/stop
(stop and save), ~/discard, ~/select_left, ~/select_right. State: ~/state (std_msgs/String JSON,
latched) and one log line per change. The episode logic is control/recording.py; the file
format data/episode.py. On start-up, episodes left by a crash are recovered (flagged truncated).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from geometry_msgs.msg import Twist
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, QoSProfile
from sensor_msgs.msg import CompressedImage, Image, Joy
from std_msgs.msg import String
from std_srvs.srv import Trigger

from mobile_vla_ros.control.recording import (
    EpisodeButtonReader,
    EpisodeButtons,
    EpisodeRecorder,
    RecorderSettings,
    status_line,
)
from mobile_vla_ros.data.episode_recovery import recover_partial_episodes
from mobile_vla_ros.data.episode_writer import EpisodeWriter
from mobile_vla_ros.data.images import camera_message_to_rgb, rotate_180
from mobile_vla_ros.data.quality import QualityRules
from mobile_vla_ros.errors import ImageError
from mobile_vla_ros.nodes.camera_qos import subscribe_matching_camera
from mobile_vla_ros.nodes.interfaces import CAMERA_QOS, LATCHED, PUBLISHES, SUBSCRIBES, Service, Topic
from mobile_vla_ros.nodes.parameters import NodeParameter, declare_parameters
from mobile_vla_ros.nodes.process import run_node
from mobile_vla_ros.nodes.ros_image import deserialize_camera_message
from mobile_vla_ros.policy.instructions import LAB_INSTRUCTIONS

STATUS_PERIOD_S = 1.0

PARAMETERS = (
    NodeParameter("output_dir", "~/mobile_vla_data", "directory for episode files"),
    NodeParameter("compressed", False, "subscribe to image/compressed (sensor_msgs/CompressedImage) instead of image"),
    NodeParameter("rotate_180", False, "rotate frames before storing (camera mounted upside down); match drive.yaml"),
    NodeParameter("image_width", 0, "stored frame width in pixels; 0 keeps the camera's native size"),
    NodeParameter("image_height", 0, "stored frame height in pixels; 0 keeps the camera's native size"),
    NodeParameter("sample_rate_hz", 10.0, "frames per second stored; becomes the model's action_dt"),
    NodeParameter("camera_timeout_s", 0.5, "refuse to start when the newest frame is older"),
    NodeParameter("command_timeout_s", 0.5, "a motion command older than this no longer counts"),
    NodeParameter("camera_lag_s", 0.2, "flag sampled frames older than this"),
    *(
        NodeParameter(f"instructions.{side}", LAB_INSTRUCTIONS[side], f"full instruction for '{side}'")
        for side in ("left", "right")
    ),
    NodeParameter("start_button", 7, "gamepad button: start an episode"),
    NodeParameter("save_button", 0, "gamepad button: stop and save"),
    NodeParameter("discard_button", 6, "gamepad button: stop and discard"),
    NodeParameter("instruction_axis", 6, "gamepad axis choosing left/right (D-pad left/right)"),
    NodeParameter("instruction_axis_left_sign", 1.0, "sign of that axis for 'left'"),
    NodeParameter("quality.window_size", 8, "an episode with fewer frames is flagged too_short"),
    NodeParameter("quality.max_idle_s", 2.0, "a longer motionless stretch is flagged idle_stretch"),
    NodeParameter("quality.saturation_speed", 1.15, "a linear command this fast is pinned at the limit"),
    NodeParameter("robot_name", "", "stored in each episode's attributes"),
    NodeParameter("instruction", "", "instruction before one is chosen ('left', 'right' or text)"),
)
IMAGE = Topic(
    "image",
    Image,
    SUBSCRIBES,
    "camera frames, sampled at sample_rate_hz; the launch file remaps it to image_topic",
    CAMERA_QOS,
    when=("compressed", False),
)
IMAGE_COMPRESSED = Topic(
    "image/compressed", CompressedImage, SUBSCRIBES, "camera frames, JPEG or PNG", CAMERA_QOS, when=("compressed", True)
)
CMD_VEL = Topic("cmd_vel", Twist, SUBSCRIBES, "the velocity stored with each frame (whatever commands the base)")
JOY = Topic("joy", Joy, SUBSCRIBES, "episode buttons (start_button, save_button, discard_button, instruction_axis)")
INSTRUCTION = Topic("instruction", String, SUBSCRIBES, "'left' or 'right' (instructions.left/right) or the full text")
STATE = Topic(
    "~/state",
    String,
    PUBLISHES,
    "JSON: state (idle, recording, saving), instruction, episodes_saved, frames, last episode and its "
    "quality; every second and on each change",
    LATCHED,
)
START = Service("~/start", Trigger, "start an episode (refused without a fresh frame or a cmd_vel publisher)")
STOP = Service("~/stop", Trigger, "stop and save the episode")
DISCARD = Service("~/discard", Trigger, "stop and discard the episode")
SELECT_LEFT = Service("~/select_left", Trigger, "choose the 'left' instruction")
SELECT_RIGHT = Service("~/select_right", Trigger, "choose the 'right' instruction")
INTERFACES = (
    IMAGE,
    IMAGE_COMPRESSED,
    CMD_VEL,
    JOY,
    INSTRUCTION,
    STATE,
    START,
    STOP,
    DISCARD,
    SELECT_LEFT,
    SELECT_RIGHT,
)


class RecorderNode(Node):
    def __init__(self, **node_options):
        super().__init__("recorder_node", **node_options)
        p = declare_parameters(self, PARAMETERS)
        self.output_dir = Path(p.output_dir).expanduser()
        self.compressed = p.compressed
        self.rotate = p.rotate_180
        width, height = p.image_width, p.image_height
        settings = RecorderSettings(
            sample_rate_hz=p.sample_rate_hz,
            camera_timeout_s=p.camera_timeout_s,
            command_timeout_s=p.command_timeout_s,
            camera_lag_s=p.camera_lag_s,
        )
        presets = {side: getattr(p, f"instructions_{side}") for side in ("left", "right")}
        buttons = EpisodeButtons(
            start_button=p.start_button,
            save_button=p.save_button,
            discard_button=p.discard_button,
            instruction_axis=p.instruction_axis,
            instruction_axis_left_sign=p.instruction_axis_left_sign,
        )
        quality_rules = QualityRules(
            window_size=p.quality_window_size,
            max_idle_s=p.quality_max_idle_s,
            saturation_speed=p.quality_saturation_speed,
        )
        robot_name, initial_instruction = p.robot_name, p.instruction
        if (width > 0) != (height > 0):
            raise ValueError("set both image_width and image_height, or neither")
        image_size = (width, height) if width > 0 else None

        for path in recover_partial_episodes(self.output_dir, quality_rules):
            self.get_logger().warning(f"recovered an episode interrupted by a crash: {path} (flagged truncated)")

        image_type, camera_topic = (CompressedImage, IMAGE_COMPRESSED.name) if self.compressed else (Image, IMAGE.name)

        def open_writer(instruction: str) -> EpisodeWriter:
            return EpisodeWriter(
                self.output_dir,
                instruction,
                settings.sample_rate_hz,
                image_size=image_size,
                quality_rules=quality_rules,
                robot_name=robot_name,
                camera_topic=self.resolve_topic_name(camera_topic),
                camera_compressed=self.compressed,
                rotated_180=self.rotate,
                recorder="mobile_vla_ros recorder_node",
            )

        self.state_pub = self.create_publisher(
            String, STATE.name, QoSProfile(depth=1, durability=DurabilityPolicy.TRANSIENT_LOCAL)
        )
        self.recorder = EpisodeRecorder(
            settings, open_writer, self._decode, initial_instruction, presets, on_change=self._on_change
        )
        self.buttons = EpisodeButtonReader(buttons)
        # Reliability matched to the camera's publisher (over best-effort DDS most 720p frames never
        # arrive: docs/performance.md); raw: frames are read with a light CDR reader (nodes/ros_image.py).
        subscribe_matching_camera(self, image_type, camera_topic, self._on_image, raw=True)
        self.cmd_sub = self.create_subscription(Twist, CMD_VEL.name, self._on_cmd_vel, 10)
        self.create_subscription(Joy, JOY.name, self._on_joy, 10)
        self.create_subscription(String, INSTRUCTION.name, self._on_instruction, 10)
        for service, action in (
            (START, self._start),
            (STOP, self.recorder.stop_and_save),
            (DISCARD, self.recorder.discard),
            (SELECT_LEFT, lambda: self._select("left")),
            (SELECT_RIGHT, lambda: self._select("right")),
        ):
            self.create_service(Trigger, service.name, self._trigger(action))
        self.create_timer(1.0 / settings.sample_rate_hz, self._on_sample)
        self.create_timer(STATUS_PERIOD_S, self._publish_state)
        self._on_change(self.recorder.status(), f"ready; episodes go to {self.output_dir}")

    def now_s(self) -> float:
        return self.get_clock().now().nanoseconds * 1e-9

    # ------------------------------------------------------------------------------ callbacks
    def _decode(self, msg):
        rgb = camera_message_to_rgb(msg)
        return rotate_180(rgb) if self.rotate else rgb

    def _on_image(self, raw: bytes) -> None:
        try:
            msg = deserialize_camera_message(raw, self.compressed)
        except ImageError as error:
            self.get_logger().warning(f"camera message ignored: {error}", throttle_duration_sec=5.0)
            return
        stamp = msg.header.stamp.sec + msg.header.stamp.nanosec * 1e-9
        now = self.now_s()
        outcome = self.recorder.on_frame(msg, stamp if stamp > 0 else now, now)  # kept undecoded until sampled
        if outcome is not None and not outcome.ok:
            self.get_logger().warning(outcome.message, throttle_duration_sec=1.0)

    def _on_cmd_vel(self, msg: Twist) -> None:
        self.recorder.on_command((msg.linear.x, msg.linear.y, msg.angular.z), self.now_s())

    def _on_sample(self) -> None:
        outcome = self.recorder.tick(self.now_s())
        if outcome is not None and not outcome.ok:
            self.get_logger().warning(outcome.message, throttle_duration_sec=1.0)

    def _on_joy(self, msg: Joy) -> None:
        actions = {
            "start": self._start,
            "save": self.recorder.stop_and_save,
            "discard": self.recorder.discard,
            "left": lambda: self._select("left"),
            "right": lambda: self._select("right"),
        }
        for pressed in self.buttons.on_joy(msg.axes, msg.buttons):
            self._log_outcome(actions[pressed]())

    def _on_instruction(self, msg: String) -> None:
        self._log_outcome(self.recorder.set_instruction(msg.data))

    def _start(self):
        return self.recorder.start(self.now_s(), self.count_publishers(self.cmd_sub.topic_name))

    def _select(self, side: str):
        return self.recorder.set_instruction(side)

    def _trigger(self, action):
        def handle(request, response):
            outcome = action()
            self._log_outcome(outcome)
            response.success, response.message = outcome.ok, outcome.message
            return response

        return handle

    def _log_outcome(self, outcome) -> None:
        if not outcome.ok:
            self.get_logger().warning(outcome.message)

    def _on_change(self, status: dict, message: str) -> None:
        self.get_logger().info(status_line(status, message))
        self._publish_state()

    def _publish_state(self) -> None:
        self.state_pub.publish(String(data=json.dumps(self.recorder.status(self.now_s()))))


def _save_on_shutdown(node: RecorderNode) -> None:
    if node.recorder.state.value == "recording":  # a clean shutdown keeps the episode
        node.get_logger().info(node.recorder.stop_and_save().message)


def main(args=None) -> int:
    return run_node("recorder_node", RecorderNode, _save_on_shutdown, args)


if __name__ == "__main__":
    sys.exit(main())

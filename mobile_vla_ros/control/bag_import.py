"""rosbag2 (MCAP or sqlite3) -> episodes, by replaying the bag through the live recorder's logic.

The bag's camera and velocity messages are fed, in the order they were logged, to the same
`EpisodeRecorder` that recorder_node runs, and its sampling clock is the bag's log time: one
sample every 1/sample_rate s from the first camera frame, paired with the command in force at the
frame's capture stamp, flagged camera_lag / command_stale by the same rules, saved by the same
`EpisodeWriter` and judged by the same quality checks. Read with the pure-Python `rosbags`
library (no ROS installation needed); camera messages are decoded only when sampled.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mobile_vla_ros.control.recording import EpisodeRecorder, RecorderSettings
from mobile_vla_ros.data.episode_writer import EpisodeWriter
from mobile_vla_ros.data.images import camera_message_to_rgb
from mobile_vla_ros.data.quality import QualityRules
from mobile_vla_ros.errors import EpisodeError
from mobile_vla_ros.policy.instructions import LAB_INSTRUCTIONS

IMAGE_TYPES = ("sensor_msgs/msg/Image", "sensor_msgs/msg/CompressedImage")
TWIST_TYPES = ("geometry_msgs/msg/Twist", "geometry_msgs/msg/TwistStamped")


@dataclass
class BagImport:
    path: Path | None  # the episode written, None when nothing was
    message: str  # the recorder's outcome, with the quality verdicts
    camera_messages: int
    command_messages: int


@dataclass
class _LoggedFrame:
    """A camera message kept serialized until the recorder samples it."""

    rawdata: bytes
    connection: object


def _stamp_s(message, log_time_s: float) -> float:
    stamp = message.header.stamp
    value = stamp.sec + stamp.nanosec * 1e-9
    return value if value > 0 else log_time_s


def import_bag(
    bag: Path,
    image_topic: str,
    cmd_vel_topic: str,
    instruction: str,
    out_dir: Path,
    settings: RecorderSettings = RecorderSettings(),
    rules: QualityRules = QualityRules(),
    presets: dict[str, str] = LAB_INSTRUCTIONS,
    on_progress: Callable[[int], None] | None = None,
) -> BagImport:
    """Write one episode of `bag` into `out_dir`; EpisodeError when the bag cannot be used."""
    from rosbags.highlevel import AnyReader
    from rosbags.typesys import Stores, get_typestore

    try:
        reader = AnyReader([Path(bag)], default_typestore=get_typestore(Stores.ROS2_HUMBLE))
        reader.open()
    except Exception as error:  # rosbags raises several unrelated types for unreadable bags
        raise EpisodeError(f"cannot read the bag {bag}: {error}") from error
    try:
        topics = {connection.topic: connection.msgtype for connection in reader.connections}
        for topic, kinds, what in (
            (image_topic, IMAGE_TYPES, "--image-topic"),
            (cmd_vel_topic, TWIST_TYPES, "--cmd-vel-topic"),
        ):
            if topic not in topics:
                listing = ", ".join(f"{name} ({kind})" for name, kind in sorted(topics.items()))
                raise EpisodeError(f"{bag} has no topic {topic} ({what}); it has: {listing}")
            if topics[topic] not in kinds:
                raise EpisodeError(f"{topic} in {bag} carries {topics[topic]}, not {' or '.join(kinds)}")

        def decode(frame: _LoggedFrame) -> np.ndarray:
            return camera_message_to_rgb(reader.deserialize(frame.rawdata, frame.connection.msgtype))

        recorder = EpisodeRecorder(
            settings,
            lambda text: EpisodeWriter(
                out_dir,
                text,
                settings.sample_rate_hz,
                quality_rules=rules,
                source_bag=str(Path(bag).resolve()),
                camera_topic=image_topic,
                camera_compressed=topics[image_topic].endswith("CompressedImage"),
                recorder="mobile_vla_ros import-bag",
            ),
            decode,
            instruction,
            presets,
        )
        period = 1.0 / settings.sample_rate_hz
        next_tick: float | None = None
        counts = {"camera": 0, "command": 0}
        connections = [c for c in reader.connections if c.topic in (image_topic, cmd_vel_topic)]
        for connection, log_time_ns, rawdata in reader.messages(connections=connections):
            now = log_time_ns * 1e-9
            while next_tick is not None and next_tick <= now:
                recorder.tick(next_tick)
                next_tick += period
            if connection.topic == cmd_vel_topic:
                message = reader.deserialize(rawdata, connection.msgtype)
                twist = message.twist if connection.msgtype.endswith("Stamped") else message
                recorder.on_command((twist.linear.x, twist.linear.y, twist.angular.z), now)
                counts["command"] += 1
                continue
            header = reader.deserialize(rawdata, connection.msgtype)  # for the stamp; pixels decoded when sampled
            recorder.on_frame(_LoggedFrame(bytes(rawdata), connection), _stamp_s(header, now), now)
            counts["camera"] += 1
            if on_progress:
                on_progress(counts["camera"])
            if next_tick is None:
                outcome = recorder.start(now, command_publishers=1)
                if not outcome.ok:
                    raise EpisodeError(f"{bag}: {outcome.message}")
                recorder.tick(now)
                next_tick = now + period
        if next_tick is None:
            raise EpisodeError(f"{bag} holds no message on {image_topic}")
        outcome = recorder.stop_and_save()
        return BagImport(outcome.path, outcome.message, counts["camera"], counts["command"])
    finally:
        reader.close()

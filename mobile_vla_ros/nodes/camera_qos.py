"""Subscribe to a camera with the reliability its publisher offers.

Why: a best-effort subscription to a reliable camera matches, but every frame larger than a few
UDP fragments that loses one fragment is dropped whole. Measured with the simulated 640x480 rgb8
camera at 30 Hz on the 2-core machine under inference load: 2.4 Hz arrived best effort against
23.9 Hz reliable from the same publisher, and the inference node flipped DRIVING -> STALE every
few seconds. A reliable subscription to a best-effort publisher (many camera drivers use the
sensor-data profile) does not match at all. So the node waits until the camera's publisher is
seen and then matches it: reliable when every publisher is reliable, best effort otherwise.
"""

from __future__ import annotations

from collections.abc import Callable

from rclpy.node import Node
from rclpy.qos import QoSProfile, ReliabilityPolicy, qos_profile_sensor_data

DISCOVERY_POLL_S = 0.2
WAITING_LOG_PERIOD_S = 10.0


def matching_camera_qos(publisher_reliabilities: list[ReliabilityPolicy]) -> QoSProfile:
    """The subscription profile that matches every publisher and loses nothing it need not."""
    reliable = bool(publisher_reliabilities) and all(
        policy == ReliabilityPolicy.RELIABLE for policy in publisher_reliabilities
    )
    return QoSProfile(
        depth=qos_profile_sensor_data.depth,
        reliability=ReliabilityPolicy.RELIABLE if reliable else ReliabilityPolicy.BEST_EFFORT,
        durability=qos_profile_sensor_data.durability,
    )


def subscribe_matching_camera(node: Node, message_type, topic: str, callback: Callable, raw: bool = False) -> None:
    """Create the camera subscription once a publisher of `topic` is discovered (polled on a timer,
    so the node keeps spinning meanwhile); log which reliability was chosen and why. `raw`: the
    callback gets the serialized message (see nodes/ros_image.deserialize_camera_message)."""
    resolved = node.resolve_topic_name(topic)
    polls = 0

    def try_subscribe() -> None:
        nonlocal polls
        publishers = node.get_publishers_info_by_topic(resolved)
        if not publishers:
            polls += 1
            if polls % round(WAITING_LOG_PERIOD_S / DISCOVERY_POLL_S) == 0:
                node.get_logger().warning(f"camera {resolved}: no publisher yet, waiting")
            return
        node.destroy_timer(timer)
        qos = matching_camera_qos([info.qos_profile.reliability for info in publishers])
        node.create_subscription(message_type, resolved, callback, qos, raw=raw)
        node.get_logger().info(
            f"camera {resolved}: subscribed {qos.reliability.name.lower().replace('_', ' ')} "
            f"to match {len(publishers)} publisher(s)"
        )

    timer = node.create_timer(DISCOVERY_POLL_S, try_subscribe)

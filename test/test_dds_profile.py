"""config/fastdds_large_frames.xml: the Fast DDS that rclpy loads accepts it, a process started
with it maps the 32 MB shared-memory segment instead of the default 512 KB, and 720p frames still
reach a process started without it (on a robot, not every process may load the profile)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("rclpy")

pytestmark = pytest.mark.ros

PROFILE = Path(__file__).resolve().parents[1] / "config" / "fastdds_large_frames.xml"
SEGMENT_BYTES = 32 * 1024 * 1024
FRAME_BYTES = 1280 * 720 * 3

# Publishes 720p frames (reliable, as the recorder expects) and reports the largest Fast DDS
# shared-memory segment this process mapped (segments are /dev/shm/fastdds_<id>; ports and locks
# have other suffixes).
PUBLISHER = f"""
import re, sys, time
import rclpy
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import Image
rclpy.init()
node = rclpy.create_node("large_frame_publisher")
maps = re.findall(r"^([0-9a-f]+)-([0-9a-f]+) .* (/dev/shm/\\S+)$", open("/proc/self/maps").read(), re.M)
segment = r"/dev/shm/fastdds_[0-9a-f]+"
segments = [int(end, 16) - int(start, 16) for start, end, path in maps if re.fullmatch(segment, path)]
print("segment", max(segments, default=0), flush=True)
publisher = node.create_publisher(Image, "large_frames", QoSProfile(depth=5, reliability=ReliabilityPolicy.RELIABLE))
frame = Image(height=720, width=1280, encoding="rgb8", step=1280 * 3, data=bytes({FRAME_BYTES}))
deadline = time.monotonic() + 30
while time.monotonic() < deadline:
    publisher.publish(frame)
    time.sleep(0.1)
"""

SUBSCRIBER = """
import sys
import rclpy
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import Image
rclpy.init()
node = rclpy.create_node("large_frame_subscriber")
sizes = []
qos = QoSProfile(depth=5, reliability=ReliabilityPolicy.RELIABLE)
node.create_subscription(Image, "large_frames", lambda raw: sizes.append(len(raw)), qos, raw=True)
while len(sizes) < 3:
    rclpy.spin_once(node, timeout_sec=0.1)
print("received", min(sizes), flush=True)
"""


def test_large_frame_profile_maps_a_32_mb_segment_and_talks_to_default_processes():
    with_profile = {**os.environ, "FASTDDS_DEFAULT_PROFILES_FILE": str(PROFILE)}
    without_profile = {key: value for key, value in os.environ.items() if key != "FASTDDS_DEFAULT_PROFILES_FILE"}
    subscriber = subprocess.Popen(
        [sys.executable, "-c", SUBSCRIBER], env=without_profile, stdout=subprocess.PIPE, text=True
    )
    publisher = subprocess.Popen(
        [sys.executable, "-c", PUBLISHER], env=with_profile, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        received, _ = subscriber.communicate(timeout=30)
    finally:
        subscriber.kill()
        publisher.kill()
        published, errors = publisher.communicate()
    assert "segment" in published, errors
    segment = int(published.split()[1])
    assert segment >= SEGMENT_BYTES, f"the profile was not applied: largest segment {segment} bytes\n{errors}"
    assert "XML" not in errors, errors  # Fast DDS reports a profile it cannot parse, then runs with defaults
    # Each message: the serialized Image (CDR header, frame size, encoding) around the pixels.
    assert received.split()[0] == "received" and FRAME_BYTES < int(received.split()[1]) < FRAME_BYTES + 256

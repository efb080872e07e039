"""Benchmark (not a test): does recorder_node keep up with a 30 Hz 1280x720 camera while
recording at 10 Hz, with no dropped samples, and what CPU does it use?

    .venv/bin/python scripts/bench_recorder.py [--seconds 30] [--width 1280 --height 720]

Runs recorder_node as its own process (as on the robot), publishes rgb8 frames with moving
content at 30 Hz and cmd_vel at 20 Hz from this process, records one episode through the
~/start and ~/stop services, then checks the file and prints the figures.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import rclpy
from geometry_msgs.msg import Twist
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, QoSProfile
from sensor_msgs.msg import Image
from std_msgs.msg import String
from std_srvs.srv import Trigger

from mobile_vla_ros.data.episode import read_episode
from mobile_vla_ros.nodes.ros_image import rgb_to_image_msg

NOISE = 2  # grey levels of sensor noise; 6 is a worst case that gzip cannot keep up with
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime + stime


def scene(width: int, height: int, count: int) -> list[np.ndarray]:
    """Frames with camera-like content (gradients, shapes, sensor noise) that change every frame."""
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:height, 0:width]
    base = np.stack([x * 200 // width, y * 200 // height, (x + y) * 100 // (width + height) + 50], -1).astype(np.int16)
    frames = []
    for index in range(count):
        image = base.copy()
        left = (index * 23) % (width - 200)
        image[height // 3 : height // 3 + 250, left : left + 200] = (30, 160, 40)
        image += rng.integers(-NOISE, NOISE + 1, image.shape, dtype=np.int16)
        frames.append(np.clip(image, 0, 255).astype(np.uint8))
    return frames


class Driver(Node):
    def __init__(self, width, height):
        super().__init__("bench_driver", namespace="/bench")
        self.messages = [rgb_to_image_msg(frame) for frame in scene(width, height, 30)]
        self.published = 0
        self.state = {}
        self.camera = self.create_publisher(Image, "camera", 5)
        self.cmd_vel = self.create_publisher(Twist, "cmd_vel", 10)
        self.create_subscription(String, "recorder_node/state", lambda m: setattr(self, "state", json.loads(m.data)),
                                 QoSProfile(depth=1, durability=DurabilityPolicy.TRANSIENT_LOCAL))
        self.create_timer(1 / 30, self.publish_frame)
        self.create_timer(1 / 20, self.publish_command)
        self.start = self.create_client(Trigger, "recorder_node/start")
        self.stop = self.create_client(Trigger, "recorder_node/stop")

    def publish_frame(self):
        msg = self.messages[self.published % len(self.messages)]
        msg.header.stamp = self.get_clock().now().to_msg()
        self.camera.publish(msg)
        self.published += 1

    def publish_command(self):
        twist = Twist()
        twist.linear.x = 0.4 * np.sin(time.monotonic())
        twist.linear.y = 0.4 * np.cos(time.monotonic())
        self.cmd_vel.publish(twist)

    def call(self, client):
        assert client.wait_for_service(timeout_sec=20)
        future = client.call_async(Trigger.Request())
        deadline = time.monotonic() + 60
        while not future.done() and time.monotonic() < deadline:
            time.sleep(0.01)
        return future.result()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--width", type=int, default=1280)
    parser.add_argument("--height", type=int, default=720)
    parser.add_argument("--rate", type=float, default=10.0, help="recorder sample rate")
    args = parser.parse_args()
    os.environ.setdefault("ROS_DOMAIN_ID", str(100 + os.getpid() % 100))
    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    output = Path(tempfile.mkdtemp(prefix="bench_recorder_"))
    recorder = subprocess.Popen(
        [sys.executable, "-m", "mobile_vla_ros.nodes.recorder_node", "--ros-args", "-r", "__ns:=/bench",
         "-p", f"output_dir:={output}", "-p", "image_topic:=camera", "-p", "instruction:=left",
         "-p", f"sample_rate_hz:={args.rate}"],
        env=os.environ.copy(),
    )
    rclpy.init()
    driver = Driver(args.width, args.height)
    executor = SingleThreadedExecutor()
    executor.add_node(driver)
    thread = threading.Thread(target=executor.spin, daemon=True)
    thread.start()
    try:
        time.sleep(3.0)  # discovery and a full camera pipeline
        response = driver.call(driver.start)
        if not response.success:
            print(f"start refused: {response.message}")
            return 1
        cpu_start, wall_start, published_before = cpu_seconds(recorder.pid), time.monotonic(), driver.published
        time.sleep(args.seconds)
        cpu_recording = cpu_seconds(recorder.pid) - cpu_start
        wall = time.monotonic() - wall_start
        camera_rate = (driver.published - published_before) / wall
        response = driver.call(driver.stop)
        print(response.message)
        saved = [path for path in output.glob("*.h5")]
        if not saved:
            print("no episode saved")
            return 1
        episode = read_episode(saved[0], frame_indices=[])
        gaps = np.diff(episode.timestamps)
        expected = wall * args.rate
        size_mb = saved[0].stat().st_size / 1e6
        print(f"camera: {args.width}x{args.height} rgb8 published at {camera_rate:.1f} Hz for {wall:.1f} s")
        print(f"episode: {episode.num_frames} frames (expected {expected:.0f} at {args.rate:g} Hz), "
              f"camera_lag flags {int(episode.flags['camera_lag'].sum())}, dropped samples "
              f"{driver.state.get('dropped_samples')}, stamp gap mean {gaps.mean() * 1000:.0f} ms max {gaps.max() * 1000:.0f} ms")
        print(f"file: {size_mb:.0f} MB ({size_mb / episode.num_frames:.2f} MB/frame) in {saved[0]}")
        print(f"recorder CPU while recording: {100 * cpu_recording / wall:.0f}% of one core "
              f"({os.cpu_count()} cores on this machine)")
        ok = abs(episode.num_frames - expected) <= 2 and not episode.flags["camera_lag"].any()
        print("RESULT:", "keeps up, no dropped samples" if ok else "FELL BEHIND")
        return 0 if ok else 1
    finally:
        recorder.terminate()
        recorder.wait(timeout=30)
        executor.shutdown()
        thread.join(timeout=5)
        rclpy.try_shutdown()


if __name__ == "__main__":
    sys.exit(main())

"""`mobile-vla bench-record`: does recorder_node keep up with a 30 Hz camera while recording?

    mobile-vla bench-record --width 1280 --height 720 --seconds 60 [--compressed] [--json OUT]
        [--dds-profile config/fastdds_large_frames.xml]

Runs recorder_node as its own process (as on the robot) and, from this process, publishes
camera-like frames that change every frame at --camera-rate (sensor_msgs/Image rgb8, or JPEG
sensor_msgs/CompressedImage with --compressed) and cmd_vel at 20 Hz over DDS; records one episode
through the ~/start and ~/stop services, then reads the file and prints the figures below. The
frames are serialized once and published as bytes with a fresh stamp, as cheaply as a C++ camera
driver would (rclpy's own conversion of a 720p Image takes ~150 ms, which would starve the
recorder of the CPU it is measured on).

    samples   frames stored (expected: seconds x sample rate, +-1 for the timer's phase)
    dropped   sample periods the recorder's timer missed (it was busy) + samples it could not store
    lagged    stored samples flagged camera_lag (the frame was not fresh when sampled)
    lag       age of the sampled frames (capture stamp to sampling), p50 / p99, from the recorder
    delivery  age of every received frame (capture stamp to the recorder's callback): the DDS
              transport's and the recorder's executor's share of the lag
    CPU       the recorder process's CPU time / wall time while recording
    dds       the RMW implementation and the Fast DDS XML profile both processes loaded (if any)

Exit status 0 when nothing was dropped or lagged, 1 otherwise.
"""

from __future__ import annotations

import argparse
import json
import os
import struct
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from mobile_vla_ros.cli.options import add_deprecated_flag
from mobile_vla_ros.ros_domain import use_private_domain

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
DISTINCT_FRAMES = 30  # published in a loop; each differs from the one before


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "bench-record",
        help="recorder_node throughput at a given camera resolution",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--width", type=int, default=1280, help="frame width in pixels")
    parser.add_argument("--height", type=int, default=720, help="frame height in pixels")
    parser.add_argument("--seconds", type=float, default=60.0, help="length of the recorded episode")
    parser.add_argument("--compressed", action="store_true", help="publish JPEG sensor_msgs/CompressedImage")
    parser.add_argument("--camera-rate", type=float, default=30.0, help="camera frames per second")
    parser.add_argument("--sample-rate", type=float, default=10.0, help="the recorder's sample rate in Hz")
    add_deprecated_flag(parser, "--rate", "--sample-rate", "sample_rate", "bench-record", type=float)
    parser.add_argument(
        "--camera-qos",
        choices=("reliable", "best_effort"),
        default="reliable",
        help="reliability of the camera publisher (camera drivers differ)",
    )
    parser.add_argument("--noise", type=int, default=2, help="sensor noise in grey levels (harder to compress)")
    parser.add_argument(
        "--dds-profile",
        type=Path,
        help="Fast DDS XML profile for both processes (FASTDDS_DEFAULT_PROFILES_FILE; default: the environment's)",
    )
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument("--keep", type=Path, help="record into this directory and keep the episode")
    parser.set_defaults(func=run)


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime + stime


def _camera_messages(args) -> list[bytearray]:
    """Serialized (CDR) camera messages; the stamp is bytes 4..12 (after the encapsulation header)."""
    from rclpy.serialization import serialize_message
    from sensor_msgs.msg import CompressedImage

    from mobile_vla_ros.data.images import encode_jpeg
    from mobile_vla_ros.nodes.ros_image import rgb_to_image_msg
    from mobile_vla_ros.training.synthetic import camera_frames

    messages = []
    for frame in camera_frames(args.width, args.height, DISTINCT_FRAMES, noise=args.noise):
        if args.compressed:
            message = CompressedImage(format="jpeg")
            message.data = encode_jpeg(frame)
        else:
            message = rgb_to_image_msg(frame)
        messages.append(bytearray(serialize_message(message)))
    return messages


def _driver(args):
    """The camera + teleop stand-in: publishes frames and commands, calls the recorder's services."""
    from geometry_msgs.msg import Twist
    from rclpy.node import Node
    from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import CompressedImage, Image
    from std_msgs.msg import String
    from std_srvs.srv import Trigger

    class Driver(Node):
        def __init__(self):
            super().__init__("bench_driver", namespace="/bench")
            self.messages = _camera_messages(args)
            self.published = 0
            self.publish_times: list[float] = []
            self.state: dict = {}
            reliability = ReliabilityPolicy.RELIABLE if args.camera_qos == "reliable" else ReliabilityPolicy.BEST_EFFORT
            self.camera = self.create_publisher(
                CompressedImage if args.compressed else Image, "camera", QoSProfile(depth=5, reliability=reliability)
            )
            self.cmd_vel = self.create_publisher(Twist, "cmd_vel", 10)
            self.create_subscription(
                String,
                "recorder_node/state",
                self._on_state,
                QoSProfile(depth=1, durability=DurabilityPolicy.TRANSIENT_LOCAL),
            )
            self.create_timer(1 / args.camera_rate, self.publish_frame)
            self.create_timer(1 / 20, self.publish_command)
            self.start = self.create_client(Trigger, "recorder_node/start")
            self.stop = self.create_client(Trigger, "recorder_node/stop")

        def _on_state(self, msg):
            self.state = json.loads(msg.data)

        def publish_frame(self):
            raw = self.messages[self.published % len(self.messages)]
            stamp = self.get_clock().now().nanoseconds
            struct.pack_into("<iI", raw, 4, stamp // 10**9, stamp % 10**9)  # header.stamp, little-endian CDR
            self.camera.publish(bytes(raw))
            self.published += 1
            self.publish_times.append(time.monotonic())

        def publish_command(self):
            twist = Twist()
            twist.linear.x = 0.3 + 0.1 * np.sin(time.monotonic())
            twist.linear.y = 0.3 * np.cos(time.monotonic())
            self.cmd_vel.publish(twist)

        def call(self, client, timeout_s=60.0):
            if not client.wait_for_service(timeout_sec=20):
                raise RuntimeError(f"{client.srv_name} is not available (did recorder_node start?)")
            future = client.call_async(Trigger.Request())
            deadline = time.monotonic() + timeout_s
            while not future.done() and time.monotonic() < deadline:
                time.sleep(0.01)
            if not future.done():
                raise RuntimeError(f"{client.srv_name} did not answer within {timeout_s:.0f} s")
            return future.result()

    return Driver()


def run(args) -> int:
    if args.dds_profile is not None:
        if not args.dds_profile.is_file():
            print(f"--dds-profile {args.dds_profile}: no such file")
            return 2
        os.environ["FASTDDS_DEFAULT_PROFILES_FILE"] = str(args.dds_profile.resolve())
    domain = use_private_domain()  # its own graph: another bench or demo on this machine never meets it
    print(f"private ROS graph: domain {domain.domain_id}, localhost only", flush=True)
    env = dict(os.environ)  # set before rclpy.init(): the recorder and this process use the same DDS set-up

    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.utilities import get_rmw_implementation_identifier

    from mobile_vla_ros.data.episode import read_episode
    from mobile_vla_ros.nodes.node_specs import NodeSpec, node_command

    output = args.keep or Path(tempfile.mkdtemp(prefix="bench_record_"))
    output.mkdir(parents=True, exist_ok=True)
    recorder_node = NodeSpec(
        "recorder_node",
        {
            "output_dir": str(output),
            "instruction": "left",
            "sample_rate_hz": args.sample_rate,
            "compressed": args.compressed,
        },
        [("image/compressed" if args.compressed else "image", "camera")],
        namespace="/bench",
    )
    params_dir = tempfile.TemporaryDirectory(prefix="bench_record_params_")  # read as the recorder starts
    recorder = subprocess.Popen(node_command(recorder_node, params_dir.name, log_level="warn"), env=env)
    rclpy.init()
    driver = _driver(args)
    executor = SingleThreadedExecutor()
    executor.add_node(driver)
    thread = threading.Thread(target=executor.spin, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while driver.state.get("camera_age_s") is None and time.monotonic() < deadline:
            time.sleep(0.1)  # discovery, and the first frames through
        published_before = driver.published  # the recorder counts what it receives from its start on
        response = driver.call(driver.start)
        if not response.success:
            print(f"start refused: {response.message}")
            return 1
        cpu_start, wall_start, rate_before = cpu_seconds(recorder.pid), time.monotonic(), driver.published
        time.sleep(args.seconds)
        cpu_recording = cpu_seconds(recorder.pid) - cpu_start
        wall = time.monotonic() - wall_start
        gaps = np.diff([t for t in driver.publish_times if t >= wall_start])
        camera_hz = (driver.published - rate_before) / wall
        response = driver.call(driver.stop)
        published = driver.published - published_before
        if not response.success:
            print(f"stop failed: {response.message}")
            return 1
        state_deadline = time.monotonic() + 5
        while driver.state.get("state") != "idle" and time.monotonic() < state_deadline:
            time.sleep(0.05)
        state = dict(driver.state)
    finally:
        recorder.terminate()
        recorder.wait(timeout=30)
        params_dir.cleanup()
        executor.shutdown()
        thread.join(timeout=5)
        rclpy.try_shutdown()

    [path] = sorted(output.glob("*.h5"))[-1:]
    episode = read_episode(path, frame_indices=[])
    expected = int(round(wall * args.sample_rate))
    figures = {
        "width": args.width,
        "height": args.height,
        "compressed": args.compressed,
        "camera_qos": args.camera_qos,
        "seconds": round(wall, 1),
        "camera_published_hz": round(camera_hz, 1),
        "camera_received": state.get("frames_received"),
        "camera_published": published,
        "samples": episode.num_frames,
        "expected_samples": expected,
        "dropped": state.get("missed_samples", 0) + state.get("dropped_samples", 0),
        "lagged": int(episode.flags["camera_lag"].sum()),
        # the camera itself (this process's publisher) went silent longer than a sample period
        "camera_stalls": int((gaps > 1 / args.sample_rate).sum()),
        "camera_gap_ms_max": round(float(gaps.max()) * 1e3, 1),
        "lag_ms_p50": state.get("sample_lag_ms_p50"),
        "lag_ms_p99": state.get("sample_lag_ms_p99"),
        "delivery_ms_p50": state.get("delivery_ms_p50"),
        "delivery_ms_p99": state.get("delivery_ms_p99"),
        "recorder_cpu_percent": round(100 * cpu_recording / wall, 1),
        "cores": os.cpu_count(),
        "rmw": get_rmw_implementation_identifier(),
        "dds_profile": env.get("FASTDDS_DEFAULT_PROFILES_FILE"),
        "file_mb": round(path.stat().st_size / 1e6, 1),
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "quality": [verdict.code for verdict in episode.stored_verdicts or []],
    }
    encoding = "JPEG CompressedImage" if args.compressed else "rgb8 Image"
    print(
        f"camera   {args.width}x{args.height} {encoding} ({args.camera_qos}) published at "
        f"{figures['camera_published_hz']} Hz for {wall:.1f} s; the recorder received "
        f"{figures['camera_received']} of {published}"
    )
    print(f"samples  {figures['samples']} (expected {expected} at {args.sample_rate:g} Hz)")
    print(f"dropped  {figures['dropped']}")
    print(
        f"lagged   {figures['lagged']} (camera stalls over {1e3 / args.sample_rate:.0f} ms on the publisher side: "
        f"{figures['camera_stalls']}, longest publishing gap {figures['camera_gap_ms_max']} ms)"
    )
    print(f"lag      p50 {figures['lag_ms_p50']} ms, p99 {figures['lag_ms_p99']} ms (capture to sampling)")
    print(
        f"delivery p50 {figures['delivery_ms_p50']} ms, p99 {figures['delivery_ms_p99']} ms "
        "(capture to the recorder's callback)"
    )
    print(
        f"CPU      recorder {figures['recorder_cpu_percent']}% of one core ({figures['cores']} cores); "
        f"load average {figures['load_average']}"
    )
    print(f"file     {figures['file_mb']} MB, quality verdicts: {figures['quality'] or 'none'}")
    print(f"dds      {figures['rmw']}, profile: {figures['dds_profile'] or 'none (Fast DDS defaults)'}")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")
    if not args.keep:
        path.unlink()
    return 0 if figures["dropped"] == 0 and figures["lagged"] == 0 else 1

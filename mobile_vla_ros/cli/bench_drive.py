"""`mobile-vla bench-drive`: the real camera window and inference nodes in one process with a
(full-size, random-weight by default) policy on the CPU, measuring whether the control loop keeps
its rate while Kosmos-2 runs — Python threads share one interpreter lock, and a control loop that
stalls while the model runs is a robot that jerks."""

from __future__ import annotations

import json
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from mobile_vla_ros.cli.options import add_base_model, add_device, add_dtype


def register(subparsers) -> None:
    parser = subparsers.add_parser("bench-drive", help="control-loop period and command age with the model running")
    add_base_model(
        parser, default="full-random", help="Kosmos-2 directory or 'full-random' (saved to a scratch directory first)"
    )
    add_dtype(parser)
    add_device(parser)
    parser.add_argument("--seconds", type=float, default=60.0, help="measurement time after the first chunk")
    parser.add_argument("--control-rate", type=float, default=20.0, help="inference_node control rate in Hz")
    parser.add_argument(
        "--max-new-frames",
        type=int,
        default=1,
        help="inference_node max_new_frames_per_step (8 = encode every new frame, the old behaviour)",
    )
    parser.add_argument("--json", help="write the figures to this JSON file")
    parser.set_defaults(func=run)


def _prepare_checkpoint(base_model: str, dtype: str, scratch: Path) -> tuple[Path, Path]:
    """Save the base (for full-random) and a freshly initialised policy like a trained one."""
    import torch

    from mobile_vla_ros.policy.backbone import FULL_RANDOM, load_base_model, torch_dtype
    from mobile_vla_ros.policy.benchmark import save_full_random_base
    from mobile_vla_ros.policy.checkpoint import save_policy
    from mobile_vla_ros.policy.config import PolicyConfig
    from mobile_vla_ros.policy.instructions import LAB_INSTRUCTIONS
    from mobile_vla_ros.policy.model import VLAPolicy

    base_dir = Path(base_model)
    if base_model == FULL_RANDOM:
        base_dir = save_full_random_base(scratch / "kosmos2-full-random", torch_dtype(dtype))
    torch.manual_seed(0)
    policy = VLAPolicy(
        PolicyConfig(instructions=tuple(LAB_INSTRUCTIONS.values())), load_base_model(base_dir, dtype=torch_dtype(dtype))
    )
    model_dir = save_policy(policy, scratch / "policy")
    del policy
    return model_dir, base_dir


def _percentiles(values_s) -> dict:
    ms = np.asarray(values_s) * 1000.0
    return {q: float(np.percentile(ms, int(q[1:]))) for q in ("p50", "p95", "p99")} if ms.size else {}


def run(args) -> int:
    import rclpy
    from geometry_msgs.msg import Twist
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.node import Node
    from rclpy.parameter import Parameter
    from rclpy.qos import qos_profile_sensor_data
    from sensor_msgs.msg import Image

    from mobile_vla_ros.control.latency import STAGES
    from mobile_vla_ros.nodes.camera_window_node import CameraWindowNode
    from mobile_vla_ros.nodes.inference_node import InferenceNode
    from mobile_vla_ros.nodes.ros_image import rgb_to_image_msg
    from mobile_vla_ros.policy.backbone import resolve_device, resolve_dtype
    from mobile_vla_ros.ros_domain import use_private_domain

    args.dtype, why = resolve_dtype(args.dtype, resolve_device(args.device))
    print(f"dtype {args.dtype}: {why}", flush=True)
    scratch = Path(tempfile.mkdtemp(prefix="mobile_vla_bench_drive_"))
    print(f"preparing a {args.dtype} policy on {args.base_model} in {scratch} ...", flush=True)
    model_dir, base_dir = _prepare_checkpoint(args.base_model, args.dtype, scratch)

    print(f"private ROS graph: domain {use_private_domain().domain_id}, localhost only", flush=True)
    rclpy.init()
    probe = Node("bench_drive_probe")
    frames = np.random.default_rng(0).integers(0, 256, (30, 480, 640, 3), dtype=np.uint8)
    arrivals: list[float] = []
    counter = {"frame": 0}
    camera_pub = probe.create_publisher(Image, "image", qos_profile_sensor_data)

    def publish_frame():
        # A real camera never repeats a frame bit for bit: 30 stored frames cycling unchanged would
        # hit the runner's per-frame cache by accident (free steps, stale matches), so each frame
        # is XOR-ed with its cycle count (unique for 256 s).
        counter["frame"] += 1
        frame = frames[counter["frame"] % len(frames)] ^ np.uint8(counter["frame"] // len(frames) % 256)
        camera_pub.publish(rgb_to_image_msg(frame, probe.get_clock().now().to_msg()))

    probe.create_timer(1 / 30.0, publish_frame)
    probe.create_subscription(Twist, "cmd_vel", lambda _: arrivals.append(time.perf_counter()), 100)
    camera = CameraWindowNode(parameter_overrides=[Parameter("model_dir", value=str(model_dir))])
    print("loading the inference node ...", flush=True)
    inference = InferenceNode(
        parameter_overrides=[
            Parameter("model_dir", value=str(model_dir)),
            Parameter("base_model_dir", value=str(base_dir)),
            Parameter("device", value=args.device),
            Parameter("dtype", value=args.dtype),
            Parameter("control_rate_hz", value=args.control_rate),
            Parameter("start_enabled", value=True),
            Parameter("max_new_frames_per_step", value=args.max_new_frames),
            # A random head's chunk goes stale before the next one on a slow CPU: measure the loop, not the policy.
            Parameter("chunk_stale_timeout_s", value=600.0),
            Parameter("camera_stale_timeout_s", value=600.0),
        ]
    )
    # Each node on its own executor thread, as separate processes would be (the GIL stays shared).
    executors, spinners = [], []
    for node in (probe, camera, inference):
        executor = SingleThreadedExecutor()  # the multi-threaded executor's wait loop costs interpreter time
        executor.add_node(node)
        spinners.append(threading.Thread(target=executor.spin, daemon=True))
        spinners[-1].start()
        executors.append(executor)
    try:
        print("waiting for the first chunk ...", flush=True)
        while inference.status_values()["inference_latency_ms_p50"] == "":
            time.sleep(0.2)
        start = time.perf_counter()
        arrivals.clear()
        print(f"measuring for {args.seconds:.0f} s ...", flush=True)
        time.sleep(args.seconds)
        stamps = [t for t in arrivals if t >= start]
        status = inference.status_values()
    finally:
        inference.stop()
        for executor in executors:
            executor.shutdown()
        for spinner in spinners:  # no callback may run on a node destroyed below
            spinner.join(timeout=5.0)
        for node in (inference, camera, probe):
            node.destroy_node()
        rclpy.try_shutdown()
    period = _percentiles(np.diff(stamps))
    nominal_ms = 1000.0 / args.control_rate
    result = {
        "base_model": args.base_model,
        "dtype": args.dtype,
        "device": args.device,
        "seconds": args.seconds,
        "control_rate_hz_nominal": args.control_rate,
        "control_rate_hz_measured": (len(stamps) - 1) / (stamps[-1] - stamps[0]) if len(stamps) > 1 else 0.0,
        "control_period_ms": period,
        "control_period_p99_over_nominal": period.get("p99", float("nan")) / nominal_ms,
        "max_new_frames": args.max_new_frames,
        **{key: float(value or "nan") for key, value in status.items() if "_ms_p" in key},
        **{key: int(status[key]) for key in ("chunks", "encoded_frames", "held_frames", "skipped_windows")},
        "commands": len(stamps),
    }
    result["inference_p95_over_p50"] = result["inference_latency_ms_p95"] / result["inference_latency_ms_p50"]
    print(
        f"control loop: {result['control_rate_hz_measured']:.2f} Hz (nominal {args.control_rate:.0f}), period "
        f"p50 {period.get('p50', float('nan')):.1f} ms, p99 {period.get('p99', float('nan')):.1f} ms "
        f"({result['control_period_p99_over_nominal']:.2f}x nominal)"
    )
    print(
        f"inference latency p50 {result['inference_latency_ms_p50']:.0f} ms, "
        f"p95 {result['inference_latency_ms_p95']:.0f} ms; "
        f"observation-to-command age p50 {result['obs_to_cmd_age_ms_p50']:.0f} ms, "
        f"p95 {result['obs_to_cmd_age_ms_p95']:.0f} ms"
    )
    print(
        f"p95 / p50 of inference: {result['inference_p95_over_p50']:.2f}; {result['encoded_frames']} frames encoded "
        f"in {result['chunks']} steps ({result['held_frames']} held)"
    )
    print(
        "stages p50 / p95 / p99 ms: "
        + "; ".join(
            f"{stage} {status[stage + '_ms_p50']}/{status[stage + '_ms_p95']}/{status[stage + '_ms_p99']}"
            for stage in STAGES
        )
    )
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    return 0

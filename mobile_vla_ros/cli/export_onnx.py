"""`mobile-vla export-onnx`: the policy's frame encoder (Kosmos-2, LoRA merged, up to the action
token) as an ONNX graph for ONNX Runtime or TensorRT, checked against PyTorch before it is kept.

    mobile-vla export-onnx runs/policy --base-model models/kosmos-2-patch14-224 --data episodes/
    ros2 launch mobile_vla_ros drive.launch.py model_dir:=runs/policy ... backend:=onnxruntime

The graph and its weights go to --out (default MODEL_DIR/onnx, where backend onnxruntime looks).
The check compares ONNX Runtime's features with PyTorch's on a window of real frames (the first
episode in --data) or, without --data, on camera-like synthetic frames.
"""

from __future__ import annotations

import argparse
from pathlib import Path

CHECK_FRAMES = 8  # one window


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "export-onnx",
        help="export the frame encoder as ONNX (checked against PyTorch)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("model_dir", type=Path, help="trained policy directory")
    parser.add_argument("--base-model", required=True, type=Path, help="the local Kosmos-2 it was trained on")
    parser.add_argument("--out", type=Path, help="export directory (default: MODEL_DIR/onnx)")
    parser.add_argument("--data", type=Path, help="episode directory whose first episode's frames check the export")
    parser.set_defaults(func=run)


def _check_frames(data: Path | None, size: int):
    import h5py
    import numpy as np

    from mobile_vla_ros.data.episode import list_episodes, read_frames
    from mobile_vla_ros.data.images import resize_for_model
    from mobile_vla_ros.errors import DatasetError
    from mobile_vla_ros.training.synthetic import camera_frames

    if data is None:
        return np.stack(list(camera_frames(size, size, CHECK_FRAMES, noise=2)))
    episodes = list_episodes(data)
    if not episodes:
        raise DatasetError(f"no episodes in {data}")
    with h5py.File(episodes[0], "r") as h5:
        count = min(CHECK_FRAMES, len(h5["images"]))
    return np.stack(read_frames(episodes[0], range(count), lambda frame: resize_for_model(frame, size)))


def run(args) -> int:
    from mobile_vla_ros.policy.checkpoint import load_policy
    from mobile_vla_ros.policy.onnx_encoder import export_frame_encoder, policy_identity

    out = args.out or args.model_dir / "onnx"
    policy = load_policy(args.model_dir, args.base_model)
    frames = _check_frames(args.data, policy.config.image_size)
    print(f"exporting the frame encoder of {args.model_dir} to {out} ...", flush=True)
    identity = policy_identity(args.model_dir, policy.config.base_model["fingerprint"])
    record = export_frame_encoder(policy, out, frames, identity)
    check = record["check"]
    print(
        f"exported in {record['export_s']:.0f} s; ONNX Runtime vs PyTorch on {check['frames']} frames: largest "
        f"difference {check['max_relative_difference']:.1e} of the largest feature (tolerance {check['tolerance']:g})"
    )
    print(f"drive with it: backend:=onnxruntime (onnx_dir defaults to MODEL_DIR/onnx; this export: {out})")
    return 0

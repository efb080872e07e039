"""`mobile-vla export-onnx`: the policy's frame encoder (Kosmos-2, LoRA merged, up to the action
token) as an ONNX graph for ONNX Runtime or TensorRT, checked against PyTorch before it is kept.

    mobile-vla export-onnx --model runs/policy --base-model models/kosmos-2-patch14-224 --data episodes/
    ros2 launch mobile_vla_ros drive.launch.py model_dir:=runs/policy ... backend:=onnxruntime

The graph and its weights go to --out (default MODEL_DIR/onnx, where backend onnxruntime looks).
The check compares ONNX Runtime's features with PyTorch's on a window of real frames (the first
episode in --data) or, without --data, on camera-like synthetic frames.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from mobile_vla_ros.cli.options import (
    TRAINED_ON_HELP,
    add_base_model,
    add_data,
    add_model,
    add_moved_positional,
    add_out,
)

CHECK_FRAMES = 8  # one window


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "export-onnx",
        help="export the frame encoder as ONNX (checked against PyTorch)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_model(parser, type=Path)
    add_moved_positional(parser, "model_dir", "--model", "export-onnx", type=Path)
    add_base_model(parser, help=TRAINED_ON_HELP)
    add_out(parser, type=Path, help="export directory (default: MODEL_DIR/onnx)")
    add_data(parser, repeatable=False, type=Path, help="episodes whose first episode's frames check the export")
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
    from mobile_vla_ros.training.evaluate import resolve_base_model_dir

    out = args.out or args.model / "onnx"
    policy = load_policy(args.model, resolve_base_model_dir(args.model, args.base_model))
    frames = _check_frames(args.data, policy.config.image_size)
    print(f"exporting the frame encoder of {args.model} to {out} ...", flush=True)
    identity = policy_identity(args.model, policy.config.base_model["fingerprint"])
    record = export_frame_encoder(policy, out, frames, identity)
    check = record["check"]
    print(
        f"exported in {record['export_s']:.0f} s; ONNX Runtime vs PyTorch on {check['frames']} frames: largest "
        f"difference {check['max_relative_difference']:.1e} of the largest feature (tolerance {check['tolerance']:g})"
    )
    print(f"drive with it: backend:=onnxruntime (onnx_dir defaults to MODEL_DIR/onnx; this export: {out})")
    return 0

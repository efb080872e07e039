"""`mobile-vla quantize`: store a checkpoint's backbone as int8 once, so the robot loads it small."""

from __future__ import annotations

import resource


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "quantize", help="add an int8 backbone to a policy checkpoint (loads without an fp32 copy)"
    )
    parser.add_argument("model_dir", help="policy checkpoint directory (policy.json + safetensors)")
    parser.add_argument("--base-model", required=True, help="the Kosmos-2 directory the policy was trained on")
    parser.add_argument("--dtype", default="int8", choices=("int8",), help="weight type (int8: CPU, per-channel)")
    parser.add_argument(
        "--out", required=True, help="new checkpoint directory: a copy of MODEL_DIR + the int8 backbone"
    )
    parser.set_defaults(func=run)


def run(args) -> int:
    from mobile_vla_ros.policy.quantize import INT8_BACKBONE_FILE, write_int8_checkpoint

    print(
        f"loading {args.model_dir} in fp32 and converting its backbone to {args.dtype}, layer by layer ...", flush=True
    )
    out = write_int8_checkpoint(args.model_dir, args.base_model, args.out)
    size_mb = (out / INT8_BACKBONE_FILE).stat().st_size / 2**20
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    print(
        f"written {out / INT8_BACKBONE_FILE} ({size_mb:.0f} MB; conversion peak RSS {peak_mb:.0f} MB). "
        f"Drive it with quantize:=int8 (dtype fp32, device cpu) and model_dir:={out}"
    )
    return 0

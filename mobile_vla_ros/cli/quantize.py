"""`mobile-vla quantize`: store a checkpoint's backbone as int8 once, so the robot loads it small."""

from __future__ import annotations

import resource

from mobile_vla_ros.cli.options import (
    TRAINED_ON_HELP,
    add_base_model,
    add_deprecated_flag,
    add_model,
    add_moved_positional,
    add_out,
)


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "quantize", help="add an int8 backbone to a policy checkpoint (loads without an fp32 copy)"
    )
    add_model(parser)
    add_moved_positional(parser, "model_dir", "--model", "quantize")
    add_base_model(parser, help=TRAINED_ON_HELP)
    parser.add_argument("--quantize", default="int8", choices=("int8",), help="weight type (int8: CPU, per-channel)")
    add_deprecated_flag(parser, "--dtype", "--quantize", "quantize", "quantize", choices=("int8",))
    add_out(parser, required=True, help="new checkpoint directory: a copy of MODEL_DIR + the int8 backbone")
    parser.set_defaults(func=run)


def run(args) -> int:
    from mobile_vla_ros.policy.quantize import INT8_BACKBONE_FILE, write_int8_checkpoint
    from mobile_vla_ros.training.evaluate import resolve_base_model_dir

    print(
        f"loading {args.model} in fp32 and converting its backbone to {args.quantize}, layer by layer ...", flush=True
    )
    out = write_int8_checkpoint(args.model, resolve_base_model_dir(args.model, args.base_model), args.out)
    size_mb = (out / INT8_BACKBONE_FILE).stat().st_size / 2**20
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    print(
        f"written {out / INT8_BACKBONE_FILE} ({size_mb:.0f} MB; conversion peak RSS {peak_mb:.0f} MB). "
        f"Drive it with quantize:=int8 (dtype fp32, device cpu) and model_dir:={out}"
    )
    return 0

"""`mobile-vla bench`: policy step latency (bare forward / full-window / incremental) and memory."""

from __future__ import annotations

import json
from pathlib import Path

from mobile_vla_ros.cli.options import add_base_model, add_device, add_dtype


def register(subparsers) -> None:
    parser = subparsers.add_parser("bench", help="measure the policy step latency and peak memory")
    add_base_model(parser, required=True, help="Kosmos-2 directory, or 'full-random' (full size, random weights)")
    parser.add_argument("--tokenizer", help="tokenizer directory for full-random (default: a locally trained one)")
    add_device(parser)
    add_dtype(parser)
    parser.add_argument(
        "--quantize",
        default="none",
        choices=("none", "int8"),
        help="int8: dynamic int8 Linear weights (CPU, from fp32)",
    )
    parser.add_argument(
        "--backend",
        default="pytorch",
        choices=("pytorch", "onnxruntime"),
        help="onnxruntime: also export the policy and time ONNX Runtime's cached step in the same run",
    )
    parser.add_argument("--repeats", type=int, default=5, help="timed steps per measurement")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps before each measurement")
    parser.add_argument("--json", help="write the figures to this JSON file")
    parser.set_defaults(func=run)


def run(args) -> int:
    from mobile_vla_ros.policy.benchmark import format_table, run_benchmark

    result = run_benchmark(
        args.base_model,
        device=args.device,
        dtype=args.dtype,
        repeats=args.repeats,
        warmup=args.warmup,
        tokenizer_dir=args.tokenizer,
        quantize=args.quantize,
        backend=args.backend,
    )
    print(format_table(result))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
        print(f"written {args.json}")
    return 0

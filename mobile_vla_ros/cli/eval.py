"""`mobile-vla eval`: replay episodes through the policy as the robot runs it and report MAE,
linear_y sign accuracy, left/right instruction separation and feature cosine."""

from __future__ import annotations

from mobile_vla_ros.cli.options import (
    DTYPES,
    TRAINED_ON_HELP,
    add_base_model,
    add_data,
    add_device,
    add_model,
    warn_deprecated,
)
from mobile_vla_ros.training.config import RuntimePrecisionSection

DEFAULT_DTYPES = ("fp32", "bf16", "fp16")


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "eval",
        help="evaluate a trained policy on episodes (incremental path, as on the robot)",
        description="Replays every episode through PolicyRunner with its own instruction and, for left/right "
        "instructions, with both wordings on the same frames.",
    )
    add_model(parser, required=True)
    add_data(parser, required=True)
    add_base_model(parser, help=TRAINED_ON_HELP)
    add_device(parser)
    parser.add_argument(
        "--dtype",
        action="append",
        choices=(*DTYPES, "int8"),  # int8: an earlier spelling of --quantize int8
        metavar="{" + ",".join(DTYPES) + "}",
        help="backbone precision, repeatable (default: fp32, bf16 and fp16 side by side, each judged against "
        "fp32; auto: what this machine's hardware picks)",
    )
    parser.add_argument(
        "--quantize",
        choices=("int8",),
        help="also evaluate with dynamic int8 backbone weights (CPU), as drive.launch.py quantize:=int8 runs it",
    )
    parser.add_argument(
        "--tolerance",
        type=float,
        default=RuntimePrecisionSection().tolerance,
        help="a precision fails when its figures fall behind fp32's by more than this share (default: %(default)s)",
    )
    parser.add_argument(
        "--max-drift",
        type=float,
        default=RuntimePrecisionSection().max_drift,
        help="a precision fails when it moves the actions from fp32's by more than this share of fp32's own error "
        "(default: %(default)s)",
    )
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's; 1 suits the tiny model)")
    parser.add_argument("--json", metavar="OUT.json", help="write the report as JSON")
    parser.add_argument("--png", metavar="OUT.png", help="plot predicted vs recorded actions")
    parser.set_defaults(func=run)


def run(args) -> int:
    import json
    from pathlib import Path

    from mobile_vla_ros.policy.precision import REFERENCE_PRECISION
    from mobile_vla_ros.training.evaluate import evaluate, format_report, plot_replays
    from mobile_vla_ros.training.metrics import cpu_threads
    from mobile_vla_ros.training.precision_checks import compare_precisions, format_checks

    if "int8" in (args.dtype or ()):
        warn_deprecated("eval", "--dtype int8", "--quantize int8")
    dtypes = list(dict.fromkeys([*(args.dtype or DEFAULT_DTYPES), *([args.quantize] if args.quantize else [])]))
    reports, replays = {}, {}
    with cpu_threads(args.threads):
        for dtype in dtypes:
            report, replayed = evaluate(args.model, args.data, args.base_model, device=args.device, dtype=dtype)
            reports[report["dtype"]], replays[report["dtype"]] = report, replayed
    report = next(iter(reports.values()))
    print(format_report(report))
    if len(reports) > 1:
        report = {**report, "by_dtype": reports}
        if REFERENCE_PRECISION in reports:
            report["precision_checks"] = compare_precisions(reports, args.tolerance, args.max_drift, replays)
            print("\nat each backbone precision:")
            print("\n".join(format_checks(report["precision_checks"])))
            for dtype, check in report["precision_checks"].items():
                if not check["passed"]:
                    print(f"WARNING: at {dtype} the policy falls behind fp32: {'; '.join(check['behind'])}")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
        print(f"written {args.json}")
    if args.png:
        action_names = tuple(next(iter(report["mae"].values())))
        print(f"written {plot_replays(next(iter(replays.values())), action_names, args.png)}")
    return 0

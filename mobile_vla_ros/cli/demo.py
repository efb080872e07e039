"""`mobile-vla demo`: argument parsing only; the stages are mobile_vla_ros/demo (see its docstring)."""

from __future__ import annotations

import argparse
from pathlib import Path

import mobile_vla_ros.demo
from mobile_vla_ros.cli.options import DEVICE_HELP, add_deprecated_flag, add_device, add_dtype
from mobile_vla_ros.demo.corrections import run_corrections_demo
from mobile_vla_ros.demo.pipeline import TRAIN_MAX_STEPS, run_demo

REPO_ROOT = Path(__file__).resolve().parents[2]

# Defaults that differ with --corrections: (plain demo, corrections round). The corrections round
# starts from a deliberately weak policy: few demonstrations, short training.
DEFAULTS = {
    "episodes": (60, 6),
    "train_steps": (TRAIN_MAX_STEPS, 600),
}


def _default_dir(name: str) -> Path:
    """`name` in the source checkout (the demo's home), else in the current directory."""
    return (REPO_ROOT if (REPO_ROOT / "setup.py").is_file() else Path.cwd()) / name


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "demo",
        help="record, train and drive closed loop in the simulated room (no robot, no GPU)",
        description=mobile_vla_ros.demo.__doc__.split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--workdir",
        type=Path,
        default=_default_dir("models"),
        help="where the base model, episodes and policy are cached (default: %(default)s)",
    )
    parser.add_argument(
        "--out", type=Path, default=_default_dir("runs") / "demo", help="where the report goes (default: %(default)s)"
    )
    parser.add_argument(
        "--episodes",
        type=int,
        metavar="N",
        help="expert episodes per instruction (default: {}; with --corrections {})".format(*DEFAULTS["episodes"]),
    )
    parser.add_argument(
        "--train-steps",
        type=int,
        metavar="N",
        help="training steps (the demo trains by steps, so a slow or busy machine gets the same policy, only "
        "later; default: {}, with --corrections {})".format(*DEFAULTS["train_steps"]),
    )
    parser.add_argument("--trials", type=int, default=10, metavar="N", help="closed-loop trials per instruction")
    parser.add_argument(
        "--image-size", type=int, default=112, metavar="PX", help="input size of the tiny model (a multiple of 14)"
    )
    parser.add_argument(
        "--layout-seed", type=int, default=1, help="series of the trials' room layouts (not 0: training uses it)"
    )
    add_deprecated_flag(parser, "--seed", "--layout-seed", "layout_seed", "demo", type=int)
    add_device(parser, help=f"{DEVICE_HELP}; for training and driving")
    add_dtype(
        parser,
        default=None,
        help="backbone precision of the driving policy (default: drive.yaml's, auto: what the robot's "
        "hardware picks, bf16 on GPUs and on CPUs with native bf16)",
    )
    parser.add_argument("--fresh", action="store_true", help="rebuild every cached stage")
    corrections = parser.add_argument_group(
        "corrections", "--corrections: one round of takeovers by the scripted expert, fine-tuning, before/after"
    )
    corrections.add_argument(
        "--corrections",
        action="store_true",
        help="a weak policy, takeovers on training layouts recorded as corrections, fine-tuned, evaluated "
        "before and after (report: OUT/corrections.json)",
    )
    corrections.add_argument(
        "--correction-trials",
        type=int,
        default=10,
        metavar="N",
        help="closed-loop trials per instruction with the scripted person on training-series layouts",
    )
    corrections.add_argument(
        "--control",
        action="store_true",
        help="also fine-tune the weak policy the same way on the expert episodes alone and evaluate it "
        "(more training without corrections, for comparison)",
    )
    corrections.add_argument(
        "--finetune-steps", type=int, default=600, metavar="N", help="steps of `train --init-from` on the corrections"
    )
    parser.set_defaults(func=run)


def run(args) -> int:
    mode = 1 if args.corrections else 0
    for name, defaults in DEFAULTS.items():
        if getattr(args, name) is None:
            setattr(args, name, defaults[mode])
    return run_corrections_demo(args) if args.corrections else run_demo(args)

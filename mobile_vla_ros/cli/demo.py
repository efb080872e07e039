"""`mobile-vla demo`: argument parsing only; the stages are mobile_vla_ros/demo (see its docstring)."""

from __future__ import annotations

import argparse
from pathlib import Path

import mobile_vla_ros.demo
from mobile_vla_ros.demo.pipeline import TRAIN_MAX_STEPS, run_demo

REPO_ROOT = Path(__file__).resolve().parents[2]


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
    parser.add_argument("--episodes", type=int, default=60, metavar="N", help="expert episodes per instruction")
    parser.add_argument(
        "--train-steps",
        type=int,
        default=TRAIN_MAX_STEPS,
        metavar="N",
        help="training steps (the demo trains by steps, so a slow or busy machine gets the same policy, only later)",
    )
    parser.add_argument("--trials", type=int, default=10, metavar="N", help="closed-loop trials per instruction")
    parser.add_argument(
        "--image-size", type=int, default=112, metavar="PX", help="input size of the tiny model (a multiple of 14)"
    )
    parser.add_argument("--seed", type=int, default=1, help="layout series of the trials (not 0: training uses it)")
    parser.add_argument("--device", default="auto", help="torch device for training and driving")
    parser.add_argument("--fresh", action="store_true", help="rebuild every cached stage")
    parser.set_defaults(func=run)


def run(args) -> int:
    return run_demo(args)

"""`mobile-vla bench-train`: seconds per training step, throughput and peak memory of the real
training loop on a given base model (LoRA training on by default), and what a dataset would cost.

    mobile-vla bench-train --base-model full-random --steps 3 --json runs/bench_train.json

Defaults are the smallest useful batch (one clip of one window: 8 frames through Kosmos-2);
`--set` changes any training setting (e.g. trainer.gradient_checkpointing=true, trainer.precision=bf16-mixed).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def register(subparsers) -> None:
    from mobile_vla_ros.training.bench import LAB_EPISODES, LAB_FRAMES

    parser = subparsers.add_parser(
        "bench-train",
        help="seconds per training step, throughput and peak memory on a base model",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--base-model", required=True, help="Kosmos-2 directory, or 'full-random' (full size, random weights)"
    )
    parser.add_argument("--steps", type=int, default=3, help="training steps; the first is the warm-up (default 3)")
    parser.add_argument("--batch-size", type=int, default=1, help="clips per step (default 1)")
    parser.add_argument("--clip-length", type=int, default=1, help="windows per clip (default 1)")
    parser.add_argument("--config", metavar="YAML", help="overrides of config/train.yaml")
    parser.add_argument(
        "--set", action="append", default=[], metavar="SECTION.KEY=VALUE", help="one training setting (repeatable)"
    )
    parser.add_argument("--pairs", type=int, default=2, help="synthetic left/right episode pairs (default 2)")
    parser.add_argument("--frames", type=int, default=24, help="frames per synthetic episode (default 24)")
    parser.add_argument(
        "--dataset-episodes", type=int, default=LAB_EPISODES, help=f"for the estimate (default {LAB_EPISODES})"
    )
    parser.add_argument(
        "--dataset-frames", type=int, default=LAB_FRAMES, help=f"frames per episode, for the estimate ({LAB_FRAMES})"
    )
    parser.add_argument("--workdir", type=Path, help="kept; a full-random base saved there is reused next time")
    parser.add_argument("--json", type=Path, help="write the figures to this JSON file")
    parser.set_defaults(func=run)


def run(args) -> int:
    from mobile_vla_ros.training.bench import format_train_table, run_train_benchmark

    settings = [f"trainer.batch_size={args.batch_size}", f"data.clip_length={args.clip_length}", *args.set]
    result = run_train_benchmark(
        args.base_model,
        args.steps,
        settings,
        args.config,
        args.pairs,
        args.frames,
        args.dataset_episodes,
        args.dataset_frames,
        args.workdir,
    )
    print(format_train_table(result))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2) + "\n")
        print(f"written {args.json}")
    return 0

"""`mobile-vla train`: fine-tune the policy (LoRA + action token + head) on recorded episodes."""

from __future__ import annotations

import argparse

from mobile_vla_ros.cli.options import add_base_model, add_data, add_deprecated_flag, add_out

# flag -> (section.key, type, help): common settings get a flag named after their key in
# config/train.yaml, everything else `--set section.key=value`
FLAGS = {
    "max_steps": ("trainer.max_steps", int, "stop after this many optimizer steps"),
    "max_minutes": ("trainer.max_minutes", float, "stop after this much wall-clock time (a checkpoint is saved)"),
    "seed": ("trainer.seed", int, "seeds the split, the data order and the initialisation"),
    "batch_size": ("trainer.batch_size", int, "clips per step (a clip is up to data.clip_length windows)"),
    "accumulate_grad_batches": ("trainer.accumulate_grad_batches", int, "gradient accumulation steps"),
    "precision": ("trainer.precision", str, "32, bf16-mixed or 16-mixed"),
    "devices": ("trainer.devices", int, "number of devices; > 1 trains data-parallel (DDP)"),
    "strategy": ("trainer.strategy", str, "Lightning strategy, e.g. ddp"),
    "accelerator": ("trainer.accelerator", str, "auto, cpu or gpu"),
    "learning_rate": ("optim.learning_rate", float, "AdamW learning rate"),
    "val_fraction": ("data.val_fraction", float, "share of episodes held out per instruction"),
}
# Spellings of an earlier release, still accepted with a warning: old -> new flag.
DEPRECATED = {"--lr": "--learning-rate", "--accumulate": "--accumulate-grad-batches"}


def _yaml_default(key: str) -> str:
    """`key`'s value in config/train.yaml, for --help; "?" where the file cannot be found (an install
    space without a sourced workspace: help must still print)."""
    import yaml

    from mobile_vla_ros.paths import config_file

    section, name = key.split(".")
    try:
        return str(yaml.safe_load(config_file("train.yaml").read_text())[section][name])
    except (OSError, LookupError):
        return "?"


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "train",
        help="fine-tune the policy on H5 episodes (this package's or the lab's legacy files)",
        description="Fine-tune Kosmos-2 LoRA + action head on episodes. Defaults: config/train.yaml. "
        "The exported policy goes to --out; the resume checkpoint, metrics.csv and summary.json to OUT/training.",
    )
    add_data(parser)
    add_base_model(parser, help="local Kosmos-2 directory to build the policy on")
    add_out(parser, required=True, help="where the trained policy is written")
    parser.add_argument("--config", metavar="YAML", help="overrides of config/train.yaml (same layout, any subset)")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="SECTION.KEY=VALUE",
        help="one setting, e.g. --set policy.head.hidden_dim=64 (repeatable)",
    )
    parser.add_argument(
        "--init-from",
        metavar="MODEL_DIR",
        help="continue from this trained policy (same base model, its action ranges and window "
        "settings), e.g. to fine-tune on correction episodes: --data ORIGINAL --data CORRECTIONS",
    )
    parser.add_argument(
        "--resume",
        action="store_true",
        help="continue the run in --out from its last checkpoint (its data, base model and settings; "
        "only --max-steps / --max-minutes may change)",
    )
    parser.add_argument(
        "--mirror",
        action=argparse.BooleanOptionalAction,
        help="left/right mirror augmentation "
        f"(default: config/train.yaml data.mirror = {_yaml_default('data.mirror')})",
    )
    for flag, (key, kind, text) in FLAGS.items():
        parser.add_argument(
            "--" + flag.replace("_", "-"),
            dest=flag,
            type=kind,
            help=f"{text} (default: config/train.yaml {key} = {_yaml_default(key)})",
        )
    for old, new in DEPRECATED.items():
        dest = new[2:].replace("-", "_")
        add_deprecated_flag(parser, old, new, dest, "train", type=FLAGS[dest][1])
    parser.set_defaults(func=run)


def run(args) -> int:
    from pathlib import Path

    from mobile_vla_ros.training.config import TrainConfig, TrainConfigError, load_train_config
    from mobile_vla_ros.training.summary import format_summary
    from mobile_vla_ros.training.train import TrainRun, saved_run, train

    settings = list(args.set)
    settings += [
        f"{key}={getattr(args, flag)}" for flag, (key, _, _) in FLAGS.items() if getattr(args, flag) is not None
    ]
    if args.mirror is not None:
        settings.append(f"data.mirror={str(args.mirror).lower()}")
    if args.resume:
        before = saved_run(args.out)
        config = load_train_config(args.config, settings, base=TrainConfig.from_dict(before["config"]))
        data_dirs, base_model = args.data or before["data_dirs"], args.base_model or before["base_model_dir"]
        init_from = args.init_from or before.get("init_from")
    else:
        if not args.data or not args.base_model:
            raise TrainConfigError("--data and --base-model are required (except with --resume)")
        config = load_train_config(args.config, settings)
        data_dirs, base_model, init_from = args.data, args.base_model, args.init_from
    resolved = [str(Path(directory).resolve()) for directory in data_dirs]
    run_ = TrainRun(
        resolved,
        str(Path(base_model).resolve()),
        str(args.out),
        config,
        str(Path(init_from).resolve()) if init_from else None,
    )
    summary = train(run_, resume=args.resume)
    if summary:
        print(format_summary(summary, args.out))
    return 0

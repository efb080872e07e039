"""`mobile-vla demo --corrections`: one round of human-gated DAgger in the simulated room.

  1-3 a deliberately weak policy: the demo's base model, stages and trainer, on few expert
      episodes (--episodes, default 6 per instruction) in WORKDIR/weak-episodes, WORKDIR/weak-policy
  4   before: closed-loop trials on unseen layouts (--seed)
  5   takeovers: closed loop on layouts of the training series (seed 0) that the demonstrations
      did not use (from layout --episodes + 1 on), the scripted expert
      taking over on `cmd_vel_teleop` when the robot heads for a collision or the wrong side
      (sim/takeover.py); the inference node records each takeover (`record_corrections`) into
      WORKDIR/corrections
  6   fine-tune: `train --init-from WORKDIR/weak-policy` on the expert episodes + the corrections,
      to WORKDIR/corrected-policy
  7   after: the trials of stage 4 again (same layouts) with the fine-tuned policy
  8   report: success before/after per instruction, takeovers, OUT/corrections.json

With --control two more stages before the report answer "was it the corrections, or only more
training?": the same fine-tuning (same steps, same init) on the expert episodes alone, to
WORKDIR/control-policy, evaluated on the same layouts.

Stages 4-7 (and the control's) always run; 1-3 are cached like the plain demo's.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

from mobile_vla_ros.demo.pipeline import (
    TRAINING_LAYOUT_SEED,
    check_common_args,
    drive_trials,
    prepare_policy,
    run_context,
    train_config,
    train_policy,
)
from mobile_vla_ros.demo.stages import DemoError, Stages, format_durations, redo
from mobile_vla_ros.demo.trials import summarize
from mobile_vla_ros.sim.world import SIDES

STAGE_COUNT = 8  # 10 with --control
ROUND_STAGES = ("takeovers", "fine-tuning", "after")  # what one more round would cost
TARGET_GAIN = 0.2  # success on unseen layouts rises by this much per instruction ...
TARGET_RATE = 0.8  # ... or reaches this


def run_corrections_demo(args) -> int:
    """Run the round for the parsed `mobile-vla demo --corrections` arguments; 0 on success."""
    check_common_args(args)
    if args.correction_trials < 1 or args.finetune_steps < 1:
        raise DemoError("--correction-trials must be >= 1 and --finetune-steps > 0")
    from mobile_vla_ros.sim.takeover import TakeoverRules

    stage_count = STAGE_COUNT + 2 * bool(args.control)
    stages = Stages(stage_count)
    weak = prepare_policy(args, stages, "weak")
    workdir = args.workdir.resolve()
    corrections_dir, corrected_dir = workdir / "corrections", workdir / "corrected-policy"

    def evaluate(policy_dir: Path) -> list:
        return drive_trials(policy_dir, weak.base_dir, args.layout_seed, args.trials, args.device, dtype=args.dtype)

    before = stages.run(4, "before", False, lambda: evaluate(weak.policy_dir))

    def take_over() -> list:
        redo(corrections_dir)
        return drive_trials(
            weak.policy_dir,
            weak.base_dir,
            TRAINING_LAYOUT_SEED,
            args.correction_trials,
            args.device,
            dtype=args.dtype,
            takeover=TakeoverRules(),
            corrections_dir=corrections_dir,
            first_episode=args.episodes,  # past the demonstrated layouts 0 .. episodes-1
        )

    driven = stages.run(5, "takeovers", False, take_over)
    corrections = _correction_episodes(corrections_dir)
    if not corrections:
        raise DemoError(
            f"the scripted person never took over in {len(driven)} trials, so there is nothing to fine-tune on; "
            "run more --correction-trials or a weaker policy (fewer --episodes / --train-steps)"
        )
    config = train_config(args.finetune_steps, args.device)

    def fine_tune(directory: Path, data_dirs: list[Path]) -> None:
        key = {"stage": directory.name, "init_from": str(weak.policy_dir), "data": [str(d) for d in data_dirs]}
        train_policy(directory, data_dirs, weak.base_dir, config, key, init_from=weak.policy_dir)

    stages.run(6, "fine-tuning", False, lambda: fine_tune(corrected_dir, [weak.episodes_dir, corrections_dir]))
    after = stages.run(7, "after", False, lambda: evaluate(corrected_dir))
    control = None
    if args.control:
        control_dir = workdir / "control-policy"
        stages.run(8, "control fine-tuning", False, lambda: fine_tune(control_dir, [weak.episodes_dir]))
        control = stages.run(9, "control after", False, lambda: evaluate(control_dir))
    print(f"[{stage_count}/{stage_count}] report", flush=True)
    report = corrections_report(args, before, driven, after, corrections, stages, weak.policy_dir, corrected_dir)
    if control is not None:
        report["control_without_corrections"] = success_rates(control)
        report["control_detail"] = summarize(control)
        report["trials"]["control"] = [trial.to_dict() for trial in control]
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    (out / "corrections.json").write_text(json.dumps(report, indent=2) + "\n")
    print()
    print(format_corrections(report))
    print(f"report: {out / 'corrections.json'}")
    return 0


def _correction_episodes(directory: Path) -> list[dict]:
    """Each saved takeover: file, instruction, frames and how many of them the person commanded."""
    from mobile_vla_ros.data.correction_episodes import human_frames
    from mobile_vla_ros.data.episode import list_episodes, read_episode

    episodes = []
    for path in list_episodes(directory):
        episode = read_episode(path)
        human = human_frames(episode)
        if human is None:
            raise DemoError(f"{path} is not a correction episode; the inference node writes only those there")
        episodes.append(
            {
                "file": path.name,
                "instruction": episode.instruction,
                "frames": int(len(human)),
                "by_person": int(human.sum()),
            }
        )
    return episodes


def success_rates(trials: list) -> dict[str, float]:
    return {side: row["success_rate"] for side, row in summarize(trials).items()}


def target_met(before: dict[str, float], after: dict[str, float]) -> dict[str, bool]:
    """Per instruction: success rose by TARGET_GAIN or reached TARGET_RATE (the issue's done-when)."""
    return {
        side: after[side] >= TARGET_RATE - 1e-9 or after[side] - before[side] >= TARGET_GAIN - 1e-9 for side in SIDES
    }


def corrections_report(args, before, driven, after, corrections, stages: Stages, weak_dir, corrected_dir) -> dict:
    from mobile_vla_ros.policy.config import PolicyConfig

    before_rates, after_rates = success_rates(before), success_rates(after)
    reasons = Counter(reason for trial in driven for reason in trial.takeovers)

    def training(directory) -> dict:
        summary = PolicyConfig.load(directory).training
        return {key: summary.get(key) for key in ("steps", "seconds", "train_loss", "val_loss", "init_from")}

    return {
        "before": before_rates,
        "after": after_rates,
        "takeovers": sum(reasons.values()),
        "takeovers_per_round": [sum(reasons.values())],
        "takeover_reasons": dict(sorted(reasons.items())),
        "target_met": target_met(before_rates, after_rates),
        "before_detail": summarize(before),
        "after_detail": summarize(after),
        "takeover_trials": {
            "trials": len(driven),
            "with_takeover": sum(bool(trial.takeovers) for trial in driven),
            "succeeded_with_help": summarize(driven),
        },
        "correction_episodes": corrections,
        "seeds": {
            "training_layouts": TRAINING_LAYOUT_SEED,
            "takeover_layouts": TRAINING_LAYOUT_SEED,
            "takeover_first_layout": args.episodes + 1,
            "trial_layouts": args.layout_seed,
            "training": PolicyConfig.load(weak_dir).training.get("config", {}).get("trainer", {}).get("seed"),
        },
        "stages": stages.records,
        "round_seconds": round(sum(stages.records[name]["seconds"] for name in ROUND_STAGES), 1),
        "total_seconds": round(stages.total_seconds, 1),
        "training": {"weak": training(weak_dir), "corrected": training(corrected_dir)},
        **run_context(args),
        "trials": {
            "before": [trial.to_dict() for trial in before],
            "takeovers": [trial.to_dict() for trial in driven],
            "after": [trial.to_dict() for trial in after],
        },
    }


def format_corrections(report: dict) -> str:
    """The table `mobile-vla demo --corrections` prints."""
    before, after = report["before_detail"], report["after_detail"]
    lines = [
        f"success on {sum(row['trials'] for row in before.values())} unseen layouts "
        f"(layout seed {report['seeds']['trial_layouts']}), before and after one round of corrections:",
        f"{'instruction':<12} {'before':>8} {'after':>8} {'change':>8}  target (+20 points or >= 80%)",
        "-" * 64,
    ]
    for side in SIDES:
        change = 100 * (report["after"][side] - report["before"][side])
        lines.append(
            f"{side:<12} {before[side]['succeeded']:>4}/{before[side]['trials']:<3} "
            f"{after[side]['succeeded']:>4}/{after[side]['trials']:<3} {change:>+7.0f}  "
            f"{'met' if report['target_met'][side] else 'not met'}"
        )
    control = report.get("control_detail")
    if control is not None:
        lines.append(
            "control (the same fine-tuning on the expert episodes alone): "
            + ", ".join(f"{side} {control[side]['succeeded']}/{control[side]['trials']}" for side in SIDES)
        )
    trials = report["takeover_trials"]
    reasons = ", ".join(f"{name} {count}" for name, count in report["takeover_reasons"].items()) or "none"
    lines += [
        "",
        f"round 1: {report['takeovers']} takeovers ({reasons}) in {trials['with_takeover']} of {trials['trials']} "
        f"trials on training-series layouts; {len(report['correction_episodes'])} correction episodes, "
        f"{sum(e['by_person'] for e in report['correction_episodes'])} frames commanded by the person",
        f"stages: {format_durations(report['stages'])}; the round (takeovers + fine-tuning + after) "
        f"{report['round_seconds'] / 60:.1f} min, "
        f"total {report['total_seconds'] / 60:.1f} min",
    ]
    return "\n".join(lines)

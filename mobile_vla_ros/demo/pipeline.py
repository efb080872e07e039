"""The demo's stages in order: the tiny base model, expert episodes and training (cached), the
closed-loop trial runs and the report; cli/demo.py only parses the arguments."""

from __future__ import annotations

import json
import os
import platform
import sys
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from mobile_vla_ros.demo.stages import DemoError, Stages, format_durations, is_current, mark_stage_done, redo
from mobile_vla_ros.demo.trials import (
    blind_baseline,
    familiarity_summary,
    format_familiarity,
    format_table,
    mean_expert_trajectories,
    summarize,
    trial_sides,
)

DEMO_SAMPLE_RATE_HZ = 10.0  # becomes the policy's action_dt (0.1 s)

TRAINING_LAYOUT_SEED = 0  # expert episodes use layouts of this series; trials must use another

# The tiny model of make-tiny-model (policy/tiny.py), at the demo's image size.
TINY_MODEL = {"width": 64, "layers": 2, "seed": 0}

# On top of config/train.yaml + config/train_tiny.yaml. One torch thread: on a small, busy CPU two
# threads that wait for each other are several times slower than one. Noise margin 3: with the
# switch demonstrations the head trained under twice the rounding error fell behind fp32 at bf16
# (MAE 0.293x blind against 0.242x, past the check's 10 % + 0.02); at 3, 0.291x against 0.262x
# passes (docs/results.md). The twins keep 2: at 3 their bf16 figure got worse (0.81x, not 0.75x).
TRAIN_SETTINGS = ("trainer.threads=1", "runtime_precision.noise_margin=3")

TRAIN_MAX_STEPS = 2500

STAGE_COUNT = 10
SWITCH_AFTER_S = 1.0  # switch trials: the new instruction goes out this long after the release
SHIFTED_SCENES = ("dark", "recoloured")  # sim_node scenes the demonstrations never show


def check_common_args(args) -> None:
    """The checks every demo run needs (plain and --corrections)."""
    if args.layout_seed == TRAINING_LAYOUT_SEED:
        raise DemoError(f"--layout-seed {args.layout_seed} is the training layouts' series; trials need unseen layouts")
    if args.episodes < 2 or args.trials < 1 or args.train_steps < 1:
        raise DemoError("--episodes must be >= 2, --trials >= 1, --train-steps > 0")
    if args.image_size < 14 or args.image_size % 14:
        raise DemoError(f"--image-size must be a positive multiple of 14 (the patch size), got {args.image_size}")


def run_demo(args) -> int:
    """Run every stage for the parsed `mobile-vla demo` arguments; 0 on success."""
    check_common_args(args)
    stages = Stages(STAGE_COUNT)
    prepared = prepare_policy(args, stages, "demo")

    # Every closed-loop stage drives the same unseen layouts with the same policy, at drive.yaml's dtype
    # unless --dtype says otherwise; what differs is named at each stage.
    drive = partial(
        drive_trials,
        prepared.policy_dir,
        prepared.base_dir,
        args.layout_seed,
        args.trials,
        args.device,
        dtype=args.dtype,
    )
    trials = stages.run(4, "closed-loop driving", False, drive)
    switched = stages.run(
        5,
        f"switch trials (the other instruction first, switched at +{SWITCH_AFTER_S:g} s)",
        False,
        lambda: drive(switch_after_s=SWITCH_AFTER_S),
    )
    frozen = stages.run(6, "closed loop, frozen camera", False, lambda: drive(freeze_camera=True))
    watched = stages.run(
        7,
        "closed-loop driving, familiarity monitor warn (watching only: which alarms were false)",
        False,
        lambda: drive(familiarity_action="warn"),
    )
    shifted = {
        action: stages.run(
            stage,
            f"shifted scenes, familiarity monitor {action}",
            False,
            lambda action=action: shifted_trials(prepared, args, action),
        )
        for stage, action in ((8, "none"), (9, "stop"))
    }
    print(f"[{STAGE_COUNT}/{STAGE_COUNT}] report", flush=True)
    _report(args, trials, switched, frozen, watched, shifted, stages, prepared.policy_dir)
    return 0


def shifted_trials(prepared, args, familiarity_action: str) -> list:
    """The trial layouts in each shifted scene, half the trials per instruction in each."""
    per_scene = max(1, args.trials // len(SHIFTED_SCENES))
    trials = []
    for scene in SHIFTED_SCENES:
        print(f"    scene {scene}:", flush=True)
        trials += drive_trials(
            prepared.policy_dir,
            prepared.base_dir,
            args.layout_seed,
            per_scene,
            args.device,
            dtype=args.dtype,
            scene=scene,
            familiarity_action=familiarity_action,
        )
    return trials


@dataclass(frozen=True)
class PreparedPolicy:
    base_dir: Path
    episodes_dir: Path
    policy_dir: Path


def prepare_policy(args, stages: Stages, name: str) -> PreparedPolicy:
    """Stages 1-3, cached in --workdir: the tiny base model (shared), `args.episodes` expert episodes
    per instruction in WORKDIR/<name>-episodes and a policy trained on them for `args.train_steps`
    in WORKDIR/<name>-policy."""
    workdir = args.workdir.resolve()
    base_dir = workdir / "tiny-kosmos2"
    episodes_dir, policy_dir = workdir / f"{name}-episodes", workdir / f"{name}-policy"

    base_key = {"stage": "base-model", "image_size": args.image_size, **TINY_MODEL}
    stages.run(
        1,
        "base model",
        is_current(base_dir, base_key, args.fresh),
        lambda: _build_base_model(base_dir, base_key, args.image_size),
    )

    episodes_key = {
        "stage": "episodes",
        "per_instruction": args.episodes,
        "layout_seed": TRAINING_LAYOUT_SEED,
        "image_size": args.image_size,
        "sample_rate_hz": DEMO_SAMPLE_RATE_HZ,
        "switch_demonstrations": True,
    }
    stages.run(
        2,
        "expert episodes",
        is_current(episodes_dir, episodes_key, args.fresh),
        lambda: _record(episodes_dir, episodes_key, args.episodes, args.image_size),
    )

    from mobile_vla_ros.policy.backbone import fingerprint_base_model

    config = train_config(args.train_steps, args.device)
    policy_key = {
        "stage": "policy",
        "base_fingerprint": fingerprint_base_model(base_dir),
        "episodes": episodes_key,
        "train": config.to_dict(),
    }
    trained = is_current(policy_dir, policy_key, args.fresh) and _policy_matches_base(policy_dir, policy_key)
    stages.run(3, "training", trained, lambda: train_policy(policy_dir, [episodes_dir], base_dir, config, policy_key))
    return PreparedPolicy(base_dir, episodes_dir, policy_dir)


def _build_base_model(directory: Path, key: dict, image_size: int) -> None:
    from mobile_vla_ros.policy.tiny import make_tiny_model

    make_tiny_model(redo(directory), image_size=image_size, **TINY_MODEL)
    mark_stage_done(directory, key)


def _record(directory: Path, key: dict, per_instruction: int, image_size: int) -> None:
    from tqdm import tqdm

    from mobile_vla_ros.sim.demonstrations import record_demonstrations

    redo(directory)
    with tqdm(total=4 * per_instruction, desc="expert episodes", unit="ep", file=sys.stdout) as bar:

        def progress(done, total, rollout):
            bar.update(1)
            bar.set_postfix_str(f"{rollout.side}: {rollout.outcome.value}")

        recorded = record_demonstrations(
            directory,
            per_instruction,
            seed=TRAINING_LAYOUT_SEED,
            sample_rate_hz=DEMO_SAMPLE_RATE_HZ,
            image_size=(image_size, image_size),
            switches=True,
            progress=progress,
        )
    frames = sum(len(rollout.times) for rollout in recorded.rollouts)
    print(
        f"    {len(recorded.paths)} episodes ({frames} frames) in {directory}; "
        f"{recorded.skipped} expert runs failed and were not saved",
        flush=True,
    )
    mark_stage_done(directory, key)


def train_config(steps: int, device: str):
    """config/train.yaml + config/train_tiny.yaml + TRAIN_SETTINGS, `steps` long, on `device`."""
    from mobile_vla_ros.paths import config_file
    from mobile_vla_ros.training.config import load_train_config

    settings = [*TRAIN_SETTINGS, "trainer.max_minutes=null", f"trainer.max_steps={steps}"]
    if device != "auto":
        settings.append(f"trainer.accelerator={'cpu' if device == 'cpu' else 'gpu'}")
    return load_train_config(config_file("train_tiny.yaml"), settings)


def _policy_matches_base(directory: Path, key: dict) -> bool:
    from mobile_vla_ros.errors import CheckpointError
    from mobile_vla_ros.policy.config import PolicyConfig

    try:
        return PolicyConfig.load(directory).base_model.get("fingerprint") == key["base_fingerprint"]
    except CheckpointError:
        return False


def train_policy(
    directory: Path, data_dirs: list[Path], base_dir: Path, config, key: dict, init_from: Path | None = None
) -> None:
    """`mobile-vla train` (the same TrainRun), continuing from `init_from` when given; stamps `key`."""
    from mobile_vla_ros.training.summary import format_summary
    from mobile_vla_ros.training.train import TrainRun, train

    redo(directory)
    run = TrainRun(
        [str(path) for path in data_dirs],
        str(base_dir),
        str(directory),
        config,
        init_from=None if init_from is None else str(init_from),
    )
    summary = train(run)
    print(format_summary(summary, directory), flush=True)
    mark_stage_done(directory, key)


def drive_trials(
    policy_dir: Path,
    base_dir: Path,
    seed: int,
    per_instruction: int,
    device: str,
    dtype: str | None = None,
    freeze_camera: bool = False,
    scene: str = "plain",
    familiarity_action: str | None = None,
    takeover=None,
    corrections_dir: Path | None = None,
    first_episode: int = 0,
    switch_after_s: float | None = None,
) -> list:
    """Closed-loop trials on layouts first_episode+1, +2, ... of series `seed`, alternating
    left/right. `takeover` (sim.takeover.TakeoverRules): the scripted person takes over;
    `corrections_dir`: the inference node records those takeovers there; `dtype` None: drive.yaml's;
    `switch_after_s`: each trial starts with the other instruction and switches then."""
    import torch
    from tqdm import tqdm

    from mobile_vla_ros.demo.closed_loop import ClosedLoopSim

    torch.set_num_threads(1)  # the simulator and the nodes need the other core
    sides = trial_sides(per_instruction)
    trials = []
    print("    starting sim_node, camera_window_node, inference_node ...", flush=True)
    with ClosedLoopSim(
        policy_dir,
        base_dir,
        seed,
        device=device,
        dtype=dtype,
        quiet=True,
        freeze_camera=freeze_camera,
        scene=scene,
        familiarity_action=familiarity_action,
        corrections_dir=corrections_dir,
        first_episode=first_episode,
    ) as loop:
        with tqdm(total=len(sides), desc="trials", unit="trial", file=sys.stdout) as bar:
            for index, side in enumerate(sides):
                trial = loop.run_trial(index, side, takeover, switch_after_s)
                trials.append(trial)
                wins = {s: sum(t.succeeded for t in trials if t.side == s) for s in ("left", "right")}
                runs = {s: sum(t.side == s for t in trials) for s in ("left", "right")}
                taken = f", takeovers: {', '.join(trial.takeovers)}" if trial.takeovers else ""
                goal = side if switch_after_s is None else f"to {side}"
                bar.write(
                    f"    trial {index + 1:2d}: {goal:<8} -> {trial.outcome:<13} ({trial.duration_s:4.1f} s, "
                    f"layout {trial.episode} of seed {seed}{taken})"
                )
                bar.set_postfix_str(f"left {wins['left']}/{runs['left']}  right {wins['right']}/{runs['right']}")
                bar.update(1)
    return trials


def _report(
    args, trials: list, switched: list, frozen: list, watched: list, shifted: dict, stages: Stages, policy_dir: Path
) -> None:
    from mobile_vla_ros.policy.config import PolicyConfig
    from mobile_vla_ros.sim.plot import plot_trajectories

    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    results = summarize(trials)
    means = mean_expert_trajectories(args.episodes, TRAINING_LAYOUT_SEED, DEMO_SAMPLE_RATE_HZ)
    comparisons = {
        f"switch +{SWITCH_AFTER_S:g} s": summarize(switched),
        "frozen camera": summarize(frozen),
        "image-blind": summarize(blind_baseline(trials, means, 1.0 / DEMO_SAMPLE_RATE_HZ)),
    }
    figure = plot_trajectories(
        trials, out / "trajectories.png", title=f"mobile-vla demo: {len(trials)} closed-loop trials on unseen layouts"
    )
    training = PolicyConfig.load(policy_dir).training
    report = {
        "results": results,
        "switch_after_s": SWITCH_AFTER_S,
        "switch_results": summarize(switched),
        "frozen_camera": comparisons["frozen camera"],
        "image_blind_baseline": comparisons["image-blind"],
        "seeds": {
            "training_layouts": TRAINING_LAYOUT_SEED,
            "trial_layouts": args.layout_seed,
            "training": training.get("config", {}).get("trainer", {}).get("seed"),
        },
        "stages": stages.records,
        "total_seconds": round(stages.total_seconds, 1),
        **run_context(args),
        "precision": driving_precision(args),
        "training": {
            key: training.get(key)
            for key in ("steps", "seconds", "train_loss", "val_loss", "instruction_separation", "mae_vs_blind")
        },
        "familiarity": familiarity_summary(trials, watched, shifted),
        "trials": [trial.to_dict() for trial in trials],
        "switch_trials": [trial.to_dict() for trial in switched],
        "frozen_camera_trials": [trial.to_dict() for trial in frozen],
        "monitor_watching_trials": [trial.to_dict() for trial in watched],
        "shifted_scene_trials": {action: [trial.to_dict() for trial in runs] for action, runs in shifted.items()},
    }
    (out / "summary.json").write_text(json.dumps(report, indent=2) + "\n")
    print()
    print(
        f"closed-loop success on {len(trials)} unseen layouts (layout seed {args.layout_seed}, training seed "
        f"{report['seeds']['training']}), backbone at {report['precision']['dtype']} "
        f"({report['precision']['why']}), measured now:"
    )
    print(format_table(results, comparisons))
    print(
        f"switch: the other instruction first, this one on the topic {SWITCH_AFTER_S:g} s after the release "
        "(the row names the new one); frozen camera: the policy driving with each episode's first view only; "
        "image-blind: the expert's mean path per instruction replayed without looking, on the same layouts"
    )
    print()
    print(format_familiarity(report["familiarity"], SHIFTED_SCENES))
    print()
    print(f"stages: {format_durations(stages.records)}; total {stages.total_seconds / 60:.1f} min")
    print(f"trajectories: {figure}")
    print(f"summary:      {out / 'summary.json'}")


def driving_precision(args) -> dict:
    """The backbone dtype the inference node drives at: --dtype, else drive.yaml's (auto: this machine's)."""
    from mobile_vla_ros.nodes.node_specs import INFERENCE, yaml_section
    from mobile_vla_ros.paths import config_file
    from mobile_vla_ros.policy.backbone import resolve_device, resolve_dtype

    requested = args.dtype or yaml_section(config_file("drive.yaml"), INFERENCE)["dtype"]
    dtype, why = resolve_dtype(requested, resolve_device(args.device))
    return {"requested": requested, "dtype": dtype, "why": why}


def run_context(args) -> dict:
    """What a report needs to be read later: the options it ran with and the machine it ran on
    (its load average, since closed-loop trials run in real time)."""
    return {
        "settings": {
            key: str(value) if isinstance(value, Path) else value for key, value in vars(args).items() if key != "func"
        },
        "machine": {
            "python": platform.python_version(),
            "processor": platform.processor() or platform.machine(),
            "load_average": [round(value, 2) for value in os.getloadavg()],
        },
    }

"""Offline evaluation: replay episodes through PolicyRunner (the robot's incremental path) and
report how well the policy imitates them and whether it follows its instruction (metrics.py)."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import torch

from mobile_vla_ros.data.windows import load_training_episodes
from mobile_vla_ros.errors import BaseModelError
from mobile_vla_ros.policy.config import PolicyConfig
from mobile_vla_ros.training.metrics import (
    Replay,
    encode_episode,
    mean_cosine,
    replay_with_runner,
    short_instruction,
    side_prompts,
    summarize,
)

LOG = logging.getLogger(__name__)
BASE_MODEL_ENV = "MOBILE_VLA_BASE_MODEL"
COSINE_FRAMES = 64  # frames (spread over the episodes) for the feature-cosine diagnostic


def resolve_base_model_dir(model_dir, base_model_dir=None) -> str:
    """--base-model, else the directory recorded at training time (the fingerprint check in
    PolicyRunner.load still refuses a different model). $MOBILE_VLA_BASE_MODEL, read by an earlier
    release, still works with a warning."""
    if base_model_dir:
        return str(base_model_dir)
    if os.environ.get(BASE_MODEL_ENV):
        LOG.warning("$%s is deprecated: pass --base-model", BASE_MODEL_ENV)
        return os.environ[BASE_MODEL_ENV]
    recorded = PolicyConfig.load(model_dir).training.get("base_model_dir")
    if recorded and Path(recorded).is_dir():
        return recorded
    raise BaseModelError(
        "no base model directory: pass --base-model"
        + (f" (the one recorded at training time, {recorded}, does not exist here)" if recorded else "")
    )


def feature_cosine(runner, episodes) -> float | None:
    """Mean left/right action-token feature cosine on up to COSINE_FRAMES frames."""
    sided = [episode for episode in episodes if side_prompts(episode.instruction)]
    if not sided:
        return None
    per_episode = max(1, COSINE_FRAMES // len(sided))
    values = []
    for episode in sided[:COSINE_FRAMES]:
        picks = np.linspace(0, episode.num_frames - 1, min(per_episode, episode.num_frames)).round().astype(int)
        prompts = side_prompts(episode.instruction)
        with torch.inference_mode():
            left, right = (
                encode_episode(runner.policy, episode.frames[picks], prompts[side]) for side in ("left", "right")
            )
        values.append(mean_cosine(left, right))
    return float(np.mean(values))


def evaluate(
    model_dir, data_dirs, base_model_dir=None, device: str = "auto", dtype: str = "fp32"
) -> tuple[dict, list[Replay]]:
    """`dtype`: fp32, bf16, fp16, auto (this machine's) or int8 (dynamic int8 weights, CPU)."""
    from mobile_vla_ros.policy.backbone import resolve_device, resolve_dtype
    from mobile_vla_ros.policy.runner import PolicyRunner

    quantize = "int8" if dtype == "int8" else "none"
    dtype = "fp32" if quantize == "int8" else resolve_dtype(dtype, resolve_device(device))[0]
    runner = PolicyRunner.load(
        model_dir, resolve_base_model_dir(model_dir, base_model_dir), device=device, dtype=dtype, quantize=quantize
    )
    config = runner.config
    legacy_dt = config.action_dt  # the lab's files have no rate; they are taken to match the model
    episodes, skipped = load_training_episodes(data_dirs, config.image_size, min_frames=1, legacy_action_dt=legacy_dt)
    mismatched = sorted({round(e.action_dt, 6) for e in episodes} - {round(config.action_dt, 6)})
    if mismatched:
        LOG.warning(
            "episodes sampled every %s s, the model was trained at %g s: predictions are off",
            mismatched,
            config.action_dt,
        )
    replays = []
    for index, episode in enumerate(episodes, 1):
        replays.append(replay_with_runner(runner, episode))
        LOG.info("replayed %d/%d %s", index, len(episodes), Path(episode.source).name)
    report = summarize(replays, config.action_names, feature_cosine(runner, episodes), config.familiarity)
    for warning in report["warnings"]:
        LOG.warning("%s", warning)
    report["model_dir"], report["skipped_episodes"] = str(model_dir), len(skipped.skipped)
    report["dtype"] = "int8" if quantize == "int8" else dtype
    return report, replays


def format_report(report: dict) -> str:
    def number(value, digits=3):
        return "n/a" if value is None else f"{value:.{digits}f}"

    names = list(next(iter(report["mae"].values())))
    lines = [
        f"{'instruction':<64} {'frames':>6} {'sign y':>7} "
        + " ".join(f"{'MAE ' + n:>14}" for n in names)
        + " "
        + " ".join(f"{'blind ' + n:>14}" for n in names)
        + f" {'vs blind':>8} {'frames→':>7}"
    ]
    for instruction, mae in report["mae"].items():
        lines.append(
            f"{short_instruction(instruction, 64):<64} {report['frames'][instruction]:>6} "
            f"{number(report['sign_accuracy'][instruction]):>7} "
            + " ".join(f"{value:>14.4f}" for value in mae.values())
            + " "
            + " ".join(f"{value:>14.4f}" for value in report["blind_mae"][instruction].values())
            + f" {number(report['mae_vs_blind'][instruction], 2):>8}"
            + f" {number(report['frame_sensitivity'][instruction], 2):>7}"
        )
    lines.append(
        "vs blind: MAE / MAE of the best constant per instruction (>= 0.9: the images barely help); "
        "frames→: prediction change / recorded change when the frames come from another episode"
    )
    lines.append(
        f"instruction separation: {number(report['instruction_separation'])}  (1 = follows left/right, 0 = ignores it)"
    )
    lines.append(f"left/right feature cosine: {number(report['feature_cosine'])}")
    if report.get("mean_linear_y"):
        mean = report["mean_linear_y"]
        lines.append(
            f"mean linear_y: left prompt {number(mean['left_prompt'])}, right prompt {number(mean['right_prompt'])}; "
            f"recorded left {number(mean['true_left'])}, right {number(mean['true_right'])}"
        )
    familiarity = report.get("familiarity")
    if familiarity:
        above = ", ".join(f"{share:.1%} above {name}" for name, share in familiarity["share_above"].items())
        lines.append(
            f"familiarity (distance to the training frames): median {familiarity['p50']:.3g}, "
            f"p99 {familiarity['p99']:.3g}, max {familiarity['max']:.3g}"
            + (f"; {above} of the policy's thresholds" if above else "; the policy has no calibrated thresholds")
        )
    lines.extend(f"WARNING: {warning}" for warning in report.get("warnings", []))
    return "\n".join(lines)


def plot_replays(replays: list[Replay], action_names, path, per_instruction: int = 3) -> Path:
    """Predicted vs recorded actions for a few episodes of each instruction."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    chosen, counts = [], {}
    for replay in replays:
        if counts.get(replay.instruction, 0) < per_instruction:
            chosen.append(replay)
            counts[replay.instruction] = counts.get(replay.instruction, 0) + 1
    figure, axes = plt.subplots(
        len(chosen), len(action_names), figsize=(5 * len(action_names), 2.2 * len(chosen)), squeeze=False, sharex="row"
    )
    for row, replay in enumerate(chosen):
        for column, name in enumerate(action_names):
            axis = axes[row, column]
            axis.plot(replay.true[:, column], "k-", label="recorded")
            axis.plot(replay.predicted[:, column], "C0--", label="predicted")
            for side, colour in (("left", "C2"), ("right", "C3")):
                if side in replay.by_side and replay.side != side:
                    axis.plot(replay.by_side[side][:, column], f"{colour}:", label=f"with the {side} prompt")
            axis.axhline(0.0, color="0.8", lw=0.8)
            axis.set_title(f"{Path(replay.source).stem[:40]} [{replay.side or 'custom'}] {name}", fontsize=8)
            if row == 0:
                axis.legend(fontsize=7)
    axes[-1, 0].set_xlabel("frame")
    figure.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=90)
    plt.close(figure)
    return path

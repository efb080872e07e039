"""`mobile-vla bench-train`: what training costs on a given base model, measured on the real loop.

It runs `train()` itself (the same episode loading, feature statistics, Lightning loop, LoRA,
whitening tracking and export) for a few steps on synthetic twins at the base model's image size,
with a StepProfile callback, and turns the figures into an estimate for a whole dataset.
"""

from __future__ import annotations

import math
import platform
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from mobile_vla_ros.policy.backbone import FULL_RANDOM
from mobile_vla_ros.training.config import load_train_config
from mobile_vla_ros.training.train import TrainRun, train

# The lab's dataset (DESIGN.md): 500 episodes of 18 frames.
LAB_EPISODES, LAB_FRAMES = 500, 18


def _base_model_dir(base_model: str, workdir: Path, progress) -> Path:
    """A directory for `base_model`; full-random is saved once into the workdir and reused."""
    if base_model != FULL_RANDOM:
        return Path(base_model)
    from mobile_vla_ros.policy.benchmark import save_full_random_base

    directory = workdir / "kosmos2-full-random"
    if not (directory / "config.json").is_file():
        progress(f"saving the full-size Kosmos-2 with random weights to {directory} ...")
        save_full_random_base(directory)
    return directory


def frames_per_episode_epoch(frames: int, window: int, clip: int) -> int:
    """Frames sent through Kosmos-2 in one epoch of an episode: each clip of `clip` consecutive
    windows encodes its windows' frames once (data/windows.py WindowDataset)."""
    return sum(min(start + clip, frames) - max(start - window + 1, 0) for start in range(0, frames, clip))


def run_train_benchmark(
    base_model: str,
    steps: int,
    settings: list[str],
    config_path: str | None = None,
    pairs: int = 2,
    frames: int = 24,
    dataset_episodes: int = LAB_EPISODES,
    dataset_frames: int = LAB_FRAMES,
    workdir: str | Path | None = None,
    progress=print,
) -> dict:
    """Train `steps` steps (the first one is the warm-up, timed apart) and return the figures."""
    from transformers import Kosmos2Config

    from mobile_vla_ros.policy.benchmark import peak_rss_mb
    from mobile_vla_ros.training.step_profile import StepProfile
    from mobile_vla_ros.training.synthetic import write_mirrored_dataset

    if steps < 2:
        raise ValueError("bench-train needs at least 2 steps: the first one is the warm-up")
    workdir = Path(workdir or tempfile.mkdtemp(prefix="mobile_vla_bench_train_"))
    workdir.mkdir(parents=True, exist_ok=True)
    base_dir = _base_model_dir(base_model, workdir, progress)
    image_size = Kosmos2Config.from_pretrained(str(base_dir), local_files_only=True).vision_config.image_size
    episodes, out = workdir / "episodes", workdir / "policy"
    for stale in (episodes, out):
        shutil.rmtree(stale, ignore_errors=True)
    write_mirrored_dataset(episodes, pairs, frames, size=image_size)
    # No validation split: the bench measures steps, not the end-of-training checks.
    config = load_train_config(config_path, [*settings, f"trainer.max_steps={steps}", "data.val_fraction=0"])
    profile = StepProfile()
    progress(f"training {steps} steps on {2 * pairs} episodes of {frames} frames ({image_size} px) ...")
    started = time.perf_counter()
    train(TrainRun([str(episodes)], str(base_dir), str(out), config), callbacks=[profile])
    total_s = time.perf_counter() - started

    timed_frames = sum(profile.frames[1:])
    # A step's time grows with the frames it sends through Kosmos-2 (fewer at an episode's start,
    # where a window repeats its first frame), so the figures are per frame where frames ran.
    seconds_per_frame = sum(profile.timed_seconds) / timed_frames if timed_frames else None
    gflop_per_frame = profile.first_batch_flops / 1e9 / profile.frames[0] if profile.frames[0] else None
    batch, clip, window = config.trainer.batch_size, config.data.clip_length, config.policy.window_size
    copies = 2 if config.data.mirror else 1
    epoch_clips = copies * dataset_episodes * math.ceil(dataset_frames / clip)
    epoch_frames = copies * dataset_episodes * frames_per_episode_epoch(dataset_frames, window, clip)
    epoch_steps = math.ceil(epoch_clips / batch)
    epoch_s = epoch_frames * seconds_per_frame if seconds_per_frame else epoch_steps * np.median(profile.timed_seconds)
    return {
        "base_model": base_model,
        "steps": steps,
        "timed_steps": len(profile.timed_seconds),
        "settings": {
            "batch_size": batch,
            "clip_length": clip,
            "window_size": window,
            "precision": config.trainer.precision,
            "accumulate_grad_batches": config.trainer.accumulate_grad_batches,
            "gradient_checkpointing": config.trainer.gradient_checkpointing,
            "threads": torch.get_num_threads(),
        },
        "lora_trains": profile.lora_trains,
        "whitening_tracked_batches": profile.tracked_batches,
        "step_s": profile.seconds,
        "frames_per_step": profile.frames,
        "step_s_p50": float(np.median(profile.timed_seconds)),
        "seconds_per_frame": seconds_per_frame,
        "tokens_per_frame": profile.tokens_per_frame,
        "frames_per_s": 1 / seconds_per_frame if seconds_per_frame else None,
        "tokens_per_s": profile.tokens_per_frame / seconds_per_frame if seconds_per_frame else None,
        "gflop_per_frame": gflop_per_frame,
        "achieved_gflop_per_s": gflop_per_frame / seconds_per_frame if gflop_per_frame and seconds_per_frame else None,
        "peak_rss_mb": peak_rss_mb(),
        "peak_cuda_mb": torch.cuda.max_memory_allocated() / 2**20 if torch.cuda.is_available() else None,
        "total_s": total_s,
        "estimate": {
            "episodes": dataset_episodes,
            "frames_per_episode": dataset_frames,
            "mirrors": config.data.mirror,
            "steps_per_epoch": epoch_steps,
            "frames_per_epoch": epoch_frames,
            "hours_per_epoch": epoch_s / 3600.0,
        },
        "device": "cuda" if torch.cuda.is_available() and config.trainer.accelerator != "cpu" else "cpu",
        "cpu": platform.processor() or platform.machine(),
        "versions": {"torch": torch.__version__, "python": platform.python_version()},
    }


def format_train_table(result: dict) -> str:
    settings, estimate = result["settings"], result["estimate"]
    lines = [
        f"bench-train on {result['base_model']} ({result['device']}, {settings['threads']} threads): "
        f"batch {settings['batch_size']} x clip {settings['clip_length']}, window {settings['window_size']}, "
        f"precision {settings['precision']}, gradient checkpointing {settings['gradient_checkpointing']}",
        f"LoRA trains: {result['lora_trains']}; whitening tracked on {result['whitening_tracked_batches']} batches",
        "steps: "
        + ", ".join(f"{s:.2f} s ({n} frames)" for s, n in zip(result["step_s"], result["frames_per_step"]))
        + " (the first is the warm-up)",
    ]
    if result["seconds_per_frame"]:
        lines.append(
            f"per frame: {result['seconds_per_frame']:.3f} s; {result['frames_per_s']:.2f} frames/s, "
            f"{result['tokens_per_s']:.0f} tokens/s ({result['tokens_per_frame']} tokens per frame)"
        )
    if result["gflop_per_frame"]:
        lines.append(
            f"compute: {result['gflop_per_frame']:.1f} GFLOP per frame (forward, backward, optimizer), "
            f"{result['achieved_gflop_per_s']:.1f} GFLOP/s achieved"
        )
    memory = f"peak RSS {result['peak_rss_mb']:.0f} MB"
    if result["peak_cuda_mb"] is not None:
        memory += f", peak CUDA {result['peak_cuda_mb']:.0f} MB"
    lines.append(memory + f"; whole run {result['total_s']:.0f} s")
    lines.append(
        f"estimate: {estimate['episodes']} episodes x {estimate['frames_per_episode']} frames"
        f"{' (and their mirrors)' if estimate['mirrors'] else ''}: {estimate['steps_per_epoch']} steps, "
        f"{estimate['frames_per_epoch']} frames, {estimate['hours_per_epoch']:.2f} h per epoch"
    )
    return "\n".join(lines)

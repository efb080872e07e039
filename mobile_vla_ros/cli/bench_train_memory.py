"""`mobile-vla bench-train-memory`: peak memory of training on many long high-resolution episodes.

    mobile-vla bench-train-memory --episodes 50 --frames 600 --width 1280 --height 720 --steps 40

Writes the episodes into WORKDIR/data (two recorded through the EpisodeWriter with camera-like
moving frames, one per instruction; the others byte copies of those two, which costs the
training process exactly as much and saves the minutes of compressing them again), a tiny
Kosmos-2 into WORKDIR/tiny, then runs `mobile-vla train` (config/train_tiny.yaml, no validation
split) as a child process for STEPS steps and reports the child's peak resident memory
(getrusage). An existing WORKDIR/data with the same layout is reused.
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "bench-train-memory",
        help="peak RSS of training on long 720p episodes",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--episodes", type=int, default=50, help="episodes in the simulated dataset")
    parser.add_argument("--frames", type=int, default=600, help="frames per episode")
    parser.add_argument("--width", type=int, default=1280, help="frame width in pixels")
    parser.add_argument("--height", type=int, default=720, help="frame height in pixels")
    parser.add_argument("--steps", type=int, default=40, help="training steps")
    parser.add_argument("--workdir", type=Path, help="kept (data reused on the next run); default: a temporary one")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="SECTION.KEY=VALUE",
        help="passed to mobile-vla train (e.g. data.frame_cache_mb=256)",
    )
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.set_defaults(func=run)


def write_data(data: Path, episodes: int, frames: int, width: int, height: int) -> None:
    from tqdm import tqdm

    from mobile_vla_ros.data.episode import list_episodes
    from mobile_vla_ros.data.episode_writer import EpisodeWriter
    from mobile_vla_ros.policy.instructions import LAB_INSTRUCTIONS
    from mobile_vla_ros.training.synthetic import SAMPLE_RATE_HZ, camera_frames

    marker = data / "layout.json"
    layout = {"episodes": episodes, "frames": frames, "width": width, "height": height}
    if marker.is_file() and json.loads(marker.read_text()) == layout and len(list_episodes(data)) == episodes:
        print(f"reusing the episodes in {data}")
        return
    shutil.rmtree(data, ignore_errors=True)
    data.mkdir(parents=True)
    recorded = []
    for side, sign in (("left", 1.0), ("right", -1.0)):
        writer = EpisodeWriter(data, LAB_INSTRUCTIONS[side], SAMPLE_RATE_HZ)
        frame_source = camera_frames(width, height, frames, seed=len(recorded))
        for t, image in enumerate(tqdm(frame_source, total=frames, desc=f"recording the {side} episode", unit="frame")):
            writer.append(image, (0.3, sign * (0.2 + 0.2 * np.sin(t / 20)), 0.0), t / SAMPLE_RATE_HZ)
        recorded.append(writer.save())
    for index in tqdm(range(episodes - len(recorded)), desc="copying episodes", unit="file"):
        source = recorded[index % len(recorded)]
        shutil.copyfile(source, data / source.name.replace("episode_000", f"episode_{index + 3:03d}", 1))
    marker.write_text(json.dumps(layout))


def run(args) -> int:
    from mobile_vla_ros.paths import config_file
    from mobile_vla_ros.policy.tiny import make_tiny_model

    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="bench_train_memory_"))
    data, tiny, out = workdir / "data", workdir / "tiny", workdir / "model"
    write_data(data, args.episodes, args.frames, args.width, args.height)
    if not (tiny / "config.json").is_file():
        make_tiny_model(tiny)
    shutil.rmtree(out, ignore_errors=True)
    command = [
        sys.executable,
        "-m",
        "mobile_vla_ros.cli.main",
        "train",
        "--data",
        str(data),
        "--base-model",
        str(tiny),
        "--out",
        str(out),
        "--config",
        str(config_file("train_tiny.yaml")),
        "--max-steps",
        str(args.steps),
        "--set",
        "data.val_fraction=0",
    ]
    for setting in args.set:
        command += ["--set", setting]
    print("running:", " ".join(command), flush=True)
    started = time.monotonic()
    result = subprocess.run(command)
    seconds = time.monotonic() - started
    peak_gb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 2**20  # KiB on Linux
    if result.returncode != 0:
        print(f"training failed (exit {result.returncode})")
        return 1
    summary = json.loads((out / "training" / "summary.json").read_text())
    data_gb = sum(path.stat().st_size for path in data.glob("*.h5")) / 1e9
    decoded_gb = args.episodes * args.frames * args.width * args.height * 3 / 2**30
    figures = {
        "episodes": args.episodes,
        "frames_per_episode": args.frames,
        "width": args.width,
        "height": args.height,
        "steps": summary["steps"],
        "train_windows": summary["windows"]["train"],
        "seconds": round(seconds, 1),
        "peak_rss_gb": round(peak_gb, 2),
        "files_gb": round(data_gb, 2),
        "decoded_frames_gib": round(decoded_gb, 1),
        "frame_cache_mb": summary["config"]["data"]["frame_cache_mb"],
    }
    print(
        f"training on {args.episodes} episodes x {args.frames} frames of {args.width}x{args.height} "
        f"({decoded_gb:.0f} GiB decoded, {data_gb:.1f} GB of files), {summary['steps']} steps in {seconds:.0f} s: "
        f"peak RSS {peak_gb:.2f} GB (frame cache budget {figures['frame_cache_mb']:g} MB)"
    )
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")
    if not args.workdir:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0

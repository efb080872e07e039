"""`mobile-vla export --data PATH [--data PATH ...] --out DIR`: episodes as a LeRobot dataset (format v3.0).

Each --data is an episode file or a directory of them (in file-name order). Every episode becomes one
LeRobot episode: the camera frames as an AV1 video (observation.images.front), the commanded
[linear_x, linear_y, angular_z] as `action`, the instruction as the episode's task, the sample
rate as fps. Open it with lerobot >= 0.4:

    from lerobot.datasets.lerobot_dataset import LeRobotDataset
    dataset = LeRobotDataset("lab/mobile_vla", root="DIR")

All episodes must share one sample rate and one frame size. Quality verdicts are not applied:
check the episodes with `mobile-vla inspect --data DIR` first. The layout: data/lerobot_export.py.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from mobile_vla_ros.cli.options import add_data, add_moved_positional, add_out
from mobile_vla_ros.errors import MobileVlaError


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "export",
        help="write episodes as a LeRobot dataset (for other VLA trainers)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_data(parser, type=Path)
    add_moved_positional(parser, "episodes", "--data", "export", nargs="*", type=Path)
    add_out(parser, required=True, type=Path, help="dataset directory (new or empty)")
    parser.set_defaults(func=run)


def run(args) -> int:
    from tqdm import tqdm

    from mobile_vla_ros.data.episode import list_episodes
    from mobile_vla_ros.data.lerobot_export import export_lerobot

    paths = []
    for source in args.data:
        if not source.exists():
            raise MobileVlaError(f"{source} does not exist")
        paths.extend(list_episodes(source))
    with tqdm(unit="frame", desc="export") as bar:

        def advance(count: int, total: int) -> None:
            bar.total = total  # known once the export has read the episodes' metadata
            bar.update(count)

        summary = export_lerobot(paths, args.out, progress=advance)
    print(
        f"exported {summary.episodes} episodes, {summary.frames} frames at {summary.fps} fps, "
        f"{len(summary.tasks)} tasks, to {summary.out}"
    )
    for index, task in enumerate(summary.tasks):
        print(f"  task {index}: {task}")
    return 0

"""`mobile-vla import-bag BAG... --image-topic T --cmd-vel-topic T --instruction TEXT --out DIR`.

Each rosbag2 (a directory with metadata.yaml, MCAP or sqlite3) becomes one episode in DIR,
sampled and checked exactly as recorder_node records live (control/bag_import.py): same sample
rate, same pairing of each frame with the command in force at its capture stamp, same flags and
quality verdicts. `--instruction` takes `left`, `right` (the trained sentences) or free text.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from mobile_vla_ros.control.recording import RecorderSettings
from mobile_vla_ros.errors import MobileVlaError


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "import-bag",
        help="turn rosbag2 recordings into episodes",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("bags", nargs="+", type=Path, metavar="BAG", help="rosbag2 directory (or .mcap/.db3 file)")
    parser.add_argument("--image-topic", required=True, help="sensor_msgs/Image or CompressedImage topic")
    parser.add_argument("--cmd-vel-topic", default="/cmd_vel", help="geometry_msgs/Twist or TwistStamped topic")
    parser.add_argument("--instruction", required=True, help="'left', 'right' or the instruction text")
    parser.add_argument("--out", required=True, type=Path, help="episode directory (created)")
    defaults = RecorderSettings()
    parser.add_argument("--sample-rate", type=float, default=defaults.sample_rate_hz, help="frames per second stored")
    parser.add_argument(
        "--camera-lag-s", type=float, default=defaults.camera_lag_s, help="flag sampled frames older than this"
    )
    parser.add_argument(
        "--command-timeout-s",
        type=float,
        default=defaults.command_timeout_s,
        help="a motion command older than this no longer counts",
    )
    parser.set_defaults(func=run)


def run(args) -> int:
    from tqdm import tqdm

    from mobile_vla_ros.control.bag_import import import_bag

    settings = RecorderSettings(
        sample_rate_hz=args.sample_rate, camera_lag_s=args.camera_lag_s, command_timeout_s=args.command_timeout_s
    )
    failed = 0
    for bag in args.bags:
        if not bag.exists():
            raise MobileVlaError(f"{bag} does not exist")
        with tqdm(desc=f"importing {bag.name}", unit="frame", leave=False) as progress:
            try:
                result = import_bag(
                    bag,
                    args.image_topic,
                    args.cmd_vel_topic,
                    args.instruction,
                    args.out,
                    settings,
                    on_progress=lambda count: progress.update(count - progress.n),
                )
            except MobileVlaError as error:
                print(f"{bag}: not imported: {error}")
                failed += 1
                continue
        print(
            f"{bag}: {result.camera_messages} camera and {result.command_messages} command messages -> {result.message}"
        )
    return 1 if failed else 0

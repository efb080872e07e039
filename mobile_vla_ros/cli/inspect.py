"""`mobile-vla inspect --data EPISODE.h5 [--png OUT.png]` and `mobile-vla inspect --data DIR`.

One episode: frames, duration, rate, instruction, action ranges, flags and quality verdicts,
optionally a picture (contact sheet of frames + action traces). A correction episode (a person's
takeover while the policy drove) also shows how long the person drove and how far their commands
were from the policy's, and its picture overlays both. A directory: counts per
instruction, episode lengths, the quality verdicts of each flagged episode, and the files that
fail to open. Verdicts are the ones the recorder stored; files older than the checks are judged now
(data/quality.py, default rules).
"""

from __future__ import annotations

import argparse
from collections import Counter
from pathlib import Path

import numpy as np

from mobile_vla_ros.cli.options import add_data, add_moved_positional
from mobile_vla_ros.data.correction_episodes import POLICY_ACTIONS, human_frames
from mobile_vla_ros.data.episode import list_episodes, read_episode
from mobile_vla_ros.data.episode_schema import ACTION_NAMES, Episode
from mobile_vla_ros.data.quality import Verdict
from mobile_vla_ros.errors import EpisodeError, MobileVlaError

SHEET_FRAMES = 12


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "inspect",
        help="summarise an episode file or a directory of episodes",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_data(parser, help="an episode .h5 file or a directory of them", repeatable=False, type=Path)
    add_moved_positional(parser, "path", "--data", "inspect", type=Path)
    parser.add_argument("--png", type=Path, help="(episode only) write a contact sheet + action traces here")
    parser.set_defaults(func=run)


def run(args) -> int:
    if args.data.is_dir():
        if args.png:
            raise MobileVlaError("--png draws one episode; give an episode file, not a directory")
        print(summarise_directory(args.data))
        return 0
    if not args.data.exists():
        raise MobileVlaError(f"{args.data} does not exist")
    count = read_episode(args.data, frame_indices=[]).num_frames
    episode = read_episode(args.data, frame_indices=sheet_indices(count))
    print(summarise_episode(episode))
    if args.png:
        draw_episode(episode, args.png)
        print(f"picture: {args.png}")
    return 0


def sheet_indices(count: int, frames: int = SHEET_FRAMES) -> list[int]:
    return sorted(set(np.linspace(0, count - 1, min(frames, count)).round().astype(int).tolist())) if count else []


def summarise_episode(episode: Episode) -> str:
    flags = episode.flags
    duration = episode.duration_s
    rate = f"{episode.sample_rate_hz:g} Hz" if episode.sample_rate_hz else "event-driven (legacy)"
    height, width = episode.images.shape[1:3]
    lines = [
        f"episode     {episode.path}",
        "format      "
        + (
            "lab legacy (BGR on disk, returned as RGB)"
            if episode.legacy
            else f"mobile_vla_ros schema {episode.attrs.get('schema_version')}"
        ),
        f"instruction {episode.instruction}",
        f"frames      {episode.num_frames} of {width}x{height}",
        f"duration    {duration:.2f} s" if duration is not None else "duration    unknown",
        f"rate        {rate}",
    ]
    for column, name in enumerate(ACTION_NAMES):
        values = episode.actions[:, column]
        lines.append(
            f"{name:<11} min {values.min():+.3f}  mean {values.mean():+.3f}  max {values.max():+.3f}"
            if len(values)
            else f"{name:<11} (no frames)"
        )
    events = Counter(episode.event_types)
    lines.append("events      " + ", ".join(f"{name} x{count}" for name, count in sorted(events.items())))
    lines.append(
        f"flags       truncated={flags.get('truncated', False)}  "
        f"camera_lag={int(np.sum(flags.get('camera_lag', 0)))}  "
        f"command_stale={int(np.sum(flags.get('command_stale', 0)))}  "
        f"idle at start={flags.get('idle_start_frames', 0)} end={flags.get('idle_end_frames', 0)}"
    )
    lines.extend(correction_lines(episode))
    verdicts = episode_verdicts(episode)
    lines.append("quality     " + ("ok" if not verdicts else f"{len(verdicts)} verdicts"))
    lines.extend(f"  {verdict.severity:<6} {verdict.code}: {verdict.message}" for verdict in verdicts)
    return "\n".join(lines)


def correction_lines(episode: Episode) -> list[str]:
    human = human_frames(episode)
    if human is None:
        return []
    proposals = episode.extras[POLICY_ACTIONS]
    compared = human & np.all(np.isfinite(proposals), axis=1)
    gap = np.abs(episode.actions[compared, :2] - proposals[compared]).mean(axis=0) if compared.any() else None
    return [
        f"correction  the person drove {int(human.sum())} of {episode.num_frames} frames "
        f"(from #{int(np.argmax(human)) if human.any() else '-'}); policy proposals on {int(compared.sum())} of them",
        "            |person - policy| mean: "
        + ("n/a" if gap is None else f"linear_x {gap[0]:.3f}, linear_y {gap[1]:.3f}"),
    ]


def episode_verdicts(episode: Episode) -> list[Verdict]:
    """Stored verdicts, or (files recorded before the checks) the episode judged now."""
    stored = episode.stored_verdicts
    return stored if stored is not None else episode.quality().verdicts


def summarise_directory(directory: Path) -> str:
    paths = list_episodes(directory)
    lengths: dict[str, list[int]] = {}
    failures: list[str] = []
    flagged: list[str] = []
    verdict_counts: Counter = Counter()
    truncated = legacy = corrections = 0
    for path in paths:
        try:
            episode = read_episode(path, frame_indices=[])
        except EpisodeError as error:
            failures.append(f"  {path.relative_to(directory)}: {error}")
            continue
        lengths.setdefault(episode.instruction, []).append(episode.num_frames)
        corrections += human_frames(episode) is not None
        truncated += bool(episode.flags.get("truncated"))
        legacy += episode.legacy
        verdicts = episode_verdicts(episode)
        verdict_counts.update(verdict.code for verdict in verdicts)
        if verdicts:
            flagged.append(
                f"  {path.relative_to(directory)}: "
                + "; ".join(f"{v.severity} {v.code} ({v.frames} frames)" for v in verdicts)
            )
    partials = sorted(directory.rglob("*.h5.partial"))
    readable = sum(len(values) for values in lengths.values())
    lines = [
        f"{directory}: {len(paths)} episode files, {readable} readable ({legacy} legacy, {truncated} truncated, "
        f"{corrections} corrections)"
    ]
    for instruction, values in sorted(lengths.items()):
        lines.append(
            f"  {len(values):4d} x  frames min {min(values)} median {int(np.median(values))} "
            f"max {max(values)}  total {sum(values)}  | {instruction}"
        )
    if flagged:
        lines.append(
            f"quality: {len(flagged)} of {readable} episodes flagged ("
            + ", ".join(f"{code} x{count}" for code, count in sorted(verdict_counts.items()))
            + "):"
        )
        lines.extend(flagged)
    else:
        lines.append(f"quality: no verdicts on {readable} episodes")
    if failures:
        lines.append(f"{len(failures)} files fail to open:")
        lines.extend(failures)
    if partials:
        lines.append(f"{len(partials)} unfinished recordings (recovered when recorder_node starts):")
        lines.extend(f"  {path.relative_to(directory)}" for path in partials)
    return "\n".join(lines)


def draw_episode(episode: Episode, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    indices = sheet_indices(episode.num_frames)
    columns = 4
    rows = max(1, -(-len(indices) // columns))
    figure = plt.figure(figsize=(12, 2.2 * rows + 3.2))
    grid = figure.add_gridspec(rows + 1, columns, height_ratios=[1.0] * rows + [1.4])
    images = episode.images if len(episode.images) == len(indices) else episode.images[indices]
    for slot, (index, image) in enumerate(zip(indices, images)):
        axis = figure.add_subplot(grid[slot // columns, slot % columns])
        axis.imshow(image)
        lag = " lag" if episode.flags["camera_lag"][index] else ""
        axis.set_title(f"#{index}  {episode.actions[index, 0]:+.2f}, {episode.actions[index, 1]:+.2f}{lag}", fontsize=8)
        axis.axis("off")
    traces = figure.add_subplot(grid[rows, :])
    if episode.timestamps is not None:
        time, label = episode.timestamps - episode.timestamps[0], "time [s]"
    else:
        time, label = np.arange(episode.num_frames), "frame"
    human = human_frames(episode)
    for column, name in enumerate(ACTION_NAMES):
        (line,) = traces.step(
            time, episode.actions[:, column], where="post", label=name if human is None else f"{name} (driven)"
        )
        if human is not None and column < 2:
            traces.step(
                time,
                episode.extras[POLICY_ACTIONS][:, column],
                where="post",
                linestyle="--",
                color=line.get_color(),
                label=f"{name} (policy proposed)",
            )
    if human is not None and human.any():
        traces.fill_between(
            time,
            0,
            1,
            where=human,
            color="tab:orange",
            alpha=0.15,
            step="post",
            transform=traces.get_xaxis_transform(),
            label="person in charge",
        )
    for mask, colour, name in (
        (episode.flags["idle"], "grey", "idle"),
        (episode.flags["camera_lag"], "red", "camera lag"),
    ):
        if np.any(mask):
            traces.fill_between(
                time,
                0,
                1,
                where=mask,
                color=colour,
                alpha=0.15,
                step="post",
                transform=traces.get_xaxis_transform(),
                label=name,
            )
    traces.set_xlabel(label)
    traces.set_ylabel("command")
    traces.legend(loc="upper right", fontsize=8)
    traces.grid(alpha=0.3)
    figure.suptitle(f"{Path(episode.path).name}\n{episode.instruction}", fontsize=10)
    figure.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(out, dpi=80)
    plt.close(figure)

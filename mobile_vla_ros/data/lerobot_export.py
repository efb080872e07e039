"""Episodes -> a LeRobot dataset (format v3.0: what `lerobot.datasets.lerobot_dataset.LeRobotDataset`
of lerobot >= 0.4 opens with `LeRobotDataset(repo_id, root=OUT)`), so that other VLA trainers read
the lab's episodes.

Written with pyarrow, pandas and PyAV because lerobot itself cannot be installed beside this
package (lerobot 0.4.x requires torch < 2.11, lerobot >= 0.5 Python >= 3.12; torch is pinned to
2.13.0). The names, types and files follow lerobot's own writer (LeRobotDataset.create /
add_frame / save_episode):

    meta/info.json                                    codebase_version v3.0, fps, features, totals, path templates
    meta/tasks.parquet                                instruction (index) -> task_index
    meta/stats.json                                   per feature: min, max, mean, std, count, q01..q99
    meta/episodes/chunk-000/file-000.parquet          one row per episode: tasks, length, frame range, video span,
                                                      stats/<feature>/<stat>
    data/chunk-000/file-000.parquet                   one row per frame: action, timestamp, frame_index,
                                                      episode_index, index, task_index
    videos/observation.images.front/chunk-CCC/file-NNN.mp4   one video per episode: AV1 (libsvtav1,
                                                      yuv420p, crf 30, keyframe every 2 frames: lerobot's defaults)

`action` is the commanded [linear_x, linear_y, angular_z]; the instruction is the episode's task;
the frame rate is the episodes' sample rate. There is no `observation.state` (the recorder stores
no robot state). Video is lossy: frames come back within a few grey levels, not bit-exact.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mobile_vla_ros.data.episode import read_episode, read_frames
from mobile_vla_ros.data.episode_schema import ACTION_NAMES, Episode
from mobile_vla_ros.errors import EpisodeError, MobileVlaError

CODEBASE_VERSION = "v3.0"
CAMERA_KEY = "observation.images.front"
CHUNK_SIZE = 1000  # files per chunk directory (lerobot's DEFAULT_CHUNK_SIZE)
DATA_PATH = "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
VIDEO_PATH = "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4"
EPISODES_PATH = "meta/episodes/chunk-000/file-000.parquet"
QUANTILES = (0.01, 0.10, 0.50, 0.90, 0.99)
VIDEO_CODEC, VIDEO_PIX_FMT, VIDEO_OPTIONS = "libsvtav1", "yuv420p", {"g": "2", "crf": "30", "preset": "12"}
STATS_FRAMES = 100  # frames per episode sampled for the image statistics
STATS_SIDE = 150  # the sampled frames are strided down to about this many pixels a side (as lerobot does)
INDEX_FEATURES = ("frame_index", "episode_index", "index", "task_index")


def _require_export_libraries():
    try:
        import av
        import pandas
        import pyarrow
        import pyarrow.parquet
    except ImportError as error:
        raise MobileVlaError(
            f"the LeRobot export needs pyarrow, pandas and av ({error.name} is missing): "
            "pip install -r requirements-export.txt"
        ) from error
    return av, pandas, pyarrow


@dataclass
class ExportSummary:
    out: Path
    fps: int
    episodes: int = 0
    frames: int = 0
    tasks: list[str] = field(default_factory=list)


def _dataset_fps(episodes: Sequence[Episode]) -> int:
    rates = {episode.path: episode.sample_rate_hz for episode in episodes}
    for path, rate in rates.items():
        if not rate:
            raise EpisodeError(
                f"{path} is event-driven (the lab's legacy format): a LeRobot dataset needs a fixed rate"
            )
    distinct = sorted(set(rates.values()))
    if len(distinct) > 1:
        raise EpisodeError(f"the episodes were sampled at different rates {distinct} Hz; export each rate separately")
    if abs(distinct[0] - round(distinct[0])) > 1e-6:
        raise EpisodeError(f"LeRobot datasets need a whole number of frames per second, got {distinct[0]} Hz")
    return int(round(distinct[0]))


def _feature_stats(values: np.ndarray, axes: tuple[int, ...]) -> dict[str, np.ndarray]:
    """lerobot's per-feature statistics of `values` (frames first) reduced over `axes`; images,
    (N, 3, h, w) over (0, 2, 3), keep the shape (3, 1, 1) lerobot gives them."""
    keep = values.ndim > 2

    def reduce(function, *args):
        result = function(values, *args, axis=axes, keepdims=keep)
        return result[0] if keep else result

    stats = {
        "min": reduce(np.min),
        "max": reduce(np.max),
        "mean": reduce(np.mean),
        "std": reduce(np.std),
        **{f"q{round(q * 100):02d}": reduce(np.quantile, q) for q in QUANTILES},
    }
    stats = {name: np.asarray(value, dtype=np.float64) for name, value in stats.items()}
    return {**stats, "count": np.array([values.shape[0]], dtype=np.int64)}


def _aggregate_stats(per_episode: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Dataset statistics from the episodes' (lerobot's aggregate_feature_stats: pooled mean and
    variance, count-weighted quantiles)."""
    counts = np.array([stats["count"][0] for stats in per_episode], dtype=np.float64)
    weights = counts.reshape(-1, *([1] * per_episode[0]["mean"].ndim)) / counts.sum()
    means = np.stack([stats["mean"] for stats in per_episode])
    mean = (means * weights).sum(axis=0)
    variance = ((np.stack([stats["std"] for stats in per_episode]) ** 2 + (means - mean) ** 2) * weights).sum(axis=0)
    aggregated = {
        "min": np.min([stats["min"] for stats in per_episode], axis=0),
        "max": np.max([stats["max"] for stats in per_episode], axis=0),
        "mean": mean,
        "std": np.sqrt(variance),
        "count": np.array([int(counts.sum())]),
    }
    for name in per_episode[0]:
        if name.startswith("q"):
            aggregated[name] = (np.stack([stats[name] for stats in per_episode]) * weights).sum(axis=0)
    return aggregated


def _image_sample(frame: np.ndarray) -> np.ndarray:
    """(3, h, w) float in [0, 1], strided down to about STATS_SIDE pixels a side."""
    step = max(1, max(frame.shape[:2]) // STATS_SIDE)
    return np.moveaxis(frame[::step, ::step], -1, 0).astype(np.float32) / 255.0


def _encode_video(av, path: Path, frames, fps: int, size: tuple[int, int]) -> None:
    os.environ.setdefault("SVT_LOG", "1")  # errors only: SVT-AV1 prints its whole set-up for every video
    width, height = size
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as container:
        stream = container.add_stream(VIDEO_CODEC, fps, options=dict(VIDEO_OPTIONS))
        stream.pix_fmt, stream.width, stream.height = VIDEO_PIX_FMT, width, height
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())  # flush the encoder


def _video_info(fps: int, width: int, height: int) -> dict:
    return {
        "video.height": height,
        "video.width": width,
        "video.codec": "av1",
        "video.pix_fmt": VIDEO_PIX_FMT,
        "video.is_depth_map": False,
        "video.fps": fps,
        "video.channels": 3,
        "has_audio": False,
    }


def _features(fps: int, width: int, height: int) -> dict:
    scalar = {"shape": [1], "names": None}
    return {
        CAMERA_KEY: {
            "dtype": "video",
            "shape": [height, width, 3],
            "names": ["height", "width", "channels"],
            "info": _video_info(fps, width, height),
        },
        "action": {"dtype": "float32", "shape": [len(ACTION_NAMES)], "names": list(ACTION_NAMES)},
        "timestamp": {"dtype": "float32", **scalar},
        **{name: {"dtype": "int64", **scalar} for name in INDEX_FEATURES},
    }


def _listed(value):
    return value.tolist() if isinstance(value, np.ndarray) else value


def _check_episodes(paths: Sequence[Path], episodes: Sequence[Episode]) -> tuple[int, int, int]:
    """(fps, width, height) shared by all episodes; EpisodeError naming what does not fit."""
    fps = _dataset_fps(episodes)
    empty = [str(episode.path) for episode in episodes if episode.num_frames == 0]
    if empty:
        raise EpisodeError(f"episodes without frames: {', '.join(empty)}")
    sizes = {read_frames(path, [0])[0].shape for path in paths}
    if len(sizes) > 1:
        raise EpisodeError(f"the episodes' frames differ in size {sorted(sizes)}; a camera has one size")
    height, width, _ = sizes.pop()
    if width % 2 or height % 2:
        raise EpisodeError(f"frames of {width}x{height}: the video format (yuv420p) needs an even width and height")
    return fps, width, height


def _export_episode(
    av,
    out: Path,
    path: Path,
    episode: Episode,
    episode_index: int,
    task_index: int,
    first: int,
    fps: int,
    size: tuple[int, int],
    progress,
) -> tuple[dict, dict, dict]:
    """Encode one episode's video; return its per-frame columns, its statistics and its row of
    meta/episodes (lerobot's names)."""
    length = episode.num_frames
    sampled = set(np.linspace(0, length - 1, min(STATS_FRAMES, length)).round().astype(int).tolist())
    samples = []

    def frames():
        for index in range(length):  # one full-resolution frame in memory at a time
            [frame] = read_frames(path, [index])
            if index in sampled:
                samples.append(_image_sample(frame))
            yield frame
            if progress:
                progress(1)

    chunk_index, file_index = divmod(episode_index, CHUNK_SIZE)
    _encode_video(
        av,
        out / VIDEO_PATH.format(video_key=CAMERA_KEY, chunk_index=chunk_index, file_index=file_index),
        frames(),
        fps,
        size,
    )
    columns = {
        "action": episode.actions.astype(np.float32),
        "timestamp": (np.arange(length) / fps).astype(np.float32),
        "frame_index": np.arange(length, dtype=np.int64),
        "episode_index": np.full(length, episode_index, dtype=np.int64),
        "index": np.arange(first, first + length, dtype=np.int64),
        "task_index": np.full(length, task_index, dtype=np.int64),
    }
    stats = {name: _feature_stats(values.reshape(length, -1), (0,)) for name, values in columns.items()}
    stats[CAMERA_KEY] = _feature_stats(np.stack(samples), (0, 2, 3))
    row = {
        "episode_index": episode_index,
        "tasks": [episode.instruction],
        "length": length,
        "data/chunk_index": 0,
        "data/file_index": 0,
        "dataset_from_index": first,
        "dataset_to_index": first + length,
        f"videos/{CAMERA_KEY}/chunk_index": chunk_index,
        f"videos/{CAMERA_KEY}/file_index": file_index,
        f"videos/{CAMERA_KEY}/from_timestamp": 0.0,
        f"videos/{CAMERA_KEY}/to_timestamp": length / fps,
        "meta/episodes/chunk_index": 0,
        "meta/episodes/file_index": 0,
    }
    for name, feature_stats in stats.items():
        row.update({f"stats/{name}/{stat}": _listed(value) for stat, value in feature_stats.items()})
    return columns, stats, row


def _write_tables(pyarrow, pandas, out: Path, columns: list[dict], rows: list[dict], tasks: list[str]) -> None:
    """data/ (every frame, one file), meta/episodes/ and meta/tasks.parquet."""
    import pyarrow.parquet as parquet

    actions = np.concatenate([episode["action"] for episode in columns]).reshape(-1)
    table = pyarrow.table(
        {
            "action": pyarrow.FixedSizeListArray.from_arrays(pyarrow.array(actions), len(ACTION_NAMES)),
            **{
                name: pyarrow.array(np.concatenate([episode[name] for episode in columns]))
                for name in ("timestamp", *INDEX_FEATURES)
            },
        }
    )
    data = out / DATA_PATH.format(chunk_index=0, file_index=0)
    data.parent.mkdir(parents=True)
    parquet.write_table(table, data, compression="snappy")
    (out / EPISODES_PATH).parent.mkdir(parents=True)
    parquet.write_table(pyarrow.Table.from_pylist(rows), out / EPISODES_PATH, compression="snappy")
    # lerobot reads the tasks with pandas and looks a task up by the frame's index: keep pandas' index.
    pandas.DataFrame({"task_index": range(len(tasks))}, index=tasks).to_parquet(out / "meta/tasks.parquet")


def export_lerobot(
    paths: Sequence[Path],
    out: Path,
    progress: Callable[[int, int], None] | None = None,
) -> ExportSummary:
    """Write the episode files `paths` (in this order) as one LeRobot dataset in `out` (which must
    not exist or be empty). `progress(n, total)` is called after every n of the total frames encoded."""
    av, pandas, pyarrow = _require_export_libraries()
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise MobileVlaError(f"{out} exists and is not an empty directory; choose a new --out")
    if not paths:
        raise MobileVlaError("no episodes to export")
    episodes = [read_episode(path, frame_indices=[]) for path in paths]
    fps, width, height = _check_episodes(paths, episodes)
    total = sum(episode.num_frames for episode in episodes)
    advance = None if progress is None else lambda count: progress(count, total)
    tasks = list(dict.fromkeys(episode.instruction for episode in episodes))
    summary = ExportSummary(out=out, fps=fps, tasks=tasks)
    columns, rows, stats = [], [], []
    out.mkdir(parents=True, exist_ok=True)
    try:
        for episode_index, (path, episode) in enumerate(zip(paths, episodes)):
            task_index = tasks.index(episode.instruction)
            exported = _export_episode(
                av, out, path, episode, episode_index, task_index, summary.frames, fps, (width, height), advance
            )
            for collected, item in zip((columns, stats, rows), exported):
                collected.append(item)
            summary.episodes += 1
            summary.frames += episode.num_frames
        _write_tables(pyarrow, pandas, out, columns, rows, tasks)
        features = _features(fps, width, height)
        dataset_stats = {name: _aggregate_stats([episode[name] for episode in stats]) for name in features}
        (out / "meta/stats.json").write_text(
            json.dumps({name: {k: _listed(v) for k, v in s.items()} for name, s in dataset_stats.items()}, indent=4)
        )
        info = {
            "codebase_version": CODEBASE_VERSION,
            "robot_type": episodes[0].attrs.get("robot_name") or None,
            "total_episodes": summary.episodes,
            "total_frames": summary.frames,
            "total_tasks": len(tasks),
            "chunks_size": CHUNK_SIZE,
            "data_files_size_in_mb": 100,
            "video_files_size_in_mb": 200,
            "fps": fps,
            "splits": {"train": f"0:{summary.episodes}"},
            "data_path": DATA_PATH,
            "video_path": VIDEO_PATH,
            "features": features,
        }
        (out / "meta/info.json").write_text(json.dumps(info, indent=4))
    except BaseException:
        shutil.rmtree(out, ignore_errors=True)  # no half-written dataset that a trainer might pick up
        raise
    return summary

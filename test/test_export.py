"""`mobile-vla export`: two recorded episodes -> a LeRobot v3.0 dataset, read back file by file
(pyarrow/pandas for the tables, PyAV for the videos) the way lerobot's loader reads them."""

from __future__ import annotations

import json
import sys

import av
import numpy as np
import pandas
import pyarrow.parquet as parquet
import pytest

from mobile_vla_ros.cli.main import main
from mobile_vla_ros.data.episode_writer import EpisodeWriter
from mobile_vla_ros.data.lerobot_export import export_lerobot
from mobile_vla_ros.errors import EpisodeError, MobileVlaError
from mobile_vla_ros.policy.instructions import LAB_INSTRUCTIONS
from mobile_vla_ros.training.synthetic import camera_frames

WIDTH, HEIGHT = 64, 48
CAMERA = "observation.images.front"


def record(directory, instruction: str, count: int, seed: int, rate: float = 10.0):
    """A real episode file; returns its frames and actions as written."""
    writer = EpisodeWriter(directory, instruction, rate)
    frames = list(camera_frames(WIDTH, HEIGHT, count, seed=seed))
    for index, frame in enumerate(frames):
        frame[:, : WIDTH // 4] = 20 * index  # a grey bar telling the frames apart through lossy video
    rng = np.random.default_rng(seed)
    actions = rng.uniform(-0.5, 0.5, (count, 3)).astype(np.float32)
    for index, (frame, action) in enumerate(zip(frames, actions)):
        writer.append(frame, action, 100.0 + index / rate)
    writer.save()
    return np.stack(frames), actions


def decode(path) -> tuple[np.ndarray, list[float]]:
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        decoded = list(container.decode(stream))
    return np.stack([frame.to_ndarray(format="rgb24") for frame in decoded]), [
        float(f.pts * f.time_base) for f in decoded
    ]


def test_two_recorded_episodes_export_to_a_lerobot_dataset(tmp_path, capsys):
    left_frames, left_actions = record(tmp_path / "episodes", LAB_INSTRUCTIONS["left"], 12, seed=1)
    right_frames, right_actions = record(tmp_path / "episodes", LAB_INSTRUCTIONS["right"], 9, seed=2)
    out = tmp_path / "lerobot"
    assert main(["export", "--data", str(tmp_path / "episodes"), "--out", str(out)]) == 0
    assert "exported 2 episodes, 21 frames at 10 fps, 2 tasks" in capsys.readouterr().out

    info = json.loads((out / "meta/info.json").read_text())
    assert info["codebase_version"] == "v3.0" and info["fps"] == 10
    assert (info["total_episodes"], info["total_frames"], info["total_tasks"]) == (2, 21, 2)
    assert info["features"]["action"]["names"] == ["linear_x", "linear_y", "angular_z"]
    assert info["features"][CAMERA]["dtype"] == "video" and info["features"][CAMERA]["shape"] == [HEIGHT, WIDTH, 3]

    tasks = pandas.read_parquet(out / "meta/tasks.parquet")  # as lerobot's load_tasks reads it
    assert list(tasks.index) == [LAB_INSTRUCTIONS["left"], LAB_INSTRUCTIONS["right"]]
    assert tasks.loc[LAB_INSTRUCTIONS["right"]].task_index == 1

    data = parquet.read_table(out / info["data_path"].format(chunk_index=0, file_index=0)).to_pydict()
    np.testing.assert_array_equal(np.array(data["action"], np.float32), np.concatenate([left_actions, right_actions]))
    assert data["episode_index"] == [0] * 12 + [1] * 9 and data["task_index"] == [0] * 12 + [1] * 9
    assert data["frame_index"] == list(range(12)) + list(range(9)) and data["index"] == list(range(21))
    np.testing.assert_allclose(data["timestamp"], np.r_[np.arange(12), np.arange(9)] / 10, atol=1e-6)

    episodes = parquet.read_table(out / "meta/episodes/chunk-000/file-000.parquet").to_pylist()
    assert [row["tasks"] for row in episodes] == [[LAB_INSTRUCTIONS["left"]], [LAB_INSTRUCTIONS["right"]]]
    assert [(row["dataset_from_index"], row["dataset_to_index"]) for row in episodes] == [(0, 12), (12, 21)]
    np.testing.assert_allclose(episodes[1]["stats/action/mean"], right_actions.mean(axis=0), rtol=1e-5)

    for row, frames in zip(episodes, (left_frames, right_frames)):
        video = out / info["video_path"].format(
            video_key=CAMERA,
            chunk_index=row[f"videos/{CAMERA}/chunk_index"],
            file_index=row[f"videos/{CAMERA}/file_index"],
        )
        decoded, stamps = decode(video)
        assert decoded.shape == frames.shape  # every frame, full size
        # lerobot looks frames up by from_timestamp + timestamp (tolerance 1e-4 s)
        np.testing.assert_allclose(stamps, row[f"videos/{CAMERA}/from_timestamp"] + np.arange(len(frames)) / 10)
        assert row[f"videos/{CAMERA}/to_timestamp"] == pytest.approx(len(frames) / 10)
        error = np.abs(decoded.astype(int) - frames.astype(int)).mean(axis=(1, 2, 3))
        assert error.max() < 6, error  # lossy video, but the same picture
        nearest = [
            int(np.argmin(np.abs(frames.astype(int) - image.astype(int)).mean(axis=(1, 2, 3)))) for image in decoded
        ]
        assert nearest == list(range(len(frames)))  # in order, none dropped or repeated

    stats = json.loads((out / "meta/stats.json").read_text())
    all_actions = np.concatenate([left_actions, right_actions])
    np.testing.assert_allclose(stats["action"]["mean"], all_actions.mean(axis=0), rtol=1e-5)
    np.testing.assert_allclose(stats["action"]["std"], all_actions.std(axis=0), rtol=1e-5)
    assert stats["action"]["count"] == [21] and np.array(stats[CAMERA]["mean"]).shape == (3, 1, 1)


def test_export_refuses_mixed_rates_and_leaves_nothing(tmp_path):
    record(tmp_path / "episodes", LAB_INSTRUCTIONS["left"], 8, seed=1, rate=10.0)
    record(tmp_path / "episodes", LAB_INSTRUCTIONS["right"], 8, seed=2, rate=5.0)
    paths = sorted((tmp_path / "episodes").glob("*.h5"))
    with pytest.raises(EpisodeError, match="different rates"):
        export_lerobot(paths, tmp_path / "out")
    assert not (tmp_path / "out").exists()
    assert main(["export", "--data", str(paths[0]), "--out", str(tmp_path / "episodes")]) == 2  # not an empty directory


def test_export_without_its_libraries_names_the_requirements_file(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "av", None)  # as if PyAV were not installed
    with pytest.raises(MobileVlaError, match=r"av is missing\): pip install -r requirements-export.txt"):
        export_lerobot([tmp_path / "episode.h5"], tmp_path / "out")
    assert not (tmp_path / "out").exists()

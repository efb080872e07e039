"""Episode files: writer, crash recovery, both readers."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import time

import h5py
import numpy as np
import pytest

from mobile_vla_ros.data.episode import list_episodes, read_episode
from mobile_vla_ros.data.episode_recovery import recover_partial_episodes
from mobile_vla_ros.data.episode_schema import idle_mask
from mobile_vla_ros.data.episode_writer import EpisodeWriter
from mobile_vla_ros.data.legacy_episode import write_legacy_episode
from mobile_vla_ros.errors import EpisodeError
from mobile_vla_ros.policy.instructions import LAB_INSTRUCTIONS

LEFT = LAB_INSTRUCTIONS["left"]


def frame(value: int, shape=(24, 32)) -> np.ndarray:
    image = np.zeros((*shape, 3), np.uint8)
    image[..., 0] = value  # red channel only: a BGR/RGB mix-up shows
    return image


def record(directory, actions, instruction=LEFT, **kwargs):
    writer = EpisodeWriter(directory, instruction, 10.0, robot="test-bot", **kwargs)
    for index, action in enumerate(actions):
        writer.append(frame(index), action, 100.0 + 0.1 * index)
    return writer


def test_round_trip_keeps_frames_actions_instruction_and_rgb(tmp_path):
    actions = [(0, 0, 0), (0.5, 0.2, 0), (0.5, -0.2, 0.1), (0, 0, 0)]
    path = record(tmp_path, actions).save()
    assert path.suffix == ".h5" and path.name.startswith("episode_0001_") and path.stem.endswith("_left")
    episode = read_episode(path)
    assert not episode.legacy and episode.instruction == LEFT
    assert episode.images.shape == (4, 24, 32, 3) and episode.images[2, 0, 0].tolist() == [2, 0, 0]
    np.testing.assert_allclose(episode.actions, np.array(actions, np.float32))
    np.testing.assert_allclose(episode.timestamps, 100.0 + 0.1 * np.arange(4))
    assert episode.sample_rate_hz == 10.0 and episode.attrs["robot"] == "test-bot"
    assert episode.flags["idle"].tolist() == [True, False, False, True]
    assert episode.flags["idle_start_frames"] == 1 and episode.flags["idle_end_frames"] == 1
    assert episode.flags["truncated"] is False
    with h5py.File(path) as h5:  # the lab's tools read these keys
        assert h5["language_instruction"].dtype == np.dtype("S256")
        assert h5["images"].compression == "gzip" and h5.attrs["image_encoding"] == "rgb8"
    assert list_episodes(tmp_path) == [path]


def test_selected_frames_only(tmp_path):
    path = record(tmp_path, [(0.1, 0, 0)] * 5).save()
    episode = read_episode(path, frame_indices=[0, 4])
    assert episode.images.shape[0] == 2 and episode.images[1, 0, 0, 0] == 4 and episode.num_frames == 5
    assert read_episode(path, frame_indices=[]).images.shape == (0, 24, 32, 3)


def test_numbering_resumes_and_never_overwrites(tmp_path):
    first = record(tmp_path, [(0.1, 0, 0)]).save()
    (tmp_path / "episode_0007_20240101_000000_right.h5").write_bytes(b"someone else's file")
    second = record(tmp_path, [(0.1, 0, 0)], instruction="right").save()
    assert first.name.startswith("episode_0001_") and second.name.startswith("episode_0008_")
    assert (tmp_path / "episode_0007_20240101_000000_right.h5").read_bytes() == b"someone else's file"


def test_image_size_resizes_before_storing(tmp_path):
    path = record(tmp_path, [(0.1, 0, 0)] * 2, image_size=(16, 12)).save()
    assert read_episode(path).images.shape == (2, 12, 16, 3)


def test_discard_and_empty_save_leave_no_file(tmp_path):
    record(tmp_path, [(0.1, 0, 0)] * 3).discard()
    with pytest.raises(EpisodeError, match="no frames"):
        EpisodeWriter(tmp_path, LEFT, 10.0).save()
    assert list(tmp_path.iterdir()) == []


def test_bad_input_is_refused_and_loses_nothing(tmp_path):
    writer = record(tmp_path, [(0.1, 0, 0)] * 2)
    with pytest.raises(EpisodeError, match="finite"):
        writer.append(frame(0), (np.nan, 0, 0), 1.0)
    with pytest.raises(EpisodeError, match="shape"):
        writer.append(frame(0, shape=(10, 10)), (0, 0, 0), 1.0)
    with pytest.raises(EpisodeError, match="uint8"):
        writer.append(np.zeros((24, 32, 3), np.float32), (0, 0, 0), 1.0)
    assert read_episode(writer.save()).num_frames == 2
    with pytest.raises(EpisodeError, match="instruction"):
        EpisodeWriter(tmp_path, "  ", 10.0)


_CRASHING_WRITER = """
import sys, time, numpy as np
from mobile_vla_ros.data.episode_writer import EpisodeWriter
writer = EpisodeWriter(sys.argv[1], "go left", 10.0, flush_interval_s=0.05)
for index in range(100000):
    writer.append(np.full((24, 32, 3), index % 250, np.uint8), (0.3, 0.1, 0.0), index * 0.1)
    if index == 20:
        print("flushed", flush=True)
    time.sleep(0.005)
"""


def test_sigkill_mid_episode_is_recovered_as_truncated(tmp_path):
    process = subprocess.Popen(
        [sys.executable, "-c", _CRASHING_WRITER, str(tmp_path)], stdout=subprocess.PIPE, text=True
    )
    assert process.stdout.readline().strip() == "flushed"
    time.sleep(0.2)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    partials = list(tmp_path.glob("*.h5.partial"))
    assert len(partials) == 1 and list_episodes(tmp_path) == []
    with pytest.raises(EpisodeError, match="unfinished"):
        read_episode(partials[0])
    recovered = recover_partial_episodes(tmp_path)
    assert len(recovered) == 1 and not list(tmp_path.glob("*.partial*"))
    episode = read_episode(recovered[0])
    assert episode.flags["truncated"] is True and episode.num_frames >= 20
    assert episode.images.shape[0] == episode.actions.shape[0] == len(episode.event_types)
    np.testing.assert_allclose(episode.actions[:, :2], [[0.3, 0.1]] * episode.num_frames, rtol=1e-6)
    assert episode.images[-1, 0, 0, 0] == (episode.num_frames - 1) % 250
    # a new recording continues the numbering after the recovered one
    assert record(tmp_path, [(0.1, 0, 0)]).save().name.startswith("episode_0002_")


def test_legacy_file_with_instruction_dataset(tmp_path):
    bgr = np.zeros((3, 24, 32, 3), np.uint8)
    bgr[..., 0] = 200  # blue in BGR
    actions = np.array([[0, 0, 0], [1.15, 0, 0], [0, 1.15, 0]], np.float32)
    path = write_legacy_episode(
        tmp_path / "episode_20250101_000000_1box_hori_right_core_medium.h5",
        bgr,
        actions,
        instruction=LAB_INSTRUCTIONS["left"],
    )
    episode = read_episode(path)
    assert episode.legacy and episode.timestamps is None and episode.sample_rate_hz is None
    assert episode.instruction == LAB_INSTRUCTIONS["left"]  # the dataset wins over the file name
    assert episode.images[0, 0, 0].tolist() == [0, 0, 200]  # returned as RGB
    assert episode.event_types == ["episode_start", "start_action", "start_action"]
    np.testing.assert_array_equal(episode.actions, actions)


@pytest.mark.parametrize(
    "name,expected", [("episode_x_1box_hori_left_core.h5", "left"), ("episode_x_right.h5", "right")]
)
def test_legacy_instruction_from_file_name(tmp_path, name, expected):
    path = write_legacy_episode(tmp_path / name, np.zeros((2, 8, 8, 3), np.uint8), np.zeros((2, 3), np.float32))
    assert read_episode(path).instruction == LAB_INSTRUCTIONS[expected]


def test_unreadable_files_raise_episode_error(tmp_path):
    (tmp_path / "garbage.h5").write_bytes(b"not hdf5")
    with pytest.raises(EpisodeError, match="cannot read"):
        read_episode(tmp_path / "garbage.h5")
    unlabeled = write_legacy_episode(tmp_path / "episode_x.h5", np.zeros((2, 8, 8, 3), np.uint8), np.zeros((2, 3)))
    with pytest.raises(EpisodeError, match="neither 'left' nor 'right'"):
        read_episode(unlabeled)
    with h5py.File(tmp_path / "other.h5", "w") as h5:
        h5["x"] = 1
    with pytest.raises(EpisodeError, match="not an episode"):
        read_episode(tmp_path / "other.h5")


def test_idle_mask_marks_only_the_ends():
    actions = np.array([[0, 0, 0], [0, 0, 0], [1, 0, 0], [0, 0, 0], [0, 1, 0], [0, 0, 0]], np.float32)
    assert idle_mask(actions).tolist() == [True, True, False, False, False, True]
    assert idle_mask(np.zeros((3, 3))).all()


def test_content_digest_follows_what_training_reads_and_skips_the_frames(tmp_path, monkeypatch):
    """The digest --resume compares: a changed action, frame (by its checksum) or attribute changes it;
    the frames of a checksummed file are not read (a 720p episode is ~1 GB of them)."""
    from mobile_vla_ros.data.episode import content_digest

    path = record(tmp_path, np.full((4, 3), 0.2, np.float32)).save()
    original = content_digest(path)
    assert content_digest(path) == original
    for change in (
        lambda h5: h5["actions"].__setitem__((1, 0), 0.3),
        lambda h5: h5["frame_crc32"].__setitem__(2, 12345),
        lambda h5: h5.attrs.__setitem__("sample_rate_hz", 5.0),
    ):
        copy = tmp_path / "copy" / path.name
        copy.parent.mkdir(exist_ok=True)
        copy.write_bytes(path.read_bytes())
        with h5py.File(copy, "r+") as h5:
            change(h5)
        assert content_digest(copy) != original
    read_dataset = h5py.Dataset.__getitem__

    def no_frames(dataset, key):
        assert not dataset.name.endswith("/images"), "the frames were read"
        return read_dataset(dataset, key)

    monkeypatch.setattr(h5py.Dataset, "__getitem__", no_frames)
    assert content_digest(path) == original
    monkeypatch.undo()
    legacy = tmp_path / "episode_20250101_000000_1box_hori_left_core_medium.h5"
    write_legacy_episode(legacy, frame(1)[None], np.zeros((1, 3), np.float32))
    assert content_digest(legacy) == hashlib.sha256(legacy.read_bytes()).digest()  # no checksums: every byte

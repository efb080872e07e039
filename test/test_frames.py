"""Training memory bounded by the window: frames read per clip from real H5 files, a capped cache,
and files whose frames would cost more than an episode's skipped and counted."""

from __future__ import annotations

import resource

import h5py
import numpy as np
import pytest

from mobile_vla_ros.data.clips import WindowDataset
from mobile_vla_ros.data.episode_writer import EpisodeWriter
from mobile_vla_ros.data.frames import EpisodeFrames, FrameCache
from mobile_vla_ros.data.images import resize_for_model
from mobile_vla_ros.data.legacy_episode import write_legacy_episode
from mobile_vla_ros.data.windows import load_training_episodes
from mobile_vla_ros.policy.instructions import LAB_INSTRUCTIONS

LEFT = LAB_INSTRUCTIONS["left"]


def random_frames(count, height=30, width=40, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (count, height, width, 3), dtype=np.uint8)


def write(directory, frames, instruction=LEFT):
    writer = EpisodeWriter(directory, instruction, 10.0)
    for t, frame in enumerate(frames):
        writer.append(frame, (0.2, 0.1, 0.0), t / 10)
    return writer.save()


def test_lazy_frames_equal_the_eagerly_resized_ones_in_every_indexing_form(tmp_path):
    frames = random_frames(12)
    path = write(tmp_path, frames)
    expected = np.stack([resize_for_model(frame, 16) for frame in frames])
    lazy = EpisodeFrames(path, 12, 16, FrameCache(1 << 20))
    assert lazy.shape == (12, 16, 16, 3) and len(lazy) == 12 and lazy.dtype == np.uint8
    np.testing.assert_array_equal(lazy[3:9], expected[3:9])
    np.testing.assert_array_equal(lazy[[0, 11, 5]], expected[[0, 11, 5]])
    np.testing.assert_array_equal(lazy[4], expected[4])
    np.testing.assert_array_equal(lazy[4, 0, 2], expected[4, 0, 2])
    np.testing.assert_array_equal(lazy[2:4, 1], expected[2:4, 1])
    np.testing.assert_array_equal(lazy.mirror()[0:5], expected[0:5, :, ::-1])
    np.testing.assert_array_equal(lazy.mirror().mirror()[7], expected[7])

    bgr = random_frames(9, seed=1)
    legacy = write_legacy_episode(tmp_path / "episode_20250101_000000_left.h5", bgr, np.zeros((9, 3), np.float32))
    np.testing.assert_array_equal(
        EpisodeFrames(legacy, 9, 16, FrameCache(0))[2], resize_for_model(bgr[2, ..., ::-1], 16)
    )


def test_the_cache_keeps_its_budget_and_a_clip_reads_only_its_frames(tmp_path):
    path = write(tmp_path, random_frames(40))
    frame_bytes = 16 * 16 * 3
    cache = FrameCache(10 * frame_bytes)
    lazy = EpisodeFrames(path, 40, 16, cache)
    lazy[0:30]
    assert cache.misses == 30 and cache.bytes <= 10 * frame_bytes
    lazy[25:30]  # still cached
    assert cache.hits == 5 and cache.misses == 30

    episodes, _ = load_training_episodes([tmp_path], image_size=16, min_frames=8, frame_cache_mb=1)
    dataset = WindowDataset(episodes, window_size=8, chunk_size=4, clip_length=5)
    item = dataset[3]  # windows t = 15..19 need frames 8..19
    cache = episodes[0].frames.cache
    assert len(item["frames"]) == 12 and cache.misses == 12 and cache.hits == 0


def test_a_file_declaring_20000_frames_of_720p_is_skipped_and_counted_without_allocating_them(tmp_path, caplog):
    write(tmp_path, random_frames(10))
    trap = tmp_path / "episode_0099_20260101_000000_left.h5"
    with h5py.File(trap, "w") as h5:  # what write_legacy_episode writes, but the frames never stored
        h5.create_dataset("images", (20000, 720, 1280, 3), np.uint8, chunks=(1, 720, 1280, 3), compression="gzip")
        h5.create_dataset("actions", data=np.tile([0.0, 1.15, 0.0], (20000, 1)).astype(np.float32))
    assert trap.stat().st_size < 2_000_000
    oversized = tmp_path / "episode_0098_20260101_000000_left.h5"
    with h5py.File(oversized, "w") as h5:  # all 800 frames in one 184 MB chunk
        h5.create_dataset("images", (800, 240, 320, 3), np.uint8, chunks=(800, 240, 320, 3), compression="gzip")
        h5.create_dataset("actions", data=np.tile([0.0, 1.15, 0.0], (800, 1)).astype(np.float32))

    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with caplog.at_level("WARNING"):
        episodes, report = load_training_episodes([tmp_path], image_size=16, min_frames=8, frame_cache_mb=1)
    grown_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert len(episodes) == 1 and len(report.skipped) == 2 and grown_mb < 200
    reasons = dict(report.skipped)
    assert reasons[str(trap)].startswith("frames missing: 20000 frames declared")
    assert reasons[str(oversized)].startswith("oversized chunks")
    assert "1 frames missing" in report.summary() and "1 oversized chunks" in report.summary()
    assert sum("skipping episode" in record.message for record in caplog.records) == 2


@pytest.mark.parametrize("chunks", [None, (1, 30, 40, 3)])
def test_complete_files_of_other_layouts_are_not_refused(tmp_path, chunks):
    frames = random_frames(10)
    with h5py.File(tmp_path / "episode_20250101_000000_left.h5", "w") as h5:  # lab-style, contiguous or chunked
        h5.create_dataset("images", data=frames[..., ::-1], chunks=chunks)
        h5.create_dataset("actions", data=np.tile([0.2, 0.1, 0.0], (10, 1)).astype(np.float32))
    episodes, report = load_training_episodes([tmp_path], image_size=16, min_frames=8, legacy_action_dt=0.4)
    assert len(episodes) == 1 and not report.skipped
    np.testing.assert_array_equal(episodes[0].frames[3], resize_for_model(frames[3], 16))

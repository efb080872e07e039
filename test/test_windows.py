"""Training windows, mirror augmentation, the episode split, bad-data skipping (no model needed)."""

from __future__ import annotations

from dataclasses import replace

import h5py
import numpy as np
import pytest
import torch

from mobile_vla_ros.data.clips import EpochShuffleSampler, WindowDataset, collate_clips, episode_clips
from mobile_vla_ros.data.episode_writer import EpisodeWriter
from mobile_vla_ros.data.legacy_episode import write_legacy_episode
from mobile_vla_ros.data.windows import (
    TrainingEpisode,
    action_range,
    action_targets,
    common_action_dt,
    load_training_episodes,
    split_by_episode,
    training_camera,
    window_indices,
    with_mirrors,
)
from mobile_vla_ros.errors import DatasetError
from mobile_vla_ros.policy.instructions import LAB_INSTRUCTIONS

LEFT, RIGHT = LAB_INSTRUCTIONS["left"], LAB_INSTRUCTIONS["right"]


def numbered_frames(count: int, size: int = 8) -> np.ndarray:
    """Frame t has value t everywhere, and a marker in its left column (to see flips)."""
    frames = np.repeat(np.arange(count, dtype=np.uint8)[:, None, None, None], size, 1).repeat(size, 2).repeat(3, 3)
    frames[:, :, 0, 0] = 255
    return np.ascontiguousarray(frames)


def episode(count=12, instruction=LEFT, dt=0.1, y=0.5) -> TrainingEpisode:
    actions = np.zeros((count, 3), np.float32)
    actions[:, 0] = np.arange(count) / 10
    actions[:, 1] = y
    actions[:, 2] = 0.2
    return TrainingEpisode(numbered_frames(count), actions, instruction, "test.h5", dt)


def test_window_clamps_at_the_start_and_targets_past_the_end_are_masked():
    assert window_indices(0, 8).tolist() == [0] * 8
    assert window_indices(3, 8).tolist() == [0, 0, 0, 0, 0, 1, 2, 3]
    assert window_indices(10, 8).tolist() == list(range(3, 11))
    actions = episode(12).actions
    targets, valid = action_targets(actions, 9, chunk_size=5)
    assert targets.shape == (5, 2)
    np.testing.assert_allclose(targets[:3], actions[9:12, :2])
    assert valid.tolist() == [True, True, True, False, False]  # past the end: no target, masked


def test_clips_hold_exactly_the_per_window_samples():
    ep = episode(19)
    per_window = WindowDataset([ep], window_size=8, chunk_size=4, clip_length=1)
    clipped = WindowDataset([ep], window_size=8, chunk_size=4, clip_length=7)
    assert len(per_window) == 19 and len(clipped) == 3 and per_window.num_windows == clipped.num_windows == 19
    assert episode_clips(19, 7) == [(0, 6), (6, 13), (13, 19)]
    batch = collate_clips([clipped[i] for i in range(len(clipped))])
    assert len(batch["windows"]) == 19 and batch["instructions"] == [LEFT] * 3
    for t in range(19):
        item = per_window[t]
        windows_frames = batch["frames"][batch["windows"][t]]
        assert torch.equal(windows_frames, item["frames"][item["windows"][0]])
        assert windows_frames[:, 0, 1, 0].tolist() == window_indices(t, 8).tolist()
        assert torch.equal(batch["targets"][t], item["targets"][0])
        assert torch.equal(batch["target_mask"][t], item["target_mask"][0])
    assert batch["target_mask"].sum(1).tolist() == [min(4, 19 - t) for t in range(19)]
    assert batch["frame_clip"].tolist() == [0] * 6 + [1] * 13 + [2] * 13


def test_mirror_flips_frames_negates_sideways_motion_and_swaps_the_instruction():
    ep = episode(4)
    mirrored = ep.mirror()
    assert mirrored.instruction == RIGHT and mirrored.mirrored
    assert mirrored.frames[0, 0, -1, 0] == 255 and mirrored.frames[0, 0, 0, 0] == 0
    np.testing.assert_allclose(mirrored.actions[:, 0], ep.actions[:, 0])
    np.testing.assert_allclose(mirrored.actions[:, 1:], -ep.actions[:, 1:])
    item = WindowDataset([mirrored], 8, 2)[0]
    assert item["frames"].is_contiguous() and item["frames"][0, 0, -1, 0] == 255
    custom = episode(4, instruction="drive to the bottle")
    assert len(with_mirrors([ep, custom])) == 3  # no side named -> not mirrored
    assert len(with_mirrors([ep, custom], enabled=False)) == 2


def test_split_is_by_episode_seeded_and_keeps_both_instructions():
    episodes = [episode(8, LEFT if i % 2 else RIGHT) for i in range(20)]
    for i, ep in enumerate(episodes):
        ep.source = f"ep{i}.h5"
        ep.frames = ep.frames + np.uint8(i * 8)  # each starts from its own view
    train, val = split_by_episode(episodes, 0.2, seed=3)
    again, _ = split_by_episode(episodes, 0.2, seed=3)
    other, _ = split_by_episode(episodes, 0.2, seed=4)
    assert [e.source for e in train] == [e.source for e in again] != [e.source for e in other]
    assert len(val) == 4 and {e.instruction for e in val} == {LEFT, RIGHT}
    assert not {e.source for e in train} & {e.source for e in val}
    single = split_by_episode(episodes[:1], 0.5, seed=0)
    assert len(single[0]) == 1 and not single[1]  # never leaves an instruction without training data


def test_twins_that_start_from_the_same_view_stay_on_one_side_of_the_split():
    """The simulator records each layout under both instructions: a left episode in validation
    whose right twin trains would be judged on frames the policy has seen."""
    episodes = []
    for scene in range(10):
        for instruction in (LEFT, RIGHT):
            twin = episode(8, instruction)
            twin.frames, twin.source = twin.frames + np.uint8(scene * 8), f"scene{scene}-{instruction[-5:]}.h5"
            episodes.append(twin)
    train, val = split_by_episode(episodes, 0.2, seed=0)
    scene_of = {e.source: e.source.split("-")[0] for e in episodes}
    assert len(val) == 4 and {e.instruction for e in val} == {LEFT, RIGHT}
    assert not {scene_of[e.source] for e in train} & {scene_of[e.source] for e in val}


def test_correction_episodes_are_never_held_out_for_validation():
    episodes = [episode(8, LEFT if i % 2 else RIGHT) for i in range(20)]
    for i, ep in enumerate(episodes):  # each its own scene (first frame)
        ep.frames, ep.source, ep.correction = ep.frames + np.uint8(i * 8), f"ep{i}.h5", i < 6
    for seed in range(5):
        train, val = split_by_episode(episodes, 0.5, seed=seed)
        assert {f"ep{i}.h5" for i in range(6)} <= {e.source for e in train}
        assert len(val) == 8 and not any(e.correction for e in val)  # round(0.5 * 7) of each side's 7 demonstrations


def test_action_range_covers_zero_and_never_collapses():
    low, high, outliers = action_range([episode(5, y=0.5), episode(5, y=0.7)])
    assert outliers == []
    assert low[0] == 0.0 and high[0] == pytest.approx(0.4) and low[1] == 0.0 and high[1] == pytest.approx(0.7)
    still = episode(5)
    still.actions[:] = 0.0
    low, high, _ = action_range([still])
    assert low == [-1.0, -1.0] and high == [1.0, 1.0]


def test_one_outlier_action_is_reported_and_does_not_set_the_range():
    episodes = [episode(40, y=0.6), episode(40, instruction=RIGHT, y=-0.6)]
    for item in episodes:
        item.actions[:, 0] = np.linspace(0.1, 0.4, 40)
    episodes[1].actions[7, 1] = -25.0  # a glitch: 25 m/s sideways
    low, high, outliers = action_range(episodes)
    assert low[1] == pytest.approx(-0.6) and high[1] == pytest.approx(0.6)
    assert high[0] == pytest.approx(0.4)  # legitimate extremes stay in
    assert [(o.source, o.frame, o.dim, o.value) for o in outliers] == [("test.h5", 7, 1, -25.0)]


def test_an_axis_used_in_few_frames_keeps_its_commands():
    """Sideways commands in 12 of 1000 frames: rest fills the percentiles of all frames, so the band
    comes from the moving commands; the real +-0.5 commands set the range, and a spike on the axis
    that moves all the time is still caught."""
    items = [episode(100, y=0.0) for _ in range(10)]
    for index, item in enumerate(items):
        item.actions[:, 0] = np.linspace(0.1, 0.4, 100)
        item.actions[40:42, 1] = 0.5 if index % 2 else -0.5
    items[2].actions[5, 0] = 30.0  # a glitch forward
    low, high, outliers = action_range(items[:6])
    assert low[1] == pytest.approx(-0.5) and high[1] == pytest.approx(0.5)
    assert high[0] == pytest.approx(0.4)
    assert [(o.frame, o.dim, o.value) for o in outliers] == [(5, 0, 30.0)]


def test_sampler_order_depends_only_on_seed_and_epoch_and_can_skip():
    sampler = EpochShuffleSampler(10, seed=1)
    first = list(sampler)
    sampler.set_epoch(1)
    second = list(sampler)
    assert sorted(first) == list(range(10)) and first != second
    sampler.skip_once(4)
    assert list(sampler) == second[4:] and list(sampler) == second


def write_episode(directory, instruction, actions, rate=10.0, size=(20, 30)):
    writer = EpisodeWriter(directory, instruction, rate)
    for t, action in enumerate(actions):
        writer.append(np.full((*size, 3), t, np.uint8), action, t / rate)
    return writer.save()


def test_loading_resizes_skips_bad_episodes_with_a_count_and_reads_legacy(tmp_path, caplog):
    mixed = tmp_path / "mixed"
    good = write_episode(mixed, LEFT, [(0.1, 0.2, 0.0)] * 10)
    write_episode(mixed, RIGHT, [(0.1, -0.2, 0.0)] * 3)  # too short
    nan_path = write_episode(mixed, RIGHT, [(0.1, -0.2, 0.0)] * 10)
    with h5py.File(nan_path, "r+") as h5:
        h5["actions"][4, 1] = np.nan
    blank = write_episode(mixed, RIGHT, [(0.1, -0.2, 0.0)] * 10)
    with h5py.File(blank, "r+") as h5:
        h5["language_instruction"][0] = b" "
    (mixed / "episode_9999_corrupt_left.h5").write_bytes(b"not an hdf5 file")
    nameless = mixed / "episode_20250101_000000_unnamed.h5"  # legacy, no instruction anywhere
    write_legacy_episode(nameless, np.zeros((10, 16, 16, 3), np.uint8), np.zeros((10, 3), np.float32))
    legacy_dir = tmp_path / "lab"
    legacy_dir.mkdir()
    bgr = np.zeros((9, 12, 16, 3), np.uint8)
    bgr[..., 0] = 200  # blue in BGR
    write_legacy_episode(
        legacy_dir / "episode_20250101_000001_1box_hori_right_core_medium.h5", bgr, np.tile([[0.0, -1.15, 0.0]], (9, 1))
    )

    with caplog.at_level("WARNING"):
        episodes, report = load_training_episodes([mixed], image_size=24, min_frames=8)
    assert [e.source for e in episodes] == [str(good)]
    assert episodes[0].frames.shape == (10, 24, 24, 3) and episodes[0].frames.dtype == np.uint8
    assert report.total == 6 and len(report.skipped) == 5
    reasons = " ".join(reason for _, reason in report.skipped)
    for expected in ("too short", "non-finite actions", "no instruction", "unreadable", "names neither"):
        assert expected in reasons
    assert "skipped 5 of 6 episodes" in report.summary()
    assert sum("skipping episode" in record.message for record in caplog.records) == 5

    legacy, _ = load_training_episodes([legacy_dir], image_size=24, min_frames=8, legacy_action_dt=0.4)
    assert legacy[0].instruction == RIGHT and legacy[0].action_dt == 0.4
    assert legacy[0].frames[0, 0, 0].tolist() == [0, 0, 200]  # converted to RGB
    with pytest.raises(DatasetError, match="different rates"):
        common_action_dt(episodes + legacy)


def test_no_usable_episode_is_a_clear_error(tmp_path):
    with pytest.raises(DatasetError, match="no \\*.h5 episode files"):
        load_training_episodes([tmp_path], 24, 8)
    write_episode(tmp_path, LEFT, [(0.1, 0.2, 0.0)] * 3)
    with pytest.raises(DatasetError, match="skipped 1 of 1 episodes \\(1 too short\\)"):
        load_training_episodes([tmp_path], 24, 8)
    with pytest.raises(DatasetError, match="missing is neither a directory nor an episode .h5 file"):
        load_training_episodes([tmp_path / "missing"], 24, 8)


def test_the_checkpoint_learns_one_camera_mounting():
    upright, flipped, legacy = (
        replace(episode(), source=name, rotated_180=rotated)
        for name, rotated in (("a.h5", False), ("b.h5", True), ("c.h5", None))
    )
    assert training_camera([upright, legacy]) == {"rotate_180": False, "color_order": "rgb", "resize": "squash"}
    assert training_camera([legacy])["rotate_180"] is None  # not recorded: the node warns instead
    with pytest.raises(DatasetError, match=r"1 rotated by 180°, e.g. b.h5; 1 not, e.g. a.h5"):
        training_camera([upright, flipped, legacy])


def test_instruction_over_the_limit_is_skipped_with_a_count(tmp_path):
    """201-256 characters fit the episode file but not the policy: skipped when loading, not a
    crash at the first training batch."""
    from mobile_vla_ros.policy.instructions import MAX_INSTRUCTION_CHARS

    write_episode(tmp_path, LEFT, [(0.1, 0.2, 0.0)] * 10)
    write_episode(tmp_path, "go " + "x" * (MAX_INSTRUCTION_CHARS + 20) + " left", [(0.1, 0.2, 0.0)] * 10)
    write_episode(tmp_path, "y" * MAX_INSTRUCTION_CHARS, [(0.1, 0.2, 0.0)] * 10)  # exactly the limit: kept
    episodes, report = load_training_episodes([tmp_path], 24, 8)
    assert len(episodes) == 2
    assert "skipped 1 of 3 episodes (1 instruction too long)" in report.summary()
    assert f"the limit is {MAX_INSTRUCTION_CHARS}" in report.skipped[0][1]


def test_synthetic_twins_agree_with_mirror_augmentation():
    """The mirror image of a synthetic left episode (box at 1 - across, right instruction, linear_y
    negated) is what the generator itself would record as a right episode there."""
    from mobile_vla_ros.training.synthetic import pair_frames, twin_actions

    images, reading = pair_frames(np.random.default_rng(0), 12, 64)
    left = TrainingEpisode(images, twin_actions(reading, "left"), LEFT, "left.h5", 0.1)
    mirrored = left.mirror()
    flipped = reading.copy()
    flipped[:, 1] = 1.0 - reading[:, 1]
    np.testing.assert_allclose(mirrored.actions, twin_actions(flipped, "right"), atol=1e-6)
    assert mirrored.instruction == RIGHT
    assert np.ptp(left.actions[:, 1]) > 0.05  # the sideways speed follows the frames

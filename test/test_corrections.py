"""Takeovers as correction episodes (control/corrections.py) on real H5 files, without ROS."""

from __future__ import annotations

import numpy as np
import pytest

from mobile_vla_ros.control.corrections import CorrectionRecorder, CorrectionSettings, Sample
from mobile_vla_ros.control.stamps import nanoseconds as ns
from mobile_vla_ros.data.correction_episodes import CORRECTION_COLUMNS, HUMAN, POLICY_ACTIONS, human_frames
from mobile_vla_ros.data.episode import list_episodes, read_episode
from mobile_vla_ros.data.episode_recovery import recover_partial_episodes
from mobile_vla_ros.data.episode_writer import EpisodeWriter
from mobile_vla_ros.policy.instructions import LAB_INSTRUCTIONS

DT = 0.1
DT_NS = ns(DT)
POLICY = np.array([0.3, 0.5])
PERSON = np.array([0.2, -0.4])


def recorder(directory, context_s=0.5, end_hold_s=0.3, flush_interval_s=1.0):
    def open_episode():
        return EpisodeWriter(
            directory,
            LAB_INSTRUCTIONS["left"],
            1 / DT,
            extra_columns=CORRECTION_COLUMNS,
            correction=True,
            flush_interval_s=flush_interval_s,
        )

    return CorrectionRecorder(CorrectionSettings(context_s, end_hold_s), DT, open_episode)


def drive(rec, human_pattern: str, t0_ns: int = 0):
    """One sample per character: '.' the policy drives, 'H' the person does. Returns saved paths."""
    saved = []
    for index, mark in enumerate(human_pattern):
        human = mark == "H"
        frame = np.full((16, 16, 3), index, np.uint8)
        path = rec.on_sample(Sample(frame, t0_ns + index * DT_NS, PERSON if human else POLICY, POLICY, human))
        if path is not None:
            saved.append(path)
    return saved


def test_without_a_takeover_nothing_is_written(tmp_path):
    rec = recorder(tmp_path)
    assert drive(rec, "." * 50) == [] and not rec.recording and not list(tmp_path.iterdir())


def test_each_takeover_is_one_episode_with_its_context_and_both_action_streams(tmp_path):
    rec = recorder(tmp_path, context_s=0.5, end_hold_s=0.3)
    saved = drive(rec, "." * 20 + "HHHH" + "." * 5 + "HH" + "." * 10)
    assert len(saved) == 2 and list_episodes(tmp_path) == saved
    first = read_episode(saved[0])
    # 0.5 s of context = 5 samples, the 4 human ones, then 0.3 s (3 samples) until the end hold
    human = human_frames(first)
    assert human.tolist() == [False] * 5 + [True] * 4 + [False] * 3
    assert first.images[5, 0, 0, 0] == 20  # the first human frame is the 21st sample
    np.testing.assert_allclose(first.actions[human, :2], np.tile(PERSON, (4, 1)))
    np.testing.assert_allclose(first.actions[~human, :2], np.tile(POLICY, (8, 1)))
    np.testing.assert_allclose(first.extras[POLICY_ACTIONS], np.tile(POLICY, (12, 1)))
    # the second context starts after the first episode ended: frames are never saved twice
    assert human_frames(read_episode(saved[1])).tolist() == [False] * 2 + [True] * 2 + [False] * 3
    assert first.attrs["correction"] and first.extras[HUMAN].dtype == bool


def test_a_takeover_interrupted_by_a_crash_is_recovered_with_its_columns(tmp_path):
    rec = recorder(tmp_path, flush_interval_s=0.0)
    drive(rec, "..HHHHHH")
    assert rec.recording  # the process dies here: nothing saved, the partial file flushed
    rec._episode._h5.flush()
    recovered = recover_partial_episodes(tmp_path)
    episode = read_episode(recovered[0])
    assert episode.flags["truncated"] and len(episode.extras[HUMAN]) == episode.num_frames >= 6
    assert human_frames(episode).sum() >= 4


def test_a_plain_episode_has_no_human_frames(tmp_path):
    writer = EpisodeWriter(tmp_path, LAB_INSTRUCTIONS["right"], 10.0)
    writer.append(np.zeros((8, 8, 3), np.uint8), [0, 0, 0], 0.0)
    assert human_frames(read_episode(writer.save())) is None


def test_settings_shorter_than_a_sample_are_refused():
    with pytest.raises(ValueError, match="end_hold_s"):
        CorrectionSettings(2.0, 0.05).validate(DT)


def test_inspect_shows_the_person_and_the_policy_side_by_side(tmp_path, capsys):
    from mobile_vla_ros.cli.main import main

    rec = recorder(tmp_path / "corrections", context_s=0.5, end_hold_s=0.3)
    path = drive(rec, "." * 10 + "H" * 6 + "." * 5)[0]
    png = tmp_path / "correction.png"
    assert main(["inspect", "--data", str(path), "--png", str(png)]) == 0
    out = capsys.readouterr().out
    assert "the person drove 6 of 14 frames (from #5); policy proposals on 6 of them" in out
    assert "|person - policy| mean: linear_x 0.100, linear_y 0.900" in out
    assert png.stat().st_size > 10_000
    assert main(["inspect", "--data", str(tmp_path / "corrections")]) == 0
    assert "1 readable (0 legacy, 0 truncated, 1 corrections)" in capsys.readouterr().out

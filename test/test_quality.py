"""Quality checks at record time: each fault fed through the real recorder and episode files gives
its verdict (stored, in the state and log line, listed by inspect); training leaves flagged
windows out and counts them."""

from __future__ import annotations

import h5py
import numpy as np

from mobile_vla_ros.cli.inspect import summarise_directory
from mobile_vla_ros.control.recording import EpisodeRecorder, RecorderSettings
from mobile_vla_ros.data.clips import WindowDataset
from mobile_vla_ros.data.episode import read_episode
from mobile_vla_ros.data.episode_writer import EpisodeWriter
from mobile_vla_ros.data.legacy_episode import write_legacy_episode
from mobile_vla_ros.data.quality import QualityRules, check_episode
from mobile_vla_ros.data.windows import load_training_episodes
from mobile_vla_ros.policy.instructions import LAB_INSTRUCTIONS

RATE = 10.0
MOVE = (0.3, 0.2, 0.0)


def decode(value):
    return np.full((8, 8, 3), value % 256, np.uint8)


def record(tmp_path, samples, instruction="left", changes=None):
    """Record one episode: `samples` is a list of (frame value or None for no new frame,
    command or None for no new command). Returns (outcome, recorder)."""
    recorder = EpisodeRecorder(
        RecorderSettings(sample_rate_hz=RATE, command_timeout_s=0.5, camera_lag_s=0.2),
        lambda text: EpisodeWriter(tmp_path, text, RATE),
        decode,
        on_change=lambda status, message: changes.append((status, message)) if changes is not None else None,
    )
    assert recorder.set_instruction(instruction).ok
    recorder.on_frame(0, 0.0)
    recorder.on_command((0, 0, 0), 0.0)
    assert recorder.start(0.0, 1).ok
    for step, (frame, command) in enumerate(samples):
        now = step / RATE
        if command is not None:
            recorder.on_command(command, now - 0.01)
        if frame is not None:
            recorder.on_frame(frame, now - 0.01)
        recorder.tick(now)
    return recorder.stop_and_save(), recorder


def codes(path) -> dict:
    return {verdict.code: verdict for verdict in read_episode(path, frame_indices=[]).stored_verdicts}


def good(count=20):
    return [(t + 1, MOVE) for t in range(count)]


def test_a_clean_episode_has_no_verdict_and_says_ok(tmp_path):
    changes = []
    outcome, recorder = record(tmp_path, good(), changes=changes)
    assert outcome.ok and codes(outcome.path) == {}
    assert changes[-1][1].endswith("quality: ok") and changes[-1][0]["last_quality"] == []


def test_too_short_for_a_window(tmp_path):
    changes = []
    outcome, recorder = record(tmp_path, good(5), changes=changes)
    verdict = codes(outcome.path)["too_short"]
    assert verdict.severity == "reject" and verdict.frames == 5
    assert "too_short 5 frames" in outcome.message and "too_short" in changes[-1][1]
    assert [v["code"] for v in recorder.status()["last_quality"]] == ["too_short"]


def test_camera_lag_samples(tmp_path):
    samples = good(20)
    samples[5] = samples[6] = (None, MOVE)  # no new frame for two samples
    verdict = codes(record(tmp_path, samples)[0].path)["camera_lag"]
    assert verdict.severity == "trim" and verdict.frames == 2


def test_stale_command_samples(tmp_path):
    samples = [(t + 1, MOVE if t < 5 else None) for t in range(20)]  # teleop falls silent while moving
    verdict = codes(record(tmp_path, samples)[0].path)["command_stale"]
    assert verdict.frames == 20 - 5 - 5  # stale once the last command is older than 0.5 s


def test_long_idle_stretch(tmp_path):
    samples = [(t + 1, (0, 0, 0)) for t in range(35)] + good(10)  # 3.5 s standing still, then driving
    verdict = codes(record(tmp_path, samples)[0].path)["idle_stretch"]
    assert verdict.severity == "trim" and verdict.frames == 35 - 20  # past the first 2 s


def test_saturated_commands(tmp_path):
    samples = [(t + 1, (1.15, 0.0, 0.0)) for t in range(20)]
    assert codes(record(tmp_path, samples)[0].path)["saturated"].severity == "warn"
    assert "saturated" not in codes(record(tmp_path, good(20))[0].path)


def test_unknown_instruction(tmp_path):
    found = codes(record(tmp_path, good(), instruction="drive to the kitchen")[0].path)
    assert found["instruction_unknown"].severity == "warn"


def test_missing_instruction_is_rejected():
    quality = check_episode(np.tile(MOVE, (20, 1)), "  ", RATE)
    assert [v.code for v in quality.verdicts] == ["instruction_missing"] and quality.rejected


def test_frozen_image_while_moving(tmp_path):
    samples = good(20)
    for t in range(8, 12):
        samples[t] = (9, MOVE)  # new messages, identical pixels
    verdict = codes(record(tmp_path, samples)[0].path)["frozen_image"]
    assert verdict.frames == 3  # samples 9..11 equal their predecessor (sample 8 shows 9 after 8)


def test_identical_frames_of_a_standing_robot_are_not_frozen():
    digests = np.zeros(20, np.uint32)
    quality = check_episode(
        np.zeros((20, 3)), LAB_INSTRUCTIONS["left"], RATE, QualityRules(max_idle_s=5), frame_digests=digests
    )
    assert "frozen_image" not in [v.code for v in quality.verdicts]


def test_inspect_lists_verdicts_and_training_leaves_flagged_windows_out(tmp_path, caplog):
    data = tmp_path / "data"
    record(data, good(20))
    lagged = good(20)
    lagged[5] = lagged[6] = (None, MOVE)
    record(data, lagged)
    record(data, good(4))  # too short
    listing = summarise_directory(data)
    assert "quality: 2 of 3 episodes flagged (camera_lag x1, too_short x1)" in listing
    assert "trim camera_lag (2 frames)" in listing and "reject too_short (4 frames)" in listing

    with caplog.at_level("WARNING"):
        episodes, report = load_training_episodes([data], image_size=8, min_frames=8)
    assert len(episodes) == 2 and len(report.skipped) == 1
    assert report.windows_total == 40 and report.windows_left_out == 2 and report.left_out_by == {"camera_lag": 2}
    assert "2 of 40 windows left out (camera_lag 2)" in report.summary()
    dataset = WindowDataset(episodes, window_size=8, chunk_size=4, clip_length=16)
    assert dataset.num_windows == 38
    lagged_episode = next(e for e in episodes if not e.usable_windows.all())
    trained_t = sorted(
        t
        for clip in dataset.clips
        if dataset.episodes[clip.episode] is lagged_episode
        for t in range(clip.start, clip.stop)
    )
    assert trained_t == [t for t in range(20) if t not in (5, 6)]


def test_files_recorded_before_the_checks_are_judged_when_read(tmp_path):
    path = write_legacy_episode(
        tmp_path / "episode_20250101_000000_left.h5",
        np.zeros((30, 8, 8, 3), np.uint8),
        np.tile([0.0, 1.15, 0.0], (30, 1)).astype(np.float32),
    )
    episode = read_episode(path, frame_indices=[])
    assert episode.stored_verdicts is None and episode.frame_digests is None
    assert [v.code for v in episode.quality().verdicts] == ["saturated"]
    assert "saturated x1" in summarise_directory(tmp_path)


def test_schema_1_files_without_digests_or_verdicts_still_read(tmp_path):
    outcome, _ = record(tmp_path, good(10))
    with h5py.File(outcome.path, "r+") as h5:  # what a schema 1 recorder wrote
        del h5["frame_crc32"]
        del h5.attrs["quality"]
        h5.attrs["schema_version"] = 1
    episode = read_episode(outcome.path)
    assert episode.num_frames == 10 and episode.stored_verdicts is None and episode.quality().verdicts == []


def test_train_reports_the_windows_it_left_out(tmp_path, train_one_step, capsys):
    data = tmp_path / "data"
    lagged = good(20)
    lagged[5] = lagged[6] = (None, MOVE)
    record(data, lagged)
    record(data, good(20), instruction="right")
    record(data, good(4))  # too short
    model = tmp_path / "model"
    summary = train_one_step(data, model)
    assert summary["episodes"]["skipped"] == 1
    assert summary["windows"]["left_out"] == 2 and summary["windows"]["left_out_by"] == {"camera_lag": 2}
    assert summary["windows"]["train"] == 2 * 38  # both episodes and their mirrors, 2 windows fewer in one pair
    assert "windows left out        2 flagged" in capsys.readouterr().out

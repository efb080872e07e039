"""The recorder's state machine, with real episode files."""

from __future__ import annotations

import numpy as np
import pytest

from mobile_vla_ros.control.recording import (
    CommandHistory,
    EpisodeButtonReader,
    EpisodeButtons,
    EpisodeRecorder,
    RecorderSettings,
)
from mobile_vla_ros.data.episode import read_episode
from mobile_vla_ros.data.episode_writer import EpisodeWriter
from mobile_vla_ros.errors import ImageError
from mobile_vla_ros.policy.instructions import LAB_INSTRUCTIONS, MAX_INSTRUCTION_CHARS, expand_instruction

SETTINGS = RecorderSettings(sample_rate_hz=10.0, camera_timeout_s=0.5, command_timeout_s=0.5, camera_lag_s=0.2)


def decode(value):
    if value is None:
        raise ImageError("broken frame")
    return np.full((8, 8, 3), value, np.uint8)


@pytest.fixture
def changes():
    return []


@pytest.fixture
def recorder(tmp_path, changes):
    return EpisodeRecorder(
        SETTINGS,
        lambda instruction: EpisodeWriter(tmp_path, instruction, 10.0),
        decode,
        on_change=lambda status, message: changes.append((status["state"], message)),
    )


def test_records_frames_paired_with_the_command_in_force_at_their_stamp(recorder, tmp_path, changes):
    assert recorder.set_instruction("left").ok and recorder.instruction == LAB_INSTRUCTIONS["left"]
    recorder.on_command((0, 0, 0), 0.0)
    recorder.on_frame(1, 0.95)
    assert recorder.start(1.0, command_publishers=1).ok
    recorder.tick(1.0)  # frame stamped 0.95: command (0,0,0)
    recorder.on_command((0.3, 0.1, 0), 1.02)
    recorder.on_frame(2, 1.05)
    recorder.tick(1.1)  # frame stamped 1.05: command received at 1.02
    recorder.on_frame(3, 1.15)
    recorder.on_command((0, 0, 0), 1.17)  # arrives after the frame's stamp: not yet in force
    recorder.tick(1.2)
    recorder.on_frame(4, 1.25)
    recorder.tick(1.3)
    outcome = recorder.stop_and_save()
    assert outcome.ok and outcome.path.exists()
    episode = read_episode(outcome.path)
    assert episode.images[:, 0, 0, 0].tolist() == [1, 2, 3, 4]
    np.testing.assert_allclose(episode.actions, [[0, 0, 0], [0.3, 0.1, 0], [0.3, 0.1, 0], [0, 0, 0]], atol=1e-6)
    np.testing.assert_allclose(episode.timestamps, [0.95, 1.05, 1.15, 1.25])
    assert episode.event_types == ["episode_start", "start_action", "step", "stop_action"]
    assert episode.flags["idle"].tolist() == [True, False, False, True]
    assert not episode.flags["camera_lag"].any()
    assert [state for state, _ in changes] == ["idle", "recording", "saving", "idle"]
    assert recorder.episodes_saved == 1


def test_camera_lag_is_flagged(recorder):
    recorder.set_instruction("right")
    recorder.on_frame(1, 0.0)
    recorder.start(0.0, 1)
    recorder.tick(0.0)
    assert recorder.tick(0.1).message == "waiting for a fresh frame"
    recorder.tick(0.2)  # none within the grace: frame 1 again, flagged; waits again
    assert recorder.on_frame(2, 0.21, now_s=0.23).ok  # within the grace: the waiting sample takes it
    recorder.tick(0.3)
    recorder.on_frame(3, 0.25, now_s=0.38)  # after the grace: the waiting sample keeps frame 2, flagged
    recorder.on_frame(4, 0.5, now_s=0.51)  # nothing waits for it
    recorder.tick(0.55)
    recorder.on_frame(5, 0.40, now_s=0.62)
    recorder.tick(0.65)  # fresh, but captured 0.25 s before: too old
    episode = read_episode(recorder.stop_and_save().path)
    assert episode.images[:, 0, 0, 0].tolist() == [1, 1, 2, 2, 4, 5]
    assert episode.flags["camera_lag"].tolist() == [False, True, False, True, False, True]


def test_stale_inputs_refuse_start(recorder):
    assert "no instruction" in recorder.start(0.0, 1).message
    recorder.set_instruction("left")
    assert "no camera frame" in recorder.start(0.0, 1).message
    recorder.on_frame(1, 0.0)
    outcome = recorder.start(2.0, 1)
    assert not outcome.ok and "camera is stale" in outcome.message
    assert "nothing publishes" in recorder.start(0.1, 0).message
    recorder.on_command((0.5, 0, 0), 0.0)
    recorder.on_frame(2, 0.9)
    assert "stopped while moving" in recorder.start(1.0, 1).message
    recorder.on_command((0, 0, 0), 0.95)  # a stop makes silence fine
    assert recorder.start(1.0, 1).ok and recorder.state.value == "recording"


def test_silent_command_stream_reads_as_stale_zero():
    history = CommandHistory(timeout_s=0.5)
    history.add((0.4, 0, 0), 1.0)
    assert history.at(0.5)[0].tolist() == [0, 0, 0]
    assert history.at(1.3)[0][0] == pytest.approx(0.4)
    command, stale = history.at(1.6)
    assert command.tolist() == [0, 0, 0] and stale


def test_discard_and_empty_stop_save_nothing(recorder, tmp_path):
    recorder.set_instruction("left")
    recorder.on_frame(1, 0.0)
    recorder.start(0.0, 1)
    recorder.tick(0.0)
    assert recorder.discard().message == "discarded 1 frames"
    recorder.start(0.0, 1)
    assert recorder.stop_and_save().message == "stopped with no frames; nothing saved"
    assert list(tmp_path.iterdir()) == [] and recorder.episodes_saved == 0
    assert not recorder.discard().ok and not recorder.stop_and_save().ok


def test_instruction_locked_while_recording_and_validated(recorder):
    assert not recorder.set_instruction("").ok
    assert not recorder.set_instruction("x" * 300).ok
    assert recorder.set_instruction("go to the red chair").ok and recorder.instruction == "go to the red chair"
    recorder.on_frame(1, 0.0)
    recorder.start(0.0, 1)
    assert not recorder.set_instruction("right").ok
    assert expand_instruction("  RIGHT ") == LAB_INSTRUCTIONS["right"]


def test_the_one_instruction_limit_holds_at_its_boundary_and_in_bytes(recorder, tmp_path):
    """The limit a recorder applies is the one training applies: 200 characters, and UTF-8 text that
    fits the episode file's 256-byte field (Korean text reaches the bytes first)."""
    assert recorder.set_instruction("y" * MAX_INSTRUCTION_CHARS).ok
    refused = recorder.set_instruction("y" * (MAX_INSTRUCTION_CHARS + 1))
    assert not refused.ok and f"the limit is {MAX_INSTRUCTION_CHARS}" in refused.message
    korean = "왼쪽 병 앞으로 가세요 " * 15  # 194 characters, 464 bytes
    refused = recorder.set_instruction(korean)
    assert not refused.ok and "bytes in UTF-8" in refused.message
    recorder.set_instruction("left")
    recorder.on_frame(1, 0.0)
    assert recorder.start(0.0, 1).ok and recorder.tick(0.0).ok
    saved = recorder.stop_and_save()
    assert saved.ok and read_episode(saved.path).instruction == LAB_INSTRUCTIONS["left"]


def test_bad_frame_is_dropped_not_fatal(recorder):
    recorder.set_instruction("left")
    recorder.on_frame(None, 0.0)
    recorder.start(0.0, 1)
    outcome = recorder.tick(0.0)
    assert not outcome.ok and "broken frame" in outcome.message and recorder.dropped_samples == 1
    recorder.on_frame(5, 0.1)
    assert recorder.tick(0.1).ok


def test_buttons_act_on_press_only():
    reader = EpisodeButtonReader(EpisodeButtons(start_button=7, save_button=0, discard_button=6, instruction_axis=6))
    released, axes = [0] * 8, [0.0] * 8
    start = released[:7] + [1]
    assert reader.on_joy(axes, start) == []  # held at start-up: baseline only
    assert reader.on_joy(axes, released) == []
    assert reader.on_joy(axes, start) == ["start"]
    assert reader.on_joy(axes, start) == []  # still held
    assert reader.on_joy(axes[:6] + [1.0, 0.0], released) == ["left"]
    assert reader.on_joy(axes[:6] + [-1.0, 0.0], [1] + released[1:]) == ["save", "right"]
    assert reader.on_joy([], []) == []  # a pad with fewer inputs: nothing pressed


def test_late_sampling_counts_the_missed_periods_and_the_frame_age(recorder):
    recorder.set_instruction("left")
    recorder.on_frame(1, 0.0)
    recorder.start(0.0, 1)
    for frame, now in ((1, 0.02), (2, 0.12), (3, 0.42), (4, 0.52)):  # the timer fired late once: 0.12 -> 0.42
        recorder.on_frame(frame, now - 0.01, now - 0.004)  # captured 10 ms before the tick, received 6 ms later
        recorder.tick(now)
    status = recorder.status()
    assert status["missed_samples"] == 2 and status["frames_received"] == 4
    assert status["sample_lag_ms_p50"] == pytest.approx(10.0) and status["sample_lag_ms_p99"] == pytest.approx(10.0)
    assert status["delivery_ms_p50"] == pytest.approx(6.0) and status["delivery_ms_p99"] == pytest.approx(6.0)


def test_a_late_tick_that_the_timer_catches_up_misses_no_period(recorder):
    recorder.set_instruction("left")
    recorder.on_frame(1, 0.0)
    recorder.start(0.0, 1)
    for frame, now in ((1, 0.02), (2, 0.12), (3, 0.27), (4, 0.32), (5, 0.42)):  # 0.22 ran late, 0.32 on time
        recorder.on_frame(frame, now - 0.01)
        recorder.tick(now)
    assert recorder.status()["missed_samples"] == 0 and recorder.episodes_saved == 0
    assert recorder.stop_and_save().ok and read_episode(recorder.last_path, frame_indices=[]).num_frames == 5

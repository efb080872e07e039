"""inference_node's pure parts: the latency stages matched per window by integer-nanosecond capture
stamps (control.drive_status), its set-up from parameters (control.inference_setup), the correction
sample (control.correction_capture) and sim_node's episode clock (sim.live_episode)."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from mobile_vla_ros.control.correction_capture import correction_sample
from mobile_vla_ros.control.drive_status import DriveStatus
from mobile_vla_ros.control.familiarity import FamiliarityMonitor, FamiliaritySettings
from mobile_vla_ros.control.inference_setup import familiarity_monitor, parse_presets
from mobile_vla_ros.errors import MobileVlaError
from mobile_vla_ros.sim.live_episode import LiveEpisode
from mobile_vla_ros.sim.world import RoomConfig, World, sample_layout

S = 1_000_000_000
# Two capture stamps 1 ns apart that float seconds cannot tell apart (a 2026 ROS time).
STAMP = 1_780_000_000 * S + 123_456_789
NEIGHBOUR = STAMP + 1
TIMING = SimpleNamespace(preprocess_s=0.002, backbone_s=0.030, head_s=0.004, frames_encoded=1, frames_held=2)


def ms(status: DriveStatus, stage: str) -> float | None:
    return status.latency.percentile_ms(stage, 50)


def test_stamps_one_nanosecond_apart_are_different_windows():
    assert STAMP * 1e-9 == NEIGHBOUR * 1e-9  # why the stamps are integers
    status = DriveStatus()
    status.window_built(NEIGHBOUR, NEIGHBOUR + 5_000_000)
    status.window_received(STAMP, STAMP + 20_000_000, 0.001)
    assert ms(status, "window_transport") is None  # the build time of another window
    status.window_built(STAMP, STAMP + 5_000_000)
    assert ms(status, "window_transport") == pytest.approx(15.0)
    assert ms(status, "frame_age_at_build") == pytest.approx(5.0)


@pytest.mark.parametrize("built_first", [True, False])
def test_window_transport_whichever_topic_arrives_first(built_first):
    status = DriveStatus()
    steps = [
        lambda: status.window_built(STAMP, STAMP + 10_000_000),
        lambda: status.window_received(STAMP, STAMP + 17_000_000, 0.001),
    ]
    for step in steps if built_first else steps[::-1]:
        step()
    assert ms(status, "window_transport") == pytest.approx(7.0)
    assert status.counts["windows"] == 1


def test_a_step_is_matched_to_its_window_for_queue_wait_and_preprocess():
    status = DriveStatus()
    status.window_received(STAMP, STAMP, 0.003)
    status.step_done(STAMP, 0.050, STAMP + 80_000_000, TIMING)  # started 30 ms after the window arrived
    assert ms(status, "queue_wait") == pytest.approx(30.0)
    assert ms(status, "preprocess") == pytest.approx(5.0)
    assert ms(status, "inference_latency") == pytest.approx(50.0)
    assert ms(status, "backbone") == pytest.approx(30.0)
    assert (status.counts["encoded_frames"], status.counts["held_frames"]) == (1, 2)
    status.step_done(NEIGHBOUR, 0.050, STAMP + 90_000_000, None)  # no window of that stamp: no queue wait
    assert status.latency.percentile_ms("queue_wait", 100) == pytest.approx(30.0)


def test_status_values_before_and_after_samples():
    status = DriveStatus()
    monitor = FamiliarityMonitor(None, FamiliaritySettings())
    values = status.values("", "", "go left", 0, monitor)
    assert values["control_rate_hz"] == "" and values["familiarity"] == "off" and values["chunks"] == "0"
    assert values["inference_latency_ms_p95"] == ""
    for tick in range(5):
        status.control_rate.tick(tick * 0.05)
    status.familiarity_scores.add(2.0)
    values = status.values("DRIVING", "ok", "go left", 3, monitor)
    assert values["control_rate_hz"] == "20.00" and values["control_period_ms_p99"] == "50.0"
    assert values["skipped_windows"] == "3" and values["familiarity_p50"] == "2"
    status.start_period()
    assert status.values("DRIVING", "ok", "go left", 3, monitor)["familiarity_p50"] == ""


def test_presets_and_their_refusals():
    assert parse_presets(["Home = go to the dock", "x=y=z"]) == {"home": "go to the dock", "x": "y=z"}
    assert parse_presets(None) == {}
    for entry in ("no separator", "=text", "name= "):
        with pytest.raises(MobileVlaError, match="instruction_presets entry"):
            parse_presets([entry])


def test_familiarity_monitor_from_the_calibration():
    calibration = {"thresholds": {"p99.9": 12.0, "p99": 9.0}}
    assert familiarity_monitor(FamiliaritySettings(threshold="p99"), calibration).threshold == 9.0
    assert not familiarity_monitor(FamiliaritySettings(), {}).active  # uncalibrated: off
    with pytest.raises(
        MobileVlaError, match="familiarity_action must be .*; familiarity_threshold must be one of p99.9, p99,"
    ):
        familiarity_monitor(FamiliaritySettings(action="off", threshold="p50"), calibration)


def test_correction_sample_is_the_persons_command_while_they_are_in_charge():
    frame, executed = np.zeros((2, 2, 3), np.uint8), np.array([0.2, 0.0])
    policy = correction_sample(frame, 1_500_000_000, executed, None, None)
    assert not policy.human and np.array_equal(policy.action, executed) and np.isnan(policy.proposal).all()
    human = correction_sample(frame, 1_500_000_000, executed, np.array([0.0, 0.3]), np.array([0.1, 0.1]))
    assert human.human and np.array_equal(human.action, [0.0, 0.3]) and np.array_equal(human.proposal, [0.1, 0.1])


def test_live_episode_holds_the_start_and_stops_on_a_stale_command():
    room = RoomConfig()
    episode = LiveEpisode(World(sample_layout(0, 0, room), room), 0, release_ns=S)
    start = (episode.world.state.x, episode.world.state.y)
    episode.command((0.5, 0.0), 0)
    episode.advance(S, command_timeout_ns=10 * S)
    assert (episode.world.state.x, episode.world.state.y) == start  # held until the release
    episode.advance(S + S // 10, command_timeout_ns=10 * S)
    moved = episode.world.state.x
    assert moved == pytest.approx(start[0] + 0.05)
    episode.advance(S + S // 5, command_timeout_ns=S // 2)  # the command is 1.2 s old: zero
    assert episode.world.state.x == moved


def test_live_episode_reports_its_end_once():
    room = RoomConfig(time_limit_s=0.5)
    episode = LiveEpisode(World(sample_layout(0, 0, room), room), 0, release_ns=0)
    assert not episode.advance(S // 4, command_timeout_ns=S)
    assert episode.advance(S, command_timeout_ns=S) and episode.ended_ns == S
    assert not episode.advance(2 * S, command_timeout_ns=S) and episode.ended_ns == S

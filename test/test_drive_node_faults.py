# ruff: noqa: F811 - the fixtures of test_drive_nodes.py, imported by name, are parameters here
"""inference_node's stops and faults over real DDS (the harness of test_drive_nodes.py): disabling
and stopping do not wait for a slow step, a dead worker and a window from the future fault the node,
and settings that policy.json alone refutes are refused before the model loads."""

from __future__ import annotations

import json
import shutil
import time

import numpy as np
import pytest

rclpy = pytest.importorskip("rclpy")
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402
from sensor_msgs.msg import Image  # noqa: E402
from std_msgs.msg import Bool  # noqa: E402
from test_drive_nodes import camera_on, ros, start_inference, wait_for_motion, wait_until  # noqa: E402, F401

from mobile_vla_ros.nodes.inference_node import STEP_DELAY_ENV, InferenceNode  # noqa: E402
from mobile_vla_ros.nodes.ros_image import rgb_to_image_msg  # noqa: E402
from mobile_vla_ros.policy.config import PolicyConfig  # noqa: E402

pytestmark = pytest.mark.ros

STOP_WITHIN_S = 0.3  # the bound from the stop request to the zero on cmd_vel


def zeros_after(harness, t0: float) -> np.ndarray:
    twists = harness.twists_since(t0)
    assert len(twists), "no cmd_vel after the stop"
    return twists


def test_enable_false_zeroes_at_once_and_the_step_in_flight_is_discarded(start_inference, camera_on, monkeypatch):
    monkeypatch.setenv(STEP_DELAY_ENV, "0.25")  # steps back to back: one is in flight almost always
    start_inference(max_accel=50.0)
    harness = camera_on
    enable_pub = harness.create_publisher(Bool, "enable", 10)
    wait_until(lambda: enable_pub.get_subscription_count() > 0, 3, "enable subscriber")
    wait_for_motion(harness, +1)
    with harness.lock:
        answered_before = len(harness.answered)
    t0 = harness.now()
    enable_pub.publish(Bool(data=False))
    time.sleep(1.0)
    twists = zeros_after(harness, t0)
    assert twists[0, 0] - t0 <= STOP_WITHIN_S and np.all(twists[:, 1:] == 0.0), twists[:5]
    with harness.lock:
        sources = [source for _, _, source in harness.answered[answered_before:]]
    assert "dropped" in sources, sources  # the step running at the stop was thrown away, and said so
    harness.destroy_publisher(enable_pub)


def test_stop_publishes_the_zero_first_and_does_not_wait_for_a_slow_step(start_inference, camera_on, monkeypatch):
    monkeypatch.setenv(STEP_DELAY_ENV, "3.0")
    node = start_inference()
    harness = camera_on
    wait_until(lambda: node.status.counts["windows"] >= 3, 10, "windows (a step in flight)")
    started = time.monotonic()
    node.stop()
    assert time.monotonic() - started < 1.0, "stop waited for the step in flight"
    time.sleep(3.5)  # the step finishes meanwhile: nothing of it may go out
    with harness.lock:
        last = harness.full_twists[-1]
    assert (last.linear.x, last.linear.y) == (0.0, 0.0)
    assert node.status.counts["chunks"] == 0


def test_a_dead_worker_faults_the_node_with_the_reason(start_inference, camera_on):
    node = start_inference(max_accel=50.0)
    harness = camera_on
    levels = []
    sub = harness.create_subscription(
        DiagnosticArray, "/diagnostics", lambda msg: levels.extend(s.level for s in msg.status), 10
    )
    wait_for_motion(harness, +1)

    def broken(chunk, stamp, latency):
        raise KeyError("a bug in the chunk callback")

    node.worker._on_chunk = broken  # any exception in the worker thread, here where chunks arrive
    status = wait_until(
        lambda: harness.status if harness.status.get("state") == "FAULT" else None, 5, "the FAULT status"
    )
    assert "inference worker died: KeyError" in status["reason"]
    assert not node.worker.alive
    t0 = harness.now()
    time.sleep(0.5)
    assert np.all(zeros_after(harness, t0)[:, 1:] == 0.0)
    assert DiagnosticStatus.ERROR in levels
    harness.destroy_subscription(sub)


def test_a_window_from_the_future_is_refused_and_later_windows_still_drive(start_inference, camera_on, tiny_checkpoint):
    config = PolicyConfig.load(tiny_checkpoint)
    node = start_inference(max_accel=50.0)
    harness = camera_on
    wait_for_motion(harness, +1)
    window_pub = harness.create_publisher(Image, "window", 10)
    wait_until(lambda: window_pub.get_subscription_count() > 0, 3, "window subscriber")
    future = harness.now() + 30.0
    stack = np.zeros((config.window_size * config.image_size, config.image_size, 3), np.uint8)
    msg = rgb_to_image_msg(stack, rclpy.time.Time(nanoseconds=round(future * 1e9)).to_msg(), "camera")
    window_pub.publish(msg)

    def refused():
        with harness.lock:
            return any(abs(stamp - future) < 1e-3 and source == "rejected" for stamp, _, source in harness.answered)

    wait_until(refused, 5, "the future window answered as rejected")
    assert node.status.counts["bad_windows"] >= 1
    assert node.controller._window_stamp_ns < (harness.now() + 1.0) * 1e9, "the future stamp pinned the camera watchdog"
    wait_for_motion(harness, +1)  # later windows drive again
    harness.destroy_publisher(window_pub)


def test_a_stale_timeout_policy_json_refutes_is_refused_before_the_model_loads(ros, tiny_checkpoint, tmp_path):
    """A 2.5 Hz policy: 0.5 s is shorter than 2 windows + a tick; the base model directory does not even
    exist, so a refusal that names the timeout came before any loading."""
    model = shutil.copytree(tiny_checkpoint, tmp_path / "slow_policy")
    config = json.loads((model / "policy.json").read_text())
    config["action_dt"] = 0.4
    (model / "policy.json").write_text(json.dumps(config))
    context = ros[0]

    def node(**params):
        values = {"model_dir": str(model), "base_model_dir": str(tmp_path / "absent"), "device": "cpu", **params}
        return InferenceNode(context=context, parameter_overrides=[Parameter(k, value=v) for k, v in values.items()])

    started = time.monotonic()
    with pytest.raises(ValueError, match=r"camera_stale_timeout_s = 0.5 s is shorter .* = 0.85 s"):
        node(camera_stale_timeout_s=0.5)
    assert time.monotonic() - started < 2.0
    with pytest.raises(Exception, match="absent"):  # left at 0: derived (1.25 s), accepted, then the load fails
        node()

# ruff: noqa: F811 - the fixtures of test_ros2_commands.py, imported by name, are parameters here
"""drive.launch.py with the real ROS 2 tools (the harness of test_ros2_commands.py): a policy trained
on the lab's legacy 2.5 Hz layout drives with the shipped drive.yaml, and Ctrl-C or `enable: false`
while a 5 s inference step is in flight leaves a zero on cmd_vel within 0.3 s."""

from __future__ import annotations

import signal
import threading
import time
from pathlib import Path

import pytest

pytest.importorskip("rclpy")
from geometry_msgs.msg import Twist  # noqa: E402
from sensor_msgs.msg import TimeReference  # noqa: E402
from std_msgs.msg import Bool  # noqa: E402
from test_ros2_commands import (  # noqa: E402, F401
    CONTROL_RATE_HZ,
    Launch,
    listener,
    ros2_env,
    start_drive,
    wait_for,
)

from mobile_vla_ros.nodes.inference_node import STEP_DELAY_ENV  # noqa: E402
from mobile_vla_ros.policy.config import PolicyConfig  # noqa: E402

pytestmark = pytest.mark.ros

REPO = Path(__file__).resolve().parents[1]
STOP_WITHIN_S = 0.3
SLOW_STEP_S = 5.0


@pytest.fixture(scope="module")
def legacy_policy(tiny_base_model, tmp_path_factory):
    """`mobile-vla train` (one step, config/train_tiny.yaml) on episodes in the lab's legacy layout:
    no timestamps, so frames 0.4 s apart (2.5 Hz)."""
    from mobile_vla_ros.cli.main import main
    from mobile_vla_ros.training.synthetic import write_mirrored_dataset

    data, out = tmp_path_factory.mktemp("lab_legacy"), tmp_path_factory.mktemp("legacy_policy")
    write_mirrored_dataset(data, pairs=2, frames=12, size=48, legacy=True)
    arguments = ["train", "--data", str(data), "--base-model", str(tiny_base_model), "--out", str(out)]
    arguments += ["--config", str(REPO / "config" / "train_tiny.yaml"), "--max-steps", "1"]
    assert main([*arguments, "--set", "data.val_fraction=0"]) == 0
    assert PolicyConfig.load(out).action_dt == pytest.approx(0.4)
    return out


def launch_environments(launch: Launch) -> dict[str, dict[str, str]]:
    """The environment of each node process the launch started (by executable name)."""
    found = {}
    for proc in Path("/proc").iterdir():
        try:
            if not proc.name.isdigit() or int((proc / "stat").read_text().rsplit(")", 1)[1].split()[2]) != (
                launch.process.pid
            ):
                continue
            command = (proc / "cmdline").read_bytes().decode(errors="replace")
            environ = (proc / "environ").read_bytes().decode(errors="replace").split("\0")
        except (OSError, ValueError, IndexError):
            continue
        for name in ("sim_node", "inference_node", "camera_window_node"):
            if name in command:
                found[name] = dict(entry.split("=", 1) for entry in environ if "=" in entry)
    return found


def test_a_legacy_2_5_hz_policy_drives_at_the_control_rate_with_the_shipped_drive_yaml(
    ros2_env, tmp_path, legacy_policy, tiny_base_model, listener
):
    # Without ROS_LOCALHOST_ONLY in the shell: the launch must give it to the simulator's nodes itself
    # (the discovery range stays LOCALHOST here so that the test's graph stays private).
    env = {name: value for name, value in ros2_env.items() if name != "ROS_LOCALHOST_ONLY"}
    listener.states.clear()
    launch = start_drive(env, tmp_path, legacy_policy, tiny_base_model)
    try:
        if not wait_for(lambda: "DRIVING" in listener.states, 120.0):
            pytest.fail(f"never DRIVING; launch log:\n{launch.log()[-4000:]}")
        t0, flips_before = time.monotonic(), launch.log().count("DRIVING -> STALE")
        time.sleep(10.0)
        stamps = [t for t, _, _ in listener.since(t0)]
        rate = (len(stamps) - 1) / (stamps[-1] - stamps[0])
        print(f"legacy 2.5 Hz policy: cmd_vel at {rate:.2f} Hz over 10 s")
        assert abs(rate - CONTROL_RATE_HZ) <= 0.1 * CONTROL_RATE_HZ, f"cmd_vel at {rate:.1f} Hz"
        assert launch.log().count("DRIVING -> STALE") == flips_before, launch.log()[-3000:]
        assert "camera_stale_timeout_s = 1.25 s from the model" in launch.log()
        assert "chunk_stale_timeout_s = 2.45 s from the model" in launch.log()
        environments = launch_environments(launch)
        assert set(environments) == {"sim_node", "inference_node", "camera_window_node"}, environments
        for name, environment in environments.items():
            assert environment.get("ROS_LOCALHOST_ONLY") == "1", name
            assert environment.get("ROS_AUTOMATIC_DISCOVERY_RANGE") == "LOCALHOST", name
            assert environment.get("ROS_DOMAIN_ID") == env["ROS_DOMAIN_ID"], "the user's domain is kept"
        code = launch.signal_group(signal.SIGINT)
    except BaseException:
        launch.kill()
        raise
    assert code == 0, launch.log()[-3000:]


def test_enable_false_and_ctrl_c_during_a_5_s_step_leave_a_zero_within_0_3_s(
    ros2_env, tmp_path, tiny_checkpoint, tiny_base_model, listener
):
    answered: list[str] = []
    enable_pub = listener.create_publisher(Bool, "/enable", 10)
    teleop_pub = listener.create_publisher(Twist, "/cmd_vel_teleop", 10)
    answered_sub = listener.create_subscription(
        TimeReference, "/window/answered", lambda msg: answered.append(msg.source), 10
    )
    launch = start_drive({**ros2_env, STEP_DELAY_ENV: str(SLOW_STEP_S)}, tmp_path, tiny_checkpoint, tiny_base_model)
    teleop_on = threading.Event()

    def teleop():  # a person driving through the override while the policy's step is in flight
        while teleop_on.is_set():
            twist = Twist()
            twist.linear.x = 0.2
            teleop_pub.publish(twist)
            time.sleep(0.05)

    try:
        # The first 5 s step has answered: the next one is in flight from now on (windows keep coming).
        if not wait_for(lambda: "chunk" in answered, 120.0):
            pytest.fail(f"no chunk; launch log:\n{launch.log()[-4000:]}")
        assert f"{STEP_DELAY_ENV}=5" in launch.log()
        enabled_off = time.monotonic()
        enable_pub.publish(Bool(data=False))
        time.sleep(1.0)
        after = listener.since(enabled_off)
        print(f"enable false -> first zero after {after[0][0] - enabled_off:.3f} s" if after else "no cmd_vel")
        assert after and after[0][0] - enabled_off <= STOP_WITHIN_S, after[:3]
        assert all((x, y) == (0.0, 0.0) for _, x, y in after)
        assert wait_for(lambda: "dropped" in answered, SLOW_STEP_S + 5.0), answered  # the step was discarded

        enable_pub.publish(Bool(data=True))
        teleop_on.set()
        driver = threading.Thread(target=teleop, daemon=True)
        driver.start()
        assert wait_for(lambda: listener.last_twist is not None and listener.last_twist.linear.x > 0.1, 10.0)
        interrupted = time.monotonic()
        code = launch.signal_group(signal.SIGINT)
        teleop_on.clear()
        driver.join(timeout=2)
    except BaseException:
        teleop_on.clear()
        launch.kill()
        raise
    finally:
        for item in (enable_pub, teleop_pub):
            listener.destroy_publisher(item)
        listener.destroy_subscription(answered_sub)
    time.sleep(0.5)
    last_at, last_x, last_y = listener.commands[-1]
    print(f"Ctrl-C -> last cmd_vel (zero) after {last_at - interrupted:.3f} s; launch exited with {code}")
    assert (last_x, last_y) == (0.0, 0.0) and listener.last_twist == Twist()
    assert last_at - interrupted <= STOP_WITHIN_S, f"the zero came {last_at - interrupted:.3f} s after Ctrl-C"
    assert code == 0, launch.log()[-3000:]

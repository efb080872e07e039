"""Self-contained ROS graphs keep to themselves (mobile_vla_ros.ros_domain): two closed loops of
`mobile-vla demo` side by side on one machine both finish, and the caller's own domain hears none
of their topics."""

from __future__ import annotations

import fcntl
import os
import subprocess
import sys
import threading

import pytest

from mobile_vla_ros.ros_domain import DOMAIN_IDS, LOCALHOST_ONLY_ENV, claim_private_domain


def test_a_claimed_domain_is_nobody_elses_until_released(tmp_path):
    first = claim_private_domain(tmp_path)
    second = claim_private_domain(tmp_path)
    assert first.domain_id != second.domain_id and {first.domain_id, second.domain_id} <= set(DOMAIN_IDS)
    own = int(os.environ["ROS_DOMAIN_ID"])  # the suite's (conftest)
    assert own not in {first.domain_id, second.domain_id}
    assert first.env == {**LOCALHOST_ONLY_ENV, "ROS_DOMAIN_ID": str(first.domain_id)}
    # Another process starting where this one did (same pid-derived start) skips the held ids.
    probe = (
        "import sys; from pathlib import Path; from mobile_vla_ros.ros_domain import claim_private_domain; "
        "print(claim_private_domain(Path(sys.argv[1])).domain_id)"
    )
    held = {first.domain_id, second.domain_id}
    other = int(subprocess.run([sys.executable, "-c", probe, str(tmp_path)], capture_output=True, text=True).stdout)
    assert other not in held
    first.release()
    second.release()
    for domain_id in held:  # released: the lock files can be taken again
        fd = os.open(tmp_path / f"{domain_id}.lock", os.O_RDWR)
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.close(fd)


@pytest.mark.ros
def test_two_closed_loops_side_by_side_both_finish_and_the_callers_domain_hears_none(tiny_checkpoint, tiny_base_model):
    rclpy = pytest.importorskip("rclpy")
    from geometry_msgs.msg import PoseStamped, Twist
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.node import Node

    from mobile_vla_ros.demo.closed_loop import ClosedLoopSim

    # A bystander on the caller's domain (this test run's own, the user's "default" here).
    context = rclpy.Context()
    rclpy.init(context=context)
    bystander = Node("bystander", context=context)
    heard = []
    bystander.create_subscription(Twist, "/cmd_vel", heard.append, 10)
    bystander.create_subscription(PoseStamped, "/sim/pose", heard.append, 10)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(bystander)
    spinner = threading.Thread(target=executor.spin, daemon=True)
    spinner.start()
    trials, errors = {}, []
    try:
        with (
            ClosedLoopSim(tiny_checkpoint, tiny_base_model, seed=5, time_limit_s=3.0, device="cpu") as one,
            ClosedLoopSim(tiny_checkpoint, tiny_base_model, seed=5, time_limit_s=3.0, device="cpu") as two,
        ):
            domains = {one.domain.domain_id, two.domain.domain_id}
            assert len(domains) == 2 and int(os.environ["ROS_DOMAIN_ID"]) not in domains

            def drive(loop, side):
                try:
                    trials[side] = loop.run_trial(0, side)
                except Exception as error:  # reported below
                    errors.append(error)

            threads = [threading.Thread(target=drive, args=item) for item in ((one, "left"), (two, "right"))]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(timeout=600)
            topics = {name for name, _ in bystander.get_topic_names_and_types()}
            publishers = {name: bystander.count_publishers(name) for name in ("/cmd_vel", "/sim/pose")}
    finally:
        executor.shutdown()
        spinner.join(timeout=5)
        bystander.destroy_node()
        rclpy.try_shutdown(context=context)
    assert not errors, errors
    for side, sign in (("left", +1), ("right", -1)):  # each loop drove its own instruction, undisturbed
        trial = trials[side]  # (the end from sim/result: pose samples may trail a loaded conductor)
        assert sign * (trial.path[-1, 2] - trial.layout.start[1]) > 0.2, (side, trial.layout.start, trial.path[-1])
    assert heard == []
    assert publishers == {"/cmd_vel": 0, "/sim/pose": 0}  # (the bystander's own subscriptions name them)
    assert not topics & {"/camera/image_raw", "/window", "/enable", "/clock"}, topics
    assert all(trial.outcome != "running" and trial.duration_s > 0 for trial in trials.values())

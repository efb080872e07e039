"""The scripted person of `mobile-vla demo --corrections` (sim/takeover.py): when it takes over and
that its commands rescue a robot the policy was steering into trouble. Pure Python, no ROS."""

import numpy as np
import pytest

from mobile_vla_ros.sim.takeover import COLLISION, MISSING_TARGET, WRONG_SIDE, TakeoverSupervisor, takeover_reason
from mobile_vla_ros.sim.world import Layout, World, sample_layout

DT = 0.05
LAYOUT = Layout(start=(0.4, 0.0), box_center=(1.8, 0.0), box_half_size=(0.25, 0.3), target=(3.3, 0.2))


def drive(layout, side, policy, supervisor=None, limit_s=20.0):
    """Closed loop in the world at DT: the policy's (vx, vy) unless the supervisor commands."""
    world = World(layout)
    velocity = np.zeros(2)
    while not world.outcome.finished and world.state.time_s < limit_s:
        state = world.state
        proposal = np.asarray(policy(state.x, state.y), float)
        command = None
        if supervisor is not None:
            # the person judges the motion they see: the robot's current velocity
            command = supervisor.command(state.time_s, state.x, state.y, *velocity)
        velocity = proposal if command is None else np.asarray(command, float)
        world.step(velocity, DT)
    return world


def test_heading_straight_into_the_box_is_a_collision_and_a_clear_road_is_not():
    world = World(LAYOUT)
    assert takeover_reason(world, "left", 1.2, 0.0, 0.6, 0.0) == COLLISION  # box front at 1.55, robot radius 0.2
    assert takeover_reason(world, "left", 0.5, 0.0, 0.6, 0.0) is None  # far away, side not judged yet
    assert takeover_reason(world, "left", 1.0, 1.4, 0.0, 0.6) == COLLISION  # the wall at y 1.75


@pytest.mark.parametrize("side, vy", [("left", -0.4), ("right", 0.4)])
def test_approaching_the_box_toward_the_other_side_is_wrong_side(side, vy):
    world = World(LAYOUT)
    assert takeover_reason(world, side, 1.0, 0.0, 0.5, vy) == WRONG_SIDE
    assert takeover_reason(world, side, 1.0, 0.0, 0.5, -vy) is None
    # past the box's rear face the side is decided: only collisions count there
    assert takeover_reason(world, side, 2.4, -0.8 if side == "left" else 0.8, 0.5, 0.0) is None


def test_reaching_the_bottle_is_not_a_collision():
    world = World(LAYOUT)
    assert takeover_reason(world, "left", 2.7, 0.2, 0.6, 0.0) is None


def test_a_course_past_the_bottle_is_missing_it():
    world = World(LAYOUT)  # bottle at (3.3, 0.2), reached within 0.45 m from its front
    assert takeover_reason(world, "left", 2.7, 0.8, 0.6, 0.0) == MISSING_TARGET  # passes 0.6 m beside it
    assert takeover_reason(world, "left", 2.7, 0.8, 0.6, -0.4) is None  # turning in toward it
    assert takeover_reason(world, "left", 2.7, 0.2, -0.3, 0.0) == MISSING_TARGET  # backing away
    assert takeover_reason(world, "left", 2.2, 0.8, 0.6, 0.0) is None  # still beside the box: may turn


@pytest.mark.parametrize("side", ["left", "right"])
def test_the_expert_itself_never_triggers_a_takeover(side):
    from mobile_vla_ros.sim.expert import ScriptedExpert

    for episode in range(10):
        layout = sample_layout(0, episode)
        expert, supervisor = ScriptedExpert(layout, side), TakeoverSupervisor(layout, side)
        world = drive(layout, side, expert.act, supervisor)
        assert world.outcome.succeeded(side) and supervisor.takeovers == 0, (episode, supervisor.reasons)


@pytest.mark.parametrize("side", ["left", "right"])
def test_a_policy_going_the_wrong_way_is_taken_over_and_the_trial_succeeds(side):
    wrong = -0.45 if side == "left" else 0.45  # always drifts toward the side not asked for

    def policy(x, y):
        return (0.6, wrong)

    assert not drive(LAYOUT, side, policy).outcome.succeeded(side)
    supervisor = TakeoverSupervisor(LAYOUT, side)
    world = drive(LAYOUT, side, policy, supervisor)
    assert world.outcome.succeeded(side), world.summary()
    assert supervisor.takeovers >= 1 and supervisor.reasons[0] == WRONG_SIDE
    assert not supervisor.in_charge or world.state.x > 2.0  # handed back behind the box, or still driving there


def test_a_policy_that_drives_past_the_bottle_is_taken_over_before_the_wall():
    def policy(x, y):  # the expert's way around the box, then straight on at the pass height
        return expert.act(x, y) if x < 2.4 else (0.6, 0.0)

    from mobile_vla_ros.sim.expert import ScriptedExpert

    expert = ScriptedExpert(LAYOUT, "right")
    assert drive(LAYOUT, "right", policy).outcome.value == "collided"  # the far wall
    expert = ScriptedExpert(LAYOUT, "right")
    supervisor = TakeoverSupervisor(LAYOUT, "right")
    world = drive(LAYOUT, "right", policy, supervisor)
    assert world.outcome.succeeded("right") and supervisor.reasons == [MISSING_TARGET]

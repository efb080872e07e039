"""The simulator without ROS: kinematics, contact, results, camera, expert, demonstrations, plot."""

from __future__ import annotations

import time

import cv2
import numpy as np
import pytest

from mobile_vla_ros.data.episode import read_episode
from mobile_vla_ros.data.images import resize_for_model
from mobile_vla_ros.errors import SimulationError
from mobile_vla_ros.policy.instructions import LAB_INSTRUCTIONS
from mobile_vla_ros.sim.demonstrations import record_demonstrations, rollout_expert
from mobile_vla_ros.sim.expert import ScriptedExpert
from mobile_vla_ros.sim.plot import plot_trajectories
from mobile_vla_ros.sim.render import BOTTLE_BODY, BOX_FRONT, SCENES, Renderer
from mobile_vla_ros.sim.world import Layout, Outcome, RoomConfig, World, sample_layout

ROOM = RoomConfig()
LAYOUT = Layout(start=(0.4, 0.0), box_center=(2.0, 0.0), box_half_size=(0.25, 0.3), target=(3.3, 0.0))


def colour_mask(image: np.ndarray, colour, tolerance: int = 30) -> np.ndarray:
    return np.all(np.abs(image.astype(int) - np.array(colour)) <= tolerance, axis=-1)


# -- world ------------------------------------------------------------------------------------
def test_step_integrates_velocity_and_clips_each_axis_to_max_speed():
    world = World(LAYOUT)
    assert world.step((0.5, 0.2), 1.0) is Outcome.RUNNING
    assert (world.state.x, world.state.y) == pytest.approx((0.9, 0.2))
    world.step((5.0, -5.0, 3.0), 0.2)  # angular.z accepted and ignored; speed clipped
    assert (world.state.x, world.state.y) == pytest.approx((0.9 + 0.2 * ROOM.max_speed, 0.2 - 0.2 * ROOM.max_speed))
    assert world.state.time_s == pytest.approx(1.2)


@pytest.mark.parametrize("command,dt", [((float("nan"), 0.0), 0.1), ((0.1,), 0.1), ((0.1, 0.0), 0.0)])
def test_bad_commands_raise_and_do_not_move(command, dt):
    world = World(LAYOUT)
    with pytest.raises(SimulationError):
        world.step(command, dt)
    assert (world.state.x, world.state.y, world.state.time_s) == (0.4, 0.0, 0.0)


def test_driving_straight_hits_the_box_without_tunnelling():
    world = World(LAYOUT)
    assert world.step((ROOM.max_speed, 0.0), 3.0) is Outcome.COLLIDED  # one big step, still caught
    box_front = LAYOUT.box_center[0] - LAYOUT.box_half_size[0]
    assert box_front - ROOM.robot_radius - 0.03 <= world.state.x <= box_front - ROOM.robot_radius
    world.step((-0.5, 0.0), 1.0)  # an ended episode does not move any more
    assert world.state.x > box_front - ROOM.robot_radius - 0.03


def test_walls_stop_the_robot():
    world = World(LAYOUT)
    assert world.step((0.0, 1.0), 3.0) is Outcome.COLLIDED
    assert world.state.y == pytest.approx(ROOM.width / 2 - ROOM.robot_radius, abs=0.03)


def test_standing_still_times_out():
    world = World(LAYOUT, RoomConfig(time_limit_s=2.0))
    for _ in range(19):
        assert world.step((0.0, 0.0), 0.1) is Outcome.RUNNING
    assert world.step((0.0, 0.0), 0.1) is Outcome.TIMED_OUT


@pytest.mark.parametrize("side", ["left", "right"])
def test_reaching_the_bottle_reports_the_side_the_box_was_passed_on(side):
    world, expert = World(LAYOUT), ScriptedExpert(LAYOUT, side)
    while not world.outcome.finished:
        world.step(expert.act(world.state.x, world.state.y), 0.1)
    assert world.outcome is Outcome(f"reached_{side}")
    assert world.outcome.succeeded(side) and not world.outcome.succeeded("right" if side == "left" else "left")
    tx, ty = LAYOUT.target
    assert world.state.x < tx and np.hypot(tx - world.state.x, ty - world.state.y) <= ROOM.reach_distance
    summary = world.summary()
    assert summary["outcome"] == f"reached_{side}" and summary["passed_side"] == side
    assert Layout.from_dict(summary["layout"]) == LAYOUT


def test_the_bottle_itself_is_an_obstacle_from_behind():
    layout = Layout(start=(0.4, 0.0), box_center=(1.5, 0.0), box_half_size=(0.2, 0.3), target=(2.8, 0.0))
    world = World(layout)
    world.state.x, world.state.y = 3.5, 0.0  # behind the bottle: touching it is a collision, not a success
    assert world.step((-0.5, 0.0), 2.0) is Outcome.COLLIDED


def test_layouts_are_reproducible_varied_and_valid():
    assert sample_layout(7, 3) == sample_layout(7, 3)
    layouts = [sample_layout(7, episode) for episode in range(50)]
    assert len({layout.box_center for layout in layouts}) == 50
    for layout in layouts:
        World(layout)  # raises when a layout is not drivable
    with pytest.raises(SimulationError, match="too close behind the box"):
        World(Layout(start=(0.4, 0.0), box_center=(2.0, 0.0), box_half_size=(0.25, 0.3), target=(2.5, 0.0)))
    with pytest.raises(SimulationError, match="not a layout"):
        Layout.from_dict({"start": [0, 0]})


# -- camera -----------------------------------------------------------------------------------
def test_camera_shows_the_box_on_the_side_opposite_to_the_robot_offset():
    renderer = Renderer()
    left_of_box = renderer.render(LAYOUT, 1.0, 0.7)  # robot left of the box: box on the right of the picture
    right_of_box = renderer.render(LAYOUT, 1.0, -0.7)
    width = left_of_box.shape[1]
    for image, box_half in ((left_of_box, slice(width // 2, None)), (right_of_box, slice(None, width // 2))):
        box = colour_mask(image, BOX_FRONT, 60)  # front and shaded side faces
        assert box.sum() > 2000
        assert box[:, box_half].sum() > 0.9 * box.sum()
    assert not np.array_equal(left_of_box, right_of_box[:, ::-1])  # not a plain mirror: side faces differ


def test_camera_shows_distance_and_stays_readable_at_model_size():
    renderer = Renderer()
    far, near = renderer.render(LAYOUT, 0.4, 0.0), renderer.render(LAYOUT, 1.2, 0.0)
    assert far.shape == (480, 640, 3) and far.dtype == np.uint8
    assert colour_mask(near, BOX_FRONT).sum() > 2 * colour_mask(far, BOX_FRONT).sum()
    small = resize_for_model(far, 224)
    assert colour_mask(small, BOX_FRONT).sum() > 150
    beside_box = resize_for_model(renderer.render(LAYOUT, 1.2, 0.8), 224)
    assert colour_mask(beside_box, BOTTLE_BODY, 50).sum() > 4  # the bottle shows past the box at 224x224
    past_box = resize_for_model(renderer.render(LAYOUT, 2.7, 0.6), 224)
    bottle = colour_mask(past_box, BOTTLE_BODY, 50)
    assert bottle.sum() > 20 and np.nonzero(bottle)[1].mean() > 112  # bottle to the right of a robot on the left


def test_render_is_fast():
    renderer, layout = Renderer(), sample_layout(0, 0)
    renderer.render(layout, 0.4, 0.0)
    started = time.perf_counter()
    for step in range(60):
        renderer.render(layout, 0.4 + 0.02 * step, 0.5 * np.sin(step / 10))
    per_frame_ms = (time.perf_counter() - started) / 60 * 1000
    assert per_frame_ms < 10, f"{per_frame_ms:.1f} ms per 640x480 frame"


# -- expert and demonstrations -----------------------------------------------------------------
@pytest.mark.parametrize("noise_std", [0.0, 0.1])
def test_expert_succeeds_on_at_least_95_percent_of_random_layouts(noise_std):
    outcomes = {"left": [], "right": []}
    for episode in range(100):
        layout = sample_layout(2024, episode)
        for side in outcomes:
            rollout = rollout_expert(layout, side, noise_std=noise_std, rng=np.random.default_rng(episode))
            outcomes[side].append(rollout.outcome.succeeded(side))
    for side, successes in outcomes.items():
        assert np.mean(successes) >= 0.95, f"{side}: {np.mean(successes):.2f}"


def test_expert_rejects_an_unknown_side():
    with pytest.raises(SimulationError, match="side"):
        ScriptedExpert(LAYOUT, "up")


def test_demonstrations_are_readable_paired_and_reproducible(tmp_path):
    first = record_demonstrations(tmp_path / "a", 2, seed=5, image_size=(160, 120))
    again = record_demonstrations(tmp_path / "b", 2, seed=5, image_size=(160, 120))
    assert first.skipped == 0 and len(first.paths) == 4
    episodes = [read_episode(path) for path in first.paths]
    repeated = [read_episode(path) for path in again.paths]
    for episode, twin in zip(episodes, repeated):
        np.testing.assert_array_equal(episode.images, twin.images)
        np.testing.assert_array_equal(episode.actions, twin.actions)
    left, right = episodes[0], episodes[1]  # layout 0, driven once per instruction
    assert left.instruction == LAB_INSTRUCTIONS["left"] and right.instruction == LAB_INSTRUCTIONS["right"]
    for episode in (left, right):
        assert episode.images.shape[1:] == (120, 160, 3) and episode.images.dtype == np.uint8
        assert episode.actions.shape == (len(episode.images), 3) and np.all(episode.actions[:, 2] == 0)
        assert episode.sample_rate_hz == 10.0
        np.testing.assert_allclose(np.diff(episode.timestamps), 0.1, atol=1e-9)
        assert np.all(np.abs(episode.actions[:, :2]) <= 0.6 + 1e-6)
    np.testing.assert_array_equal(left.images[0], right.images[0])  # same start: only the instruction differs
    rollout = first.rollouts[0]
    rendered = Renderer().render(rollout.layout, *rollout.positions[5])
    np.testing.assert_array_equal(left.images[5], cv2.resize(rendered, (160, 120), interpolation=cv2.INTER_AREA))
    np.testing.assert_array_equal(left.actions[:, :2], rollout.actions)
    assert left.actions[0, 1] - right.actions[0, 1] > 0.2  # REP 103: +y is left
    assert left.actions[0, 0] > 0.2 and right.actions[0, 0] > 0.2


def test_a_switch_demonstration_starts_on_the_other_side_and_is_labelled_for_its_own(tmp_path):
    """The detour: the other side's expert drives first; every label is this side's expert command."""
    from mobile_vla_ros.sim.demonstrations import SWITCH_DETOUR_S

    recorded = record_demonstrations(tmp_path, 1, seed=5, image_size=(64, 48), switches=True)
    assert recorded.skipped == 0 and [r.side for r in recorded.rollouts] == ["left", "right", "left", "right"]
    plain_left, plain_right, to_left, to_right = recorded.rollouts
    for switch, plain_other, side in ((to_left, plain_right, "left"), (to_right, plain_left, "right")):
        assert SWITCH_DETOUR_S[0] <= switch.detour_s <= SWITCH_DETOUR_S[1] and plain_other.detour_s == 0
        assert switch.outcome.succeeded(side)
        # Until the detour ends the robot goes the other side's way (noise aside) ...
        sign = 1 if side == "left" else -1
        during = switch.times < switch.detour_s - 0.15
        assert sign * (switch.positions[during][-1, 1] - switch.positions[0, 1]) < -0.05
        # ... while each label already points to this side.
        expert = ScriptedExpert(switch.layout, side)
        assert sign * switch.actions[0, 1] > 0.05
        np.testing.assert_allclose(switch.actions[0], expert.act(*switch.positions[0]), atol=1e-6)
    episode = read_episode(recorded.paths[3])
    assert episode.instruction == LAB_INSTRUCTIONS["right"] and episode.attrs["sim_detour_s"] == to_right.detour_s
    np.testing.assert_array_equal(episode.actions[:, :2], to_right.actions)


def test_trajectory_plot_is_written(tmp_path):
    rollouts = [rollout_expert(sample_layout(1, episode), side) for episode in range(3) for side in ("left", "right")]
    world = World(LAYOUT)
    world.step((1.0, 0.0), 3.0)  # a collided trial, shown with its own marker
    crashed = rollout_expert(LAYOUT, "left")
    crashed.path, crashed.outcome = np.array(world.state.path), world.outcome
    path = plot_trajectories(rollouts + [crashed], tmp_path / "plots" / "trajectories.png", title="test")
    picture = cv2.imread(str(path))
    assert picture is not None and picture.shape[0] > 300 and picture.shape[1] > 600


def test_the_demo_layouts_need_eyes_the_blind_baseline_fails_half_or_more():
    """The expert's mean path per instruction, replayed without looking, on the demo's trial
    layouts (seed 1, episodes 1..20 alternating left/right): at most 5 of 10 per instruction."""
    from mobile_vla_ros.demo.trials import Trial, blind_baseline, mean_expert_trajectories, summarize, trial_sides
    from mobile_vla_ros.sim.world import sample_layout

    means = mean_expert_trajectories(60, seed=0, sample_rate_hz=10.0)
    trials = [
        Trial(index, side, index + 1, sample_layout(1, index + 1), np.zeros((0, 3)), "running", 0.0)
        for index, side in enumerate(trial_sides(10))
    ]
    results = summarize(blind_baseline(trials, means, dt=0.1))
    assert all(results[side]["trials"] == 10 and results[side]["succeeded"] <= 5 for side in ("left", "right")), results
    # ... while the expert who sees the layout gets through every one of them.
    for trial in trials:
        assert rollout_expert(trial.layout, trial.side).outcome.succeeded(trial.side)


def test_shifted_scenes_show_the_same_layout_darker_or_in_other_colours():
    layout = sample_layout(3)
    plain = Renderer().render(layout, *layout.start)
    dark, recoloured = SCENES["dark"](plain), SCENES["recoloured"](plain)
    assert dark.dtype == recoloured.dtype == np.uint8 and dark.shape == recoloured.shape == plain.shape
    assert dark.mean() == pytest.approx(0.4 * plain.mean(), rel=0.05)
    assert np.array_equal(recoloured[..., 0], plain[..., 2]) and np.array_equal(recoloured[..., 1], plain[..., 0])
    assert np.array_equal(SCENES["plain"](plain), plain)

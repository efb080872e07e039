"""Expert demonstrations recorded in the simulator, written as ordinary H5 episodes.

Each layout is driven twice, once per instruction, so the first frames of a left and a right
episode are identical and only the instruction tells them apart: that is what forces a policy to
read its instruction. Samples are taken at a fixed rate (the rate becomes the model's action_dt):
the frame rendered at the sample instant and the expert's command for that state.

While recording, the executed command carries a little correlated noise but the recorded label is
the expert's clean command for the state actually reached. The episodes therefore show the robot
slightly off the ideal path and how to get back to it, which a policy driving on its own needs.

Switch demonstrations use the same idea for an instruction that changes under way: the robot is
driven by the other side's expert for the first 0.2-1.6 s (the detour), then by this side's;
every frame, the detour's included, is labelled with this side's expert command for the state
reached. Without them the policy has never seen a right-hand approach that began to the left,
and a switch at +1.0 s reached the new side in 2 of 10 trials.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mobile_vla_ros.data.episode_writer import EpisodeWriter
from mobile_vla_ros.policy.instructions import LAB_INSTRUCTIONS
from mobile_vla_ros.sim.expert import ScriptedExpert
from mobile_vla_ros.sim.render import CameraConfig, Renderer
from mobile_vla_ros.sim.world import SIDES, Layout, Outcome, RoomConfig, World, sample_layout

NOISE_CORRELATION = 0.7  # per sample; the noise forgets itself within a few tenths of a second
SWITCH_DETOUR_S = (0.2, 1.6)  # how long the other side's expert drives first in a switch demonstration


@dataclass
class Rollout:
    """One expert episode: the state at each sample and the clean command chosen there."""

    layout: Layout
    side: str
    times: np.ndarray  # (T,) seconds since the start
    positions: np.ndarray  # (T, 2) robot (x, y) at each sample, before its command
    actions: np.ndarray  # (T, 2) expert (linear_x, linear_y)
    outcome: Outcome
    path: np.ndarray  # (N, 3) (t, x, y) of the whole motion
    detour_s: float = 0.0  # switch demonstration: seconds the other side's expert drove first


def rollout_expert(
    layout: Layout,
    side: str,
    room: RoomConfig = RoomConfig(),
    sample_rate_hz: float = 10.0,
    speed: float = 0.6,
    noise_std: float = 0.0,
    rng: np.random.Generator | None = None,
    detour_s: float = 0.0,
) -> Rollout:
    """Drive the expert through one layout (no rendering, so it is cheap). `detour_s` > 0: the
    other side's expert drives until then; the labels are this side's expert throughout."""
    world, expert = World(layout, room), ScriptedExpert(layout, side, room, speed)
    other = ScriptedExpert(layout, next(s for s in SIDES if s != side), room, speed) if detour_s > 0 else None
    rng = rng or np.random.default_rng(0)
    dt, noise = 1.0 / sample_rate_hz, np.zeros(2)
    times, positions, actions = [], [], []
    while not world.outcome.finished:
        state = world.state
        action = expert.act(state.x, state.y)
        times.append(state.time_s)
        positions.append((state.x, state.y))
        actions.append(action)
        if noise_std > 0:
            noise = NOISE_CORRELATION * noise + np.sqrt(1 - NOISE_CORRELATION**2) * noise_std * rng.standard_normal(2)
        driving = other.act(state.x, state.y) if other is not None and state.time_s < detour_s - 1e-9 else action
        world.step(driving + noise, dt)
    return Rollout(
        layout,
        side,
        np.array(times),
        np.array(positions),
        np.array(actions, np.float32),
        world.outcome,
        np.array(world.state.path),
        detour_s,
    )


def expert_rollouts(
    episodes_per_side: int,
    seed: int = 0,
    sample_rate_hz: float = 10.0,
    room: RoomConfig = RoomConfig(),
    expert_speed: float = 0.6,
    noise_std: float = 0.1,
    switches: bool = False,
) -> list[Rollout]:
    """The rollouts `record_demonstrations` records (same layouts, same noise), without rendering:
    per layout one per side, and with `switches` one switch demonstration per side after them."""
    rollouts = []
    for episode in range(episodes_per_side):
        layout = sample_layout(seed, episode, room)
        for side_index, side in enumerate(SIDES):
            rng = np.random.default_rng([int(seed), episode, side_index])
            rollouts.append(rollout_expert(layout, side, room, sample_rate_hz, expert_speed, noise_std, rng))
        for side_index, side in enumerate(SIDES if switches else ()):
            rng = np.random.default_rng([int(seed), episode, side_index, 1])
            detour_s = float(rng.uniform(*SWITCH_DETOUR_S))
            rollouts.append(rollout_expert(layout, side, room, sample_rate_hz, expert_speed, noise_std, rng, detour_s))
    return rollouts


@dataclass
class DemonstrationSet:
    paths: list  # the saved episode files
    rollouts: list  # every rollout, successful or not (for plots and reports)
    skipped: int  # expert rollouts that failed and were not saved


def record_demonstrations(
    directory,
    episodes_per_side: int,
    seed: int = 0,
    sample_rate_hz: float = 10.0,
    room: RoomConfig = RoomConfig(),
    camera: CameraConfig = CameraConfig(),
    image_size: tuple[int, int] | None = None,
    expert_speed: float = 0.6,
    noise_std: float = 0.1,
    switches: bool = False,
    progress: Callable[[int, int, Rollout], None] | None = None,
) -> DemonstrationSet:
    """Record ``episodes_per_side`` layouts x both instructions into ``directory`` (with
    ``switches``, twice: once plain, once as a switch demonstration).

    Layout i is ``sample_layout(seed, i)``; rerunning with the same arguments gives the same
    frames and actions. Only successful expert episodes are saved. ``image_size=(w, h)`` stores
    smaller frames than the camera renders.
    """
    renderer = Renderer(room, camera)
    paths, rollouts, skipped = [], [], 0
    planned = expert_rollouts(episodes_per_side, seed, sample_rate_hz, room, expert_speed, noise_std, switches)
    per_layout = len(planned) // episodes_per_side
    for index, rollout in enumerate(planned):
        rollouts.append(rollout)
        if rollout.outcome.succeeded(rollout.side):
            paths.append(
                _write_episode(directory, rollout, renderer, sample_rate_hz, image_size, seed, index // per_layout)
            )
        else:
            skipped += 1
        if progress is not None:
            progress(len(rollouts), len(planned), rollout)
    return DemonstrationSet(paths, rollouts, skipped)


def _write_episode(
    directory, rollout: Rollout, renderer: Renderer, sample_rate_hz: float, image_size, seed: int, episode: int
) -> Path:
    writer = EpisodeWriter(
        directory,
        LAB_INSTRUCTIONS[rollout.side],
        sample_rate_hz,
        image_size=image_size,
        source="simulator",
        sim_seed=int(seed),
        sim_episode=int(episode),
        sim_layout=json.dumps(rollout.layout.to_dict()),
        sim_outcome=rollout.outcome.value,
        sim_detour_s=rollout.detour_s,
    )
    try:
        for index, ((x, y), action, stamp) in enumerate(zip(rollout.positions, rollout.actions, rollout.times)):
            writer.append(
                renderer.render(rollout.layout, x, y),
                [action[0], action[1], 0.0],
                stamp,
                "episode_start" if index == 0 else "step",
            )
        return writer.save()
    except BaseException:
        writer.discard()
        raise

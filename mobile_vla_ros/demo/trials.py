"""The demo's trials: the plan (alternating instructions), results, the image-blind baseline and the
report table. No ROS imports here.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from mobile_vla_ros.demo.stages import DemoError
from mobile_vla_ros.sim.world import SIDES, Layout, Outcome, RoomConfig, World


def trial_sides(trials_per_side: int) -> list[str]:
    """Alternating instructions, left first: every trial switches the instruction."""
    if trials_per_side < 1:
        raise DemoError(f"need at least one trial per instruction, got {trials_per_side}")
    return [SIDES[index % 2] for index in range(2 * trials_per_side)]


@dataclass
class Trial:
    """One closed-loop run; has what plot_trajectories needs (side, layout, path, outcome)."""

    index: int
    side: str
    episode: int  # the simulator's episode number (layout `episode` of the trial seed)
    layout: Layout
    path: np.ndarray  # (N, 3) time since enable [s], x, y
    outcome: str
    duration_s: float
    takeovers: list[str] = field(default_factory=list)  # why the scripted person took over, in order
    unfamiliar_s: float | None = None  # when the familiarity monitor said unfamiliar (s after release), if it did
    switched_after_s: float | None = None  # a switch trial: began with the other instruction, switched then

    @property
    def succeeded(self) -> bool:
        return Outcome(self.outcome).succeeded(self.side)

    def to_dict(self) -> dict:
        return {
            "index": self.index,
            "instruction": self.side,
            "episode": self.episode,
            "layout": self.layout.to_dict(),
            "outcome": self.outcome,
            "succeeded": self.succeeded,
            "duration_s": round(self.duration_s, 2),
            "takeovers": list(self.takeovers),
            "unfamiliar_s": None if self.unfamiliar_s is None else round(self.unfamiliar_s, 2),
            "switched_after_s": self.switched_after_s,
            "path": np.round(np.asarray(self.path, dtype=float), 3).tolist(),
        }


def mean_expert_trajectories(
    episodes_per_side: int, seed: int, sample_rate_hz: float, room: RoomConfig = RoomConfig()
) -> dict[str, np.ndarray]:
    """Per instruction, the expert's mean command at each time step over the training layouts
    (the successful rollouts the demo records; a step is averaged over the rollouts still running).
    This is what a policy that listens but does not look can at best learn."""
    from mobile_vla_ros.sim.demonstrations import expert_rollouts

    rollouts = expert_rollouts(episodes_per_side, seed, sample_rate_hz, room)
    means = {}
    for side in SIDES:
        actions = [r.actions for r in rollouts if r.side == side and r.outcome.succeeded(side)]
        if not actions:
            raise DemoError(f"no successful expert rollout for {side!r}")
        length = max(map(len, actions))
        means[side] = np.stack([np.mean([a[t] for a in actions if len(a) > t], axis=0) for t in range(length)])
    return means


def replay_open_loop(commands: np.ndarray, layout: Layout, dt: float, room: RoomConfig = RoomConfig()) -> Outcome:
    """Drive `commands` (then stand still) without looking; returns how the episode ended."""
    world = World(layout, room)
    step = 0
    while not world.outcome.finished:
        world.step(commands[step] if step < len(commands) else np.zeros(2), dt)
        step += 1
    return world.outcome


def blind_baseline(
    trials: list[Trial], means: dict[str, np.ndarray], dt: float, room: RoomConfig = RoomConfig()
) -> list[Trial]:
    """The image-blind baseline on exactly the trials' layouts: each trial's instruction's mean
    expert trajectory replayed open loop."""
    results = []
    for trial in trials:
        outcome = replay_open_loop(means[trial.side], trial.layout, dt, room)
        results.append(
            Trial(trial.index, trial.side, trial.episode, trial.layout, np.zeros((0, 3)), outcome.value, 0.0)
        )
    return results


def summarize(trials: list[Trial]) -> dict:
    """Per instruction: trial count, successes, success rate and the outcomes seen."""
    summary = {}
    for side in SIDES:
        mine = [trial for trial in trials if trial.side == side]
        successes = sum(trial.succeeded for trial in mine)
        summary[side] = {
            "trials": len(mine),
            "succeeded": successes,
            "success_rate": successes / len(mine) if mine else None,
            "outcomes": dict(sorted(Counter(trial.outcome for trial in mine).items())),
        }
    return summary


def format_table(summary: dict, baselines: dict[str, dict] | None = None) -> str:
    """The success table the demo prints; `baselines` adds a column per comparison
    (name -> summarize() of its trials), e.g. the image-blind baseline and the frozen camera."""
    baselines = baselines or {}
    extra = "".join(f" {name:>14}" for name in baselines)
    lines = [
        f"{'instruction':<12} {'trials':>6} {'success':>8} {'rate':>6}{extra}  outcomes",
        "-" * (64 + 15 * len(baselines)),
    ]
    for side, row in summary.items():
        rate = "n/a" if row["success_rate"] is None else f"{100 * row['success_rate']:.0f}%"
        outcomes = ", ".join(f"{name} {count}" for name, count in row["outcomes"].items())
        others = "".join(
            " {:>14}".format(f"{other[side]['succeeded']}/{other[side]['trials']}") for other in baselines.values()
        )
        lines.append(f"{side:<12} {row['trials']:>6} {row['succeeded']:>8} {rate:>6}{others}  {outcomes}")
    return "\n".join(lines)


def first_unfamiliar(verdicts: list[tuple[float, bool]], release: float, settled: float, end: float) -> float | None:
    """Seconds after `release` at which the familiarity monitor said unfamiliar during a trial (0:
    it already did), from its verdicts as (simulated time, unfamiliar), else None. A verdict left
    over from the previous layout's last frames clears during the start hold; one still standing
    at `settled` is this layout's. Only frames before `end` (the episode's last tick) count: their
    verdicts reached the conductor before the end did, so the count does not depend on timing."""
    standing = None
    for time_s, unfamiliar in verdicts:
        if time_s <= settled:
            standing = time_s if unfamiliar else None
        elif standing is not None:
            break
        elif unfamiliar and time_s < end:
            return time_s - release
    return None if standing is None else max(standing - release, 0.0)


def familiarity_summary(plain: list[Trial], watched: list[Trial], shifted: dict[str, list[Trial]]) -> dict:
    """What the familiarity monitor did: how often it fired on the plain layouts with the default
    action (stop) and, on the same layouts with it watching only (warn), how many of those alarms
    were false (the robot reached its side anyway); detections on the shifted scenes and how those
    trials ended, with the monitor off (`none`) and stopping the robot (`stop`)."""

    def fired(trial: Trial) -> bool:
        return trial.unfamiliar_s is not None

    def before_the_end(trial: Trial) -> bool:
        return fired(trial) and trial.unfamiliar_s < trial.duration_s

    summary = {
        "plain, monitor stop": {
            "trials": len(plain),
            "fired": sum(map(fired, plain)),
            "succeeded": sum(t.succeeded for t in plain),
        },
        "plain, monitor warn": {
            "trials": len(watched),
            "fired": sum(map(fired, watched)),
            "false_alarms": sum(fired(t) and t.succeeded for t in watched),
            "succeeded": sum(t.succeeded for t in watched),
            "outcomes": dict(Counter(t.outcome for t in watched)),
        },
    }
    for action, trials in shifted.items():
        summary[f"shifted, monitor {action}"] = {
            "trials": len(trials),
            "fired": sum(map(fired, trials)),
            "fired_before_the_end": sum(map(before_the_end, trials)),
            "collided": sum(t.outcome == "collided" for t in trials),
            "succeeded": sum(t.succeeded for t in trials),
            "stopped_not_collided": sum(fired(t) and t.outcome != "collided" and not t.succeeded for t in trials),
            "outcomes": dict(Counter(t.outcome for t in trials)),
        }
    return summary


def format_familiarity(summary: dict, scenes) -> str:
    lines = [f"familiarity monitor (shifted scenes: {', '.join(scenes)}; the same unseen layouts):"]
    for name, row in summary.items():
        outcomes = ", ".join(f"{key} {value}" for key, value in row.get("outcomes", {}).items())
        lines.append(
            f"  {name:<24} fired in {row['fired']:>2}/{row['trials']} trials"
            + (f", before the end in {row['fired_before_the_end']}" if "fired_before_the_end" in row else "")
            + (f" ({row['false_alarms']} false: the robot reached its side)" if "false_alarms" in row else "")
            + f"; reached the instructed side {row['succeeded']}"
            + (f"; {outcomes}" if outcomes else "")
        )
    return "\n".join(lines)

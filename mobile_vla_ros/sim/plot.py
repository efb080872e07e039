"""Top-down picture of simulator trajectories (matplotlib, Agg: no display needed).

A trial is anything with ``side`` ('left'/'right', the instruction), ``layout``
(:class:`~mobile_vla_ros.sim.world.Layout`), ``path`` ((N, 2) x, y or (N, 3) t, x, y) and
``outcome`` (:class:`~mobile_vla_ros.sim.world.Outcome` or its string value); expert rollouts
qualify as they are. The left panel overlays every trial relative to its box; the small panels
show each trial in its own room.
"""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.patches import Circle, Rectangle  # noqa: E402

from mobile_vla_ros.sim.world import Outcome, RoomConfig  # noqa: E402

SIDE_COLOURS = {"left": "tab:blue", "right": "tab:orange"}
OUTCOME_MARKERS = {
    "succeeded": "o",
    "wrong_side": "^",
    Outcome.COLLIDED.value: "x",
    Outcome.TIMED_OUT.value: "s",
    Outcome.RUNNING.value: ".",
}
MAX_PANELS = 30


def _verdict(trial) -> str:
    outcome = Outcome(trial.outcome)
    if outcome.succeeded(trial.side):
        return "succeeded"
    return "wrong_side" if outcome in (Outcome.REACHED_LEFT, Outcome.REACHED_RIGHT) else outcome.value


def _xy(trial) -> np.ndarray:
    path = np.asarray(trial.path, dtype=float)
    return path[:, -2:]


def _draw_scene(axis, layout, room: RoomConfig, offset=(0.0, 0.0), alpha=1.0) -> None:
    (bx, by), (hx, hy), (tx, ty) = layout.box_center, layout.box_half_size, layout.target
    ox, oy = offset
    # Plot axes: horizontal = y (left is left on the page, so y grows to the left), vertical = x.
    axis.add_patch(
        Rectangle((-(by + hy - oy), bx - hx - ox), 2 * hy, 2 * hx, color="tab:red", alpha=0.35 * alpha, lw=0)
    )
    axis.add_patch(Circle((-(ty - oy), tx - ox), room.bottle_radius, color="tab:green", alpha=alpha))


def plot_trajectories(trials, path, room: RoomConfig = RoomConfig(), title: str | None = None) -> Path:
    """Write a PNG of the trials to ``path`` and return it."""
    trials = list(trials)
    shown = trials[:MAX_PANELS]
    columns = max(1, min(6, len(shown)))
    rows = max(1, math.ceil(len(shown) / columns))
    figure = plt.figure(figsize=(4 + 1.6 * columns, max(4.5, 2.4 * rows)), dpi=100)
    grid = figure.add_gridspec(rows, columns + 2, width_ratios=[1.2, 1.2] + [1] * columns)

    overview = figure.add_subplot(grid[:, :2])
    for trial in trials:
        (bx, by) = trial.layout.box_center
        _draw_scene(overview, trial.layout, room, offset=(bx, by), alpha=0.25)
        xy = _xy(trial) - (bx, by)
        overview.plot(-xy[:, 1], xy[:, 0], color=SIDE_COLOURS[trial.side], lw=1, alpha=0.7)
        overview.plot(-xy[-1, 1], xy[-1, 0], OUTCOME_MARKERS[_verdict(trial)], color=SIDE_COLOURS[trial.side], ms=6)
    overview.set_title("all trials, relative to the box")
    overview.set_xlabel("-y (m, left of the box is left)")
    overview.set_ylabel("x (m, forward)")
    overview.set_aspect("equal")
    overview.grid(alpha=0.3)
    handles = [plt.Line2D([], [], color=colour, label=f"instruction {side}") for side, colour in SIDE_COLOURS.items()]
    handles += [
        plt.Line2D([], [], ls="", marker=marker, color="k", label=name.replace("_", " "))
        for name, marker in OUTCOME_MARKERS.items()
        if name != Outcome.RUNNING.value
    ]
    overview.legend(handles=handles, loc="lower left", fontsize=7)

    half = room.width / 2
    for index, trial in enumerate(shown):
        axis = figure.add_subplot(grid[index // columns, 2 + index % columns])
        axis.add_patch(Rectangle((-half, 0), room.width, room.length, fill=False, color="0.4"))
        _draw_scene(axis, trial.layout, room)
        xy = _xy(trial)
        colour = SIDE_COLOURS[trial.side]
        axis.plot(-xy[:, 1], xy[:, 0], color=colour, lw=1.2)
        axis.plot(-xy[-1, 1], xy[-1, 0], OUTCOME_MARKERS[_verdict(trial)], color=colour, ms=6)
        axis.set_title(f"{index + 1}: {trial.side} → {Outcome(trial.outcome).value}", fontsize=7)
        axis.set_xlim(-half - 0.1, half + 0.1)
        axis.set_ylim(-0.1, room.length + 0.1)
        axis.set_aspect("equal")
        axis.set_xticks([])
        axis.set_yticks([])
    if title:
        figure.suptitle(title)
    figure.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path)
    plt.close(figure)
    return path

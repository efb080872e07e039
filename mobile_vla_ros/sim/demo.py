"""The pure parts of `mobile-vla demo`: stage caching, the trial plan, trial results and the report.

The demo has four cached stages (tiny base model, expert episodes, trained policy) and one that
always runs (closed-loop trials). Each cached stage writes a small JSON stamp into its directory
describing exactly what produced it; a later run reuses the directory only when the stamp equals
what it would produce now, so changing `--episodes` re-records, a new base model retrains, and an
interrupted stage (no stamp) is redone from scratch. No ROS imports here.
"""
from __future__ import annotations

import json
import shutil
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mobile_vla_ros.errors import MobileVlaError
from mobile_vla_ros.sim.world import SIDES, Layout, Outcome

STAMP_FILE = "demo-stage.json"


class DemoError(MobileVlaError):
    """A demo directory or setting that cannot be used."""


# ---------------------------------------------------------------------------------- stage cache


def read_stamp(directory: str | Path) -> dict | None:
    path = Path(directory) / STAMP_FILE
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None


def stage_is_current(directory: str | Path, key: dict) -> bool:
    """True when `directory` was completed by a stage with exactly this key."""
    return read_stamp(directory) == _jsonable(key)


def mark_stage_done(directory: str | Path, key: dict) -> None:
    """Written last, so a stage that was interrupted leaves no stamp."""
    path = Path(directory) / STAMP_FILE
    path.write_text(json.dumps(_jsonable(key), indent=2, sort_keys=True) + "\n")


def clear_stage(directory: str | Path) -> None:
    """Empty a stage directory before redoing it; refuses a non-empty one the demo did not create."""
    directory = Path(directory)
    if not directory.exists():
        return
    if not directory.is_dir():
        raise DemoError(f"{directory} is a file; the demo needs it as a directory")
    if any(directory.iterdir()) and not (directory / STAMP_FILE).exists() and not (directory / ".demo-owned").exists():
        raise DemoError(
            f"{directory} holds files the demo did not write; move them away or choose another --workdir"
        )
    shutil.rmtree(directory)


def claim_stage(directory: str | Path) -> Path:
    """Create a fresh stage directory, marked as the demo's even before the stage completes."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / ".demo-owned").touch()
    return directory


def _jsonable(value):
    return json.loads(json.dumps(value, sort_keys=True))


# ---------------------------------------------------------------------------------- trials


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

    @property
    def succeeded(self) -> bool:
        return Outcome(self.outcome).succeeded(self.side)

    def to_dict(self) -> dict:
        return {
            "index": self.index, "instruction": self.side, "episode": self.episode, "layout": self.layout.to_dict(),
            "outcome": self.outcome, "succeeded": self.succeeded, "duration_s": round(self.duration_s, 2),
            "path": np.round(np.asarray(self.path, dtype=float), 3).tolist(),
        }


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


def format_table(summary: dict) -> str:
    """The success table the demo prints."""
    lines = [f"{'instruction':<12} {'trials':>6} {'success':>8} {'rate':>6}  outcomes", "-" * 64]
    for side, row in summary.items():
        rate = "n/a" if row["success_rate"] is None else f"{100 * row['success_rate']:.0f}%"
        outcomes = ", ".join(f"{name} {count}" for name, count in row["outcomes"].items())
        lines.append(f"{side:<12} {row['trials']:>6} {row['succeeded']:>8} {rate:>6}  {outcomes}")
    return "\n".join(lines)

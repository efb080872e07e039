"""What a correction episode holds beyond a recording (written by control/corrections.py).

A correction is a person's takeover while the policy drove: the episode attribute `correction` is
true, `actions` hold what moved the robot, and two extra per-frame columns say whose command that
was and what the policy proposed meanwhile. Training learns only from the person's frames.
"""

from __future__ import annotations

import numpy as np

CORRECTION_ATTR = "correction"
POLICY_ACTIONS = "correction/policy_actions"  # (T, 2) float32, NaN where the policy proposed nothing
HUMAN = "correction/human"  # (T,) bool: the action is the person's command
CORRECTION_COLUMNS = {POLICY_ACTIONS: ((2,), np.float32), HUMAN: ((), bool)}


def human_frames(episode) -> np.ndarray | None:
    """The frames of a correction episode whose action the person gave; None for other episodes."""
    if not episode.attrs.get(CORRECTION_ATTR) or HUMAN not in episode.extras:
        return None
    return np.asarray(episode.extras[HUMAN], bool)

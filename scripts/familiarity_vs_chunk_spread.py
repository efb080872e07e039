"""How well does each candidate score tell frames unlike the training frames from held-out frames
of the same room? The familiarity score (ActionHead.familiarity) against the spread of the action
chunk (OmniVLA's brake signal), as the area under the ROC curve (1 = separates perfectly, 0.5 =
chance), per shifted set, at the precisions the robot runs.

    python scripts/familiarity_vs_chunk_spread.py POLICY BASE HELDOUT SHIFTED [SHIFTED ...]
(docs/results.md: the twins of scripts/twins_figures.sh)"""

from __future__ import annotations

import sys

import numpy as np

from mobile_vla_ros.data.windows import load_training_episodes
from mobile_vla_ros.policy.runner import PolicyRunner


def scores(runner: PolicyRunner, directory: str) -> tuple[np.ndarray, np.ndarray]:
    episodes, _ = load_training_episodes([directory], runner.config.image_size, 1, runner.config.action_dt)
    window = runner.config.window_size
    familiarity, spread = [], []
    for episode in episodes:
        runner.set_instruction(episode.instruction)
        runner.reset()
        for t in range(episode.num_frames):
            chunk = runner.step(episode.frames[max(0, t - window + 1) : t + 1])
            familiarity.append(runner.last_familiarity)
            spread.append(float(chunk.std(axis=0).sum()))
    return np.array(familiarity), np.array(spread)


def auroc(inside: np.ndarray, outside: np.ndarray) -> float:
    """P(score of a shifted frame > score of a held-out frame), ties counted half."""
    greater = (outside[:, None] > inside[None, :]).mean()
    equal = (outside[:, None] == inside[None, :]).mean()
    return float(greater + 0.5 * equal)


def main(policy: str, base: str, heldout: str, *shifted: str) -> None:
    for dtype in ("fp32", "bf16", "fp16"):
        runner = PolicyRunner.load(policy, base, device="cpu", dtype=dtype)
        inside = scores(runner, heldout)
        for directory in shifted:
            outside = scores(runner, directory)
            print(
                f"{dtype}  {directory}: AUROC familiarity {auroc(inside[0], outside[0]):.3f}, "
                f"chunk spread {auroc(inside[1], outside[1]):.3f}"
            )


if __name__ == "__main__":
    main(*sys.argv[1:])

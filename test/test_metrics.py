"""Does the evaluation tell a policy that sees from one that only listens?"""

from __future__ import annotations

import json

import numpy as np
import pytest

from mobile_vla_ros.cli.main import main
from mobile_vla_ros.policy.instructions import LAB_INSTRUCTIONS
from mobile_vla_ros.training.metrics import BLIND_WARNING, Replay, summarize
from mobile_vla_ros.training.synthetic import write_mirrored_dataset

LEFT = LAB_INSTRUCTIONS["left"]
NAMES = ("linear_x", "linear_y")


def replays(predict) -> list[Replay]:
    """Three left episodes whose recorded linear_y follows the frames; `predict(true)` is the policy."""
    rng = np.random.default_rng(0)
    result = []
    for index in range(3):
        true = np.stack([np.full(12, 0.3), rng.uniform(0.2, 0.8, 12)], axis=1)
        result.append(Replay(LEFT, f"e{index}.h5", true, predict(true)))
    return result


def test_a_policy_that_sees_beats_the_blind_baseline_and_reacts_to_other_frames():
    report = summarize(replays(lambda true: true + 0.01), NAMES, None)
    assert report["mae_vs_blind"][LEFT] < 0.2
    assert report["frame_sensitivity"][LEFT] == pytest.approx(1.0)
    assert report["warnings"] == []


def test_a_policy_that_ignores_its_images_is_flagged():
    """The best it can do is a constant per instruction: the blind baseline itself, ratio >= 1."""
    report = summarize(replays(lambda true: np.tile([[0.3, 0.5]], (len(true), 1))), NAMES, None)
    assert report["mae_vs_blind"][LEFT] >= 1.0 > BLIND_WARNING
    assert report["frame_sensitivity"][LEFT] == 0.0
    assert len(report["warnings"]) == 1 and "image-blind baseline" in report["warnings"][0]
    median = np.median(np.concatenate([r.true for r in replays(lambda t: t)]), axis=0)
    assert report["blind_mae"][LEFT]["linear_x"] == pytest.approx(0.0)
    assert report["blind_mae"][LEFT]["linear_y"] == pytest.approx(
        np.abs(np.concatenate([r.true[:, 1] for r in replays(lambda t: t)]) - median[1]).mean()
    )


def test_eval_warns_about_the_image_blind_fixture_policy(tiny_checkpoint, tiny_base_model, tmp_path, capsys):
    """tiny_checkpoint was fitted to give the same action on any frames: eval must say so."""
    write_mirrored_dataset(tmp_path / "twins", pairs=2, frames=10, seed=3)
    out = tmp_path / "eval.json"
    assert (
        main(
            [
                "eval",
                "--threads",
                "1",
                "--model",
                str(tiny_checkpoint),
                "--base-model",
                str(tiny_base_model),
                "--data",
                str(tmp_path / "twins"),
                "--json",
                str(out),
            ]
        )
        == 0
    )
    report = json.loads(out.read_text())
    assert set(report["mae_vs_blind"]) == set(LAB_INSTRUCTIONS.values())
    assert all(ratio >= BLIND_WARNING for ratio in report["mae_vs_blind"].values())
    assert all(sensitivity < 0.1 for sensitivity in report["frame_sensitivity"].values())
    printed = capsys.readouterr().out
    assert printed.count("WARNING") == 2 and "vs blind" in printed

"""The precisions the robot runs the backbone at (issue 23): the low-precision backbone used for
measuring and checking them, the noise-floored feature whitening, and the verdicts the node reads."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mobile_vla_ros.policy.checkpoint import load_policy
from mobile_vla_ros.policy.normalization import Normalizer
from mobile_vla_ros.policy.precision import backbone_at, precision_verdict
from mobile_vla_ros.training.metrics import Replay, encode_episode
from mobile_vla_ros.training.precision_checks import action_drift, compare_precisions

FRAMES = np.random.default_rng(0).integers(0, 256, (6, 224, 224, 3), dtype=np.uint8)


def test_backbone_at_runs_in_the_low_precision_and_gives_back_the_exact_fp32_weights(tiny_checkpoint, tiny_base_model):
    policy = load_policy(tiny_checkpoint, tiny_base_model)
    before = {name: tensor.clone() for name, tensor in policy.encoder.state_dict().items()}
    fp32 = encode_episode(policy, FRAMES, "left")
    with backbone_at(policy, "bf16"):
        assert policy.compute_dtype == torch.bfloat16
        bf16 = encode_episode(policy, FRAMES, "left")
    assert policy.compute_dtype == torch.float32
    assert all(torch.equal(before[name], tensor) for name, tensor in policy.encoder.state_dict().items())
    assert torch.equal(encode_episode(policy, FRAMES, "left"), fp32)
    error = float((bf16.float() - fp32).norm(dim=1).mean() / fp32.norm(dim=1).mean())
    assert 1e-4 < error < 0.05, error  # rounding, not another model


def test_whitening_never_stretches_the_precision_error_past_unit_spread():
    """Directions in which training frames barely differ but rounding moves them are not blown up:
    the run-time error stays at most ~1 per whitened direction (plain whitening: ~1e3)."""
    generator = torch.Generator().manual_seed(0)
    dim = 16
    common = torch.randn(dim, generator=generator) * 10
    signal = torch.zeros(400, dim)
    signal[:, :2] = torch.randn(400, 2, generator=generator)  # what the frames differ in
    signal[:, 2:] = 1e-4 * torch.randn(400, dim - 2, generator=generator)  # far below the rounding
    features = common + signal
    errors = 0.05 * torch.randn(400, dim, generator=generator)

    def whitened_error(normalizer: Normalizer) -> float:
        return float((errors @ normalizer.feature_whitening).pow(2).sum(dim=1).mean())

    plain, floored = (Normalizer(dim, 2, (0.5,) * 3, (0.25,) * 3) for _ in range(2))
    plain.set_feature_statistics(features)
    floored.set_feature_statistics(features, errors)
    assert whitened_error(plain) > 100 * dim
    assert whitened_error(floored) <= dim
    assert torch.allclose(floored.precision_noise_factor @ floored.precision_noise_factor.T, floored.precision_noise)

    window = features[:24].view(3, 8, dim)
    floored.eval()
    assert torch.equal(floored.normalize_features(window), floored.normalize_features(window))  # no noise at run time
    floored.train()
    assert not torch.equal(floored.normalize_features(window), floored.normalize_features(window))  # trained under it


def report(separation, sign, blind):
    return {
        "instruction_separation": separation,
        "sign_accuracy": {"left": sign, "right": 1.0},
        "mae_vs_blind": {"left": blind, "right": 0.1},
        "frame_sensitivity": {"left": 0.9, "right": 1.0},
    }


def test_a_precision_is_judged_against_fp32_with_the_tolerance():
    checks = compare_precisions(
        {
            "fp32": report(1.06, 1.0, 0.40),
            "bf16": report(0.95, 0.99, 0.45),  # separation nearer 1 than fp32's; 0.45 within 10 % + 0.02
            "fp16": report(0.70, 0.80, 0.70),
        },
        tolerance=0.1,
    )
    assert checks["fp32"]["passed"] and checks["bf16"]["passed"], checks
    assert not checks["fp16"]["passed"]
    assert [line.split()[0] for line in checks["fp16"]["behind"]] == [
        "instruction_separation",
        "sign_accuracy",
        "mae_vs_blind",
    ]
    assert checks["bf16"]["sign_accuracy"] == 0.99 and checks["bf16"]["mae_vs_blind"] == 0.45  # worst instruction


def test_a_precision_that_moves_the_actions_by_most_of_fp32s_error_fails_even_with_fp32s_figures():
    """The labels' MAE hides drift where the policy generalises badly; the drift does not depend on
    the labels: the twins at bf16 moved their actions by 0.76-0.96 of fp32's error, the demo's
    policy by 0.34-0.40 (docs/results.md)."""
    true = np.zeros((10, 2))
    fp32 = [Replay("left", "a", true, np.full((10, 2), 0.1))]  # fp32's error: 0.1 per action
    moved = [Replay("left", "a", true, np.array([[0.1, 0.1 + 0.08 * (-1) ** t] for t in range(10)]))]
    assert action_drift(moved, fp32) == pytest.approx(0.8)  # the worse action: 0.08 of 0.1
    assert action_drift(fp32, fp32) == 0.0
    assert action_drift(moved, [Replay("left", "a", true, true)]) is None  # fp32 exact: no scale

    same = report(1.0, 1.0, 0.3)  # the labels' figures pass every precision
    ones = np.ones((8, 2))  # fp32 predicts 0: its error is 1 per action
    replays = {
        dtype: [Replay("left", "a", ones, np.array([[0.1, (-1) ** t * sideways] for t in range(8)]))]
        for dtype, sideways in (("bf16", 0.8), ("fp16", 0.125))  # 0.125: exact in binary
    }
    replays["fp32"] = [Replay("left", "a", ones, np.zeros((8, 2)))]
    checks = compare_precisions({"fp32": same, "bf16": same, "fp16": same}, 0.1, 0.6, replays)
    assert not checks["bf16"]["passed"]
    assert checks["bf16"]["behind"] == ["action_drift 0.80 of fp32's error (limit 0.6)"]
    assert checks["fp16"]["passed"] and checks["fp16"]["action_drift"] == 0.125
    assert compare_precisions({"fp32": same, "bf16": same}, 0.1, None, replays)["bf16"]["passed"]


@pytest.mark.parametrize(
    "precision, passed, words",
    [("bf16", True, "checked at bf16"), ("fp16", False, "fell behind fp32 at fp16"), ("int8", None, "never checked")],
)
def test_the_node_reads_a_verdict_per_precision(tiny_checkpoint, precision, passed, words):
    from mobile_vla_ros.policy.config import PolicyConfig

    config = PolicyConfig.load(tiny_checkpoint)
    checks = compare_precisions({"fp32": report(1.0, 1.0, 0.3), "bf16": report(1.0, 1.0, 0.3)}, 0.1)
    checks["fp16"] = {**checks["bf16"], "passed": False, "behind": ["mae_vs_blind 0.9 against fp32's 0.3"]}
    config.precision_checks = checks
    verdict, message = precision_verdict(config, precision)
    assert verdict is passed and words in message, message

"""Training and evaluation at the precisions the robot runs: the run-time feature error that the
feature whitening and training noise are built from, and the check of the trained policy at each
precision against fp32 (docs/architecture.md, "Precision")."""

from __future__ import annotations

import logging

import numpy as np
import torch
from tqdm import tqdm

from mobile_vla_ros.policy.precision import REFERENCE_PRECISION, backbone_at
from mobile_vla_ros.training.metrics import encode_episode

LOG = logging.getLogger(__name__)
# A precision fails its check when a figure is worse than fp32's by more than `tolerance` of it
# plus this much (so that figures near zero are not judged on their last digit).
ABSOLUTE_SLACK = 0.02
# (report key, how the per-instruction values are combined, how far a value is from ideal: lower is better).
# Separation is ideal at 1: 1.07 overshoots by as much as 0.93 falls short.
JUDGED = (
    ("instruction_separation", None, lambda value: abs(1.0 - value)),
    ("sign_accuracy", min, lambda value: 1.0 - value),
    ("mae_vs_blind", max, lambda value: value),
)
REPORTED = (("frame_sensitivity", min),)
FAMILIARITY_THRESHOLDS = ("p99", "p99.9")  # metrics.familiarity_distribution's conformal quantiles


def precision_errors(policy, episodes, dtypes, frames: int) -> torch.Tensor | None:
    """(M, hidden) run-time-precision features minus fp32 features, for up to `frames` training
    frames spread evenly over the episodes, for each precision in `dtypes`."""
    if not dtypes or not episodes:
        return None
    per_episode = max(1, frames // len(episodes))
    picks = [
        (episode, np.unique(np.linspace(0, episode.num_frames - 1, per_episode).round().astype(int)))
        for episode in episodes
    ]
    budget, chosen = frames, []
    for episode, indices in picks:
        if budget <= 0:
            break
        chosen.append((episode, indices[:budget]))
        budget -= len(indices[:budget])
    was_training = policy.training
    policy.eval()
    try:
        reference = [encode_episode(policy, episode.frames[i], episode.instruction) for episode, i in chosen]
        errors = []
        for dtype in tqdm(dtypes, desc="run-time precision error", unit="dtype", leave=False):
            with backbone_at(policy, dtype):
                errors += [
                    encode_episode(policy, episode.frames[i], episode.instruction).float() - fp32
                    for (episode, i), fp32 in zip(chosen, reference)
                ]
    finally:
        policy.train(was_training)
    errors = torch.cat(errors)
    LOG.info(
        "run-time precision error (%s, %d frames): %.3g of the feature norm",
        ", ".join(dtypes),
        sum(len(i) for _, i in chosen),
        float(errors.norm(dim=1).mean() / torch.cat(reference).norm(dim=1).mean()),
    )
    return errors


def headline(report: dict) -> dict:
    """The figures a precision is judged and reported on, one number each."""
    figures = {}
    for key, combine, _ in JUDGED:
        figures[key] = _combined(report.get(key), combine)
    for key, combine in REPORTED:
        figures[key] = _combined(report.get(key), combine)
    familiarity = report.get("familiarity") or {}
    for name in FAMILIARITY_THRESHOLDS:
        figures[f"familiarity_{name}"] = familiarity.get("calibrated", {}).get(name)
    figures["familiarity_frames"] = familiarity.get("frames")
    return figures


def calibrate_familiarity(checks: dict) -> dict:
    """policy.json `familiarity`: each threshold is the highest of that conformal quantile of the
    validation frames' scores over the checked precisions (rounding raises the scores a little at bf16), so
    frames like the validation frames pass at every precision the robot may run."""
    thresholds = {}
    for name in FAMILIARITY_THRESHOLDS:
        values = [check.get(f"familiarity_{name}") for check in checks.values()]
        if all(value is not None for value in values) and values:
            thresholds[name] = max(values)
    if not thresholds:
        return {}
    frames = checks[REFERENCE_PRECISION].get("familiarity_frames")
    return {"thresholds": thresholds, "validation_frames": frames, "precisions": sorted(checks)}


def _combined(value, combine):
    if combine is None or value is None:
        return value
    values = [v for v in value.values() if v is not None]
    return float(combine(values)) if values else None


def action_drift(replays: list, reference: list) -> float | None:
    """How far a precision moves the actions from fp32's on the same frames, as a share of fp32's own
    error against the recorded actions (the larger of the actions' shares). Unlike the labels' MAE it
    does not depend on how well the policy generalises, so a few validation episodes measure it."""
    predicted = np.concatenate([replay.predicted for replay in replays])
    fp32 = np.concatenate([replay.predicted for replay in reference])
    error = np.abs(fp32 - np.concatenate([replay.true for replay in reference])).mean(axis=0)
    if not np.all(error > 0):
        return None
    return float((np.abs(predicted - fp32).mean(axis=0) / error).max())


def compare_precisions(
    reports: dict[str, dict], tolerance: float, max_drift: float | None = None, replays: dict | None = None
) -> dict:
    """{precision: figures + passed + behind} against the fp32 report (which must be among them).
    With `replays` ({precision: the replays its report summarises}, fp32's among them) also the
    action drift, which fails above `max_drift`."""
    replays = replays or {}
    reference = headline(reports[REFERENCE_PRECISION])
    checks = {REFERENCE_PRECISION: {**reference, "passed": True, "behind": []}}
    for precision, report in reports.items():
        if precision == REFERENCE_PRECISION:
            continue
        figures = headline(report)
        if precision in replays and REFERENCE_PRECISION in replays:
            figures["action_drift"] = action_drift(replays[precision], replays[REFERENCE_PRECISION])
        behind = []
        for key, _, shortfall in JUDGED:
            value, target = figures[key], reference[key]
            if value is None or target is None:
                continue
            slack = tolerance * abs(target) + ABSOLUTE_SLACK
            if shortfall(value) - shortfall(target) > slack:
                behind.append(f"{key} {value:.3f} against fp32's {target:.3f}")
        drift = figures.get("action_drift")
        if drift is not None and max_drift is not None and drift > max_drift:
            behind.append(f"action_drift {drift:.2f} of fp32's error (limit {max_drift:g})")
        checks[precision] = {**figures, "passed": not behind, "behind": behind}
    return checks


def check_precisions(policy, episodes, fp32_report: dict, fp32_replays: list, settings) -> dict:
    """Training's end-of-run check: the validation replay again at each run-time precision of
    `settings` (the config's runtime_precision section)."""
    from mobile_vla_ros.training.metrics import evaluate_policy

    reports, replays = {REFERENCE_PRECISION: fp32_report}, {REFERENCE_PRECISION: fp32_replays}
    for dtype in settings.dtypes:
        with backbone_at(policy, dtype):
            reports[dtype], replays[dtype] = evaluate_policy(policy, episodes)
    checks = compare_precisions(reports, settings.tolerance, settings.max_drift, replays)
    for precision, check in checks.items():
        if not check["passed"]:
            LOG.warning("at %s the policy falls behind fp32: %s", precision, "; ".join(check["behind"]))
    return checks


def format_checks(checks: dict) -> list[str]:
    """A table: one row per precision."""

    def number(value):
        return "n/a" if value is None else f"{value:.3f}"

    rows = [f"{'precision':<10} {'separation':>10} {'sign y':>7} {'vs blind':>9} {'frames→':>8} {'drift':>6}  check"]
    for precision, check in checks.items():
        drift = "" if precision == REFERENCE_PRECISION else number(check.get("action_drift"))
        rows.append(
            f"{precision:<10} {number(check['instruction_separation']):>10} {number(check['sign_accuracy']):>7} "
            f"{number(check['mae_vs_blind']):>9} {number(check['frame_sensitivity']):>8} {drift:>6}  "
            + ("reference" if precision == REFERENCE_PRECISION else "ok" if check["passed"] else "BEHIND fp32")
        )
    return rows

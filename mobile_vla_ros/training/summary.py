"""The end-of-training summary: the dictionary saved as training/summary.json and the table printed
from it."""

from __future__ import annotations

import math
from pathlib import Path

from mobile_vla_ros.data.windows import SkipReport


def last_metric(trainer, name: str) -> float | None:
    value = trainer.callback_metrics.get(name)
    return float(value) if value is not None and math.isfinite(float(value)) else None


def summarize(
    run,
    trainer,
    state,
    skipped: SkipReport,
    train_count,
    val_count,
    data,
    report,
    precision_checks,
    familiarity,
    seconds,
) -> dict:
    return {
        "data_dirs": [str(Path(d).resolve()) for d in run.data_dirs],
        "steps": int(trainer.global_step),
        "epochs": int(trainer.current_epoch),
        "seconds": round(seconds, 1),
        "windows_per_second": round(state.windows_per_second, 2) if state.windows_per_second else None,
        "episodes": {
            "train": train_count,
            "validation": val_count,
            "skipped": len(skipped.skipped),
            "found": skipped.total,
            "corrections": len(skipped.corrections),
        },
        "windows": {
            "train": data.train_set.num_windows,
            "validation": data.val_set.num_windows if data.val_set else 0,
            "left_out": skipped.windows_left_out,
            "left_out_by": dict(skipped.left_out_by),
        },
        "train_loss": last_metric(trainer, "train_loss"),
        "val_loss": last_metric(trainer, "val_loss"),
        "validation": report,
        "instruction_separation": report["instruction_separation"] if report else None,
        "mae_vs_blind": report["mae_vs_blind"] if report else None,
        "precision_checks": precision_checks,
        "familiarity": familiarity,
        "config": run.config.to_dict(),
    }


def format_summary(summary: dict, out_dir) -> str:
    """The human-readable end-of-training table."""
    from mobile_vla_ros.training.metrics import short_instruction

    def number(value, digits=4):
        return "n/a" if value is None else f"{value:.{digits}g}" if isinstance(value, float) else str(value)

    report = summary.get("validation") or {}
    lines = [
        "training summary",
        f"  steps / epochs          {summary['steps']} / {summary['epochs']}  ({summary['seconds']} s, "
        f"{number(summary['windows_per_second'])} windows/s)",
        f"  episodes                {summary['episodes']['train']} train, "
        f"{summary['episodes']['validation']} validation "
        f"(mirrors included), {summary['episodes']['skipped']} of {summary['episodes']['found']} skipped",
        f"  windows left out        {summary['windows']['left_out']} flagged by quality checks "
        f"{summary['windows']['left_out_by'] or ''}  (train {summary['windows']['train']}, "
        f"validation {summary['windows']['validation']})",
        f"  loss                    train {number(summary['train_loss'])}, validation {number(summary['val_loss'])}",
        f"  instruction separation  {number(summary['instruction_separation'], 3)}  "
        "(1 = follows left/right, 0 = ignores it)",
        f"  feature cosine l/r      {number(report.get('feature_cosine'), 3)}",
    ]
    for instruction, accuracy in (report.get("sign_accuracy") or {}).items():
        mae = ", ".join(f"{name} {value:.3f}" for name, value in report["mae"][instruction].items())
        blind = ", ".join(f"{value:.3f}" for value in report["blind_mae"][instruction].values())
        lines.append(
            f"  {short_instruction(instruction, 60):<60}  linear_y sign {number(accuracy, 3)}, MAE {mae}, "
            f"image-blind {blind}, vs blind {number(report['mae_vs_blind'][instruction], 3)}, "
            f"frame sensitivity {number(report['frame_sensitivity'][instruction], 3)}"
        )
    lines.extend(f"  WARNING: {warning}" for warning in report.get("warnings", []))
    checks = summary.get("precision_checks") or {}
    if checks:
        from mobile_vla_ros.training.precision_checks import format_checks

        lines.append("  validation at each backbone precision the robot may run:")
        lines.extend(f"    {row}" for row in format_checks(checks))
    thresholds = (summary.get("familiarity") or {}).get("thresholds")
    if thresholds:
        lines.append(
            "  familiarity thresholds  "
            + ", ".join(f"{name} {value:.3g}" for name, value in thresholds.items())
            + " (validation frames' scores at every checked precision; frames above are unfamiliar)"
        )
    lines.extend(
        f"  WARNING: at {precision} the policy falls behind fp32 ({'; '.join(check['behind'])}); "
        f"inference_node refuses {precision}; retraining with a higher runtime_precision.noise_margin "
        "(e.g. 3) makes the head ignore more of what the rounding changes"
        for precision, check in checks.items()
        if not check["passed"]
    )
    if summary.get("cut_by_max_minutes"):
        lines.append(f"  WARNING: {summary['cut_by_max_minutes']}")
    lines.append(f"  policy written to       {out_dir}")
    return "\n".join(lines)

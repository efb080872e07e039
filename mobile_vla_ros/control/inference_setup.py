"""What inference_node builds from its parameters (`p`: the node's parameter values as attributes)
and the checkpoint's policy.json before any publisher exists: instruction presets, the drive controller
with its familiarity monitor, the backend's device and dtype, the precision check. A refusal raises
MobileVlaError, before the (slow) model load where it can; then the model is loaded.
"""

from __future__ import annotations

from collections.abc import Callable

from mobile_vla_ros.control.drive import DriveController, SafetySettings, resolve_stale_timeouts
from mobile_vla_ros.control.familiarity import FamiliarityMonitor, FamiliaritySettings
from mobile_vla_ros.control.limits import VelocityLimits
from mobile_vla_ros.errors import MobileVlaError
from mobile_vla_ros.policy.config import PolicyConfig

FAMILIARITY_UNCALIBRATED = (
    "familiarity monitor off: the policy has no calibrated threshold (trained without validation "
    "episodes?); unfamiliar frames will not slow or stop the robot"
)


def parse_presets(entries) -> dict[str, str]:
    """instruction_presets: 'name=full text' entries -> {lower-case name: text}."""
    presets = {}
    for entry in entries or ():
        name, separator, text = entry.partition("=")
        if not separator or not name.strip() or not text.strip():
            raise MobileVlaError(f"instruction_presets entry {entry!r} is not of the form 'name=full instruction'")
        presets[name.strip().lower()] = text.strip()
    return presets


def drive_controller(p, config: PolicyConfig, limits: VelocityLimits) -> tuple[DriveController, list[str]]:
    """The controller, and the notes for the log on the stale timeouts taken from the model."""
    control_period_s = 1.0 / p.control_rate_hz
    timeouts, notes = resolve_stale_timeouts(
        {name: getattr(p, name) for name in ("camera_stale_timeout_s", "chunk_stale_timeout_s")},
        config.action_dt,
        control_period_s,
    )
    familiarity = FamiliaritySettings(
        p.familiarity_action, p.familiarity_threshold, p.familiarity_hold_s, p.familiarity_slow_factor
    )
    safety = SafetySettings(
        camera_stale_s=timeouts["camera_stale_timeout_s"],
        chunk_stale_s=timeouts["chunk_stale_timeout_s"],
        override_hold_s=p.override_hold_s,
        joy_timeout_s=p.joy_timeout_s,
        max_model_output=p.max_model_output,
        start_enabled=p.start_enabled,
        require_deadman=p.require_deadman,
    )
    monitor = familiarity_monitor(familiarity, config.familiarity)
    return DriveController(config.action_dt, control_period_s, limits, safety, monitor), notes


def familiarity_monitor(settings: FamiliaritySettings, calibration: dict) -> FamiliarityMonitor:
    """The monitor at the threshold `settings` names in policy.json `familiarity` (`calibration`);
    without calibrated thresholds it is inactive (FAMILIARITY_UNCALIBRATED)."""
    problems = settings.problems()
    thresholds = calibration.get("thresholds", {})
    if thresholds and settings.threshold not in thresholds:
        problems.append(f"familiarity_threshold must be one of {', '.join(thresholds)}, got {settings.threshold!r}")
    if problems:
        raise MobileVlaError("; ".join(problems))
    return FamiliarityMonitor(thresholds.get(settings.threshold), settings)


def describe_familiarity(monitor: FamiliarityMonitor) -> str:
    settings = monitor.settings
    return (
        f"familiarity monitor: {settings.action} when frames score above {monitor.threshold:.3g} "
        f"({settings.threshold} of the validation frames) for {settings.hold_s:g} s"
    )


def resolve_backend(p) -> tuple[object, str, str]:
    """(torch device, dtype, why that dtype) for p.backend; imports torch, so call it once the
    settings that need no model are checked."""
    from mobile_vla_ros.policy.backbone import resolve_device, resolve_dtype

    device = resolve_device(p.device)
    if p.backend == "onnxruntime":
        from mobile_vla_ros.policy.onnx_encoder import check_onnx_settings

        onnx_dir = check_onnx_settings(p.model_dir, p.onnx_dir or None, p.dtype, p.quantize)
        return device, "fp32", f"the ONNX graph in {onnx_dir} is fp32"
    if p.backend == "pytorch":
        return device, *resolve_dtype(p.dtype, device, p.quantize)
    raise MobileVlaError(f"backend must be pytorch or onnxruntime, got {p.backend!r}")


def check_precision(config: PolicyConfig, precision: str, allow_failed: bool) -> tuple[bool | None, str]:
    """Refuse a precision at which the policy fell behind fp32 in training (unless `allow_failed`);
    one never checked passes with a warning (a policy trained without validation episodes has no
    checks; its whitening still covers bf16 and fp16). Returns (passed, the line for the log)."""
    from mobile_vla_ros.policy.precision import precision_verdict

    passed, message = precision_verdict(config, precision)
    if passed is False and not allow_failed:
        raise MobileVlaError(
            f"{message}. Drive at fp32 (dtype: fp32) or another checked dtype, retrain, or set "
            "allow_failed_precision_check: true"
        )
    return passed, message


def load_runner(p, config: PolicyConfig, info: Callable[[str], None], warning: Callable[[str], None]):
    """The policy.runner.PolicyRunner the parameters ask for, once the precision check passed."""
    device, dtype, why = resolve_backend(p)
    passed, message = check_precision(config, "int8" if p.quantize == "int8" else dtype, p.allow_failed_precision_check)
    if passed:  # rclpy: one severity per call site
        info(message)
    else:
        warning(message)
    info(f"loading policy {p.model_dir} on base model {p.base_model_dir} ({p.backend}, {device}, {dtype}: {why}) ...")
    from mobile_vla_ros.policy.runner import PolicyRunner

    return PolicyRunner.load(
        p.model_dir,
        p.base_model_dir,
        device=str(device),
        dtype=dtype,
        quantize=p.quantize,
        max_new_frames=p.max_new_frames_per_step,
        backend=p.backend,
        onnx_dir=p.onnx_dir or None,
    )

"""The backbone precisions a policy runs at: a temporary low-precision backbone for measuring and
checking them in training and evaluation, and the verdict of those checks that the robot reads
from policy.json before it drives (docs/architecture.md, "Precision")."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from mobile_vla_ros.policy.backbone import torch_dtype
from mobile_vla_ros.policy.config import PolicyConfig

REFERENCE_PRECISION = "fp32"


@contextmanager
def backbone_at(policy, dtype_name: str) -> Iterator[None]:
    """The policy's frame encoder runs in `dtype_name` inside the block, as `load_policy(dtype=...)`
    would load it; its fp32 weights are set aside (not re-rounded) and put back afterwards."""
    dtype = torch_dtype(dtype_name)
    tensors = [*policy.encoder.parameters(), *policy.encoder.buffers()]
    kept = [(tensor, tensor.data) for tensor in tensors if tensor.is_floating_point()]
    try:
        for tensor, data in kept:
            tensor.data = data.to(dtype)
        yield
    finally:
        for tensor, data in kept:
            tensor.data = data


def precision_verdict(config: PolicyConfig, precision: str) -> tuple[bool | None, str]:
    """(True: checked and passed, False: checked and fell behind fp32, None: never checked) and a
    line for the log naming the checked figures."""
    checks = config.precision_checks
    if precision == REFERENCE_PRECISION and precision in checks:
        return True, f"{precision} is the reference precision: {format_check(checks[precision])}"
    if precision not in checks:
        checked = ", ".join(sorted(checks)) or "none"
        return None, f"the policy was never checked at {precision} (checked: {checked})"
    check = checks[precision]
    if check.get("passed"):
        return True, f"checked at {precision} in training: {format_check(check)}"
    return False, (
        f"the policy fell behind fp32 at {precision} in training ({'; '.join(check.get('behind', []))}): "
        f"{format_check(check)}"
    )


def format_check(check: dict) -> str:
    def number(value):
        return "n/a" if value is None else f"{value:.3f}"

    drift = check.get("action_drift")
    return (
        f"separation {number(check.get('instruction_separation'))}, "
        f"sign accuracy {number(check.get('sign_accuracy'))}, "
        f"MAE {number(check.get('mae_vs_blind'))}x image-blind, "
        f"frame sensitivity {number(check.get('frame_sensitivity'))}"
        + ("" if drift is None else f", actions moved {drift:.2f} of fp32's error")
    )

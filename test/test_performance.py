"""Performance plumbing: the dtype picked from the hardware, per-stage latency, the int8 checkpoint,
and the bounded per-step encoding that keeps the latency tail short."""
from __future__ import annotations

import pytest
import torch

from mobile_vla_ros.policy.backbone import choose_dtype, cpu_flags, resolve_dtype

ZEN3_FLAGS = frozenset("fpu sse sse2 avx avx2 fma".split())  # this development machine: AVX2 only
SAPPHIRE_RAPIDS_FLAGS = ZEN3_FLAGS | {"avx512f", "avx512_bf16", "amx_bf16", "amx_tile"}


@pytest.mark.parametrize("device, cuda_bf16, flags, quantize, expected", [
    ("cuda", True, frozenset(), "none", "bf16"),              # Ampere and newer, Jetson Orin
    ("cuda", False, frozenset(), "none", "fp16"),             # Turing, Volta
    ("cpu", False, SAPPHIRE_RAPIDS_FLAGS, "none", "bf16"),    # AMX / AVX-512-BF16
    ("cpu", False, ZEN3_FLAGS | {"avx512_bf16"}, "none", "bf16"),
    ("cpu", False, frozenset({"fp", "asimd", "bf16"}), "none", "bf16"),  # ARMv8.6 with BF16
    ("cpu", False, ZEN3_FLAGS, "none", "fp32"),               # AVX2 only: bf16 would be emulated
    ("cpu", False, frozenset(), "none", "fp32"),              # flags unknown: the safe choice
    ("cpu", False, SAPPHIRE_RAPIDS_FLAGS, "int8", "fp32"),    # int8 weights come from fp32
])
def test_auto_dtype_follows_the_hardware(device, cuda_bf16, flags, quantize, expected):
    dtype, why = choose_dtype(device, cuda_bf16, flags, quantize)
    assert dtype == expected
    assert why  # the reason is printed to the user


def test_cpu_flags_read_x86_and_arm_cpuinfo(tmp_path):
    x86, arm = tmp_path / "x86", tmp_path / "arm"
    x86.write_text("processor\t: 0\nflags\t\t: fpu avx2 avx512_bf16\n\nprocessor\t: 1\nflags\t\t: fpu\n")
    arm.write_text("processor\t: 0\nFeatures\t: fp asimd bf16\n")
    assert cpu_flags(x86) == {"fpu", "avx2", "avx512_bf16"}
    assert "bf16" in cpu_flags(arm)
    assert cpu_flags(tmp_path / "missing") == frozenset()


def test_explicit_dtype_wins_and_unknown_names_are_refused():
    assert resolve_dtype("bf16", torch.device("cpu")) == ("bf16", "requested")
    with pytest.raises(ValueError, match="unknown dtype 'int4'"):
        resolve_dtype("int4", torch.device("cpu"))
    auto, why = resolve_dtype("auto", torch.device("cpu"))
    assert auto == choose_dtype("cpu", False, cpu_flags())[0] and why != "requested"

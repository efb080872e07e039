"""Performance plumbing: the dtype picked from the hardware, per-stage latency, the int8 checkpoint,
and the bounded per-step encoding that keeps the latency tail short."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from mobile_vla_ros.policy.backbone import choose_dtype, cpu_flags, resolve_dtype

ZEN3_FLAGS = frozenset("fpu sse sse2 avx avx2 fma".split())  # this development machine: AVX2 only
SAPPHIRE_RAPIDS_FLAGS = ZEN3_FLAGS | {"avx512f", "avx512_bf16", "amx_bf16", "amx_tile"}


@pytest.mark.parametrize(
    "device, cuda_bf16, flags, quantize, expected",
    [
        ("cuda", True, frozenset(), "none", "bf16"),  # Ampere and newer, Jetson Orin
        ("cuda", False, frozenset(), "none", "fp16"),  # Turing, Volta
        ("cpu", False, SAPPHIRE_RAPIDS_FLAGS, "none", "bf16"),  # AMX / AVX-512-BF16
        ("cpu", False, ZEN3_FLAGS | {"avx512_bf16"}, "none", "bf16"),
        ("cpu", False, frozenset({"fp", "asimd", "bf16"}), "none", "bf16"),  # ARMv8.6 with BF16
        ("cpu", False, ZEN3_FLAGS, "none", "fp32"),  # AVX2 only: bf16 would be emulated
        ("cpu", False, frozenset(), "none", "fp32"),  # flags unknown: the safe choice
        ("cpu", False, SAPPHIRE_RAPIDS_FLAGS, "int8", "fp32"),  # int8 weights come from fp32
    ],
)
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


# ---- int8 checkpoint -------------------------------------------------------------------------------
import numpy as np  # noqa: E402

from mobile_vla_ros.errors import CheckpointError  # noqa: E402
from mobile_vla_ros.policy.instructions import LAB_INSTRUCTIONS  # noqa: E402
from mobile_vla_ros.policy.quantize import INT8_BACKBONE_FILE, int8_linear_type, quantize_int8_  # noqa: E402
from mobile_vla_ros.policy.runner import PolicyRunner  # noqa: E402

LEFT = LAB_INSTRUCTIONS["left"]


def frames(count, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (count, 224, 224, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def int8_checkpoint(tiny_checkpoint, tiny_base_model, tmp_path_factory):
    from mobile_vla_ros.cli.main import main

    out = tmp_path_factory.mktemp("int8") / "policy_int8"
    assert (
        main(["quantize", "--model", str(tiny_checkpoint), "--base-model", str(tiny_base_model), "--out", str(out)])
        == 0
    )
    return out


def test_int8_checkpoint_loads_without_the_fp32_weights_and_matches_in_place_int8(
    int8_checkpoint, tiny_checkpoint, tiny_base_model, monkeypatch
):
    assert (int8_checkpoint / INT8_BACKBONE_FILE).is_file()
    in_place = PolicyRunner.load(tiny_checkpoint, tiny_base_model, device="cpu", dtype="fp32", quantize="int8")
    fp32 = PolicyRunner.load(tiny_checkpoint, tiny_base_model, device="cpu", dtype="fp32")
    from transformers import Kosmos2ForConditionalGeneration

    def refuse(*args, **kwargs):
        raise AssertionError("the fp32 base weights were loaded")

    monkeypatch.setattr(Kosmos2ForConditionalGeneration, "from_pretrained", refuse)
    stored = PolicyRunner.load(int8_checkpoint, tiny_base_model, device="cpu", dtype="auto", quantize="int8")
    layer = stored.policy.encoder.kosmos.text_model.model.layers[0].self_attn.q_proj
    assert isinstance(layer, int8_linear_type())
    assert not any(t.is_meta for t in [*stored.policy.parameters(), *stored.policy.buffers()])
    kosmos = stored.policy.encoder.kosmos
    assert kosmos.text_model.lm_head.weight is kosmos.text_model.model.embed_tokens.weight  # tied, stored once
    video = frames(10, seed=1)
    for runner in (stored, in_place, fp32):
        runner.set_instruction(LEFT)
    for newest in range(len(video)):
        window = video[max(0, newest - 7) : newest + 1]
        actions = stored.step(window)
        np.testing.assert_allclose(actions, in_place.step(window), atol=1e-6)
        np.testing.assert_allclose(actions, fp32.step(window), atol=0.05)


def test_int8_checkpoint_loads_with_a_tokenizer_directory_alone(int8_checkpoint, tiny_base_model):
    """As `mobile-vla bench --quantize int8` loads it: no base directory, the tokenizer's as a string;
    the saved normalisation, not a default, is what the policy uses."""
    from safetensors.torch import load_file

    from mobile_vla_ros.policy.checkpoint import NORMALIZATION_FILE
    from mobile_vla_ros.policy.quantize import load_int8_policy

    policy = load_int8_policy(int8_checkpoint, None, str(tiny_base_model))
    saved = load_file(int8_checkpoint / NORMALIZATION_FILE)
    for name, tensor in policy.normalizer.state_dict().items():
        assert torch.equal(tensor, saved[name]), name


def test_int8_checkpoint_refuses_another_base_and_stays_a_complete_fp32_checkpoint(
    int8_checkpoint, tiny_base_model, tmp_path
):
    from mobile_vla_ros.policy.tiny import make_tiny_model

    other = make_tiny_model(tmp_path / "other_base", seed=1)
    with pytest.raises(CheckpointError, match="made from base model"):
        PolicyRunner.load(int8_checkpoint, other, device="cpu", dtype="fp32", quantize="int8")
    plain = PolicyRunner.load(int8_checkpoint, tiny_base_model, device="cpu", dtype="fp32")
    assert isinstance(plain.policy.encoder.kosmos.text_model.model.layers[0].self_attn.q_proj, torch.nn.Linear)


def test_an_int8_backbone_made_for_another_policy_is_refused(int8_checkpoint, tiny_base_model, tmp_path):
    """The int8 file and the base model agree, but the policy was trained on another base: the int8
    weights were copied in from elsewhere."""
    copy = Path(shutil.copytree(int8_checkpoint, tmp_path / "policy_int8"))
    config = json.loads((copy / "policy.json").read_text())
    config["base_model"]["fingerprint"] = "sha256:" + "0" * 24
    (copy / "policy.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="trained on sha256:0+: run `mobile-vla quantize`"):
        PolicyRunner.load(copy, tiny_base_model, device="cpu", dtype="fp32", quantize="int8")


def test_in_place_int8_keeps_the_tied_vocabulary_projection_shared(tiny_base_model):
    from mobile_vla_ros.policy.backbone import load_base_model

    model = load_base_model(tiny_base_model).model
    converted = quantize_int8_(model)
    assert converted is model
    assert model.text_model.lm_head.weight is model.text_model.model.embed_tokens.weight
    assert not any(
        type(module) is torch.nn.Linear and module is not model.text_model.lm_head for module in model.modules()
    )


# ---- bounded encoding per step -------------------------------------------------------------------
@pytest.mark.parametrize("max_new_frames, encoded", [(1, [1]), (8, [3])])
def test_a_step_encodes_at_most_max_new_frames_and_holds_the_skipped_ones(
    tiny_checkpoint, tiny_base_model, monkeypatch, max_new_frames, encoded
):
    runner = PolicyRunner.load(
        tiny_checkpoint, tiny_base_model, device="cpu", dtype="fp32", max_new_frames=max_new_frames
    )
    runner.set_instruction(LEFT)
    video = frames(11, seed=2)
    for newest in range(8):
        runner.step(video[: newest + 1])
    calls = []
    original = runner.policy.frame_features
    monkeypatch.setattr(runner.policy, "frame_features", lambda f, p: calls.append(len(f)) or original(f, p))
    actions = runner.step(video[3:11])  # the model fell 3 frames behind
    assert calls == encoded
    assert runner.last_timing.frames_encoded == encoded[0]
    assert runner.last_timing.frames_held == 3 - encoded[0]
    expected = video[3:11].copy()
    if max_new_frames == 1:  # frames 8 and 9 were skipped: they count as repeats of frame 7
        expected[5] = expected[6] = video[7]
    monkeypatch.setattr(runner.policy, "frame_features", original)
    np.testing.assert_allclose(actions, runner.step_full_window(expected), atol=1e-4)
    with pytest.raises(ValueError, match="max_new_frames"):
        PolicyRunner(runner.policy, "cpu", merge_lora=False, max_new_frames=0)

"""Policy core on a tiny Kosmos-2 saved and loaded like a real checkpoint."""

from __future__ import annotations

import dataclasses
import json
import shutil

import numpy as np
import pytest
import torch

from mobile_vla_ros.errors import (
    BaseModelError,
    BaseModelMismatchError,
    CheckpointError,
    ImageError,
    InstructionError,
    NonFiniteOutputError,
)
from mobile_vla_ros.policy.backbone import PromptEncoder, fingerprint_base_model, load_base_model
from mobile_vla_ros.policy.checkpoint import HEAD_FILE, load_policy, save_policy
from mobile_vla_ros.policy.config import PolicyConfig
from mobile_vla_ros.policy.instructions import LAB_INSTRUCTIONS, expand_instruction, mirror_instruction
from mobile_vla_ros.policy.model import VLAPolicy
from mobile_vla_ros.policy.runner import PolicyRunner
from mobile_vla_ros.policy.tiny import make_tiny_model

LEFT, RIGHT = LAB_INSTRUCTIONS["left"], LAB_INSTRUCTIONS["right"]


def random_frames(count, size=224, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (count, size, size, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def runner(tiny_checkpoint, tiny_base_model):
    runner = PolicyRunner.load(tiny_checkpoint, tiny_base_model, device="cpu", dtype="fp32")
    runner.set_instruction(LEFT)
    return runner


def test_tiny_model_loads_through_from_pretrained(tiny_base_model):
    from transformers import AutoTokenizer, Kosmos2ForConditionalGeneration

    model = Kosmos2ForConditionalGeneration.from_pretrained(tiny_base_model, local_files_only=True)
    tokenizer = AutoTokenizer.from_pretrained(tiny_base_model, local_files_only=True)
    assert model.config.model_type == "kosmos-2"
    assert model.config.latent_query_num == 64
    assert tokenizer.convert_tokens_to_ids("<image>") != tokenizer.unk_token_id
    # The plain transformers forward runs on a prompt built by the package's encoder.
    prompt = PromptEncoder(tokenizer, "<grounding>An image of a robot {instruction}", 64).encode([LEFT])
    pixels = torch.randn(1, 3, 224, 224)
    out = model(pixel_values=pixels, input_ids=prompt.input_ids, image_embeds_position_mask=prompt.image_mask)
    assert out.logits.shape[:2] == prompt.input_ids.shape


def test_prompt_layout_is_bos_image_prompt_action(tiny_base_model):
    base = load_base_model(tiny_base_model)
    encoder = PromptEncoder(base.tokenizer, "<grounding>An image of a robot {instruction}", 64)
    batch = encoder.encode([LEFT, "go"])
    tokenizer = base.tokenizer
    assert batch.input_ids[0, 0] == tokenizer.bos_token_id
    assert batch.input_ids[0, 1] == tokenizer.convert_tokens_to_ids("<image>")
    assert batch.image_mask[0].sum() == 64 and batch.image_mask[0, 2:66].all()
    assert batch.input_ids[0, 66] == tokenizer.convert_tokens_to_ids("</image>")
    # The action token is last in each row; the shorter row is right-padded after it.
    assert batch.action_index[0] > batch.action_index[1]
    assert (batch.input_ids[1, batch.action_index[1] + 1 :] == tokenizer.pad_token_id).all()
    assert "<grounding>" in tokenizer.decode(batch.input_ids[0, 67 : batch.action_index[0]])


def test_incremental_matches_full_window_in_fp32(runner):
    frames = random_frames(14)
    runner.set_instruction(LEFT)
    worst = 0.0
    for newest in range(len(frames)):
        window = frames[max(0, newest - 7) : newest + 1]
        incremental = runner.step(window)
        full = runner.step_full_window(window)
        worst = max(worst, float(np.abs(incremental - full).max()))
    assert worst < 1e-4


def test_incremental_step_encodes_only_the_new_frame(runner, monkeypatch):
    frames = random_frames(9, seed=3)
    runner.set_instruction(LEFT)
    for newest in range(8):
        runner.step(frames[: newest + 1])
    encoded = []
    original = runner.policy.frame_features
    monkeypatch.setattr(runner.policy, "frame_features", lambda f, p: encoded.append(len(f)) or original(f, p))
    runner.step(frames[1:9])
    assert encoded == [1]


def test_instruction_switch_drops_features_of_the_old_prompt(runner):
    frames = random_frames(8, seed=4)
    runner.set_instruction(LEFT)
    for newest in range(8):
        runner.step(frames[: newest + 1])
    runner.set_instruction(RIGHT)
    after_switch = runner.step(frames)
    # Only the newest frame counts right after a switch, exactly like an episode start.
    np.testing.assert_allclose(after_switch, runner.step_full_window(frames[-1:]), atol=1e-5)
    runner.set_instruction(LEFT)


def test_left_and_right_give_opposite_linear_y(runner):
    window = random_frames(8, seed=5)
    runner.set_instruction(expand_instruction("left", runner.config.instructions))
    left = runner.step(window)
    runner.set_instruction(expand_instruction("right", runner.config.instructions))
    right = runner.step(window)
    assert left[0, 1] > 0.3 and right[0, 1] < -0.3


def test_checkpoint_round_trip_restores_every_weight(tiny_checkpoint, tiny_base_model, tmp_path):
    policy = load_policy(tiny_checkpoint, tiny_base_model)
    config = json.loads((tiny_checkpoint / "policy.json").read_text())
    for key in ("window_size", "chunk_size", "action_dt", "prompt_template", "lora", "base_model"):
        assert key in config
    assert config["base_model"]["fingerprint"] == fingerprint_base_model(tiny_base_model)
    copy = save_policy(policy, tmp_path / "copy")
    again = load_policy(copy, tiny_base_model)
    frames = torch.from_numpy(random_frames(8, seed=6))[None]
    with torch.no_grad():
        torch.testing.assert_close(policy(frames, [LEFT]), again(frames, [LEFT]))


def test_the_policy_keeps_its_own_copy_of_the_config(tiny_base_model):
    """Building a policy names its base model in the policy's config, not in the caller's."""
    given = PolicyConfig(instructions=(LEFT,), image_size=999)
    before = dataclasses.asdict(given)
    policy = VLAPolicy(given, load_base_model(tiny_base_model))
    assert dataclasses.asdict(given) == before
    assert policy.config.image_size == 224 and policy.config.base_model["fingerprint"]


def test_lora_merge_keeps_outputs(tiny_base_model, tmp_path):
    torch.manual_seed(1)
    policy = VLAPolicy(PolicyConfig(instructions=(LEFT,)), load_base_model(tiny_base_model))
    with torch.no_grad():  # give the adapters weight so that merging has something to merge
        for name, parameter in policy.encoder.kosmos.named_parameters():
            if "lora_B" in name:
                parameter.normal_(0, 0.5)
    save_policy(policy, tmp_path / "ckpt")
    frames = torch.from_numpy(random_frames(4, seed=7))
    merged = PolicyRunner.load(tmp_path / "ckpt", tiny_base_model, merge_lora=True)
    unmerged = PolicyRunner.load(tmp_path / "ckpt", tiny_base_model, merge_lora=False)
    base_only = PolicyRunner(VLAPolicy(PolicyConfig(instructions=(LEFT,)), load_base_model(tiny_base_model)))
    features = []
    for candidate in (merged, unmerged, base_only):
        candidate.set_instruction(LEFT)
        with torch.no_grad():
            features.append(candidate.policy.frame_features(frames, candidate._prompt.repeat_frames(4)))
    torch.testing.assert_close(features[0], features[1], atol=1e-5, rtol=1e-5)
    assert (features[0] - features[2]).abs().max() > 1e-2  # the adapter really changes the features
    window = frames.numpy()
    np.testing.assert_allclose(merged.step_full_window(window), unmerged.step_full_window(window), atol=1e-5)


def test_bf16_runner_gives_finite_actions_close_to_fp32(tiny_checkpoint, tiny_base_model, runner):
    low = PolicyRunner.load(tiny_checkpoint, tiny_base_model, dtype="bf16")
    low.set_instruction(LEFT)
    window = random_frames(8, seed=8)
    runner.set_instruction(LEFT)
    half, full = low.step(window), runner.step_full_window(window)
    assert np.isfinite(half).all()
    assert np.abs(half - full).max() < 0.1


def test_mismatched_base_model_is_refused_naming_both(tiny_checkpoint, tmp_path):
    other = make_tiny_model(tmp_path / "other_base", seed=1)
    with pytest.raises(BaseModelMismatchError) as raised:
        load_policy(tiny_checkpoint, other)
    message = str(raised.value)
    assert "other_base" in message and fingerprint_base_model(other) in message
    assert json.loads((tiny_checkpoint / "policy.json").read_text())["base_model"]["fingerprint"] in message


def test_missing_and_partial_checkpoints_are_clear_errors(tiny_checkpoint, tiny_base_model, tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        load_policy(tmp_path / "nowhere", tiny_base_model)
    partial = tmp_path / "partial"
    shutil.copytree(tiny_checkpoint, partial)
    (partial / HEAD_FILE).unlink()
    with pytest.raises(CheckpointError, match="missing head.safetensors"):
        load_policy(partial, tiny_base_model)
    (partial / HEAD_FILE).write_bytes(b"not a safetensors file")
    with pytest.raises(CheckpointError, match="cannot read"):
        load_policy(partial, tiny_base_model)
    (partial / "policy.json").write_text("{ truncated")
    with pytest.raises(CheckpointError, match="cannot read"):
        load_policy(partial, tiny_base_model)


def test_missing_or_wrong_base_model_is_a_clear_error(tiny_checkpoint, tmp_path):
    with pytest.raises(BaseModelError, match="does not exist"):
        load_policy(tiny_checkpoint, tmp_path / "no_model_here")
    (tmp_path / "bert").mkdir()
    (tmp_path / "bert" / "config.json").write_text('{"model_type": "bert"}')
    with pytest.raises(BaseModelError, match="expected a Kosmos-2"):
        load_policy(tiny_checkpoint, tmp_path / "bert")


@pytest.mark.parametrize(
    "window, message",
    [
        (np.zeros((8, 100, 100, 3), np.uint8), "shape"),
        (np.zeros((8, 224, 224, 3), np.float32), "uint8"),
        (np.zeros((8, 224, 224), np.uint8), "shape"),
        (np.zeros((0, 224, 224, 3), np.uint8), "shape"),
        ([[0]], "numpy"),
    ],
)
def test_bad_windows_raise_image_error(runner, window, message):
    with pytest.raises(ImageError, match=message):
        runner.step(window)


@pytest.mark.parametrize("text", ["", "   ", "x" * 500])
def test_bad_instructions_are_refused(runner, text):
    with pytest.raises(InstructionError):
        runner.set_instruction(text)
    assert runner.instruction is not None  # the previous instruction stays active


def test_non_finite_model_output_raises_instead_of_returning_nan(tiny_checkpoint, tiny_base_model):
    broken = PolicyRunner.load(tiny_checkpoint, tiny_base_model)
    broken.set_instruction(LEFT)
    with torch.no_grad():
        broken.policy.head.output[-1].bias.fill_(float("nan"))
    with pytest.raises(NonFiniteOutputError):
        broken.step(random_frames(2))


def test_config_rejects_unknown_keys_and_bad_values(tmp_path):
    PolicyConfig().save(tmp_path)
    data = json.loads((tmp_path / "policy.json").read_text())
    (tmp_path / "policy.json").write_text(json.dumps({**data, "mystery": 1}))
    with pytest.raises(CheckpointError, match="unknown keys"):
        PolicyConfig.load(tmp_path)
    (tmp_path / "policy.json").write_text(json.dumps({**data, "action_dt": 0}))
    with pytest.raises(CheckpointError, match="action_dt"):
        PolicyConfig.load(tmp_path)


def test_instruction_expansion_and_mirroring():
    trained = ("go around on the Left side", "go around on the right side")
    assert expand_instruction(" left ", trained) == trained[0]
    assert expand_instruction("RIGHT", ()) == RIGHT
    assert expand_instruction("park", trained, presets={"park": "stop at the wall"}) == "stop at the wall"
    assert expand_instruction("go  to   the door", trained) == "go to the door"
    assert mirror_instruction("Left then left, not right") == "Right then right, not left"


def test_int8_runner_stays_close_to_fp32_and_refuses_half_precision(tiny_checkpoint, tiny_base_model, runner):
    quantized = PolicyRunner.load(tiny_checkpoint, tiny_base_model, dtype="fp32", quantize="int8")
    assert isinstance(
        quantized.policy.encoder.kosmos.text_model.model.layers[0].self_attn.q_proj,
        torch.ao.nn.quantized.dynamic.Linear,
    )
    quantized.set_instruction(LEFT)
    runner.set_instruction(LEFT)
    window = random_frames(8, seed=9)
    np.testing.assert_allclose(quantized.step(window), runner.step_full_window(window), atol=0.05)
    with pytest.raises(ValueError, match="fp32"):
        PolicyRunner.load(tiny_checkpoint, tiny_base_model, dtype="bf16", quantize="int8")

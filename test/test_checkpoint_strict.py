"""Strict checkpoint loading: every corruption of a policy directory ends in its own named error."""

from __future__ import annotations

import json
import re
import shutil

import pytest
from safetensors.torch import load_file, save_file

from mobile_vla_ros.errors import BaseModelMismatchError, CheckpointError
from mobile_vla_ros.policy.backbone import fingerprint_base_model
from mobile_vla_ros.policy.checkpoint import ACTION_TOKEN_KEY, ADAPTER_FILE, HEAD_FILE, NORMALIZATION_FILE, load_policy
from mobile_vla_ros.policy.config import CONFIG_FILE, PolicyConfig


@pytest.fixture
def checkpoint_copy(tiny_checkpoint, tmp_path):
    return shutil.copytree(tiny_checkpoint, tmp_path / "policy")


def _edit_tensors(directory, name, edit):
    tensors = load_file(str(directory / name))
    edit(tensors)
    save_file(tensors, str(directory / name))


def _edit_config(directory, edit):
    data = json.loads((directory / CONFIG_FILE).read_text())
    edit(data)
    (directory / CONFIG_FILE).write_text(json.dumps(data))


def test_the_intact_checkpoint_loads(tiny_checkpoint, tiny_base_model):
    assert load_policy(tiny_checkpoint, tiny_base_model).config.base_model["fingerprint"]


def test_missing_lora_tensor_is_named(checkpoint_copy, tiny_base_model):
    dropped = []
    _edit_tensors(
        checkpoint_copy,
        ADAPTER_FILE,
        lambda t: dropped.append(next(k for k in t if "lora_B" in k)) or t.pop(dropped[0]),
    )
    with pytest.raises(CheckpointError, match="missing 1 LoRA tensor") as raised:
        load_policy(checkpoint_copy, tiny_base_model)
    assert dropped[0] in str(raised.value)


@pytest.mark.parametrize("name", ["feature_whitening", "action_low", "image_std"])
def test_missing_normalisation_tensor_is_named(checkpoint_copy, tiny_base_model, name):
    _edit_tensors(checkpoint_copy, NORMALIZATION_FILE, lambda t: t.pop(name))
    with pytest.raises(CheckpointError, match=rf"missing 1 normalisation tensor.*{name}"):
        load_policy(checkpoint_copy, tiny_base_model)


def test_missing_head_tensor_is_named(checkpoint_copy, tiny_base_model):
    dropped = next(iter(load_file(str(checkpoint_copy / HEAD_FILE))))
    _edit_tensors(checkpoint_copy, HEAD_FILE, lambda t: t.pop(dropped))
    with pytest.raises(CheckpointError, match=rf"missing 1 head tensor.*{re.escape(dropped)}"):
        load_policy(checkpoint_copy, tiny_base_model)


def test_normalisation_lives_in_one_file(tiny_checkpoint):
    """Image mean/std, action range and feature whitening: all in normalization.safetensors, none
    in policy.json or the head's file."""
    names = {"image_mean", "image_std", "action_low", "action_high", "feature_mean", "feature_whitening"}
    assert names <= set(load_file(tiny_checkpoint / NORMALIZATION_FILE))
    assert not names & set(load_file(tiny_checkpoint / HEAD_FILE))
    assert not names & set(json.loads((tiny_checkpoint / CONFIG_FILE).read_text()))


def test_unexpected_tensor_is_named(checkpoint_copy, tiny_base_model):
    _edit_tensors(checkpoint_copy, HEAD_FILE, lambda t: t.update(extra_layer=next(iter(t.values())).clone()))
    with pytest.raises(CheckpointError, match=r"1 unexpected tensor.*extra_layer"):
        load_policy(checkpoint_copy, tiny_base_model)


def test_unexpected_adapter_tensor_is_named(checkpoint_copy, tiny_base_model):
    def add_foreign_lora(tensors):
        name = next(k for k in tensors if "lora_A" in k)
        tensors[name.replace("lora_A", "lora_C")] = tensors[name].clone()

    _edit_tensors(checkpoint_copy, ADAPTER_FILE, add_foreign_lora)
    with pytest.raises(CheckpointError, match=r"1 unexpected tensor.*lora_C"):
        load_policy(checkpoint_copy, tiny_base_model)


def test_adapter_without_the_action_token_is_named(checkpoint_copy, tiny_base_model):
    _edit_tensors(checkpoint_copy, ADAPTER_FILE, lambda t: t.pop(ACTION_TOKEN_KEY))
    with pytest.raises(CheckpointError, match=f"has no '{ACTION_TOKEN_KEY}'"):
        load_policy(checkpoint_copy, tiny_base_model)


def test_adapter_without_lora_tensors_is_not_a_policy(checkpoint_copy, tiny_base_model):
    """The lab's failure: an adapter file with nothing trained in it must not pass for a policy."""
    _edit_tensors(checkpoint_copy, ADAPTER_FILE, lambda t: [t.pop(k) for k in list(t) if k != ACTION_TOKEN_KEY])
    with pytest.raises(CheckpointError, match="holds no LoRA tensors"):
        load_policy(checkpoint_copy, tiny_base_model)


@pytest.mark.parametrize("key", ["chunk_size", "action_dt", "instructions"])
def test_policy_json_missing_a_required_key_is_named(checkpoint_copy, key):
    _edit_config(checkpoint_copy, lambda data: data.pop(key))
    with pytest.raises(CheckpointError, match=f"lacks required keys \\['{key}'\\]"):
        PolicyConfig.load(checkpoint_copy)


def test_policy_json_missing_a_nested_key_is_named(checkpoint_copy):
    _edit_config(checkpoint_copy, lambda data: data["lora"].pop("r"))
    with pytest.raises(CheckpointError, match="'lora' lacks required keys \\['r'\\]"):
        PolicyConfig.load(checkpoint_copy)


@pytest.mark.parametrize(
    "version, hint",
    [(99, "newer version"), (1, "older version"), (4, "older version: retrain"), (None, "not written by mobile-vla")],
)
def test_unknown_schema_version_is_refused(checkpoint_copy, version, hint):
    _edit_config(checkpoint_copy, lambda data: data.update(schema_version=version))
    with pytest.raises(CheckpointError, match=f"schema_version {version}.*{hint}"):
        PolicyConfig.load(checkpoint_copy)


@pytest.mark.parametrize("base_model", [{}, {"name": "tiny"}])
def test_policy_json_without_base_model_fingerprint_is_refused(checkpoint_copy, tiny_base_model, base_model):
    _edit_config(checkpoint_copy, lambda data: data.update(base_model=base_model))
    with pytest.raises(CheckpointError, match="names no base model .*fingerprint"):
        load_policy(checkpoint_copy, tiny_base_model)


@pytest.mark.parametrize(
    "file, edit",
    [
        ("tokenizer_config.json", lambda data: data.update(model_max_length=77)),
        ("preprocessor_config.json", lambda data: data.update(image_mean=[0.5, 0.5, 0.5])),
    ],
)
def test_fingerprint_covers_tokenizer_and_image_processor(tiny_checkpoint, tiny_base_model, tmp_path, file, edit):
    base = shutil.copytree(tiny_base_model, tmp_path / "base")
    assert fingerprint_base_model(base) == fingerprint_base_model(tiny_base_model)
    data = json.loads((base / file).read_text())
    edit(data)
    (base / file).write_text(json.dumps(data, indent=4))
    assert fingerprint_base_model(base) != fingerprint_base_model(tiny_base_model)
    with pytest.raises(BaseModelMismatchError, match="trained on base model"):
        load_policy(tiny_checkpoint, base)


def test_fingerprint_ignores_json_formatting(tiny_base_model, tmp_path):
    base = shutil.copytree(tiny_base_model, tmp_path / "base")
    data = json.loads((base / "preprocessor_config.json").read_text())
    (base / "preprocessor_config.json").write_text(json.dumps(data, indent=8, sort_keys=True))
    assert fingerprint_base_model(base) == fingerprint_base_model(tiny_base_model)

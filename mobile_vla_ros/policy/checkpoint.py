"""Policy checkpoints: a directory of safetensors + `policy.json`. No pickle anywhere.

MODEL_DIR/policy.json                 PolicyConfig (window, chunk, action_dt, prompt, LoRA, trained
                                      instructions, base model name + fingerprint, provenance)
MODEL_DIR/adapter.safetensors         LoRA weights + the learned action token
MODEL_DIR/head.safetensors            action head
MODEL_DIR/normalization.safetensors   image mean/std, action range, feature whitening (Normalizer)
"""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from mobile_vla_ros.errors import BaseModelMismatchError, CheckpointError
from mobile_vla_ros.policy.backbone import FULL_RANDOM, check_base_model_dir, fingerprint_base_model, load_base_model
from mobile_vla_ros.policy.config import PolicyConfig
from mobile_vla_ros.policy.model import VLAPolicy

ADAPTER_FILE = "adapter.safetensors"
HEAD_FILE = "head.safetensors"
NORMALIZATION_FILE = "normalization.safetensors"
WEIGHT_FILES = (ADAPTER_FILE, HEAD_FILE, NORMALIZATION_FILE)
ACTION_TOKEN_KEY = "action_token"


def save_policy(policy: VLAPolicy, directory: str | Path) -> Path:
    from peft import get_peft_model_state_dict

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    adapter = _cpu_float(get_peft_model_state_dict(policy.encoder.kosmos))
    adapter[ACTION_TOKEN_KEY] = policy.encoder.action_token.detach().float().cpu().contiguous()
    # Weights first, config last: a directory with policy.json is complete.
    save_file(adapter, str(directory / ADAPTER_FILE))
    save_file(_cpu_float(policy.head.state_dict()), str(directory / HEAD_FILE))
    save_file(_cpu_float(policy.normalizer.state_dict()), str(directory / NORMALIZATION_FILE))
    policy.config.save(directory)
    return directory


def _cpu_float(tensors: dict) -> dict[str, torch.Tensor]:
    return {key: value.detach().float().cpu().contiguous() for key, value in tensors.items()}


def read_checkpoint_tensors(model_dir: Path) -> dict[str, dict[str, torch.Tensor]]:
    """file name -> its tensors, for every weight file; a missing or unreadable one is refused."""
    missing = [name for name in WEIGHT_FILES if not (model_dir / name).is_file()]
    if missing:
        raise CheckpointError(f"checkpoint {model_dir} is incomplete: missing {', '.join(missing)}")
    return {name: _read_tensors(model_dir / name) for name in WEIGHT_FILES}


def _read_tensors(path: Path) -> dict[str, torch.Tensor]:
    try:
        return load_file(str(path))
    except (SafetensorError, OSError) as error:
        raise CheckpointError(f"cannot read {path}: {error}") from error


def check_base_matches(config: PolicyConfig, name: str, fingerprint: str, model_dir) -> None:
    expected = config.base_model["fingerprint"]  # PolicyConfig.load refuses a config without one
    if expected != fingerprint:
        raise BaseModelMismatchError(
            f"the policy in {model_dir} was trained on base model {config.base_model.get('name')!r} "
            f"({expected}), but the base model given is {name!r} ({fingerprint}). "
            "Pass the base model directory the policy was trained on."
        )


def _check_tensor_names(path: Path, found, expected, what: str) -> None:
    """Every expected tensor present, nothing else: a partial or foreign file is never half-loaded."""
    missing, unexpected = sorted(set(expected) - set(found)), sorted(set(found) - set(expected))
    problems = []
    if missing:
        problems.append(f"missing {len(missing)} {what} tensor(s), e.g. {missing[:3]}")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected tensor(s), e.g. {unexpected[:3]}")
    if problems:
        raise CheckpointError(f"{path} does not match its policy.json: " + "; ".join(problems))


def load_policy(model_dir: str | Path, base_model_dir: str | Path, dtype: torch.dtype = torch.float32) -> VLAPolicy:
    """Load a checkpoint onto its base model; refuses a base model with another fingerprint and
    any adapter, head or normalisation file whose tensors are not exactly the ones this configuration needs."""
    model_dir = Path(model_dir)
    config = PolicyConfig.load(model_dir)
    tensors = read_checkpoint_tensors(model_dir)
    adapter = tensors[ADAPTER_FILE]
    if ACTION_TOKEN_KEY not in adapter:
        raise CheckpointError(f"{model_dir / ADAPTER_FILE} has no {ACTION_TOKEN_KEY!r}")
    if not any("lora_" in key for key in adapter):
        # The lab's mistake: a plain base model taken for a fine-tuned policy.
        raise CheckpointError(
            f"{model_dir / ADAPTER_FILE} holds no LoRA tensors: this is not a fine-tuned policy "
            "(the adapter was never trained or not saved)"
        )

    if str(base_model_dir) == FULL_RANDOM:
        raise CheckpointError("a trained policy needs its real base model directory, not full-random")
    base_dir = check_base_model_dir(base_model_dir)
    fingerprint = fingerprint_base_model(base_dir)
    check_base_matches(config, base_dir.name, fingerprint, model_dir)  # before loading gigabytes
    base = load_base_model(base_dir, dtype=dtype, fingerprint=fingerprint)
    policy = VLAPolicy(config, base)
    from peft import get_peft_model_state_dict, set_peft_model_state_dict

    action_token = adapter.pop(ACTION_TOKEN_KEY)
    _check_tensor_names(model_dir / ADAPTER_FILE, adapter, get_peft_model_state_dict(policy.encoder.kosmos), "LoRA")
    try:
        set_peft_model_state_dict(policy.encoder.kosmos, adapter)
    except RuntimeError as error:  # shape mismatches
        raise CheckpointError(f"checkpoint {model_dir} does not fit its configuration: {error}") from error
    restore_head_and_normalizer(policy, model_dir, tensors, action_token)
    return policy.eval()


def restore_head_and_normalizer(policy: VLAPolicy, model_dir: Path, tensors: dict, action_token: torch.Tensor) -> None:
    """The head, the normaliser and the action token of a checkpoint, checked by name and shape;
    shared by the fp32 loader and the int8 one (policy/quantize.py)."""
    modules = {HEAD_FILE: (policy.head, "head"), NORMALIZATION_FILE: (policy.normalizer, "normalisation")}
    for name, (module, what) in modules.items():
        _check_tensor_names(model_dir / name, tensors[name], module.state_dict(), what)
    try:
        for name, (module, _) in modules.items():
            module.load_state_dict(tensors[name])
        policy.encoder.action_token.data.copy_(action_token)
    except RuntimeError as error:  # shape mismatches
        raise CheckpointError(f"checkpoint {model_dir} does not fit its configuration: {error}") from error

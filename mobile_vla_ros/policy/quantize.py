"""int8 Kosmos-2 weights for the CPU without a doubled memory peak.

torch's `quantize_dynamic` deep-copies the model before converting it, so the fp32 original, its
fp32 copy and the int8 result coexist: 15 GB for the full Kosmos-2, whose fp32 policy peaks at 7.4 GB.
Here each Linear is replaced in place, one at a time, and its fp32 weight is released as soon as
its int8 twin exists, so converting peaks at the fp32 model plus one layer.

`mobile-vla quantize` goes one step further: it stores the int8 backbone (LoRA merged) next to
the checkpoint. Loading it builds Kosmos-2 on the meta device (no memory) and fills it with the
stored tensors, so the fp32 model never exists on the robot and the load peaks near the int8 size.

Weights are symmetric per output channel (int8 values + one fp32 scale per row); activations are
quantised per call (dynamic quantisation, fbgemm on x86, qnnpack on ARM).
"""

from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

from mobile_vla_ros.errors import CheckpointError

INT8_BACKBONE_FILE = "backbone_int8.safetensors"
FORMAT = "mobile_vla_ros/int8-per-channel/1"
_INT8 = ".int8"
_SCALE = ".scale"


def int8_linear_type():
    with warnings.catch_warnings():  # torch.ao.nn.quantized announces its move to torchao
        warnings.simplefilter("ignore")
        return torch.ao.nn.quantized.dynamic.Linear


def _int8_linear(
    in_features: int, out_features: int, values: torch.Tensor, scales: torch.Tensor, bias: torch.Tensor | None
) -> nn.Module:
    with warnings.catch_warnings():  # quantized tensors are deprecated in favour of torchao (not installed)
        warnings.simplefilter("ignore")
        layer = int8_linear_type()(in_features, out_features, bias_=bias is not None, dtype=torch.qint8)
        weight = torch._make_per_channel_quantized_tensor(
            values, scales.double(), torch.zeros(out_features, dtype=torch.long), 0
        )
        layer.set_weight_bias(weight, bias)
    return layer


def _quantize_linear(linear: nn.Linear) -> nn.Module:
    weight = linear.weight.detach().float()
    scales = weight.abs().amax(dim=1).clamp_min(1e-12) / 127.0
    values = torch.round(weight / scales[:, None]).clamp_(-127, 127).to(torch.int8)
    bias = None if linear.bias is None else linear.bias.detach().float()
    return _int8_linear(linear.in_features, linear.out_features, values, scales, bias)


def quantize_int8_(model: nn.Module) -> nn.Module:
    """Replace every Linear by a dynamic int8 Linear, in place, one layer at a time.

    A Linear sharing its weight with an embedding (Kosmos-2's lm_head, tied to the token
    embeddings and never run by the policy) is left as it is: quantising it would add a copy.
    """
    tied = {id(module.weight) for module in model.modules() if isinstance(module, nn.Embedding)}
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if type(child) is nn.Linear and id(child.weight) not in tied:
                setattr(parent, name, _quantize_linear(child))
    return model


def is_int8_checkpoint(model_dir: str | Path) -> bool:
    return (Path(model_dir) / INT8_BACKBONE_FILE).is_file()


def save_int8_backbone(kosmos: nn.Module, path: str | Path, base_fingerprint: str) -> Path:
    """Store a `quantize_int8_`-converted Kosmos-2: int8 weights + scales, every other tensor as
    it is (non-persistent buffers included, so a meta-built model needs nothing else)."""
    tensors, aliases, quantized, saved = {}, {}, [], {}
    for name, module in kosmos.named_modules():
        if isinstance(module, int8_linear_type()):
            weight, bias = module._weight_bias()
            tensors[name + _INT8] = weight.int_repr().contiguous()
            tensors[name + _SCALE] = weight.q_per_channel_scales().float().contiguous()
            if bias is not None:
                tensors[name + ".bias"] = bias.detach().contiguous()
            quantized.append(name)
    named = list(kosmos.named_parameters(remove_duplicate=False)) + list(kosmos.named_buffers(remove_duplicate=False))
    for name, tensor in named:
        if id(tensor) in saved:  # tied weights are stored once
            aliases[name] = saved[id(tensor)]
            continue
        saved[id(tensor)] = name
        tensors[name] = tensor.detach().contiguous()
    metadata = {
        "format": FORMAT,
        "quantized": json.dumps(quantized),
        "aliases": json.dumps(aliases),
        "kosmos_config": json.dumps(kosmos.config.to_dict()),
        "base_fingerprint": base_fingerprint,
    }
    save_file(tensors, str(path), metadata=metadata)
    return Path(path)


def _assign(model: nn.Module, name: str, tensor: torch.Tensor) -> None:
    owner_name, _, attribute = name.rpartition(".")
    owner = model.get_submodule(owner_name)
    if attribute in owner._parameters:
        # An alias gets the very Parameter it aliases: tied weights stay one object, as transformers ties them.
        owner._parameters[attribute] = (
            tensor if isinstance(tensor, nn.Parameter) else nn.Parameter(tensor, requires_grad=False)
        )
    elif attribute in owner._buffers:
        owner._buffers[attribute] = tensor
    else:
        raise CheckpointError(f"the int8 backbone has a tensor {name!r} this Kosmos-2 lacks")


def read_int8_metadata(path: str | Path) -> dict:
    with safe_open(str(path), "pt") as handle:
        metadata = handle.metadata() or {}
    if metadata.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not an int8 backbone of this package (format {metadata.get('format')!r})")
    return metadata


def load_int8_backbone(path: str | Path) -> nn.Module:
    """Kosmos-2 built on the meta device and filled from `path`: no fp32 copy ever exists."""
    from transformers import Kosmos2Config, Kosmos2ForConditionalGeneration

    metadata = read_int8_metadata(path)
    config = Kosmos2Config.from_dict(json.loads(metadata["kosmos_config"]))
    config._attn_implementation = "sdpa"
    with torch.device("meta"):
        model = Kosmos2ForConditionalGeneration(config)
    quantized = json.loads(metadata["quantized"])
    with safe_open(str(path), "pt") as handle:
        names = set(handle.keys())
        for name in quantized:
            owner_name, _, attribute = name.rpartition(".")
            linear = model.get_submodule(name)
            bias = handle.get_tensor(name + ".bias") if name + ".bias" in names else None
            layer = _int8_linear(
                linear.in_features,
                linear.out_features,
                handle.get_tensor(name + _INT8),
                handle.get_tensor(name + _SCALE),
                bias,
            )
            setattr(model.get_submodule(owner_name), attribute, layer)
        prefixes = tuple(name + "." for name in quantized)
        for name in sorted(names):
            if not name.startswith(prefixes):
                _assign(model, name, handle.get_tensor(name))
    for alias, target in json.loads(metadata["aliases"]).items():
        _assign(model, alias, model.get_parameter(target) if "." in target else getattr(model, target))
    left = [name for name, tensor in [*model.named_parameters(), *model.named_buffers()] if tensor.is_meta]
    if left:
        raise CheckpointError(f"{path} lacks {len(left)} tensors of Kosmos-2, e.g. {left[:3]}")
    return model.eval()


def load_int8_policy(model_dir: str | Path, base_model_dir: str | Path | None, tokenizer_dir: str | Path | None = None):
    """The policy of `model_dir` on its stored int8 backbone (see `mobile-vla quantize`).

    The base model directory supplies the tokenizer and proves (by fingerprint) that it is the base
    the int8 weights were made from; its fp32 weights are not read.
    """
    from transformers import AutoTokenizer

    from mobile_vla_ros.policy.backbone import BaseModel, check_base_model_dir, fingerprint_base_model, image_statistics
    from mobile_vla_ros.policy.checkpoint import (
        ACTION_TOKEN_KEY,
        ADAPTER_FILE,
        read_checkpoint_tensors,
        restore_head_and_normalizer,
    )
    from mobile_vla_ros.policy.config import PolicyConfig
    from mobile_vla_ros.policy.model import VLAPolicy

    model_dir = Path(model_dir)
    config = PolicyConfig.load(model_dir)
    path = model_dir / INT8_BACKBONE_FILE
    made_from = read_int8_metadata(path)["base_fingerprint"]
    if made_from != config.base_model["fingerprint"]:  # an int8 file copied in from another policy
        raise CheckpointError(
            f"{path} was made from base model {made_from}, but the policy in {model_dir} was trained on "
            f"{config.base_model['fingerprint']}: run `mobile-vla quantize` on this policy again"
        )
    base_dir = None
    if base_model_dir is not None:
        base_dir = check_base_model_dir(base_model_dir)
        fingerprint = fingerprint_base_model(base_dir)
        if fingerprint != made_from:
            raise CheckpointError(f"{path} was made from base model {made_from}, but {base_dir} is {fingerprint}")
        tokenizer_dir = tokenizer_dir or base_dir
    if tokenizer_dir is None:
        raise CheckpointError("loading an int8 checkpoint needs its base model directory (for the tokenizer)")
    from transformers import Kosmos2ForConditionalGeneration

    tensors = read_checkpoint_tensors(model_dir)
    adapter = tensors[ADAPTER_FILE]
    if ACTION_TOKEN_KEY not in adapter:
        raise CheckpointError(f"{model_dir / ADAPTER_FILE} has no {ACTION_TOKEN_KEY!r}")
    tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dir), local_files_only=True)
    kosmos = load_int8_backbone(path)
    # The policy is assembled around a weightless (meta) Kosmos-2, whose LoRA wrapping costs
    # nothing, and then given the int8 backbone, into which the adapters are already merged.
    with torch.device("meta"):
        skeleton = Kosmos2ForConditionalGeneration(kosmos.config)
    base = BaseModel(
        skeleton,
        tokenizer,
        config.base_model.get("name", ""),
        made_from,
        # As load_base_model reads them (CLIP's without a base directory); the saved ones are loaded below.
        *image_statistics(base_dir),
    )
    policy = VLAPolicy(config, base)
    policy.encoder.kosmos = kosmos
    restore_head_and_normalizer(policy, model_dir, tensors, adapter[ACTION_TOKEN_KEY])
    return policy.eval()


def write_int8_checkpoint(model_dir: str | Path, base_model_dir: str | Path, out: str | Path) -> Path:
    """`out` = a copy of the checkpoint `model_dir` plus its int8 backbone (LoRA merged).

    The copy stays a complete fp32 checkpoint too; `quantize: int8` picks the int8 backbone.
    Converting peaks at the fp32 policy plus one layer (done once, on any machine).
    """
    from mobile_vla_ros.policy.checkpoint import load_policy

    model_dir, out = Path(model_dir), Path(out)
    if out.resolve() == model_dir.resolve():
        raise CheckpointError("--out must be a new directory, not the checkpoint itself")
    policy = load_policy(model_dir, base_model_dir, dtype=torch.float32)
    kosmos = quantize_int8_(policy.encoder.kosmos.merge_and_unload())
    out.mkdir(parents=True, exist_ok=True)
    for path in model_dir.iterdir():
        if path.is_file() and path.name != INT8_BACKBONE_FILE:
            shutil.copy2(path, out / path.name)
    save_int8_backbone(kosmos, out / INT8_BACKBONE_FILE, policy.config.base_model["fingerprint"])
    return out

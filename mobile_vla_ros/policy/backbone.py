"""Kosmos-2 as a per-frame feature extractor: base model loading, identity, prompt encoding.

Each frame is its own sequence `[BOS] <image> 64 image tokens </image> prompt [ACTION]` (the
RoboVLMs "post" layout); the last hidden state at the learned action token is the frame feature.
Prompt building and tokenisation happen only in `PromptEncoder`, which training and inference
both use (the lab lost its prompts to a second, diverging code path).

Everything about the frozen base model (loading, fingerprint, dtype choice, prompt encoding) is
here, so no second path can load it differently.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from mobile_vla_ros.errors import BaseModelError, InstructionError, SettingError
from mobile_vla_ros.json_files import read_json_object
from mobile_vla_ros.policy.instructions import normalize_instruction

FULL_RANDOM = "full-random"
# Config keys that describe how a model was saved, not what it is.
_VOLATILE_CONFIG_KEYS = {"transformers_version", "torch_dtype", "dtype", "_name_or_path", "architectures", "use_cache"}
# What turns text and pixels into model inputs: a changed vocabulary or image normalisation changes
# what the policy sees as surely as changed weights. Hashed whole (they are small) when present.
_PREPROCESSING_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "sentencepiece.bpe.model",
    "preprocessor_config.json",
    "processor_config.json",
)
_SAMPLE_BLOCKS = 16
_SAMPLE_BYTES = 4096

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def torch_dtype(name: str) -> torch.dtype:
    try:
        return DTYPES[name]
    except KeyError:
        raise SettingError(f"unknown dtype {name!r}; choose one of {', '.join(DTYPES)}") from None


AUTO_DTYPE = "auto"
# CPU feature flags (/proc/cpuinfo) that mean native bf16 arithmetic: x86 AVX-512-BF16 and AMX,
# ARMv8.6 BF16. Without them PyTorch emulates bf16 (measured ~15x slower than fp32 on AVX2).
CPU_BF16_FLAGS = ("avx512_bf16", "amx_bf16", "bf16")


def choose_dtype(
    device_type: str, cuda_bf16: bool = False, cpu_flags=frozenset(), quantize: str = "none"
) -> tuple[str, str]:
    """The fastest backbone dtype the hardware runs natively, and why. Pure: hardware facts in."""
    if quantize == "int8":
        return "fp32", "int8 weights are quantised from fp32 (activations stay fp32)"
    if device_type == "cuda":
        if cuda_bf16:
            return "bf16", "the CUDA device supports bf16"
        return "fp16", "the CUDA device has no bf16 support"
    native = [flag for flag in CPU_BF16_FLAGS if flag in set(cpu_flags)]
    if native:
        return "bf16", f"the CPU has native bf16 ({', '.join(native)})"
    return (
        "fp32",
        f"the CPU has no native bf16 ({', '.join(CPU_BF16_FLAGS)} absent): "
        "bf16 would be emulated, far slower than fp32",
    )


def cpu_flags(cpuinfo: str | Path = "/proc/cpuinfo") -> frozenset[str]:
    """The feature flags of the first CPU ('flags' on x86, 'Features' on ARM); empty when unknown."""
    try:
        lines = Path(cpuinfo).read_text().splitlines()
    except OSError:
        return frozenset()
    for line in lines:
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            return frozenset(value.split())
    return frozenset()


def resolve_dtype(name: str, device: torch.device, quantize: str = "none") -> tuple[str, str]:
    """`auto` -> the dtype chosen from this machine's hardware; an explicit name is kept."""
    if name != AUTO_DTYPE:
        torch_dtype(name)  # validates
        return name, "requested"
    cuda_bf16 = device.type == "cuda" and torch.cuda.is_bf16_supported()
    return choose_dtype(device.type, cuda_bf16, cpu_flags() if device.type == "cpu" else frozenset(), quantize)


def resolve_device(name: str = "auto") -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SettingError(f"device {name!r} requested but CUDA is not available")
    return device


def _canonical_config(config: dict) -> dict:
    def strip(value):
        if isinstance(value, dict):
            return {k: strip(v) for k, v in sorted(value.items()) if k not in _VOLATILE_CONFIG_KEYS}
        return value

    return strip(config)


def _settings(path: Path) -> dict:
    """A JSON settings file of the base model (config, tokenizer, image processor)."""
    return read_json_object(path, BaseModelError, "the base model is damaged")


def fingerprint_base_model(directory: str | Path) -> str:
    """Identity of a base model directory: its architecture config, its tokenizer and image
    processor settings, plus sampled weight bytes.

    Reading the safetensors headers (names, dtypes, shapes) and 16 evenly spaced 4 KiB blocks of
    each file takes milliseconds even for the 6.6 GB Kosmos-2, yet any retraining, a different
    checkpoint or a different architecture changes it.
    """
    directory = Path(directory)
    digest = hashlib.sha256()
    digest.update(json.dumps(_canonical_config(_settings(directory / "config.json")), sort_keys=True).encode())
    for name in _PREPROCESSING_FILES:
        path = directory / name
        if path.is_file():
            if name.endswith(".json"):  # settings, not formatting or the transformers version that wrote them
                content = json.dumps(_canonical_config(_settings(path)), sort_keys=True).encode()
            else:
                content = path.read_bytes()
            digest.update(name.encode() + b"\0" + content)
    weight_files = sorted(directory.glob("*.safetensors"))
    if not weight_files:
        raise BaseModelError(f"{directory} has no *.safetensors weights (pickled .bin weights are not loaded)")
    for path in weight_files:
        size = path.stat().st_size
        with open(path, "rb") as handle:
            header_len = int.from_bytes(handle.read(8), "little")
            header = json.loads(handle.read(header_len))
            header.pop("__metadata__", None)
            digest.update(json.dumps(header, sort_keys=True).encode())
            data_start = 8 + header_len
            span = max(size - data_start - _SAMPLE_BYTES, 0)
            for block in range(_SAMPLE_BLOCKS):
                handle.seek(data_start + span * block // max(_SAMPLE_BLOCKS - 1, 1))
                digest.update(handle.read(_SAMPLE_BYTES))
    return "sha256:" + digest.hexdigest()[:24]


def check_base_model_dir(directory: str | Path) -> Path:
    directory = Path(directory)
    config_path = directory / "config.json"
    if not directory.is_dir():
        raise BaseModelError(
            f"base model directory {directory} does not exist; see models/README.md for getting "
            "microsoft/kosmos-2-patch14-224 onto the robot, or `mobile-vla make-tiny-model` for a test model"
        )
    if not config_path.is_file():
        raise BaseModelError(f"{directory} has no config.json: it is not a transformers model directory")
    model_type = _settings(config_path).get("model_type")
    if model_type != "kosmos-2":
        raise BaseModelError(f"{directory} holds a {model_type!r} model, expected a Kosmos-2 ('kosmos-2') model")
    return directory


@dataclass
class BaseModel:
    """A loaded Kosmos-2 with its tokenizer and identity."""

    model: nn.Module  # transformers Kosmos2ForConditionalGeneration
    tokenizer: object
    name: str
    fingerprint: str
    image_mean: tuple[float, float, float]
    image_std: tuple[float, float, float]

    @property
    def image_size(self) -> int:
        return int(self.model.config.vision_config.image_size)

    @property
    def hidden_size(self) -> int:
        return int(self.model.config.text_config.embed_dim)


def image_statistics(directory: str | Path | None) -> tuple[tuple, tuple]:
    """The base model's image mean and std; CLIP's (Kosmos-2's) where its files do not say."""
    from transformers.image_utils import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD

    clip_mean, clip_std = tuple(OPENAI_CLIP_MEAN), tuple(OPENAI_CLIP_STD)
    path = Path(directory) / "preprocessor_config.json" if directory else None
    if path is None or not path.is_file():
        return clip_mean, clip_std
    data = _settings(path)
    data = data.get("image_processor", data)
    return tuple(data.get("image_mean", clip_mean)), tuple(data.get("image_std", clip_std))


def load_base_model(
    source: str | Path,
    dtype: torch.dtype = torch.float32,
    tokenizer_dir: str | Path | None = None,
    fingerprint: str | None = None,
) -> BaseModel:
    """Load Kosmos-2 from a local directory, never from the network.

    `source == "full-random"` builds the full-size architecture with random weights (for
    benchmarks); it needs a tokenizer directory (any Kosmos-2 tokenizer, e.g. the tiny one).
    """
    from transformers import AutoTokenizer, Kosmos2Config, Kosmos2ForConditionalGeneration

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if str(source) == FULL_RANDOM:
        if tokenizer_dir is None:
            raise BaseModelError("full-random needs a tokenizer directory (e.g. a tiny model made by make-tiny-model)")
        tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dir), local_files_only=True)
        config = Kosmos2Config()
        config.text_config.vocab_size = max(config.text_config.vocab_size, len(tokenizer))
        config._attn_implementation = "sdpa"
        with torch.device("cpu"):
            model = Kosmos2ForConditionalGeneration(config).to(dtype)
        identity = hashlib.sha256(json.dumps(_canonical_config(config.to_dict()), sort_keys=True).encode())
        mean, std = image_statistics(None)
        return BaseModel(model.eval(), tokenizer, FULL_RANDOM, "random:" + identity.hexdigest()[:24], mean, std)

    directory = check_base_model_dir(source)
    fingerprint = fingerprint or fingerprint_base_model(directory)
    try:
        model = Kosmos2ForConditionalGeneration.from_pretrained(
            str(directory), local_files_only=True, dtype=dtype, attn_implementation="sdpa"
        )
        tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dir or directory), local_files_only=True)
    except (OSError, ValueError) as error:
        raise BaseModelError(f"cannot load the Kosmos-2 model in {directory}: {error}") from error
    mean, std = image_statistics(directory)
    return BaseModel(model.eval(), tokenizer, directory.name, fingerprint, mean, std)


@dataclass
class PromptBatch:
    """Token ids for a batch of instructions, right-padded (causal attention makes the padding
    after the action token invisible to it, so no attention mask is needed)."""

    input_ids: torch.Tensor  # (B, L) long
    image_mask: torch.Tensor  # (B, L) bool: where the 64 image embeddings go
    action_index: torch.Tensor  # (B,) long: position of the action token
    instruction_ids: torch.Tensor  # (B, K) long: the instruction alone, for the head
    instruction_mask: torch.Tensor  # (B, K) bool

    def to(self, device) -> PromptBatch:
        return PromptBatch(*(tensor.to(device) for tensor in self.__dict__.values()))

    def repeat_frames(self, frames: int) -> PromptBatch:
        """One copy per frame: (B, ...) -> (B*frames, ...)."""
        return PromptBatch(*(tensor.repeat_interleave(frames, dim=0) for tensor in self.__dict__.values()))


class PromptEncoder:
    """Builds and tokenises the per-frame sequence; the only place prompts are made."""

    def __init__(self, tokenizer, template: str, num_image_tokens: int, max_chars: int = 200):
        self.tokenizer = tokenizer
        self.template = template
        self.num_image_tokens = num_image_tokens
        self.max_chars = max_chars
        ids = {token: tokenizer.convert_tokens_to_ids(token) for token in ("<image>", "</image>")}
        if any(value is None or value == tokenizer.unk_token_id for value in ids.values()):
            raise BaseModelError("the tokenizer lacks Kosmos-2's <image> / </image> tokens")
        self.image_start, self.image_end = ids["<image>"], ids["</image>"]
        # As Kosmos2Processor: placeholder ids after <unk>, overwritten by the image embeddings.
        first = tokenizer.unk_token_id + 1
        self.image_placeholders = list(range(first, first + num_image_tokens))
        self.pad_id = tokenizer.pad_token_id
        self.action_placeholder = tokenizer.eos_token_id  # its embedding is replaced by the learned token

    def prompt_text(self, instruction: str) -> str:
        instruction = normalize_instruction(instruction)
        if not instruction:
            raise InstructionError("empty instruction")
        if len(instruction) > self.max_chars:
            raise InstructionError(f"instruction is {len(instruction)} characters long, the limit is {self.max_chars}")
        return self.template.format(instruction=instruction)

    def _tokens(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def encode(self, instructions: list[str]) -> PromptBatch:
        sequences, instruction_tokens = [], []
        for instruction in instructions:
            prompt = self._tokens(self.prompt_text(instruction))
            sequences.append(
                [
                    self.tokenizer.bos_token_id,
                    self.image_start,
                    *self.image_placeholders,
                    self.image_end,
                    *prompt,
                    self.action_placeholder,
                ]
            )
            instruction_tokens.append(self._tokens(normalize_instruction(instruction)) or [self.tokenizer.unk_token_id])
        length = max(map(len, sequences))
        width = max(map(len, instruction_tokens))
        input_ids = torch.full((len(sequences), length), self.pad_id, dtype=torch.long)
        image_mask = torch.zeros((len(sequences), length), dtype=torch.bool)
        instruction_ids = torch.full((len(sequences), width), self.pad_id, dtype=torch.long)
        instruction_mask = torch.zeros((len(sequences), width), dtype=torch.bool)
        for row, (sequence, tokens) in enumerate(zip(sequences, instruction_tokens)):
            input_ids[row, : len(sequence)] = torch.tensor(sequence)
            image_mask[row, 2 : 2 + self.num_image_tokens] = True
            instruction_ids[row, : len(tokens)] = torch.tensor(tokens)
            instruction_mask[row, : len(tokens)] = True
        action_index = torch.tensor([len(sequence) - 1 for sequence in sequences], dtype=torch.long)
        return PromptBatch(input_ids, image_mask, action_index, instruction_ids, instruction_mask)


class FrameEncoder(nn.Module):
    """Kosmos-2 (with LoRA when training) -> one feature per (frame, prompt) pair."""

    def __init__(self, kosmos: nn.Module):
        super().__init__()
        self.kosmos = kosmos
        width = kosmos.config.text_config.embed_dim
        self.action_token = nn.Parameter(torch.randn(width) * kosmos.config.text_config.init_std)

    @property
    def _core(self) -> nn.Module:
        """The Kosmos2ForConditionalGeneration, whether wrapped by peft or merged."""
        model = self.kosmos
        return model.get_base_model() if hasattr(model, "get_base_model") else model

    def train(self, mode: bool = True) -> FrameEncoder:
        """Training mode for the adapters only.

        The frozen backbone is a fixed feature extractor: its own dropout (0.1 in Kosmos-2's text
        config) would add noise larger than the frame-to-frame differences the head must learn
        from, so it stays in eval mode. LoRA's dropout (on the adapter path) follows `mode`.
        """
        super().train(mode)
        self.kosmos.eval()
        for name, module in self.kosmos.named_modules():
            if name.endswith("lora_dropout"):
                module.train(mode)
        return self

    @property
    def token_embeddings(self) -> nn.Module:
        return self._core.text_model.model.embed_tokens

    def embed_tokens(self, ids: torch.Tensor) -> torch.Tensor:
        return self.token_embeddings(ids)

    def image_embeddings(self, pixel_values: torch.Tensor) -> torch.Tensor:
        core = self._core
        hidden = core.vision_model(pixel_values=pixel_values).last_hidden_state
        hidden = nn.functional.normalize(core.vision_model.model.post_layernorm(hidden), dim=-1)
        image_embeds, _ = core.image_to_text_projection(hidden)
        return image_embeds

    def forward(self, pixel_values: torch.Tensor, prompts: PromptBatch) -> torch.Tensor:
        """pixel_values (N, 3, S, S) with one prompt row per frame -> (N, hidden) features."""
        core = self._core
        image_embeds = self.image_embeddings(pixel_values)
        embeds = self.embed_tokens(prompts.input_ids)
        is_action = nn.functional.one_hot(prompts.action_index, embeds.shape[1]).bool().unsqueeze(-1)
        embeds = torch.where(is_action, self.action_token.to(embeds.dtype), embeds)
        # The text model (not the causal-LM wrapper) so no vocabulary logits are computed.
        hidden = core.text_model.model(
            inputs_embeds=embeds, image_embeds=image_embeds, image_embeds_position_mask=prompts.image_mask
        ).last_hidden_state
        rows = torch.arange(hidden.shape[0], device=hidden.device)
        return hidden[rows, prompts.action_index]

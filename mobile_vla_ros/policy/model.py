"""The vision-language-action policy: Kosmos-2 frame encoder + LoRA + instruction-conditioned head."""

from __future__ import annotations

import dataclasses
import warnings

import torch
from torch import nn

from mobile_vla_ros.errors import ImageError
from mobile_vla_ros.policy.backbone import BaseModel, FrameEncoder, PromptBatch, PromptEncoder
from mobile_vla_ros.policy.config import PolicyConfig
from mobile_vla_ros.policy.head import ActionHead
from mobile_vla_ros.policy.normalization import Normalizer
from mobile_vla_ros.policy.robovlms_import import imported_from


def add_lora(kosmos: nn.Module, config: PolicyConfig) -> nn.Module:
    """Freeze Kosmos-2 and wrap it with peft LoRA adapters."""
    from peft import LoraConfig, get_peft_model

    lora = config.lora
    settings = LoraConfig(
        r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout, target_modules=lora.target_modules
    )
    try:
        with warnings.catch_warnings():  # peft calls a transformers method deprecated in 5.x
            warnings.simplefilter("ignore", FutureWarning)
            return get_peft_model(kosmos, settings)
    except ValueError as error:
        raise ValueError(
            f"LoRA target_modules {lora.target_modules!r} match nothing in this Kosmos-2: {error}"
        ) from error


class VLAPolicy(nn.Module):
    """`config` is not changed: the policy keeps a copy that names its base model."""

    def __init__(self, config: PolicyConfig, base: BaseModel):
        super().__init__()
        for parameter in base.model.parameters():
            parameter.requires_grad_(False)
        # An imported base (mobile-vla import-robovlms) also names the checkpoint it came from.
        identity = {"name": base.name, "fingerprint": base.fingerprint, **imported_from(base.model.config)}
        self.config = dataclasses.replace(config, image_size=base.image_size, base_model=identity).validate()
        self.encoder = FrameEncoder(add_lora(base.model, self.config))
        self.prompts = PromptEncoder(
            base.tokenizer, config.prompt_template, base.model.config.latent_query_num, config.max_instruction_chars
        )
        self.normalizer = Normalizer(base.hidden_size, config.action_dim, base.image_mean, base.image_std)
        self.head = ActionHead(base.hidden_size, base.hidden_size, config.chunk_size, config.action_dim, config.head)

    # --- inputs --------------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        return self.normalizer.image_mean.device

    @property
    def compute_dtype(self) -> torch.dtype:
        return self.encoder.token_embeddings.weight.dtype

    def pixel_values(self, frames: torch.Tensor) -> torch.Tensor:
        """uint8 (..., S, S, 3) RGB -> normalised (..., 3, S, S) in the backbone's dtype."""
        size = self.config.image_size
        if frames.dtype != torch.uint8:
            raise ImageError(f"frames must be uint8 RGB, got {frames.dtype}")
        if frames.dim() < 4 or tuple(frames.shape[-3:]) != (size, size, 3):
            raise ImageError(f"frames must have shape (..., {size}, {size}, 3), got {tuple(frames.shape)}")
        pixels = frames.movedim(-1, -3).float().div_(255.0)
        return self.normalizer.normalize_pixels(pixels).to(self.compute_dtype)

    def encode_prompts(self, instructions: list[str]) -> PromptBatch:
        return self.prompts.encode(instructions).to(self.device)

    def instruction_vector(self, prompts: PromptBatch) -> torch.Tensor:
        tokens = self.encoder.embed_tokens(prompts.instruction_ids).float()
        return self.head.instruction_vector(tokens, prompts.instruction_mask)

    # --- forward -------------------------------------------------------------------------
    def frame_features(self, frames: torch.Tensor, prompts: PromptBatch) -> torch.Tensor:
        """uint8 frames (N, S, S, 3), one prompt row per frame -> (N, hidden) float32."""
        return self.encoder(self.pixel_values(frames), prompts).float()

    def predict(self, features: torch.Tensor, instruction: torch.Tensor) -> torch.Tensor:
        """(B, t, hidden) features of the newest t <= window frames -> normalised (B, chunk, A).

        A window shorter than `window_size` (episode start, or right after an instruction switch)
        is padded by repeating its oldest feature; training windows at episode starts repeat the
        first frame in the same way.
        """
        missing = self.config.window_size - features.shape[1]
        if missing > 0:
            features = torch.cat([features[:, :1].expand(-1, missing, -1), features], dim=1)
        return self.head(self.normalizer.normalize_features(features[:, -self.config.window_size :]), instruction)

    def forward(self, frames: torch.Tensor, instructions: list[str]) -> torch.Tensor:
        """Full-window path: uint8 (B, T, S, S, 3) + B instructions -> normalised (B, chunk, A)."""
        batch, steps = frames.shape[:2]
        prompts = self.encode_prompts(instructions)
        features = self.frame_features(frames.flatten(0, 1), prompts.repeat_frames(steps))
        return self.predict(features.view(batch, steps, -1), self.instruction_vector(prompts))

"""A tiny Kosmos-2 for tests and the demo: the real architecture with small widths, random
weights and a tokenizer trained locally on instruction text, saved with `save_pretrained` so
every loader runs exactly as it would on microsoft/kosmos-2-patch14-224."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from mobile_vla_ros.policy.instructions import LAB_INSTRUCTIONS

# Kosmos-2's special tokens in its id order: bos=0, pad=1, eos=2, unk=3.
_SPECIAL_TOKENS = ["<s>", "<pad>", "</s>", "<unk>", "<image>", "</image>", "<grounding>", "<phrase>", "</phrase>"]
_CORPUS = [
    *LAB_INSTRUCTIONS.values(),
    "An image of a robot",
    "go around the obstacle on the left",
    "go around the obstacle on the right",
    "drive forward and stop in front of the bottle",
    "turn left turn right move back stop",
]


def save_tiny_tokenizer(out_dir: str | Path, vocab_size: int = 400):
    """A Kosmos-2-compatible tokenizer trained on instruction text (also used by full-random benches)."""
    tokenizer = _train_tokenizer(vocab_size)
    tokenizer.save_pretrained(str(out_dir))
    return tokenizer


def _train_tokenizer(vocab_size: int):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE(unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace()
    tokenizer.decoder = decoders.Metaspace()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=_SPECIAL_TOKENS, show_progress=False)
    tokenizer.train_from_iterator(_CORPUS * 4, trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
        pad_token="<pad>",
        extra_special_tokens=["<image>", "</image>", "<grounding>", "<phrase>", "</phrase>"],
    )


def make_tiny_model(
    out_dir: str | Path,
    seed: int = 0,
    image_size: int = 224,
    width: int = 64,
    layers: int = 2,
    text_init_std: float = 0.1,
    vision_init_factor: float = 1.0,
    sincos_positions: bool = True,
) -> Path:
    """`text_init_std` / `vision_init_factor` are Kosmos2Config's init scales. At the real model's
    text init (0.02) a random tiny model's action-token features of different frames differ by
    0.08 % of their norm, less than bf16 rounds them by (0.5 %): no policy can read images through
    them at the precision a robot runs. At 0.1 they differ by 2-3 % (0.2 gives no more: the
    rounding grows with it; docs/architecture.md, "Precision").

    `sincos_positions` sets the vision tower's position embeddings to fixed 2-D sine-cosine codes
    (as MAE initialises a ViT) instead of random vectors. A random tower's features then say
    *where* in the image something is, smoothly: a ridge probe on the action-token features of
    synthetic twins predicts the sideways speed, which follows where the box is, at 0.39x the
    image-blind baseline on held-out pairs, against 0.80x with random position embeddings
    (docs/architecture.md)."""
    from transformers import Kosmos2Config, Kosmos2ForConditionalGeneration
    from transformers.image_utils import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tokenizer = _train_tokenizer(vocab_size=400)
    config = Kosmos2Config(
        text_config=dict(
            vocab_size=len(tokenizer),
            embed_dim=width,
            layers=layers,
            ffn_dim=2 * width,
            attention_heads=4,
            max_position_embeddings=512,
            init_std=text_init_std,
        ),
        vision_config=dict(
            hidden_size=width,
            intermediate_size=2 * width,
            num_hidden_layers=layers,
            num_attention_heads=4,
            image_size=image_size,
            patch_size=14,
            initializer_factor=vision_init_factor,
        ),
        latent_query_num=64,
    )
    torch.manual_seed(seed)
    model = Kosmos2ForConditionalGeneration(config)
    if sincos_positions:
        with torch.no_grad():
            positions = model.vision_model.model.embeddings.position_embedding.weight
            positions[0] = 0  # the class token has no place in the image
            positions[1:] = sincos_position_codes(image_size // 14, width)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    (out_dir / "preprocessor_config.json").write_text(
        json.dumps(
            {
                "image_processor_type": "CLIPImageProcessor",
                "size": {"shortest_edge": image_size},
                "image_mean": list(OPENAI_CLIP_MEAN),
                "image_std": list(OPENAI_CLIP_STD),
            },
            indent=2,
        )
    )
    return out_dir


def sincos_position_codes(side: int, width: int) -> torch.Tensor:
    """(side * side, width) codes of a side x side patch grid in row-major order: half of the
    dimensions are sines and cosines of the row at geometric frequencies, half of the column."""
    frequencies = 1.0 / 10000 ** (torch.arange(width // 4, dtype=torch.float64) / (width // 4))
    rows, columns = torch.meshgrid(torch.arange(side), torch.arange(side), indexing="ij")

    def codes(index: torch.Tensor) -> torch.Tensor:
        angles = index.flatten().double()[:, None] * frequencies
        return torch.cat([angles.sin(), angles.cos()], dim=1)

    return torch.cat([codes(rows), codes(columns)], dim=1).float()

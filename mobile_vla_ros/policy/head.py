"""Instruction-conditioned action head.

The instruction reaches the head directly (the lab's head saw it only through the backbone
features and output the mean of left and right): its token embeddings, pooled by learned
attention, FiLM-modulate every frame feature before the LSTM and the LSTM output, and join the
input of the output MLP.

It reads frame features already normalised (policy/normalization.py: whitened with the training
frames' statistics).
"""

from __future__ import annotations

import torch
from torch import nn

from mobile_vla_ros.policy.config import HeadSettings


class AttentionPool(nn.Module):
    """A learned query attends over the instruction's token embeddings."""

    def __init__(self, token_dim: int, out_dim: int, heads: int = 4):
        super().__init__()
        self.project = nn.Sequential(nn.LayerNorm(token_dim), nn.Linear(token_dim, out_dim))
        self.query = nn.Parameter(torch.randn(1, 1, out_dim) * 0.02)
        self.attention = nn.MultiheadAttention(out_dim, heads, batch_first=True)

    def forward(self, tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        keys = self.project(tokens)
        pooled, _ = self.attention(self.query.expand(tokens.shape[0], -1, -1), keys, keys, key_padding_mask=~mask)
        return pooled.squeeze(1)


class FiLM(nn.Module):
    """Feature-wise affine modulation; starts as the identity."""

    def __init__(self, condition_dim: int, feature_dim: int):
        super().__init__()
        self.to_scale_shift = nn.Linear(condition_dim, 2 * feature_dim)
        nn.init.zeros_(self.to_scale_shift.weight)
        nn.init.zeros_(self.to_scale_shift.bias)

    def forward(self, features: torch.Tensor, condition: torch.Tensor) -> torch.Tensor:
        scale, shift = self.to_scale_shift(condition).chunk(2, dim=-1)
        while scale.dim() < features.dim():
            scale, shift = scale.unsqueeze(1), shift.unsqueeze(1)
        return features * (1 + scale) + shift


class ActionHead(nn.Module):
    """(B, T, feature_dim) frame features + instruction tokens -> (B, chunk, action_dim) in [-1, 1]."""

    def __init__(self, feature_dim: int, token_dim: int, chunk_size: int, action_dim: int, settings: HeadSettings):
        super().__init__()
        hidden = settings.hidden_dim
        self.chunk_size, self.action_dim = chunk_size, action_dim
        self.instruction_pool = AttentionPool(token_dim, hidden)
        # No LayerNorm on the whitened features: it divides every direction by the frame's overall
        # spread, so rounding in directions the head should ignore would scale the ones it reads.
        self.input = nn.Sequential(nn.Linear(feature_dim, hidden), nn.GELU())
        self.film_in = FiLM(hidden, hidden)
        self.lstm = nn.LSTM(
            hidden,
            hidden,
            num_layers=settings.lstm_layers,
            batch_first=True,
            dropout=settings.dropout if settings.lstm_layers > 1 else 0.0,
        )
        self.film_out = FiLM(hidden, hidden)
        self.output = nn.Sequential(
            nn.Linear(2 * hidden, hidden),
            nn.GELU(),
            nn.Dropout(settings.dropout),
            nn.Linear(hidden, chunk_size * action_dim),
        )

    def instruction_vector(self, tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.instruction_pool(tokens, mask)

    def forward(self, features: torch.Tensor, instruction: torch.Tensor) -> torch.Tensor:
        """features (B, T, D) normalised (Normalizer.normalize_features); instruction (B, hidden)
        from `instruction_vector`."""
        x = self.film_in(self.input(features), instruction)
        x, _ = self.lstm(x)
        x = self.film_out(x[:, -1], instruction)
        out = self.output(torch.cat([x, instruction], dim=-1))
        return torch.tanh(out).view(-1, self.chunk_size, self.action_dim)

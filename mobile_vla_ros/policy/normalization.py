"""The policy's normalisation, one module saved as one file (`normalization.safetensors`):
camera pixels to the backbone's input (the base model's image mean and std), frame features to
the head's input (whitening from the training frames and the run-time precisions' rounding error)
and actions to and from the head's [-1, 1] (the training actions' range). Training sets it; the
robot applies it unchanged.

The whitening weighs each direction by how far the frames' spread exceeds the rounding error of
the precisions the robot runs (`precision_noise`, measured in training), and training adds noise
of that size, so bf16 or fp16 cannot move the head's input far (docs/architecture.md, "Precision").
The same statistics give each frame's familiarity score ("Familiarity").
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

# Weight of one training batch in the moving feature statistics: ~50 batches (about a pass over a
# small dataset) make up the estimate, so between-episode spread is in it, not just one batch's.
FEATURE_STATISTICS_MOMENTUM = 0.02
# Added to the features' correlation matrix before whitening: directions whose spread is below
# ~1e-3 of a typical dimension's are numerical noise of a fixed encoder, not image content, and
# are not blown up to unit spread.
WHITENING_SHRINKAGE = 1e-3
# Share of the mean run-time-precision error variance added to every direction (see
# _signal_weighted_whitening).
NOISE_FLOOR = 0.05


class Normalizer(nn.Module):
    """Every statistic the policy's inputs and outputs are scaled with, as buffers (all saved)."""

    def __init__(self, feature_dim: int, action_dim: int, image_mean: Sequence[float], image_std: Sequence[float]):
        super().__init__()
        self.register_buffer("image_mean", torch.tensor(image_mean, dtype=torch.float32).view(3, 1, 1))
        self.register_buffer("image_std", torch.tensor(image_std, dtype=torch.float32).view(3, 1, 1))
        # The training actions' per-dimension range; [-1, 1] until training sets it.
        self.register_buffer("action_low", -torch.ones(action_dim))
        self.register_buffer("action_high", torch.ones(action_dim))
        # Identity until training sets them from its frames (set_feature_statistics).
        self.register_buffer("feature_mean", torch.zeros(feature_dim))
        self.register_buffer("feature_covariance", torch.eye(feature_dim))
        self.register_buffer("precision_noise", torch.zeros(feature_dim, feature_dim))
        self.register_buffer("feature_whitening", torch.eye(feature_dim))
        # (x - mean) @ this has unit covariance under training frames + rounding: its squared norm
        # is the Mahalanobis distance of a frame to the training frames (`familiarity`).
        self.register_buffer("familiarity_whitening", torch.eye(feature_dim))
        # A square root of precision_noise: training draws feature noise of that size from it.
        self.register_buffer("precision_noise_factor", torch.zeros(feature_dim, feature_dim))

    # --- pixels ------------------------------------------------------------------------------
    def normalize_pixels(self, pixels: torch.Tensor) -> torch.Tensor:
        """(..., 3, S, S) RGB in [0, 1] -> the backbone's input scale (float32)."""
        return (pixels - self.image_mean) / self.image_std

    # --- actions -----------------------------------------------------------------------------
    @torch.no_grad()
    def set_action_range(self, low: Sequence[float], high: Sequence[float]) -> None:
        low, high = torch.tensor(low, dtype=torch.float32), torch.tensor(high, dtype=torch.float32)
        if low.shape != self.action_low.shape or high.shape != self.action_high.shape:
            raise ValueError(f"an action range needs {len(self.action_low)} values per bound")
        if not bool((high > low).all()):
            raise ValueError(f"action_high must exceed action_low, got {low.tolist()} / {high.tolist()}")
        self.action_low.copy_(low)
        self.action_high.copy_(high)

    def normalize_actions(self, actions: torch.Tensor) -> torch.Tensor:
        """Actions in their units -> the head's [-1, 1] (clamped)."""
        center, half = self._action_center_half()
        return ((actions - center) / half).clamp(-1.0, 1.0)

    def unnormalize_actions(self, normalized: torch.Tensor) -> torch.Tensor:
        center, half = self._action_center_half()
        return center + half * normalized

    def _action_center_half(self) -> tuple[torch.Tensor, torch.Tensor]:
        return (self.action_high + self.action_low) / 2, (self.action_high - self.action_low) / 2

    # --- frame features ----------------------------------------------------------------------
    def normalize_features(self, features: torch.Tensor) -> torch.Tensor:
        """(..., D) frame features -> the head's input. In training mode with the rounding error
        of the precision the robot runs added first, drawn afresh per frame."""
        if self.training:
            features = features + torch.randn_like(features) @ self.precision_noise_factor.T
        return (features - self.feature_mean) @ self.feature_whitening

    def familiarity(self, features: torch.Tensor) -> torch.Tensor:
        """(..., D) frame features -> (...) squared Mahalanobis distance to the training frames per
        dimension (about 1 or less for frames like them; docs/architecture.md, "Familiarity")."""
        return ((features.to(self.feature_mean) - self.feature_mean) @ self.familiarity_whitening).pow(2).mean(-1)

    @torch.no_grad()
    def set_feature_statistics(self, features: torch.Tensor, precision_errors: torch.Tensor | None = None) -> None:
        """Mean and covariance of (N, feature_dim) training-frame features; `precision_errors`
        (M, feature_dim) are run-time-precision features minus fp32 features of the same frames."""
        features = features.double()
        if precision_errors is not None:
            errors = precision_errors.double()
            noise = errors.T @ errors / max(len(errors), 1)  # second moment: a systematic offset counts too
            self.precision_noise.copy_(noise)
            self.precision_noise_factor.copy_(_square_root(noise))
        self._set_statistics(features.mean(dim=0), features.T.cov(correction=0))

    @torch.no_grad()
    def track_feature_statistics(self, features: torch.Tensor, momentum: float = FEATURE_STATISTICS_MOMENTUM) -> None:
        """Move the statistics towards one training batch's (N, feature_dim) features, for runs
        whose LoRA and action token train and so move the features (the precision noise stays)."""
        features = features.detach().double().flatten(0, -2)
        mean, covariance = self.feature_mean.double(), self.feature_covariance.double()
        self._set_statistics(
            mean + momentum * (features.mean(dim=0) - mean),
            covariance + momentum * (features.T.cov(correction=0) - covariance),
        )

    def _set_statistics(self, mean: torch.Tensor, covariance: torch.Tensor) -> None:
        """Store the statistics and the whitening they give (x -> (x - mean) @ W)."""
        noise = self.precision_noise.to(covariance)
        if noise.any():
            whitening, familiarity = _signal_weighted_whitening(covariance, noise)
        else:
            whitening = familiarity = _plain_whitening(covariance)
        self.feature_mean.copy_(mean)
        self.feature_covariance.copy_(covariance)
        self.feature_whitening.copy_(whitening)
        self.familiarity_whitening.copy_(familiarity)


def _plain_whitening(covariance: torch.Tensor) -> torch.Tensor:
    """Unit covariance: W = diag(1/std) L^-T with L the Cholesky factor of the (shrunk) correlation
    matrix. A dimension that barely varies is divided by a floor (1e-3 of the median spread)
    instead of its own spread, so numerical noise is not blown up into a signal."""
    std = covariance.diagonal().clamp_min(0).sqrt()
    std = std.clamp_min(1e-3 * float(std.median()) + 1e-12)
    correlation = covariance / torch.outer(std, std)
    identity = torch.eye(len(std), dtype=correlation.dtype, device=correlation.device)
    factor = torch.linalg.cholesky(correlation + WHITENING_SHRINKAGE * identity)
    return torch.linalg.solve_triangular(factor, identity, upper=False).T / std.unsqueeze(1)


def _signal_weighted_whitening(covariance: torch.Tensor, noise: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Whitening that weighs each direction by how far the frames' spread in it exceeds the
    run-time precision's error: in the directions v with v^T noise v = 1 and v^T covariance v = s
    (the signal-to-noise ratio), the feature is scaled by sqrt(s) / (s + 1), the Wiener estimate of
    its noise-free part in units of its spread. Rounding then moves no direction by more than half
    a unit (variance s / (s + 1)^2 <= 1/4), where plain whitening moved the tiny model's by
    hundreds; directions the frames do not vary in beyond rounding fade out instead of being
    stretched to unit spread. One Cholesky and one eigh: 3 s at the full model's 2048 dimensions
    on one CPU core, done once unless LoRA trains (then per step; milliseconds on a GPU).
    Also returns the plain whitening of covariance + noise in the same directions (1 / sqrt(s + 1)),
    for the familiarity score."""
    identity = torch.eye(len(noise), dtype=noise.dtype, device=noise.device)
    # Directions the error samples do not span (fewer samples than dimensions at full size) get a
    # floor of the mean error variance rather than none.
    floor = NOISE_FLOOR * float(noise.diagonal().mean()) + 1e-30
    inverse_factor = torch.linalg.solve_triangular(
        torch.linalg.cholesky(noise + floor * identity), identity, upper=False
    )
    snr, rotation = torch.linalg.eigh(inverse_factor @ covariance @ inverse_factor.T)
    snr = snr.clamp_min(0)
    directions = inverse_factor.T @ rotation
    return directions * (snr.sqrt() / (snr + 1)), directions / (snr + 1).sqrt()


def _square_root(second_moment: torch.Tensor) -> torch.Tensor:
    """F with F F^T = second_moment (symmetric PSD, possibly singular): eigh, negatives clipped."""
    values, vectors = torch.linalg.eigh(second_moment)
    return vectors * values.clamp_min(0).sqrt()

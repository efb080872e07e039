"""Frame features from the encoder, for training with a frozen backbone (computed once, not every
step) and for the feature whitening."""

from __future__ import annotations

from dataclasses import replace

import torch

from mobile_vla_ros.policy.model import VLAPolicy


def encode_episodes(policy: VLAPolicy, episodes, description: str) -> list[torch.Tensor]:
    """(T, hidden) encoder features of every frame of each episode under its own instruction;
    episodes that already carry cached features are not encoded again."""
    from tqdm import tqdm

    from mobile_vla_ros.training.metrics import encode_episode

    policy.eval()
    with torch.no_grad():
        features = [
            episode.features
            if episode.features is not None
            else encode_episode(policy, episode.frames, episode.instruction)
            for episode in tqdm(episodes, desc=description, unit="episode", leave=False)
        ]
    policy.train()
    return features


def cache_features(policy: VLAPolicy, episodes) -> list:
    """The episodes with their frames' features attached. With LoRA and the action token fixed the
    encoder's output for a frame never changes during training, so running Kosmos-2 on every
    step's frames would recompute the same numbers: training then runs the head alone (300 steps of
    the tiny config, start-up included: 29 s instead of 108 s, docs/performance.md). The features of
    all frames are held in memory (frames x hidden x 4 bytes: 60 000 frames of the full-size model,
    2048 wide, take 0.5 GB)."""
    features = encode_episodes(policy, episodes, "encoding frames once (fixed encoder)")
    return [replace(episode, features=feature.cpu()) for episode, feature in zip(episodes, features)]


def set_feature_statistics(policy: VLAPolicy, episodes, runtime_precision) -> None:
    """The feature whitening (policy.normalizer) from every training frame (one forward pass of the untrained
    encoder: LoRA starts as the identity) and the run-time precisions' feature error."""
    from mobile_vla_ros.training.precision_checks import precision_errors

    errors = precision_errors(policy, episodes, runtime_precision.dtypes, runtime_precision.noise_frames)
    if errors is not None:
        errors = errors * runtime_precision.noise_margin
    policy.normalizer.set_feature_statistics(torch.cat(encode_episodes(policy, episodes, "feature statistics")), errors)

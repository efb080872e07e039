"""Clips: runs of consecutive training windows of one episode with the frames they need, so
the model encodes each frame once per clip instead of once per window (consecutive windows share
seven of their eight frames); their collation into batches and the resumable shuffle.

A frame's feature depends only on its pixels and the prompt, so per-clip encoding gives exactly the
per-window features. Frames are read per clip (data/frames.py: decoded, resized like the camera
window node does, cached within `frame_cache_mb`); with a frozen backbone, training caches the
features instead and clips carry those (`TrainingEpisode.features`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from mobile_vla_ros.data.quality import true_runs
from mobile_vla_ros.data.windows import TrainingEpisode, action_targets, window_indices


@dataclass(frozen=True)
class Clip:
    episode: int
    start: int  # first window's frame index t
    stop: int  # one past the last window's t


def episode_clips(num_frames: int, clip_length: int) -> list[tuple[int, int]]:
    """Split [0, num_frames) into near-equal runs of at most `clip_length` windows."""
    count = max(1, math.ceil(num_frames / clip_length))
    bounds = np.linspace(0, num_frames, count + 1).round().astype(int)
    return [(int(a), int(b)) for a, b in zip(bounds[:-1], bounds[1:])]


class WindowDataset(torch.utils.data.Dataset):
    """Clips of consecutive training windows (see the module docstring); `clip_length=1` gives
    one window per item."""

    def __init__(
        self,
        episodes: Sequence[TrainingEpisode],
        window_size: int,
        chunk_size: int,
        clip_length: int = 16,
        correction_weight: int = 1,
    ):
        """`correction_weight`: each clip of a correction episode is listed this many times, so an
        epoch (and a shuffled stream of steps) sees a person's corrections that much more often."""
        self.episodes = list(episodes)
        self.window_size, self.chunk_size = window_size, chunk_size
        self.clips = [
            Clip(index, run_start + start, run_start + stop)
            for index, episode in enumerate(self.episodes)
            for run_start, run_stop in true_runs(episode.usable_windows)
            for start, stop in episode_clips(run_stop - run_start, clip_length)
            for _ in range(correction_weight if episode.correction else 1)
        ]

    @property
    def num_windows(self) -> int:
        return sum(int(episode.usable_windows.sum()) for episode in self.episodes)

    def __len__(self) -> int:
        return len(self.clips)

    def __getitem__(self, index: int) -> dict:
        clip = self.clips[index]
        episode = self.episodes[clip.episode]
        first = max(clip.start - self.window_size + 1, 0)
        windows = np.stack([window_indices(t, self.window_size) - first for t in range(clip.start, clip.stop)])
        targets, valid = map(
            np.stack, zip(*(action_targets(episode.actions, t, self.chunk_size) for t in range(clip.start, clip.stop)))
        )
        if episode.features is not None:
            inputs = {"features": episode.features[first : clip.stop]}
        else:
            inputs = {"frames": torch.from_numpy(np.ascontiguousarray(episode.frames[first : clip.stop]))}
        return {
            **inputs,
            "windows": torch.from_numpy(windows),
            "targets": torch.from_numpy(targets),
            "target_mask": torch.from_numpy(valid),
            "instruction": episode.instruction,
        }


def collate_clips(items: list[dict]) -> dict:
    """Concatenate clips: frames (N, S, S, 3) or their cached features (N, hidden), windows
    (W, window) indexing those rows, targets (W, chunk, A) with target_mask (W, chunk) of the steps
    that exist; `frame_clip`/`window_clip` map rows to `instructions`."""
    kind = "features" if "features" in items[0] else "frames"
    if any(kind not in item for item in items):
        raise ValueError("a batch mixes clips with cached features and clips with frames")
    offsets = np.cumsum([0] + [len(item[kind]) for item in items])
    return {
        kind: torch.cat([item[kind] for item in items]),
        "windows": torch.cat([item["windows"] + int(offset) for item, offset in zip(items, offsets)]),
        "targets": torch.cat([item["targets"] for item in items]),
        "target_mask": torch.cat([item["target_mask"] for item in items]),
        "frame_clip": torch.cat([torch.full((len(item[kind]),), i) for i, item in enumerate(items)]),
        "window_clip": torch.cat([torch.full((len(item["windows"]),), i) for i, item in enumerate(items)]),
        "instructions": [item["instruction"] for item in items],
    }


class EpochShuffleSampler(torch.utils.data.Sampler):
    """A permutation drawn from (seed, epoch) alone, so a resumed run sees the same order as an
    uninterrupted one. Lightning calls `set_epoch` at every epoch start."""

    def __init__(self, size: int, seed: int):
        self.size, self.seed, self.epoch = size, seed, 0
        self._skip = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def skip_once(self, count: int) -> None:
        """Leave out the first `count` items of the next epoch (resuming in the middle of one)."""
        self._skip = count

    def __len__(self) -> int:
        return self.size

    def __iter__(self):
        generator = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        order = torch.randperm(self.size, generator=generator).tolist()
        skip, self._skip = self._skip, 0
        return iter(order[skip:])

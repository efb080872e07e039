"""Training windows cut from episodes, mirror augmentation, the episode split and action ranges.

A training sample for frame t is the window of frames [t-7 .. t] (repeating frame 0 before the
episode start, exactly as the runtime pads a short window by repeating its oldest feature) and the
targets are the actions [t .. t+chunk-1] (linear_x, linear_y); steps past the episode end have no
recorded action and are masked out of the loss.

Consecutive windows share seven of their eight frames. The dataset therefore hands out *clips*:
a run of consecutive windows of one episode together with the frames they need, so the model
encodes each frame once per clip instead of once per window. The per-frame features are exactly
the ones a per-window computation would produce (a frame's feature depends only on its pixels and
the prompt), so nothing is precomputed and LoRA trains through every frame.

Frames are resized to the model's input size once, when an episode is loaded (uint8), with the
same function the camera window node uses.
"""
from __future__ import annotations

import logging
import math
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import torch

from mobile_vla_ros.data.episode import list_episodes, read_episode
from mobile_vla_ros.data.images import resize_for_model
from mobile_vla_ros.errors import DatasetError, EpisodeError
from mobile_vla_ros.policy.instructions import MAX_INSTRUCTION_CHARS, instruction_side, mirror_instruction

LOG = logging.getLogger(__name__)

ACTION_DIMS = 2  # the policy drives linear_x and linear_y; angular_z is recorded but not learned
LINEAR_Y = 1
# The lab's files are event-driven: one frame per key press, each press a 0.4 s move.
LEGACY_ACTION_DT = 0.4


@dataclass
class TrainingEpisode:
    """An episode ready for training: frames at model size, the full (T, 3) actions."""

    frames: np.ndarray  # (T, S, S, 3) uint8 RGB
    actions: np.ndarray  # (T, 3) float32 [linear_x, linear_y, angular_z]
    instruction: str
    source: str
    action_dt: float
    mirrored: bool = False

    @property
    def num_frames(self) -> int:
        return len(self.actions)

    @property
    def side(self) -> str | None:
        return instruction_side(self.instruction)

    def mirror(self) -> "TrainingEpisode":
        """Left/right mirror image: flipped frames, negated linear_y and angular_z, swapped words.

        The frames are a flipped view (no copy); the dataset copies the frames of one clip at a time.
        """
        actions = self.actions * np.array([1.0, -1.0, -1.0], np.float32)
        return replace(
            self, frames=self.frames[:, :, ::-1], actions=actions,
            instruction=mirror_instruction(self.instruction), mirrored=not self.mirrored,
        )


@dataclass
class SkipReport:
    """Episodes left out of training and why (one warning each was logged)."""

    total: int = 0
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (path, reason)

    @property
    def used(self) -> int:
        return self.total - len(self.skipped)

    def summary(self) -> str:
        if not self.skipped:
            return f"using all {self.total} episodes"
        reasons = Counter(reason.split(":")[0] for _, reason in self.skipped)
        detail = ", ".join(f"{count} {reason}" for reason, count in sorted(reasons.items()))
        return f"skipped {len(self.skipped)} of {self.total} episodes ({detail}); using {self.used}"


def window_indices(t: int, window_size: int) -> np.ndarray:
    """Frame indices of the window ending at frame t, oldest first, clamped to frame 0."""
    return np.maximum(np.arange(t - window_size + 1, t + 1), 0)


def action_targets(actions: np.ndarray, t: int, chunk_size: int, dims: int = ACTION_DIMS) -> tuple[np.ndarray, np.ndarray]:
    """Actions [t .. t+chunk-1] of the first `dims` dimensions and which of them exist.

    Steps past the episode end have no recorded action: they are zero and marked invalid, and
    the loss leaves them out (filling them in would teach a made-up ending, 7 of 18 windows'
    worth of targets in an 18-frame episode with chunk 10)."""
    targets = np.zeros((chunk_size, dims), np.float32)
    future = actions[t : t + chunk_size, :dims]
    targets[: len(future)] = future
    valid = np.arange(chunk_size) < len(future)
    return targets, valid


# ------------------------------------------------------------------------------------- loading


def _problem(episode) -> str | None:
    """Why an episode that was read cannot be trained on, or None."""
    if not episode.instruction or not episode.instruction.strip():
        return "no instruction"
    length = len(" ".join(episode.instruction.split()))
    if length > MAX_INSTRUCTION_CHARS:
        return f"instruction too long: {length} characters, the limit is {MAX_INSTRUCTION_CHARS}"
    if not np.isfinite(episode.actions).all():
        return "non-finite actions"
    return None


def _action_dt(episode, legacy_action_dt: float) -> float:
    if episode.sample_rate_hz:
        return 1.0 / float(episode.sample_rate_hz)
    return legacy_action_dt


def load_training_episodes(
    data_dirs: Sequence[str | Path],
    image_size: int,
    min_frames: int,
    legacy_action_dt: float = LEGACY_ACTION_DT,
) -> tuple[list[TrainingEpisode], SkipReport]:
    """Read every episode under `data_dirs`; skip (with one warning each) what cannot be used.

    Raises DatasetError when a directory is missing or nothing usable is left.
    """
    paths: list[Path] = []
    for directory in data_dirs:
        try:
            paths.extend(list_episodes(directory))
        except EpisodeError as error:
            raise DatasetError(f"data directory {directory}: {error}") from error
    report = SkipReport(total=len(paths))
    episodes = []
    for path in paths:
        try:
            episode = read_episode(path)
        except EpisodeError as error:
            reason = f"unreadable: {error}"
        else:
            reason = _problem(episode)
            if reason is None and episode.num_frames < min_frames:
                reason = f"too short: {episode.num_frames} frames, need at least {min_frames}"
        if reason is not None:
            LOG.warning("skipping episode %s: %s", path, reason)
            report.skipped.append((str(path), reason))
            continue
        frames = np.stack([resize_for_model(image, image_size) for image in episode.images])
        episodes.append(TrainingEpisode(
            frames, episode.actions.astype(np.float32), " ".join(episode.instruction.split()), str(path),
            _action_dt(episode, legacy_action_dt),
        ))
    if report.skipped:
        LOG.warning("%s", report.summary())
    if not episodes:
        where = ", ".join(map(str, data_dirs))
        raise DatasetError(
            f"no usable episodes in {where}: " + (report.summary() if paths else "no *.h5 episode files found")
        )
    return episodes, report


def common_action_dt(episodes: Iterable[TrainingEpisode]) -> float:
    """The time step every episode shares; a model can only learn one (it is saved with it)."""
    steps = Counter(round(episode.action_dt, 6) for episode in episodes)
    if len(steps) > 1:
        detail = ", ".join(f"{count} episodes at {dt:g} s" for dt, count in steps.most_common())
        raise DatasetError(
            f"episodes were sampled at different rates ({detail}); train one model per rate "
            "(legacy files count as legacy_action_dt)"
        )
    return float(next(iter(steps)))


def split_by_episode(
    episodes: Sequence[TrainingEpisode], val_fraction: float, seed: int
) -> tuple[list[TrainingEpisode], list[TrainingEpisode]]:
    """Seeded train/validation split of whole episodes (windows of one episode never straddle it).

    Each instruction is split on its own so both sides reach validation; at least one episode
    of every instruction stays in training.
    """
    rng = np.random.default_rng(seed)
    by_instruction: dict[str, list[TrainingEpisode]] = {}
    for episode in episodes:
        by_instruction.setdefault(episode.instruction, []).append(episode)
    train, val = [], []
    for instruction in sorted(by_instruction):
        group = by_instruction[instruction]
        order = rng.permutation(len(group))
        count = min(int(round(val_fraction * len(group))), len(group) - 1)
        val.extend(group[i] for i in order[:count])
        train.extend(group[i] for i in order[count:])
    return train, val


def with_mirrors(episodes: Sequence[TrainingEpisode], enabled: bool = True) -> list[TrainingEpisode]:
    """The episodes plus the mirror image of each one whose instruction names a side."""
    if not enabled:
        return list(episodes)
    return list(episodes) + [episode.mirror() for episode in episodes if episode.side is not None]


OUTLIER_QUANTILE = 0.01  # the range is judged from the 1st..99th percentile of each dimension
OUTLIER_FENCE = 0.5  # beyond that by more than half its span (or half its size): an outlier


@dataclass
class ActionOutlier:
    source: str
    frame: int
    dim: int
    value: float


def action_range(
    episodes: Sequence[TrainingEpisode], dims: int = ACTION_DIMS
) -> tuple[list[float], list[float], list[ActionOutlier]]:
    """Per-dimension low/high of the training actions, always including 0 (the robot at rest),
    and the outlier actions left out of it.

    One glitched command (a joystick spike, a unit mix-up) must not stretch the normalisation
    for every other action, so values far outside the 1st..99th percentile band do not count;
    they are returned for reporting (their targets are clamped to the range in training). A
    dimension that never moves gets a unit range so that normalisation stays finite.
    """
    actions = np.concatenate([episode.actions[:, :dims] for episode in episodes])
    band_low, band_high = np.quantile(actions, [OUTLIER_QUANTILE, 1 - OUTLIER_QUANTILE], axis=0)
    fence = OUTLIER_FENCE * np.maximum(band_high - band_low, np.maximum(np.abs(band_low), np.abs(band_high)))
    inside = (actions >= band_low - fence) & (actions <= band_high + fence)
    low = np.minimum(np.where(inside, actions, np.inf).min(axis=0), 0.0)
    high = np.maximum(np.where(inside, actions, -np.inf).max(axis=0), 0.0)
    flat = high - low < 1e-6
    low[flat] -= 1.0
    high[flat] += 1.0
    outliers = []
    for episode in episodes:
        if episode.mirrored:  # the same recorded action again
            continue
        part = episode.actions[:, :dims]
        for frame, dim in zip(*np.nonzero((part < band_low - fence) | (part > band_high + fence))):
            outliers.append(ActionOutlier(episode.source, int(frame), int(dim), float(part[frame, dim])))
    return low.tolist(), high.tolist(), outliers


# ------------------------------------------------------------------------------------- dataset


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

    def __init__(self, episodes: Sequence[TrainingEpisode], window_size: int, chunk_size: int, clip_length: int = 16):
        self.episodes = list(episodes)
        self.window_size, self.chunk_size = window_size, chunk_size
        self.clips = [
            Clip(index, start, stop)
            for index, episode in enumerate(self.episodes)
            for start, stop in episode_clips(episode.num_frames, clip_length)
        ]

    @property
    def num_windows(self) -> int:
        return sum(episode.num_frames for episode in self.episodes)

    def __len__(self) -> int:
        return len(self.clips)

    def __getitem__(self, index: int) -> dict:
        clip = self.clips[index]
        episode = self.episodes[clip.episode]
        first = max(clip.start - self.window_size + 1, 0)
        windows = np.stack([window_indices(t, self.window_size) - first for t in range(clip.start, clip.stop)])
        targets, valid = map(np.stack, zip(*(action_targets(episode.actions, t, self.chunk_size)
                                              for t in range(clip.start, clip.stop))))
        return {
            "frames": torch.from_numpy(np.ascontiguousarray(episode.frames[first : clip.stop])),
            "windows": torch.from_numpy(windows),
            "targets": torch.from_numpy(targets),
            "target_mask": torch.from_numpy(valid),
            "instruction": episode.instruction,
        }


def collate_clips(items: list[dict]) -> dict:
    """Concatenate clips: frames (N, S, S, 3), windows (W, window) indexing those frames,
    targets (W, chunk, A) with target_mask (W, chunk) of the steps that exist; `frame_clip`/`window_clip` map rows to `instructions`."""
    offsets = np.cumsum([0] + [len(item["frames"]) for item in items])
    return {
        "frames": torch.cat([item["frames"] for item in items]),
        "windows": torch.cat([item["windows"] + int(offset) for item, offset in zip(items, offsets)]),
        "targets": torch.cat([item["targets"] for item in items]),
        "target_mask": torch.cat([item["target_mask"] for item in items]),
        "frame_clip": torch.cat([torch.full((len(item["frames"]),), i) for i, item in enumerate(items)]),
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

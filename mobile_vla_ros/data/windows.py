"""Training episodes: loading with the quality rules applied, the episode split, mirror
augmentation, action targets per window and the action range. The clips handed to the model are
built from them in data/clips.py.

A training sample for frame t is the window of frames [t-7 .. t] (repeating frame 0 before the
episode start, exactly as the runtime pads a short window by repeating its oldest feature) and the
targets are the actions [t .. t+chunk-1] (linear_x, linear_y); steps past the episode end have no
recorded action and are masked out of the loss.

Flagged data (data/quality.py, the documented rule there): an episode with a `reject` verdict is
skipped; windows ending at a frame a `trim` verdict flags (camera lag, stale command, frozen image,
the tail of a long idle stretch) are left out and counted (`SkipReport.windows_left_out`).
An episode file whose frames cannot be read one at a time at a normal cost (oversized chunks,
frames declared but not stored) is skipped with a warning and counted.
"""

from __future__ import annotations

import hashlib
import logging
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from mobile_vla_ros.data.correction_episodes import human_frames
from mobile_vla_ros.data.episode import frame_storage_problem, list_episodes, read_episode
from mobile_vla_ros.data.frames import EpisodeFrames, FrameCache
from mobile_vla_ros.data.images import camera_settings
from mobile_vla_ros.data.quality import TRIM, QualityRules
from mobile_vla_ros.errors import DatasetError, EpisodeError
from mobile_vla_ros.policy.instructions import (
    instruction_length_problem,
    instruction_side,
    mirror_instruction,
    normalize_instruction,
)

LOG = logging.getLogger(__name__)

ACTION_DIMS = 2  # the policy drives linear_x and linear_y; angular_z is recorded but not learned
LINEAR_Y = 1
# The lab's files are event-driven: one frame per key press, each press a 0.4 s move.
LEGACY_ACTION_DT = 0.4


@dataclass
class TrainingEpisode:
    """An episode ready for training: frames at model size, the full (T, 3) actions."""

    frames: np.ndarray | EpisodeFrames  # (T, S, S, 3) uint8 RGB
    actions: np.ndarray  # (T, 3) float32 [linear_x, linear_y, angular_z]
    instruction: str
    source: str
    action_dt: float
    mirrored: bool = False
    rotated_180: bool | None = None  # as recorded; None: not recorded (legacy files)
    usable: np.ndarray | None = None  # (T,) bool: the window ending at frame t is trained on; None = all
    correction: bool = False  # a person's takeover: only the frames they commanded are usable
    # (T, hidden) float32 encoder features of the frames, when training keeps the encoder fixed:
    # computed once, they stand in for the frames (see training.train.cache_features).
    features: torch.Tensor | None = None

    @property
    def usable_windows(self) -> np.ndarray:
        return np.ones(self.num_frames, bool) if self.usable is None else self.usable

    @property
    def num_frames(self) -> int:
        return len(self.actions)

    @property
    def side(self) -> str | None:
        return instruction_side(self.instruction)

    def mirror(self) -> TrainingEpisode:
        """Left/right mirror image: flipped frames, negated linear_y and angular_z, swapped words.

        The frames are a flipped view (no copy); the dataset copies the frames of one clip at a time.
        """
        actions = self.actions * np.array([1.0, -1.0, -1.0], np.float32)
        frames = self.frames.mirror() if isinstance(self.frames, EpisodeFrames) else self.frames[:, :, ::-1]
        return replace(
            self,
            frames=frames,
            actions=actions,
            instruction=mirror_instruction(self.instruction),
            mirrored=not self.mirrored,
            features=None,  # features of the flipped frames are other features
        )


@dataclass
class SkipReport:
    """Episodes left out of training and why (one warning each was logged)."""

    total: int = 0
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (path, reason)
    windows_total: int = 0  # windows of the episodes used
    windows_left_out: int = 0  # of those, left out by trim verdicts
    left_out_by: Counter = field(default_factory=Counter)  # trim verdict code -> flagged frames (may overlap)
    corrections: list[str] = field(default_factory=list)  # correction episodes used

    @property
    def used(self) -> int:
        return self.total - len(self.skipped)

    def summary(self) -> str:
        windows = f"; {self.windows_left_out} of {self.windows_total} windows left out" + (
            " (" + ", ".join(f"{code} {count}" for code, count in sorted(self.left_out_by.items())) + ")"
            if self.left_out_by
            else ""
        )
        if not self.skipped:
            return f"using all {self.total} episodes" + windows
        reasons = Counter(reason.split(":")[0] for _, reason in self.skipped)
        detail = ", ".join(f"{count} {reason}" for reason, count in sorted(reasons.items()))
        return f"skipped {len(self.skipped)} of {self.total} episodes ({detail}); using {self.used}" + windows


def window_indices(t: int, window_size: int) -> np.ndarray:
    """Frame indices of the window ending at frame t, oldest first, clamped to frame 0."""
    return np.maximum(np.arange(t - window_size + 1, t + 1), 0)


def action_targets(
    actions: np.ndarray, t: int, chunk_size: int, dims: int = ACTION_DIMS
) -> tuple[np.ndarray, np.ndarray]:
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
    too_long = instruction_length_problem(normalize_instruction(episode.instruction))
    if too_long:
        return too_long
    if not np.isfinite(episode.actions).all():
        return "non-finite actions"
    return None


def _action_dt(episode, legacy_action_dt: float) -> float:
    if episode.sample_rate_hz:
        return 1.0 / float(episode.sample_rate_hz)
    return legacy_action_dt


def _rotated_180(episode) -> bool | None:
    value = None if episode.legacy else episode.attrs.get("rotated_180")
    return None if value is None else bool(value)


def load_training_episodes(
    data_dirs: Sequence[str | Path],
    image_size: int,
    min_frames: int,
    legacy_action_dt: float = LEGACY_ACTION_DT,
    max_idle_s: float = QualityRules.max_idle_s,
    frame_cache_mb: float = 1024,
) -> tuple[list[TrainingEpisode], SkipReport]:
    """Read every episode under `data_dirs`; skip (with one warning each) what cannot be used and
    leave out the windows that quality verdicts flag (data/quality.py).

    Raises DatasetError when a directory is missing or nothing usable is left.
    """
    paths: list[Path] = []
    for directory in data_dirs:
        try:
            paths.extend(list_episodes(directory))
        except EpisodeError as error:
            raise DatasetError(f"data directory {directory}: {error}") from error
    report = SkipReport(total=len(paths))
    rules = QualityRules(window_size=min_frames, max_idle_s=max_idle_s)
    cache = FrameCache(int(frame_cache_mb * 2**20))
    episodes = []
    for path in paths:
        try:
            episode = read_episode(path, frame_indices=[])  # everything but the frames
            reason = frame_storage_problem(path)
        except (EpisodeError, OSError, KeyError, ValueError) as error:
            reason = f"unreadable: {error}"
        if reason is None:
            reason = _problem(episode)
            if reason is None and episode.num_frames < min_frames:
                reason = f"too short: {episode.num_frames} frames, need at least {min_frames}"
            quality = episode.quality(rules, legacy_action_dt)
            if reason is None and not quality.usable.any():
                reason = f"no usable window: {quality.summary()}"
        if reason is not None:
            LOG.warning("skipping episode %s: %s", path, reason)
            report.skipped.append((str(path), reason))
            continue
        human = human_frames(episode)
        usable = quality.usable if human is None else quality.usable & human
        if human is not None:
            report.corrections.append(str(path))
            report.left_out_by["not_by_person"] += int((~human).sum())
        episodes.append(
            TrainingEpisode(
                EpisodeFrames(path, episode.num_frames, image_size, cache),
                episode.actions.astype(np.float32),
                normalize_instruction(episode.instruction),
                str(path),
                _action_dt(episode, legacy_action_dt),
                usable=usable,
                correction=human is not None,
                rotated_180=_rotated_180(episode),
            )
        )
        report.windows_total += episode.num_frames
        report.windows_left_out += int((~usable).sum())
        report.left_out_by.update({v.code: v.frames for v in quality.verdicts if v.severity == TRIM})
    if report.skipped or report.windows_left_out:
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


def training_camera(episodes: Iterable[TrainingEpisode]) -> dict:
    """The camera settings every episode shares, for the checkpoint: a model learns one mounting."""
    by_rotation: dict[bool, list[str]] = {}
    for episode in episodes:
        if episode.rotated_180 is not None:
            by_rotation.setdefault(episode.rotated_180, []).append(episode.source)
    if len(by_rotation) > 1:
        raise DatasetError(
            f"episodes were recorded with different camera rotations ({len(by_rotation[True])} rotated by 180°, "
            f"e.g. {by_rotation[True][0]}; {len(by_rotation[False])} not, e.g. {by_rotation[False][0]}); "
            "train one model per camera mounting"
        )
    return camera_settings(next(iter(by_rotation), None))


def split_by_episode(
    episodes: Sequence[TrainingEpisode], val_fraction: float, seed: int
) -> tuple[list[TrainingEpisode], list[TrainingEpisode]]:
    """Seeded train/validation split of whole scenes (windows of one episode never straddle it).

    A scene is the set of episodes that start from the same camera image: the simulator and the
    synthetic twins record one layout under both instructions, and a validation episode whose
    twin trains would be judged on frames the policy has seen. Each instruction gets about
    `val_fraction` of its episodes in validation; at least one of each stays in training.
    Correction episodes always train: they are few, and each holds exactly the states the policy
    failed in (held out, the fine-tuning would miss them).
    """
    scenes: dict[bytes, list[TrainingEpisode]] = {}
    demonstrations = [episode for episode in episodes if not episode.correction]
    for episode in demonstrations:
        scenes.setdefault(hashlib.sha1(np.ascontiguousarray(episode.frames[0]).tobytes()).digest(), []).append(episode)
    counts = Counter(episode.instruction for episode in demonstrations)
    room = {instruction: min(int(round(val_fraction * count)), count - 1) for instruction, count in counts.items()}
    train, val = [episode for episode in episodes if episode.correction], []
    groups = list(scenes.values())
    for index in np.random.default_rng(seed).permutation(len(groups)):
        scene = Counter(episode.instruction for episode in groups[index])
        fits = all(count <= room[instruction] for instruction, count in scene.items())
        if fits:
            room.update({instruction: room[instruction] - count for instruction, count in scene.items()})
        (val if fits else train).extend(groups[index])
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
    they are returned for reporting (their targets are clamped to the range in training). The
    band is judged on the non-zero commands; a dimension that never moves gets a unit range so
    that normalisation stays finite.
    """
    actions = np.concatenate([episode.actions[:, :dims] for episode in episodes])
    band_low, band_high = np.zeros(dims), np.zeros(dims)  # the band always holds 0 (at rest)
    for dim in range(dims):
        # Judged from the commands that move: on an axis used in few frames, rest would fill the
        # percentiles and every real command would look like an outlier.
        moving = actions[:, dim][actions[:, dim] != 0.0]
        if moving.size:
            low_q, high_q = np.quantile(moving, [OUTLIER_QUANTILE, 1 - OUTLIER_QUANTILE])
            band_low[dim], band_high[dim] = min(low_q, 0.0), max(high_q, 0.0)
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

"""The episode file layout, written down once: writer, reader, recovery, inspect and the docs use it.

Episode files: a crash-safe H5 writer and one reader for this package's format and the lab's.

This package's layout is a superset of the lab's (DESIGN.md section 2), so their tools still read
our files:

    images               (T, H, W, 3) uint8, RGB (attr image_encoding = "rgb8"), gzip, one chunk per frame
    actions              (T, 3) float32 [linear_x, linear_y, angular_z]
    action_event_types   (T,) utf-8 str: episode_start / start_action / stop_action / step
    language_instruction (1,) S256
    timestamps           (T,) float64 capture stamp of each frame, seconds
    flags/camera_lag     (T,) bool  the frame was not fresh when it was sampled
    flags/command_stale  (T,) bool  the command stream had gone silent while moving
    flags/idle           (T,) bool  part of the motionless stretch at the start or end
    frame_crc32          (T,) uint32 CRC-32 of each stored frame's pixels (schema 2; finds frozen images)
    attrs: schema_version, sample_rate_hz, image_encoding, num_frames, total_duration, truncated,
           idle_start_frames, idle_end_frames, episode_name, collection_datetime, rotated_180
           (camera mounting), quality (schema 2: JSON list of the verdicts of data/quality.py),
           extra_columns (names of the caller's per-frame datasets, e.g. correction/human), + caller's attrs

Schema 1 files (no frame_crc32, no quality) still read; their quality is computed when asked.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from mobile_vla_ros.data.quality import (
    IDLE_SPEED,
    EpisodeQuality,
    QualityRules,
    Verdict,
    check_episode,
    verdicts_from_json,
)
from mobile_vla_ros.errors import EpisodeError
from mobile_vla_ros.policy.instructions import MAX_INSTRUCTION_BYTES

SCHEMA_VERSION = 2


PARTIAL_SUFFIX = ".partial"


ACTION_NAMES = ("linear_x", "linear_y", "angular_z")


PER_FRAME = (
    "images",
    "actions",
    "action_event_types",
    "timestamps",
    "flags/camera_lag",
    "flags/command_stale",
    "frame_crc32",
)


EXTRA_COLUMNS_ATTR = "extra_columns"  # comma-separated names of the caller's per-frame datasets


@dataclass
class Episode:
    images: np.ndarray  # (T, H, W, 3) uint8 RGB (only the requested frames, see read_episode)
    actions: np.ndarray  # (T, 3) float32 [linear_x, linear_y, angular_z]
    instruction: str
    timestamps: np.ndarray | None  # (T,) float64 seconds; None for legacy files
    sample_rate_hz: float | None  # None for the lab's event-driven files
    event_types: list[str]
    flags: dict = field(default_factory=dict)  # truncated, camera_lag, command_stale, idle, idle_*_frames
    attrs: dict = field(default_factory=dict)
    extras: dict = field(default_factory=dict)  # the writer's extra per-frame columns, by name
    path: str = ""
    legacy: bool = False
    frame_digests: np.ndarray | None = None  # (T,) uint32 CRC-32 per frame; None before schema 2

    @property
    def stored_verdicts(self) -> list[Verdict] | None:
        """The verdicts the recorder stored when it saved the episode; None for older files."""
        return verdicts_from_json(self.attrs["quality"]) if "quality" in self.attrs else None

    def quality(self, rules: QualityRules = QualityRules(), event_step_s: float = 0.4) -> EpisodeQuality:
        """The episode judged by `rules` (data/quality.py), from its arrays."""
        return check_episode(
            self.actions,
            self.instruction,
            self.sample_rate_hz,
            rules,
            self.flags.get("camera_lag"),
            self.flags.get("command_stale"),
            self.frame_digests,
            event_step_s,
        )

    @property
    def num_frames(self) -> int:
        return int(self.actions.shape[0])

    @property
    def duration_s(self) -> float | None:
        if self.timestamps is not None and len(self.timestamps) > 1:
            return float(self.timestamps[-1] - self.timestamps[0])
        if self.sample_rate_hz:
            return self.num_frames / self.sample_rate_hz
        return None


def encode_instruction(instruction: str) -> np.ndarray:
    encoded = instruction.encode("utf-8")
    if len(encoded) > MAX_INSTRUCTION_BYTES:
        raise EpisodeError(
            f"instruction is {len(encoded)} bytes; at most {MAX_INSTRUCTION_BYTES} fit the lab's S256 field"
        )
    return np.array([encoded], dtype=f"S{MAX_INSTRUCTION_BYTES}")


def instruction_dataset(h5) -> str | None:
    if "language_instruction" not in h5:
        return None
    value = h5["language_instruction"][()]
    value = value[0] if np.ndim(value) else value
    text = value.decode("utf-8", errors="replace") if isinstance(value, bytes) else str(value)
    return text.rstrip("\x00").strip() or None


def set_attrs(h5, attrs: dict) -> None:
    for key, value in attrs.items():
        if value is None:
            continue
        h5.attrs[key] = value if isinstance(value, (int, float, str, bool, np.ndarray, np.generic)) else str(value)


def _plain(value):
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    return value.item() if isinstance(value, np.generic) else value


def read_attrs(h5) -> dict:
    return {key: _plain(value) for key, value in h5.attrs.items()}


def strings(dataset) -> list[str]:
    return [item.decode("utf-8") if isinstance(item, bytes) else str(item) for item in dataset[()]]


def extra_column_names(attrs) -> tuple[str, ...]:
    names = attrs.get(EXTRA_COLUMNS_ATTR, "")
    names = names.decode() if isinstance(names, bytes) else str(names)
    return tuple(name for name in names.split(",") if name)


def check_shapes(path, images, actions) -> None:
    if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8:
        raise EpisodeError(f"{path}: images must be (T, H, W, 3) uint8, found {images.shape} {images.dtype}")
    if actions.ndim != 2 or actions.shape[1] != 3 or actions.shape[0] != images.shape[0]:
        raise EpisodeError(f"{path}: actions must be (T, 3) with T = {images.shape[0]} frames, found {actions.shape}")


def load_images(dataset, frame_indices) -> np.ndarray:
    if frame_indices is None:
        return dataset[()]
    indices = np.asarray(list(frame_indices), dtype=np.int64)
    if indices.size and (indices.min() < 0 or indices.max() >= dataset.shape[0]):
        raise EpisodeError(f"frame index out of range 0..{dataset.shape[0] - 1}")
    out = np.empty((indices.size,) + dataset.shape[1:], dtype=np.uint8)
    for row, index in enumerate(indices):
        out[row] = dataset[int(index)]
    return out


def idle_mask(actions: np.ndarray, threshold: float = IDLE_SPEED) -> np.ndarray:
    """True for the frames of the motionless stretches at the start and at the end."""
    still = np.all(np.abs(np.asarray(actions)) < threshold, axis=1)
    mask = np.zeros(still.shape, bool)
    if still.all():
        mask[:] = True
        return mask
    first_move = int(np.argmax(~still))
    last_move = len(still) - 1 - int(np.argmax(~still[::-1]))
    mask[:first_move] = True
    mask[last_move + 1 :] = True
    return mask


def idle_counts(idle: np.ndarray) -> dict:
    if idle.all():
        return {"idle_start_frames": int(idle.size), "idle_end_frames": 0}
    return {"idle_start_frames": int(np.argmax(~idle)), "idle_end_frames": int(np.argmax(~idle[::-1]))}

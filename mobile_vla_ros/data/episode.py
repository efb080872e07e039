"""Episode files: a crash-safe H5 writer and one reader for this package's format and the lab's.

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

Crash safety: frames go to `<name>.h5.partial` (HDF5 SWMR mode, so whatever was flushed stays
readable after a SIGKILL), flushed at least every `flush_interval_s`; `save()` finalises and
renames to `<name>.h5` without ever replacing an existing file. `recover_partial_episodes()`
turns leftovers of a crash into normal episodes with `truncated = True`.
"""
from __future__ import annotations

import datetime as _dt
import logging
import os
import re
import time
import zlib
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import cv2
import h5py
import numpy as np
from isal import isal_zlib

from mobile_vla_ros.data.quality import IDLE_SPEED, EpisodeQuality, QualityRules, Verdict, check_episode, verdicts_from_json
from mobile_vla_ros.errors import EpisodeError
from mobile_vla_ros.policy.instructions import LAB_INSTRUCTIONS, instruction_side

LOG = logging.getLogger(__name__)

SCHEMA_VERSION = 2
PARTIAL_SUFFIX = ".partial"
ACTION_NAMES = ("linear_x", "linear_y", "angular_z")
_PER_FRAME = ("images", "actions", "action_event_types", "timestamps", "flags/camera_lag", "flags/command_stale",
              "frame_crc32")
_NUMBER = re.compile(r"^episode_(\d+)_")
_INSTRUCTION_BYTES = 256
EXTRA_COLUMNS_ATTR = "extra_columns"  # comma-separated names of the caller's per-frame datasets
# Frames waiting for compression before append() waits: enough for seconds of a busy CPU at 720p
# (a waiting append delays the recorder's next sample), still bounded memory.
_MAX_PENDING_BYTES = 128 << 20


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
        return check_episode(self.actions, self.instruction, self.sample_rate_hz, rules,
                             self.flags.get("camera_lag"), self.flags.get("command_stale"), self.frame_digests,
                             event_step_s)

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


# ---------------------------------------------------------------------------------------- reading


def list_episodes(directory) -> list[Path]:
    """Finished episodes (`*.h5`) under `directory`, sorted; unfinished `.partial` files excluded."""
    root = Path(directory)
    if not root.is_dir():
        raise EpisodeError(f"{root} is not a directory")
    return sorted(path for path in root.rglob("*.h5") if path.is_file())


def read_episode(path, frame_indices: Sequence[int] | None = None) -> Episode:
    """Read an episode of either format; raises EpisodeError when it is not a readable episode.

    `frame_indices` loads only those frames' images (e.g. for a contact sheet, or `[]` for no
    images at all); every other field always covers the whole episode.
    """
    path = Path(path)
    if path.name.endswith(PARTIAL_SUFFIX):
        raise EpisodeError(f"{path} is an unfinished recording; recover it first (the recorder does so on start-up)")
    try:
        with h5py.File(path, "r") as h5:
            if "images" not in h5 or "actions" not in h5:
                raise EpisodeError(f"{path} has no 'images'/'actions' datasets; not an episode file")
            if "schema_version" in h5.attrs:
                return _read_current(h5, path, frame_indices)
            return _read_legacy(h5, path, frame_indices)
    except EpisodeError:
        raise
    except (OSError, KeyError, ValueError, TypeError) as error:
        raise EpisodeError(f"cannot read episode {path}: {error}") from error


def _load_images(dataset, frame_indices) -> np.ndarray:
    if frame_indices is None:
        return dataset[()]
    indices = np.asarray(list(frame_indices), dtype=np.int64)
    if indices.size and (indices.min() < 0 or indices.max() >= dataset.shape[0]):
        raise EpisodeError(f"frame index out of range 0..{dataset.shape[0] - 1}")
    out = np.empty((indices.size,) + dataset.shape[1:], dtype=np.uint8)
    for row, index in enumerate(indices):
        out[row] = dataset[int(index)]
    return out


def read_frames(path, indices: Sequence[int], transform: Callable[[np.ndarray], np.ndarray] | None = None):
    """RGB frames `indices` of an episode file of either format, one at a time (a full frame is
    released as soon as `transform`, e.g. the resize to model size, has made its result)."""
    with h5py.File(path, "r") as h5:
        images = h5["images"]
        bgr = "schema_version" not in h5.attrs  # the lab stored cv_bridge bgr8 arrays
        frames = []
        for index in indices:
            frame = images[int(index)]
            frame = frame[..., ::-1] if bgr else frame
            frames.append(transform(frame) if transform else np.ascontiguousarray(frame))
        return frames


def frame_storage_problem(path, max_chunk_bytes: int = 64 << 20) -> str | None:
    """Why reading this file's frames one at a time would cost more than a normal episode, or None.

    A chunk bigger than `max_chunk_bytes` has to be decompressed whole to read one frame; frames
    with no stored data (a file that declares more frames than it holds) are not recordings.
    """
    with h5py.File(path, "r") as h5:
        images = h5["images"]
        frame_bytes = int(np.prod(images.shape[1:])) * images.dtype.itemsize
        if images.chunks is None:
            stored = images.id.get_storage_size()
            if stored < images.size * images.dtype.itemsize:
                return f"frames missing: {images.shape[0]} frames declared, {stored // max(frame_bytes, 1)} stored"
            return None
        chunk_bytes = int(np.prod(images.chunks)) * images.dtype.itemsize
        if chunk_bytes > max_chunk_bytes:
            return (f"oversized chunks: reading one frame would decompress {chunk_bytes / 2**20:.0f} MiB "
                    f"(limit {max_chunk_bytes / 2**20:.0f} MiB)")
        expected = int(np.prod([-(-size // chunk) for size, chunk in zip(images.shape, images.chunks)]))
        stored = images.id.get_num_chunks()
        if stored < expected:
            return f"frames missing: {images.shape[0]} frames declared, data stored for {stored} of {expected} chunks"
    return None


def _check_shapes(path, images, actions) -> None:
    if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8:
        raise EpisodeError(f"{path}: images must be (T, H, W, 3) uint8, found {images.shape} {images.dtype}")
    if actions.ndim != 2 or actions.shape[1] != 3 or actions.shape[0] != images.shape[0]:
        raise EpisodeError(f"{path}: actions must be (T, 3) with T = {images.shape[0]} frames, found {actions.shape}")


def _strings(dataset) -> list[str]:
    return [item.decode("utf-8") if isinstance(item, bytes) else str(item) for item in dataset[()]]


def _plain(value):
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    return value.item() if isinstance(value, np.generic) else value


def _attrs(h5) -> dict:
    return {key: _plain(value) for key, value in h5.attrs.items()}


def _read_current(h5, path: Path, frame_indices) -> Episode:
    images_ds, actions = h5["images"], h5["actions"][()].astype(np.float32)
    _check_shapes(path, images_ds, actions)
    count = actions.shape[0]
    attrs = _attrs(h5)
    flags = {name: h5[f"flags/{name}"][()].astype(bool) for name in ("camera_lag", "command_stale", "idle")}
    flags.update(
        truncated=bool(attrs.get("truncated", False)),
        idle_start_frames=int(attrs.get("idle_start_frames", 0)),
        idle_end_frames=int(attrs.get("idle_end_frames", 0)),
    )
    if attrs.get("image_encoding", "rgb8") != "rgb8":
        raise EpisodeError(f"{path}: unsupported image_encoding {attrs.get('image_encoding')!r}")
    return Episode(
        images=_load_images(images_ds, frame_indices),
        actions=actions,
        instruction=_instruction_dataset(h5) or "",
        timestamps=h5["timestamps"][()].astype(np.float64),
        sample_rate_hz=float(attrs["sample_rate_hz"]),
        event_types=_strings(h5["action_event_types"]) if "action_event_types" in h5 else ["step"] * count,
        flags=flags,
        attrs=attrs,
        extras={name: h5[name][()] for name in _extra_column_names(attrs)},
        path=str(path),
        legacy=False,
        frame_digests=h5["frame_crc32"][()].astype(np.uint32) if "frame_crc32" in h5 else None,
    )


def _instruction_dataset(h5) -> str | None:
    if "language_instruction" not in h5:
        return None
    value = h5["language_instruction"][()]
    value = value[0] if np.ndim(value) else value
    text = value.decode("utf-8", errors="replace") if isinstance(value, bytes) else str(value)
    return text.rstrip("\x00").strip() or None


def instruction_from_file_name(path) -> str | None:
    """The lab's convention for files recorded before `language_instruction` existed."""
    side = instruction_side(" ".join(re.split(r"[^a-z]+", Path(path).stem.lower())))
    return LAB_INSTRUCTIONS[side] if side else None


def _read_legacy(h5, path: Path, frame_indices) -> Episode:
    images_ds, actions = h5["images"], h5["actions"][()].astype(np.float32)
    _check_shapes(path, images_ds, actions)
    instruction = _instruction_dataset(h5) or instruction_from_file_name(path)
    if instruction is None:
        raise EpisodeError(
            f"{path}: no language_instruction dataset and the file name names neither 'left' nor 'right'"
        )
    images_bgr = _load_images(images_ds, frame_indices)
    count = actions.shape[0]
    idle = idle_mask(actions)
    return Episode(
        images=np.ascontiguousarray(images_bgr[..., ::-1]),  # the lab stored cv_bridge bgr8 arrays
        actions=actions,
        instruction=instruction,
        timestamps=None,
        sample_rate_hz=None,
        event_types=_strings(h5["action_event_types"]) if "action_event_types" in h5 else ["step"] * count,
        flags={
            "truncated": False,
            "camera_lag": np.zeros(count, bool),
            "command_stale": np.zeros(count, bool),
            "idle": idle,
            **_idle_counts(idle),
        },
        attrs=_attrs(h5),
        path=str(path),
        legacy=True,
    )


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


def _idle_counts(idle: np.ndarray) -> dict:
    if idle.all():
        return {"idle_start_frames": int(idle.size), "idle_end_frames": 0}
    return {"idle_start_frames": int(np.argmax(~idle)), "idle_end_frames": int(np.argmax(~idle[::-1]))}


# ---------------------------------------------------------------------------------------- writing


def _local_stamp() -> str:
    return _dt.datetime.now().strftime("%Y%m%d_%H%M%S")


def _slug(instruction: str) -> str:
    return instruction_side(instruction) or "custom"


def next_episode_number(directory) -> int:
    """1 + the highest number used by any episode or partial file in `directory`."""
    numbers = [int(match.group(1)) for p in Path(directory).iterdir() if (match := _NUMBER.match(p.name))]
    return max(numbers, default=0) + 1


def _encode_instruction(instruction: str) -> np.ndarray:
    encoded = instruction.encode("utf-8")
    if len(encoded) > _INSTRUCTION_BYTES:
        raise EpisodeError(f"instruction is {len(encoded)} bytes; at most {_INSTRUCTION_BYTES} fit the lab's S256 field")
    return np.array([encoded], dtype=f"S{_INSTRUCTION_BYTES}")


def _set_attrs(h5, attrs: dict) -> None:
    for key, value in attrs.items():
        if value is None:
            continue
        h5.attrs[key] = value if isinstance(value, (int, float, str, bool, np.ndarray, np.generic)) else str(value)


class EpisodeWriter:
    """Appends frames to `<directory>/episode_NNNN_<date>_<side>.h5.partial`; `save()` publishes it.

    Nothing touches the disk before the first `append` (an episode with no frames leaves no file).
    `image_size=(width, height)` resizes frames before storing; None stores them as given.
    `rotated_180` says whether the caller rotated the camera's frames (the camera's mounting; None:
    unknown). `extra_columns={"group/name": (shape, dtype)}` adds per-frame datasets, filled by the
    `extras` of each `append` and kept by crash recovery like the built-in ones.
    """

    def __init__(
        self,
        directory,
        instruction: str,
        sample_rate_hz: float,
        *,
        image_size: tuple[int, int] | None = None,
        flush_interval_s: float = 1.0,
        compression_level: int = 1,  # ISA-L level 0-3
        rotated_180: bool | None = False,
        extra_columns: dict[str, tuple[tuple[int, ...], type]] | None = None,
        quality_rules: QualityRules = QualityRules(),
        **attrs,
    ):
        if not instruction or not instruction.strip():
            raise EpisodeError("an episode needs a non-empty instruction")
        if not sample_rate_hz or sample_rate_hz <= 0:
            raise EpisodeError(f"sample_rate_hz must be positive, got {sample_rate_hz}")
        self.directory = Path(directory)
        self.instruction = instruction.strip()
        _encode_instruction(self.instruction)  # fail now, not at the first frame
        self.sample_rate_hz = float(sample_rate_hz)
        self.image_size = tuple(image_size) if image_size else None
        self.flush_interval_s = float(flush_interval_s)
        self.compression_level = int(compression_level)
        self.quality_rules = quality_rules
        self.quality: EpisodeQuality | None = None  # the verdicts, once saved
        # Recorded whenever known: training stores it in the checkpoint and driving must match it.
        self.attrs = {**attrs, "rotated_180": None if rotated_180 is None else bool(rotated_180)}
        self.extra_columns = dict(extra_columns or {})
        if self.extra_columns:
            self.attrs[EXTRA_COLUMNS_ATTR] = ",".join(self.extra_columns)
        self.partial_path: Path | None = None
        self._h5: h5py.File | None = None
        self._count = 0
        self._last_flush = 0.0
        self._closed = False
        # Frames are deflated by worker threads (ISA-L releases the GIL, so the caller - a ROS
        # executor - stays responsive and both cores work) and stored as ready gzip chunks.
        # ISA-L's deflate is standard zlib output, ~5x faster than zlib level 1 on a noisy 720p
        # frame (16 vs 78 ms here) for ~20 % more bytes: what lets 720p record at 10 Hz on 2 cores.
        self._compressor: ThreadPoolExecutor | None = None
        self._pending: deque = deque()
        self._frame_bytes = 0
        self._images_written = 0

    @property
    def num_frames(self) -> int:
        return self._count

    def append(self, image_rgb: np.ndarray, action3, stamp_s: float, event_type: str = "step", *,
               camera_lag: bool = False, command_stale: bool = False, extras: dict | None = None) -> None:
        """Add one frame; EpisodeError for bad input (nothing already written is affected)."""
        if self._closed:
            raise EpisodeError("this episode was already saved or discarded")
        image = self._prepare_image(image_rgb)
        action = np.asarray(action3, dtype=np.float32).reshape(-1)
        if action.shape != (3,) or not np.all(np.isfinite(action)):
            raise EpisodeError(f"an action must be 3 finite numbers [linear_x, linear_y, angular_z], got {action3!r}")
        extra_values = self._check_extras(extras or {})
        if self._h5 is None:
            self._create(image.shape)
        elif image.shape != self._h5["images"].shape[1:]:
            raise EpisodeError(f"frame shape {image.shape} differs from the episode's {self._h5['images'].shape[1:]}")
        index = self._count
        h5 = self._h5
        pixels = image.tobytes()
        self._pending.append(self._compressor.submit(isal_zlib.compress, pixels, self.compression_level))
        for name in _PER_FRAME[1:]:
            h5[name].resize(index + 1, axis=0)
        h5["actions"][index] = action
        h5["action_event_types"][index] = event_type
        h5["timestamps"][index] = float(stamp_s)
        h5["flags/camera_lag"][index] = bool(camera_lag)
        h5["flags/command_stale"][index] = bool(command_stale)
        h5["frame_crc32"][index] = zlib.crc32(pixels)
        for name, value in extra_values.items():
            h5[name].resize(index + 1, axis=0)
            h5[name][index] = value
        self._count += 1
        self._store_compressed(wait=self._pending_full())
        now = time.monotonic()
        if now - self._last_flush >= self.flush_interval_s:
            h5.flush()
            self._last_flush = now

    def _store_compressed(self, wait: bool) -> None:
        """Write finished frames in order; with `wait`, block until the oldest one is done."""
        images = self._h5["images"]
        while self._pending and (wait or self._pending[0].done()):
            chunk = self._pending.popleft().result()
            images.resize(self._images_written + 1, axis=0)
            images.id.write_direct_chunk((self._images_written, 0, 0, 0), chunk)
            self._images_written += 1
            wait = wait and self._pending_full()

    def _pending_full(self) -> bool:
        return len(self._pending) * self._frame_bytes > _MAX_PENDING_BYTES

    def _check_extras(self, extras: dict) -> dict:
        if set(extras) != set(self.extra_columns):
            raise EpisodeError(f"extras {sorted(extras)} differ from the episode's columns {sorted(self.extra_columns)}")
        values = {}
        for name, (shape, dtype) in self.extra_columns.items():
            value = np.asarray(extras[name], dtype=dtype)
            if value.shape != tuple(shape):
                raise EpisodeError(f"extra column {name} takes shape {tuple(shape)}, got {value.shape}")
            values[name] = value
        return values

    def _prepare_image(self, image_rgb) -> np.ndarray:
        image = np.asarray(image_rgb)
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3 or 0 in image.shape:
            raise EpisodeError(f"a frame must be an (H, W, 3) uint8 RGB array, got {image.shape} {image.dtype}")
        if self.image_size and (image.shape[1], image.shape[0]) != self.image_size:
            image = cv2.resize(image, self.image_size, interpolation=cv2.INTER_AREA)
        return image

    def _create(self, frame_shape) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        number = next_episode_number(self.directory)
        while True:
            name = f"episode_{number:04d}_{_local_stamp()}_{_slug(self.instruction)}"
            path = self.directory / f"{name}.h5{PARTIAL_SUFFIX}"
            try:  # "w-": fail rather than replace a file someone else just created
                h5 = h5py.File(path, "w-", libver="latest")
                break
            except (FileExistsError, OSError):
                if not path.exists():
                    raise
                number += 1
        self.partial_path, self._h5 = path, h5
        gzip = {"compression": "gzip", "compression_opts": self.compression_level}
        h5.create_dataset("images", (0, *frame_shape), np.uint8, maxshape=(None, *frame_shape),
                          chunks=(1, *frame_shape), **gzip)
        h5["images"].attrs["encoding"] = "rgb8"
        h5.create_dataset("actions", (0, 3), np.float32, maxshape=(None, 3), chunks=(256, 3), **gzip)
        h5["actions"].attrs["names"] = ",".join(ACTION_NAMES)
        h5.create_dataset("action_event_types", (0,), h5py.string_dtype("utf-8"), maxshape=(None,), chunks=(256,))
        h5.create_dataset("timestamps", (0,), np.float64, maxshape=(None,), chunks=(256,), **gzip)
        for flag in ("camera_lag", "command_stale"):
            h5.create_dataset(f"flags/{flag}", (0,), bool, maxshape=(None,), chunks=(256,))
        h5.create_dataset("frame_crc32", (0,), np.uint32, maxshape=(None,), chunks=(256,))
        for name, (shape, dtype) in self.extra_columns.items():
            h5.create_dataset(name, (0, *shape), dtype, maxshape=(None, *shape), chunks=(256, *shape))
        h5.create_dataset("language_instruction", data=_encode_instruction(self.instruction))
        _set_attrs(h5, {
            **self.attrs,
            "schema_version": SCHEMA_VERSION,
            "sample_rate_hz": self.sample_rate_hz,
            "image_encoding": "rgb8",
            "episode_name": name,
            "collection_datetime": _dt.datetime.now().isoformat(timespec="seconds"),
            "action_names": ",".join(ACTION_NAMES),
            "truncated": False,
        })
        h5.swmr_mode = True  # from here on, a crash leaves a readable file up to the last flush
        self._last_flush = time.monotonic()
        self._frame_bytes = int(np.prod(frame_shape))
        self._compressor = ThreadPoolExecutor(max_workers=max(1, min(4, os.cpu_count() or 1)),
                                              thread_name_prefix="episode-deflate")

    def save(self) -> Path:
        """Finalise and rename to `.h5`; EpisodeError (and no file) when there are no frames."""
        if self._closed:
            raise EpisodeError("this episode was already saved or discarded")
        if self._count == 0:
            self._closed = True
            raise EpisodeError("no frames were recorded; nothing saved")
        while self._pending:
            self._store_compressed(wait=True)
        self._close()
        path, self.quality = _finalise(self.partial_path, False, self.quality_rules)
        return path

    def _close(self) -> None:
        if self._compressor is not None:
            self._compressor.shutdown(wait=True, cancel_futures=True)
        if self._h5 is not None:
            self._h5.close()
        self._h5, self._compressor, self._closed = None, None, True
        self._pending.clear()

    def discard(self) -> None:
        """Drop the episode and its partial file."""
        self._close()
        if self.partial_path is not None and self.partial_path.exists():
            self.partial_path.unlink()


def finalise_partial(partial_path: Path, truncated: bool, rules: QualityRules = QualityRules()) -> Path:
    """Write the summary attributes, idle flags and quality verdicts, then rename `<name>.h5.partial`
    to `<name>.h5`."""
    return _finalise(partial_path, truncated, rules)[0]


def _finalise(partial_path: Path, truncated: bool, rules: QualityRules) -> tuple[Path, EpisodeQuality]:
    final = partial_path.with_name(partial_path.name[: -len(PARTIAL_SUFFIX)])
    with h5py.File(partial_path, "r+") as h5:
        actions = h5["actions"][()]
        idle = idle_mask(actions)
        if "flags/idle" in h5:
            del h5["flags/idle"]
        h5.create_dataset("flags/idle", data=idle)
        stamps = h5["timestamps"][()]
        quality = check_episode(
            actions, _instruction_dataset(h5), float(h5.attrs["sample_rate_hz"]), rules,
            h5["flags/camera_lag"][()], h5["flags/command_stale"][()],
            h5["frame_crc32"][()] if "frame_crc32" in h5 else None,
        )
        _set_attrs(h5, {
            "num_frames": int(len(actions)),
            "total_duration": float(stamps[-1] - stamps[0]) if len(stamps) else 0.0,
            "truncated": bool(truncated),
            "quality": quality.to_json(),
            **_idle_counts(idle),
        })
    _rename_without_replacing(partial_path, final)
    return final, quality


def _rename_without_replacing(source: Path, target: Path) -> None:
    try:
        os.link(source, target)  # atomic, and fails if the target exists
    except FileExistsError as error:
        raise EpisodeError(f"{target} already exists; the recording stays in {source}") from error
    except OSError:  # file systems without hard links
        if target.exists():
            raise EpisodeError(f"{target} already exists; the recording stays in {source}")
        os.rename(source, target)
        return
    source.unlink()


def recover_partial_episodes(directory, rules: QualityRules = QualityRules()) -> list[Path]:
    """Turn `*.h5.partial` files left by a crash into episodes flagged `truncated`.

    Keeps every frame that was flushed before the crash. A partial file with no complete frame is
    removed; one that cannot be opened at all is left in place and logged.
    """
    recovered = []
    directory = Path(directory)
    if not directory.is_dir():
        return recovered
    for partial in sorted(directory.glob(f"*.h5{PARTIAL_SUFFIX}")):
        try:
            frames = _rewrite_flushed_frames(partial)
        except (OSError, KeyError, ValueError) as error:
            LOG.error("cannot recover %s (left in place): %s", partial, error)
            continue
        if frames == 0:
            LOG.warning("removing %s: the crash happened before any frame was flushed", partial)
            partial.unlink()
            continue
        recovered.append(finalise_partial(partial, truncated=True, rules=rules))
        LOG.warning("recovered %d frames from %s into %s (flagged truncated)", frames, partial.name, recovered[-1].name)
    return recovered


def _extra_column_names(attrs) -> tuple[str, ...]:
    names = attrs.get(EXTRA_COLUMNS_ATTR, "")
    names = names.decode() if isinstance(names, bytes) else str(names)
    return tuple(name for name in names.split(",") if name)


def _rewrite_flushed_frames(partial: Path) -> int:
    """Copy a crashed SWMR file into a clean one of the same name; returns the complete frames."""
    clean = partial.with_name(partial.name + ".recovering")
    with h5py.File(partial, "r", swmr=True) as source, h5py.File(clean, "w", libver="latest") as target:
        # schema 1 has no frame_crc32
        per_frame = tuple(name for name in _PER_FRAME if name in source) + _extra_column_names(source.attrs)
        frames = min(source[name].shape[0] for name in per_frame)
        for key, value in source.attrs.items():
            target.attrs[key] = value
        for name in per_frame + ("language_instruction",):
            dataset = source[name]
            rows = frames if name in per_frame else dataset.shape[0]
            copy = target.create_dataset(name, (rows, *dataset.shape[1:]), dataset.dtype,
                                         maxshape=dataset.maxshape, chunks=dataset.chunks,
                                         compression=dataset.compression, compression_opts=dataset.compression_opts)
            for key, value in dataset.attrs.items():
                copy.attrs[key] = value
            for start in range(0, rows, 16):
                copy[start : start + 16] = dataset[start : min(rows, start + 16)]
    os.replace(clean, partial)
    return frames


# ------------------------------------------------------------------------------ lab legacy layout


def write_legacy_episode(path, images_bgr: np.ndarray, actions: np.ndarray, instruction: str | None = None,
                         event_types: Sequence[str] | None = None, **attrs) -> Path:
    """Write a file in the lab's layout (BGR images, no timestamps; instruction optional).

    For tests of the legacy reader and of training on the lab's data.
    """
    path = Path(path)
    images_bgr = np.asarray(images_bgr, dtype=np.uint8)
    actions = np.asarray(actions, dtype=np.float32)
    _check_shapes(path, images_bgr, actions)
    count = len(actions)
    if event_types is None:
        event_types = ["episode_start"] + ["start_action"] * (count - 1)
    gzip = {"compression": "gzip", "compression_opts": 4}
    with h5py.File(path, "w") as h5:
        h5.create_dataset("images", data=images_bgr, chunks=(1, *images_bgr.shape[1:]), **gzip)
        h5.create_dataset("actions", data=actions, **gzip)
        h5.create_dataset("action_event_types", data=np.array(list(event_types), dtype=object),
                          dtype=h5py.string_dtype("utf-8"))
        if instruction is not None:
            h5.create_dataset("language_instruction", data=_encode_instruction(instruction))
        _set_attrs(h5, {"episode_name": path.stem, "num_frames": count, "total_duration": 0.4 * count,
                        "action_chunk_size": 8, **attrs})
    return path

"""Reading episodes: this package's files and the lab's legacy ones, through one `read_episode`.

The layout is in data/episode_schema.py; the lab's layout in data/legacy_episode.py.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from pathlib import Path

import h5py
import numpy as np

from mobile_vla_ros.data.episode_schema import (
    PARTIAL_SUFFIX,
    Episode,
    check_shapes,
    extra_column_names,
    instruction_dataset,
    load_images,
    read_attrs,
    strings,
)
from mobile_vla_ros.data.legacy_episode import read_legacy
from mobile_vla_ros.errors import EpisodeError


def list_episodes(directory) -> list[Path]:
    """Finished episodes (`*.h5`) under `directory`, sorted; unfinished `.partial` files excluded.
    An episode file stands for itself, so every `--data` takes a file as well as a directory."""
    root = Path(directory)
    if root.is_file() and root.suffix == ".h5":
        return [root]
    if not root.is_dir():
        raise EpisodeError(f"{root} is neither a directory nor an episode .h5 file")
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
            return read_legacy(h5, path, frame_indices)
    except EpisodeError:
        raise
    except (OSError, KeyError, ValueError, TypeError) as error:
        raise EpisodeError(f"cannot read episode {path}: {error}") from error


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
            return (
                f"oversized chunks: reading one frame would decompress {chunk_bytes / 2**20:.0f} MiB "
                f"(limit {max_chunk_bytes / 2**20:.0f} MiB)"
            )
        expected = int(np.prod([-(-size // chunk) for size, chunk in zip(images.shape, images.chunks)]))
        stored = images.id.get_num_chunks()
        if stored < expected:
            return f"frames missing: {images.shape[0]} frames declared, data stored for {stored} of {expected} chunks"
    return None


def content_digest(path) -> bytes:
    """SHA-256 of what training reads from one episode file, without reading its frames when it
    can: the frames by their stored CRC-32s (schema 2), every other dataset and attribute in full.
    A 600-frame 720p episode is ~1 GB of compressed frames; its digest then reads a few kB. Files
    without frame checksums (the lab's, schema 1) are hashed byte for byte."""
    digest = hashlib.sha256()
    with h5py.File(path, "r") as h5:
        if "frame_crc32" in h5:
            digest.update(repr(sorted((key, repr(value)) for key, value in h5.attrs.items())).encode())

            def add(name, item):
                if isinstance(item, h5py.Dataset) and name != "images":
                    values = np.asarray(item[()])
                    # Strings are objects: their bytes would be pointers, their repr is the content.
                    data = repr(values.tolist()).encode() if values.dtype.kind == "O" else values.tobytes()
                    digest.update(name.encode() + b"\0" + data)

            h5.visititems(add)
            return digest.digest()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.digest()


def _read_current(h5, path: Path, frame_indices) -> Episode:
    images_ds, actions = h5["images"], h5["actions"][()].astype(np.float32)
    check_shapes(path, images_ds, actions)
    count = actions.shape[0]
    attrs = read_attrs(h5)
    flags = {name: h5[f"flags/{name}"][()].astype(bool) for name in ("camera_lag", "command_stale", "idle")}
    flags.update(
        truncated=bool(attrs.get("truncated", False)),
        idle_start_frames=int(attrs.get("idle_start_frames", 0)),
        idle_end_frames=int(attrs.get("idle_end_frames", 0)),
    )
    if attrs.get("image_encoding", "rgb8") != "rgb8":
        raise EpisodeError(f"{path}: unsupported image_encoding {attrs.get('image_encoding')!r}")
    return Episode(
        images=load_images(images_ds, frame_indices),
        actions=actions,
        instruction=instruction_dataset(h5) or "",
        timestamps=h5["timestamps"][()].astype(np.float64),
        sample_rate_hz=float(attrs["sample_rate_hz"]),
        event_types=strings(h5["action_event_types"]) if "action_event_types" in h5 else ["step"] * count,
        flags=flags,
        attrs=attrs,
        extras={name: h5[name][()] for name in extra_column_names(attrs)},
        path=str(path),
        legacy=False,
        frame_digests=h5["frame_crc32"][()].astype(np.uint32) if "frame_crc32" in h5 else None,
    )

"""The lab's legacy layout (DESIGN.md section 2): BGR images, no timestamps, the instruction
optionally only in the file name. Read through data.episode.read_episode; written here for tests.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

import h5py
import numpy as np

from mobile_vla_ros.data.episode_schema import (
    Episode,
    check_shapes,
    encode_instruction,
    idle_counts,
    idle_mask,
    instruction_dataset,
    load_images,
    read_attrs,
    set_attrs,
    strings,
)
from mobile_vla_ros.errors import EpisodeError
from mobile_vla_ros.policy.instructions import LAB_INSTRUCTIONS, instruction_side


def instruction_from_file_name(path) -> str | None:
    """The lab's convention for files recorded before `language_instruction` existed."""
    side = instruction_side(" ".join(re.split(r"[^a-z]+", Path(path).stem.lower())))
    return LAB_INSTRUCTIONS[side] if side else None


def read_legacy(h5, path: Path, frame_indices) -> Episode:
    images_ds, actions = h5["images"], h5["actions"][()].astype(np.float32)
    check_shapes(path, images_ds, actions)
    instruction = instruction_dataset(h5) or instruction_from_file_name(path)
    if instruction is None:
        raise EpisodeError(
            f"{path}: no language_instruction dataset and the file name names neither 'left' nor 'right'"
        )
    images_bgr = load_images(images_ds, frame_indices)
    count = actions.shape[0]
    idle = idle_mask(actions)
    return Episode(
        images=np.ascontiguousarray(images_bgr[..., ::-1]),  # the lab stored cv_bridge bgr8 arrays
        actions=actions,
        instruction=instruction,
        timestamps=None,
        sample_rate_hz=None,
        event_types=strings(h5["action_event_types"]) if "action_event_types" in h5 else ["step"] * count,
        flags={
            "truncated": False,
            "camera_lag": np.zeros(count, bool),
            "command_stale": np.zeros(count, bool),
            "idle": idle,
            **idle_counts(idle),
        },
        attrs=read_attrs(h5),
        path=str(path),
        legacy=True,
    )


def write_legacy_episode(
    path,
    images_bgr: np.ndarray,
    actions: np.ndarray,
    instruction: str | None = None,
    event_types: Sequence[str] | None = None,
    **attrs,
) -> Path:
    """Write a file in the lab's layout (BGR images, no timestamps; instruction optional).

    For tests of the legacy reader and of training on the lab's data.
    """
    path = Path(path)
    images_bgr = np.asarray(images_bgr, dtype=np.uint8)
    actions = np.asarray(actions, dtype=np.float32)
    check_shapes(path, images_bgr, actions)
    count = len(actions)
    if event_types is None:
        event_types = ["episode_start"] + ["start_action"] * (count - 1)
    gzip = {"compression": "gzip", "compression_opts": 4}
    with h5py.File(path, "w") as h5:
        h5.create_dataset("images", data=images_bgr, chunks=(1, *images_bgr.shape[1:]), **gzip)
        h5.create_dataset("actions", data=actions, **gzip)
        h5.create_dataset(
            "action_event_types", data=np.array(list(event_types), dtype=object), dtype=h5py.string_dtype("utf-8")
        )
        if instruction is not None:
            h5.create_dataset("language_instruction", data=encode_instruction(instruction))
        set_attrs(
            h5,
            {
                "episode_name": path.stem,
                "num_frames": count,
                "total_duration": 0.4 * count,
                "action_chunk_size": 8,
                **attrs,
            },
        )
    return path

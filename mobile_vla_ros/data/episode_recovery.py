"""Recovery after a crash: `*.h5.partial` files become episodes flagged `truncated`, keeping every
frame that was flushed (the writer flushes at least once a second, in HDF5 SWMR mode).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import h5py

from mobile_vla_ros.data.episode_schema import PARTIAL_SUFFIX, PER_FRAME, extra_column_names
from mobile_vla_ros.data.episode_writer import finalise_partial
from mobile_vla_ros.data.quality import QualityRules

LOG = logging.getLogger(__name__)


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


def _rewrite_flushed_frames(partial: Path) -> int:
    """Copy a crashed SWMR file into a clean one of the same name; returns the complete frames."""
    clean = partial.with_name(partial.name + ".recovering")
    with h5py.File(partial, "r", swmr=True) as source, h5py.File(clean, "w", libver="latest") as target:
        # schema 1 has no frame_crc32
        per_frame = tuple(name for name in PER_FRAME if name in source) + extra_column_names(source.attrs)
        frames = min(source[name].shape[0] for name in per_frame)
        for key, value in source.attrs.items():
            target.attrs[key] = value
        for name in per_frame + ("language_instruction",):
            dataset = source[name]
            rows = frames if name in per_frame else dataset.shape[0]
            copy = target.create_dataset(
                name,
                (rows, *dataset.shape[1:]),
                dataset.dtype,
                maxshape=dataset.maxshape,
                chunks=dataset.chunks,
                compression=dataset.compression,
                compression_opts=dataset.compression_opts,
            )
            for key, value in dataset.attrs.items():
                copy.attrs[key] = value
            for start in range(0, rows, 16):
                copy[start : start + 16] = dataset[start : min(rows, start + 16)]
    os.replace(clean, partial)
    return frames

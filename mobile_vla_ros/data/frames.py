"""Episode frames at model size, read from the episode file only when a window needs them.

Training memory is bounded by the window, not the episode: a 600-frame 720p episode is 1.7 GB
decoded, so frames stay on disk (one gzip chunk per frame) and `EpisodeFrames[a:b]` reads,
decodes and resizes just frames a..b-1. Resized frames are kept in a `FrameCache` shared by all
episodes up to a byte budget (least recently used go first), so later epochs mostly skip the
decoding while the memory stays capped.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from pathlib import Path

import numpy as np

from mobile_vla_ros.data.episode import read_frames
from mobile_vla_ros.data.images import resize_for_model


class FrameCache:
    """Least-recently-used resized frames, keyed by (file, frame), within `budget_bytes`."""

    def __init__(self, budget_bytes: int):
        self.budget_bytes = int(budget_bytes)
        self.bytes = 0
        self.hits = self.misses = 0
        self._frames: OrderedDict = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key) -> np.ndarray | None:
        with self._lock:
            frame = self._frames.get(key)
            if frame is None:
                self.misses += 1
                return None
            self._frames.move_to_end(key)
            self.hits += 1
            return frame

    def put(self, key, frame: np.ndarray) -> None:
        if frame.nbytes > self.budget_bytes:
            return
        with self._lock:
            if key in self._frames:
                return
            self._frames[key] = frame
            self.bytes += frame.nbytes
            while self.bytes > self.budget_bytes:
                _, old = self._frames.popitem(last=False)
                self.bytes -= old.nbytes

    def __getstate__(self):  # a DataLoader worker starts with an empty cache of the same budget
        return {"budget_bytes": self.budget_bytes}

    def __setstate__(self, state):
        self.__init__(state["budget_bytes"])


class EpisodeFrames:
    """Read-only (T, S, S, 3) uint8 RGB view of an episode file's frames at model size.

    Indexing along the first axis (an int, a slice, or an array of indices; further axes are
    applied to the result) reads only those frames. `mirror()` is the left/right flipped view.
    """

    def __init__(self, path, count: int, image_size: int, cache: FrameCache, mirrored: bool = False):
        self.path, self.count, self.image_size = str(Path(path)), int(count), int(image_size)
        self.cache, self.mirrored = cache, mirrored

    @property
    def shape(self) -> tuple[int, int, int, int]:
        return (self.count, self.image_size, self.image_size, 3)

    dtype = np.dtype(np.uint8)

    def __len__(self) -> int:
        return self.count

    def mirror(self) -> EpisodeFrames:
        return EpisodeFrames(self.path, self.count, self.image_size, self.cache, not self.mirrored)

    def __getitem__(self, key) -> np.ndarray:
        rest = ()
        if isinstance(key, tuple):
            key, rest = key[0], key[1:]
        if isinstance(key, slice):
            indices = np.arange(self.count)[key]
        else:
            indices = np.arange(self.count)[np.asarray(key)]
        frames = self._read(np.atleast_1d(indices))
        if np.ndim(indices) == 0:
            return frames[0][rest] if rest else frames[0]
        return frames[(slice(None), *rest)] if rest else frames

    def _read(self, indices: np.ndarray) -> np.ndarray:
        out = np.empty((len(indices), self.image_size, self.image_size, 3), np.uint8)
        missing = []
        for row, index in enumerate(indices.tolist()):
            cached = self.cache.get((self.path, index))
            if cached is None:
                missing.append((row, index))
            else:
                out[row] = cached
        if missing:
            wanted = sorted({index for _, index in missing})
            decoded = dict(
                zip(wanted, read_frames(self.path, wanted, lambda image: resize_for_model(image, self.image_size)))
            )
            for row, index in missing:
                out[row] = decoded[index]
                self.cache.put((self.path, index), decoded[index])
        return np.ascontiguousarray(out[:, :, ::-1]) if self.mirrored else out

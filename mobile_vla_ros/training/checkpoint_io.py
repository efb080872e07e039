"""Lightning resume checkpoints without pickle: one safetensors file per checkpoint.

Lightning's own `.ckpt` files are `torch.save` pickles, and the project loads no pickle anywhere.
This CheckpointIO plugin stores the same checkpoint dictionary (trainable weights, optimizer
state, loop progress, callback state, RNG states) as a safetensors file: every tensor is a
safetensors entry, and the structure around them (dicts, lists, tuples, numbers, strings) is
JSON in the file's metadata. Loading parses JSON and reads tensors; no code can run. A value that
is neither raises CheckpointError at save time instead of being pickled.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from lightning.fabric.plugins.io.checkpoint_io import CheckpointIO
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from mobile_vla_ros.errors import CheckpointError

STRUCTURE_KEY = "lightning_checkpoint"


def _encode(value: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, torch.Tensor):
        name = f"t{len(tensors)}"
        tensors[name] = value.detach().cpu().clone().contiguous()
        return {"__tensor__": name}
    if isinstance(value, np.ndarray):
        return {"__ndarray__": _encode(torch.from_numpy(np.ascontiguousarray(value)), tensors)["__tensor__"]}
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, tuple):
        return {"__tuple__": [_encode(item, tensors) for item in value]}
    if isinstance(value, list):
        return [_encode(item, tensors) for item in value]
    if isinstance(value, dict):
        return {"__dict__": [[_encode(key, tensors), _encode(item, tensors)] for key, item in value.items()]}
    raise CheckpointError(f"cannot store a {type(value).__name__} in a safetensors checkpoint: {value!r:.80}")


def _decode(value: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(value, list):
        return [_decode(item, tensors) for item in value]
    if not isinstance(value, dict):
        return value
    if "__tensor__" in value:
        return tensors[value["__tensor__"]]
    if "__ndarray__" in value:
        return tensors[value["__ndarray__"]].numpy()
    if "__tuple__" in value:
        return tuple(_decode(item, tensors) for item in value["__tuple__"])
    return {_decode(key, tensors): _decode(item, tensors) for key, item in value["__dict__"]}


def save_checkpoint_file(checkpoint: dict, path: str | Path) -> None:
    tensors: dict[str, torch.Tensor] = {}
    structure = json.dumps(_encode(checkpoint, tensors))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".tmp")
    save_file(tensors, str(partial), metadata={STRUCTURE_KEY: structure})
    os.replace(partial, path)  # a crash while saving never leaves a half-written checkpoint


def load_checkpoint_file(path: str | Path, map_location: Any = None) -> dict:
    device = map_location if isinstance(map_location, (str, torch.device)) else "cpu"
    try:
        with safe_open(str(path), framework="pt", device=str(device)) as handle:
            metadata = handle.metadata() or {}
            tensors = {name: handle.get_tensor(name) for name in handle.keys()}
    except (SafetensorError, OSError) as error:
        raise CheckpointError(f"cannot read training checkpoint {path}: {error}") from error
    if STRUCTURE_KEY not in metadata:
        raise CheckpointError(f"{path} is a safetensors file but not a mobile-vla training checkpoint")
    return _decode(json.loads(metadata[STRUCTURE_KEY]), tensors)


class SafetensorsCheckpointIO(CheckpointIO):
    """Plug into `Trainer(plugins=[SafetensorsCheckpointIO()])`."""

    def save_checkpoint(self, checkpoint: dict, path, storage_options=None) -> None:
        save_checkpoint_file(checkpoint, path)

    def load_checkpoint(self, path, map_location=None, weights_only=None) -> dict:
        return load_checkpoint_file(path, map_location)

    def remove_checkpoint(self, path) -> None:
        Path(path).unlink(missing_ok=True)

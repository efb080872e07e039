"""Reading a RoboVLMs checkpoint without running its pickle's code.

The checkpoint is a pickle, and unpickling runs whatever callables it names. It is never given to
plain `pickle`: its opcodes are first scanned for the Python globals they name (nothing runs), a
file naming anything outside torch's weights-only set plus ALLOWED_GLOBALS is refused, and the load
itself is torch's weights-only unpickler with the same allow-list, memory-mapped so that weights
are paged in from disk instead of copied into memory.
"""

from __future__ import annotations

import argparse
import hashlib
import pathlib
import pickle
import zipfile
from dataclasses import dataclass
from pathlib import Path

import torch

from mobile_vla_ros.errors import RobovlmsImportError, UnsafeCheckpointError

_HASH_BLOCK = 16 * 1024**2

# Globals the checkpoint may name beyond torch's weights-only set (tensors, storages, dtypes,
# plain containers, numbers, strings). Inert value objects a training script may leave in
# Lightning's `hyper_parameters`; constructing them runs no user code.
ALLOWED_GLOBALS = {
    "argparse.Namespace": argparse.Namespace,
    "pathlib.PosixPath": pathlib.PosixPath,
}

# Lightning's top-level entries that describe the run (recorded); the others are ignored.
_LIGHTNING_RUN_ENTRIES = ("pytorch-lightning_version", "epoch", "global_step")


@dataclass
class SourceCheckpoint:
    path: Path
    state_dict: dict[str, torch.Tensor]
    entries: list[str]  # top-level entries of the file
    run: dict  # Lightning's version / epoch / global step, when present

    @property
    def kind(self) -> str:
        return "PyTorch Lightning checkpoint" if "state_dict" in self.entries else "state dict"


def refuse_unsafe_globals(path: Path) -> None:
    """Scan the pickle's opcodes (executes nothing) and refuse globals outside the allow-list."""
    if not path.is_file():
        raise RobovlmsImportError(f"checkpoint {path} does not exist")
    if not zipfile.is_zipfile(path):
        raise UnsafeCheckpointError(
            f"refused {path}: it is not a torch.save zip archive. Raw pickles and pre-1.6 torch files "
            "can only be read by running pickle, which can execute code; nothing was loaded"
        )
    try:
        named = torch.serialization.get_unsafe_globals_in_checkpoint(str(path))
    except (ValueError, RuntimeError, pickle.UnpicklingError, zipfile.BadZipFile) as error:
        raise RobovlmsImportError(f"cannot read {path}: {error}") from error
    refused = sorted(set(named) - set(ALLOWED_GLOBALS))
    if refused:
        raise UnsafeCheckpointError(
            f"refused {path}: it names Python objects outside the allow-list ({', '.join(refused)}); "
            "unpickling them could run arbitrary code, so nothing was loaded. A RoboVLMs checkpoint "
            "holds only tensors and plain data; get the file from its published source"
        )


def read_checkpoint(path: str | Path) -> SourceCheckpoint:
    """Safely load a Lightning checkpoint (or a bare state dict), memory-mapped."""
    path = Path(path)
    refuse_unsafe_globals(path)
    allowed = [(value, name) for name, value in ALLOWED_GLOBALS.items()]
    try:
        with torch.serialization.safe_globals(allowed):
            loaded = torch.load(str(path), map_location="cpu", weights_only=True, mmap=True)
    except pickle.UnpicklingError as error:  # the scan missed something; the unpickler did not
        reason = next(
            (line.strip() for line in str(error).splitlines() if "GLOBAL" in line), "an object outside the allow-list"
        )
        raise UnsafeCheckpointError(f"refused {path}: {reason}; nothing was loaded") from error
    except (RuntimeError, ValueError, OSError) as error:
        raise RobovlmsImportError(f"cannot read {path}: {error}") from error
    if not isinstance(loaded, dict):
        raise RobovlmsImportError(f"{path} holds a {type(loaded).__name__}, not a checkpoint dictionary")
    if isinstance(loaded.get("state_dict"), dict):
        state, run = loaded["state_dict"], {key: loaded[key] for key in _LIGHTNING_RUN_ENTRIES if key in loaded}
    elif loaded and all(isinstance(value, torch.Tensor) for value in loaded.values()):
        state, run = loaded, {}
    else:
        raise RobovlmsImportError(
            f"{path} is neither a Lightning checkpoint (no 'state_dict' entry) nor a state dict of tensors; "
            f"its entries: {', '.join(map(str, list(loaded)[:12]))}"
        )
    not_tensors = [key for key, value in state.items() if not isinstance(value, torch.Tensor)]
    if not_tensors:
        raise RobovlmsImportError(f"{path}: state_dict entries that are not tensors: {not_tensors[:5]}")
    return SourceCheckpoint(path, dict(state), sorted(map(str, loaded)), run)


def sha256_file(path: Path) -> str:
    from tqdm import tqdm

    digest = hashlib.sha256()
    with (
        open(path, "rb") as handle,
        tqdm(total=path.stat().st_size, unit="B", unit_scale=True, desc="sha256", leave=False) as bar,
    ):
        while block := handle.read(_HASH_BLOCK):
            digest.update(block)
            bar.update(len(block))
    return digest.hexdigest()

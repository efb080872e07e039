"""The demo's stage cache and stage timer.

The demo has four cached stages (tiny base model, expert episodes, trained policy) and one that
always runs (closed-loop trials). Each cached stage writes a small JSON stamp into its directory
describing exactly what produced it; a later run reuses the directory only when the stamp equals
what it would produce now, so changing `--episodes` re-records, a new base model retrains, and an
interrupted stage (no stamp) is redone from scratch.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

from mobile_vla_ros.errors import MobileVlaError

STAMP_FILE = "demo-stage.json"


class DemoError(MobileVlaError):
    """A demo directory or setting that cannot be used."""


def read_stamp(directory: str | Path) -> dict | None:
    path = Path(directory) / STAMP_FILE
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None


def stage_is_current(directory: str | Path, key: dict) -> bool:
    """True when `directory` was completed by a stage with exactly this key."""
    return read_stamp(directory) == _jsonable(key)


def mark_stage_done(directory: str | Path, key: dict) -> None:
    """Written last, so a stage that was interrupted leaves no stamp."""
    path = Path(directory) / STAMP_FILE
    path.write_text(json.dumps(_jsonable(key), indent=2, sort_keys=True) + "\n")


def clear_stage(directory: str | Path) -> None:
    """Empty a stage directory before redoing it; refuses a non-empty one the demo did not create."""
    directory = Path(directory)
    if not directory.exists():
        return
    if not directory.is_dir():
        raise DemoError(f"{directory} is a file; the demo needs it as a directory")
    if any(directory.iterdir()) and not (directory / STAMP_FILE).exists() and not (directory / ".demo-owned").exists():
        raise DemoError(f"{directory} holds files the demo did not write; move them away or choose another --workdir")
    shutil.rmtree(directory)


def claim_stage(directory: str | Path) -> Path:
    """Create a fresh stage directory, marked as the demo's even before the stage completes."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / ".demo-owned").touch()
    return directory


def _jsonable(value):
    return json.loads(json.dumps(value, sort_keys=True))


def is_current(directory: Path, key: dict, fresh: bool) -> bool:
    return not fresh and stage_is_current(directory, key)


def redo(directory: Path) -> Path:
    clear_stage(directory)
    return claim_stage(directory)


class Stages:
    """Times each stage and prints one readable line when it starts and ends."""

    def __init__(self, count: int):
        self.count = count
        self.records: dict[str, dict] = {}
        self.started = time.monotonic()

    def run(self, number: int, name: str, cached: bool, work):
        print(f"[{number}/{self.count}] {name}: {'cached, skipping' if cached else 'running'}", flush=True)
        started = time.monotonic()
        result = None if cached else work()
        seconds = time.monotonic() - started
        self.records[name] = {"seconds": round(seconds, 1), "cached": cached}
        if not cached:
            print(f"[{number}/{self.count}] {name}: done in {seconds:.0f} s", flush=True)
        return result

    @property
    def total_seconds(self) -> float:
        return time.monotonic() - self.started


def format_durations(records: dict[str, dict]) -> str:
    """One line for a report from `Stages.records`: each stage's time, cached ones marked."""
    return ", ".join(
        f"{name} {record['seconds']:.0f} s{' (cached)' if record['cached'] else ''}" for name, record in records.items()
    )

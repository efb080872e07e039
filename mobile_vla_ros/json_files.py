"""JSON files the package reads back (a base model's settings, a training run's record): a damaged
one is an error that names the file and what follows from it, not a JSONDecodeError traceback."""

from __future__ import annotations

import json
from pathlib import Path


def read_json_object(path: Path, error: type[Exception], consequence: str) -> dict:
    """The JSON object in `path`, else `error("<path> is not a JSON object (...): <consequence>")`."""
    try:
        data = json.loads(Path(path).read_bytes())
    except json.JSONDecodeError as problem:
        raise error(f"{path} is not a JSON object ({problem}): {consequence}") from problem
    if not isinstance(data, dict):
        raise error(f"{path} is not a JSON object (a {type(data).__name__}): {consequence}")
    return data

"""The house rules hold: ruff (lint and format) is clean and the layers import only downwards
(.importlinter). Run by `make test`, so CI fails on a new violation."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
SOURCES = ["mobile_vla_ros", "test", "launch", "scripts"]


def tool(name: str) -> str:
    path = BIN / name
    if not path.exists():
        pytest.fail(f"{name} is part of requirements-test.txt; run make setup")
    return str(path)


def run(*command, cwd=REPO) -> subprocess.CompletedProcess:
    """`cwd` first on the import path: lint-imports analyses the package found there."""
    env = {**os.environ, "PYTHONPATH": str(cwd)}
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def test_ruff_lint_is_clean():
    result = run(tool("ruff"), "check", *SOURCES)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]


def test_ruff_format_is_clean():
    result = run(tool("ruff"), "format", "--check", *SOURCES)
    assert result.returncode == 0, "run `ruff format`:\n" + result.stdout[-4000:]


def test_import_contracts_are_kept():
    result = run(tool("lint-imports"))
    assert result.returncode == 0, result.stdout[-4000:]
    assert "0 broken" in result.stdout


def test_an_import_up_the_layers_is_caught(tmp_path):
    """What CI does with a violation: a policy module that imports the data layer and rclpy."""
    copy = tmp_path / "repo"
    shutil.copytree(REPO / "mobile_vla_ros", copy / "mobile_vla_ros")
    shutil.copy(REPO / ".importlinter", copy / ".importlinter")
    (copy / "mobile_vla_ros" / "policy" / "shortcut.py").write_text(
        "import rclpy\n\nfrom mobile_vla_ros.data.episode import read_episode\n"
    )
    result = run(tool("lint-imports"), cwd=copy)
    assert result.returncode != 0
    assert "mobile_vla_ros.policy.shortcut -> mobile_vla_ros.data.episode" in result.stdout
    assert "mobile_vla_ros.policy.shortcut -> rclpy" in result.stdout


def test_instructions_are_normalised_in_one_place():
    """One spelling of an instruction (policy.instructions.normalize_instruction): a second
    whitespace rule would let the node, the runner and training disagree on which prompt is trained."""
    pattern = re.compile(r'" "\.join\(.*\.split\(\)\)')
    elsewhere = [
        path.relative_to(REPO).as_posix()
        for path in (REPO / "mobile_vla_ros").rglob("*.py")
        if pattern.search(path.read_text()) and path.name != "instructions.py"
    ]
    assert not elsewhere, elsewhere


MAX_FILE_LINES = 400


def test_no_source_file_is_longer_than_the_house_limit():
    """Files by job: a module past 400 lines is doing two jobs (issue 27)."""
    long_files = {
        path.relative_to(REPO).as_posix(): length
        for folder in ("mobile_vla_ros", "launch", "scripts")
        for path in (REPO / folder).rglob("*")
        if path.suffix in (".py", ".sh") and (length := len(path.read_text().splitlines())) > MAX_FILE_LINES
    }
    assert not long_files, f"over {MAX_FILE_LINES} lines: {long_files}"

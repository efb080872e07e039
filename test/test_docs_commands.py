"""Every shell command in README.md, docs/*.md and models/README.md names things that exist: the
`mobile-vla` sub-commands and their flags, the launch files and their arguments, the executables of
`ros2 run`, make targets, modules of `python -m` and the repository's files.

Every block that can run on this machine runs, in document order, in a scratch workspace whose
user paths hold stand-ins: `~/mobile_vla_data` and the other episode directories synthetic
episodes, `~/bags/*` rosbag2 recordings written here, `models/kosmos-2-patch14-224` the tiny
Kosmos-2. The one change to a command: `mobile-vla train` gets `--max-steps 2` last (the argument
that counts). A block that cannot run here says why in its fence, after the language:
`robot` (a robot, its camera or gamepad, or a ROS install on it), `network` (a download), `gpu`,
`benchmark` (runs here for minutes: a measurement, not a test; docs/performance.md), or
`tested-by=PATH` (a test runs it with the real tools, placeholders filled in)."""

from __future__ import annotations

import importlib.util
import os
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import pytest

from mobile_vla_ros.cli.main import build_parser

REPO = Path(__file__).resolve().parents[1]
DOCUMENTS = [REPO / "README.md", REPO / "models" / "README.md", *sorted((REPO / "docs").glob("*.md"))]
FENCE = re.compile(r"^```(?:bash|sh|shell)([^\n]*)\n(.*?)^```", re.MULTILINE | re.DOTALL)
NOT_HERE = {"robot", "network", "gpu", "benchmark"}
REPO_PATH = re.compile(r"^(?:src/mobile_vla_ros/)?((?:config|launch|scripts|docs|test)/[\w./-]+\.\w+)$")
PYTHONS = {"python", "python3", ".venv/bin/python"}


@dataclass(frozen=True)
class Command:
    where: str
    words: tuple[str, ...]
    tags: tuple[str, ...] = ()

    def __str__(self) -> str:
        return f"{self.where}: {' '.join(self.words)}"


def commands() -> list[Command]:
    found = []
    for document in DOCUMENTS:
        text = document.read_text()
        for block in FENCE.finditer(text):
            line = text[: block.start()].count("\n") + 2
            tags = tuple(block.group(1).split())
            joined = block.group(2).replace("\\\n", " ")
            for offset, source in enumerate(joined.splitlines()):
                for words in split_commands(source):
                    found.append(Command(f"{document.relative_to(REPO)}:{line + offset}", words, tags))
    return found


def split_commands(source: str) -> list[tuple[str, ...]]:
    """The simple commands of one shell line (split at &&, ||, ;, |), comments dropped."""
    lexer = shlex.shlex(source, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    pieces: list[list[str]] = [[]]
    for token in lexer:
        if token in {"&&", "||", ";", "|", "&"}:
            pieces.append([])
        elif not set(token) <= set("()<>"):
            pieces[-1].append(token.strip("[]"))
    return [tuple(piece) for piece in pieces if piece]


def mobile_vla_words(words: tuple[str, ...]) -> tuple[str, ...] | None:
    """The arguments after `mobile-vla`, however it is started."""
    for index, word in enumerate(words):
        if Path(word).name == "mobile-vla":
            return words[index + 1 :]
    return None


@cache
def subcommands() -> dict:
    parser = build_parser()
    return next(action for action in parser._actions if action.dest == "command").choices


@cache
def launch_arguments(launch_file: str) -> set[str]:
    spec = importlib.util.spec_from_file_location(launch_file.replace(".", "_"), REPO / "launch" / launch_file)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return {row.name for row in module.ARGUMENTS}


def make_targets() -> set[str]:
    return set(re.findall(r"^([a-z][\w-]*):", (REPO / "Makefile").read_text(), flags=re.MULTILINE))


def problems(command: Command) -> list[str]:
    words, found = command.words, []
    arguments = mobile_vla_words(words)
    if arguments is not None:
        if not arguments or arguments[0].startswith("-"):
            return found
        name, flags = arguments[0], [word.split("=")[0] for word in arguments[1:] if word.startswith("--")]
        parser = subcommands().get(name)
        if parser is None:
            return [f"no sub-command {name}"]
        found += [f"{name} has no flag {flag}" for flag in flags if flag not in parser._option_string_actions]
    elif words[:3] == ("ros2", "launch", "mobile_vla_ros"):
        launch_file = words[3]
        if not (REPO / "launch" / launch_file).is_file():
            return [f"no launch file {launch_file}"]
        known = launch_arguments(launch_file)
        given = [word.split(":=")[0] for word in words[4:] if ":=" in word]
        found += [f"{launch_file} has no argument {name}" for name in given if name not in known]
    elif words[:3] == ("ros2", "run", "mobile_vla_ros"):
        if not re.search(rf'"{re.escape(words[3])}"', (REPO / "setup.py").read_text()):
            found.append(f"no executable {words[3]}")
    elif words[0] == "make" and len(words) > 1:
        found += [f"no make target {target}" for target in words[1:] if target not in make_targets()]
    elif words[0] in PYTHONS and len(words) > 2 and words[1] == "-m" and words[2].startswith("mobile_vla_ros"):
        if importlib.util.find_spec(words[2]) is None:
            found.append(f"no module {words[2]}")
    for word in words:
        path = REPO_PATH.match(word)
        if path and "<" not in word and not (REPO / path.group(1)).exists():
            found.append(f"no file {path.group(1)}")
    return found


def test_the_documents_hold_commands_to_check():
    found = commands()
    assert sum(mobile_vla_words(c.words) is not None for c in found) >= 20
    assert sum(c.words[:2] == ("ros2", "launch") for c in found) >= 5


@pytest.mark.parametrize("document", [path.relative_to(REPO).as_posix() for path in DOCUMENTS])
def test_every_command_names_what_exists(document):
    wrong = [
        f"{command}\n    {problem}"
        for command in commands()
        if command.where.startswith(f"{document}:")
        for problem in problems(command)
    ]
    assert not wrong, "\n".join(wrong)


def test_every_named_subcommand_runs():
    named = sorted(
        {words[0] for c in commands() if (words := mobile_vla_words(c.words)) and not words[0].startswith("-")}
    )
    for name in named:
        result = subprocess.run(
            [sys.executable, "-m", "mobile_vla_ros.cli.main", name, "--help"],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert result.returncode == 0 and "usage: mobile-vla" in result.stdout, f"{name}: {result.stderr[-1000:]}"


def test_every_block_runs_here_or_says_why_not():
    for command in commands():
        unknown = [tag for tag in command.tags if tag not in NOT_HERE and not tag.startswith("tested-by=")]
        assert not unknown, f"{command}: unknown fence tag {unknown}; known: {sorted(NOT_HERE)}, tested-by=PATH"
        for tag in command.tags:
            if tag.startswith("tested-by="):
                assert (REPO / tag.split("=", 1)[1]).is_file(), f"{command}: no {tag}"
    runnable = [command for command in commands() if not command.tags]
    assert sum(mobile_vla_words(c.words) is not None for c in runnable) >= 10


@pytest.fixture(scope="module")
def workspace(tmp_path_factory, tiny_base_model):
    """A scratch home and working directory where the documents' paths hold stand-ins."""
    from test_import_bag import StoragePlugin, write_bag

    from mobile_vla_ros.training.synthetic import write_mirrored_dataset

    root = tmp_path_factory.mktemp("docs")
    home, work = root / "home", root / "work"
    for name, pairs in (("mobile_vla_data", 4), ("mobile_vla_eval", 1), ("mobile_vla_corrections", 2)):
        write_mirrored_dataset(home / name, pairs=pairs, frames=12, size=32)
    for directory in ("mobile_vla_data", "mobile_vla_corrections"):  # the file names the documents use
        episodes = sorted((home / directory).glob("*.h5"))
        shutil.copy(episodes[0], home / directory / "episode_0001_left_20261122_101500.h5")
    for bag in ("run1", "run2"):
        write_bag(home / "bags" / bag, StoragePlugin.MCAP, shape=(32, 32))  # the same camera as the episodes
    (work / "models").mkdir(parents=True)
    (work / "models" / "kosmos-2-patch14-224").symlink_to(tiny_base_model)
    for shared in ("config", "scripts"):
        (work / shared).symlink_to(REPO / shared)
    return home, work


def run_words(command: Command, home: Path) -> list[str]:
    words = [str(home / word[2:]) if word.startswith("~/") else word for word in command.words]
    if mobile_vla_words(command.words)[:1] == ("train",):
        words += ["--max-steps", "2"]
    return words


def test_every_command_that_can_run_here_runs(workspace):
    home, work = workspace
    env = {**os.environ, "HOME": str(home), "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    done, failed = set(), []
    for command in commands():
        if command.tags or command.words in done:
            continue
        done.add(command.words)
        result = subprocess.run(
            run_words(command, home), cwd=work, env=env, capture_output=True, text=True, timeout=600
        )
        if result.returncode != 0:
            failed.append(f"{command}\n    exit {result.returncode}: {(result.stderr or result.stdout)[-1500:]}")
    assert done and not failed, "\n".join(failed)

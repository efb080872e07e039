"""Every shell command in README.md, docs/*.md and models/README.md names things that exist: the
`mobile-vla` sub-commands and their flags, the launch files and their arguments, the executables of
`ros2 run`, make targets, modules of `python -m` and the repository's files. Each sub-command the
documents name also runs (`--help`). What needs a robot, a GPU or hours is not run here; the
commands are still checked, so the documents cannot drift from the code."""

from __future__ import annotations

import importlib.util
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import pytest

from mobile_vla_ros.cli.main import build_parser

REPO = Path(__file__).resolve().parents[1]
DOCUMENTS = [REPO / "README.md", REPO / "models" / "README.md", *sorted((REPO / "docs").glob("*.md"))]
FENCE = re.compile(r"^```(?:bash|sh|shell)\n(.*?)^```", re.MULTILINE | re.DOTALL)
REPO_PATH = re.compile(r"^(?:src/mobile_vla_ros/)?((?:config|launch|scripts|docs|test)/[\w./-]+\.\w+)$")
PYTHONS = {"python", "python3", ".venv/bin/python"}


@dataclass(frozen=True)
class Command:
    where: str
    words: tuple[str, ...]

    def __str__(self) -> str:
        return f"{self.where}: {' '.join(self.words)}"


def commands() -> list[Command]:
    found = []
    for document in DOCUMENTS:
        text = document.read_text()
        for block in FENCE.finditer(text):
            line = text[: block.start()].count("\n") + 2
            joined = block.group(1).replace("\\\n", " ")
            for offset, source in enumerate(joined.splitlines()):
                for words in split_commands(source):
                    found.append(Command(f"{document.relative_to(REPO)}:{line + offset}", words))
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

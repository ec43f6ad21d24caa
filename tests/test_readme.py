"""The README and the manual in docs/ cannot rot: every command they show exists with the
options it uses, and a test (or the demo) runs that command."""

from __future__ import annotations

import re
import shlex
from pathlib import Path
from typing import Any

import pytest
import typer.main
from invoke import Collection

from frontdoor.cli import app

from .conftest import REPO_ROOT

README = REPO_ROOT / "README.md"
#: The front page and the manual's pages: every command shown in either is checked.
DOCUMENTS = [README, *sorted((REPO_ROOT / "docs").glob("*.md"))]
#: Where commands are exercised: the tests and the demo.
EXERCISED_IN = [*sorted((REPO_ROOT / "tests").glob("test_*.py")), REPO_ROOT / "localtarget/demo.py"]
MAKE_TARGETS = ("demo", "test", "setup", "bench")


def readme_commands() -> list[str]:
    """Command lines of the documents' shell blocks, continuation lines joined, comments cut."""
    commands = []
    text = "\n".join(path.read_text() for path in DOCUMENTS)
    for block in re.findall(r"```(?:sh|bash|console)\n(.*?)```", text, re.S):
        text = block.replace("\\\n", " ")
        for line in text.splitlines():
            line = line.split(" # ")[0].strip()
            if line.startswith(("erpcloud ", "fab ", "make ")):
                commands.append(line)
    return commands


COMMANDS = readme_commands()


def test_the_readme_starts_with_the_two_commands():
    head = README.read_text().splitlines()[:12]
    assert any(line.startswith("make demo") for line in head)
    assert any(line.startswith("make test") for line in head)


def _is_group(command: Any) -> bool:
    return isinstance(getattr(command, "commands", None), dict)


def _erpcloud_path(tokens: list[str]) -> tuple[list[str], Any, list[str]]:
    """Walk the command tree (Typer's own command classes, duck-typed)."""
    command: Any = typer.main.get_command(app)
    path: list[str] = []
    rest = list(tokens)
    while rest and _is_group(command) and rest[0] in command.commands:
        path.append(rest[0])
        command = command.commands[rest.pop(0)]
    return path, command, rest


def _options(command: Any) -> set[str]:
    return {opt for param in command.params for opt in (*param.opts, *param.secondary_opts)}


def _flags(args: list[str]) -> list[str]:
    return [a.split("=")[0] for a in args if a.startswith("--")]


def _fab_collection() -> Collection:
    import fabfile

    return fabfile.ns


@pytest.mark.parametrize("line", [c for c in COMMANDS if c.startswith("erpcloud ")])
def test_erpcloud_commands_exist_with_their_options(line: str):
    path, command, rest = _erpcloud_path(shlex.split(line)[1:])
    assert path, f"{line}: no such erpcloud command"
    assert not _is_group(command), f"{line}: names a group, not a command"
    unknown = [flag for flag in _flags(rest) if flag not in _options(command)]
    assert unknown == [], f"{line}: unknown options {unknown}"


@pytest.mark.parametrize("line", [c for c in COMMANDS if c.startswith("fab ")])
def test_fab_tasks_exist_with_their_options(line: str):
    tokens = shlex.split(line)[1:]
    task_name = next(t for t in tokens if not t.startswith("-"))
    task = _fab_collection()[task_name]
    known = {f"--{name.replace('_', '-')}" for arg in task.get_arguments() for name in arg.names}
    unknown = [flag for flag in _flags(tokens) if flag not in known]
    assert unknown == [], f"{line}: unknown options {unknown}"


@pytest.mark.parametrize("line", [c for c in COMMANDS if c.startswith("make ")])
def test_make_targets_exist(line: str):
    target = line.split()[1]
    assert target in MAKE_TARGETS
    assert re.search(rf"^{target}:", (REPO_ROOT / "Makefile").read_text(), re.M)


def _exercised(words: list[str]) -> bool:
    """Some test file (or the demo) quotes every word of the command path: it builds that
    command line, whether as a CliRunner argv, a subprocess argv or through a helper."""
    patterns = [re.compile(rf"""["']{re.escape(word)}["']""") for word in words]
    return any(
        all(p.search(text) for p in patterns)
        for text in (path.read_text() for path in EXERCISED_IN if path != Path(__file__))
    )


@pytest.mark.parametrize("line", [c for c in COMMANDS if not c.startswith("make ")])
def test_every_readme_command_is_run_by_a_test_or_the_demo(line: str):
    tokens = shlex.split(line)
    if tokens[0] == "erpcloud":
        words, _, _ = _erpcloud_path(tokens[1:])
    else:
        words = [next(t for t in tokens[1:] if not t.startswith("-"))]
    assert _exercised(words), f"no test or demo step runs `{line}`"

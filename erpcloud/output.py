"""How every command speaks: a human summary with Rich, or JSON for CI (``--json``).

Exit codes are shared by all commands: 0 ok, 1 a check failed (or a run failed), 2 bad input
(the file, field and rule are named), 3 a warning-level outcome where a command defines one.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterable
from dataclasses import asdict, is_dataclass
from datetime import date, datetime, time, timedelta
from enum import Enum
from pathlib import Path
from typing import Any, Final, NoReturn

from invoke.exceptions import Exit
from rich.console import Console

EXIT_OK: Final = 0
EXIT_FAILED: Final = 1
EXIT_BAD_INPUT: Final = 2
EXIT_WARNING: Final = 3

console = Console(highlight=False)
err_console = Console(stderr=True, highlight=False)


def to_jsonable(value: Any) -> Any:
    """Dataclasses, pydantic models, paths, dates and enums as plain JSON values."""
    if hasattr(value, "model_dump"):
        return to_jsonable(value.model_dump(mode="json"))
    if is_dataclass(value) and not isinstance(value, type):
        return to_jsonable(asdict(value))
    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [to_jsonable(v) for v in value]
    if isinstance(value, datetime | date | time):
        return value.isoformat()
    if isinstance(value, timedelta):
        return value.total_seconds()
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, Path):
        return str(value)
    return value


def print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(to_jsonable(data), indent=2, sort_keys=False) + "\n")


def emit(data: Any, as_json: bool, human: Callable[[], None]) -> None:
    """Print ``data`` as JSON, or call ``human`` to print it for people."""
    if as_json:
        print_json(data)
    else:
        human()


def fail(
    message: str, as_json: bool, code: int = EXIT_FAILED, details: Iterable[str] = ()
) -> NoReturn:
    """Report an error (to stderr for people, as JSON on stdout for CI) and exit."""
    lines = list(details)
    if as_json:
        print_json({"ok": False, "error": message, "details": lines})
    else:
        err_console.print(f"[bold red]error:[/] {message}")
        for line in lines:
            err_console.print(f"  {line}", markup=False)
    raise SystemExit(code)


def task_refusal(
    message: str, as_json: bool, code: int = EXIT_BAD_INPUT, details: Iterable[str] = ()
) -> Exit:
    """The same report for a Fabric task: the caller raises the returned ``Exit`` (invoke turns
    it into the exit code without a traceback)."""
    lines = list(details)
    if as_json:
        sys.stdout.write(
            json.dumps({"ok": False, "error": message, "details": lines}, indent=2) + "\n"
        )
    else:
        print(f"error: {message}", file=sys.stderr)
        for line in lines:
            print(f"  {line}", file=sys.stderr)
    return Exit(code=code)

"""Errors at the edge: every broken rule names the file, the field and the rule, all at once."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from erpcloud.fleet import FieldError, field_path


class ChangeFileError(ValueError):
    """A maintenance file (change, calendar, inventory) breaks rules; ``errors`` lists them all."""

    def __init__(self, errors: Sequence[FieldError]) -> None:
        self.errors = list(errors)
        super().__init__("\n".join(str(e) for e in self.errors))


def errors_from_validation(file: str, exc: ValidationError, prefix: str = "") -> list[FieldError]:
    """pydantic's errors as :class:`FieldError`, with the rule in plain words."""
    found = []
    for error in exc.errors(include_url=False):
        message = str(error["msg"]).removeprefix("Value error, ")
        if error["type"] == "extra_forbidden":
            message = "is not a known field (check the spelling)"
        elif error["type"] == "missing":
            message = "is required"
        path = field_path(error["loc"])
        if prefix:
            path = f"{prefix}.{path}" if path else prefix
        found.append(FieldError(file, path, message))
    return found


def read_yaml(path: Path) -> Any:
    """A YAML file's data, or :class:`ChangeFileError` naming the file and line."""
    file = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ChangeFileError([FieldError(file, "", f"cannot be read ({exc.strerror})")]) from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}: " if mark is not None else ""
        raise ChangeFileError([FieldError(file, "", f"{where}is not valid YAML")]) from None

"""Errors at the edge of the maintenance files (changes, calendars, inventories): the one
document error and reader of :mod:`erpcloud.documents`, under the names this package uses."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from erpcloud.documents import DocumentError, errors_from_validation, read_yaml_document

__all__ = ["ChangeFileError", "errors_from_validation", "read_yaml"]

#: A maintenance file breaking rules: the one document error.
ChangeFileError = DocumentError


def read_yaml(path: Path) -> Any:
    """A YAML file's data, or :class:`ChangeFileError` naming the file, line and rule."""
    return read_yaml_document(path)

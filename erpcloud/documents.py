"""Documents at the edge: any bytes in, typed data or a clear error out (issue 13, item 3).

Every YAML document the platform reads from people (customer files, maintenance changes and
calendars, inventories, drill-host lists) comes through :func:`read_yaml_document`: a size limit
before anything is parsed, strict UTF-8, no control characters, no duplicated keys (the second
would silently win), and no anchors or aliases (a few lines of them expand into gigabytes).
Each refusal is a :class:`DocumentError` naming the file, the place and the rule.
"""

from __future__ import annotations

import stat
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from erpcloud import policy


@dataclass(frozen=True)
class FieldError:
    """One broken rule: where (file, field path) and which rule."""

    file: str
    field: str
    rule: str

    def __str__(self) -> str:
        where = f"{self.file}: {self.field}" if self.field else self.file
        return f"{where}: {self.rule}"


class DocumentError(ValueError):
    """A document breaks one or more rules; ``errors`` lists them all."""

    def __init__(self, errors: Sequence[FieldError]) -> None:
        self.errors = list(errors)
        super().__init__("\n".join(str(e) for e in self.errors))


def field_path(loc: Iterable[int | str]) -> str:
    """``('ssh', 'users', 0, 'name')`` → ``ssh.users[0].name``."""
    path = ""
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        else:
            path += f".{part}" if path else part
    return path


def errors_from_validation(
    file: str, exc: ValidationError, prefix: str = "", extra_hint: str = "check the spelling"
) -> list[FieldError]:
    """pydantic's errors as :class:`FieldError`, with the rule in plain words."""
    found = []
    for error in exc.errors(include_url=False):
        message = str(error["msg"]).removeprefix("Value error, ")
        if error["type"] == "extra_forbidden":
            message = f"is not a known field ({extra_hint})"
        elif error["type"] == "missing":
            message = "is required"
        path = field_path(error["loc"])
        if prefix:
            path = f"{prefix}.{path}" if path else prefix
        found.append(FieldError(file, path, message))
    return found


class _Refused(yaml.YAMLError):
    """A rule of ours, broken at a place in the document."""

    def __init__(self, line: int, rule: str) -> None:
        super().__init__(rule)
        self.line = line
        self.rule = rule


class _StrictLoader(yaml.SafeLoader):
    """PyYAML's safe loader without aliases and without duplicated mapping keys."""

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()  # type: ignore[no-untyped-call]
            raise _Refused(
                event.start_mark.line + 1,
                "anchors and aliases are not accepted (a few of them expand a small file "
                "into a huge one)",
            )
        return super().compose_node(parent, index)

    def construct_mapping(self, node: Any, deep: bool = False) -> Any:
        if isinstance(node, yaml.MappingNode):
            seen: set[Any] = set()
            for key_node, _value in node.value:
                key = self.construct_object(key_node, deep=True)
                try:
                    duplicate = key in seen
                    seen.add(key)
                except TypeError:  # an unhashable key: the base class refuses it clearly
                    continue
                if duplicate:
                    raise _Refused(
                        key_node.start_mark.line + 1,
                        f"key {key!r} appears more than once (which one is meant?)",
                    )
        return super().construct_mapping(node, deep=deep)


def read_document_text(path: Path, max_bytes: int = policy.MAX_DOCUMENT_BYTES) -> str:
    """A document's text: a regular file, at most ``max_bytes``, UTF-8 without control
    characters other than tab and newline; :class:`DocumentError` otherwise."""
    file = str(path)

    def refuse(rule: str) -> DocumentError:
        return DocumentError([FieldError(file, "", rule)])

    try:
        # Checked before opening: opening a FIFO would wait for a writer, a device never ends.
        if not stat.S_ISREG(path.stat().st_mode):
            raise refuse("is not a regular file")
        with path.open("rb") as handle:
            data = handle.read(max_bytes + 1)
    except OSError as exc:
        raise refuse(f"cannot be read ({exc.strerror or exc})") from None
    if len(data) > max_bytes:
        raise refuse(f"is larger than {max_bytes} bytes, the most a document may be")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise refuse(
            f"line {line}: is not UTF-8 text (byte 0x{data[exc.start]:02x} at offset {exc.start})"
        ) from None
    text = text.removeprefix("\ufeff")
    for offset, char in enumerate(text):
        if char in "\t\n" or not is_control(char):
            continue
        line = text.count("\n", 0, offset) + 1
        if char == "\r" and text[offset + 1 : offset + 2] == "\n":
            continue  # Windows line ends are fine
        raise refuse(f"line {line}: control character U+{ord(char):04X} is not accepted")
    return text


def is_control(char: str) -> bool:
    """C0/C1 controls, DEL, and the Unicode line and paragraph separators."""
    code = ord(char)
    return code < 0x20 or 0x7F <= code <= 0x9F or code in (0x2028, 0x2029)


def first_unprintable(text: str) -> str | None:
    """The first control or invisible formatting character (Unicode ``Cf``: zero-width space,
    byte-order mark, bidirectional overrides) of a one-line value, or None."""
    return next((c for c in text if is_control(c) or unicodedata.category(c) == "Cf"), None)


def read_yaml_document(path: Path, max_bytes: int = policy.MAX_DOCUMENT_BYTES) -> Any:
    """A YAML document's data (see the module's rules); :class:`DocumentError` otherwise."""
    text = read_document_text(path, max_bytes)
    return parse_yaml_text(text, str(path))


def parse_yaml_text(text: str, file: str) -> Any:
    """YAML text already read (and checked by :func:`read_document_text`) as data."""
    try:
        return yaml.load(text, Loader=_StrictLoader)  # noqa: S506 - a SafeLoader subclass
    except _Refused as exc:
        raise DocumentError([FieldError(file, "", f"line {exc.line}: {exc.rule}")]) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}: " if mark is not None else ""
        problem = getattr(exc, "problem", None)
        detail = f" ({problem})" if problem else ""
        raise DocumentError([FieldError(file, "", f"{where}is not valid YAML{detail}")]) from None
    except RecursionError:
        raise DocumentError([FieldError(file, "", "nests too deeply to be a document")]) from None

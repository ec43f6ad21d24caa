"""Changing a customer's lifecycle state in its file (P3, S18), and nothing else.

The file is reviewed YAML with comments, so it is not re-dumped: only its top-level
``lifecycle:`` block is replaced (or appended), every other line stays as written. The result is
validated with the model, and must equal the old document apart from ``lifecycle``, before it
replaces the file atomically.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

from erpcloud.documents import parse_yaml_text, read_document_text
from erpcloud.files import write_atomic
from erpcloud.fleet import CustomerFileError, FieldError, parse_customer
from erpcloud.model import Customer, Lifecycle, LifecycleState

_TOP_LEVEL_KEY = re.compile(r"^lifecycle\s*:")


class LifecycleRefused(ValueError):
    """A state change that breaks a rule; names the field and the rule."""

    def __init__(self, field: str, rule: str) -> None:
        super().__init__(f"{field}: {rule}")
        self.field = field
        self.rule = rule


@dataclass(frozen=True)
class Transition:
    before: Lifecycle
    after: Lifecycle

    @property
    def changed(self) -> bool:
        return self.before != self.after


# --- the rules of each change (P3, S18) ----------------------------------------------------------
def suspend(current: Lifecycle) -> Transition:
    """P3: an active account is suspended (its instances stop; data and backups stay)."""
    if current.state is LifecycleState.CANCELLED:
        raise LifecycleRefused(
            "lifecycle.state",
            f"is cancelled (notice {current.notice_date}); a cancelled customer's service ends "
            f"on {current.termination_date} (S18) and is not suspended",
        )
    return Transition(current, Lifecycle(state=LifecycleState.SUSPENDED))


def resume(current: Lifecycle) -> Transition:
    """P3: a suspended account becomes active again."""
    if current.state is LifecycleState.CANCELLED:
        raise LifecycleRefused(
            "lifecycle.state",
            "is cancelled: withdrawing a cancellation is a contract change, made in the "
            "customer file by pull request (S18)",
        )
    return Transition(current, Lifecycle(state=LifecycleState.ACTIVE))


def cancel(current: Lifecycle, notice_date: date, today: date) -> Transition:
    """S18: record the written notice; service ends 30 days later, data kept 60 days more."""
    if notice_date > today:
        raise LifecycleRefused(
            "notice_date",
            f"{notice_date} is after today ({today}): record a written notice when it is "
            "received (S18)",
        )
    if current.state is LifecycleState.CANCELLED and current.notice_date != notice_date:
        raise LifecycleRefused(
            "notice_date",
            f"the customer is cancelled already with notice {current.notice_date}; correct it "
            "in the customer file by pull request (S18)",
        )
    return Transition(current, Lifecycle(state=LifecycleState.CANCELLED, notice_date=notice_date))


# --- the file -------------------------------------------------------------------------------------
def render_block(lifecycle: Lifecycle) -> list[str]:
    lines = ["lifecycle:", f"  state: {lifecycle.state.value}"]
    if lifecycle.notice_date is not None:
        lines.append(
            f"  notice_date: {lifecycle.notice_date.isoformat()}"
            f"  # S18: service ends {lifecycle.termination_date}, data may be purged from "
            f"{lifecycle.purge_allowed_from}"
        )
    return lines


def _block_span(lines: list[str]) -> tuple[int, int] | None:
    """Where the top-level ``lifecycle:`` block is: its key line and the indented lines after."""
    starts = [i for i, line in enumerate(lines) if _TOP_LEVEL_KEY.match(line)]
    if not starts:
        return None
    if len(starts) > 1:
        raise LifecycleRefused("lifecycle", "appears more than once in the file; fix it by hand")
    start = end = starts[0]
    for index in range(start + 1, len(lines)):
        line = lines[index]
        if line[:1] in (" ", "\t") and line.strip():
            end = index
        elif line.strip():
            break
    return start, end + 1


def replace_block(text: str, lifecycle: Lifecycle) -> str:
    lines = text.splitlines()
    block = render_block(lifecycle)
    span = _block_span(lines)
    if span is None:
        while lines and not lines[-1].strip():
            lines.pop()
        lines += block
    else:
        lines[span[0] : span[1]] = block
    return "\n".join(lines) + "\n"


def _document(text: str, file: str) -> dict[str, Any]:
    data = parse_yaml_text(text, file)
    if not isinstance(data, dict):
        raise CustomerFileError([FieldError(file, "", "must be a YAML mapping of fields")])
    return data


def write_lifecycle(path: Path, customer_id: str, lifecycle: Lifecycle) -> Customer:
    """Replace the file's ``lifecycle`` block; validated first, written atomically."""
    text = read_document_text(path)
    new_text = replace_block(text, lifecycle)
    old = _document(text, str(path))
    new = _document(new_text, str(path))
    customer = parse_customer(new, str(path), expected_id=customer_id)
    if customer.lifecycle != lifecycle:
        raise LifecycleRefused("lifecycle", "the edited file does not read back as intended")
    old.pop("lifecycle", None)
    new.pop("lifecycle", None)
    if old != new:
        raise LifecycleRefused(
            "lifecycle", "editing the block would change other fields; edit the file by hand"
        )
    write_atomic(path, new_text, mode=path.stat().st_mode & 0o777)
    return customer

"""A maintenance change: one reviewed YAML file under ``maintenance/changes/``.

Parsed once, here, with pydantic; the steps are checked against the registry
(:mod:`maintenance.steps`). Errors name the file, the field and the rule, all at once. The
policy rules (calendar, notice periods, yearly limits) are in :mod:`maintenance.rules`.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from dataclasses import dataclass
from datetime import timedelta
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, Self

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationError, model_validator

from erpcloud.fleet import FieldError
from erpcloud.model import Environment
from maintenance.errors import ChangeFileError, errors_from_validation, read_yaml
from maintenance.steps import Step, resolve_steps

#: Where change files live, relative to the repository root.
CHANGES_DIR = Path("maintenance/changes")


class ChangeKind(StrEnum):
    STANDARD = "standard"  # S11: in a calendar window, under its length
    EMERGENCY = "emergency"  # S12
    MAJOR = "major"  # S13


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)


class ChangeWindow(Strict):
    """Either a calendar window (its local ``date``: 22:00 in each target's own data centre) or
    an explicit ``starts_at`` (an instant, the same for every target) with a length."""

    date: dt.date | None = None
    starts_at: AwareDatetime | None = None
    #: Length; a calendar window's own length when left out.
    duration_minutes: Annotated[int, Field(ge=1)] | None = None

    @model_validator(mode="after")
    def _one_kind_of_window(self) -> Self:
        if (self.date is None) == (self.starts_at is None):
            raise ValueError("give either 'date' (a calendar window) or 'starts_at', not both")
        if self.starts_at is not None and self.duration_minutes is None:
            raise ValueError("an explicit 'starts_at' needs 'duration_minutes'")
        return self

    @property
    def duration(self) -> timedelta | None:
        return None if self.duration_minutes is None else timedelta(minutes=self.duration_minutes)


class Targets(Strict):
    """Which customers' hosts: ``all``, or those matching every selector given."""

    all: bool = False
    regions: list[str] = Field(default_factory=list)
    partners: list[str] = Field(default_factory=list)
    customers: list[str] = Field(default_factory=list)
    environments: Annotated[list[Environment], Field(min_length=1)] = Field(
        default_factory=lambda: [Environment.TEST, Environment.PRODUCTION]
    )

    @model_validator(mode="after")
    def _all_or_selectors(self) -> Self:
        selectors = self.regions or self.partners or self.customers
        if self.all and selectors:
            raise ValueError("'all: true' takes no regions, partners or customers")
        if not self.all and not selectors:
            raise ValueError("name the targets: 'all: true', or regions, partners or customers")
        return self


class StepSpec(Strict):
    op: str
    args: dict[str, Any] = Field(default_factory=dict)


class Change(Strict):
    id: Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9-]{2,79}$")]
    kind: ChangeKind
    #: Why. For an emergency, one of the S12 reasons (security, performance, ...).
    reason: Annotated[str, Field(min_length=3, max_length=500)]
    #: What changes, in the customers' words (it goes into the notices).
    summary: Annotated[str, Field(min_length=3, max_length=1000)]
    window: ChangeWindow
    expected_downtime_minutes: Annotated[int, Field(ge=0)]
    targets: Targets
    steps: Annotated[list[StepSpec], Field(min_length=1)]
    #: When the customers were (or will be) told: the notice periods count from here.
    announced_at: AwareDatetime

    @property
    def expected_downtime(self) -> timedelta:
        return timedelta(minutes=self.expected_downtime_minutes)


@dataclass(frozen=True)
class LoadedChange:
    """A schema-valid change with its resolved steps, and where it came from."""

    change: Change
    file: str
    steps: list[Step]
    #: sha256 of the file's text: a run resumes only the change it started.
    digest: str

    @property
    def id(self) -> str:
        return self.change.id

    @property
    def interrupts_service(self) -> bool:
        """S12: the work interrupts service (declared downtime, or a step that does)."""
        return self.change.expected_downtime_minutes > 0 or any(
            s.interrupts_service for s in self.steps
        )

    @property
    def risky(self) -> bool:
        return any(s.op.risky for s in self.steps)

    @property
    def notice_digest(self) -> str:
        """What the notices say: a change to any of it means rendering them again."""
        c = self.change
        fields = {
            "id": c.id,
            "kind": c.kind.value,
            "reason": c.reason,
            "summary": c.summary,
            "window": c.window.model_dump(mode="json"),
            "expected_downtime_minutes": c.expected_downtime_minutes,
            "targets": c.targets.model_dump(mode="json"),
        }
        return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()


def parse_change(data: Any, file: str, text: str, expected_id: str | None = None) -> LoadedChange:
    """Validate one change document: schema and registry errors together."""
    if not isinstance(data, dict):
        raise ChangeFileError([FieldError(file, "", "must be a YAML mapping of fields")])
    errors: list[FieldError] = []
    change: Change | None = None
    try:
        change = Change.model_validate(data)
    except ValidationError as exc:
        errors.extend(errors_from_validation(file, exc))
    steps, step_errors = resolve_steps(data.get("steps"))
    errors.extend(FieldError(file, e.field, e.rule) for e in step_errors)
    if change is not None and expected_id is not None and change.id != expected_id:
        errors.append(FieldError(file, "id", f"must equal the file name {expected_id!r}.yaml"))
    if errors or change is None:
        raise ChangeFileError(errors)
    digest = hashlib.sha256(text.encode()).hexdigest()
    return LoadedChange(change=change, file=file, steps=steps, digest=digest)


def load_change(path: Path) -> LoadedChange:
    """Read and validate ``maintenance/changes/<id>.yaml`` (schema and steps)."""
    data = read_yaml(path)
    return parse_change(data, str(path), path.read_text(encoding="utf-8"), expected_id=path.stem)


def change_files(directory: Path = CHANGES_DIR) -> list[Path]:
    return sorted(p for p in directory.glob("*.yaml") if not p.name.startswith("."))


def find_change(name: str, directory: Path = CHANGES_DIR) -> Path:
    """A change by path, or by id in ``directory``."""
    path = Path(name)
    if path.suffix in {".yaml", ".yml"}:
        return path
    return directory / f"{name}.yaml"

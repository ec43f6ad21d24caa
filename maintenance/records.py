"""Run state and run records: what a maintenance run did, host by host, kept on disk.

Each run has a folder ``<runs>/<run-id>/`` (default ``build/maintenance/runs/``; CI syncs it to
durable storage) holding ``state.json`` (rewritten atomically after every host, so a halted or
killed run resumes from it), ``report.json`` and ``report.md``, and the ``known_hosts`` file it
connected with. The records are also the yearly count of major changes (S13).
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from pathlib import Path

from pydantic import BaseModel, Field, ValidationError

from erpcloud.files import write_atomic
from erpcloud.model import Environment

#: Default home of run records, relative to the working directory.
RUNS_DIR = Path("build/maintenance/runs")


class HostStatus(StrEnum):
    PENDING = "pending"  # planned, not started yet
    DONE = "done"  # pre-checks, steps and post-checks passed
    FAILED = "failed"  # a pre-check, step or post-check failed (rolled back where possible)
    REFUSED = "refused"  # not connected: the host key is not the pinned one
    UNTOUCHED = "untouched"  # never started (error budget spent, canary failed, window closed)
    CHECKED = "checked"  # a dry run looked at it


class RunStatus(StrEnum):
    RUNNING = "running"
    COMPLETED = "completed"  # every planned host done
    HALTED = "halted"  # stopped by failures: an operator fixes and resumes
    FAILED = "failed"  # every host was tried (the budget held) but some failed: fix, resume
    WAITING = "waiting"  # the hosts done so far succeeded; others wait for their own window
    DRY_RUN = "dry-run"


class CheckStatus(StrEnum):
    OK = "ok"
    FAILED = "failed"
    NOT_APPLICABLE = "n/a"
    WARNING = "warning"
    TAKEN = "taken"  # no recent backup: one was taken before a risky step


class CheckRecord(BaseModel):
    name: str
    status: CheckStatus
    detail: str = ""


class StepRecord(BaseModel):
    index: int
    op: str
    status: str  # applied | already | verified | failed | would-apply | would-fail
    seconds: float = 0.0
    output: str = ""


class RollbackRecord(BaseModel):
    index: int
    op: str
    ok: bool
    output: str = ""


class HostRecord(BaseModel):
    name: str
    customer: str
    environment: Environment
    region: str
    wave: int
    status: HostStatus = HostStatus.PENDING
    #: Why a host is untouched or failed, in a sentence.
    reason: str = ""
    attempts: int = 0
    started_at: datetime | None = None
    finished_at: datetime | None = None
    seconds: float = 0.0
    window_start: datetime | None = None
    window_end: datetime | None = None
    prechecks: list[CheckRecord] = Field(default_factory=list)
    steps: list[StepRecord] = Field(default_factory=list)
    rollbacks: list[RollbackRecord] = Field(default_factory=list)
    postchecks: list[CheckRecord] = Field(default_factory=list)
    error: str = ""
    #: Service interruption measured on this host (S11: recorded as scheduled maintenance).
    downtime_seconds: float = 0.0
    #: What earlier attempts of this run ended with (a resumed run keeps the failures it fixed).
    history: list[str] = Field(default_factory=list)

    def outcome(self) -> str:
        stamp = f"{self.started_at:%Y-%m-%d %H:%M:%S} UTC" if self.started_at else "not started"
        detail = self.error or self.reason
        return f"attempt {self.attempts} ({stamp}): {self.status.value}" + (
            f": {detail}" if detail else ""
        )


class WaveRecord(BaseModel):
    index: int
    label: str  # "canary" (test environments, S9) or "production"
    hosts: list[str]


class RunSettings(BaseModel):
    wave_size: int
    concurrency: int
    max_errors: int


class Attempt(BaseModel):
    started_at: datetime
    finished_at: datetime | None = None
    resumed: bool = False


class RunState(BaseModel):
    run_id: str
    change_id: str
    change_file: str
    change_digest: str
    kind: str
    #: The calendar year the change's window falls in (S13 counts per calendar year).
    window_year: int
    dry_run: bool = False
    #: Set when an operator overrode the gates to drill the runner itself (logged, reported).
    drill_reason: str | None = None
    overrides: list[str] = Field(default_factory=list)
    created_at: datetime
    updated_at: datetime
    status: RunStatus = RunStatus.RUNNING
    halted_reason: str = ""
    settings: RunSettings
    waves: list[WaveRecord]
    hosts: dict[str, HostRecord]
    attempts: list[Attempt] = Field(default_factory=list)

    def ordered_hosts(self) -> list[HostRecord]:
        return [self.hosts[name] for wave in self.waves for name in wave.hosts]

    def count(self, status: HostStatus) -> int:
        return sum(1 for h in self.hosts.values() if h.status is status)

    @property
    def changed_anything(self) -> bool:
        return not self.dry_run and any(h.status is HostStatus.DONE for h in self.hosts.values())


class RunStore:
    """The folder of run records."""

    def __init__(self, root: Path = RUNS_DIR) -> None:
        self.root = root

    def run_dir(self, run_id: str) -> Path:
        return self.root / run_id

    def state_path(self, run_id: str) -> Path:
        return self.run_dir(run_id) / "state.json"

    def save(self, state: RunState) -> Path:
        path = self.state_path(state.run_id)
        write_atomic(path, state.model_dump_json(indent=2) + "\n")
        return path

    def exists(self, run_id: str) -> bool:
        return self.state_path(run_id).is_file()

    def load(self, run_id: str) -> RunState:
        path = self.state_path(run_id)
        if not path.is_file():
            known = ", ".join(s.run_id for s in self.runs()[-5:]) or "none"
            raise FileNotFoundError(f"no run {run_id!r} in {self.root}/ (latest: {known})")
        return RunState.model_validate_json(path.read_text(encoding="utf-8"))

    def runs(self) -> list[RunState]:
        """Every readable run record, oldest first."""
        if not self.root.is_dir():
            return []
        states = []
        for path in sorted(self.root.glob("*/state.json")):
            try:
                states.append(RunState.model_validate_json(path.read_text(encoding="utf-8")))
            except (OSError, ValidationError):
                continue  # a foreign or damaged file is not a record
        return sorted(states, key=lambda s: s.created_at)

    def runs_of(self, change_id: str) -> list[RunState]:
        return [s for s in self.runs() if s.change_id == change_id and not s.dry_run]

    def major_changes(self, year: int, exclude: str | None = None) -> list[str]:
        """S13: the major changes that ran (changed at least one host) in calendar ``year``.

        Drills and dry runs do not count; ``exclude`` is the change being checked itself.
        """
        found = {
            s.change_id
            for s in self.runs()
            if s.kind == "major"
            and s.window_year == year
            and s.drill_reason is None
            and s.changed_anything
            and s.change_id != exclude
        }
        return sorted(found)

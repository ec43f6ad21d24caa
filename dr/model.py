"""What a drill records: the report model, written as ``report.json`` and read back by history.

One model for the whole life of a drill: it is filled step by step while the drill runs, so a
drill that fails part way still leaves a complete record of what it did, what it found and why
it stopped (S8: every drill is evidence, a failed one included).
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from pydantic import BaseModel, Field


class DrillMode(StrEnum):
    #: Production's consistent snapshot now, restored to exactly its restore point (the default).
    POINT = "point"
    #: A moment in the past (``--target-time``): recovery to that time.
    TIME = "time"
    #: The region is lost now (``--latest``): everything the repository held at that moment.
    LATEST = "latest"


class RepoChoice(StrEnum):
    """Which of the customer's repositories the drill restores from (S6)."""

    COPY = "copy"
    PRIMARY = "primary"

    @property
    def repo_key(self) -> int:
        """pgBackRest's repository number: repo1 primary, repo2 copy (S6)."""
        return 2 if self is RepoChoice.COPY else 1


class DrillStatus(StrEnum):
    RUNNING = "running"
    PASSED = "passed"
    FAILED = "failed"


class CheckStatus(StrEnum):
    PASSED = "passed"
    FAILED = "failed"
    SKIPPED = "skipped"  # not applicable to this drill's mode; the detail says why


class StepRecord(BaseModel):
    name: str
    ok: bool
    started_at: datetime
    seconds: float
    detail: str = ""


class CheckRecord(BaseModel):
    name: str
    status: CheckStatus
    detail: str


class TableSum(BaseModel):
    """One table's row count and an order-independent checksum of its rows' contents."""

    rows: int
    checksum: str


class RepoRecord(BaseModel):
    index: int
    choice: RepoChoice
    region: str
    bucket: str


class TargetRecord(BaseModel):
    """Where recovery was asked to stop: a restore point (point), a time, or the archive's end."""

    time: datetime | None = None
    restore_point: str | None = None
    lsn: str | None = None


class SnapshotRecord(BaseModel):
    """Production in one snapshot, at the restore point the drill created (point mode)."""

    restore_point: str
    lsn: str
    wal_file: str
    taken_at: datetime
    database: str
    tables: dict[str, TableSum]
    #: How long production writers could have waited behind the snapshot's share locks.
    locked_seconds: float


class BackupUsed(BaseModel):
    label: str
    type: str
    started: datetime
    stopped: datetime
    wal_start: str
    wal_stop: str
    size_bytes: int
    repo_size_bytes: int


class WalRange(BaseModel):
    """The WAL the restore needs, from the backup's first segment to the target's."""

    archive_id: str
    timelines: list[int]
    first: str
    last: str
    #: The restore is served no segment after this one (the archive as of the target or event).
    served_until: str
    segments_needed: int
    first_missing: str | None = None
    missing: int = 0


class RestoredRecord(BaseModel):
    last_commit: datetime | None = None
    replay_lsn: str | None = None
    in_recovery: bool | None = None
    archive_mode: str | None = None
    health: str | None = None
    tables: dict[str, TableSum] = Field(default_factory=dict)


class Measures(BaseModel):
    """RTO, RPO and throughput, each beside its bound (S8, and our RPO target for latest)."""

    rto_seconds: float | None = None
    rto_limit_seconds: float
    rpo_seconds: float | None = None
    rpo_limit_seconds: float
    rpo_target_seconds: float | None = None
    restore_seconds: float | None = None
    recovery_seconds: float | None = None
    restored_bytes: int | None = None
    throughput_mb_s: float | None = None


class DrillHostRecord(BaseModel):
    """The drill host, and what a later ``fab dr.teardown`` needs when it was kept."""

    name: str
    address: str
    local: bool
    directory: str
    kept: bool = False
    torn_down: bool = False
    pg_port: int | None = None
    postmaster_pid: int | None = None
    #: A local drill host only: its sshd, accounts and folder (removed at teardown).
    sshd_pid: int | None = None
    created_users: list[str] = Field(default_factory=list)
    root: str | None = None
    ssh_host: str | None = None
    ssh_user: str | None = None
    ssh_port: int | None = None
    key_file: str | None = None
    known_hosts: str | None = None
    #: A drill machine only: its folder on the operations host (``drill-machine.json`` there
    #: says how to power it off); it is removed at teardown.
    machine_dir: str | None = None


class DrillReport(BaseModel):
    drill_id: str
    customer: str
    mode: DrillMode
    repo: RepoRecord
    target: TargetRecord = Field(default_factory=TargetRecord)
    #: The moment the drill stands for: the snapshot (point), the target time, or the event
    #: (latest: when the region is taken to be lost). RPO is measured from it.
    event_time: datetime | None = None
    started_at: datetime
    finished_at: datetime | None = None
    status: DrillStatus = DrillStatus.RUNNING
    failed_step: str | None = None
    error: str | None = None
    steps: list[StepRecord] = Field(default_factory=list)
    checks: list[CheckRecord] = Field(default_factory=list)
    backup: BackupUsed | None = None
    wal: WalRange | None = None
    snapshot: SnapshotRecord | None = None
    restored: RestoredRecord | None = None
    measures: Measures
    drill_host: DrillHostRecord | None = None
    uploaded: list[str] = Field(default_factory=list)
    upload_error: str | None = None

    @property
    def passed(self) -> bool:
        return self.status is DrillStatus.PASSED

    def check(self, name: str) -> CheckRecord | None:
        return next((c for c in self.checks if c.name == name), None)

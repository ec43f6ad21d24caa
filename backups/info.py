"""What the repositories hold, from ``pgbackrest info --output=json`` (pgBackRest 2.45).

The document is a list with one object per stanza: ``repo`` (each repository's status code and
message), ``db`` (database history per repository), ``backup`` (every backup set with its
repository key, type, timestamps and WAL start/stop) and ``archive`` (WAL min/max per archive
id). Parsed once here into typed objects; the rest of :mod:`backups` trusts them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Final

from erpcloud.model import Customer

#: ``repo[].status.code`` values of pgBackRest 2.45's ``info``.
REPO_OK: Final = 0
REPO_NO_BACKUP: Final = 2
REPO_OTHER_ERROR: Final = 99


class BackupType(StrEnum):
    FULL = "full"
    DIFF = "diff"
    INCR = "incr"


@dataclass(frozen=True)
class Repository:
    """One of the customer's two repositories (S6: repo1 primary region, repo2 copy region)."""

    index: int
    region: str
    bucket: str

    @property
    def name(self) -> str:
        return f"repo{self.index}"

    def __str__(self) -> str:
        return f"repo{self.index} ({self.region}, bucket {self.bucket})"


def customer_repositories(customer: Customer) -> tuple[Repository, Repository]:
    primary, copy = customer.backup_bucket_names
    return (
        Repository(1, customer.region, primary),
        Repository(2, customer.backup_copy_region, copy),
    )


@dataclass(frozen=True)
class BackupSet:
    """One backup in one repository."""

    repo: int
    label: str
    type: BackupType
    started: datetime
    stopped: datetime
    wal_start: str
    wal_stop: str
    db_id: int
    prior: str | None = None
    references: tuple[str, ...] = ()
    size_bytes: int = 0
    repo_size_bytes: int = 0  # not reported for bundled repositories
    #: What this backup added to the repository (a block incremental: the changed blocks).
    repo_delta_bytes: int = 0
    error: bool = False


@dataclass(frozen=True)
class RepoStatus:
    code: int
    message: str

    @property
    def ok(self) -> bool:
        return self.code == REPO_OK


@dataclass(frozen=True)
class StanzaInfo:
    """The stanza as ``info`` sees it, across the repositories it was asked about."""

    stanza: str
    repos: dict[int, RepoStatus]
    backups: tuple[BackupSet, ...]
    #: ``(repo, db id) → archive id`` such as ``15-1`` (PostgreSQL version and db id).
    archive_ids: dict[tuple[int, int], str] = field(default_factory=dict)

    def backups_in(self, repo: int) -> list[BackupSet]:
        """Oldest first (labels sort by time)."""
        return sorted((b for b in self.backups if b.repo == repo), key=lambda b: b.label)

    def archive_id(self, backup: BackupSet) -> str:
        return self.archive_ids[(backup.repo, backup.db_id)]

    def current_archive_id(self, repo: int) -> str | None:
        ids = [(db_id, archive) for (r, db_id), archive in self.archive_ids.items() if r == repo]
        return max(ids)[1] if ids else None


def _time(value: int) -> datetime:
    return datetime.fromtimestamp(value, UTC)


def parse_backup(entry: dict[str, Any]) -> BackupSet:
    info = entry.get("info") or {}
    return BackupSet(
        repo=int(entry["database"]["repo-key"]),
        label=str(entry["label"]),
        type=BackupType(entry["type"]),
        started=_time(int(entry["timestamp"]["start"])),
        stopped=_time(int(entry["timestamp"]["stop"])),
        wal_start=str(entry["archive"]["start"]),
        wal_stop=str(entry["archive"]["stop"]),
        db_id=int(entry["database"]["id"]),
        prior=entry.get("prior"),
        references=tuple(entry.get("reference") or ()),
        size_bytes=int(info.get("size", 0)),
        repo_size_bytes=int((info.get("repository") or {}).get("size", 0)),
        repo_delta_bytes=int((info.get("repository") or {}).get("delta", 0)),
        error=bool(entry.get("error", False)),
    )


def parse_info(document: Sequence[dict[str, Any]], stanza: str) -> StanzaInfo:
    """The entry for ``stanza`` in an ``info --output=json`` document."""
    entries = [e for e in document if e.get("name") == stanza]
    if len(entries) != 1:
        raise ValueError(f"pgbackrest info has no stanza {stanza!r}")
    entry = entries[0]
    repos = {
        int(r["key"]): RepoStatus(int(r["status"]["code"]), str(r["status"]["message"]))
        for r in entry.get("repo", [])
    }
    archive_ids = {
        (int(db["repo-key"]), int(db["id"])): f"{db['version']}-{db['id']}"
        for db in entry.get("db", [])
    }
    backups = tuple(parse_backup(b) for b in entry.get("backup", []))
    return StanzaInfo(stanza, repos, backups, archive_ids)

"""Taking and listing backups (S6): one backup set per repository, one repository at a time.

Each repository gets its own backup from the database (not a copy of the other's), so the copy
region holds a complete, independently restorable set. The repositories are backed up one after
the other: a failure in one does not stop the other, and is reported.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from backups.info import (
    BackupSet,
    BackupType,
    Repository,
    StanzaInfo,
    customer_repositories,
    parse_info,
)
from backups.pgbackrest import BACKUP_TIMEOUT_SECONDS, PgBackRest, PgBackRestError, run_json
from erpcloud.model import Customer


@dataclass
class RepoBackup:
    repo: Repository
    ok: bool
    seconds: float
    label: str | None = None
    type: str | None = None
    error: str | None = None


@dataclass
class BackupRun:
    customer: str
    requested_type: BackupType
    repositories: list[RepoBackup] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(r.ok for r in self.repositories)


def stanza_info(runner: PgBackRest, repo: int | None = None) -> StanzaInfo:
    """``pgbackrest info`` for both repositories (or one), parsed."""
    args = ["info"] + ([f"--repo={repo}"] if repo is not None else [])
    return parse_info(run_json(runner, *args), runner.stanza)


def _labels(runner: PgBackRest, repo: int) -> dict[str, BackupSet]:
    return {b.label: b for b in stanza_info(runner, repo).backups_in(repo)}


def run_backups(
    runner: PgBackRest,
    customer: Customer,
    backup_type: BackupType,
    progress: Callable[[str], None] = lambda _: None,
) -> BackupRun:
    """Back up to repo1 (primary region), then repo2 (copy region). pgBackRest turns a diff or
    incr into a full when the repository has no full yet, and expires by retention after it."""
    run = BackupRun(customer.id, backup_type)
    for repo in customer_repositories(customer):
        progress(f"{backup_type.value} backup to {repo}")
        started = time.monotonic()
        try:
            before = set(_labels(runner, repo.index))
            result = runner.run(
                f"--repo={repo.index}", f"--type={backup_type.value}", "backup",
                timeout=BACKUP_TIMEOUT_SECONDS,
            )  # fmt: skip
            if not result.ok:
                raise PgBackRestError(result)
            after = _labels(runner, repo.index)
            new = sorted(set(after) - before)
            if not new:
                raise RuntimeError(f"the backup to {repo} finished but info lists no new backup")
            made = after[new[-1]]
            run.repositories.append(
                RepoBackup(repo, True, time.monotonic() - started, made.label, made.type.value)
            )
        except (PgBackRestError, RuntimeError, ValueError) as exc:
            run.repositories.append(
                RepoBackup(repo, False, time.monotonic() - started, error=str(exc))
            )
        progress(f"{repo.name}: {'done' if run.repositories[-1].ok else 'FAILED'}")
    return run


def list_backups(runner: PgBackRest, customer: Customer) -> dict[str, list[BackupSet]]:
    """Every backup set per repository, oldest first."""
    info = stanza_info(runner)
    return {repo.name: info.backups_in(repo.index) for repo in customer_repositories(customer)}

"""Taking and listing backups (S6): one backup set per repository, both repositories at once.

Each repository gets its own backup from the database (not a copy of the other's), so the copy
region holds a complete, independently restorable set. pgBackRest 2.53 and newer lock a backup
per stanza *and repository*, so both regions' backups run at the same time (the image's 2.55
does); an older pgBackRest (the host-process stand-in's 2.45) locks per stanza, and the
repositories then take their turn. Either way a failure in one does not stop the other, and is
reported.
"""

from __future__ import annotations

import re
import subprocess
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Final

from backups.info import (
    BackupSet,
    BackupType,
    Repository,
    StanzaInfo,
    customer_repositories,
    parse_info,
)
from backups.pgbackrest import (
    BACKUP_TIMEOUT_SECONDS,
    PgBackRest,
    PgBackRestError,
    run_json,
)
from erpcloud.model import Customer

#: From this release pgBackRest locks backups per stanza and repository (pgbackrest PR #2389).
CONCURRENT_REPOSITORIES_FROM: Final = (2, 53)
_VERSION = re.compile(r"pgBackRest (\d+)\.(\d+)")


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


def pgbackrest_version(runner: PgBackRest) -> tuple[int, int]:
    """The host's pgBackRest release, ``(major, minor)``."""
    output = runner.version()
    match = _VERSION.search(output)
    if match is None:
        raise ValueError(f"pgbackrest version printed {output.strip()[:80]!r}")
    return int(match[1]), int(match[2])


def _backup_one(
    runner: PgBackRest,
    repo: Repository,
    backup_type: BackupType,
    progress: Callable[[str], None],
) -> RepoBackup:
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
        done = RepoBackup(repo, True, time.monotonic() - started, made.label, made.type.value)
    except (PgBackRestError, RuntimeError, ValueError) as exc:
        done = RepoBackup(repo, False, time.monotonic() - started, error=str(exc))
    progress(f"{repo.name}: {'done' if done.ok else 'FAILED'}")
    return done


def run_backups(
    runner: PgBackRest,
    customer: Customer,
    backup_type: BackupType,
    progress: Callable[[str], None] = lambda _: None,
    concurrent: bool | None = None,
) -> BackupRun:
    """Back up to repo1 (primary region) and repo2 (copy region): at once where the host's
    pgBackRest allows it (``concurrent`` None: ask it), else one after the other. pgBackRest
    turns a diff or incr into a full when the repository has no full yet, and expires by
    retention after it."""
    run = BackupRun(customer.id, backup_type)
    repos = customer_repositories(customer)
    if concurrent is None:
        try:
            concurrent = pgbackrest_version(runner) >= CONCURRENT_REPOSITORIES_FROM
        except (PgBackRestError, ValueError, OSError, subprocess.SubprocessError):
            concurrent = False  # each backup then reports what is wrong
    if not concurrent:
        run.repositories = [_backup_one(runner, r, backup_type, progress) for r in repos]
        return run
    with ThreadPoolExecutor(max_workers=len(repos), thread_name_prefix="backup") as pool:
        futures = [pool.submit(_backup_one, runner, r, backup_type, progress) for r in repos]
        run.repositories = [future.result() for future in futures]
    return run


def list_backups(runner: PgBackRest, customer: Customer) -> dict[str, list[BackupSet]]:
    """Every backup set per repository, oldest first."""
    info = stanza_info(runner)
    return {repo.name: info.backups_in(repo.index) for repo in customer_repositories(customer)}

"""Retention (S6, S7): keep what the retention window needs, per repository, and nothing less.

Each repository uses pgBackRest's time-based retention (``repoN-retention-full-type=time``):
from the newest full backup back, the first full that finished before ``now - retention`` is the
*anchor*; it and everything after it is kept (so any moment of the window can be restored: from
the anchor, replaying its WAL), everything before it is expired, with the WAL older than the
oldest kept backup. :func:`plan_expiry` is that rule as plain Python, so the plan can be shown
before anything is deleted and checked against what pgBackRest did afterwards.

A retention below the customer's own (never below ``policy.BACKUP_RETENTION_DAYS`` in a valid
customer file) needs an explicit override with a reason; the override is written to the audit
log before anything runs. The newest full backup is never expired, so a repository never loses
its only backup.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from backups.info import BackupSet, BackupType, Repository, customer_repositories, parse_info
from backups.pgbackrest import PgBackRest, PgBackRestError, run_json
from erpcloud import policy
from erpcloud.audit import audit
from erpcloud.model import Customer

log = logging.getLogger(__name__)


# --- the rule -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ExpiryPlan:
    """What time-based retention keeps and expires in one repository."""

    repo: int
    retention_days: int
    cutoff: datetime
    keep: tuple[str, ...]
    expire: tuple[str, ...]
    #: The full backup that covers the start of the window (or the oldest full, if none is old
    #: enough yet): kept with everything after it.
    anchor: str | None
    #: WAL older than this segment goes with the expired backups.
    archive_kept_from: str | None


def plan_expiry(backups: Sequence[BackupSet], now: datetime, retention_days: int) -> ExpiryPlan:
    """pgBackRest 2.45's time-based full retention, as a pure function of ``info`` data."""
    if retention_days < 1:
        raise ValueError("retention_days must be at least 1")
    ordered = sorted(backups, key=lambda b: b.label)
    repos = {b.repo for b in ordered}
    if len(repos) > 1:
        raise ValueError(f"plan one repository at a time, not {sorted(repos)}")
    repo = repos.pop() if repos else 0
    cutoff = now - timedelta(days=retention_days)
    fulls = [b for b in ordered if b.type is BackupType.FULL]
    anchor: BackupSet | None = None
    for full in reversed(fulls):  # newest first: the first that finished before the cutoff
        anchor = full
        if full.stopped < cutoff:
            break
    if anchor is None:
        return ExpiryPlan(
            repo, retention_days, cutoff, tuple(b.label for b in ordered), (), None, None
        )
    expire = tuple(b.label for b in ordered if b.label < anchor.label)
    keep = tuple(b.label for b in ordered if b.label >= anchor.label)
    return ExpiryPlan(repo, retention_days, cutoff, keep, expire, anchor.label, anchor.wal_start)


# --- the command ----------------------------------------------------------------------------------
class RetentionRefused(ValueError):
    """A retention below the promised minimum without an explicit, logged override."""


def required_retention(customer: Customer) -> int:
    """The customer's retention: its own setting, which the model keeps at or above S6's."""
    return max(customer.backup.retention_days, policy.BACKUP_RETENTION_DAYS)


def check_retention(customer: Customer, retention_days: int, override_reason: str | None) -> bool:
    """True when ``retention_days`` needs (and has) an override; raise when it has none."""
    required = required_retention(customer)
    if retention_days >= required:
        return False
    if not (override_reason and override_reason.strip()):
        raise RetentionRefused(
            f"--retention-days {retention_days} is below {customer.id}'s retention of {required} "
            f"days (S6: backups are kept at least {policy.BACKUP_RETENTION_DAYS} days); pass "
            "--below-policy with --reason to override, which is logged"
        )
    return True


@dataclass
class RepoExpiry:
    repo: Repository
    plan: ExpiryPlan
    expired: list[str] = field(default_factory=list)
    remaining: list[str] = field(default_factory=list)
    ok: bool = True
    error: str | None = None


@dataclass
class ExpireReport:
    customer: str
    retention_days: int
    dry_run: bool
    override_reason: str | None
    repositories: list[RepoExpiry]
    audit_log: str | None = None

    @property
    def ok(self) -> bool:
        return all(r.ok for r in self.repositories)


def _backups(runner: PgBackRest, repo: int) -> list[BackupSet]:
    return parse_info(run_json(runner, "info", f"--repo={repo}"), runner.stanza).backups_in(repo)


def expire(
    runner: PgBackRest,
    customer: Customer,
    retention_days: int | None = None,
    override_reason: str | None = None,
    *,
    dry_run: bool = False,
    now: datetime | None = None,
    audit_path: Path | None = None,
) -> ExpireReport:
    """Plan, then (unless ``dry_run``) run ``pgbackrest expire`` on each repository and check
    that it removed exactly what the plan said."""
    days = retention_days if retention_days is not None else required_retention(customer)
    overridden = check_retention(customer, days, override_reason)
    clock = now or datetime.now(UTC)
    entries = [
        RepoExpiry(repo, plan_expiry(_backups(runner, repo.index), clock, days))
        for repo in customer_repositories(customer)
    ]
    report = ExpireReport(
        customer.id, days, dry_run, override_reason if overridden else None, entries
    )
    if overridden:
        log.warning(
            "%s: retention %d days is below the policy; override: %s",
            customer.id,
            days,
            override_reason,
        )
    if overridden or (not dry_run and any(e.plan.expire for e in entries)):
        report.audit_log = str(
            audit(
                {
                    "action": "backup-expire",
                    "customer": customer.id,
                    "retention_days": days,
                    "below_policy": overridden,
                    "reason": override_reason if overridden else None,
                    "dry_run": dry_run,
                    "planned": {e.repo.name: list(e.plan.expire) for e in entries},
                },
                audit_path,
            )
        )
    if dry_run:
        return report
    for entry in entries:
        index = entry.repo.index
        before = {b.label for b in _backups(runner, index)}
        result = runner.run(
            f"--repo={index}",
            f"--repo{index}-retention-full-type=time",
            f"--repo{index}-retention-full={days}",
            "expire",
        )
        after = [b.label for b in _backups(runner, index)]
        entry.expired = sorted(before - set(after))
        entry.remaining = after
        if not result.ok:
            entry.ok, entry.error = False, str(PgBackRestError(result))
        elif set(entry.expired) != set(entry.plan.expire):
            entry.ok = False
            entry.error = (
                f"pgBackRest expired {entry.expired} but the plan said {list(entry.plan.expire)}"
            )
    return report

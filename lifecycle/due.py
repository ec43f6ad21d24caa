"""The daily lifecycle step (S18): what is due for each customer today, and doing it.

For a cancelled customer, written notice starts 30 days of service (``termination_date``). On
that day, once: a final full backup to both repositories (S6: primary and copy region), and
only when both succeeded, the service stops. The data is then retained for 60 days
(``purge_allowed_from``); the step reports when a purge becomes allowed, and never purges
(``erpcloud customer purge`` does, with confirmation). ``today`` is injectable.

Stopping the service is the platform's (:mod:`lifecycle.platform`): the local machines are
powered off cleanly (their disks, the AWS stand-in and its buckets stay); on AWS the instances
are stopped through the stack, and those commands are returned as a plan, labelled as not run.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date
from enum import StrEnum
from pathlib import Path

from backups.info import BackupType
from backups.runs import run_backups
from erpcloud.audit import audit
from erpcloud.model import Customer, LifecycleState
from lifecycle.records import PURGED, TERMINATED, CustomerRecord, append_event
from lifecycle.site import Site


class Due(StrEnum):
    NOTHING = "nothing"  # active
    SUSPENDED = "suspended"  # P3: stopped through the stack, data and backups kept
    NOTICE_RUNNING = "notice-running"  # S18: service until the termination date
    TERMINATE = "terminate"  # S18: final backup, then stop the service: due now
    RETAINED = "retained"  # S18: terminated, data kept until the purge date
    PURGE_ALLOWED = "purge-allowed"  # S18: may be destroyed (by an operator, with confirmation)
    PURGED = "purged"


@dataclass(frozen=True)
class DueItem:
    customer: str
    state: str
    due: Due
    termination_date: date | None
    purge_allowed_from: date | None
    message: str


class TerminationFailed(RuntimeError):
    """The final backup did not reach both repositories: the service keeps running."""


@dataclass
class TerminationReport:
    customer: str
    site: str
    final_backup: dict[str, str | None]
    service: str  # "stopped" (done) or "planned" (commands not run here)
    stopped: list[str] = field(default_factory=list)
    commands: list[str] = field(default_factory=list)
    label: str | None = None


def due_item(customer: Customer, record: CustomerRecord, today: date) -> DueItem:
    """What the step does for ``customer`` on ``today`` (pure: no I/O)."""
    lifecycle = customer.lifecycle
    end, purge_from = lifecycle.termination_date, lifecycle.purge_allowed_from

    def item(due: Due, message: str) -> DueItem:
        return DueItem(customer.id, lifecycle.state.value, due, end, purge_from, message)

    if lifecycle.state is LifecycleState.ACTIVE:
        return item(Due.NOTHING, "active")
    if lifecycle.state is LifecycleState.SUSPENDED:
        return item(
            Due.SUSPENDED, "suspended: instances stopped by the stack; data and backups kept"
        )
    assert end is not None and purge_from is not None
    purged = record.last(PURGED)
    if purged is not None:
        return item(Due.PURGED, f"purged on {purged.at:%Y-%m-%d}")
    if today < end:
        return item(
            Due.NOTICE_RUNNING, f"notice given; service ends {end}, in {(end - today).days} day(s)"
        )
    if record.last(TERMINATED) is None:
        return item(Due.TERMINATE, f"service ended {end}: final backup to both regions, then stop")
    if today < purge_from:
        return item(
            Due.RETAINED,
            f"terminated; data retained until a purge is allowed from {purge_from} "
            f"({(purge_from - today).days} days)",
        )
    return item(
        Due.PURGE_ALLOWED,
        f"purge allowed since {purge_from}: `erpcloud customer purge {customer.id} "
        f"--confirm {customer.id}`",
    )


def terminate(
    site: Site, records_dir: Path, progress: Callable[[str], None] = lambda _: None
) -> TerminationReport:
    """S18 at the termination date: a final full backup to both regions, then stop."""
    customer = site.customer
    with site.pgbackrest() as runner:  # closed before the hosts stop
        run = run_backups(runner, customer, BackupType.FULL, progress)
    labels = {r.repo.name: r.label for r in run.repositories}
    if not run.ok:
        errors = "; ".join(f"{r.repo}: {r.error}" for r in run.repositories if not r.ok)
        raise TerminationFailed(
            f"{customer.id}: the final backup failed ({errors}); the service keeps running "
            "until it succeeds (S18: nothing is lost)"
        )
    action = site.platform.stop_instances(customer, progress)
    report = TerminationReport(
        customer.id,
        f"{site.kind} {site.host.name}",
        labels,
        "stopped" if action.ran else "planned",
        stopped=action.done.get("stopped", []),
        commands=action.commands,
        label=action.label,
    )
    details = {
        "final_backup": labels,
        "service": report.service,
        "stopped": report.stopped,
        "commands": report.commands,
        "termination_date": customer.lifecycle.termination_date,
        "purge_allowed_from": customer.lifecycle.purge_allowed_from,
    }
    append_event(records_dir, customer.id, TERMINATED, details)
    audit({"action": "lifecycle.terminate", "customer": customer.id, **details})
    return report

"""The gap check across the fleet (S5-S7): every production host with a stanza in the
maintenance inventory, a few at a time, each result published for its customer's alarms.

What the operations side runs every ``WAL_GAP_CHECK_INTERVAL`` (``erpcloud backup
verify-fleet``; the rendered timer :func:`erpcloud.render.render_gap_check_units`). A host
that cannot be reached publishes nothing, so its customer's ``wal-gap-check`` alarm fires on
the silence; here it counts as a WARNING (nothing is proven lost).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Final

from backups.gapcheck import GapCheckResult, Outcome, publish_metrics, verify, worst
from backups.targets import BackupTarget
from erpcloud.model import Customer

#: Hosts checked at once: each check reads two repositories in parallel already.
DEFAULT_WORKERS: Final = 4


@dataclass
class FleetEntry:
    customer: str
    via: str
    status: Outcome
    result: GapCheckResult | None = None
    #: Why there is no result (the host could not be reached or the check broke).
    error: str | None = None
    published: list[str] = field(default_factory=list)
    publish_error: str | None = None


@dataclass
class FleetCheck:
    entries: list[FleetEntry]

    @property
    def status(self) -> Outcome:
        return worst(e.status for e in self.entries) if self.entries else Outcome.OK

    @property
    def exit_code(self) -> int:
        return self.status.exit_code


def check_one(
    customer: Customer,
    target: BackupTarget,
    publish: bool,
    check: Callable[..., GapCheckResult] = verify,
) -> FleetEntry:
    try:
        result = check(target.runner, customer)
    except Exception as exc:  # one host's trouble must not stop the fleet's check
        return FleetEntry(customer.id, target.via, Outcome.WARNING, error=f"{exc}")
    finally:
        close = getattr(target.runner, "close", None)
        if close is not None:
            close()
    entry = FleetEntry(customer.id, target.via, result.status, result)
    if publish and target.cloudwatch is not None:
        try:
            data = publish_metrics(result, target.cloudwatch(customer.region))
            entry.published = [m["MetricName"] for m in data]
        except Exception as exc:  # reported; the alarm then sees silence
            entry.publish_error = f"{type(exc).__name__}: {exc}"
            entry.status = worst([entry.status, Outcome.WARNING])
    return entry


def check_fleet(
    fleet: Mapping[str, Customer],
    targets: Mapping[str, BackupTarget],
    publish: bool = False,
    workers: int = DEFAULT_WORKERS,
    progress: Callable[[FleetEntry], None] = lambda _: None,
    check: Callable[..., GapCheckResult] = verify,
) -> FleetCheck:
    """Check every target's customer; results in the order of the customer ids."""
    ids = sorted(targets)

    def one(customer_id: str) -> FleetEntry:
        entry = check_one(fleet[customer_id], targets[customer_id], publish, check)
        progress(entry)
        return entry

    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        entries = list(pool.map(one, ids))
    return FleetCheck(entries)

"""Drill history per customer, and the monthly rotation (S8: the plan is tested every year; our
goal is every customer drilled at least every ``DR_DRILL_ROTATION``).

Pure functions of the fleet, the drill reports and a moment (``as_of``, injectable): a
customer is *overdue* when it has no passing drill within ``DR_DRILL_MAX_INTERVAL`` before it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta

from dr.model import DrillReport
from erpcloud import policy
from erpcloud.model import Customer


@dataclass(frozen=True)
class DrillSummary:
    drill_id: str
    started_at: datetime
    mode: str
    repo: str
    status: str
    rto_seconds: float | None
    rpo_seconds: float | None
    error: str | None


@dataclass
class CustomerHistory:
    customer: str
    in_fleet: bool
    drills: list[DrillSummary] = field(default_factory=list)
    last_drill: datetime | None = None
    last_passed: datetime | None = None
    #: No passing drill within ``DR_DRILL_MAX_INTERVAL`` (S8: tested every year).
    overdue: bool = True
    #: When the monthly rotation wants the next drill (``last_passed + DR_DRILL_ROTATION``).
    due: datetime | None = None


def _summary(report: DrillReport) -> DrillSummary:
    return DrillSummary(
        drill_id=report.drill_id,
        started_at=report.started_at,
        mode=report.mode.value,
        repo=f"repo{report.repo.index} ({report.repo.region})",
        status=report.status.value,
        rto_seconds=report.measures.rto_seconds,
        rpo_seconds=report.measures.rpo_seconds,
        error=report.error,
    )


def history(
    customers: Mapping[str, Customer],
    reports: Iterable[DrillReport],
    as_of: datetime,
    max_interval: timedelta = policy.DR_DRILL_MAX_INTERVAL,
    rotation: timedelta = policy.DR_DRILL_ROTATION,
) -> list[CustomerHistory]:
    """One entry per fleet customer (and per drilled customer no longer in the fleet), each
    with its drills up to ``as_of``, newest first."""
    entries = {cid: CustomerHistory(cid, in_fleet=True) for cid in sorted(customers)}
    for report in sorted(reports, key=lambda r: r.started_at, reverse=True):
        if report.started_at > as_of:
            continue
        entry = entries.setdefault(report.customer, CustomerHistory(report.customer, False))
        entry.drills.append(_summary(report))
    for entry in entries.values():
        if entry.drills:
            entry.last_drill = entry.drills[0].started_at
        passed = [d.started_at for d in entry.drills if d.status == "passed"]
        entry.last_passed = max(passed) if passed else None
        entry.overdue = entry.last_passed is None or as_of - entry.last_passed > max_interval
        entry.due = as_of if entry.last_passed is None else entry.last_passed + rotation
    return sorted(entries.values(), key=lambda e: e.customer)


@dataclass(frozen=True)
class Slot:
    customer: str
    day: date
    due: datetime | None
    last_passed: datetime | None
    overdue: bool


def rotation_schedule(
    entries: Iterable[CustomerHistory],
    start: date,
    rotation: timedelta = policy.DR_DRILL_ROTATION,
) -> list[Slot]:
    """Every fleet customer once in the ``rotation`` period from ``start``, evenly spread (at
    most ``ceil(n / days)`` drills a day), the most overdue first: never drilled, then the
    oldest passing drill."""
    fleet = [e for e in entries if e.in_fleet]
    order = sorted(
        fleet,
        key=lambda e: (
            e.last_passed is not None,
            e.last_passed.timestamp() if e.last_passed else 0.0,
            e.customer,
        ),
    )
    days = max(rotation.days, 1)
    slots = []
    for index, entry in enumerate(order):
        offset = index * days // max(len(order), 1)
        slots.append(
            Slot(
                customer=entry.customer,
                day=start + timedelta(days=offset),
                due=entry.due,
                last_passed=entry.last_passed,
                overdue=entry.overdue,
            )
        )
    return slots

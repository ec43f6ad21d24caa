"""The policy rules of a maintenance change (S11-S14), checked against the fleet and calendar.

Two kinds of errors come out, each naming the file, the field and the rule:

- *structural*: a target that does not exist (the change cannot even be planned);
- *rule*: a broken promise (outside the calendar, too little notice, too many major changes).
  Only these may be overridden, and only explicitly, to drill the runner itself.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta

from erpcloud import policy
from erpcloud.fleet import FieldError
from erpcloud.model import Customer
from maintenance.calendar import (
    CalendarChange,
    Window,
    next_window,
    window_containing,
    window_covering,
    window_on,
)
from maintenance.change import ChangeKind, LoadedChange, Targets
from maintenance.records import RunStore
from maintenance.steps import Step


@dataclass(frozen=True)
class ResolvedWindow:
    """The change's window as it falls in one region."""

    region: str
    starts_at: datetime
    ends_at: datetime
    #: The calendar window it is held in, if it is.
    calendar: Window | None

    def contains(self, moment: datetime) -> bool:
        return self.starts_at <= moment < self.ends_at


@dataclass
class ChangeCheck:
    loaded: LoadedChange
    customers: list[Customer]
    windows: dict[str, ResolvedWindow]
    structural: list[FieldError] = field(default_factory=list)
    rules: list[FieldError] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.structural and not self.rules

    @property
    def errors(self) -> list[FieldError]:
        return [*self.structural, *self.rules]

    def window_for(self, customer: Customer) -> ResolvedWindow | None:
        return self.windows.get(customer.region)

    @property
    def earliest_start(self) -> datetime | None:
        starts = [w.starts_at for w in self.windows.values()]
        return min(starts) if starts else None

    @property
    def year(self) -> int:
        """The calendar year S13 counts major changes in."""
        window = self.loaded.change.window
        if window.date is not None:
            return window.date.year
        assert window.starts_at is not None
        return window.starts_at.year


def _hours(delta: timedelta) -> str:
    hours = delta.total_seconds() / 3600
    if hours < 0:
        return f"{-hours:.1f} h after the window started"
    if hours >= 48:
        return f"{hours / 24:.1f} days ahead"
    return f"{hours:.1f} h ahead"


def change_day(loaded: LoadedChange) -> date:
    window = loaded.change.window
    if window.date is not None:
        return window.date
    assert window.starts_at is not None
    return window.starts_at.date()


def affected_customers(
    targets: Targets, customers: Mapping[str, Customer], file: str, on: date
) -> tuple[list[Customer], list[FieldError]]:
    """The customers a change reaches, and the targets that name nothing (structural errors).

    A customer whose service has ended by then (S18) has nothing left to maintain.
    """
    errors: list[FieldError] = []
    regions = {c.region for c in customers.values()}
    partners = {c.partner.id for c in customers.values()}
    for index, region in enumerate(targets.regions):
        if region not in policy.REGION_TIMEZONES:
            errors.append(
                FieldError(file, f"targets.regions[{index}]", f"no region {region!r} (S10)")
            )
        elif region not in regions:
            errors.append(
                FieldError(file, f"targets.regions[{index}]", f"no customer runs in {region!r}")
            )
    for index, partner in enumerate(targets.partners):
        if partner not in partners:
            errors.append(
                FieldError(
                    file,
                    f"targets.partners[{index}]",
                    f"no partner {partner!r} (known: {', '.join(sorted(partners))}) (P1)",
                )
            )
    for index, customer_id in enumerate(targets.customers):
        if customer_id not in customers:
            errors.append(
                FieldError(file, f"targets.customers[{index}]", f"no customer {customer_id!r}")
            )
    chosen = []
    for customer in sorted(customers.values(), key=lambda c: c.id):
        if not targets.all and not (
            (not targets.regions or customer.region in targets.regions)
            and (not targets.partners or customer.partner.id in targets.partners)
            and (not targets.customers or customer.id in targets.customers)
        ):
            continue
        ended = customer.lifecycle.termination_date
        if ended is not None and ended <= on:
            continue
        chosen.append(customer)
    if not chosen and not errors:
        errors.append(FieldError(file, "targets", "matches no customer in service"))
    return chosen, errors


def resolve_window(
    loaded: LoadedChange, region: str, calendar_changes: Sequence[CalendarChange]
) -> ResolvedWindow | None:
    """Where the change's window falls in ``region``; None if its date is no window there."""
    change = loaded.change
    window = change.window
    if window.date is not None:
        held_in = window_on(window.date, region, calendar_changes)
        if held_in is None:
            return None
        length = window.duration or held_in.duration
        if window.duration is None and change.kind is ChangeKind.MAJOR:
            length = max(held_in.duration, change.expected_downtime)  # S13: up to 24 h
        return ResolvedWindow(region, held_in.starts_at, held_in.starts_at + length, held_in)
    assert window.starts_at is not None and window.duration is not None
    start = window.starts_at
    end = start + window.duration
    if change.kind is ChangeKind.MAJOR:
        held_in = window_containing(start, region, calendar_changes)
    else:
        held_in = window_covering(start, end, region, calendar_changes)
    return ResolvedWindow(region, start, end, held_in)


def _calendar_hint(region: str, after: datetime, changes: Sequence[CalendarChange]) -> str:
    upcoming = next_window(after, region, changes)
    if upcoming is None:
        return ""
    return (
        f"; the next window there is {upcoming.local_start:%Y-%m-%d %H:%M %Z} "
        f"({upcoming.starts_at:%H:%M} UTC)"
    )


def check_change(
    loaded: LoadedChange,
    customers: Mapping[str, Customer],
    calendar_changes: Sequence[CalendarChange] = (),
    store: RunStore | None = None,
) -> ChangeCheck:
    """Every structural and policy error of one change, all at once."""
    change = loaded.change
    file = loaded.file
    chosen, structural = affected_customers(change.targets, customers, file, change_day(loaded))
    for index, customer_id in enumerate(change.targets.customers):
        customer = customers.get(customer_id)
        if customer is not None and customer not in chosen:
            structural.append(
                FieldError(
                    file,
                    f"targets.customers[{index}]",
                    f"{customer_id}'s service ends {customer.lifecycle.termination_date} (S18)",
                )
            )
    regions = sorted({c.region for c in chosen})
    windows: dict[str, ResolvedWindow] = {}
    rules: list[FieldError] = []
    for region in regions:
        resolved = resolve_window(loaded, region, calendar_changes)
        if resolved is None:
            assert change.window.date is not None
            day_start = datetime.combine(change.window.date, time(0), tzinfo=UTC)
            rules.append(
                FieldError(
                    file,
                    "window.date",
                    f"{change.window.date} is not a maintenance window in {region} (the "
                    f"calendar: Monday number {policy.MAINTENANCE_MONDAY_OF_MONTH} of each "
                    f"month, {policy.MAINTENANCE_START_LOCAL:%H:%M} "
                    f"{policy.REGION_TIMEZONES[region]}, plus announced changes)"
                    f"{_calendar_hint(region, day_start, calendar_changes)} (S11)",
                )
            )
            continue
        windows[region] = resolved
    check = ChangeCheck(loaded, chosen, windows, structural, rules)
    if chosen:
        rules.extend(_consistency_rules(check))
        if change.kind is ChangeKind.STANDARD:
            rules.extend(_standard_rules(check, calendar_changes))
        elif change.kind is ChangeKind.EMERGENCY:
            rules.extend(_emergency_rules(check))
        else:
            rules.extend(_major_rules(check, calendar_changes, store))
        rules.extend(_migration_rules(check))
    return check


def _consistency_rules(check: ChangeCheck) -> list[FieldError]:
    loaded = check.loaded
    change = loaded.change
    errors = []
    interrupting = [s for s in loaded.steps if s.interrupts_service]
    if interrupting and change.expected_downtime_minutes == 0:
        errors.append(
            FieldError(
                loaded.file,
                "expected_downtime_minutes",
                f"is 0, but step {interrupting[0].index} ({interrupting[0].name}) interrupts "
                "service: declare the downtime the customers are told about (S11-S13)",
            )
        )
    for region, window in sorted(check.windows.items()):
        length = window.ends_at - window.starts_at
        if change.expected_downtime > length:
            errors.append(
                FieldError(
                    loaded.file,
                    "expected_downtime_minutes",
                    f"{change.expected_downtime_minutes} min is longer than the window in "
                    f"{region} ({int(length.total_seconds() // 60)} min)",
                )
            )
            break
    return errors


def _standard_rules(
    check: ChangeCheck, calendar_changes: Sequence[CalendarChange]
) -> list[FieldError]:
    loaded = check.loaded
    change = loaded.change
    errors = []
    window_minutes = int(policy.MAINTENANCE_WINDOW.total_seconds() // 60)
    for region, window in sorted(check.windows.items()):
        explicit = change.window.starts_at is not None
        if window.calendar is None or (
            explicit and not window.calendar.covers(window.starts_at, window.ends_at)
        ):
            errors.append(
                FieldError(
                    loaded.file,
                    "window",
                    f"{window.starts_at:%Y-%m-%d %H:%M} to {window.ends_at:%H:%M} UTC is outside "
                    f"the calendar window in {region}: standard maintenance is held in the "
                    f"monthly window (S11)"
                    + _calendar_hint(region, window.starts_at, calendar_changes),
                )
            )
    if (
        change.window.duration_minutes is not None
        and change.window.date is not None
        and (change.window.duration_minutes > window_minutes)
    ):
        errors.append(
            FieldError(
                loaded.file,
                "window.duration_minutes",
                f"{change.window.duration_minutes} min is longer than the {window_minutes}-minute "
                "calendar window (S11)",
            )
        )
    if change.expected_downtime >= policy.MAINTENANCE_WINDOW:
        errors.append(
            FieldError(
                loaded.file,
                "expected_downtime_minutes",
                f"{change.expected_downtime_minutes} min is not under the {window_minutes}-minute "
                "window: standard maintenance lasts under one hour (S11); longer work is a major "
                "change (S13)",
            )
        )
    return errors


def _emergency_rules(check: ChangeCheck) -> list[FieldError]:
    loaded = check.loaded
    change = loaded.change
    errors = []
    reasons = ", ".join(sorted(policy.EMERGENCY_REASONS))
    if change.reason not in policy.EMERGENCY_REASONS:
        errors.append(
            FieldError(
                loaded.file,
                "reason",
                f"{change.reason!r} is not a reason for emergency maintenance: only {reasons} "
                "(S12); anything else waits for the calendar window (S11)",
            )
        )
    start = check.earliest_start
    # S14: recovering into another availability zone of the same region happens at once: the
    # service is already down, so the move interrupts nothing that notice could protect.
    interrupting = [s for s in loaded.steps if s.interrupts_service]
    recovery_only = bool(interrupting) and all(_recovery_move(s, check) for s in interrupting)
    if loaded.interrupts_service and not recovery_only and start is not None:
        ahead = start - change.announced_at
        if ahead < policy.EMERGENCY_NOTICE:
            hours = int(policy.EMERGENCY_NOTICE.total_seconds() // 3600)
            errors.append(
                FieldError(
                    loaded.file,
                    "announced_at",
                    f"announced {_hours(ahead)} of the window; emergency work that interrupts "
                    f"service is announced at least {hours} h ahead (S12)",
                )
            )
    return errors


def _major_rules(
    check: ChangeCheck, calendar_changes: Sequence[CalendarChange], store: RunStore | None
) -> list[FieldError]:
    loaded = check.loaded
    change = loaded.change
    errors = []
    if store is not None:
        earlier = store.major_changes(check.year, exclude=change.id)
        if len(earlier) + 1 > policy.MAJOR_CHANGES_PER_YEAR:
            errors.append(
                FieldError(
                    loaded.file,
                    "kind",
                    f"would be major change number {len(earlier) + 1} in {check.year} (already "
                    f"run: {', '.join(earlier)}); at most {policy.MAJOR_CHANGES_PER_YEAR} per "
                    "calendar year (S13)",
                )
            )
    start = check.earliest_start
    if start is not None:
        ahead = start - change.announced_at
        if ahead < policy.MAJOR_CHANGE_NOTICE:
            errors.append(
                FieldError(
                    loaded.file,
                    "announced_at",
                    f"announced {_hours(ahead)} of the window; a major change is announced at "
                    f"least {policy.MAJOR_CHANGE_NOTICE.days} days ahead (S13)",
                )
            )
    if change.expected_downtime > policy.MAJOR_CHANGE_MAX_DOWNTIME:
        limit = int(policy.MAJOR_CHANGE_MAX_DOWNTIME.total_seconds() // 3600)
        errors.append(
            FieldError(
                loaded.file,
                "expected_downtime_minutes",
                f"{change.expected_downtime_minutes} min is more than the {limit} h of downtime "
                "a major change may have (S13)",
            )
        )
    for region, window in sorted(check.windows.items()):
        if window.calendar is None or window.calendar.starts_at > window.starts_at:
            errors.append(
                FieldError(
                    loaded.file,
                    "window",
                    f"{window.starts_at:%Y-%m-%d %H:%M} UTC does not begin in a scheduled window "
                    f"in {region}: a major change is held during the scheduled window (S13)"
                    f"{_calendar_hint(region, window.starts_at, calendar_changes)}",
                )
            )
    return errors


def _recovery_move(step: Step, check: ChangeCheck) -> bool:
    """A migration step that only moves its customers within their own region, to recover."""
    target = step.migration_target
    if target is None:
        return False
    to_region, for_recovery = target
    return for_recovery and all(c.region == to_region for c in check.customers)


def _migration_rules(check: ChangeCheck) -> list[FieldError]:
    """S14: a move to another data centre is announced 30 days ahead, unless it is a move within
    the same region to recover from a failure or disaster."""
    loaded = check.loaded
    change = loaded.change
    errors = []
    for step in loaded.steps:
        target = step.migration_target
        if target is None:
            continue
        to_region, for_recovery = target
        for customer in check.customers:
            if for_recovery and to_region == customer.region:  # see _recovery_move
                continue
            window = check.window_for(customer)
            if window is None:
                continue
            ahead = window.starts_at - change.announced_at
            if ahead < policy.MIGRATION_NOTICE:
                errors.append(
                    FieldError(
                        loaded.file,
                        f"steps[{step.index - 1}]",
                        f"migrates {customer.id} from {customer.region} to {to_region}, "
                        f"announced {_hours(ahead)}; a data-centre migration other than a "
                        "recovery move within the same region is announced at least "
                        f"{policy.MIGRATION_NOTICE.days} days ahead (S14)",
                    )
                )
                break
    return errors

"""The standard maintenance calendar (S11) and the announced changes to it.

Once a month, on the policy's Monday, a window opens at 22:00 in the data centre's own time zone
and lasts the policy's window length. Each region has its own windows: 22:00 in Dublin and 22:00
in New York are five (or, in the weeks between the US and EU daylight-saving switches, four)
hours apart. A window is kept as an aware UTC instant plus the zone, so local and UTC times are
both exact across daylight-saving changes.

A change to the calendar (a moved or an extra window) is itself a change: it is listed in
``maintenance/calendar.yaml`` and must be announced :data:`policy.CALENDAR_CHANGE_NOTICE` ahead.
"""

from __future__ import annotations

import calendar as stdlib_calendar
import datetime as dt
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, Self
from zoneinfo import ZoneInfo

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    model_validator,
)

from erpcloud import policy
from erpcloud.fleet import FieldError
from erpcloud.model import check_region_name
from maintenance.errors import ChangeFileError, errors_from_validation, read_yaml

#: Where announced calendar changes live, relative to the repository root.
CALENDAR_FILE = Path("maintenance/calendar.yaml")


class WindowOrigin(StrEnum):
    STANDARD = "standard"  # the policy's Monday of the month (S11)
    MOVED = "moved"  # a standard window moved to another day by an announced calendar change
    EXTRA = "extra"  # an extra window added by an announced calendar change


def regions_with_calendars(extra: Iterable[str] = ()) -> list[str]:
    """The default regions, their copy regions (S6) and any other region in use (S10)."""
    regions = set(policy.DEFAULT_REGIONS) | set(policy.COPY_REGIONS.values()) | set(extra)
    return sorted(regions)


def region_zone(region: str) -> ZoneInfo:
    try:
        return ZoneInfo(policy.REGION_TIMEZONES[region])
    except KeyError:
        raise ValueError(f"no data-centre time zone is known for region {region!r} (S11)") from None


def nth_monday(year: int, month: int, n: int = policy.MAINTENANCE_MONDAY_OF_MONTH) -> date:
    """The ``n``-th Monday of a month (S11: "once a month, on a Monday")."""
    first = date(year, month, 1)
    offset = (stdlib_calendar.MONDAY - first.weekday()) % 7
    day = first + timedelta(days=offset + 7 * (n - 1))
    if day.month != month:
        raise ValueError(f"{year}-{month:02d} has no Monday number {n}")
    return day


def local_instant(day: date, at: time, region: str) -> datetime:
    """``day`` at wall-clock ``at`` in the region's zone, as an aware UTC instant.

    A wall-clock time skipped by a daylight-saving jump resolves forward (02:30 becomes 03:30),
    a repeated one to its first occurrence (``fold=0``): 22:00 is neither in any zone we serve,
    but the rule is defined rather than left to chance.
    """
    return datetime.combine(day, at, tzinfo=region_zone(region)).astimezone(UTC)


@dataclass(frozen=True)
class Window:
    """One maintenance window of one region: an exact UTC start, a length, the local zone."""

    region: str
    starts_at: datetime  # aware, UTC
    duration: timedelta
    origin: WindowOrigin = WindowOrigin.STANDARD
    calendar_change: str | None = None  # the calendar change that moved or added it

    @property
    def timezone(self) -> str:
        return policy.REGION_TIMEZONES[self.region]

    @property
    def ends_at(self) -> datetime:
        return self.starts_at + self.duration

    @property
    def local_start(self) -> datetime:
        return self.starts_at.astimezone(region_zone(self.region))

    @property
    def local_end(self) -> datetime:
        return self.ends_at.astimezone(region_zone(self.region))

    @property
    def local_date(self) -> date:
        return self.local_start.date()

    def contains(self, moment: datetime) -> bool:
        return self.starts_at <= moment < self.ends_at

    def covers(self, start: datetime, end: datetime) -> bool:
        return self.starts_at <= start and end <= self.ends_at

    def summary(self) -> dict[str, Any]:
        """The window for JSON: local and UTC, with the zone's abbreviation and offset."""
        return {
            "region": self.region,
            "timezone": self.timezone,
            "local_date": self.local_date.isoformat(),
            "weekday": self.local_start.strftime("%A"),
            "local_start": self.local_start.isoformat(),
            "local_end": self.local_end.isoformat(),
            "local_zone": self.local_start.strftime("%Z"),
            "utc_start": self.starts_at.isoformat(),
            "utc_end": self.ends_at.isoformat(),
            "minutes": int(self.duration.total_seconds() // 60),
            "origin": self.origin.value,
            "calendar_change": self.calendar_change,
        }


def standard_window(year: int, month: int, region: str) -> Window:
    day = nth_monday(year, month)
    return Window(
        region=region,
        starts_at=local_instant(day, policy.MAINTENANCE_START_LOCAL, region),
        duration=policy.MAINTENANCE_WINDOW,
    )


def standard_windows(year: int, region: str) -> list[Window]:
    """The twelve standard windows of ``region`` in ``year`` (S11)."""
    return [standard_window(year, month, region) for month in range(1, 13)]


# --- announced changes to the calendar ---------------------------------------------------------
RegionName = Annotated[str, AfterValidator(check_region_name)]


class CalendarAction(StrEnum):
    MOVED = "moved"
    EXTRA = "extra"


class CalendarChange(BaseModel):
    """A moved or extra window (S11: changes to the standard calendar are announced ahead)."""

    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)

    id: Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9-]{2,79}$")]
    action: CalendarAction
    #: The regions it applies to; every region when left out.
    regions: list[RegionName] | None = None
    #: For ``moved``: the local date of the standard window it replaces.
    replaces: dt.date | None = None
    #: The local date of the new window.
    date: dt.date
    #: The new window's local start (default: the standard start, S11).
    start_local: time = policy.MAINTENANCE_START_LOCAL
    reason: Annotated[str, Field(min_length=3)]
    announced_at: AwareDatetime

    @model_validator(mode="after")
    def _replaces_iff_moved(self) -> Self:
        if self.action is CalendarAction.MOVED and self.replaces is None:
            raise ValueError("a moved window names the standard window it replaces: 'replaces'")
        if self.action is CalendarAction.EXTRA and self.replaces is not None:
            raise ValueError("an extra window replaces nothing: remove 'replaces'")
        return self

    def applies_to(self, region: str) -> bool:
        return self.regions is None or region in self.regions


class CalendarFile(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    changes: list[CalendarChange] = Field(default_factory=list)


def effective_windows(
    year: int, region: str, changes: Sequence[CalendarChange] = ()
) -> list[Window]:
    """The region's windows in ``year`` (by local date) after announced calendar changes."""
    windows = {w.local_date: w for w in standard_windows(year, region)}
    for change in changes:
        if not change.applies_to(region):
            continue
        if change.replaces is not None and change.replaces.year == year:
            windows.pop(change.replaces, None)
        if change.date.year == year:
            windows[change.date] = Window(
                region=region,
                starts_at=local_instant(change.date, change.start_local, region),
                duration=policy.MAINTENANCE_WINDOW,
                origin=WindowOrigin(change.action.value),
                calendar_change=change.id,
            )
    return [windows[day] for day in sorted(windows)]


def window_on(day: date, region: str, changes: Sequence[CalendarChange] = ()) -> Window | None:
    """The window whose local date is ``day``, if the (changed) calendar has one."""
    return next(
        (w for w in effective_windows(day.year, region, changes) if w.local_date == day), None
    )


def windows_near(moment: datetime, region: str, changes: Sequence[CalendarChange]) -> list[Window]:
    year = moment.astimezone(region_zone(region)).year
    found: list[Window] = []
    for y in (year - 1, year, year + 1):
        found.extend(effective_windows(y, region, changes))
    return found


def window_covering(
    start: datetime, end: datetime, region: str, changes: Sequence[CalendarChange] = ()
) -> Window | None:
    """The calendar window that holds all of ``[start, end]`` in ``region``, if any."""
    return next((w for w in windows_near(start, region, changes) if w.covers(start, end)), None)


def window_containing(
    moment: datetime, region: str, changes: Sequence[CalendarChange] = ()
) -> Window | None:
    """The calendar window open at ``moment`` in ``region``, if any."""
    return next((w for w in windows_near(moment, region, changes) if w.contains(moment)), None)


def next_window(
    after: datetime, region: str, changes: Sequence[CalendarChange] = ()
) -> Window | None:
    return next((w for w in windows_near(after, region, changes) if w.starts_at > after), None)


def calendar_change_errors(file: str, changes: Sequence[CalendarChange]) -> list[FieldError]:
    """The rules of calendar changes: real windows replaced, no clash, announced in time (S11)."""
    errors: list[FieldError] = []
    days = policy.CALENDAR_CHANGE_NOTICE.days
    for index, change in enumerate(changes):
        where = f"changes[{index}]"
        regions = change.regions or sorted(policy.REGION_TIMEZONES)
        for region in regions:
            affected: list[datetime] = [local_instant(change.date, change.start_local, region)]
            if change.replaces is not None:
                standard = standard_window(change.replaces.year, change.replaces.month, region)
                if standard.local_date != change.replaces:
                    errors.append(
                        FieldError(
                            file,
                            f"{where}.replaces",
                            f"{change.replaces} is not a standard window in {region} (the "
                            f"standard window that month is {standard.local_date}) (S11)",
                        )
                    )
                    break
                affected.append(standard.starts_at)
            elif any(
                w.local_date == change.date for w in standard_windows(change.date.year, region)
            ):
                errors.append(
                    FieldError(
                        file,
                        f"{where}.date",
                        f"{change.date} is already a standard window in {region}; an extra "
                        "window needs another day (S11)",
                    )
                )
                break
            earliest = min(affected)
            if change.announced_at > earliest - policy.CALENDAR_CHANGE_NOTICE:
                ahead = earliest - change.announced_at
                errors.append(
                    FieldError(
                        file,
                        f"{where}.announced_at",
                        f"announced {_days(ahead)} before the affected window in {region} "
                        f"({earliest:%Y-%m-%d %H:%M} UTC); a change to the calendar is "
                        f"announced at least {days} days ahead (S11)",
                    )
                )
                break
    ids = [c.id for c in changes]
    for duplicate in sorted({i for i in ids if ids.count(i) > 1}):
        errors.append(FieldError(file, "changes", f"id {duplicate!r} is used twice"))
    return errors


def _days(delta: timedelta) -> str:
    if delta < timedelta(0):
        return f"{-delta.total_seconds() / 86400:.1f} days after, not"
    return f"{delta.total_seconds() / 86400:.1f} days"


def load_calendar_changes(path: Path = CALENDAR_FILE) -> list[CalendarChange]:
    """Read and check ``maintenance/calendar.yaml``; a missing file means no changes."""
    if not path.exists():
        return []
    file = str(path)
    data = read_yaml(path)
    if data is None:
        return []
    try:
        parsed = CalendarFile.model_validate(data)
    except ValidationError as exc:
        raise ChangeFileError(errors_from_validation(file, exc)) from None
    errors = calendar_change_errors(file, parsed.changes)
    if errors:
        raise ChangeFileError(errors)
    return list(parsed.changes)

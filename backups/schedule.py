"""The backup schedule (S6): a full backup weekly, a differential every other night.

Every night at ``customer.backup.nightly_local_time`` in the data centre's time zone (the
low-traffic hours), on ``policy.FULL_BACKUP_ISO_WEEKDAY`` a full backup and on the other days a
differential one. A differential depends only on its full, so each day has its own restorable
set: the day's backup plus, for a differential, the week's full (two sets to read, never a
chain of incrementals). The instance runs it with the systemd timers rendered by
:func:`erpcloud.render.render_backup_units`; continuous WAL archiving (S7) fills the time
between backups.

Where the nightly time does not exist (the night the clocks go forward, e.g. 01:30 in Dublin on
the last Sunday of March), the backup starts at the instant the clocks jumped to.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

from backups.info import BackupType
from erpcloud import policy
from erpcloud.model import Customer


def scheduled_type(day: date) -> BackupType:
    """The backup type of a day (a local date in the data centre)."""
    if day.isoweekday() == policy.FULL_BACKUP_ISO_WEEKDAY:
        return BackupType.FULL
    return BackupType.DIFF


@dataclass(frozen=True)
class ScheduledBackup:
    day: date
    type: BackupType
    starts_at: datetime  # UTC
    local_start: datetime  # the data centre's wall clock

    @property
    def restore_needs(self) -> tuple[BackupType, ...]:
        """The sets a restore of this day reads: a full, or a differential and its full."""
        return (BackupType.FULL,) if self.type is BackupType.FULL else (BackupType.FULL, self.type)


def start_of(customer: Customer, day: date) -> datetime:
    """The UTC start of ``day``'s backup; a nonexistent local time maps past the gap (fold=0)."""
    local = datetime.combine(day, customer.backup.nightly_local_time, tzinfo=customer.timezone)
    return local.astimezone(UTC)


def nightly_backups(customer: Customer, first_day: date, days: int) -> list[ScheduledBackup]:
    """The backups of ``days`` consecutive local days from ``first_day``."""
    result = []
    for offset in range(days):
        day = first_day + timedelta(days=offset)
        starts_at = start_of(customer, day)
        result.append(
            ScheduledBackup(
                day, scheduled_type(day), starts_at, starts_at.astimezone(customer.timezone)
            )
        )
    return result


def restorable_days(schedule: list[ScheduledBackup]) -> list[date]:
    """Days whose backup can be restored from the schedule alone: a full on or before it."""
    seen_full = False
    days = []
    for backup in sorted(schedule, key=lambda b: b.starts_at):
        seen_full = seen_full or backup.type is BackupType.FULL
        if seen_full:
            days.append(backup.day)
    return days

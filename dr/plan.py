"""Planning a drill from what one repository holds: the backup set, the WAL range, the gaps.

Pure functions of the repository's contents (read once through
:func:`backups.gapcheck.collect_repository`) and the drill's target, composed from the WAL
arithmetic of :mod:`backups.wal`. Refusals name what is wrong: a target in the future or before
the oldest backup, a repository without a usable backup, the first WAL segment missing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Final

from backups.gapcheck import ArchiveListing, RepoContents
from backups.info import BackupSet
from backups.wal import (
    WAL_SEGMENT_SIZE,
    Segment,
    TimelineSpan,
    expected_segments,
    span_of,
    timeline_path,
)
from dr.model import BackupUsed, WalRange


class DrillRefused(Exception):
    """The drill cannot go on: the message names what is wrong and why (a FAILED report)."""

    def __init__(self, step: str, message: str) -> None:
        super().__init__(message)
        self.step = step
        self.message = message


@dataclass(frozen=True)
class PointTarget:
    """Production's snapshot: recovery stops at its restore point (``--type=name``)."""

    restore_point: str
    wal_file: str
    time: datetime


@dataclass(frozen=True)
class TimeTarget:
    time: datetime


@dataclass(frozen=True)
class LatestTarget:
    """The region is lost at ``event``: the repository as it was then is all there is."""

    event: datetime


Target = PointTarget | TimeTarget | LatestTarget

#: The resolution of a backup's stop time in pgBackRest's ``info`` (whole seconds).
BACKUP_STOP_RESOLUTION: Final = timedelta(seconds=1)


def parse_target_time(text: str) -> datetime:
    """An ISO 8601 moment with its UTC offset (``2026-11-23T09:30:00Z``); anything else refused."""
    try:
        moment = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(
            f"--target-time: {text!r} is not an ISO 8601 time (e.g. 2026-11-23T09:30:00Z)"
        ) from None
    if moment.tzinfo is None:
        raise ValueError(f"--target-time: {text!r} needs a UTC offset (e.g. Z or +01:00)")
    return moment


def check_not_future(target: TimeTarget, now: datetime) -> None:
    if target.time > now:
        raise DrillRefused(
            "plan",
            f"target time {target.time.isoformat()} is in the future (now "
            f"{now.isoformat(timespec='seconds')}): nothing can be recovered from there",
        )


@dataclass(frozen=True)
class DrillPlan:
    """The backup set and the WAL the restore reads, with what is missing from it."""

    repo: str
    backup: BackupSet
    archive_id: str
    path: tuple[TimelineSpan, ...]
    first: Segment
    last: Segment
    served_until: Segment
    needed: int
    missing: tuple[Segment, ...] = field(default=())

    @property
    def first_missing(self) -> str | None:
        return self.missing[0].name() if self.missing else None

    def backup_used(self) -> BackupUsed:
        return BackupUsed.model_validate(self.backup, from_attributes=True)

    def wal_range(self) -> WalRange:
        return WalRange(
            archive_id=self.archive_id,
            timelines=sorted({span.timeline for span in self.path}),
            first=self.first.name(),
            last=self.last.name(),
            served_until=self.served_until.name(),
            segments_needed=self.needed,
            first_missing=self.first_missing,
            missing=len(self.missing),
        )


def _choose_backup(contents: RepoContents, target: Target) -> BackupSet:
    repo = contents.repo
    backups = [b for b in contents.info.backups_in(repo.index) if not b.error]
    if not backups:
        raise DrillRefused("plan", f"{repo} holds no backup to restore (S6 wants one a day)")
    if isinstance(target, LatestTarget):
        return backups[-1]
    if isinstance(target, PointTarget):
        limit = Segment.parse(target.wal_file)
        usable = [
            b
            for b in backups
            if b.stopped <= target.time and Segment.parse(b.wal_stop).number <= limit.number
        ]
        what = f"restore point {target.restore_point} ({target.wal_file})"
    else:
        # pgBackRest records the stop in whole seconds: the backup is consistent only somewhere
        # in the second after it, so a target inside that second could stop recovery too early.
        usable = [b for b in backups if b.stopped + BACKUP_STOP_RESOLUTION <= target.time]
        what = f"target time {target.time.isoformat()}"
    if not usable:
        oldest = backups[0]
        raise DrillRefused(
            "plan",
            f"{what} is before the oldest backup in {repo} ({oldest.label}, finished "
            f"{oldest.stopped.isoformat()}): a restore starts from a finished backup",
        )
    return max(usable, key=lambda b: b.stopped)


def _history_path(
    contents: RepoContents, archive_id: str, newest: int, segment_size: int
) -> list[TimelineSpan]:
    if newest == 1:
        return timeline_path(1, [], segment_size)
    history = contents.histories.get((archive_id, newest))
    if history is None:
        raise DrillRefused(
            "plan",
            f"{newest:08X}.history is missing from {contents.repo} (archive {archive_id}): "
            f"timeline {newest} cannot be followed",
        )
    return timeline_path(newest, history, segment_size)


def plan_drill(
    contents: RepoContents, target: Target, segment_size: int = WAL_SEGMENT_SIZE
) -> DrillPlan:
    """Choose the backup set and the WAL range for ``target``; list every missing segment.

    The backup is the newest that finished before the target (the newest of all for latest).
    The range runs from the backup's first segment to the target's: the restore point's
    segment, the first segment archived at or after the target time, or the newest archived
    segment for latest. The restore is served no segment past ``served_until``.
    """
    repo = contents.repo
    backup = _choose_backup(contents, target)
    archive_id = contents.info.archive_id(backup)
    listing = contents.archives.get(archive_id, ArchiveListing())
    start = Segment.parse(backup.wal_start, segment_size)
    stop = Segment.parse(backup.wal_stop, segment_size)
    timelines = [listing.newest_timeline or 1, start.timeline]
    if isinstance(target, PointTarget):
        timelines.append(Segment.parse(target.wal_file, segment_size).timeline)
    path = _history_path(contents, archive_id, max(timelines), segment_size)
    if span_of(path, start) is None:
        raise DrillRefused(
            "plan", f"backup {backup.label} lies on a timeline abandoned before the newest one"
        )
    archived = sorted(
        (s for s in listing.segments if span_of(path, s) is not None and s.number >= start.number),
        key=lambda s: s.position,
    )
    newest = archived[-1] if archived else stop
    if isinstance(target, PointTarget):
        last = Segment.parse(target.wal_file, segment_size)
        if span_of(path, last) is None:
            raise DrillRefused(
                "plan", f"restore point {target.restore_point} lies off the repository's history"
            )
        served = last
    elif isinstance(target, TimeTarget):
        after = [s for s in archived if listing.segments[s] >= target.time]
        if not after:
            newest_at = listing.segments[newest].isoformat() if archived else "never"
            raise DrillRefused(
                "plan",
                f"target time {target.time.isoformat()} is after the newest WAL in {repo} "
                f"({newest.name(segment_size)}, archived {newest_at}): the archive does not "
                "reach it yet",
            )
        last = after[0]
        served = newest
    else:
        last = served = newest
    if last.position < stop.position:
        last = stop
    if served.position < last.position:
        served = last
    missing: list[Segment] = []
    needed = 0
    for segment in expected_segments(path, start, last.number):
        needed += 1
        if segment not in listing.segments:
            missing.append(segment)
    return DrillPlan(
        repo=str(repo),
        backup=backup,
        archive_id=archive_id,
        path=tuple(path),
        first=start,
        last=last,
        served_until=served,
        needed=needed,
        missing=tuple(missing),
    )


def refuse_gaps(plan: DrillPlan) -> None:
    """Stop the drill at the first missing segment (S7: the restore could not pass it)."""
    if plan.missing:
        raise DrillRefused(
            "plan",
            f"WAL segment {plan.first_missing} is missing from {plan.repo} ({len(plan.missing)} "
            f"missing of {plan.needed} needed from backup {plan.backup.label}'s start "
            f"{plan.first.name()} to {plan.last.name()}): the restore cannot pass it",
        )

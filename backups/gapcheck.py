"""The WAL gap check (S7): is every segment a restore needs in each repository?

pgBackRest 2.45's own ``verify`` exits 0 when a segment is missing, so this check reads the
repositories' contents itself (``info --output=json`` for the backups, ``repo-ls --recurse
--output=json`` for the archive, ``repo-get`` for ``.history`` files) and decides, per
repository and timeline, from the oldest kept backup's first WAL segment to the newest archived
one. Three outcomes, like WAL-G's ``wal-verify``:

* FAILURE: a segment is missing (the first one and the repository are named), a repository has
  no backup, or cannot be read for a reason other than the network;
* WARNING: the newest segment is older than ``policy.ARCHIVE_LATE_AFTER`` while the database
  has finished newer ones, one repository trails the other for longer than
  ``policy.ARCHIVE_COPY_LAG_GRACE``, or a repository cannot be reached (S3 down: nothing is
  proven lost yet, and archiving keeps retrying);
* OK otherwise.

The result is published as CloudWatch metrics (S5) by :func:`publish_metrics`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any, Final

from backups.info import (
    REPO_OTHER_ERROR,
    BackupSet,
    Repository,
    StanzaInfo,
    customer_repositories,
    parse_info,
)
from backups.pgbackrest import PgBackRest, PgBackRestError, run_json
from backups.wal import (
    WAL_SEGMENT_SIZE,
    Segment,
    TimelineSwitch,
    expected_segments,
    parse_history,
    span_of,
    timeline_path,
)
from erpcloud import policy
from erpcloud.model import Customer
from erpcloud.output import EXIT_FAILED, EXIT_OK, EXIT_WARNING
from erpcloud.render import METRICS_NAMESPACE

#: How long one pgBackRest read may stall before the repository counts as unreachable.
#: pgBackRest retries a few times within a command, so "unreachable" takes a few of these.
VERIFY_IO_TIMEOUT_SECONDS: Final = 15

_ARCHIVE_ID = re.compile(r"^\d+(?:\.\d+)?-\d+$")
#: ``<segment>-<sha1>[.<compression>]``; ``.partial`` files and ``.backup`` labels are not WAL
#: a recovery replays from the archive.
_SEGMENT_FILE = re.compile(r"^(?P<segment>[0-9A-F]{24})-[0-9a-f]{40}(?:\.[a-z0-9]+)?$")
_HISTORY_FILE = re.compile(r"^(?P<timeline>[0-9A-F]{8})\.history$")


class Outcome(StrEnum):
    OK = "OK"
    WARNING = "WARNING"
    FAILURE = "FAILURE"

    @property
    def severity(self) -> int:
        """0, 1, 2: the value of the ``WalGapCheckStatus`` metric (S5 alarms on it)."""
        return {Outcome.OK: 0, Outcome.WARNING: 1, Outcome.FAILURE: 2}[self]

    @property
    def exit_code(self) -> int:
        return {Outcome.OK: EXIT_OK, Outcome.WARNING: EXIT_WARNING, Outcome.FAILURE: EXIT_FAILED}[
            self
        ]


def worst(outcomes: Iterable[Outcome]) -> Outcome:
    return max(outcomes, key=lambda o: o.severity, default=Outcome.OK)


@dataclass(frozen=True)
class Finding:
    outcome: Outcome
    code: str  # missing-segment, no-backup, late, behind, unreachable, history-missing, ...
    message: str


# --- what a repository holds ----------------------------------------------------------------------
@dataclass
class ArchiveListing:
    """One archive id's WAL (e.g. ``15-1``): segments with their upload times, history files."""

    segments: dict[Segment, datetime] = field(default_factory=dict)
    history_timelines: set[int] = field(default_factory=set)

    @property
    def newest_timeline(self) -> int | None:
        timelines = {s.timeline for s in self.segments} | self.history_timelines
        return max(timelines) if timelines else None


def parse_archive_listing(
    listing: dict[str, dict[str, Any]], segment_size: int = WAL_SEGMENT_SIZE
) -> dict[str, ArchiveListing]:
    """``repo-ls --recurse --output=json archive/<stanza>`` → archive id → its WAL."""
    archives: dict[str, ArchiveListing] = {}
    for path, entry in listing.items():
        if entry.get("type") != "file":
            continue
        parts = path.split("/")
        if not _ARCHIVE_ID.match(parts[0]):
            continue
        archive = archives.setdefault(parts[0], ArchiveListing())
        name = parts[-1]
        if len(parts) == 3 and (match := _SEGMENT_FILE.match(name)):
            segment = Segment.parse(match["segment"], segment_size)
            archive.segments[segment] = datetime.fromtimestamp(int(entry.get("time", 0)), UTC)
        elif len(parts) == 2 and (match := _HISTORY_FILE.match(name)):
            archive.history_timelines.add(int(match["timeline"], 16))
    return archives


@dataclass
class RepoContents:
    """Everything the check needs from one repository, read once."""

    repo: Repository
    info: StanzaInfo
    archives: dict[str, ArchiveListing]
    #: ``(archive id, timeline) → the parsed .history file`` for each archive's newest timeline.
    histories: dict[tuple[str, int], list[TimelineSwitch]] = field(default_factory=dict)


@dataclass
class RepoCheck:
    """One repository's verdict, with the facts behind it."""

    repo: Repository
    status: Outcome
    findings: list[Finding]
    first_missing: str | None = None
    missing_count: int = 0
    oldest_backup: str | None = None
    checked_from: str | None = None
    newest: str | None = None
    newest_archived_at: datetime | None = None
    newest_age_seconds: float | None = None
    segments_checked: int = 0
    timelines: list[int] = field(default_factory=list)
    backups: int = 0


def _finish(check: RepoCheck) -> RepoCheck:
    check.status = worst(f.outcome for f in check.findings)
    return check


def _database_has_unarchived(database_wal: str | None, newest: Segment) -> bool:
    """True (or unknown) when the database finished a segment newer than ``newest``."""
    if database_wal is None:
        return True
    try:
        current = Segment.parse(database_wal)
    except ValueError:
        return True
    return current.number - 1 > newest.number


def check_repository(
    contents: RepoContents,
    now: datetime,
    late_after: timedelta = policy.ARCHIVE_LATE_AFTER,
    database_wal: str | None = None,
    segment_size: int = WAL_SEGMENT_SIZE,
) -> RepoCheck:
    """The verdict on one repository: a pure function of what was read from it."""
    repo = contents.repo
    check = RepoCheck(repo, Outcome.OK, [])
    backups = [b for b in contents.info.backups_in(repo.index) if not b.error]
    check.backups = len(backups)
    if not backups:
        check.findings.append(
            Finding(Outcome.FAILURE, "no-backup", f"{repo} holds no backup (S6 wants one a day)")
        )
        return _finish(check)
    check.oldest_backup = backups[0].label
    by_archive: dict[str, list[BackupSet]] = {}
    for backup in backups:
        by_archive.setdefault(contents.info.archive_id(backup), []).append(backup)
    current_archive = contents.info.current_archive_id(repo.index)
    for archive_id in sorted(by_archive):
        _check_archive(
            check,
            contents,
            archive_id,
            by_archive[archive_id],
            now,
            late_after if archive_id == current_archive else None,
            database_wal,
            segment_size,
        )
    if current_archive not in by_archive:
        check.findings.append(
            Finding(
                Outcome.WARNING,
                "no-backup-of-current-database",
                f"{repo}: no backup of the current database ({current_archive}) yet",
            )
        )
    return _finish(check)


def _check_archive(
    check: RepoCheck,
    contents: RepoContents,
    archive_id: str,
    backups: Sequence[BackupSet],
    now: datetime,
    late_after: timedelta | None,
    database_wal: str | None,
    segment_size: int,
) -> None:
    repo = contents.repo
    listing = contents.archives.get(archive_id, ArchiveListing())
    starts = [Segment.parse(b.wal_start, segment_size) for b in backups]
    newest_timeline = max([listing.newest_timeline or 1, *(s.timeline for s in starts)])
    history: list[TimelineSwitch] = []
    if newest_timeline > 1:
        found = contents.histories.get((archive_id, newest_timeline))
        if found is None:
            check.findings.append(
                Finding(
                    Outcome.FAILURE,
                    "history-missing",
                    f"{repo}: {newest_timeline:08X}.history is missing from archive "
                    f"{archive_id}, so timeline {newest_timeline} cannot be followed",
                )
            )
            return
        history = found
    path = timeline_path(newest_timeline, history, segment_size)
    check.timelines = sorted({*check.timelines, *(span.timeline for span in path)})
    on_path = [(b, s) for b, s in zip(backups, starts, strict=True) if span_of(path, s)]
    for backup, start in zip(backups, starts, strict=True):
        if span_of(path, start) is None:
            check.findings.append(
                Finding(
                    Outcome.WARNING,
                    "off-history",
                    f"{repo}: backup {backup.label} (from {start.name(segment_size)}) lies on a "
                    f"timeline abandoned before timeline {newest_timeline}",
                )
            )
    if not on_path:
        check.findings.append(
            Finding(
                Outcome.FAILURE,
                "no-backup-on-history",
                f"{repo}: no backup of {archive_id} lies on the history of timeline "
                f"{newest_timeline}",
            )
        )
        return
    oldest, start = on_path[0]
    on_history = [s for s in listing.segments if span_of(path, s) is not None]
    newest = max(on_history, key=lambda s: s.position, default=None)
    stop = Segment.parse(on_path[-1][0].wal_stop, segment_size)
    last_number = max(stop.number, newest.number if newest else -1)
    missing: list[Segment] = []
    checked = 0
    for segment in expected_segments(path, start, last_number):
        checked += 1
        if segment not in listing.segments:
            missing.append(segment)
    check.segments_checked += checked
    check.checked_from = check.checked_from or start.name(segment_size)
    if missing:
        first = missing[0].name(segment_size)
        check.first_missing = check.first_missing or first
        check.missing_count += len(missing)
        check.findings.append(
            Finding(
                Outcome.FAILURE,
                "missing-segment",
                f"WAL segment {first} is missing from {repo} ({len(missing)} missing of "
                f"{checked} needed from backup {oldest.label} on): a restore cannot pass it",
            )
        )
    if late_after is None or newest is None:
        return
    archived_at = listing.segments[newest]
    age = max((now - archived_at).total_seconds(), 0.0)
    check.newest = newest.name(segment_size)
    check.newest_archived_at = archived_at
    check.newest_age_seconds = age
    if age > late_after.total_seconds() and _database_has_unarchived(database_wal, newest):
        check.findings.append(
            Finding(
                Outcome.WARNING,
                "late",
                f"{repo}: the newest archived segment {check.newest} is {age / 60:.1f} min old "
                f"(warning after {late_after.total_seconds() / 60:.0f} min, S7)",
            )
        )


def compare_repositories(
    contents: Sequence[RepoContents], checks: Sequence[RepoCheck], now: datetime, grace: timedelta
) -> None:
    """WARNING on a repository that lacks segments another has held for longer than ``grace``."""
    for mine, check in zip(contents, checks, strict=True):
        if check.newest is None:
            continue
        newest = Segment.parse(check.newest)
        for other in contents:
            if other is mine:
                continue
            archive_id = other.info.current_archive_id(other.repo.index)
            theirs = other.archives.get(archive_id or "", ArchiveListing()).segments
            lacking = sorted(
                s
                for s, archived_at in theirs.items()
                if s.position > newest.position
                and s not in mine.archives.get(archive_id or "", ArchiveListing()).segments
                and now - archived_at > grace
            )
            if lacking:
                check.findings.append(
                    Finding(
                        Outcome.WARNING,
                        "behind",
                        f"{mine.repo} is behind {other.repo.name}: it lacks {len(lacking)} "
                        f"segment(s) from {lacking[0].name()} that {other.repo.name} has held "
                        f"for over {grace.total_seconds() / 60:.0f} min",
                    )
                )
        _finish(check)


# --- reading the repositories ---------------------------------------------------------------------
class RepositoryUnreachable(RuntimeError):
    """The repository's storage did not answer (S3 down, network): nothing proven lost."""


def _is_unreachable(message: str) -> bool:
    return "HostConnectError" in message or "timeout" in message.lower()


def collect_repository(
    runner: PgBackRest,
    repo: Repository,
    io_timeout: int = VERIFY_IO_TIMEOUT_SECONDS,
    segment_size: int = WAL_SEGMENT_SIZE,
) -> RepoContents:
    """Read one repository: its backups, its archive listing and the needed ``.history`` files."""
    options = (f"--repo={repo.index}", f"--io-timeout={io_timeout}")
    try:
        info = parse_info(run_json(runner, "info", *options), runner.stanza)
        status = info.repos.get(repo.index)
        if status is not None and status.code == REPO_OTHER_ERROR:
            if _is_unreachable(status.message):
                raise RepositoryUnreachable(status.message)
            raise RuntimeError(status.message)
        listing = run_json(runner, *options, "repo-ls", "--recurse", f"archive/{runner.stanza}")
        archives = parse_archive_listing(listing, segment_size)
        contents = RepoContents(repo, info, archives)
        for archive_id, archive in archives.items():
            newest = archive.newest_timeline
            if newest and newest > 1 and newest in archive.history_timelines:
                text = runner.run(
                    *options,
                    "repo-get",
                    f"archive/{runner.stanza}/{archive_id}/{newest:08X}.history",
                )
                if not text.ok:
                    raise PgBackRestError(text)
                contents.histories[(archive_id, newest)] = parse_history(text.stdout)
    except PgBackRestError as exc:
        if exc.unreachable or _is_unreachable(exc.result.message):
            raise RepositoryUnreachable(exc.result.message) from None
        raise
    return contents


# --- the whole check ------------------------------------------------------------------------------
@dataclass
class GapCheckResult:
    customer: str
    checked_at: datetime
    status: Outcome
    repositories: list[RepoCheck]

    @property
    def exit_code(self) -> int:
        return self.status.exit_code

    @property
    def findings(self) -> list[Finding]:
        return [f for r in self.repositories for f in r.findings]


def _unreadable(repo: Repository, exc: Exception) -> RepoCheck:
    if isinstance(exc, RepositoryUnreachable):
        finding = Finding(
            Outcome.WARNING,
            "unreachable",
            f"{repo} cannot be reached ({str(exc).strip()}); archiving retries until it can",
        )
    else:
        finding = Finding(Outcome.FAILURE, "repository-error", f"{repo} cannot be read: {exc}")
    return RepoCheck(repo, finding.outcome, [finding])


def verify(
    runner: PgBackRest,
    customer: Customer,
    *,
    now: datetime | None = None,
    late_after: timedelta = policy.ARCHIVE_LATE_AFTER,
    behind_grace: timedelta = policy.ARCHIVE_COPY_LAG_GRACE,
    io_timeout: int = VERIFY_IO_TIMEOUT_SECONDS,
    ask_database: bool = True,
    segment_size: int = WAL_SEGMENT_SIZE,
) -> GapCheckResult:
    """Check both repositories (read in parallel: two regions, independent) and compare them."""
    repos = customer_repositories(customer)
    with ThreadPoolExecutor(max_workers=len(repos)) as pool:
        futures = [
            pool.submit(collect_repository, runner, repo, io_timeout, segment_size)
            for repo in repos
        ]
    database_wal = runner.current_wal_file() if ask_database else None
    # After reading: a segment uploaded during the reads must not look as if from the future.
    clock = now or datetime.now(UTC)
    readable: list[RepoContents] = []
    checks: list[RepoCheck] = []
    for repo, future in zip(repos, futures, strict=True):
        try:
            contents = future.result()
        except (RepositoryUnreachable, PgBackRestError, RuntimeError, ValueError) as exc:
            checks.append(_unreadable(repo, exc))
            continue
        readable.append(contents)
        checks.append(check_repository(contents, clock, late_after, database_wal, segment_size))
    compare_repositories(
        readable,
        [c for c in checks if any(c.repo == r.repo for r in readable)],
        clock,
        behind_grace,
    )
    return GapCheckResult(customer.id, clock, worst(c.status for c in checks), checks)


# --- monitoring (S5) ------------------------------------------------------------------------------
def metric_data(result: GapCheckResult) -> list[dict[str, Any]]:
    """CloudWatch ``MetricData`` for :data:`erpcloud.render.METRICS_NAMESPACE`.

    ``WalGapCheckStatus`` (0 OK, 1 WARNING, 2 FAILURE) per customer; per repository
    ``WalRepositoryStatus``, ``WalMissingSegments`` and, when known, ``WalNewestArchiveAgeSeconds``.
    """
    customer = {"Name": "Customer", "Value": result.customer}
    data: list[dict[str, Any]] = [
        {
            "MetricName": "WalGapCheckStatus",
            "Dimensions": [customer],
            "Timestamp": result.checked_at,
            "Value": float(result.status.severity),
            "Unit": "None",
        }
    ]
    for check in result.repositories:
        dimensions = [customer, {"Name": "Repository", "Value": check.repo.name}]
        data += [
            {
                "MetricName": "WalRepositoryStatus",
                "Dimensions": dimensions,
                "Timestamp": result.checked_at,
                "Value": float(check.status.severity),
                "Unit": "None",
            },
            {
                "MetricName": "WalMissingSegments",
                "Dimensions": dimensions,
                "Timestamp": result.checked_at,
                "Value": float(check.missing_count),
                "Unit": "Count",
            },
        ]
        if check.newest_age_seconds is not None:
            data.append(
                {
                    "MetricName": "WalNewestArchiveAgeSeconds",
                    "Dimensions": dimensions,
                    "Timestamp": result.checked_at,
                    "Value": check.newest_age_seconds,
                    "Unit": "Seconds",
                }
            )
    return data


def publish_metrics(result: GapCheckResult, cloudwatch: Any) -> list[dict[str, Any]]:
    """Put the gap check's metrics to CloudWatch (a boto3 client in the customer's region)."""
    data = metric_data(result)
    cloudwatch.put_metric_data(Namespace=METRICS_NAMESPACE, MetricData=data)
    return data

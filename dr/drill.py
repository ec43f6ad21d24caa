"""One restore drill, step by step (S8): plan, restore, recover, verify, measure, report.

1. *production snapshot* (point drills only): production's user tables in one snapshot at a
   new restore point (:mod:`dr.sql`), then a WAL switch so the restore point gets archived;
2. *drill host*: reach it (or have the site make one for the drill: a drill machine from the
   customer's image on the machines site), check sudo, write a pgBackRest config holding
   only the chosen repository (read-only use: the drill never runs ``stanza-create``,
   ``backup`` or ``expire``);
3. *plan*: read the repository from the drill host, pick the backup set and the WAL range, and
   stop at the first missing segment (:mod:`dr.plan`);
4. *space*: the drill host must have room for the restore;
5. *restore*: ``pgbackrest restore`` with ``--archive-mode=off`` (pgBackRest checks every
   file's checksum), the target, and a ``restore_command`` that serves no WAL past the plan's;
6. *recovery*: start PostgreSQL with the drill's own configuration (no archiving), wait until
   recovery reaches its target and promotes;
7. *verify*: equality with production's snapshot, the product's health query, the last
   replayed commit, then RTO and RPO against S8;
8. *teardown* unless ``keep``: the restored cluster and the drill's folder, and a drill host
   made for the drill (a drill machine is powered off and removed with its role). A drill
   never deletes a backup and never restores onto production. Every drill, failed or not,
   writes its report and uploads it.
"""

from __future__ import annotations

import secrets
import shlex
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from backups.gapcheck import RepoContents, RepositoryUnreachable, collect_repository
from backups.info import Repository
from backups.pgbackrest import PgBackRestError, SshPgBackRest
from backups.restore import restore
from backups.wal import Segment, parse_lsn, segment_number_of
from dr.host import DatabaseAccess, DrillHost, HostCommandError, HostUnreachable
from dr.model import (
    CheckRecord,
    CheckStatus,
    DrillMode,
    DrillReport,
    DrillStatus,
    Measures,
    RepoChoice,
    RepoRecord,
    RestoredRecord,
    SnapshotRecord,
    StepRecord,
)
from dr.plan import (
    DrillPlan,
    DrillRefused,
    LatestTarget,
    PointTarget,
    Target,
    TimeTarget,
    check_not_future,
    plan_drill,
    refuse_gaps,
)
from dr.reports import publish
from dr.site import DrillSite
from dr.sql import (
    STATE_SQL,
    ProductionSnapshot,
    RestoredState,
    compare_tables,
    parse_snapshot,
    parse_state,
    parse_tables,
    psql_argv,
    snapshot_script,
    sums_script,
)
from erpcloud import policy
from erpcloud.product import HEALTH_QUERY
from erpcloud.render import PRODUCT_DATABASE, render_pgbackrest_conf

Clock = Callable[[], datetime]
Progress = Callable[[str], None]


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class DrillRequest:
    mode: DrillMode = DrillMode.POINT
    repo: RepoChoice = RepoChoice.COPY
    target_time: datetime | None = None
    keep: bool = False
    #: Free bytes the drill host must have at least, beside ``DR_FREE_SPACE_RATIO`` × backup.
    min_free_bytes: int = 0
    #: Longest wait for the restore point's segment in the repository (S7 ships it within it).
    archive_wait: timedelta = policy.RPO_TARGET
    #: Longest wait for recovery to reach its target and promote (the drill's whole RTO).
    recovery_timeout: timedelta = policy.RTO
    database: str = PRODUCT_DATABASE
    #: Parallel restore processes (pgBackRest ``process-max``); None: the configuration's.
    restore_processes: int | None = None

    def __post_init__(self) -> None:
        if (self.mode is DrillMode.TIME) != (self.target_time is not None):
            raise ValueError("a time drill needs --target-time, and only a time drill takes it")


def new_drill_id(customer_id: str, now: datetime) -> str:
    return f"{now:%Y%m%dT%H%M%SZ}-{customer_id}-{secrets.token_hex(2)}"


def restore_point_name(drill_id: str) -> str:
    """PostgreSQL keeps 63 characters of a restore point's name: the time and the suffix stay."""
    stamp, _, rest = drill_id.partition("-")
    return f"drill-{stamp}-{rest.rpartition('-')[2]}"


def archive_get_script(layout_config: str, stanza: str, limit: Segment) -> str:
    """The drill's ``restore_command``: WAL up to ``limit`` only (the archive as the target or
    the event left it), fetched with the drill's own read-only pgBackRest config."""
    fetch = shlex.join(
        ["/usr/bin/pgbackrest", f"--config={layout_config}", f"--stanza={stanza}", "archive-get"]
    )
    return (
        "#!/bin/bash\n"
        "# erpcloud restore drill: serve no WAL segment after the planned range.\n"
        f"if [[ $1 =~ ^[0-9A-F]{{24}}$ && $1 > {limit.name()} ]]; then\n"
        f'  echo "drill: $1 is after {limit.name()}, not served" >&2; exit 1\n'
        "fi\n"
        f'exec {fetch} "$1" "$2"\n'
    )


class _Steps:
    """Times each step into the report; knows which one is running when something breaks."""

    def __init__(self, report: DrillReport, clock: Clock, progress: Progress) -> None:
        self.report, self.clock, self.progress = report, clock, progress
        self.current = "start"

    @contextmanager
    def step(self, name: str) -> Iterator[StepRecord]:
        self.current = name
        record = StepRecord(name=name, ok=False, started_at=self.clock(), seconds=0.0)
        self.progress(f"{name}...")
        began = time.monotonic()
        try:
            yield record
            record.ok = True
        finally:
            record.seconds = time.monotonic() - began
            self.report.steps.append(record)
            self.progress(f"{name}: {'ok' if record.ok else 'FAILED'} ({record.seconds:.1f} s)")


def take_snapshot(
    production: DatabaseAccess, database: str, restore_point: str
) -> ProductionSnapshot:
    """Production in one snapshot at a new restore point, then a WAL switch (so the segment
    holding the restore point is archived now, not at the next ``archive_timeout``)."""
    argv = psql_argv(production.psql, production.socket_dir, production.port, database)
    lock_ms = int(policy.DR_SNAPSHOT_LOCK_TIMEOUT.total_seconds() * 1000)
    result = production.shell.postgres(snapshot_script(argv, restore_point, lock_ms))
    snapshot = parse_snapshot(production.shell.checked(result, "production's snapshot"))
    switch = shlex.join([*argv, "-c", "SELECT pg_switch_wal()"])
    production.shell.checked(production.shell.postgres(switch), "switching production's WAL")
    return snapshot


def wait_for_segment(
    runner: SshPgBackRest, repo: Repository, wal_file: str, wait: timedelta
) -> RepoContents:
    """Read the repository until it holds ``wal_file`` (archived after the switch)."""
    wanted = Segment.parse(wal_file)
    deadline = time.monotonic() + wait.total_seconds()
    while True:
        contents = collect_repository(runner, repo)
        archive = contents.info.current_archive_id(repo.index)
        listing = contents.archives.get(archive or "")
        if listing is not None and wanted in listing.segments:
            return contents
        if time.monotonic() > deadline:
            raise DrillRefused(
                "plan",
                f"the restore point's WAL segment {wal_file} did not reach {repo} within "
                f"{wait.total_seconds():.0f} s (S7 archives a segment within "
                f"{policy.RPO_TARGET.total_seconds():.0f} s): is archiving failing?",
            )
        time.sleep(1.0)


def describe_restore_error(exc: PgBackRestError, repo: str) -> str:
    message = exc.result.message
    if "checksum" in message.lower():
        return (
            f"a backup file in {repo} failed its checksum during the restore (corrupted "
            f"backup): {message}"
        )
    return f"pgbackrest restore from {repo} failed: {message}"


def wait_promoted(host: DrillHost, timeout: timedelta) -> RestoredState:
    """Poll the restored cluster until recovery ended and it was promoted."""
    deadline = time.monotonic() + timeout.total_seconds()
    state_script = shlex.join([*host.psql_argv("postgres"), "-c", STATE_SQL])
    while True:
        result = host.shell.postgres(state_script)
        if result.ok:
            state = parse_state(result.stdout)
            if not state.in_recovery:
                return state
        elif not host.running():
            raise DrillRefused(
                "recovery", f"the restored cluster stopped during recovery:\n{host.log_tail()}"
            )
        if time.monotonic() > deadline:
            raise DrillRefused(
                "recovery",
                f"recovery did not finish within {timeout.total_seconds():.0f} s:\n"
                f"{host.log_tail()}",
            )
        time.sleep(0.5)


def _event_time(target: Target) -> datetime:
    if isinstance(target, LatestTarget):
        return target.event
    return target.time


def _check(report: DrillReport, name: str, ok: bool | None, detail: str) -> None:
    status = CheckStatus.SKIPPED if ok is None else CheckStatus.PASSED if ok else CheckStatus.FAILED
    report.checks.append(CheckRecord(name=name, status=status, detail=detail))


def verify(
    report: DrillReport,
    host: DrillHost,
    plan: DrillPlan,
    target: Target,
    state: RestoredState,
    database: str,
) -> None:
    """The checks (a), (b), (c) and the recovery's own facts, into ``report``."""
    restored = RestoredRecord(
        last_commit=state.last_commit,
        replay_lsn=state.replay_lsn,
        in_recovery=state.in_recovery,
        archive_mode=state.archive_mode,
    )
    report.restored = restored
    _check(report, "promoted", not state.in_recovery, "recovery ended and the cluster promoted")
    _check(
        report,
        "archiving off",
        state.archive_mode == "off",
        f"archive_mode = {state.archive_mode} (a drill never archives into a repository)",
    )
    if isinstance(target, PointTarget):
        stopped = host.log_has(f'recovery stopping at restore point "{target.restore_point}"')
        _check(
            report,
            "recovered to target",
            stopped,
            f"recovery {'stopped' if stopped else 'did NOT stop'} at restore point "
            f"{target.restore_point}",
        )
    elif state.replay_lsn is not None:
        reached = Segment(
            plan.served_until.timeline, segment_number_of(parse_lsn(state.replay_lsn))
        )
        ok = reached.number >= plan.last.number
        _check(
            report,
            "recovered to target",
            ok,
            f"replay reached {state.replay_lsn} (segment {reached.name()}); the plan needs "
            f"{plan.last.name()}",
        )
    # (a) equal to production at the target
    restored.tables = parse_tables(host.run_sql(sums_script(host.psql_argv(database)), "sums"))
    if report.snapshot is not None:
        differences = compare_tables(report.snapshot.tables, restored.tables)
        rows = sum(t.rows for t in restored.tables.values())
        _check(
            report,
            "equal to production",
            not differences,
            "; ".join(differences)
            or f"{len(restored.tables)} tables, {rows} rows: counts and checksums equal "
            f"production's snapshot at {report.snapshot.lsn}",
        )
    else:
        _check(
            report,
            "equal to production",
            None,
            "production's state at a past time or at the event is not observable; the point "
            f"drill proves equality ({len(restored.tables)} tables summed for the record)",
        )
    # (b) the product's own health query
    health_sql = f"SELECT 'health', ({HEALTH_QUERY})"
    health = host.shell.postgres(shlex.join([*host.psql_argv(database), "-c", health_sql]))
    value = health.stdout.strip().partition("\t")[2] if health.ok else ""
    restored.health = value or None
    _check(
        report,
        "product health query",
        bool(value),
        f"{HEALTH_QUERY!r} answered {value!r}" if value else f"no answer: {health.message}",
    )
    # (c) the last replayed commit
    event = _event_time(target)
    if state.last_commit is None:
        _check(
            report,
            "last replayed commit",
            True,
            f"no transaction replayed after the backup; its end ({plan.backup.stopped}) is the "
            "last recovered point",
        )
    else:
        overshot = not isinstance(target, LatestTarget) and state.last_commit > event
        _check(
            report,
            "last replayed commit",
            not overshot,
            f"{state.last_commit.isoformat()}"
            + (f" is AFTER the target {event.isoformat()}" if overshot else ""),
        )


def measure(report: DrillReport, plan: DrillPlan, target: Target, rto_seconds: float) -> None:
    m = report.measures
    m.rto_seconds = rto_seconds
    _check(
        report,
        "RTO",
        rto_seconds <= m.rto_limit_seconds,
        f"{rto_seconds:.1f} s from the drill's start to verified service (S8: "
        f"{m.rto_limit_seconds / 3600:.0f} h)",
    )
    event = _event_time(target)
    recovered = (report.restored.last_commit if report.restored else None) or plan.backup.stopped
    m.rpo_seconds = (event - recovered).total_seconds()
    bound = m.rpo_limit_seconds if m.rpo_target_seconds is None else m.rpo_target_seconds
    _check(
        report,
        "RPO",
        m.rpo_seconds <= bound,
        f"{m.rpo_seconds:.1f} s from {event.isoformat()} back to the last recovered commit "
        f"(S8: {m.rpo_limit_seconds / 60:.0f} min"
        + (
            f"; our latest-point target {m.rpo_target_seconds:.0f} s)"
            if m.rpo_target_seconds
            else ")"
        ),
    )


def _teardown(report: DrillReport, host: DrillHost, keep: bool, steps: _Steps) -> None:
    report.drill_host = host.record()
    if keep:
        report.drill_host.kept = True
        return
    try:
        with steps.step("teardown") as record:
            record.detail = "; ".join(host.teardown())
            report.drill_host.torn_down = True
    except Exception as exc:  # recorded: the report must still be written
        message = f"teardown failed: {type(exc).__name__}: {exc}"
        report.error = f"{report.error}; {message}" if report.error else message
        report.failed_step = report.failed_step or "teardown"


def run_drill(
    site: DrillSite,
    request: DrillRequest,
    drills_dir: Path,
    *,
    clock: Clock = utc_now,
    progress: Progress = lambda _: None,
) -> DrillReport:
    """Run one drill; always returns its report (written and uploaded), passed or failed."""
    customer = site.customer
    started_at = clock()
    drill_id = new_drill_id(customer.id, started_at)
    s3_repo = site.repo(request.repo)
    repository = Repository(s3_repo.index, s3_repo.region, s3_repo.bucket)
    report = DrillReport(
        drill_id=drill_id,
        customer=customer.id,
        mode=request.mode,
        repo=RepoRecord(
            index=s3_repo.index, choice=request.repo, region=s3_repo.region, bucket=s3_repo.bucket
        ),
        started_at=started_at,
        measures=Measures(
            rto_limit_seconds=policy.RTO.total_seconds(),
            rpo_limit_seconds=policy.RPO.total_seconds(),
            rpo_target_seconds=(
                policy.RPO_TARGET.total_seconds() if request.mode is DrillMode.LATEST else None
            ),
        ),
    )
    steps = _Steps(report, clock, progress)
    began = time.monotonic()
    host: DrillHost | None = None
    completed = False
    try:
        target: Target | None = None
        if request.target_time is not None:
            time_target = TimeTarget(request.target_time)
            report.target.time = time_target.time
            report.event_time = time_target.time
            check_not_future(time_target, clock())
            target = time_target
        if request.mode is DrillMode.POINT:
            with steps.step("production snapshot") as record:
                if site.production is None:
                    raise DrillRefused("production snapshot", "no production database to snapshot")
                name = restore_point_name(drill_id)
                snap = take_snapshot(site.production, request.database, name)
                report.snapshot = SnapshotRecord(
                    restore_point=name,
                    lsn=snap.lsn,
                    wal_file=snap.wal_file,
                    taken_at=snap.taken_at,
                    database=request.database,
                    tables=snap.tables,
                    locked_seconds=snap.locked_seconds,
                )
                report.target.restore_point, report.target.lsn = name, snap.lsn
                report.target.time = report.event_time = snap.taken_at
                target = PointTarget(name, snap.wal_file, snap.taken_at)
                record.detail = f"{len(snap.tables)} tables at {snap.lsn} ({snap.wal_file})"
        with steps.step("drill host") as record:
            host = site.open_drill_host(drill_id, progress)
            report.drill_host = host.record()
            try:
                host.check_access()
                host.find_port()
                layout = host.layout()
                config = render_pgbackrest_conf(customer, layout, (s3_repo,))
                host.prepare({layout.pgbackrest_config: (config, 0o640)})
            except HostUnreachable as exc:
                raise DrillRefused("drill host", f"drill host unreachable: {exc}") from None
            report.drill_host = host.record()
            record.detail = f"{host.spec.name}: {host.directory}, port {host.port}"
        # No S3 key in the environment: the drill host's instance role signs.
        runner = SshPgBackRest(host.spec.target, customer.stanza, layout)
        try:
            with steps.step("plan") as record:
                try:
                    if isinstance(target, PointTarget):
                        contents = wait_for_segment(
                            runner, repository, target.wal_file, request.archive_wait
                        )
                    else:
                        contents = collect_repository(runner, repository)
                except (RepositoryUnreachable, PgBackRestError) as exc:
                    raise DrillRefused("plan", f"{repository} cannot be read: {exc}") from None
                if target is None:  # latest: the region is lost now, after this listing
                    target = LatestTarget(clock())
                    report.event_time = target.event
                plan = plan_drill(contents, target)
                report.backup, report.wal = plan.backup_used(), plan.wal_range()
                refuse_gaps(plan)
                record.detail = (
                    f"backup {plan.backup.label}, WAL {plan.first.name()} to {plan.last.name()} "
                    f"({plan.needed} segments, all present)"
                )
            with steps.step("space") as record:
                free = host.free_bytes()
                ratio = policy.DR_FREE_SPACE_RATIO
                required = max(int(plan.backup.size_bytes * ratio), request.min_free_bytes)
                record.detail = f"{free / 1e6:.0f} MB free, {required / 1e6:.0f} MB required"
                if free < required:
                    raise DrillRefused(
                        "space",
                        f"drill host {host.spec.name} is full: {free} bytes free under "
                        f"{host.directory}, the drill needs {required} ({ratio} x the backup's "
                        f"{plan.backup.size_bytes} bytes, at least {request.min_free_bytes})",
                    )
            with steps.step("restore") as record:
                script = host.path("archive-get-until")
                host.prepare_files(
                    {
                        script: (
                            archive_get_script(
                                layout.pgbackrest_config, customer.stanza, plan.served_until
                            ),
                            0o755,
                        )
                    }
                )
                restore_began = time.monotonic()
                try:
                    restore(
                        runner,
                        repository.index,
                        layout.pg_data,
                        target_name=target.restore_point
                        if isinstance(target, PointTarget)
                        else None,
                        target_time=(
                            target.time.isoformat(sep=" ")
                            if isinstance(target, TimeTarget)
                            else None
                        ),
                        backup_set=plan.backup.label,
                        recovery_options={"restore_command": f'{script} %f "%p"'},
                        process_max=request.restore_processes,
                    )
                except PgBackRestError as exc:
                    raise DrillRefused(
                        "restore", describe_restore_error(exc, str(repository))
                    ) from None
                seconds = time.monotonic() - restore_began
                report.measures.restore_seconds = seconds
                report.measures.restored_bytes = plan.backup.size_bytes
                report.measures.throughput_mb_s = plan.backup.size_bytes / 1e6 / max(seconds, 1e-6)
                record.detail = (
                    f"{plan.backup.size_bytes / 1e6:.1f} MB in {seconds:.1f} s "
                    f"({report.measures.throughput_mb_s:.1f} MB/s), archive_mode=off"
                )
            with steps.step("recovery") as record:
                recovery_began = time.monotonic()
                host.start_postgres({}, host.control_settings())
                report.drill_host = host.record()
                state = wait_promoted(host, request.recovery_timeout)
                report.measures.recovery_seconds = time.monotonic() - recovery_began
                record.detail = f"promoted after replay to {state.replay_lsn}"
            with steps.step("verify") as record:
                verify(report, host, plan, target, state, request.database)
                measure(report, plan, target, time.monotonic() - began)
                failed = [c.name for c in report.checks if c.status is CheckStatus.FAILED]
                if failed:
                    raise DrillRefused("verify", f"checks failed: {', '.join(failed)}")
                record.detail = f"{len(report.checks)} checks, none failed"
        finally:
            runner.close()
        completed = True
    except DrillRefused as exc:
        report.failed_step, report.error = exc.step, exc.message
    except (HostCommandError, HostUnreachable, PgBackRestError, ValueError, OSError) as exc:
        report.failed_step, report.error = steps.current, f"{type(exc).__name__}: {exc}"
    except Exception as exc:  # anything else still ends in a FAILED report that names it
        report.failed_step, report.error = steps.current, f"unexpected {type(exc).__name__}: {exc}"
    finally:
        if not completed and report.error is None:
            report.failed_step, report.error = steps.current, "interrupted"
        if host is not None:
            _teardown(report, host, request.keep, steps)
        report.status = DrillStatus.FAILED if report.error else DrillStatus.PASSED
        report.finished_at = clock()
        publish(report, drills_dir, site.reports_client, site.create_reports_bucket)
    return report

"""Backups as plain Python (S6, S7): WAL arithmetic, the gap check's verdicts, retention plans and
the schedule, on data shaped exactly like pgBackRest's JSON; the schedule is checked against
systemd's own calendar arithmetic on the rendered timers. The real components (on machines) are
exercised in ``test_backups_machines.py``.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Iterable
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from backups.fleetcheck import check_fleet
from backups.gapcheck import (
    GapCheckResult,
    Outcome,
    RepoContents,
    check_repository,
    compare_repositories,
    metric_data,
    parse_archive_listing,
)
from backups.info import BackupSet, BackupType, Repository, parse_info
from backups.retention import RetentionRefused, check_retention, plan_expiry
from backups.schedule import nightly_backups, restorable_days, scheduled_type, start_of
from backups.targets import BackupTarget
from backups.wal import (
    WAL_SEGMENT_SIZE,
    Segment,
    expected_segments,
    parse_history,
    parse_lsn,
    segment_number_of,
    segments_per_log_id,
    timeline_path,
)
from erpcloud import policy
from erpcloud.audit import audit
from erpcloud.model import Customer
from erpcloud.output import EXIT_FAILED, EXIT_OK, EXIT_WARNING
from erpcloud.render import HostLayout, render_backup_units
from frontdoor.cli import app

from .conftest import CUSTOMERS

NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
STANZA = "acme-retail"
REPO = Repository(1, "eu-west-1", "erpcloud-acme-retail-backup-eu-west-1")
COPY = Repository(2, "eu-central-1", "erpcloud-acme-retail-backup-eu-central-1")


# --- WAL segment arithmetic -----------------------------------------------------------------------
def test_segment_names_roll_over_after_ff():
    assert segments_per_log_id() == 0x100
    last = Segment.parse("0000000100000000000000FF")
    assert last == Segment(1, 0xFF)
    assert last.next().name() == "000000010000000100000000"
    assert Segment.parse("000000030000000A00000010") == Segment(3, 0xA10)


@pytest.mark.parametrize(
    "name",
    [
        "000000010000000000000100",  # 0x100 is past ...FF with 16 MiB segments
        "00000001000000000000000g",
        "0000000100000000000000ff",  # PostgreSQL writes upper case
        "00000001000000000000001",
        "000000000000000000000001",  # timeline 0 does not exist
    ],
)
def test_not_a_segment_name(name: str):
    with pytest.raises(ValueError):
        Segment.parse(name)


def test_other_segment_sizes():
    assert segments_per_log_id(1024 * 1024) == 0x1000
    assert Segment.parse("000000010000000000000100", 1024 * 1024) == Segment(1, 0x100)
    with pytest.raises(ValueError):
        segments_per_log_id(3 * 1024 * 1024)


def test_lsn_to_segment():
    assert parse_lsn("0/5000098") == 0x5000098
    assert segment_number_of(parse_lsn("0/5000098")) == 5
    assert Segment(1, segment_number_of(parse_lsn("1/0"))).name() == "000000010000000100000000"
    with pytest.raises(ValueError):
        parse_lsn("5000098")


SEGMENT_NUMBERS = st.integers(min_value=0, max_value=0xFFFFFFFF * 0x100 + 0xFF)
TIMELINES = st.integers(min_value=1, max_value=0xFFFFFFFF)


@given(TIMELINES, SEGMENT_NUMBERS)
def test_segment_name_round_trip(timeline: int, number: int):
    name = Segment(timeline, number).name()
    assert re.fullmatch(r"[0-9A-F]{24}", name)
    assert Segment.parse(name) == Segment(timeline, number)
    assert int(name[16:], 16) < 0x100


@given(TIMELINES, SEGMENT_NUMBERS, SEGMENT_NUMBERS)
def test_names_sort_like_positions(timeline: int, first: int, second: int):
    """String order is WAL order on a timeline (what pg_stat_archiver comparisons rely on)."""
    a, b = Segment(timeline, first), Segment(timeline, second)
    assert (a.name() < b.name()) == (first < second)


@given(st.integers(min_value=20, max_value=30), st.integers(min_value=0, max_value=2**40))
def test_round_trip_for_every_segment_size(power: int, number: int):
    size = 1 << power
    number %= 0x1_0000_0000 * segments_per_log_id(size)
    assert Segment.parse(Segment(7, number).name(size), size) == Segment(7, number)


# --- timelines ------------------------------------------------------------------------------------
HISTORY_3 = (
    "1\t0/5000098\tno recovery target specified\n\n2\t0/9000000\tbefore 2026-11-20 10:00:00\n"
)


def test_history_file_and_path():
    switches = parse_history("# comment\n" + HISTORY_3)
    assert [(s.timeline, s.switch_lsn) for s in switches] == [(1, 0x5000098), (2, 0x9000000)]
    spans = timeline_path(3, switches)
    assert [(s.timeline, s.first, s.end) for s in spans] == [(1, 0, 5), (2, 5, 9), (3, 9, None)]
    walked = [s.name() for s in expected_segments(spans, Segment(1, 3), 10)]
    assert walked == [
        "000000010000000000000003",
        "000000010000000000000004",
        "000000020000000000000005",  # the switch segment comes from the new timeline
        "000000020000000000000006",
        "000000020000000000000007",
        "000000020000000000000008",
        "000000030000000000000009",  # switch exactly at a boundary: 9 is timeline 3's first
        "00000003000000000000000A",
    ]


@pytest.mark.parametrize("text", ["1\tnot-an-lsn\n", "2\t0/1\n1\t0/2\n", "x\t0/1\n"])
def test_bad_history_is_refused(text: str):
    with pytest.raises(ValueError):
        parse_history(text)


@given(
    st.lists(st.integers(min_value=1, max_value=40), min_size=0, max_size=5),
    st.integers(min_value=0, max_value=10),
    st.integers(min_value=0, max_value=60),
)
def test_expected_segments_are_contiguous_along_the_history(
    gaps: list[int], start: int, extra: int
):
    switches, lsn = [], 0
    for timeline, gap in enumerate(gaps, 1):
        lsn += gap * WAL_SEGMENT_SIZE + 0x98
        switches.append(f"{timeline}\t{lsn >> 32:X}/{lsn & 0xFFFFFFFF:X}\treason")
    newest = len(gaps) + 1
    spans = timeline_path(newest, parse_history("\n".join(switches)))
    first = spans[0]
    begin = Segment(first.timeline, min(start, (first.end or 1) - 1))
    last = (spans[-1].first) + extra
    walked = list(expected_segments(spans, begin, last))
    assert [s.number for s in walked] == list(range(begin.number, last + 1))
    for segment in walked:  # each on the timeline that was current at that position
        owner = [
            s
            for s in spans
            if s.first <= segment.number and (s.end is None or segment.number < s.end)
        ]
        assert segment.timeline == owner[-1].timeline


# --- the gap check on pgBackRest-shaped data ----------------------------------------------------
def backup_entry(
    label: str, kind: str, start: str, stop: str, stopped: datetime, repo: int = 1
) -> dict[str, Any]:
    """One ``backup[]`` element of ``pgbackrest info --output=json`` (2.45)."""
    return {
        "archive": {"start": start, "stop": stop},
        "backrest": {"format": 5, "version": "2.45"},
        "database": {"id": 1, "repo-key": repo},
        "error": False,
        "info": {"delta": 1, "repository": {"delta": 1, "size": 1}, "size": 1},
        "label": label,
        "lsn": {"start": "0/2000028", "stop": "0/2000100"},
        "prior": None,
        "reference": None,
        "timestamp": {"start": int(stopped.timestamp()) - 60, "stop": int(stopped.timestamp())},
        "type": kind,
    }


def info_document(backups: list[dict[str, Any]], repo: int = 1) -> list[dict[str, Any]]:
    return [
        {
            "archive": [{"database": {"id": 1, "repo-key": repo}, "id": "15-1"}],
            "backup": backups,
            "cipher": "none",
            "db": [{"id": 1, "repo-key": repo, "system-id": 7711298513432292334, "version": "15"}],
            "name": STANZA,
            "repo": [{"cipher": "none", "key": repo, "status": {"code": 0, "message": "ok"}}],
            "status": {"code": 0, "lock": {"backup": {"held": False}}, "message": "ok"},
        }
    ]


def listing(
    segments: Iterable[tuple[str, datetime]],
    histories: Iterable[str] = (),
    extra: Iterable[str] = (),
) -> dict[str, dict[str, Any]]:
    """``repo-ls --recurse --output=json archive/<stanza>`` as pgBackRest 2.45 prints it."""
    files: dict[str, dict[str, Any]] = {".": {"type": "path"}, "15-1": {"type": "path"}}
    for name, at in segments:
        path = f"15-1/{name[:16]}/{name}-{'ab' * 20}.lz4"
        files[path] = {"type": "file", "size": 1, "time": int(at.timestamp())}
    for name in histories:
        files[f"15-1/{name}"] = {"type": "file", "size": 40, "time": int(NOW.timestamp())}
    for path in extra:
        files[path] = {"type": "file", "size": 1, "time": int(NOW.timestamp())}
    files["archive.info"] = {"type": "file", "size": 253, "time": int(NOW.timestamp())}
    return files


def names(timeline: int, first: int, last: int) -> list[str]:
    return [Segment(timeline, n).name() for n in range(first, last + 1)]


def contents(
    present: list[str],
    backup_start: str = "000000010000000000000002",
    backup_stop: str = "000000010000000000000002",
    repo: Repository = REPO,
    histories: dict[int, str] | None = None,
    newest_at: datetime = NOW - timedelta(seconds=30),
) -> RepoContents:
    entry = backup_entry(
        "20261120-013000F", "full", backup_start, backup_stop, NOW - timedelta(days=3), repo.index
    )
    info = parse_info(info_document([entry], repo.index), STANZA)
    stamped = [
        (n, newest_at - timedelta(minutes=len(present) - i)) for i, n in enumerate(present, 1)
    ]
    history_names = [f"{t:08X}.history" for t in (histories or {})]
    parsed = parse_archive_listing(listing(stamped, history_names))
    result = RepoContents(repo, info, parsed)
    for timeline, text in (histories or {}).items():
        result.histories[("15-1", timeline)] = parse_history(text)
    return result


def test_healthy_archive_is_ok():
    check = check_repository(contents(names(1, 1, 9)), NOW)
    assert check.status is Outcome.OK and check.findings == []
    assert check.checked_from == "000000010000000000000002"  # older WAL is not needed
    assert check.segments_checked == 8 and check.newest == "000000010000000000000009"
    assert check.newest_age_seconds == 30


@pytest.mark.parametrize("victim", [2, 5, 8])
def test_a_missing_segment_is_a_failure_naming_the_first(victim: int):
    holes = {victim, 7} if victim == 5 else {victim}  # two holes: the first is named
    present = [n for n in names(1, 1, 9) if Segment.parse(n).number not in holes]
    check = check_repository(contents(present), NOW)
    assert check.status is Outcome.FAILURE
    assert check.first_missing == Segment(1, victim).name()
    assert check.missing_count == len(holes)
    assert (
        f"WAL segment {Segment(1, victim).name()} is missing from repo1 (eu-west-1"
        in check.findings[0].message
    )


def test_segments_before_the_oldest_backup_may_be_gone():
    assert check_repository(contents(names(1, 2, 6)), NOW).status is Outcome.OK


def test_the_newest_backups_own_wal_must_be_archived():
    check = check_repository(contents(names(1, 1, 4), backup_stop="000000010000000000000006"), NOW)
    assert check.status is Outcome.FAILURE and check.first_missing == "000000010000000000000005"


def test_partial_and_backup_label_files_are_not_segments():
    files = listing(
        [(n, NOW) for n in names(1, 1, 3)],
        extra=[
            f"15-1/0000000100000000/000000010000000000000004.partial-{'cd' * 20}.lz4",
            "15-1/0000000100000000/000000010000000000000002.00000028.backup",
        ],
    )
    archive = parse_archive_listing(files)["15-1"]
    assert sorted(s.name() for s in archive.segments) == names(1, 1, 3)


def test_timeline_switch_is_followed_through_its_history_file():
    history = {2: "1\t0/5000098\tno recovery target specified\n"}
    # Timeline 1 went on to segment 7 before the recovery; those segments lie off the history.
    present = names(1, 1, 7) + names(2, 5, 8)
    check = check_repository(contents(present, histories=history), NOW)
    assert check.status is Outcome.OK, check.findings
    assert check.timelines == [1, 2] and check.newest == "000000020000000000000008"
    assert check.segments_checked == 7  # 1:2-4, 2:5-8

    broken = [n for n in present if n != "000000020000000000000005"]
    failed = check_repository(contents(broken, histories=history), NOW)
    assert failed.first_missing == "000000020000000000000005"  # not covered by 1:5


def test_a_timeline_without_its_history_file_is_a_failure():
    check = check_repository(contents(names(1, 1, 4) + names(2, 5, 6)), NOW)
    assert check.status is Outcome.FAILURE
    assert [f.code for f in check.findings] == ["history-missing"]
    assert "00000002.history" in check.findings[0].message


def test_late_newest_segment_is_a_warning_unless_the_database_is_idle():
    stale = contents(
        names(1, 1, 9), newest_at=NOW - policy.ARCHIVE_LATE_AFTER - timedelta(seconds=1)
    )
    blind = check_repository(stale, NOW)
    assert blind.status is Outcome.WARNING and [f.code for f in blind.findings] == ["late"]
    idle = check_repository(stale, NOW, database_wal="00000001000000000000000A")
    assert idle.status is Outcome.OK
    busy = check_repository(stale, NOW, database_wal="00000001000000000000000C")
    assert busy.status is Outcome.WARNING
    fresh = contents(
        names(1, 1, 9), newest_at=NOW - policy.ARCHIVE_LATE_AFTER + timedelta(seconds=1)
    )
    assert check_repository(fresh, NOW).status is Outcome.OK


def test_a_repository_without_backup_is_a_failure():
    info = parse_info(info_document([]), STANZA)
    check = check_repository(RepoContents(REPO, info, {}), NOW)
    assert check.status is Outcome.FAILURE and check.findings[0].code == "no-backup"


def test_copy_region_behind_is_a_warning_after_the_grace():
    grace = policy.ARCHIVE_COPY_LAG_GRACE
    primary = contents(names(1, 1, 9), newest_at=NOW - grace - timedelta(seconds=1))
    copy = contents(names(1, 1, 7), repo=COPY, newest_at=NOW - grace - timedelta(minutes=3))
    checks = [check_repository(c, NOW) for c in (primary, copy)]
    compare_repositories([primary, copy], checks, NOW, grace)
    assert checks[0].status is Outcome.OK
    assert checks[1].status is Outcome.WARNING and checks[1].missing_count == 0
    assert "lacks 2 segment(s) from 000000010000000000000008" in checks[1].findings[0].message

    recent = contents(names(1, 1, 9), newest_at=NOW - timedelta(seconds=5))
    checks = [check_repository(c, NOW) for c in (recent, copy)]
    compare_repositories([recent, copy], checks, NOW, grace)
    assert checks[1].findings == [] or checks[1].findings[0].code != "behind"


@settings(max_examples=200)
@given(
    st.sets(st.integers(min_value=0, max_value=40), max_size=40),
    st.integers(min_value=0, max_value=40),
)
def test_failure_exactly_when_a_needed_segment_is_absent(present: set[int], start: int):
    names_present = [Segment(1, n).name() for n in sorted(present)]
    start_name = Segment(1, start).name()
    check = check_repository(
        contents(names_present, backup_start=start_name, backup_stop=start_name), NOW
    )
    last = max([start, *present])
    needed = set(range(start, last + 1))
    missing = sorted(needed - present)
    assert (check.status is Outcome.FAILURE) == bool(missing)
    assert check.first_missing == (Segment(1, missing[0]).name() if missing else None)
    assert check.missing_count == len(missing)


def test_outcomes_have_distinct_exit_codes_and_metrics():
    assert [o.exit_code for o in Outcome] == [EXIT_OK, EXIT_WARNING, EXIT_FAILED]
    assert len({EXIT_OK, EXIT_WARNING, EXIT_FAILED}) == 3
    failed = check_repository(contents(names(1, 1, 3) + names(1, 5, 6)), NOW)
    result = GapCheckResult("acme-retail", NOW, Outcome.FAILURE, [failed])
    data = {(m["MetricName"], len(m["Dimensions"])): m for m in metric_data(result)}
    assert data[("WalGapCheckStatus", 1)]["Value"] == 2.0
    assert data[("WalMissingSegments", 2)]["Value"] == 1.0
    assert data[("WalMissingSegments", 2)]["Dimensions"][1] == {
        "Name": "Repository",
        "Value": "repo1",
    }
    assert data[("WalNewestArchiveAgeSeconds", 2)]["Unit"] == "Seconds"
    json.dumps(metric_data(result), default=str)  # what boto3 sends


# --- retention ------------------------------------------------------------------------------------
def backup(label: str, kind: str, age_days: float, repo: int = 1) -> BackupSet:
    stopped = NOW - timedelta(days=age_days)
    return BackupSet(
        repo,
        label,
        BackupType(kind),
        stopped - timedelta(minutes=5),
        stopped,
        "000000010000000000000002",
        "000000010000000000000002",
        1,
    )


DAYS = policy.BACKUP_RETENTION_DAYS


def test_expiry_keeps_the_full_that_covers_the_window():
    sets = [
        backup("20261001-013000F", "full", DAYS + 10),
        backup("20261001-013000F_20261003-013000D", "diff", DAYS + 8),
        backup("20261015-013000F", "full", DAYS + 3),
        backup("20261015-013000F_20261113-013000D", "diff", DAYS - 20),
        backup("20261122-013000F", "full", 1),
    ]
    plan = plan_expiry(sets, NOW, DAYS)
    assert plan.anchor == "20261015-013000F"
    assert plan.expire == ("20261001-013000F", "20261001-013000F_20261003-013000D")
    assert plan.keep[0] == "20261015-013000F" and len(plan.keep) == 3


def test_expiry_never_removes_the_only_or_the_newest_full():
    assert plan_expiry([backup("20200101-013000F", "full", 1000)], NOW, DAYS).expire == ()
    young = [
        backup("20261120-013000F", "full", 3),
        backup("20261121-013000F_20261122-013000D", "diff", 1),
    ]
    assert plan_expiry(young, NOW, DAYS).expire == ()
    assert plan_expiry([], NOW, DAYS).keep == ()


def test_a_full_exactly_at_the_cutoff_does_not_cover_the_window():
    sets = [backup("20261001-013000F", "full", DAYS + 1), backup("20261024-013000F", "full", DAYS)]
    assert plan_expiry(sets, NOW, DAYS).expire == ()


@st.composite
def backup_histories(draw: st.DrawFn) -> list[BackupSet]:
    ages = sorted(
        draw(st.lists(st.floats(min_value=0, max_value=120), min_size=1, max_size=25)), reverse=True
    )
    sets, current_full = [], None
    for index, age in enumerate(ages):
        kind = (
            "full"
            if current_full is None or draw(st.booleans())
            else draw(st.sampled_from(["diff", "incr"]))
        )
        stamp = f"2026{index:04d}-000000"
        if kind == "full":
            current_full = f"{stamp}F"
            sets.append(backup(current_full, "full", age))
        else:
            sets.append(backup(f"{current_full}_{stamp}{kind[0].upper()}", kind, age))
    return sets


@settings(max_examples=300)
@given(backup_histories(), st.integers(min_value=1, max_value=90))
def test_expiry_invariants(sets: list[BackupSet], days: int):
    plan = plan_expiry(sets, NOW, days)
    labels = sorted(b.label for b in sets)
    assert sorted(plan.keep + plan.expire) == labels and not set(plan.keep) & set(plan.expire)
    fulls = [b for b in sets if b.type is BackupType.FULL]
    kept_fulls = [b for b in fulls if b.label in plan.keep]
    assert max(fulls, key=lambda b: b.label) in kept_fulls  # the newest full, always
    cutoff = NOW - timedelta(days=days)
    if any(b.stopped < cutoff for b in fulls):  # the window's start stays restorable
        assert any(b.stopped < cutoff for b in kept_fulls)
    for b in sets:
        if b.stopped >= cutoff and b.label >= min(f.label for f in kept_fulls):
            assert b.label in plan.keep
        if b.label in plan.keep and b.type is not BackupType.FULL:
            assert b.label.split("_")[0] in plan.keep  # its full is kept with it


def test_retention_below_the_policy_needs_a_reason(sample_fleet: dict[str, Customer]):
    customer = sample_fleet["acme-retail"]
    with pytest.raises(RetentionRefused, match="--below-policy"):
        check_retention(customer, DAYS - 1, None)
    with pytest.raises(RetentionRefused):
        check_retention(customer, DAYS - 1, "   ")
    assert check_retention(customer, DAYS - 1, "legal hold lifted, ticket 12") is True
    assert check_retention(customer, DAYS, None) is False
    longer = customer.model_copy(
        update={"backup": customer.backup.model_copy(update={"retention_days": DAYS + 15})}
    )
    with pytest.raises(RetentionRefused, match=f"retention of {DAYS + 15} days"):
        check_retention(longer, DAYS, None)


def test_audit_log_records_who_and_why(tmp_path: Path):
    path = audit({"action": "backup-expire", "reason": "ticket 12"}, tmp_path / "a" / "audit.jsonl")
    audit({"action": "backup-expire", "reason": "ticket 13"}, path)
    entries = [json.loads(line) for line in path.read_text().splitlines()]
    assert [e["reason"] for e in entries] == ["ticket 12", "ticket 13"]
    assert all(e["user"] and e["at"] for e in entries)


# --- the schedule (S6) ----------------------------------------------------------------------------
def test_weekly_full_and_nightly_differential(sample_fleet: dict[str, Customer]):
    customer = sample_fleet["acme-retail"]
    assert scheduled_type(date(2026, 11, 22)) is BackupType.FULL  # a Sunday
    assert scheduled_type(date(2026, 11, 23)) is BackupType.DIFF
    plan = nightly_backups(customer, date(2026, 11, 22), 35)
    assert [b.type for b in plan].count(BackupType.FULL) == 5
    assert restorable_days(plan) == [b.day for b in plan]  # every day has its own set
    assert all(b.local_start.time() == policy.BACKUP_LOCAL_TIME for b in plan)
    assert plan[1].restore_needs == (BackupType.FULL, BackupType.DIFF)


def test_the_night_the_clocks_go_forward_still_has_a_backup(sample_fleet: dict[str, Customer]):
    customer = sample_fleet["acme-retail"]  # Dublin: 01:30 does not exist on 2027-03-28
    starts = start_of(customer, date(2027, 3, 28))
    assert starts == datetime(2027, 3, 28, 1, 30, tzinfo=UTC)  # 02:30 IST, when the clocks jumped


def systemd_elapses(spec: str, base: datetime, iterations: int) -> list[datetime]:
    """When systemd fires ``OnCalendar=spec`` after ``base`` (its own calendar arithmetic)."""
    result = subprocess.run(
        [
            "systemd-analyze",
            "calendar",
            f"--base-time={base:%Y-%m-%d %H:%M:%S} UTC",
            f"--iterations={iterations}",
            spec,
        ],
        capture_output=True,
        text=True,
        check=True,
        env={"TZ": "UTC", "PATH": "/usr/bin:/bin"},
    )
    found = re.findall(
        r"(?:Next elapse|Iter\. #\d+): \w{3} (\d{4}-\d\d-\d\d \d\d:\d\d:\d\d) UTC", result.stdout
    )
    return [datetime.fromisoformat(f"{moment}+00:00") for moment in found]


@pytest.mark.parametrize(
    ("customer_id", "region", "nightly"),
    [
        ("acme-retail", None, None),  # Dublin, 01:30: gone on the last Sunday of March
        ("northwind-trading", None, None),
        ("maison-dupont", None, None),
        ("northwind-trading", None, time(2, 15)),  # New York's gap, on a full-backup Sunday
        ("maison-dupont", "il-central-1", time(2, 30)),  # Jerusalem's gap is on a Friday: diff
    ],
)
def test_rendered_timers_fire_when_the_schedule_says(
    sample_fleet: dict[str, Customer], customer_id: str, region: str | None, nightly: time | None
):
    """A year of nights, DST changes included: systemd's elapses equal schedule.py's, by type."""
    customer = sample_fleet[customer_id]
    if nightly is not None:
        backup = customer.backup.model_copy(update={"nightly_local_time": nightly})
        customer = customer.model_copy(
            update={"backup": backup, "region": region or customer.region}
        )
    first_day, days = date(2027, 1, 1), 366
    base = datetime.combine(first_day, time(0), tzinfo=UTC) - timedelta(days=1)
    units = render_backup_units(customer, HostLayout())
    fired: dict[BackupType, set[datetime]] = {}
    for kind, unit in (
        (BackupType.FULL, "pgbackrest-full.timer"),
        (BackupType.DIFF, "pgbackrest-diff.timer"),
    ):
        specs = re.findall(r"^OnCalendar=(.+)$", units[unit], flags=re.M)
        fired[kind] = {m for spec in specs for m in systemd_elapses(spec, base, 370)}
    planned = nightly_backups(customer, first_day, days)
    window = (planned[0].starts_at, planned[-1].starts_at)
    fired = {k: {m for m in v if window[0] <= m <= window[1]} for k, v in fired.items()}
    for kind in (BackupType.FULL, BackupType.DIFF):
        assert fired[kind] == {b.starts_at for b in planned if b.type is kind}
    assert len({b.day for b in planned}) == len(planned)  # one a day, none skipped


def test_rendered_backup_units_pass_systemd_verify(
    sample_fleet: dict[str, Customer], tmp_path: Path
):
    units = render_backup_units(sample_fleet["acme-retail"], HostLayout())
    for name, text in units.items():
        (tmp_path / name.replace("@.", "@full.")).write_text(text)
    result = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", *sorted(str(p) for p in tmp_path.iterdir())],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    service = units["pgbackrest-backup@.service"]
    # Both repositories at once; each job waited for, a failure in one fails the unit.
    assert "--repo=$$repo --type=%i backup &" in service
    assert "wait $$job1 || status=1; wait $$job2 || status=1" in service


# --- the commands without a target ---------------------------------------------------------------
def test_commands_need_a_running_local_target(tmp_path: Path):
    """By default the commands talk to the machines of `erpcloud local up`; none runs for this
    id."""
    text = (CUSTOMERS / "acme-retail.yaml").read_text().replace("id: acme-retail", "id: bk-nolocal")
    (tmp_path / "bk-nolocal.yaml").write_text(text)
    result = CliRunner().invoke(
        app, ["backup", "verify", "bk-nolocal", "--customers", str(tmp_path), "--json"]
    )
    assert result.exit_code == 1
    error = json.loads(result.output)["error"]
    assert "no local machines for 'bk-nolocal'" in error and "erpcloud local up bk-nolocal" in error
    unknown = CliRunner().invoke(app, ["backup", "list", "nobody", "--customers", str(tmp_path)])
    assert unknown.exit_code == 2


# --- the gap check across the fleet, and the operations timer (S5-S7) -----------------------------
class _Runner:
    def __init__(self) -> None:
        self.closed = False

    def close(self) -> None:
        self.closed = True


def test_fleet_check_reports_every_host_and_the_worst_outcome(sample_fleet: dict[str, Customer]):
    """One host's failure or trouble never stops the others; the worst outcome is the exit."""
    outcomes = {"acme-retail": Outcome.OK, "maison-dupont": Outcome.FAILURE}
    runners = {c: _Runner() for c in (*outcomes, "northwind-trading")}

    def check(runner: _Runner, customer: Customer) -> GapCheckResult:
        if customer.id == "northwind-trading":
            raise OSError("connection refused")
        return GapCheckResult(customer.id, datetime.now(UTC), outcomes[customer.id], [])

    published: list[str] = []

    class CloudWatch:
        def put_metric_data(self, Namespace: str, MetricData: list[dict[str, Any]]) -> None:
            published.extend(d["Dimensions"][0]["Value"] for d in MetricData)

    targets = {
        c: BackupTarget(runners[c], lambda _region: CloudWatch(), via=f"{c}-production")  # type: ignore[arg-type]
        for c in runners
    }
    checked = check_fleet(sample_fleet, targets, publish=True, workers=2, check=check)
    by_customer = {e.customer: e for e in checked.entries}
    assert [e.customer for e in checked.entries] == sorted(runners)
    assert by_customer["acme-retail"].status is Outcome.OK
    assert by_customer["maison-dupont"].status is Outcome.FAILURE
    unreachable = by_customer["northwind-trading"]
    assert unreachable.status is Outcome.WARNING and unreachable.result is None
    assert unreachable.error == "connection refused" and not unreachable.published
    assert sorted(published) == ["acme-retail", "maison-dupont"]  # silence for the unreachable
    assert checked.status is Outcome.FAILURE and checked.exit_code == EXIT_FAILED
    assert all(r.closed for r in runners.values())
    only_ok = check_fleet(sample_fleet, {"acme-retail": targets["acme-retail"]}, check=check)
    assert only_ok.exit_code == EXIT_OK


def test_the_operations_timer_runs_the_fleet_gap_check_every_interval(tmp_path: Path):
    erpcloud = str(Path(sys.executable).parent / "erpcloud")
    result = CliRunner().invoke(
        app, ["backup", "ops-units", "--out", str(tmp_path), "--erpcloud", erpcloud,
              "--user", "root", "--json"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert len(json.loads(result.output)["written"]) == 2
    verified = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", *sorted(str(p) for p in tmp_path.iterdir())],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert verified.returncode == 0, verified.stderr
    service = (tmp_path / "erpcloud-gap-check.service").read_text()
    timer = (tmp_path / "erpcloud-gap-check.timer").read_text()
    interval = policy.WAL_GAP_CHECK_INTERVAL.total_seconds()
    assert f"OnUnitActiveSec={interval / 60:.0f}min" in timer
    assert f"TimeoutStartSec={interval:.0f}" in service  # a run never overlaps the next
    # The program's path is one quoted word of the command line (issue 13: encoded for systemd).
    assert f'ExecStart="{erpcloud}" backup verify-fleet --publish --json' in service
    assert "SuccessExitStatus=3" in service  # a warning is an outcome; a missing segment fails
    relative = CliRunner().invoke(
        app, ["backup", "ops-units", "--out", str(tmp_path / "x"), "--inventory", "inv.yaml"]
    )
    assert relative.exit_code == 2 and "--inventory" in relative.output
    assert not (tmp_path / "x").exists()

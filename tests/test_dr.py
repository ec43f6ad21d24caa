"""Restore drills as plain Python (S8): planning from a repository's contents, the snapshot's
output, the drill's own restore_command, drill hosts, reports, history and the rotation, and
the commands' input checks. The drills themselves run in ``test_dr_machines.py``.
"""

from __future__ import annotations

import json
import subprocess
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest
import yaml
from invoke import Context
from invoke.exceptions import Exit
from typer.testing import CliRunner

from backups.gapcheck import ArchiveListing, RepoContents
from backups.info import BackupSet, BackupType, Repository, RepoStatus, StanzaInfo
from backups.wal import Segment, TimelineSwitch, parse_lsn
from dr import tasks
from dr.drill import DrillRequest, archive_get_script, restore_point_name
from dr.history import history, rotation_schedule
from dr.host import (
    DrillHostsError,
    host_from_command_line,
    host_from_inventory,
    parse_host_address,
)
from dr.model import (
    CheckRecord,
    CheckStatus,
    DrillMode,
    DrillReport,
    DrillStatus,
    Measures,
    RepoChoice,
    RepoRecord,
    TableSum,
)
from dr.plan import (
    DrillRefused,
    LatestTarget,
    PointTarget,
    TimeTarget,
    check_not_future,
    parse_target_time,
    plan_drill,
    refuse_gaps,
)
from dr.reports import load_reports, markdown, write_reports
from dr.sql import compare_tables, parse_snapshot, parse_state, snapshot_script
from erpcloud import policy
from erpcloud.model import Customer
from erpcloud.output import EXIT_BAD_INPUT, EXIT_FAILED, EXIT_OK
from frontdoor.cli import app
from localtarget import drillsite

from .conftest import CUSTOMERS, REPO_ROOT

NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
STANZA = "acme-retail"
COPY = Repository(2, "eu-central-1", "erpcloud-acme-retail-backup-eu-central-1")
HOST_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGjWU+H6gpoFDnHG8RE5ySi2sOGCEaq0QViuF7ATOYq/"


# --- planning -------------------------------------------------------------------------------------
def backup(label: str, stopped: datetime, wal_start: str, wal_stop: str) -> BackupSet:
    return BackupSet(
        repo=2,
        label=label,
        type=BackupType.FULL,
        started=stopped - timedelta(minutes=5),
        stopped=stopped,
        wal_start=wal_start,
        wal_stop=wal_stop,
        db_id=1,
        size_bytes=40_000_000,
        repo_size_bytes=8_000_000,
    )


def segment(number: int, timeline: int = 1) -> str:
    return Segment(timeline, number).name()


def contents(
    backups: list[BackupSet],
    archived: dict[str, datetime],
    histories: dict[int, list[TimelineSwitch]] | None = None,
) -> RepoContents:
    info = StanzaInfo(STANZA, {2: RepoStatus(0, "ok")}, tuple(backups), {(2, 1): "15-1"})
    listing = ArchiveListing(
        {Segment.parse(name): when for name, when in archived.items()},
        set(histories or {}),
    )
    found = {("15-1", tl): switches for tl, switches in (histories or {}).items()}
    return RepoContents(COPY, info, {"15-1": listing}, found)


T0 = NOW - timedelta(days=2)
#: Two backups (16 hours apart) and an hour of WAL per segment from segment 0x10 on.
BACKUPS = [
    backup("20261121-120000F", T0 + timedelta(hours=1), segment(0x10), segment(0x11)),
    backup("20261122-040000F", T0 + timedelta(hours=17), segment(0x20), segment(0x21)),
]
ARCHIVE = {segment(n): T0 + timedelta(hours=n - 0x10) for n in range(0x10, 0x40)}


def test_latest_takes_the_newest_backup_and_every_archived_segment():
    plan = plan_drill(contents(BACKUPS, ARCHIVE), LatestTarget(NOW))
    assert plan.backup.label == "20261122-040000F"
    assert (plan.first.name(), plan.last.name()) == (segment(0x20), segment(0x3F))
    assert plan.served_until == plan.last
    assert plan.needed == 0x20 and plan.missing == ()
    assert plan.wal_range().timelines == [1]


def test_time_target_takes_the_newest_backup_finished_before_it():
    target = TimeTarget(T0 + timedelta(hours=5, minutes=30))  # between the two backups
    plan = plan_drill(contents(BACKUPS, ARCHIVE), target)
    assert plan.backup.label == "20261121-120000F"
    # the first segment archived at or after the target time is the last one needed
    assert plan.last.name() == segment(0x16)  # the first archived at or after the target
    assert plan.served_until.name() == segment(0x3F)


def test_time_target_before_the_oldest_backup_is_refused_naming_it():
    with pytest.raises(DrillRefused, match=r"before the oldest backup .*20261121-120000F"):
        plan_drill(contents(BACKUPS, ARCHIVE), TimeTarget(T0 - timedelta(minutes=1)))


def test_time_target_inside_the_backups_last_second_takes_an_older_backup():
    """The stop time is whole seconds: the backup may become consistent up to 1 s after it."""
    second = BACKUPS[1].stopped
    early = plan_drill(contents(BACKUPS, ARCHIVE), TimeTarget(second + timedelta(seconds=0.5)))
    assert early.backup.label == BACKUPS[0].label
    later = plan_drill(contents(BACKUPS, ARCHIVE), TimeTarget(second + timedelta(seconds=1)))
    assert later.backup.label == BACKUPS[1].label
    with pytest.raises(DrillRefused, match="before the oldest backup"):
        plan_drill(contents(BACKUPS[1:], ARCHIVE), TimeTarget(second + timedelta(seconds=0.5)))


def test_time_target_after_the_newest_archived_wal_is_refused():
    with pytest.raises(DrillRefused, match="after the newest WAL"):
        plan_drill(contents(BACKUPS, ARCHIVE), TimeTarget(NOW - timedelta(seconds=1)))


def test_time_in_the_future_is_refused():
    check_not_future(TimeTarget(NOW), NOW)
    with pytest.raises(DrillRefused, match="in the future"):
        check_not_future(TimeTarget(NOW + timedelta(seconds=1)), NOW)


def test_point_target_needs_wal_up_to_its_restore_points_segment():
    target = PointTarget("drill-x", segment(0x25), NOW)
    plan = plan_drill(contents(BACKUPS, ARCHIVE), target)
    assert plan.backup.label == "20261122-040000F"
    assert plan.last.name() == plan.served_until.name() == segment(0x25)
    assert plan.needed == 6


def test_first_missing_segment_is_named_and_stops_the_drill():
    archive = {k: v for k, v in ARCHIVE.items() if k not in (segment(0x23), segment(0x24))}
    plan = plan_drill(contents(BACKUPS, archive), LatestTarget(NOW))
    assert plan.first_missing == segment(0x23) and len(plan.missing) == 2
    with pytest.raises(DrillRefused, match=f"WAL segment {segment(0x23)} is missing from repo2"):
        refuse_gaps(plan)
    assert plan.wal_range().first_missing == segment(0x23)


def test_a_backup_without_its_own_wal_is_not_restorable():
    archive = {k: v for k, v in ARCHIVE.items() if int(k[-8:], 16) < 0x21}
    plan = plan_drill(contents(BACKUPS, archive), LatestTarget(NOW))
    assert plan.last.name() == segment(0x21)  # the backup's stop segment at least
    assert plan.first_missing == segment(0x21)


def test_no_backup_is_refused():
    with pytest.raises(DrillRefused, match="holds no backup"):
        plan_drill(contents([], ARCHIVE), LatestTarget(NOW))


def test_timeline_switch_is_followed_through_the_history_file():
    switch = TimelineSwitch(1, parse_lsn("0/25000000"))  # timeline 2 began in segment 0x25
    archive = {segment(n): T0 + timedelta(days=1, minutes=n) for n in range(0x20, 0x25)}
    archive |= {segment(n, 2): T0 + timedelta(days=1, minutes=n) for n in range(0x25, 0x28)}
    plan = plan_drill(contents(BACKUPS[1:], archive, {2: [switch]}), LatestTarget(NOW))
    assert plan.wal_range().timelines == [1, 2]
    assert plan.missing == () and plan.last.name() == segment(0x27, 2)
    with pytest.raises(DrillRefused, match=r"00000002\.history is missing"):
        plan_drill(contents(BACKUPS[1:], archive), LatestTarget(NOW))


def test_target_time_needs_an_offset():
    assert parse_target_time("2026-11-23T09:30:00Z") == datetime(2026, 11, 23, 9, 30, tzinfo=UTC)
    with pytest.raises(ValueError, match="UTC offset"):
        parse_target_time("2026-11-23T09:30:00")
    with pytest.raises(ValueError, match="not an ISO 8601 time"):
        parse_target_time("yesterday")


def test_request_modes_and_target_time_go_together():
    DrillRequest(mode=DrillMode.TIME, target_time=NOW)
    with pytest.raises(ValueError):
        DrillRequest(mode=DrillMode.TIME)
    with pytest.raises(ValueError):
        DrillRequest(mode=DrillMode.LATEST, target_time=NOW)


# --- the SQL side ---------------------------------------------------------------------------------
def test_snapshot_output_is_parsed():
    output = (
        "snapshot\t00000003-0000001B-1\t0/6000090\t000000010000000000000006\t"
        "2026-11-23 10:45:03.038857+00\nlocked\t112\n"
        "table\tpublic.c_order\t1468\t573431438220266550586\n"
    )
    snap = parse_snapshot(output)
    assert snap.lsn == "0/6000090" and snap.wal_file == "000000010000000000000006"
    assert snap.taken_at == datetime(2026, 11, 23, 10, 45, 3, 38857, tzinfo=UTC)
    assert snap.locked_seconds == pytest.approx(0.112)
    assert snap.tables == {"public.c_order": TableSum(rows=1468, checksum="573431438220266550586")}
    with pytest.raises(ValueError):
        parse_snapshot("table\tpublic.x\t1\t2\n")


def test_restored_state_is_parsed():
    state = parse_state("state\tf\t2026-11-23 10:59:41.27889+00\t0/7000000\toff\n")
    assert not state.in_recovery and state.archive_mode == "off"
    assert state.last_commit == datetime(2026, 11, 23, 10, 59, 41, 278890, tzinfo=UTC)
    assert parse_state("state\tt\t\t\toff\n").last_commit is None


def test_table_comparison_names_every_difference():
    ours = {"a": TableSum(rows=1, checksum="1"), "b": TableSum(rows=2, checksum="2")}
    assert compare_tables(ours, dict(ours)) == []
    theirs = {"a": TableSum(rows=1, checksum="9"), "c": TableSum(rows=3, checksum="3")}
    assert compare_tables(ours, theirs) == [
        "b is missing from the restore",
        "c is in the restore but not in production's snapshot",
        "a: same 1 rows, different contents (checksum)",
    ]


def test_restore_point_names_are_checked_before_reaching_sql():
    with pytest.raises(ValueError, match="restore point name"):
        snapshot_script(["psql"], "drill'; DROP TABLE x; --", 5000)
    name = restore_point_name("20261123T105901Z-a-customer-with-a-long-name-a689")
    assert name == "drill-20261123T105901Z-a689"
    assert "pg_create_restore_point('drill-20261123T105901Z-a689')" in snapshot_script(
        ["psql"], name, 5000
    )


@pytest.mark.parametrize(
    ("name", "served"),
    [
        (segment(0x24), True),
        (segment(0x25), True),
        (segment(0x26), False),  # after the limit: the archive as the event left it
        (segment(0x01, 2), False),  # a later timeline sorts after every timeline-1 segment
        ("00000002.history", True),
    ],
)
def test_the_drills_restore_command_serves_nothing_past_the_plan(
    tmp_path: Path, name: str, served: bool
):
    script = tmp_path / "archive-get-until"
    script.write_text(archive_get_script(str(tmp_path / "none.conf"), STANZA, Segment(1, 0x25)))
    script.chmod(0o755)
    result = subprocess.run(
        [str(script), name, str(tmp_path / "out")], capture_output=True, text=True, check=False
    )
    assert result.returncode != 0  # served ones reach pgBackRest, which has no config here
    assert ("not served" not in result.stderr) is served, result.stderr


# --- drill hosts ----------------------------------------------------------------------------------
def test_host_addresses_are_parsed_or_refused():
    assert parse_host_address("ops@10.0.0.5") == ("ops", "10.0.0.5", 22)
    assert parse_host_address("ops@127.0.0.1:2222") == ("ops", "127.0.0.1", 2222)
    for bad in ("10.0.0.5", "ops@", "ops@host:port", "ops@host:70000"):
        with pytest.raises(ValueError, match="--drill-host"):
            parse_host_address(bad)


def test_a_command_line_host_is_pinned(tmp_path: Path):
    known = tmp_path / "known_hosts"
    spec = host_from_command_line("ops@127.0.0.1:2222", HOST_KEY, tmp_path / "key", known, None)
    assert known.read_text().startswith("[127.0.0.1]:2222 ssh-ed25519 ")
    assert spec.target.port == 2222 and spec.root == "/var/lib/erpcloud-drill"
    with pytest.raises(ValueError, match="--drill-host-key"):
        host_from_command_line("ops@127.0.0.1", None, tmp_path / "key", known, None)
    with pytest.raises(ValueError, match="host key"):
        host_from_command_line("ops@127.0.0.1", "ssh-ed25519 nope", tmp_path / "key", known, None)


def test_the_drill_hosts_file_gives_the_regions_host(tmp_path: Path):
    path = tmp_path / "drill-hosts.yaml"
    path.write_text((REPO_ROOT / "dr" / "drill-hosts.example.yaml").read_text())
    spec = host_from_inventory(path, "eu-central-1", tmp_path / "known")
    assert spec.name == "drill-eu-central-1" and spec.target.user == "erpcloud-ops"
    with pytest.raises(DrillHostsError, match="no drill host in region ap-south-1"):
        host_from_inventory(path, "ap-south-1", tmp_path / "known")
    data = yaml.safe_load(path.read_text())
    data["hosts"][0]["ssh"]["prot"] = 22
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(DrillHostsError, match=r"hosts\[0\]\.ssh\.prot.*not a known field"):
        host_from_inventory(path, "eu-central-1", tmp_path / "known")


# --- reports, history, rotation -------------------------------------------------------------------
def report(customer: str, started: datetime, passed: bool) -> DrillReport:
    return DrillReport(
        drill_id=f"{started:%Y%m%dT%H%M%SZ}-{customer}-abcd",
        customer=customer,
        mode=DrillMode.LATEST,
        repo=RepoRecord(index=2, choice=RepoChoice.COPY, region="eu-central-1", bucket="b"),
        started_at=started,
        finished_at=started + timedelta(minutes=1),
        status=DrillStatus.PASSED if passed else DrillStatus.FAILED,
        error=None if passed else "WAL segment 000000010000000000000023 is missing from repo2",
        failed_step=None if passed else "plan",
        checks=[CheckRecord(name="RPO", status=CheckStatus.PASSED, detail="12.0 s")],
        measures=Measures(
            rto_seconds=60.0, rto_limit_seconds=43200, rpo_seconds=12.0, rpo_limit_seconds=3600
        ),
    )


@pytest.fixture
def fleet(sample_fleet: dict[str, Customer]) -> dict[str, Customer]:
    return sample_fleet


def test_history_flags_customers_without_a_passing_drill_in_a_year(fleet: dict[str, Customer]):
    ids = sorted(fleet)
    reports = [
        report(ids[0], NOW - timedelta(days=20), True),
        report(ids[1], NOW - timedelta(days=400), True),  # older than S8's year
        report(ids[1], NOW - timedelta(days=3), False),  # a failed drill does not count
        report("gone-customer", NOW - timedelta(days=1), True),
        report(ids[2], NOW + timedelta(days=1), True),  # after as_of: not yet
    ]
    entries = {e.customer: e for e in history(fleet, reports, NOW)}
    assert not entries[ids[0]].overdue
    assert entries[ids[0]].due == NOW - timedelta(days=20) + policy.DR_DRILL_ROTATION
    assert entries[ids[1]].overdue and len(entries[ids[1]].drills) == 2
    assert entries[ids[2]].overdue and entries[ids[2]].drills == []
    assert not entries["gone-customer"].in_fleet
    later = {e.customer: e for e in history(fleet, reports, NOW + timedelta(days=346))}
    assert later[ids[0]].overdue  # 366 days after its drill


def test_rotation_spreads_the_fleet_over_the_month_most_overdue_first():
    entries = history(
        {f"c{i:02d}": None for i in range(60)},  # type: ignore[misc]
        [report(f"c{i:02d}", NOW - timedelta(days=60 - i), True) for i in range(1, 60)],
        NOW,
    )
    slots = rotation_schedule(entries, date(2026, 12, 1))
    assert [s.customer for s in slots[:3]] == ["c00", "c01", "c02"]  # never drilled, then oldest
    days = [s.day for s in slots]
    assert min(days) == date(2026, 12, 1)
    assert max(days) < date(2026, 12, 1) + policy.DR_DRILL_ROTATION
    assert max(days.count(d) for d in set(days)) == 2  # 60 customers over 30 days
    assert sorted({s.customer for s in slots}) == sorted(f"c{i:02d}" for i in range(60))


def test_reports_are_written_and_read_back(tmp_path: Path):
    failed = report("acme-retail", NOW, False)
    json_path, md_path = write_reports(failed, tmp_path)
    assert json.loads(json_path.read_text())["status"] == "failed"
    text = md_path.read_text()
    assert "FAILED" in text and "**Failed at plan:** WAL segment 000000010000000000000023" in text
    assert "| RPO (event minus last recovered commit) | 12.0 s | 60 min (S8) | yes |" in text
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "report.json").write_text("{not json")
    assert [r.drill_id for r in load_reports(tmp_path)] == [failed.drill_id]
    assert "RTO (drill start to verified service)" in markdown(report("x", NOW, True))


cli = CliRunner()


def test_cli_history_and_schedule(tmp_path: Path, fleet: dict[str, Customer]):
    ids = sorted(fleet)
    for customer in ids:
        write_reports(report(customer, NOW - timedelta(days=10), True), tmp_path)
    common = ["--drills", str(tmp_path), "--customers", str(CUSTOMERS), "--json"]
    ok = cli.invoke(app, ["dr", "history", "--as-of", NOW.isoformat(), *common])
    assert ok.exit_code == EXIT_OK, ok.output
    assert json.loads(ok.output)["overdue"] == []
    late = cli.invoke(app, ["dr", "history", "--as-of", "2028-01-01T00:00:00Z", *common])
    assert late.exit_code == EXIT_FAILED
    assert json.loads(late.output)["overdue"] == ids
    human = cli.invoke(app, ["dr", "history", "--as-of", "2028-01-01T00:00:00Z", *common[:-1]])
    assert "without a passing drill in 365 days" in " ".join(human.output.split())
    plan = cli.invoke(app, ["dr", "schedule", "--start", "2026-12-01", *common])
    assert plan.exit_code == EXIT_OK, plan.output
    slots = json.loads(plan.output)["slots"]
    assert {s["customer"] for s in slots} == set(ids) and slots[0]["day"] == "2026-12-01"
    bad = cli.invoke(app, ["dr", "schedule", "--start", "December", *common])
    assert bad.exit_code == EXIT_BAD_INPUT and "--start" in bad.output


# --- the Fabric task's input checks (the drills themselves: test_dr_machines.py) -----------------
@pytest.fixture(autouse=True)
def local_drill_sites() -> None:
    """What the fabfile does for ``fab dr.drill``: the local site becomes known."""
    drillsite.register()


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"customer": "nobody"}, "--customer: no customer 'nobody'"),
        ({"customer": "acme-retail", "repo": "tertiary"}, "--repo: 'tertiary' is not one of"),
        (
            {"customer": "acme-retail", "latest": True, "target_time": "2026-11-23T09:00:00Z"},
            "exclude each other",
        ),
        ({"customer": "acme-retail", "target_time": "2026-11-23T09:00"}, "needs a UTC offset"),
        ({"customer": "acme-retail", "min_free_mb": "lots"}, "--min-free-mb"),
        ({"customer": "acme-retail", "site": "mars"}, "--site: 'mars'"),
        ({"customer": "acme-retail", "drill_host": "ops@10.0.0.5"}, "--key-file"),
    ],
)
def test_fab_drill_refuses_bad_input_naming_the_option(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], arguments: dict[str, object], message: str
):
    with pytest.raises(Exit) as raised:
        tasks.drill(
            Context(),
            customers=str(CUSTOMERS),
            drills=str(tmp_path),
            **arguments,  # type: ignore[arg-type]
        )
    assert raised.value.code == EXIT_BAD_INPUT
    assert message in capsys.readouterr().err
    assert not any(tmp_path.glob("*/report.json"))  # refused input runs no drill


def test_fab_drill_needs_the_customers_machines_up(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
):
    document = yaml.safe_load((CUSTOMERS / "acme-retail.yaml").read_text())
    document["id"] = "dr-never-up"
    (tmp_path / "customers").mkdir()
    (tmp_path / "customers" / "dr-never-up.yaml").write_text(yaml.safe_dump(document))
    with pytest.raises(Exit) as raised:
        tasks.drill(
            Context(),
            customer="dr-never-up",
            customers=str(tmp_path / "customers"),
            drills=str(tmp_path / "drills"),
            json=True,
        )
    assert raised.value.code == EXIT_BAD_INPUT
    refused = json.loads(capsys.readouterr().out)
    # The default site is the machines: none are up for this customer.
    assert "--site machines: no local machines for 'dr-never-up'" in refused["error"]

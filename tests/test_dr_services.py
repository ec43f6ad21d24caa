"""Restore drills against the real components (S8): a local target (PostgreSQL 15 run as
``postgres``, pgBackRest 2.45, moto behind stunnel with both regions' buckets, sshd hosts),
an order writer committing all along, one full backup shared by the module, and drills from
the copy region onto real sshd drill hosts: a fresh local one per drill, or one given on the
command line.

The faults run first (none forces a WAL switch), so that the latest-point drill comes more than
twice the archive timeout after the last forced switch: its RPO then shows that
``archive_timeout``, not a switch of ours, bounds it. Each fault leaves production and both
repositories as they were (a deleted or damaged object is put back).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from backups.info import BackupSet, BackupType, customer_repositories
from backups.pgbackrest import LocalPgBackRest
from backups.runs import list_backups, run_backups, stanza_info
from dr.drill import DrillRequest, run_drill
from dr.host import DrillHostSpec, Shell, host_from_command_line
from dr.model import CheckStatus, DrillMode, DrillReport, DrillStatus
from dr.site import DrillSite
from dr.sql import compare_tables, parse_tables, psql_argv, sums_script
from erpcloud import policy
from erpcloud.cli import app
from erpcloud.fleet import load_fleet
from erpcloud.model import Customer, Environment
from erpcloud.output import EXIT_BAD_INPUT, EXIT_FAILED
from erpcloud.render import METRICS_NAMESPACE, PRODUCT_DATABASE
from localtarget import sampledata, target
from localtarget.drillsite import local_site
from localtarget.postgres import run_as_postgres
from localtarget.processes import free_port, pid_alive
from localtarget.sampledata import OrderWriter
from localtarget.sshhost import SshHost, account_exists, generate_keypair

from .conftest import CUSTOMERS, REPO_ROOT

pytestmark = pytest.mark.services

TAG = os.getpid() % 100000
FAB = str(Path(sys.executable).parent / "fab")
#: The module customer's archive timeout (a customer file may lower S7's 45 s): short, so the
#: latest-point drill proves its bound in seconds.
ARCHIVE_TIMEOUT = 10
#: archive-push's own time to reach the bucket after a segment is closed, allowed on top.
PUSH_ALLOWANCE = 8


@dataclass
class Production:
    customer: Customer
    customers_dir: Path
    running: target.LocalTarget
    writer: OrderWriter
    labels: dict[str, list[str]]
    backup: BackupSet  # the copy region's
    orders_at_backup: int
    #: When WAL was last switched on purpose (the backup's end, a point drill's snapshot).
    last_switch: datetime

    def psql(self, sql: str) -> str:
        return self.running.instance.cluster.psql(sql, dbname=PRODUCT_DATABASE)

    def orders(self) -> int:
        return int(self.psql("SELECT count(*) FROM c_order"))


def copy_customer(directory: Path) -> Customer:
    document = yaml.safe_load((CUSTOMERS / "acme-retail.yaml").read_text())
    document["id"] = f"dr-{TAG}"
    document["prefix"] = f"dr{TAG}"
    for index, user in enumerate(document["ssh"]["users"]):
        user["name"] = f"dr{TAG}u{index}"  # accounts on the shared user table: unique
    document.setdefault("backup", {})["archive_timeout_seconds"] = ARCHIVE_TIMEOUT
    directory.mkdir(parents=True, exist_ok=True)
    (directory / f"{document['id']}.yaml").write_text(yaml.safe_dump(document, sort_keys=False))
    fleet = load_fleet(directory)
    assert fleet.ok, fleet.errors
    return fleet.customers[document["id"]]


@pytest.fixture(scope="module")
def production(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Production]:
    customers_dir = tmp_path_factory.mktemp("dr-customers")
    customer = copy_customer(customers_dir)
    running = target.up(customer)
    writer: OrderWriter | None = None
    try:
        cluster = running.instance.cluster
        sampledata.create_database(cluster.conninfo())
        sampledata.load_sample_data(cluster.conninfo(PRODUCT_DATABASE), customer)
        writer = OrderWriter(cluster.conninfo(PRODUCT_DATABASE), interval=0.05).start()
        runner = LocalPgBackRest(running.instance)
        run = run_backups(runner, customer, BackupType.FULL)
        assert run.ok, run.repositories
        last_switch = datetime.now(UTC)
        orders = int(cluster.psql("SELECT count(*) FROM c_order", dbname=PRODUCT_DATABASE))
        labels = {k: [b.label for b in v] for k, v in list_backups(runner, customer).items()}
        copy_backup = stanza_info(runner, 2).backups_in(2)[-1]
        yield Production(
            customer, customers_dir, running, writer, labels, copy_backup, orders, last_switch
        )
    finally:
        if writer is not None:
            writer._stop.set()
        target.down(customer.id)


@pytest.fixture(scope="module")
def drills_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("dr-drills")


@pytest.fixture(scope="module")
def work_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("dr-work")


def drill(
    production: Production, drills_dir: Path, work_dir: Path, spec: DrillHostSpec | None = None,
    **request: Any,
) -> DrillReport:  # fmt: skip
    site: DrillSite = local_site(production.customer, work_dir, spec)
    return run_drill(site, DrillRequest(**request), drills_dir)


def assert_untouched(production: Production) -> None:
    """Production still takes writes, and both repositories list the backups they had."""
    new_id = production.psql(
        "INSERT INTO c_bpartner (name, email) VALUES ('after a drill', 'x@example.com') "
        "RETURNING id"
    )
    assert new_id.splitlines()[0].isdigit(), new_id
    runner = LocalPgBackRest(production.running.instance)
    now = {k: [b.label for b in v] for k, v in list_backups(runner, production.customer).items()}
    assert now == production.labels
    assert production.writer.errors == []


def assert_failed(report: DrillReport, drills_dir: Path, step: str, pattern: str) -> None:
    assert report.status is DrillStatus.FAILED
    assert report.failed_step == step, report.error
    assert re.search(pattern, report.error or ""), report.error
    on_disk = json.loads((drills_dir / report.drill_id / "report.json").read_text())
    assert on_disk["status"] == "failed" and on_disk["error"] == report.error
    assert f"**Failed at {step}:**" in (drills_dir / report.drill_id / "report.md").read_text()
    host = report.drill_host
    if host is not None and host.local:  # the fresh drill host is gone with its account
        assert host.torn_down and host.root and not Path(host.root).exists()
        assert not any(account_exists(u) for u in host.created_users)


def copy_bucket(production: Production) -> tuple[Any, str]:
    repo = customer_repositories(production.customer)[1]
    return production.running.aws.client("s3", repo.region), repo.bucket


def bucket_keys(client: Any, bucket: str, prefix: str) -> dict[str, int]:
    pages = client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
    return {o["Key"]: o["Size"] for page in pages for o in page.get("Contents", [])}


# --- faults: each fails loudly, with a report, and nothing lost -----------------------------------
def test_missing_wal_segment_in_the_copy_repository_is_named(
    production: Production, drills_dir: Path, work_dir: Path
):
    client, bucket = copy_bucket(production)
    segment = production.backup.wal_start  # every restore from this backup needs it
    prefix = f"pgbackrest/archive/{production.customer.stanza}/"
    key = next(k for k in bucket_keys(client, bucket, prefix) if f"/{segment}-" in k)
    body = client.get_object(Bucket=bucket, Key=key)["Body"].read()
    client.delete_object(Bucket=bucket, Key=key)
    try:
        report = drill(production, drills_dir, work_dir, mode=DrillMode.LATEST)
    finally:
        client.put_object(Bucket=bucket, Key=key, Body=body)
    assert_failed(report, drills_dir, "plan", f"WAL segment {segment} is missing from repo2")
    assert report.wal is not None and report.wal.first_missing == segment
    assert report.backup is not None and report.backup.label == production.backup.label
    assert [s.name for s in report.steps] == ["drill host", "plan", "teardown"]  # no restore
    assert_untouched(production)


def test_corrupted_backup_file_fails_the_restore_on_its_checksum(
    production: Production, drills_dir: Path, work_dir: Path
):
    client, bucket = copy_bucket(production)
    prefix = f"pgbackrest/backup/{production.customer.stanza}/{production.backup.label}/pg_data/"
    sizes = bucket_keys(client, bucket, prefix)
    key = max(sizes, key=lambda k: sizes[k])
    original = client.get_object(Bucket=bucket, Key=key)["Body"].read()
    damaged = bytearray(original)
    middle = len(damaged) // 2
    damaged[middle : middle + 16] = bytes(b ^ 0xFF for b in damaged[middle : middle + 16])
    client.put_object(Bucket=bucket, Key=key, Body=bytes(damaged))
    try:
        report = drill(production, drills_dir, work_dir, mode=DrillMode.LATEST)
    finally:
        client.put_object(Bucket=bucket, Key=key, Body=original)
    assert_failed(report, drills_dir, "restore", r"failed its checksum .*(?i:checksum)")
    assert report.restored is None  # PostgreSQL never started on damaged files
    assert_untouched(production)


def test_unreachable_drill_host(
    production: Production, drills_dir: Path, work_dir: Path, client_key: tuple[Path, str]
):
    nobody_listens = free_port()
    spec = host_from_command_line(
        f"erpdrnobody@127.0.0.1:{nobody_listens}",
        client_key[1],  # any valid key: nothing answers to present one
        client_key[0],
        work_dir / "unreachable_known_hosts",
        None,
    )
    report = drill(production, drills_dir, work_dir, spec, mode=DrillMode.LATEST)
    assert_failed(report, drills_dir, "drill host", f"unreachable: .*127.0.0.1.*{nobody_listens}")
    assert_untouched(production)


def test_full_drill_host(production: Production, drills_dir: Path, work_dir: Path):
    report = drill(production, drills_dir, work_dir, mode=DrillMode.LATEST, min_free_bytes=10**15)
    assert_failed(report, drills_dir, "space", r"is full: \d+ bytes free .* needs 1000000000000000")
    assert report.measures.restore_seconds is None
    assert_untouched(production)


def test_target_before_the_oldest_backup(production: Production, drills_dir: Path, work_dir: Path):
    before = production.backup.started - timedelta(minutes=1)
    report = drill(production, drills_dir, work_dir, mode=DrillMode.TIME, target_time=before)
    assert_failed(
        report, drills_dir, "plan", f"before the oldest backup in repo2 .*{production.backup.label}"
    )
    assert_untouched(production)


def test_target_in_the_future(production: Production, drills_dir: Path, work_dir: Path):
    later = datetime.now(UTC) + timedelta(hours=1)
    report = drill(production, drills_dir, work_dir, mode=DrillMode.TIME, target_time=later)
    assert_failed(report, drills_dir, "plan", "is in the future")
    assert report.drill_host is None  # refused before any host was touched
    assert_untouched(production)


# --- the latest point, through the Fabric task ----------------------------------------------------
def fab(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [FAB, *args], cwd=REPO_ROOT, capture_output=True, text=True, check=False, timeout=300
    )


def test_fab_drill_latest_point_rpo_within_the_archive_timeout(
    production: Production, drills_dir: Path
):
    quiet_for = 2 * ARCHIVE_TIMEOUT + PUSH_ALLOWANCE
    wait = production.last_switch + timedelta(seconds=quiet_for) - datetime.now(UTC)
    time.sleep(max(wait.total_seconds(), 0))
    result = fab(
        "dr.drill", "--customer", production.customer.id,
        "--customers", str(production.customers_dir), "--drills", str(drills_dir),
        "--latest", "--json",
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    report = DrillReport.model_validate(json.loads(result.stdout))
    assert report.passed and report.mode is DrillMode.LATEST and report.repo.index == 2
    assert report.event_time is not None and report.restored is not None
    # No WAL switch of ours for over twice the timeout: only archive_timeout bounds the RPO.
    assert (report.event_time - production.last_switch).total_seconds() > quiet_for
    rpo = report.measures.rpo_seconds
    assert rpo is not None and 0 <= rpo <= ARCHIVE_TIMEOUT + PUSH_ALLOWANCE, rpo
    assert rpo <= policy.RPO_TARGET.total_seconds() == report.measures.rpo_target_seconds
    assert report.restored.last_commit is not None
    assert report.restored.last_commit <= report.event_time
    checks = {c.name: c.status for c in report.checks}
    assert checks["recovered to target"] is CheckStatus.PASSED
    assert checks["product health query"] is CheckStatus.PASSED
    assert report.restored.health == production.customer.product_version
    assert checks["equal to production"] is CheckStatus.SKIPPED
    assert report.restored.tables["public.c_order"].rows > production.orders_at_backup
    host = report.drill_host
    assert host is not None and host.local and host.torn_down
    assert host.root and not Path(host.root).exists()
    s3 = production.running.aws.client("s3", policy.DR_REPORTS_REGION)
    uploaded = s3.get_object(Bucket=policy.DR_REPORTS_BUCKET, Key=report.uploaded[0])
    assert json.loads(uploaded["Body"].read())["drill_id"] == report.drill_id
    assert "… restore: ok" in result.stderr  # progress went to stderr, JSON to stdout
    assert_untouched(production)


# --- the point drill: equal to production at exactly the restore point ----------------------------
@pytest.fixture(scope="module")
def drill_host(ssh_host_factory: Callable[..., SshHost]) -> SshHost:
    """An existing drill host, given on the command line (as on AWS): a real sshd, sudo."""
    return ssh_host_factory("dr-drill-host")


def test_point_drill_equals_production_at_its_restore_point_while_writes_go_on(
    production: Production,
    drills_dir: Path,
    work_dir: Path,
    drill_host: SshHost,
    client_key: tuple[Path, str],
):
    spec = host_from_command_line(
        f"{drill_host.users[0].name}@127.0.0.1:{drill_host.port}",
        drill_host.host_public_key(),
        client_key[0],
        work_dir / "drill_host_known_hosts",
        str(drill_host.state_dir / "drills"),
    )
    committed = production.writer.committed
    report = drill(production, drills_dir, work_dir, spec, mode=DrillMode.POINT, keep=True)
    production.last_switch = datetime.now(UTC)
    assert report.passed, (report.failed_step, report.error)
    assert report.snapshot is not None and report.restored is not None
    checks = {c.name: c for c in report.checks}
    assert checks["equal to production"].status is CheckStatus.PASSED
    assert checks["recovered to target"].status is CheckStatus.PASSED
    assert report.restored.tables == report.snapshot.tables  # counts and checksums, per table
    snapshot_orders = report.snapshot.tables["public.c_order"].rows
    # Writes went on before, during and after: the restore holds the ones up to the restore
    # point (after the base backup) and none after it.
    assert production.orders_at_backup < snapshot_orders < production.orders()
    assert production.writer.committed > committed
    assert report.backup is not None and report.backup.label == production.backup.label
    assert report.wal is not None and report.wal.first == production.backup.wal_start
    assert report.wal.last == report.snapshot.wal_file == report.wal.served_until
    assert report.measures.rpo_seconds is not None and report.measures.rpo_seconds < 5

    # The comparison is sensitive: production now (writes since) differs from the restore.
    cluster = production.running.instance.cluster
    argv = psql_argv("psql", str(cluster.socket_dir), cluster.port, PRODUCT_DATABASE)
    now = parse_tables(run_as_postgres(["bash", "-c", sums_script(argv)]).stdout)
    assert compare_tables(now, report.restored.tables) != []

    # The kept drill host: the restored cluster runs there, promoted, not archiving.
    kept = report.drill_host
    assert kept is not None and kept.kept and not kept.local and kept.postmaster_pid
    shell = Shell(spec.target)
    try:
        query = "SELECT pg_is_in_recovery(), current_setting('archive_mode'), count(*) FROM c_order"
        socket = f"{kept.directory}/socket"
        psql = "/usr/lib/postgresql/15/bin/psql -X -At"
        out = shell.postgres(f'{psql} -h {socket} -p {kept.pg_port} -d erp -c "{query}"')
    finally:
        shell.close()
    assert out.stdout.strip() == f"f|off|{snapshot_orders}", out.stderr
    # It never wrote to a repository: its new timeline's history is in neither bucket.
    for repo in customer_repositories(production.customer):
        client = production.running.aws.client("s3", repo.region)
        keys = bucket_keys(client, repo.bucket, "pgbackrest/archive/")
        assert not [k for k in keys if k.endswith("00000002.history")]
    assert_untouched(production)

    result = fab("dr.teardown", "--drill", report.drill_id, "--drills", str(drills_dir))
    assert result.returncode == 0, result.stderr
    assert not pid_alive(kept.postmaster_pid)
    assert not Path(kept.directory).exists()
    after = json.loads((drills_dir / report.drill_id / "report.json").read_text())
    assert after["drill_host"]["torn_down"] is True
    assert fab("dr.teardown", "--drill", report.drill_id, "--drills", str(drills_dir)).returncode


# --- history of the module's drills ---------------------------------------------------------------
def test_history_lists_the_drills_and_flags_nobody_drilled_this_year(
    production: Production, drills_dir: Path
):
    common = ["--drills", str(drills_dir), "--customers", str(production.customers_dir)]
    result = CliRunner().invoke(app, ["dr", "history", *common, "--json"])
    assert result.exit_code == 0, result.output
    (entry,) = json.loads(result.output)["customers"]
    statuses = [d["status"] for d in entry["drills"]]
    assert statuses.count("passed") == 2 and statuses.count("failed") == 6
    assert entry["overdue"] is False
    later = (datetime.now(UTC) + policy.DR_DRILL_MAX_INTERVAL + timedelta(days=1)).isoformat()
    flagged = CliRunner().invoke(app, ["dr", "history", *common, "--as-of", later, "--json"])
    assert flagged.exit_code == 1
    assert json.loads(flagged.output)["overdue"] == [production.customer.id]


# --- the gap check from the operations side, over SSH (S5-S7) ----------------------------------
def test_gap_check_over_ssh_through_the_inventory_publishes_to_cloudwatch(
    production: Production, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
):
    """`erpcloud backup verify --inventory`: production's pgBackRest reached over SSH with the
    host key pinned, the result put to CloudWatch through boto3's own configuration."""
    aws = production.running.aws
    monkeypatch.setenv("AWS_ENDPOINT_URL", aws.endpoint_url)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    customer = production.customer
    inventory = production.running.state.inventory
    common = ["--customers", str(production.customers_dir), "--inventory", inventory]
    result = CliRunner().invoke(
        app, ["backup", "verify", customer.id, *common, "--publish", "--json"]
    )
    assert result.exit_code == 0, result.output
    document = json.loads(result.output)
    host = production.running.state.host(Environment.PRODUCTION)
    assert document["status"] == "OK"
    assert document["via"].endswith(f"over SSH ({host.ops_user}@127.0.0.1:{host.port})")
    assert [c["status"] for c in document["repositories"]] == ["OK", "OK"]
    cloudwatch = aws.client("cloudwatch", customer.region)
    listed = cloudwatch.list_metrics(Namespace=METRICS_NAMESPACE, MetricName="WalGapCheckStatus")
    dimensions = [m["Dimensions"] for m in listed["Metrics"]]
    assert [{"Name": "Customer", "Value": customer.id}] in dimensions

    # The fleet-wide run the operations timer makes: the inventory's one production host.
    fleet = CliRunner().invoke(app, ["backup", "verify-fleet", *common, "--publish", "--json"])
    assert fleet.exit_code == 0, fleet.output
    (entry,) = json.loads(fleet.output)["entries"]
    assert entry["customer"] == customer.id and entry["status"] == "OK"
    assert "WalGapCheckStatus" in entry["published"] and entry["via"] == document["via"]

    # A host whose key is not the pinned one is refused, loudly, before any command runs.
    another_key = generate_keypair(tmp_path / "another" / "id_ed25519", "another host")
    tampered = tmp_path / "inventory-wrong-key.yaml"
    data = yaml.safe_load(Path(inventory).read_text())
    for entry in data["hosts"]:
        entry["ssh"]["host_key"] = another_key
    tampered.write_text(yaml.safe_dump(data))
    refused = CliRunner().invoke(
        app, ["backup", "verify", customer.id, "--customers", str(production.customers_dir),
              "--inventory", str(tampered), "--json"],
    )  # fmt: skip
    assert refused.exit_code == EXIT_FAILED, refused.output
    error = json.loads(refused.output)["error"]
    assert "cannot be reached" in error and "host key changed" in error and "refusing" in error
    missing = CliRunner().invoke(
        app, ["backup", "list", customer.id, *common[:2], "--inventory", "/nonexistent.yaml"]
    )
    assert missing.exit_code == EXIT_BAD_INPUT and "/nonexistent.yaml" in missing.output

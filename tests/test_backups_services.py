"""Backups against the real components (S6, S7): PostgreSQL 15 run as ``postgres``, pgBackRest
2.45, moto in server mode with both regions' buckets, and stunnel in front of it.

One database per module (and a second one for retention and timelines) is backed up once and
shared by the tests; each test leaves the repositories as it found them (a deleted WAL object is
put back). Customers are copies of the samples under their own ids, so their buckets are theirs
alone in the session's emulator.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

import backups.cli
from backups.gapcheck import Outcome, verify
from backups.info import customer_repositories
from backups.pgbackrest import LocalPgBackRest, SshPgBackRest
from backups.restore import restore
from backups.retention import plan_expiry
from backups.runs import stanza_info
from backups.targets import BackupTarget
from erpcloud import policy
from erpcloud.cli import app
from erpcloud.fleet import load_fleet
from erpcloud.model import Customer
from erpcloud.render import METRICS_NAMESPACE
from erpcloud.ssh import SshTarget
from localtarget.instance import LocalInstance, create_buckets
from localtarget.postgres import PostgresCluster, chown_to_postgres
from localtarget.processes import free_port
from localtarget.s3 import LocalAws
from localtarget.sshhost import SshHost

from .conftest import CUSTOMERS

pytestmark = pytest.mark.services

#: The archive_command's wait for the async push, for this test database only (pgBackRest's
#: default, used in production, is 60 s): it makes the S3-outage test see a failed archive
#: attempt in seconds instead of a minute. Nothing else differs from the rendered files.
ARCHIVE_PUSH_TIMEOUT = "15"
SEGMENT_KEY = re.compile(r"/(?P<segment>[0-9A-F]{24})-[0-9a-f]{40}\.lz4$")
cli = CliRunner()


# --- helpers --------------------------------------------------------------------------------------
def copy_customer(directory: Path, sample: str, new_id: str) -> Customer:
    document = yaml.safe_load((CUSTOMERS / f"{sample}.yaml").read_text())
    document["id"] = new_id
    directory.mkdir(parents=True, exist_ok=True)
    (directory / f"{new_id}.yaml").write_text(yaml.safe_dump(document, sort_keys=False))
    fleet = load_fleet(directory)
    assert fleet.ok, fleet.errors
    return fleet.customers[new_id]


def start_instance(customer: Customer, root: Path, aws: LocalAws) -> LocalInstance:
    create_buckets(aws, customer)
    instance = LocalInstance.create(customer, root, aws)
    instance.cluster.env["PGBACKREST_ARCHIVE_TIMEOUT"] = ARCHIVE_PUSH_TIMEOUT
    instance.start()
    instance.pgbackrest("stanza-create")
    return instance


def wait_for(what: str, probe: Callable[[], bool], timeout: float) -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if probe():
            return time.monotonic() - started
        time.sleep(0.5)
    raise AssertionError(f"{what}: not within {timeout:.0f} s")


def archiver(instance: LocalInstance) -> dict[str, str]:
    row = instance.cluster.psql(
        "SELECT archived_count, coalesce(last_archived_wal, ''), failed_count FROM pg_stat_archiver"
    )
    archived, last, failed = row.split("|")
    return {"archived": archived, "last": last, "failed": failed}


def switch_wal(instance: LocalInstance, marker: str) -> str:
    """Write something, close the segment, and return the closed segment's name."""
    instance.cluster.psql(
        f"CREATE TABLE IF NOT EXISTS marks(v text); INSERT INTO marks VALUES ('{marker}')"  # noqa: S608
    )
    return instance.cluster.psql("SELECT pg_walfile_name(pg_switch_wal())")


def wait_archived(instance: LocalInstance, segment: str, timeout: float = 90) -> None:
    wait_for(f"{segment} archived", lambda: archiver(instance)["last"] >= segment, timeout)


def bucket_objects(aws: LocalAws, region: str, bucket: str, prefix: str) -> dict[str, Any]:
    client = aws.client("s3", region)
    found: dict[str, Any] = {}
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for item in page.get("Contents", []):
            found[item["Key"]] = item
    return found


def archived_segments(aws: LocalAws, customer: Customer, repo: int) -> dict[str, str]:
    """Segment name → object key in a repository's bucket, listed with boto3."""
    chosen = customer_repositories(customer)[repo - 1]
    keys = bucket_objects(
        aws, chosen.region, chosen.bucket, f"pgbackrest/archive/{customer.stanza}/"
    )
    return {m["segment"]: key for key in keys if (m := SEGMENT_KEY.search(key))}


def invoke(*args: str) -> Any:
    return cli.invoke(app, ["backup", *args], catch_exceptions=False)


# --- the shared database --------------------------------------------------------------------------
@pytest.fixture(scope="module")
def customers_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("backup-customers")


@pytest.fixture(scope="module")
def customer(customers_dir: Path) -> Customer:
    return copy_customer(customers_dir, "acme-retail", "backups-test-acme")


@pytest.fixture(scope="module")
def instance(customer: Customer, local_aws: LocalAws, state_root: Path) -> Iterator[LocalInstance]:
    instance = start_instance(customer, state_root / "backups-acme", local_aws)
    try:
        yield instance
    finally:
        instance.stop()


@pytest.fixture(scope="module")
def runner(instance: LocalInstance) -> LocalPgBackRest:
    return LocalPgBackRest(instance)


@pytest.fixture(scope="module", autouse=True)
def resolve_to_test_instances(local_aws: LocalAws) -> Iterator[dict[str, BackupTarget]]:
    """`erpcloud backup ...` finds this module's databases (the default finds the machines of
    `erpcloud local up`)."""
    targets: dict[str, BackupTarget] = {}
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(backups.cli, "resolve_target", lambda c: targets[c.id])
        yield targets


@pytest.fixture(scope="module")
def backed_up(
    customer: Customer,
    customers_dir: Path,
    runner: LocalPgBackRest,
    local_aws: LocalAws,
    resolve_to_test_instances: dict[str, BackupTarget],
) -> dict[str, Any]:
    """`erpcloud backup run --type full`: the first backup, to both repositories."""
    resolve_to_test_instances[customer.id] = BackupTarget(
        runner, lambda region: local_aws.client("cloudwatch", region)
    )
    result = invoke(
        "run", customer.id, "--type", "full", "--customers", str(customers_dir), "--json"
    )
    assert result.exit_code == 0, result.output
    document: dict[str, Any] = json.loads(result.output)
    return document


# --- S6: backups reach both regions ---------------------------------------------------------------
def test_backup_run_reaches_both_buckets(
    customer: Customer, customers_dir: Path, backed_up: dict[str, Any], local_aws: LocalAws
):
    labels = {r["repo"]["index"]: r["label"] for r in backed_up["repositories"]}
    assert backed_up["ok"] and set(labels) == {1, 2}
    assert all(r["type"] == "full" for r in backed_up["repositories"])
    for repo in customer_repositories(customer):
        objects = bucket_objects(local_aws, repo.region, repo.bucket, "pgbackrest/")
        stanza = customer.stanza
        assert f"pgbackrest/backup/{stanza}/{labels[repo.index]}/backup.manifest" in objects
        assert any(
            k.startswith(f"pgbackrest/backup/{stanza}/{labels[repo.index]}/pg_data/")
            for k in objects
        )
        assert archived_segments(local_aws, customer, repo.index), f"no WAL in {repo}"

    listed = invoke("list", customer.id, "--customers", str(customers_dir), "--json")
    assert listed.exit_code == 0, listed.output
    repositories = json.loads(listed.output)["repositories"]
    assert [b["label"] for b in repositories["repo1"]] == [labels[1]]
    assert [b["label"] for b in repositories["repo2"]] == [labels[2]]
    human = invoke("list", customer.id, "--customers", str(customers_dir))
    assert labels[1] in human.output and labels[2] in human.output and "repo2" in human.output


# --- S7: point in time, from each repository ------------------------------------------------------
@pytest.fixture(scope="module")
def two_writes(instance: LocalInstance, backed_up: dict[str, Any]) -> str:
    """'first', then a moment, then 'second'; the WAL after it archived. Returns the moment."""
    psql = instance.cluster.psql
    psql("CREATE TABLE pitr(v text)")
    psql("INSERT INTO pitr VALUES ('first')")
    time.sleep(0.5)
    target = psql("SELECT now()")
    time.sleep(1.0)
    psql("INSERT INTO pitr VALUES ('second')")
    instance.switch_wal_and_wait()
    return target


@pytest.mark.parametrize("repo", [1, 2])
def test_point_in_time_restore_from_each_repository(
    repo: int, runner: LocalPgBackRest, two_writes: str, state_root: Path, local_aws: LocalAws
):
    root = state_root / f"backups-restored-{repo}"
    data = root / "data"
    for directory in (root, data, root / "socket", root / "log"):
        directory.mkdir(parents=True)
        chown_to_postgres(directory)
    data.chmod(0o700)
    restored = PostgresCluster(root, port=free_port(), env=local_aws.pgbackrest_env())
    try:
        restore(runner, repo, str(data), target_time=two_writes)
        assert "archive_mode = 'off'" in (data / "postgresql.auto.conf").read_text()
        restored.start()
        wait_for("promotion", lambda: restored.psql("SELECT pg_is_in_recovery()") == "f", 60)
        assert restored.psql("SELECT string_agg(v, ',') FROM pitr") == "first"
    finally:
        restored.stop()
        shutil.rmtree(root, ignore_errors=True)


# --- S7: the gap check ----------------------------------------------------------------------------
def test_verify_healthy_archive_is_ok_and_published(
    customer: Customer, customers_dir: Path, backed_up: dict[str, Any], local_aws: LocalAws
):
    result = invoke("verify", customer.id, "--customers", str(customers_dir), "--json", "--publish")
    assert result.exit_code == 0, result.output
    document = json.loads(result.output)
    assert document["status"] == "OK"
    for check in document["repositories"]:
        assert check["status"] == "OK" and check["missing_count"] == 0
        assert check["segments_checked"] >= 1 and check["timelines"] == [1]
        assert check["newest_age_seconds"] < policy.ARCHIVE_LATE_AFTER.total_seconds()
    assert "WalGapCheckStatus" in document["published_metrics"]

    cloudwatch = local_aws.client("cloudwatch", customer.region)
    stats = cloudwatch.get_metric_statistics(
        Namespace=METRICS_NAMESPACE,
        MetricName="WalGapCheckStatus",
        Dimensions=[{"Name": "Customer", "Value": customer.id}],
        StartTime=datetime.now(UTC) - timedelta(hours=1),
        EndTime=datetime.now(UTC) + timedelta(minutes=5),
        Period=60,
        Statistics=["Maximum"],
    )
    assert [p["Maximum"] for p in stats["Datapoints"]] == [0.0]


def test_missing_copy_segment_is_a_failure_naming_it(
    customer: Customer, customers_dir: Path, instance: LocalInstance, local_aws: LocalAws
):
    wait_archived(instance, switch_wal(instance, "before-the-hole"))
    first_needed = verify(LocalPgBackRest(instance), customer).repositories[1].checked_from
    assert first_needed is not None
    segments = sorted(s for s in archived_segments(local_aws, customer, 2) if s >= first_needed)
    assert len(segments) >= 3
    victim = segments[len(segments) // 2]  # neither the first needed nor the newest
    copy = customer_repositories(customer)[1]
    s3 = local_aws.client("s3", copy.region)
    key = archived_segments(local_aws, customer, 2)[victim]
    body = s3.get_object(Bucket=copy.bucket, Key=key)["Body"].read()
    s3.delete_object(Bucket=copy.bucket, Key=key)
    try:
        result = invoke("verify", customer.id, "--customers", str(customers_dir), "--json")
        assert result.exit_code == 1, result.output
        document = json.loads(result.output)
        assert document["status"] == "FAILURE"
        primary, second = document["repositories"]
        assert primary["status"] == "OK" and primary["first_missing"] is None
        assert second["status"] == "FAILURE" and second["first_missing"] == victim
        assert second["missing_count"] == 1
        human = invoke("verify", customer.id, "--customers", str(customers_dir))
        assert human.exit_code == 1
        flat = " ".join(human.output.split())
        assert f"WAL segment {victim} is missing from repo2 ({copy.region}" in flat
    finally:
        s3.put_object(Bucket=copy.bucket, Key=key, Body=body)
    assert verify(LocalPgBackRest(instance), customer).status is Outcome.OK


def test_copy_region_behind_is_a_warning(
    customer: Customer, instance: LocalInstance, local_aws: LocalAws
):
    newest = switch_wal(instance, "copy-behind")
    wait_archived(instance, newest)
    copy = customer_repositories(customer)[1]
    s3 = local_aws.client("s3", copy.region)
    key = archived_segments(local_aws, customer, 2)[newest]
    body = s3.get_object(Bucket=copy.bucket, Key=key)["Body"].read()
    s3.delete_object(Bucket=copy.bucket, Key=key)
    try:
        later = datetime.now(UTC) + policy.ARCHIVE_COPY_LAG_GRACE + timedelta(seconds=30)
        result = verify(LocalPgBackRest(instance), customer, now=later)
        primary, second = result.repositories
        assert result.status is Outcome.WARNING and result.exit_code == 3
        assert primary.status is Outcome.OK
        assert [f.code for f in second.findings if f.code == "behind"] == ["behind"]
        assert second.missing_count == 0  # a tail not yet copied is no gap
        # Within the grace period the copy is not behind: the two pushes are seconds apart.
        assert verify(LocalPgBackRest(instance), customer).repositories[1].status is Outcome.OK
    finally:
        s3.put_object(Bucket=copy.bucket, Key=key, Body=body)


def test_late_archive_warns_unless_the_database_is_idle(
    customer: Customer, instance: LocalInstance
):
    wait_archived(instance, switch_wal(instance, "late"))
    later = datetime.now(UTC) + policy.ARCHIVE_LATE_AFTER + timedelta(minutes=1)
    runner = LocalPgBackRest(instance)
    blind = verify(runner, customer, now=later, ask_database=False)
    assert blind.status is Outcome.WARNING
    assert all("late" in [f.code for f in r.findings] for r in blind.repositories)
    # The database has finished no segment since: nothing waits to be archived, nothing is late.
    assert verify(runner, customer, now=later).status is Outcome.OK


def test_s3_outage_warns_then_archive_catches_up_without_gap(
    customer: Customer, instance: LocalInstance, local_aws: LocalAws
):
    wait_archived(instance, switch_wal(instance, "before-outage"))
    before = archiver(instance)
    local_aws.stop_tls_proxy()
    try:
        written = [switch_wal(instance, f"during-outage-{n}") for n in range(3)]
        during = verify(LocalPgBackRest(instance), customer, io_timeout=2)
        assert during.status is Outcome.WARNING and during.exit_code == 3
        assert all([f.code for f in r.findings] == ["unreachable"] for r in during.repositories)
        wait_for(
            "a failed archive attempt",
            lambda: int(archiver(instance)["failed"]) > int(before["failed"]),
            timeout=int(ARCHIVE_PUSH_TIMEOUT) * 4,
        )
        assert archiver(instance)["last"] < written[0]  # nothing got through
    finally:
        local_aws.start_tls_proxy()
    last = switch_wal(instance, "after-outage")
    wait_archived(instance, last)
    after = verify(LocalPgBackRest(instance), customer)
    assert after.status is Outcome.OK, after.findings
    for repo in (1, 2):
        assert set(written) <= set(archived_segments(local_aws, customer, repo))
    assert instance.cluster.psql("SELECT count(*) FROM marks WHERE v LIKE 'during-outage-%'") == "3"


def test_ssh_runner_sees_the_same_repositories(
    customer: Customer,
    instance: LocalInstance,
    local_aws: LocalAws,
    backed_up: dict[str, Any],
    ssh_host_factory: Callable[..., SshHost],
    client_key: tuple[Path, str],
    tmp_path: Path,
):
    host = ssh_host_factory()
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text(host.known_hosts_line() + "\n")
    target = SshTarget("127.0.0.1", host.port, host.users[0].name, client_key[0], known_hosts)
    with SshPgBackRest.for_customer(
        target, customer, instance.layout, env=local_aws.pgbackrest_env()
    ) as remote:
        local = LocalPgBackRest(instance)
        assert {b.label for b in stanza_info(remote).backups} == {
            b.label for b in stanza_info(local).backups
        }
        assert remote.current_wal_file() == local.current_wal_file()
        assert verify(remote, customer).status is Outcome.OK


# --- S6: retention --------------------------------------------------------------------------------
def test_expire_below_policy_is_refused_unless_overridden_and_logged(
    customer: Customer,
    customers_dir: Path,
    runner: LocalPgBackRest,
    backed_up: dict[str, Any],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
):
    audit_log = tmp_path / "audit.jsonl"
    monkeypatch.setenv("ERPCLOUD_AUDIT_LOG", str(audit_log))
    before = {b.label for b in stanza_info(runner).backups}
    base = ["expire", customer.id, "--customers", str(customers_dir), "--json"]
    short = str(policy.BACKUP_RETENTION_DAYS - 23)

    refused = invoke(*base, "--retention-days", short)
    assert refused.exit_code == 2
    assert "--below-policy" in json.loads(refused.output)["error"]
    no_reason = invoke(*base, "--retention-days", short, "--below-policy")
    assert no_reason.exit_code == 2 and "--reason" in json.loads(no_reason.output)["error"]
    assert not audit_log.exists()
    assert {b.label for b in stanza_info(runner).backups} == before

    reason = "customer asked to drop a corrupted import, ticket 4711"
    allowed = invoke(
        *base, "--retention-days", short, "--below-policy", "--reason", reason, "--dry-run"
    )
    assert allowed.exit_code == 0, allowed.output
    assert json.loads(allowed.output)["override_reason"] == reason
    entries = [json.loads(line) for line in audit_log.read_text().splitlines()]
    assert entries[-1]["reason"] == reason and entries[-1]["below_policy"] is True
    assert entries[-1]["customer"] == customer.id and entries[-1]["retention_days"] == int(short)

    at_policy = invoke(*base)  # the customer's own retention: allowed, and nothing is old enough
    assert at_policy.exit_code == 0, at_policy.output
    assert all(r["expired"] == [] for r in json.loads(at_policy.output)["repositories"])
    assert {b.label for b in stanza_info(runner).backups} == before


# --- a second database: ages and timelines --------------------------------------------------------
def info_checksum(text: str) -> str:
    """pgBackRest's checksum of an info file: SHA-1 of its sections as one JSON object."""
    sections: dict[str, list[str]] = {}
    current = ""
    for line in text.splitlines():
        if line.startswith("[") and line.endswith("]"):
            current = line[1:-1]
            sections.setdefault(current, [])
        elif "=" in line:
            key, value = line.split("=", 1)
            if key != "backrest-checksum":
                sections[current].append(f'"{key}":{value}')
    body = ",".join(f'"{name}":{{{",".join(keys)}}}' for name, keys in sections.items() if keys)
    return hashlib.sha1(("{" + body + "}").encode()).hexdigest()  # noqa: S324 - pgBackRest's


def age_backups(aws: LocalAws, customer: Customer, ages: dict[str, timedelta]) -> None:
    """Give repo1's backups fake ages: rewrite backup.info (and its copy) with a valid checksum."""
    repo = customer_repositories(customer)[0]
    s3 = aws.client("s3", repo.region)
    key = f"pgbackrest/backup/{customer.stanza}/backup.info"
    lines = s3.get_object(Bucket=repo.bucket, Key=key)["Body"].read().decode().splitlines()
    now = datetime.now(UTC).timestamp()
    for index, line in enumerate(lines):
        label = line.split("=", 1)[0]
        if label in ages:
            data = json.loads(line.split("=", 1)[1])
            stop = int(now - ages[label].total_seconds())
            data["backup-timestamp-stop"], data["backup-timestamp-start"] = stop, stop - 60
            lines[index] = f"{label}={json.dumps(data, separators=(',', ':'))}"
    text = "\n".join(lines) + "\n"
    text = re.sub(
        r'backrest-checksum="[0-9a-f]+"', f'backrest-checksum="{info_checksum(text)}"', text
    )
    for name in (key, key + ".copy"):
        s3.put_object(Bucket=repo.bucket, Key=name, Body=text.encode())


@pytest.fixture(scope="module")
def second(
    customers_dir: Path,
    local_aws: LocalAws,
    state_root: Path,
    resolve_to_test_instances: dict[str, BackupTarget],
) -> Iterator[LocalInstance]:
    customer = copy_customer(customers_dir, "maison-dupont", "backups-test-maison")
    instance = start_instance(customer, state_root / "backups-northwind", local_aws)
    resolve_to_test_instances[customer.id] = BackupTarget(LocalPgBackRest(instance))
    try:
        yield instance
    finally:
        instance.stop()


def backup_repo1(instance: LocalInstance, kind: str) -> str:
    sql = f"CREATE TABLE IF NOT EXISTS t(v text); INSERT INTO t VALUES ('{kind}')"  # noqa: S608
    instance.cluster.psql(sql)
    instance.pgbackrest("--repo=1", f"--type={kind}", "backup")
    return stanza_info(LocalPgBackRest(instance), 1).backups_in(1)[-1].label


def test_expire_keeps_what_the_window_needs_and_never_the_only_backup(
    second: LocalInstance,
    customers_dir: Path,
    local_aws: LocalAws,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
):
    monkeypatch.setenv("ERPCLOUD_AUDIT_LOG", str(tmp_path / "audit.jsonl"))
    customer, runner = second.customer, LocalPgBackRest(second)
    f1, d1, f2, d2 = (backup_repo1(second, kind) for kind in ("full", "diff", "full", "diff"))
    days = policy.BACKUP_RETENTION_DAYS
    age_backups(
        local_aws,
        customer,
        {
            f1: timedelta(days=days + 10),
            d1: timedelta(days=days + 8),
            f2: timedelta(days=days + 3),
            d2: timedelta(days=days - 20),
        },
    )
    kept_wal_from = next(b.wal_start for b in stanza_info(runner, 1).backups_in(1) if b.label == f2)
    plan = plan_expiry(stanza_info(runner, 1).backups_in(1), datetime.now(UTC), days)
    assert plan.expire == (f1, d1) and plan.keep == (f2, d2) and plan.anchor == f2

    result = invoke("expire", customer.id, "--customers", str(customers_dir), "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)["repositories"][0]
    assert report["expired"] == [f1, d1] and report["remaining"] == [f2, d2]
    repo = customer_repositories(customer)[0]
    objects = bucket_objects(local_aws, repo.region, repo.bucket, "pgbackrest/")
    assert f"pgbackrest/backup/{customer.stanza}/{f1}/backup.manifest" not in objects
    assert f"pgbackrest/backup/{customer.stanza}/{f2}/backup.manifest" in objects
    segments = sorted(archived_segments(local_aws, customer, 1))
    assert segments[0] == kept_wal_from  # S7: only the WAL since the oldest kept backup
    assert verify(runner, customer).repositories[0].status is Outcome.OK

    # Years later, F2 is the only full backup: expiry keeps it and its differential.
    age_backups(local_aws, customer, {f2: timedelta(days=days * 4), d2: timedelta(days=days * 3)})
    again = invoke("expire", customer.id, "--customers", str(customers_dir), "--json")
    assert again.exit_code == 0, again.output
    assert json.loads(again.output)["repositories"][0]["remaining"] == [f2, d2]


def test_verify_follows_a_timeline_switch(second: LocalInstance, customers_dir: Path):
    """An in-place point-in-time recovery starts timeline 2; the check follows its .history."""
    customer, runner = second.customer, LocalPgBackRest(second)
    backup_repo1(second, "incr")  # a full if the retention test did not run first
    psql = second.cluster.psql
    psql("CREATE TABLE tl(v text); INSERT INTO tl VALUES ('kept')")
    time.sleep(0.5)
    target = psql("SELECT now()")
    time.sleep(1.0)
    psql("INSERT INTO tl VALUES ('undone')")
    second.switch_wal_and_wait()
    second.stop()
    restore(
        runner,
        1,
        str(second.cluster.data_dir),
        target_time=target,
        archive_mode_off=False,
        delta=True,
    )
    second.start()
    wait_for("promotion", lambda: psql("SELECT pg_is_in_recovery()") == "f", 60)
    assert psql("SELECT string_agg(v, ',') FROM tl") == "kept"
    assert psql("SELECT pg_walfile_name(pg_current_wal_lsn())").startswith("00000002")
    wait_archived(second, switch_wal(second, "on-timeline-2"))
    check = verify(runner, customer).repositories[0]
    assert check.status is Outcome.OK, check.findings
    assert (
        check.timelines == [1, 2]
        and check.newest is not None
        and check.newest.startswith("00000002")
    )

"""Backups on a customer's real machines (S6, S7): PostgreSQL 17 and pgBackRest 2.55 on the
production machine from the image, both regions' buckets in the machines' AWS stand-in, reached
as on AWS: over SSH through the machines' inventory, pgBackRest signed by the instance role.

acme-retail's machines are booted once for the module under an id of their own (its own state
folder, machine names and buckets); one full backup goes to both repositories through
``erpcloud backup run --inventory``. Each test leaves the repositories as it found them (a
deleted WAL object is put back, a blocked route opened again), except the last three, which
run in file order on purpose: retention ages and expires repo1's backups, and the timeline test
recovers production in place to a point in time. Restores never run on production's data
directory except that in-place recovery, and never with this host's pgBackRest: the
point-in-time restores from each repository run on a drill machine booted from the same image.

Not repeated here (the machines' own modules prove them): WAL reaching both repositories signed
by the instance role and the test machine having no backups (``test_machines.py``); both
regions backed up at once with block incrementals, the nightly unit, and restore drills from the
copy region on drill machines (``test_dr_machines.py``).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shlex
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from backups.gapcheck import Outcome, verify
from backups.info import customer_repositories
from backups.pgbackrest import SshPgBackRest
from backups.restore import restore
from backups.retention import plan_expiry
from backups.runs import stanza_info
from backups.targets import inventory_backup_target
from dr.host import DrillHost, DrillHostSpec, HostCommandError, Shell
from erpcloud import policy
from erpcloud.aws import EMULATOR_ACCESS_KEY, EMULATOR_SECRET_KEY
from erpcloud.model import Customer, Environment
from erpcloud.render import METRICS_NAMESPACE, HostLayout, render_pgbackrest_conf
from frontdoor.cli import app
from localtarget import drillmachine, machine, machines
from localtarget.machines import MachineSetState

from .conftest import copy_sample

pytestmark = pytest.mark.timeout(900)

TAG = os.getpid() % 100000
SEGMENT_KEY = re.compile(r"/(?P<segment>[0-9A-F]{24})-[0-9a-f]{40}\.lz4$")
PRODUCTION = Environment.PRODUCTION
#: Debian's cluster unit on the image (``postgresql.service`` only starts it).
CLUSTER_UNIT = "postgresql@17-main"
PSQL = "psql -XAtq -v ON_ERROR_STOP=1 -d postgres"
cli = CliRunner()


# --- the module's machines ------------------------------------------------------------------------
@dataclass
class Booted:
    customer: Customer
    customers_dir: Path
    state: MachineSetState
    #: One SSH connection to production for the module's SQL and root commands.
    shell: Shell
    #: pgBackRest on production, as the backup commands reach it (``sudo -n -u postgres``).
    runner: SshPgBackRest

    def sql(self, statement: str) -> str:
        """SQL in the ``postgres`` database on production, as ``postgres``."""
        result = self.shell.postgres(f"{PSQL} -c {shlex.quote(statement)}", timeout=120)
        return self.shell.checked(result, statement).strip()

    def root(self, script: str, timeout: float = 600) -> str:
        return self.shell.checked(self.shell.root(script, timeout=timeout), script).strip()

    def s3(self, region: str) -> Any:
        return self.state.aws_client("s3", region)


@pytest.fixture(scope="module")
def booted(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Booted]:
    customers_dir = tmp_path_factory.mktemp("bkm-customers")
    customer = copy_sample(customers_dir, "acme-retail", f"bkm-{TAG}")
    state = machines.up(customer)  # all or nothing: on failure nothing is left to take down
    shell = Shell(state.ssh_target(PRODUCTION))
    runner = SshPgBackRest.for_customer(state.ssh_target(PRODUCTION), customer)
    try:
        yield Booted(customer, customers_dir, state, shell, runner)
    finally:
        runner.close()
        shell.close()
        left = drillmachine.teardown_for_customer(customer.id)  # the restores' drill machine
        machines.down(customer.id)
        assert not [line for line in left if "NOT deleted" in line], left


def invoke(booted: Booted, *args: str, inventory: bool = True) -> Any:
    """``erpcloud backup COMMAND CUSTOMER ...`` on the module's customer, through the machines'
    inventory as on AWS."""
    command, *rest = args
    where = ["--customers", str(booted.customers_dir)]
    if inventory:
        where += ["--inventory", booted.state.inventory]
    return cli.invoke(
        app, ["backup", command, booted.customer.id, *where, *rest], catch_exceptions=False
    )


@pytest.fixture(scope="module")
def backed_up(booted: Booted) -> dict[str, Any]:
    """`erpcloud backup run --type full`: the module's first backup, to both repositories."""
    result = invoke(booted, "run", "--type", "full", "--json")
    assert result.exit_code == 0, result.output
    document: dict[str, Any] = json.loads(result.output)
    return document


# --- helpers --------------------------------------------------------------------------------------
def wait_for(what: str, probe: Callable[[], bool], timeout: float) -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if probe():
            return time.monotonic() - started
        time.sleep(0.5)
    raise AssertionError(f"{what}: not within {timeout:.0f} s")


def archiver(booted: Booted) -> dict[str, str]:
    row = booted.sql(
        "SELECT archived_count, coalesce(last_archived_wal, ''), failed_count FROM pg_stat_archiver"
    )
    archived, last, failed = row.split("|")
    return {"archived": archived, "last": last, "failed": failed}


def switch_wal(booted: Booted, marker: str) -> str:
    """Write something, close the segment, and return the closed segment's name."""
    booted.sql(
        f"CREATE TABLE IF NOT EXISTS marks(v text); INSERT INTO marks VALUES ('{marker}')"  # noqa: S608
    )
    return booted.sql("SELECT pg_walfile_name(pg_switch_wal())")


def wait_archived(booted: Booted, segment: str, timeout: float = 120) -> None:
    wait_for(f"{segment} archived", lambda: archiver(booted)["last"] >= segment, timeout)


def bucket_objects(booted: Booted, region: str, bucket: str, prefix: str) -> dict[str, Any]:
    client = booted.s3(region)
    found: dict[str, Any] = {}
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for item in page.get("Contents", []):
            found[item["Key"]] = item
    return found


def archived_segments(booted: Booted, repo: int) -> dict[str, str]:
    """Segment name → object key in a repository's bucket, listed with boto3."""
    chosen = customer_repositories(booted.customer)[repo - 1]
    prefix = f"pgbackrest/archive/{booted.customer.stanza}/"
    keys = bucket_objects(booted, chosen.region, chosen.bucket, prefix)
    return {m["segment"]: key for key in keys if (m := SEGMENT_KEY.search(key))}


def manifest_labels(booted: Booted, repo: int) -> set[str]:
    """The backups whose manifest is in a repository's bucket, listed with boto3."""
    chosen = customer_repositories(booted.customer)[repo - 1]
    prefix = f"pgbackrest/backup/{booted.customer.stanza}/"
    keys = bucket_objects(booted, chosen.region, chosen.bucket, prefix)
    return {k.split("/")[-2] for k in keys if k.endswith("/backup.manifest")}


@contextlib.contextmanager
def object_removed(booted: Booted, repo: int, key: str) -> Iterator[None]:
    """The object is gone from the repository's bucket for the block, then put back."""
    chosen = customer_repositories(booted.customer)[repo - 1]
    s3 = booted.s3(chosen.region)
    body = s3.get_object(Bucket=chosen.bucket, Key=key)["Body"].read()
    s3.delete_object(Bucket=chosen.bucket, Key=key)
    try:
        yield
    finally:
        s3.put_object(Bucket=chosen.bucket, Key=key, Body=body)


# --- S6: backups reach both regions ---------------------------------------------------------------
def test_backup_run_reaches_both_buckets(booted: Booted, backed_up: dict[str, Any]):
    labels = {r["repo"]["index"]: r["label"] for r in backed_up["repositories"]}
    assert backed_up["ok"] and set(labels) == {1, 2}
    assert all(r["type"] == "full" for r in backed_up["repositories"])
    stanza = booted.customer.stanza
    for repo in customer_repositories(booted.customer):
        objects = bucket_objects(booted, repo.region, repo.bucket, f"pgbackrest/backup/{stanza}/")
        label = labels[repo.index]
        assert f"pgbackrest/backup/{stanza}/{label}/backup.manifest" in objects
        # The data itself, not only the manifest (bundled: a few objects, not one per file).
        stored = [
            item["Size"]
            for key, item in objects.items()
            if key.startswith(f"pgbackrest/backup/{stanza}/{label}/")
            and not key.endswith(("backup.manifest", "backup.manifest.copy"))
        ]
        assert sum(stored) > 1_000_000, f"{repo}: {len(stored)} objects, {sum(stored)} bytes"
        assert archived_segments(booted, repo.index), f"no WAL in {repo}"

    listed = invoke(booted, "list", "--json")
    assert listed.exit_code == 0, listed.output
    repositories = json.loads(listed.output)["repositories"]
    assert [b["label"] for b in repositories["repo1"]] == [labels[1]]
    assert [b["label"] for b in repositories["repo2"]] == [labels[2]]
    human = invoke(booted, "list")
    assert labels[1] in human.output and labels[2] in human.output and "repo2" in human.output


# --- S7: point in time, from each repository, on a drill machine ----------------------------------
@pytest.fixture(scope="module")
def two_writes(booted: Booted, backed_up: dict[str, Any]) -> str:
    """'first', then a moment, then 'second'; the WAL after it archived. Returns the moment."""
    booted.sql("CREATE TABLE pitr(v text)")
    booted.sql("INSERT INTO pitr VALUES ('first')")
    time.sleep(0.5)
    target = booted.sql("SELECT now()")
    time.sleep(1.0)
    booted.sql("INSERT INTO pitr VALUES ('second')")
    wait_archived(booted, switch_wal(booted, "after-second"))
    return target


@pytest.fixture(scope="module")
def restore_machine(booted: Booted) -> Iterator[DrillHostSpec]:
    """A machine from the customer's image on its network, for restores (never production)."""
    drill_id = f"{booted.customer.id}-restores"
    spec, booted_machine = drillmachine.boot_drill_machine(booted.state, booted.customer, drill_id)
    try:
        yield spec
    finally:
        booted_machine.teardown()


@pytest.mark.parametrize("repo", [1, 2])
def test_point_in_time_restore_from_each_repository(
    repo: int, booted: Booted, two_writes: str, restore_machine: DrillHostSpec
):
    """``backups.restore.restore`` from repo1 and from repo2 into a new data directory on a
    machine from the image: archiving off, stopped at the moment between the two writes."""
    customer = booted.customer
    host = DrillHost(restore_machine, f"restore-{customer.id}-repo{repo}", pg_version=17)
    try:
        host.check_access()
        host.find_port()
        layout = host.layout()
        network = machine.Network(booted.state.network_index)
        repos = machines.machine_repos(customer, network.host_address, booted.state.aws_tls_port)
        config = render_pgbackrest_conf(customer, layout, repos)
        host.prepare({layout.pgbackrest_config: (config, 0o640)})
        with SshPgBackRest(restore_machine.target, customer.stanza, layout) as runner:
            assert "pgBackRest 2.55" in runner.version()
            restore(runner, repo, layout.pg_data, target_time=two_writes)
        auto_conf = host.shell.root(f"cat {shlex.quote(host.path('data', 'postgresql.auto.conf'))}")
        assert "archive_mode = 'off'" in auto_conf.stdout
        host.start_postgres({}, host.control_settings())

        def query(sql: str) -> str:
            argv = [*host.psql_argv("postgres"), "-c", sql]
            return host.shell.postgres(shlex.join(argv), timeout=60).stdout.strip()

        wait_for("promotion", lambda: query("SELECT pg_is_in_recovery()") == "f", 120)
        assert query("SELECT string_agg(v, ',') FROM pitr") == "first"
    finally:
        host.teardown()


# --- S7: the gap check ----------------------------------------------------------------------------
def test_verify_healthy_archive_is_ok_and_published(
    booted: Booted, backed_up: dict[str, Any], monkeypatch: pytest.MonkeyPatch
):
    # With --inventory the metrics go where boto3 is pointed, as on the operations host.
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{booted.state.aws_http_port}")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", EMULATOR_ACCESS_KEY)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", EMULATOR_SECRET_KEY)
    result = invoke(booted, "verify", "--json", "--publish")
    assert result.exit_code == 0, result.output
    document = json.loads(result.output)
    assert document["status"] == "OK"
    assert booted.state.machines[PRODUCTION].address in document["via"]
    for check in document["repositories"]:
        assert check["status"] == "OK" and check["missing_count"] == 0
        assert check["segments_checked"] >= 1 and check["timelines"] == [1]
        assert check["newest_age_seconds"] < policy.ARCHIVE_LATE_AFTER.total_seconds()
    assert "WalGapCheckStatus" in document["published_metrics"]

    cloudwatch = booted.state.aws_client("cloudwatch", booted.customer.region)
    stats = cloudwatch.get_metric_statistics(
        Namespace=METRICS_NAMESPACE,
        MetricName="WalGapCheckStatus",
        Dimensions=[{"Name": "Customer", "Value": booted.customer.id}],
        StartTime=datetime.now(UTC) - timedelta(hours=1),
        EndTime=datetime.now(UTC) + timedelta(minutes=5),
        Period=60,
        Statistics=["Maximum"],
    )
    assert [p["Maximum"] for p in stats["Datapoints"]] == [0.0]


def test_missing_copy_segment_is_a_failure_naming_it(booted: Booted, backed_up: dict[str, Any]):
    customer = booted.customer
    for n in range(3):  # enough segments after the oldest backup for a hole in the middle
        wait_archived(booted, switch_wal(booted, f"before-the-hole-{n}"))
    first_needed = verify(booted.runner, customer).repositories[1].checked_from
    assert first_needed is not None
    copy_segments = archived_segments(booted, 2)
    segments = sorted(s for s in copy_segments if s >= first_needed)
    assert len(segments) >= 3
    victim = segments[len(segments) // 2]  # neither the first needed nor the newest
    copy = customer_repositories(customer)[1]
    with object_removed(booted, 2, copy_segments[victim]):
        result = invoke(booted, "verify", "--json")
        assert result.exit_code == 1, result.output
        document = json.loads(result.output)
        assert document["status"] == "FAILURE"
        primary, second = document["repositories"]
        assert primary["status"] == "OK" and primary["first_missing"] is None
        assert second["status"] == "FAILURE" and second["first_missing"] == victim
        assert second["missing_count"] == 1
        human = invoke(booted, "verify")
        assert human.exit_code == 1
        flat = " ".join(human.output.split())
        assert f"WAL segment {victim} is missing from repo2 ({copy.region}" in flat
    assert verify(booted.runner, customer).status is Outcome.OK


def test_copy_region_behind_is_a_warning(booted: Booted, backed_up: dict[str, Any]):
    customer = booted.customer
    newest = switch_wal(booted, "copy-behind")
    wait_archived(booted, newest)
    with object_removed(booted, 2, archived_segments(booted, 2)[newest]):
        later = datetime.now(UTC) + policy.ARCHIVE_COPY_LAG_GRACE + timedelta(seconds=30)
        result = verify(booted.runner, customer, now=later)
        primary, second = result.repositories
        assert result.status is Outcome.WARNING and result.exit_code == 3
        assert primary.status is Outcome.OK
        assert [f.code for f in second.findings if f.code == "behind"] == ["behind"]
        assert second.missing_count == 0  # a tail not yet copied is no gap
        # Within the grace period the copy is not behind: the two pushes are seconds apart.
        assert verify(booted.runner, customer).repositories[1].status is Outcome.OK


def test_late_archive_warns_unless_the_database_is_idle(booted: Booted, backed_up: dict[str, Any]):
    wait_archived(booted, switch_wal(booted, "late"))
    later = datetime.now(UTC) + policy.ARCHIVE_LATE_AFTER + timedelta(minutes=1)
    blind = verify(booted.runner, booted.customer, now=later, ask_database=False)
    assert blind.status is Outcome.WARNING
    assert all("late" in [f.code for f in r.findings] for r in blind.repositories)
    # The database has finished no segment since: nothing waits to be archived, nothing is late.
    assert verify(booted.runner, booted.customer, now=later).status is Outcome.OK


@contextlib.contextmanager
def emulator_unreachable_from_production(booted: Booted) -> Iterator[None]:
    """S3 down, as production sees it: a routing rule on the machine itself refuses TCP to the
    emulator's TLS port (SSH and everything else, and every other machine, untouched)."""
    rule = f"ipproto tcp dport {booted.state.aws_tls_port} unreachable"
    booted.root(f"ip rule add {rule}")
    try:
        yield
    finally:
        booted.root(f"while ip rule del {rule} 2>/dev/null; do :; done")


def test_s3_outage_warns_then_archive_catches_up_without_gap(
    booted: Booted, backed_up: dict[str, Any]
):
    customer = booted.customer
    wait_archived(booted, switch_wal(booted, "before-outage"))
    before = archiver(booted)
    with emulator_unreachable_from_production(booted):
        written = [switch_wal(booted, f"during-outage-{n}") for n in range(3)]
        during = verify(booted.runner, customer, io_timeout=2)
        assert during.status is Outcome.WARNING and during.exit_code == 3
        assert all([f.code for f in r.findings] == ["unreachable"] for r in during.repositories)
        wait_for(
            "a failed archive attempt",
            lambda: int(archiver(booted)["failed"]) > int(before["failed"]),
            timeout=120,
        )
        assert archiver(booted)["last"] < written[0]  # nothing got through
    last = switch_wal(booted, "after-outage")
    wait_archived(booted, last, timeout=180)
    after = verify(booted.runner, customer)
    assert after.status is Outcome.OK, after.findings
    for repo in (1, 2):
        assert set(written) <= set(archived_segments(booted, repo))
    assert booted.sql("SELECT count(*) FROM marks WHERE v LIKE 'during-outage-%'") == "3"


def test_ssh_runner_sees_the_same_repositories(booted: Booted, backed_up: dict[str, Any]):
    """The backup commands' runner (from the inventory) and one built from the machines' state
    see what the buckets hold and what the database writes."""
    customer = booted.customer
    target = inventory_backup_target(
        customer, Path(booted.state.inventory), {customer.id: customer}
    )
    assert isinstance(target.runner, SshPgBackRest)
    with target.runner as from_inventory:
        labels = {b.label for b in stanza_info(from_inventory).backups}
        assert labels == {b.label for b in stanza_info(booted.runner).backups}
        assert labels == manifest_labels(booted, 1) | manifest_labels(booted, 2)
        on_machine = booted.root(
            f"runuser -u postgres -- {PSQL} -c 'SELECT pg_walfile_name(pg_current_wal_lsn())'"
        )
        assert from_inventory.current_wal_file() == on_machine
        assert verify(from_inventory, customer).status is Outcome.OK


# --- S6: retention --------------------------------------------------------------------------------
def test_expire_below_policy_is_refused_unless_overridden_and_logged(
    booted: Booted, backed_up: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    audit_log = tmp_path / "audit.jsonl"
    monkeypatch.setenv("ERPCLOUD_AUDIT_LOG", str(audit_log))
    before = {b.label for b in stanza_info(booted.runner).backups}
    short = str(policy.BACKUP_RETENTION_DAYS - 23)

    refused = invoke(booted, "expire", "--json", "--retention-days", short)
    assert refused.exit_code == 2
    assert "--below-policy" in json.loads(refused.output)["error"]
    no_reason = invoke(booted, "expire", "--json", "--retention-days", short, "--below-policy")
    assert no_reason.exit_code == 2 and "--reason" in json.loads(no_reason.output)["error"]
    assert not audit_log.exists()
    assert {b.label for b in stanza_info(booted.runner).backups} == before

    reason = "customer asked to drop a corrupted import, ticket 4711"
    allowed = invoke(
        booted, "expire", "--json", "--retention-days", short, "--below-policy",
        "--reason", reason, "--dry-run",
    )  # fmt: skip
    assert allowed.exit_code == 0, allowed.output
    assert json.loads(allowed.output)["override_reason"] == reason
    entries = [json.loads(line) for line in audit_log.read_text().splitlines()]
    assert entries[-1]["reason"] == reason and entries[-1]["below_policy"] is True
    assert entries[-1]["customer"] == booted.customer.id
    assert entries[-1]["retention_days"] == int(short)

    at_policy = invoke(booted, "expire", "--json")  # the customer's own retention: nothing old
    assert at_policy.exit_code == 0, at_policy.output
    assert all(r["expired"] == [] for r in json.loads(at_policy.output)["repositories"])
    assert {b.label for b in stanza_info(booted.runner).backups} == before


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


def age_backups(booted: Booted, ages: dict[str, timedelta]) -> None:
    """Give repo1's backups fake ages: rewrite backup.info (and its copy) with a valid checksum."""
    repo = customer_repositories(booted.customer)[0]
    s3 = booted.s3(repo.region)
    key = f"pgbackrest/backup/{booted.customer.stanza}/backup.info"
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


def backup_repo1(booted: Booted, kind: str) -> str:
    booted.sql(f"CREATE TABLE IF NOT EXISTS t(v text); INSERT INTO t VALUES ('{kind}')")  # noqa: S608
    result = booted.runner.run("--repo=1", f"--type={kind}", "backup", timeout=600)
    assert result.ok, result.message
    return stanza_info(booted.runner, 1).backups_in(1)[-1].label


def test_expire_keeps_what_the_window_needs_and_never_the_only_backup(
    booted: Booted, backed_up: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setenv("ERPCLOUD_AUDIT_LOG", str(tmp_path / "audit.jsonl"))
    customer, runner = booted.customer, booted.runner
    earlier = tuple(b.label for b in stanza_info(runner, 1).backups_in(1))  # the module's full
    f1, d1, f2, d2 = (backup_repo1(booted, kind) for kind in ("full", "diff", "full", "diff"))
    days = policy.BACKUP_RETENTION_DAYS
    age_backups(
        booted,
        {
            **{label: timedelta(days=days + 12) for label in earlier},
            f1: timedelta(days=days + 10),
            d1: timedelta(days=days + 8),
            f2: timedelta(days=days + 3),
            d2: timedelta(days=days - 20),
        },
    )
    kept_wal_from = next(b.wal_start for b in stanza_info(runner, 1).backups_in(1) if b.label == f2)
    plan = plan_expiry(stanza_info(runner, 1).backups_in(1), datetime.now(UTC), days)
    assert plan.expire == (*earlier, f1, d1) and plan.keep == (f2, d2) and plan.anchor == f2

    result = invoke(booted, "expire", "--json")
    assert result.exit_code == 0, result.output
    primary, copy = json.loads(result.output)["repositories"]
    assert primary["expired"] == [*earlier, f1, d1] and primary["remaining"] == [f2, d2]
    assert copy["expired"] == []  # the copy region's backup is recent: nothing to expire there
    assert manifest_labels(booted, 1) == {f2, d2}
    segments = sorted(archived_segments(booted, 1))
    assert segments[0] == kept_wal_from  # S7: only the WAL since the oldest kept backup
    assert verify(runner, customer).repositories[0].status is Outcome.OK

    # Years later, F2 is the only full backup: expiry keeps it and its differential.
    age_backups(booted, {f2: timedelta(days=days * 4), d2: timedelta(days=days * 3)})
    again = invoke(booted, "expire", "--json")
    assert again.exit_code == 0, again.output
    assert json.loads(again.output)["repositories"][0]["remaining"] == [f2, d2]


# --- S7: an in-place recovery of production, last ---------------------------------------------
def test_verify_follows_a_timeline_switch(booted: Booted, backed_up: dict[str, Any]):
    """An in-place point-in-time recovery of production starts timeline 2; the check follows
    its ``.history`` in the repository. (Last in the module: production is recovered.)"""
    customer, runner = booted.customer, booted.runner
    backup_repo1(booted, "incr")  # a full if the retention test did not run first
    booted.sql("CREATE TABLE tl(v text); INSERT INTO tl VALUES ('kept')")
    time.sleep(0.5)
    target = booted.sql("SELECT now()")
    time.sleep(1.0)
    booted.sql("INSERT INTO tl VALUES ('undone')")
    wait_archived(booted, switch_wal(booted, "after-undone"))
    booted.root(f"systemctl stop {CLUSTER_UNIT}")
    try:
        restore(
            runner,
            1,
            HostLayout().pg_data,
            target_time=target,
            archive_mode_off=False,
            delta=True,
        )
    finally:
        booted.root(f"systemctl start {CLUSTER_UNIT}", timeout=300)

    def promoted() -> bool:
        with contextlib.suppress(HostCommandError):
            return booted.sql("SELECT pg_is_in_recovery()") == "f"
        return False

    wait_for("promotion", promoted, 120)
    assert booted.sql("SELECT string_agg(v, ',') FROM tl") == "kept"
    assert booted.sql("SELECT pg_walfile_name(pg_current_wal_lsn())").startswith("00000002")
    wait_archived(booted, switch_wal(booted, "on-timeline-2"))
    check = verify(runner, customer).repositories[0]
    assert check.status is Outcome.OK, check.findings
    assert (
        check.timelines == [1, 2]
        and check.newest is not None
        and check.newest.startswith("00000002")
    )

"""Restore drills on drill machines (issue 12, S8): every pgBackRest command of a drill runs on
a machine from the customer's image (Debian 13, PostgreSQL 17, pgBackRest 2.55).

acme-retail's production and test machines are booted once for the module (under an id of their
own, so a run of ``test_machines.py`` elsewhere on this host never meets them), with a writer
committing on production all along; one full backup goes to both repositories through the
machines' inventory.

Then, from the copy region:

* the faults, each on one drill machine booted once for them and given to the drills as an
  existing drill host (as ``--drill-host`` does): a WAL segment missing from the repository, a
  corrupted backup file, an unreachable and a full drill host, a target before the oldest
  backup and one in the future. Each fails loudly with a report naming its step, and leaves
  production and both repositories as they were (a deleted or damaged object is put back);
* a time drill, the latest point through ``fab dr.drill`` (the default site), and a point drill
  (a restore point on production, equality at it) kept and torn down with ``fab dr.teardown``,
  each on a drill machine booted for it by the site, signed by a drill role of its own, and
  removed afterwards;
* the history of the module's drills, and the gap check over SSH publishing to CloudWatch.

None of the faults forces a WAL switch, and the latest-point drill comes more than twice the
archive timeout after the last switch of ours: its RPO then shows that ``archive_timeout``, not
a switch, bounds it.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import re
import shlex
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from typer.testing import CliRunner

from backups.info import BackupSet
from backups.pgbackrest import SshPgBackRest
from backups.recover import recover_bucket
from backups.runs import CONCURRENT_REPOSITORIES_FROM, list_backups, pgbackrest_version
from dr.drill import DrillRequest, run_drill
from dr.host import DrillHostSpec, Shell, host_from_command_line
from dr.model import CheckStatus, DrillHostRecord, DrillMode, DrillReport, DrillStatus
from dr.sql import compare_tables, parse_tables, psql_argv, sums_script
from erpcloud import policy
from erpcloud.aws import EMULATOR_ACCESS_KEY, EMULATOR_SECRET_KEY
from erpcloud.model import Customer, Environment
from erpcloud.output import EXIT_BAD_INPUT, EXIT_FAILED
from erpcloud.render import METRICS_NAMESPACE, PRODUCT_DATABASE
from erpcloud.ssh import SshTarget, connect, run_as_root
from frontdoor.cli import app
from localtarget import drillmachine, machine, machines
from localtarget.drillsite import machines_site
from localtarget.image import cloud_init_schema_in_image, output_of
from localtarget.machines import MachineSetState

from .conftest import REPO_ROOT, copy_sample

pytestmark = pytest.mark.timeout(900)

TAG = os.getpid() % 100000
FAB = str(Path(sys.executable).parent / "fab")
#: The module customer's archive timeout (a customer file may lower S7's 45 s): short, so the
#: latest-point drill shows that it bounds the RPO.
ARCHIVE_TIMEOUT = 10
#: archive-push's own time to reach the bucket after a segment is closed, allowed on top.
PUSH_ALLOWANCE = 15
#: The issue's target for a drill machine, boot start to ready, is 15 s (``bench/``
#: measures it); here, on a host other test runs share, only a gross regression fails.
DRILL_MACHINE_READY_BOUND = 60.0
PSQL = "runuser -u postgres -- psql -XAtq -v ON_ERROR_STOP=1 -d erp"


@dataclass
class Booted:
    customer: Customer
    customers_dir: Path
    state: MachineSetState
    rows_at_backup: int
    #: When the writer started.
    writer_started: datetime
    #: When WAL was last switched on purpose (a backup's end, a point drill's snapshot).
    last_switch: datetime
    #: The backup labels per repository, as a drill must leave them (a drill deletes none).
    labels: dict[str, list[str]] = field(default_factory=dict)

    @property
    def network(self) -> machine.Network:
        return machine.Network(self.state.network_index)

    def sql(self, statement: str) -> str:
        return production_sh(self.state, f"{PSQL} -c {shlex.quote(statement)}")

    def rows(self) -> int:
        return int(self.sql(COUNT_ROWS))

    def aws(self, service: str, region: str) -> Any:
        return self.state.aws_client(service, region)

    def backups(self) -> dict[str, list[BackupSet]]:
        target = self.state.ssh_target(Environment.PRODUCTION)
        with SshPgBackRest.for_customer(target, self.customer) as runner:
            return list_backups(runner, self.customer)

    def remember_backups(self) -> None:
        self.labels = {name: [b.label for b in sets] for name, sets in self.backups().items()}


def production_sh(state: MachineSetState, script: str) -> str:
    connection = connect(state.ssh_target(Environment.PRODUCTION))
    try:
        result = run_as_root(connection, script, timeout=300)
    finally:
        connection.close()
    assert result.return_code == 0, f"{script}: {result.stdout}{result.stderr}"
    return str(result.stdout).strip()


CREATE_ROWS = (
    "CREATE TABLE drill_rows (id bigserial PRIMARY KEY, note text NOT NULL, "
    "at timestamptz NOT NULL DEFAULT clock_timestamp())"
)
FIRST_ROWS = (
    "INSERT INTO drill_rows (note) SELECT 'before the backup ' || g FROM generate_series(1, 500) g"
)
COUNT_ROWS = "SELECT count(*) FROM drill_rows"
RESTORED_STATE = (
    "SELECT pg_is_in_recovery(), current_setting('archive_mode'), count(*) FROM drill_rows"
)
WRITER_UNIT = "erpcloud-test-writer"
WRITER = (
    "while :; do psql -XAtq -d erp -c \"INSERT INTO drill_rows (note) VALUES ('writer')\"; "
    "sleep 0.2; done"
)


@pytest.fixture(scope="module")
def booted(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Booted]:
    customers_dir = tmp_path_factory.mktemp("drm-customers")
    customer = copy_sample(
        customers_dir, "acme-retail", f"drm-{TAG}",
        backup={"archive_timeout_seconds": ARCHIVE_TIMEOUT},
    )  # fmt: skip
    state = machines.up(customer)  # all or nothing: on failure nothing is left to take down
    try:
        production_sh(state, f"{PSQL} -c {shlex.quote(CREATE_ROWS)} -c {shlex.quote(FIRST_ROWS)}")
        backup = CliRunner().invoke(
            app,
            ["backup", "run", customer.id, "--type", "full", "--inventory", state.inventory,
             "--customers", str(customers_dir), "--json"],
        )  # fmt: skip
        assert backup.exit_code == 0, backup.output
        assert [r["ok"] for r in json.loads(backup.output)["repositories"]] == [True, True]
        rows = int(production_sh(state, f"{PSQL} -c {shlex.quote(COUNT_ROWS)}"))
        # Orders keep coming, as in a shop: a transient unit on production, as postgres.
        production_sh(
            state,
            f"systemd-run --unit={WRITER_UNIT} --uid=postgres --working-directory=/ "
            f"bash -c {shlex.quote(WRITER)}",
        )
        now = datetime.now(UTC)
        booted = Booted(customer, customers_dir, state, rows, now, last_switch=now)
        booted.remember_backups()
        yield booted
    finally:
        with contextlib.suppress(Exception):
            production_sh(state, f"systemctl stop {WRITER_UNIT}")
        left = drillmachine.teardown_for_customer(customer.id)  # none, unless a test failed
        machines.down(customer.id)
        assert not left, left


@pytest.fixture(scope="module")
def drills_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("drm-drills")


def assert_untouched(booted: Booted) -> None:
    """Production still takes writes, the writer still runs, and both repositories list the
    backups they had."""
    new_id = booted.sql("INSERT INTO drill_rows (note) VALUES ('after a drill') RETURNING id")
    assert new_id.isdigit(), new_id
    assert production_sh(booted.state, f"systemctl is-active {WRITER_UNIT}") == "active"
    now = {name: [b.label for b in sets] for name, sets in booted.backups().items()}
    assert now == booted.labels


def assert_failed(report: DrillReport, drills_dir: Path, step: str, pattern: str) -> None:
    """A failed drill: its report on disk names the step and the error."""
    assert report.status is DrillStatus.FAILED
    assert report.failed_step == step, report.error
    assert re.search(pattern, report.error or ""), report.error
    on_disk = json.loads((drills_dir / report.drill_id / "report.json").read_text())
    assert on_disk["status"] == "failed" and on_disk["error"] == report.error
    assert f"**Failed at {step}:**" in (drills_dir / report.drill_id / "report.md").read_text()


def fab(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [FAB, *args], cwd=REPO_ROOT, capture_output=True, text=True, check=False, timeout=600
    )


def _links() -> set[str]:
    out = subprocess.run(["ip", "-br", "link"], capture_output=True, text=True, check=True).stdout
    return {line.split()[0].split("@")[0] for line in out.splitlines()}


def _namespaces() -> set[str]:
    out = subprocess.run(["ip", "netns"], capture_output=True, text=True, check=True).stdout
    return {line.split()[0] for line in out.splitlines() if line.strip()}


def assert_drill_machine_gone(booted: Booted, host: DrillHostRecord) -> None:
    """No machine, namespace, veth, folder, mount or drill role is left of the drill machine."""
    assert host.machine_dir and host.name.startswith("drill-")
    assert not Path(host.machine_dir).exists()
    assert host.machine_dir not in Path("/proc/self/mounts").read_text()
    nspawn = subprocess.run(
        ["pgrep", "-f", "--", f"--machine={host.name}( |$)"], capture_output=True, check=False
    )
    assert nspawn.returncode == 1, nspawn.stdout
    index = booted.network.index
    drill_slots = {f"m{index}x{slot}" for slot in drillmachine.DRILL_SLOTS}
    assert not {f"ve-{s}" for s in drill_slots} & _links()
    assert not {f"erp-{s}" for s in drill_slots} & _namespaces()
    role = f"{booted.customer.id}-drill-{host.name.removeprefix('drill-')}"
    assert not drillmachine.drill_role_exists(booted.state.aws_http_port, role)
    users = booted.aws("iam", booted.customer.region).list_users()["Users"]
    assert not [u["UserName"] for u in users if "-drill-" in u["UserName"]]


def test_both_regions_are_backed_up_at_once_with_block_incrementals(booted: Booted):
    """S6 on pgBackRest 2.55: the module's full backup ran in both repositories at the same
    time (it locks per repository); the repositories are bundled with block incrementals."""
    with SshPgBackRest.for_customer(
        booted.state.ssh_target(Environment.PRODUCTION), booted.customer
    ) as runner:
        assert pgbackrest_version(runner) >= CONCURRENT_REPOSITORIES_FROM
        sets = list_backups(runner, booted.customer)
    first, second = sets["repo1"][0], sets["repo2"][0]
    assert (first.type.value, second.type.value) == ("full", "full")
    assert first.started < second.stopped and second.started < first.stopped, (first, second)
    conf = production_sh(booted.state, "cat /etc/pgbackrest/pgbackrest.conf")
    assert all(f"repo{i}-block=y" in conf and f"repo{i}-bundle=y" in conf for i in (1, 2))


# --- faults: each fails loudly, with a report, and nothing lost -------------------------------
@pytest.fixture(scope="class")
def given_drill_host(booted: Booted) -> Iterator[DrillHostSpec]:
    """One drill machine for the faults, given to their drills as an existing drill host (as
    ``--drill-host`` gives one): booting one per fault would only repeat the boot."""
    drill_id = f"20261201T000000Z-{booted.customer.id}-faults"
    spec, drill_machine = drillmachine.boot_drill_machine(booted.state, booted.customer, drill_id)
    try:
        yield spec
    finally:
        drill_machine.teardown()


def copy_bucket(booted: Booted) -> tuple[Any, str]:
    customer = booted.customer
    return booted.aws("s3", customer.backup_copy_region), customer.backup_bucket_names[1]


def bucket_keys(client: Any, bucket: str, prefix: str) -> dict[str, int]:
    pages = client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
    return {o["Key"]: o["Size"] for page in pages for o in page.get("Contents", [])}


def free_loopback_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def public_key_of_no_host() -> str:
    """A valid ed25519 public key that no machine of the module holds."""
    public = Ed25519PrivateKey.generate().public_key()
    openssh = public.public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
    )
    return openssh.decode()


LZ4_FRAME_MAGIC = bytes.fromhex("04224d18")


def with_a_literal_flipped(bundle: bytes) -> bytes:
    """The bundle with one byte of its first file's data changed where lz4 copies it verbatim
    (a literal of the first block), so that it still decompresses: only a checksum can tell
    (lz4's own over the content, or pgBackRest's over the file). A flip elsewhere would break
    the compressed stream itself, a different fault."""
    assert bundle[:4] == LZ4_FRAME_MAGIC, bundle[:16].hex()
    flags = bundle[4]
    header = 4 + 1 + 1 + (8 if flags & 0x08 else 0) + (4 if flags & 0x01 else 0) + 1
    block_size = int.from_bytes(bundle[header : header + 4], "little")
    data = header + 4
    if block_size & 0x80000000:  # stored uncompressed: every byte is verbatim
        at = data
    else:
        token, at = bundle[data], data + 1
        literals = token >> 4
        if literals == 15:  # the length goes on in bytes of 255 and a last one below
            while True:
                literals += bundle[at]
                at += 1
                if bundle[at - 1] != 255:
                    break
        assert literals > 0, "the first sequence has no literal"
    damaged = bytearray(bundle)
    damaged[at] ^= 0x01
    return bytes(damaged)


class TestFaults:
    """Every fault drills the copy region's one backup so far (the module's full)."""

    def drill(
        self, booted: Booted, drills_dir: Path, spec: DrillHostSpec, **request: Any
    ) -> DrillReport:
        site = machines_site(booted.customer, drills_dir / ".ssh", spec)
        return run_drill(site, DrillRequest(**request), drills_dir)

    def test_missing_wal_segment_in_the_copy_repository_is_named(
        self, booted: Booted, drills_dir: Path, given_drill_host: DrillHostSpec
    ):
        (backup,) = booted.backups()["repo2"]
        client, bucket = copy_bucket(booted)
        segment = backup.wal_start  # every restore from this backup needs it
        prefix = f"pgbackrest/archive/{booted.customer.stanza}/"
        key = next(k for k in bucket_keys(client, bucket, prefix) if f"/{segment}-" in k)
        body = client.get_object(Bucket=bucket, Key=key)["Body"].read()
        client.delete_object(Bucket=bucket, Key=key)
        try:
            report = self.drill(booted, drills_dir, given_drill_host, mode=DrillMode.LATEST)
        finally:
            client.put_object(Bucket=bucket, Key=key, Body=body)
        assert_failed(report, drills_dir, "plan", f"WAL segment {segment} is missing from repo2")
        assert report.wal is not None and report.wal.first_missing == segment
        assert report.backup is not None and report.backup.label == backup.label
        assert [s.name for s in report.steps] == ["drill host", "plan", "teardown"]  # no restore
        # The given drill host stays; only the drill's folder went.
        assert report.drill_host is not None and report.drill_host.torn_down
        assert report.drill_host.machine_dir is None
        assert_untouched(booted)

    def test_corrupted_backup_file_fails_the_restore_on_its_checksum(
        self, booted: Booted, drills_dir: Path, given_drill_host: DrillHostSpec
    ):
        (backup,) = booted.backups()["repo2"]
        client, bucket = copy_bucket(booted)
        prefix = f"pgbackrest/backup/{booted.customer.stanza}/{backup.label}/bundle/"
        sizes = bucket_keys(client, bucket, prefix)
        key = max(sizes, key=lambda k: sizes[k])  # every bundled file is restored
        original = client.get_object(Bucket=bucket, Key=key)["Body"].read()
        client.put_object(Bucket=bucket, Key=key, Body=with_a_literal_flipped(original))
        try:
            report = self.drill(booted, drills_dir, given_drill_host, mode=DrillMode.LATEST)
        finally:
            client.put_object(Bucket=bucket, Key=key, Body=original)
        assert_failed(report, drills_dir, "restore", r"failed its checksum .*(?i:checksum)")
        assert report.restored is None  # PostgreSQL never started on damaged files
        assert_untouched(booted)

    def test_unreachable_drill_host(self, booted: Booted, drills_dir: Path, tmp_path: Path):
        nobody_listens = free_loopback_port()
        spec = host_from_command_line(
            f"{booted.state.ops_user}@127.0.0.1:{nobody_listens}",
            public_key_of_no_host(),  # nothing answers to present a key
            Path(booted.state.ops_key),
            tmp_path / "unreachable_known_hosts",
            None,
        )
        report = self.drill(booted, drills_dir, spec, mode=DrillMode.LATEST)
        assert_failed(
            report, drills_dir, "drill host", f"unreachable: .*127.0.0.1.*{nobody_listens}"
        )
        assert_untouched(booted)

    def test_full_drill_host(
        self, booted: Booted, drills_dir: Path, given_drill_host: DrillHostSpec
    ):
        report = self.drill(
            booted, drills_dir, given_drill_host, mode=DrillMode.LATEST, min_free_bytes=10**15
        )
        assert_failed(
            report, drills_dir, "space", r"is full: \d+ bytes free .* needs 1000000000000000"
        )
        assert report.measures.restore_seconds is None
        assert_untouched(booted)

    def test_target_before_the_oldest_backup(
        self, booted: Booted, drills_dir: Path, given_drill_host: DrillHostSpec
    ):
        (backup,) = booted.backups()["repo2"]
        before = backup.started - timedelta(minutes=1)
        report = self.drill(
            booted, drills_dir, given_drill_host, mode=DrillMode.TIME, target_time=before
        )
        assert_failed(
            report, drills_dir, "plan", f"before the oldest backup in repo2 .*{backup.label}"
        )
        assert_untouched(booted)

    def test_target_in_the_future(
        self, booted: Booted, drills_dir: Path, given_drill_host: DrillHostSpec
    ):
        later = datetime.now(UTC) + timedelta(hours=1)
        report = self.drill(
            booted, drills_dir, given_drill_host, mode=DrillMode.TIME, target_time=later
        )
        assert_failed(report, drills_dir, "plan", "is in the future")
        assert report.drill_host is None  # refused before any host was touched
        assert_untouched(booted)

    def test_a_mass_delete_of_the_copy_repository_is_recovered_then_verified_and_drilled(
        self, booted: Booted, drills_dir: Path, given_drill_host: DrillHostSpec
    ):
        """Issue 13 item 5: all a compromised instance can do to its versioned repository is
        put delete markers over it (``tests/test_iam_enforcement.py``: its role may do no more).
        One command brings it back; then the gap check passes and a drill restores from it."""
        customer = booted.customer
        client, bucket = copy_bucket(booted)
        common = ["--customers", str(booted.customers_dir), "--json"]
        time.sleep(1.1)  # S3 listings give whole seconds: no older object falls after `since`
        since = datetime.now(UTC)
        deleted = sorted(bucket_keys(client, bucket, "pgbackrest/"))
        for key in deleted:
            client.delete_object(Bucket=bucket, Key=key)
        try:
            assert not bucket_keys(client, bucket, "pgbackrest/backup/")
            broken = CliRunner().invoke(
                app, ["backup", "verify", customer.id, "--inventory", booted.state.inventory,
                      *common],
            )  # fmt: skip
            assert broken.exit_code == EXIT_FAILED, broken.output
            recovered = CliRunner().invoke(
                app, ["backup", "recover-deleted", customer.id, "--since", since.isoformat(),
                      *common],
            )  # fmt: skip
        finally:  # whatever failed above, the later tests get their repository back
            recover_bucket(client, bucket, customer.backup_copy_region, since)
        assert recovered.exit_code == 0, recovered.output
        restored = {b["bucket"]: b["restored"] for b in json.loads(recovered.output)["buckets"]}
        assert restored == {customer.backup_bucket_names[0]: [], bucket: deleted}
        assert set(deleted) <= set(bucket_keys(client, bucket, "pgbackrest/"))

        # archive-push retries what the copy region refused meanwhile: wait for it to catch up.
        deadline = time.monotonic() + 120
        while True:
            verified = CliRunner().invoke(
                app, ["backup", "verify", customer.id, "--inventory", booted.state.inventory,
                      *common],
            )  # fmt: skip
            status = json.loads(verified.output).get("status")
            if status == "OK" or time.monotonic() > deadline:
                break
            time.sleep(5)
        assert verified.exit_code == 0 and status == "OK", verified.output
        report = self.drill(booted, drills_dir, given_drill_host, mode=DrillMode.LATEST)
        assert report.status is DrillStatus.PASSED, (report.failed_step, report.error)
        assert_untouched(booted)


def test_the_nightly_unit_backs_up_both_regions_at_once(booted: Booted):
    """The rendered ``pgbackrest-backup@.service`` as systemd runs it on production: a diff in
    each repository, at the same time, the unit successful."""
    production_sh(booted.state, "systemctl start pgbackrest-backup@diff.service")
    result = production_sh(
        booted.state, "systemctl show -p Result --value pgbackrest-backup@diff.service"
    )
    assert result == "success"
    with SshPgBackRest.for_customer(
        booted.state.ssh_target(Environment.PRODUCTION), booted.customer
    ) as runner:
        sets = list_backups(runner, booted.customer)
    booted.last_switch = datetime.now(UTC)  # each backup's end switched WAL
    booted.remember_backups()
    first, second = sets["repo1"][-1], sets["repo2"][-1]
    assert (first.type.value, second.type.value) == ("diff", "diff")
    assert first.started < second.stopped and second.started < first.stopped, (first, second)


def test_drill_user_data_passes_the_images_own_cloud_init(booted: Booted):
    ops_public = Path(f"{booted.state.ops_key}.pub").read_text().strip()
    user_data = drillmachine.drill_user_data("drill-0123abcd", ops_public)
    assert user_data.startswith("#cloud-config\n")
    document = yaml.safe_load(user_data)
    (ops,) = document["users"]
    assert ops["name"] == policy.OPERATIONS_USER and ops["lock_passwd"] is True
    assert ops["ssh_authorized_keys"] == [ops_public]
    result = cloud_init_schema_in_image(Path(str(booted.state.image["root"])), user_data)
    assert result.returncode == 0, output_of(result)


# --- a moment in the past ----------------------------------------------------------------------
def test_time_drill_on_a_drill_machine_stops_at_its_target(booted: Booted, drills_dir: Path):
    target = booted.writer_started + timedelta(seconds=3)  # after the backup, while writing
    site = machines_site(booted.customer, drills_dir / ".ssh")
    report = run_drill(site, DrillRequest(mode=DrillMode.TIME, target_time=target), drills_dir)
    assert report.status is DrillStatus.PASSED, (report.failed_step, report.error)
    checks = {c.name: c.status for c in report.checks}
    assert checks["last replayed commit"] is CheckStatus.PASSED
    assert checks["product health query"] is CheckStatus.PASSED
    assert report.restored is not None and report.restored.last_commit is not None
    assert report.restored.last_commit <= target
    restored_rows = report.restored.tables["public.drill_rows"].rows
    assert booted.rows_at_backup < restored_rows < booted.rows()
    assert report.measures.rpo_seconds is not None and report.measures.rto_seconds is not None
    assert report.drill_host is not None and report.drill_host.torn_down
    assert_drill_machine_gone(booted, report.drill_host)


# --- the latest point, through the Fabric task ----------------------------------------------------
def test_fab_drill_latest_from_the_copy_region_on_a_drill_machine(booted: Booted, drills_dir: Path):
    # No WAL switch of ours for over twice the archive timeout before the region is "lost":
    # only the archive timeout closes the writer's segments, archive-push ships them.
    quiet_for = 2 * ARCHIVE_TIMEOUT + PUSH_ALLOWANCE
    quiet = booted.last_switch + timedelta(seconds=quiet_for)
    time.sleep(max((quiet - datetime.now(UTC)).total_seconds(), 0))
    assert booted.rows() > booted.rows_at_backup
    result = fab(  # no --site: the machines are the default site
        "dr.drill", "--customer", booted.customer.id,
        "--customers", str(booted.customers_dir), "--drills", str(drills_dir),
        "--latest", "--json",
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    report = DrillReport.model_validate(json.loads(result.stdout))
    assert report.passed and report.mode is DrillMode.LATEST
    assert report.event_time is not None
    assert (report.event_time - booted.last_switch).total_seconds() > quiet_for
    assert report.repo.index == 2 and report.repo.region == booted.customer.backup_copy_region
    checks = {c.name: c.status for c in report.checks}
    assert checks["recovered to target"] is CheckStatus.PASSED
    assert checks["archiving off"] is CheckStatus.PASSED
    assert checks["product health query"] is CheckStatus.PASSED
    assert checks["equal to production"] is CheckStatus.SKIPPED
    assert report.restored is not None
    assert report.restored.health == booted.customer.product_version  # erp_system_info
    # The writer's rows after the backup were replayed from the copy region's archive.
    assert report.restored.tables["public.drill_rows"].rows > booted.rows_at_backup
    assert report.restored.last_commit is not None and report.event_time is not None
    measures = report.measures
    assert measures.rto_seconds is not None and measures.rto_seconds > 0
    assert checks["RTO"] is CheckStatus.PASSED and checks["RPO"] is CheckStatus.PASSED
    assert measures.rpo_seconds is not None
    assert 0 <= measures.rpo_seconds <= ARCHIVE_TIMEOUT + PUSH_ALLOWANCE, measures.rpo_seconds
    assert measures.rpo_seconds <= policy.RPO_TARGET.total_seconds() == measures.rpo_target_seconds
    assert report.restored.last_commit <= report.event_time
    assert measures.restore_seconds is not None and measures.throughput_mb_s is not None
    # The drill machine: booted from the image on the target's network, then gone.
    ready = re.search(r"drill machine (drill-[0-9a-f]{8}) ready in ([0-9.]+) s", result.stderr)
    assert ready, result.stderr
    assert float(ready.group(2)) <= DRILL_MACHINE_READY_BOUND
    host = report.drill_host
    assert host is not None and host.name == ready.group(1)
    assert host.torn_down and not host.kept and not host.local
    assert host.ssh_host is not None
    assert ipaddress.ip_address(host.ssh_host) in booted.network.subnet  # the target's bridge
    assert host.ssh_host not in {r.address for r in booted.state.machines.values()}
    assert host.directory.startswith(drillmachine.DEFAULT_DRILL_ROOT + "/")
    assert_drill_machine_gone(booted, host)
    # The report went to the reports bucket in the emulator.
    s3 = booted.aws("s3", policy.DR_REPORTS_REGION)
    uploaded = s3.get_object(Bucket=policy.DR_REPORTS_BUCKET, Key=report.uploaded[0])
    assert json.loads(uploaded["Body"].read())["drill_id"] == report.drill_id
    assert "… restore: ok" in result.stderr


# --- the point drill: equal to production at its restore point, kept, then torn down -------------
def test_point_drill_on_a_drill_machine_equals_production_and_is_torn_down_later(
    booted: Booted, drills_dir: Path, tmp_path: Path
):
    site = machines_site(booted.customer, tmp_path)
    assert site.pg_version == 17  # the image's PostgreSQL; the drill role signs, no keys
    assert site.production is not None and site.production.pg_version == 17
    report = run_drill(site, DrillRequest(mode=DrillMode.POINT, keep=True), drills_dir)
    booted.last_switch = datetime.now(UTC)  # the snapshot switched WAL
    assert report.status is DrillStatus.PASSED, (report.failed_step, report.error)
    assert report.snapshot is not None and report.restored is not None
    checks = {c.name: c.status for c in report.checks}
    assert checks["equal to production"] is CheckStatus.PASSED
    assert checks["recovered to target"] is CheckStatus.PASSED
    assert checks["product health query"] is CheckStatus.PASSED
    assert report.restored.tables == report.snapshot.tables  # counts and checksums, per table
    snapshot_rows = report.snapshot.tables["public.drill_rows"].rows
    # Writes went on: the restore holds those up to the restore point and none after it.
    assert booted.rows_at_backup < snapshot_rows < booted.rows()
    assert report.wal is not None and report.wal.last == report.snapshot.wal_file
    assert report.measures.rpo_seconds is not None and report.measures.rpo_seconds < 5
    # The comparison is sensitive: production now (writes since) differs from the restore.
    production = site.production
    argv = psql_argv(production.psql, production.socket_dir, production.port, PRODUCT_DATABASE)
    now = production.shell.checked(production.shell.postgres(sums_script(argv)), "sums now")
    production.shell.close()
    assert compare_tables(parse_tables(now), report.restored.tables) != []

    kept = report.drill_host
    assert kept is not None and kept.kept and kept.machine_dir
    assert Path(kept.machine_dir, drillmachine.STATE_FILE).is_file()
    # pgBackRest on the drill machine signed with the drill role's keys, from its IMDS.
    role = f"{booted.customer.id}-drill-{kept.name.removeprefix('drill-')}"
    assert drillmachine.drill_role_exists(booted.state.aws_http_port, role)
    imds_log = Path(kept.machine_dir, "machine", "imds.log").read_text()
    assert f"GET /latest/meta-data/iam/security-credentials/{role} 200" in imds_log
    assert kept.ssh_host and kept.ssh_user and kept.key_file and kept.known_hosts
    target = SshTarget(
        kept.ssh_host, 22, kept.ssh_user, Path(kept.key_file), Path(kept.known_hosts)
    )
    shell = Shell(target)
    try:
        query = (
            "SELECT pg_is_in_recovery(), current_setting('archive_mode'), count(*) FROM drill_rows"
        )
        psql = (
            f"/usr/lib/postgresql/17/bin/psql -X -At -h {kept.directory}/socket -p {kept.pg_port}"
        )
        restored = shell.postgres(f'{psql} -d erp -c "{query}"')
        version = shell.run("pgbackrest version").stdout.strip()
    finally:
        shell.close()
    assert restored.stdout.strip() == f"f|off|{snapshot_rows}", restored.stderr
    assert version.startswith("pgBackRest 2.55")
    # It never wrote to a repository: a new timeline's history is in neither bucket.
    for bucket, region in zip(
        booted.customer.backup_bucket_names,
        (booted.customer.region, booted.customer.backup_copy_region),
        strict=True,
    ):
        listing = booted.aws("s3", region).list_objects_v2(
            Bucket=bucket, Prefix="pgbackrest/archive/"
        )
        keys = [o["Key"] for o in listing.get("Contents", [])]
        assert keys and not [k for k in keys if k.endswith(".history")]

    torn = fab("dr.teardown", "--drill", report.drill_id, "--drills", str(drills_dir))
    assert torn.returncode == 0, torn.stdout + torn.stderr
    assert "powered off" in torn.stdout and "deleted" in torn.stdout
    assert_drill_machine_gone(booted, kept)
    after = json.loads((drills_dir / report.drill_id / "report.json").read_text())
    assert after["drill_host"]["torn_down"] is True
    again = fab("dr.teardown", "--drill", report.drill_id, "--drills", str(drills_dir))
    assert again.returncode == EXIT_BAD_INPUT and "no kept drill host" in again.stderr
    assert_untouched(booted)


# --- history of the module's drills ---------------------------------------------------------------
def test_history_lists_the_drills_and_flags_nobody_drilled_this_year(
    booted: Booted, drills_dir: Path
):
    common = ["--drills", str(drills_dir), "--customers", str(booted.customers_dir)]
    result = CliRunner().invoke(app, ["dr", "history", *common, "--json"])
    assert result.exit_code == 0, result.output
    (entry,) = json.loads(result.output)["customers"]
    statuses = [d["status"] for d in entry["drills"]]
    # The time, latest and point drills and the one after a recovery passed; six faults failed.
    assert statuses.count("passed") == 4 and statuses.count("failed") == 6, statuses
    assert entry["overdue"] is False
    later = (datetime.now(UTC) + policy.DR_DRILL_MAX_INTERVAL + timedelta(days=1)).isoformat()
    flagged = CliRunner().invoke(app, ["dr", "history", *common, "--as-of", later, "--json"])
    assert flagged.exit_code == EXIT_FAILED
    assert json.loads(flagged.output)["overdue"] == [booted.customer.id]


# --- the gap check from the operations side, over SSH (S5-S7) ----------------------------------
def test_gap_check_over_ssh_through_the_inventory_publishes_to_cloudwatch(
    booted: Booted, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
):
    """`erpcloud backup verify --inventory`: production's pgBackRest 2.55 reached over SSH with
    the host key pinned, the result put to CloudWatch through boto3's own configuration (as the
    operations host's timer does it on AWS)."""
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{booted.state.aws_http_port}")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", EMULATOR_ACCESS_KEY)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", EMULATOR_SECRET_KEY)
    customer, inventory = booted.customer, booted.state.inventory
    common = ["--customers", str(booted.customers_dir), "--inventory", inventory]
    result = CliRunner().invoke(
        app, ["backup", "verify", customer.id, *common, "--publish", "--json"]
    )
    assert result.exit_code == 0, result.output
    document = json.loads(result.output)
    production = booted.state.machines[Environment.PRODUCTION]
    assert document["status"] == "OK"
    assert document["via"].endswith(f"over SSH ({booted.state.ops_user}@{production.address}:22)")
    assert [c["status"] for c in document["repositories"]] == ["OK", "OK"]
    cloudwatch = booted.aws("cloudwatch", customer.region)
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
    tampered = tmp_path / "inventory-wrong-key.yaml"
    data = yaml.safe_load(Path(inventory).read_text())
    for host in data["hosts"]:
        host["ssh"]["host_key"] = public_key_of_no_host()
    tampered.write_text(yaml.safe_dump(data))
    refused = CliRunner().invoke(
        app, ["backup", "verify", customer.id, "--customers", str(booted.customers_dir),
              "--inventory", str(tampered), "--json"],
    )  # fmt: skip
    assert refused.exit_code == EXIT_FAILED, refused.output
    error = json.loads(refused.output)["error"]
    assert "cannot be reached" in error and "host key changed" in error and "refusing" in error
    missing = CliRunner().invoke(
        app, ["backup", "list", customer.id, *common[:2], "--inventory", "/nonexistent.yaml"]
    )
    assert missing.exit_code == EXIT_BAD_INPUT and "/nonexistent.yaml" in missing.output


def test_a_drill_machine_that_fails_at_boot_is_removed_with_its_journal(
    booted: Booted, monkeypatch: pytest.MonkeyPatch
):
    plain = drillmachine.drill_user_data

    def with_broken_unit(hostname: str, ops_public_key: str) -> str:
        data = yaml.safe_load(plain(hostname, ops_public_key))
        data["write_files"] = [
            {
                "path": "/etc/systemd/system/erpcloud-broken.service",
                "content": "[Service]\nType=oneshot\n"
                "ExecStart=/bin/sh -c 'echo broken-on-purpose >&2; exit 3'\n",
            }
        ]
        data["runcmd"].append(["systemctl", "start", "--no-block", "erpcloud-broken.service"])
        return "#cloud-config\n" + yaml.safe_dump(data, sort_keys=False)

    monkeypatch.setattr(drillmachine, "drill_user_data", with_broken_unit)
    drill_id = f"20261201T000000Z-{booted.customer.id}-{time.time_ns() % 65536:04x}"
    with pytest.raises(drillmachine.DrillMachineError) as failed:
        drillmachine.boot_drill_machine(booted.state, booted.customer, drill_id)
    message = str(failed.value)
    assert "erpcloud-broken.service" in message and "broken-on-purpose" in message
    short = drillmachine.short_id(drill_id)
    assert_drill_machine_gone(
        booted,
        DrillHostRecord(
            name=f"drill-{short}",
            address="-",
            local=False,
            directory="-",
            machine_dir=str(drillmachine.DRILL_MACHINES_BASE / f"{booted.customer.id}-{short}"),
        ),
    )

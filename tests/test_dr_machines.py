"""Restore drills on drill machines (issue 12, S8): every pgBackRest command of a drill runs on
a machine from the customer's image (Debian 13, PostgreSQL 17, pgBackRest 2.55).

acme-retail's production and test machines are booted once for the module (under an id of their
own, so a run of ``test_machines.py`` elsewhere on this host never meets them), with a writer
committing on production all along; one full backup goes to both repositories through the
machines' inventory. Then drills from the copy region, each on a drill machine booted for it
from the same image on the target's network, signed by a drill role of its own, and removed
afterwards: the latest point through ``fab dr.drill --site machines``, and a point drill (a
restore point on production, equality at it) kept and torn down with ``fab dr.teardown``.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import re
import shlex
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from backups.pgbackrest import SshPgBackRest
from backups.runs import CONCURRENT_REPOSITORIES_FROM, list_backups, pgbackrest_version
from dr.drill import DrillRequest, run_drill
from dr.host import Shell
from dr.model import CheckStatus, DrillHostRecord, DrillMode, DrillReport, DrillStatus
from erpcloud import policy
from erpcloud.cli import app
from erpcloud.fleet import load_fleet
from erpcloud.model import Customer, Environment
from erpcloud.ssh import SshTarget, connect, run_as_root
from localtarget import drillmachine, machine, machines
from localtarget.drillsite import machines_site
from localtarget.image import cloud_init_schema_in_image, output_of
from localtarget.machines import MachineSetState

from .conftest import CUSTOMERS, REPO_ROOT

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

    @property
    def network(self) -> machine.Network:
        return machine.Network(self.state.network_index)

    def sql(self, statement: str) -> str:
        return production_sh(self.state, f"{PSQL} -c {shlex.quote(statement)}")

    def rows(self) -> int:
        return int(self.sql(COUNT_ROWS))

    def aws(self, service: str, region: str) -> Any:
        return self.state.aws_client(service, region)


def production_sh(state: MachineSetState, script: str) -> str:
    connection = connect(state.ssh_target(Environment.PRODUCTION))
    try:
        result = run_as_root(connection, script, timeout=300)
    finally:
        connection.close()
    assert result.return_code == 0, f"{script}: {result.stdout}{result.stderr}"
    return str(result.stdout).strip()


def copy_customer(directory: Path) -> Customer:
    """acme-retail under an id of its own (state folder, machine names, buckets)."""
    document = yaml.safe_load((CUSTOMERS / "acme-retail.yaml").read_text())
    document["id"] = f"drm-{TAG}"
    document["prefix"] = f"drm{TAG}"
    document.setdefault("backup", {})["archive_timeout_seconds"] = ARCHIVE_TIMEOUT
    directory.mkdir(parents=True, exist_ok=True)
    (directory / f"{document['id']}.yaml").write_text(yaml.safe_dump(document, sort_keys=False))
    fleet = load_fleet(directory)
    assert fleet.ok, fleet.errors
    return fleet.customers[document["id"]]


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
    customer = copy_customer(customers_dir)
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
        yield Booted(customer, customers_dir, state, rows, datetime.now(UTC))
    finally:
        with contextlib.suppress(Exception):
            production_sh(state, f"systemctl stop {WRITER_UNIT}")
        left = drillmachine.teardown_for_customer(customer.id)  # none, unless a test failed
        machines.down(customer.id)
        assert not left, left


@pytest.fixture(scope="module")
def drills_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("drm-drills")


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


# --- the latest point, through the Fabric task ----------------------------------------------------
def test_fab_drill_latest_from_the_copy_region_on_a_drill_machine(booted: Booted, drills_dir: Path):
    # The writer's first rows are in a closed segment in the copy region before the region is
    # "lost": the archive timeout closes it, archive-push ships it.
    shipped = booted.writer_started + timedelta(seconds=ARCHIVE_TIMEOUT + PUSH_ALLOWANCE)
    time.sleep(max((shipped - datetime.now(UTC)).total_seconds(), 0))
    assert booted.rows() > booted.rows_at_backup
    result = fab(
        "dr.drill", "--customer", booted.customer.id, "--site", "machines",
        "--customers", str(booted.customers_dir), "--drills", str(drills_dir),
        "--latest", "--json",
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    report = DrillReport.model_validate(json.loads(result.stdout))
    assert report.passed and report.mode is DrillMode.LATEST
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


# --- the point drill: equal to production at its restore point, kept, then torn down -------------
def test_point_drill_on_a_drill_machine_equals_production_and_is_torn_down_later(
    booted: Booted, drills_dir: Path, tmp_path: Path
):
    site = machines_site(booted.customer, tmp_path)
    assert site.s3_env == {} and site.pg_version == 17  # the drill role signs; PostgreSQL 17
    assert site.production is not None and site.production.pg_version == 17
    report = run_drill(site, DrillRequest(mode=DrillMode.POINT, keep=True), drills_dir)
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

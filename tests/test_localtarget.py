"""`erpcloud local up|status|down`: everything started is recorded, reachable, and stopped."""

from __future__ import annotations

import os
import pwd
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from erpcloud.cli import app
from erpcloud.model import Customer, Environment, SshUser
from erpcloud.ssh import connect, run, run_as_root
from localtarget import target
from localtarget.instance import S3_LEGACY_REGION, create_buckets
from localtarget.processes import pid_alive, port_open
from localtarget.s3 import LocalAws
from localtarget.sshhost import SshHost

pytestmark = pytest.mark.services
TAG = os.getpid() % 100000


def account_exists(name: str) -> bool:
    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True


@pytest.fixture(scope="module")
def customer(sample_fleet: dict[str, Customer]) -> Customer:
    """acme-retail under a unique id and user names: tests never clash with a running demo."""
    base = sample_fleet["acme-retail"]
    users = [
        SshUser(name=f"lt{TAG}u{i}", keys=u.keys, sudo=u.sudo) for i, u in enumerate(base.ssh.users)
    ]
    return base.model_copy(
        update={"id": f"lt-{TAG}", "ssh": base.ssh.model_copy(update={"users": users})}
    )


@pytest.fixture(scope="module")
def running(customer: Customer) -> Iterator[target.LocalTarget]:
    started = target.up(customer)
    try:
        yield started
    finally:
        if (started.root / target.STATE_FILE).exists():
            target.down(customer.id)


def test_up_records_every_process_alive_and_listening(running: target.LocalTarget):
    report = target.status(running.customer.id)
    assert report["up"] is True
    names = {p["name"] for p in report["processes"]}  # type: ignore[attr-defined]
    assert names == {"moto", "stunnel", "postgres", "sshd-test", "sshd-production"}


def test_hosts_are_reached_with_pinned_keys_as_the_operations_user(running: target.LocalTarget):
    for environment in Environment:
        connection = connect(running.ssh_target(environment))
        try:
            expected = target.local_ops_user(running.customer.id, environment)
            assert run(connection, "id -un").stdout.strip() == expected
            assert run_as_root(connection, "id -u").stdout.strip() == "0"
        finally:
            connection.close()


def test_inventory_lets_the_maintenance_runner_reach_both_hosts(
    running: target.LocalTarget, sample_fleet: dict[str, Customer]
):
    from maintenance.inventory import load_inventory

    inventory = load_inventory(
        Path(running.state.inventory), {running.customer.id: running.customer}
    )
    assert [h.environment for h in inventory.hosts] == [Environment.TEST, Environment.PRODUCTION]
    production = inventory.hosts[1]
    assert production.has_backups and production.db is not None
    assert production.db.port == running.state.pg_port
    assert not inventory.hosts[0].has_backups  # S9


def test_production_host_has_the_customers_users(running: target.LocalTarget):
    production = running.state.host(Environment.PRODUCTION)
    test_host = running.state.host(Environment.TEST)
    for user in running.customer.ssh.users:
        assert account_exists(user.name)
        assert user.name in production.created_users
        assert user.name not in test_host.created_users


def test_database_is_configured_by_the_rendered_files(running: target.LocalTarget):
    attached = target.attach(running.customer)
    cluster = attached.instance.cluster
    assert cluster.psql("SHOW archive_mode") == "on"
    timeout = cluster.psql("SELECT setting FROM pg_settings WHERE name = 'archive_timeout'")
    assert int(timeout) == running.customer.backup.archive_timeout_seconds
    assert f"--stanza={running.customer.stanza}" in cluster.psql("SHOW archive_command")
    info = attached.instance.pgbackrest("info").stdout
    assert f"stanza: {running.customer.stanza}" in info


def test_cli_status_reports_up(running: target.LocalTarget):
    result = CliRunner().invoke(app, ["local", "status", running.customer.id, "--json"])
    assert result.exit_code == 0, result.output


def test_down_stops_by_pid_and_removes_everything(customer: Customer):
    # A second target of another customer id proves down removes exactly what up created.
    other = customer.model_copy(
        update={
            "id": f"lt-{TAG}-b",
            "ssh": customer.ssh.model_copy(
                update={"users": [customer.ssh.users[0].model_copy(update={"name": f"lt{TAG}b"})]}
            ),
        }
    )
    started = target.up(other)
    pids = [p.pid for p in started.state.processes]
    ports = [p.port for p in started.state.processes]
    report = target.down(other.id)
    assert len(report["stopped"]) == 5  # type: ignore[arg-type]
    assert not any(pid_alive(pid) for pid in pids)
    assert not any(port_open(port) for port in ports)
    assert not account_exists(f"lt{TAG}b")
    assert not account_exists(target.local_ops_user(other.id, Environment.TEST))
    assert not started.root.exists()


def test_failed_up_leaves_nothing_behind(customer: Customer, monkeypatch: pytest.MonkeyPatch):
    broken = customer.model_copy(
        update={
            "id": f"lt-{TAG}-c",
            "ssh": customer.ssh.model_copy(
                update={"users": [customer.ssh.users[0].model_copy(update={"name": f"lt{TAG}c"})]}
            ),
        }
    )
    seen: list[int] = []
    real_start = SshHost.start

    def start_then_fail(self: SshHost) -> None:
        real_start(self)
        assert self.process is not None
        seen.append(self.process.pid)
        if self.name.endswith("production"):
            raise RuntimeError("sshd refused to start")

    monkeypatch.setattr(SshHost, "start", start_then_fail)
    with pytest.raises(RuntimeError, match="sshd refused"):
        target.up(broken)
    assert len(seen) == 2 and not any(pid_alive(pid) for pid in seen)
    assert not target.target_root(broken.id).exists()
    assert not account_exists(f"lt{TAG}c")


def test_status_of_an_unknown_target_fails_clearly():
    result = CliRunner().invoke(app, ["local", "status", "no-such-customer"])
    assert result.exit_code == 1
    assert "no local target" in result.output


def test_down_keep_keeps_the_data(customer: Customer, tmp_path: Path):
    kept = customer.model_copy(
        update={
            "id": f"lt-{TAG}-d",
            "ssh": customer.ssh.model_copy(
                update={"users": [customer.ssh.users[0].model_copy(update={"name": f"lt{TAG}d"})]}
            ),
        }
    )
    started = target.up(kept)
    report = target.down(kept.id, keep=True)
    try:
        assert report["kept"] == str(started.root)
        assert (started.root / "instance" / "pg" / "data" / "PG_VERSION").exists()
        assert not any(pid_alive(p.pid) for p in started.state.processes)
        assert not account_exists(f"lt{TAG}d")
    finally:
        shutil.rmtree(started.root, ignore_errors=True)


@pytest.mark.parametrize("customer_id", ["northwind-trading", "acme-retail"])
def test_backup_buckets_land_in_their_regions(
    customer_id: str, sample_fleet: dict[str, Customer], local_aws: LocalAws
):
    """us-east-1 takes no LocationConstraint (S3's rule); every other region needs one."""
    customer = sample_fleet[customer_id]
    create_buckets(local_aws, customer)
    regions = (customer.region, customer.backup_copy_region)
    for bucket, region in zip(customer.backup_bucket_names, regions, strict=True):
        location = local_aws.client("s3", region).get_bucket_location(Bucket=bucket)
        assert (location["LocationConstraint"] or S3_LEGACY_REGION) == region

"""`erpcloud local processes up|status|down` (the host-process stand-in): everything started is
recorded, reachable, and stopped."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from erpcloud import policy
from erpcloud.aws import S3_LEGACY_REGION
from erpcloud.cli import app
from erpcloud.model import Customer, Environment, SshUser
from erpcloud.render import secret_name
from erpcloud.ssh import connect, run, run_as_root
from localtarget import target
from localtarget.processes import pid_alive, port_open
from localtarget.provision import provision_from_plan
from localtarget.s3 import LocalAws
from localtarget.sshhost import SshHost, account_exists
from stacks.plan import plan_customer

pytestmark = pytest.mark.services
TAG = os.getpid() % 100000


def secret_names(customer: Customer) -> list[str]:
    return [secret_name(customer, which) for which in ("activation_key", "database_password")]


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


def test_hosts_hold_the_product_files_the_export_reads(running: target.LocalTarget):
    """What the image puts on an instance (S1) and the export takes along (S18)."""
    from lifecycle.paths import HostPaths

    for environment in Environment:
        paths = HostPaths(running.state.host(environment).state_dir)
        version = (Path(paths.product) / "VERSION").read_text().strip()
        assert version == running.customer.product_version
        assert Path(paths.attachments).is_dir()
        assert paths.product.startswith(running.state.host(environment).state_dir)


def test_the_maintenance_prechecks_read_the_backups_over_ssh(running: target.LocalTarget):
    """The runner's backup pre-check reaches pgBackRest's repositories on the emulator: the
    inventory tells it to pass the emulator's test keys (on AWS the instance role signs)."""
    from maintenance.checks import _decode, parse_facts, precheck_script
    from maintenance.inventory import load_inventory

    inventory = load_inventory(
        Path(running.state.inventory), {running.customer.id: running.customer}
    )
    production = inventory.hosts[1]
    assert production.db is not None and production.db.s3_emulator_keys
    connection = connect(running.ssh_target(Environment.PRODUCTION))
    try:
        facts = parse_facts(run_as_root(connection, precheck_script(production)).stdout)
    finally:
        connection.close()
    assert "backup_error" not in facts, _decode(facts["backup_error"])
    (stanza,) = json.loads(_decode(facts["backup_info"]))
    assert stanza["name"] == running.customer.stanza
    assert [r["key"] for r in stanza["repo"]] == [1, 2]


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
    result = CliRunner().invoke(
        app, ["local", "processes", "status", running.customer.id, "--json"]
    )
    assert result.exit_code == 0, result.output


def test_cli_up_and_down_stop_by_pid_and_remove_everything(customer: Customer, tmp_path: Path):
    """`erpcloud local processes up` then `down`, as a user runs them, on a customer file of its
    own."""
    other = customer.model_copy(
        update={
            "id": f"lt-{TAG}-b",
            "ssh": customer.ssh.model_copy(
                update={"users": [customer.ssh.users[0].model_copy(update={"name": f"lt{TAG}b"})]}
            ),
        }
    )
    customers_dir = tmp_path / "customers"
    customers_dir.mkdir()
    (customers_dir / f"{other.id}.yaml").write_text(yaml.safe_dump(other.model_dump(mode="json")))
    cli = CliRunner()
    up = cli.invoke(
        app, ["local", "processes", "up", other.id, "--customers", str(customers_dir), "--json"]
    )
    assert up.exit_code == 0, up.output
    state = target.load_state(other.id)
    pids = [p.pid for p in state.processes]
    ports = [p.port for p in state.processes]
    down = cli.invoke(app, ["local", "processes", "down", other.id, "--json"])
    assert down.exit_code == 0, down.output
    assert len(json.loads(down.stdout)["stopped"]) == 5
    assert not any(pid_alive(pid) for pid in pids)
    assert not any(port_open(port) for port in ports)
    assert not account_exists(f"lt{TAG}b")
    assert not account_exists(target.local_ops_user(other.id, Environment.TEST))
    assert not Path(state.root).exists()


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
    result = CliRunner().invoke(app, ["local", "processes", "status", "no-such-customer"])
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
def test_storage_keys_and_secrets_come_from_the_offline_plan(
    customer_id: str, sample_fleet: dict[str, Customer], local_aws: LocalAws
):
    """S6 buckets (us-east-1 takes no LocationConstraint, every other region needs one), with
    what the program declares for them; the activation-key secret; the rest skipped."""
    customer = sample_fleet[customer_id]
    plan = plan_customer(customer)
    values = {name: f"value-of-{name}" for name in secret_names(customer)}
    report = provision_from_plan(plan, local_aws, values, target.referenced_secrets(customer))
    regions = (customer.region, customer.backup_copy_region)
    for bucket, region in zip(customer.backup_bucket_names, regions, strict=True):
        s3 = local_aws.client("s3", region)
        location = s3.get_bucket_location(Bucket=bucket)["LocationConstraint"]
        assert (location or S3_LEGACY_REGION) == region
        assert s3.get_bucket_versioning(Bucket=bucket)["Status"] == "Enabled"
        rule = s3.get_bucket_encryption(Bucket=bucket)["ServerSideEncryptionConfiguration"]
        default = rule["Rules"][0]["ApplyServerSideEncryptionByDefault"]
        assert default["SSEAlgorithm"] == "aws:kms"
        key = local_aws.client("kms", region).describe_key(KeyId=default["KMSMasterKeyID"])
        assert key["KeyMetadata"]["KeyState"] == "Enabled"
        block = s3.get_public_access_block(Bucket=bucket)["PublicAccessBlockConfiguration"]
        assert all(block.values()) and len(block) == 4
        lifecycle = s3.get_bucket_lifecycle_configuration(Bucket=bucket)["Rules"][0]
        noncurrent = lifecycle["NoncurrentVersionExpiration"]["NoncurrentDays"]
        assert noncurrent > policy.BACKUP_RETENTION_DAYS  # a safety net beyond retention (S6)
    manager = local_aws.client("secretsmanager", customer.region)
    for name, value in values.items():
        assert manager.get_secret_value(SecretId=name)["SecretString"] == value
    created = {r["type"] for r in report.created}
    skipped = {r["type"]: r["reason"] for r in report.skipped}
    assert "aws:s3/bucket:Bucket" in created and "aws:ec2/instance:Instance" in skipped
    assert "PostgreSQL" in skipped["aws:ec2/instance:Instance"]
    assert "TLS proxy" in skipped["aws:s3/bucketPolicy:BucketPolicy"]
    existing = len(target.referenced_secrets(customer))
    assert len(report.created) + len(report.skipped) == len(plan.resources) + existing

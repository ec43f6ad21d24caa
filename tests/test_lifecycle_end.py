"""A customer's end on a real local target (S18): cancel, terminate at the end date with a final
backup to both regions, retain, then purge only after 60 days, with confirmation, audited.

The tests follow one customer's life in order (they share the module's local target).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from backups.pgbackrest import LocalPgBackRest
from backups.runs import list_backups
from erpcloud.fleet import load_fleet
from erpcloud.model import Customer
from erpcloud.output import EXIT_BAD_INPUT
from erpcloud.render import PRODUCT_DATABASE, secret_name
from lifecycle.purge import bucket_exists
from localtarget import sampledata, target
from localtarget.processes import pid_alive
from localtarget.sshhost import account_exists

from .test_lifecycle import audit_entries, invoke, local_target, write_local_customer

pytestmark = pytest.mark.services
CUSTOMER_ID = f"lce-{os.getpid() % 100000}"
NOTICE = "2026-11-02"


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Path]]:
    root = tmp_path_factory.mktemp("lifecycle-end")
    paths = {
        "customers": root / "customers",
        "records": root / "records",
        "audit": root / "a.jsonl",
    }
    write_local_customer(paths["customers"], CUSTOMER_ID)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("ERPCLOUD_AUDIT_LOG", str(paths["audit"]))
        patch.delenv("CI", raising=False)
        yield paths


@pytest.fixture(scope="module")
def customer(workspace: dict[str, Path]) -> Customer:
    return load_fleet(workspace["customers"]).customers[CUSTOMER_ID]


@pytest.fixture(scope="module")
def running(customer: Customer) -> Iterator[target.LocalTarget]:
    """The customer's local target with the product's database holding some data."""
    with local_target(customer) as started:
        cluster = started.instance.cluster
        sampledata.create_database(cluster.conninfo())
        sampledata.load_sample_data(cluster.conninfo(PRODUCT_DATABASE), customer, 50, 100)
        yield started


def cli(workspace: dict[str, Path], *args: str, env: dict[str, str] | None = None) -> Any:
    return invoke(
        *args, "--customers", str(workspace["customers"]), "--records", str(workspace["records"]),
        env=env,
    )  # fmt: skip


def cancelled(workspace: dict[str, Path]) -> Customer:
    return load_fleet(workspace["customers"]).customers[CUSTOMER_ID]


def alive(running: target.LocalTarget) -> set[str]:
    return {p.name for p in running.state.processes if pid_alive(p.pid)}


def test_cancel_then_service_runs_until_the_end_date(
    workspace: dict[str, Path], running: target.LocalTarget
):
    result = invoke(
        "customer", "cancel", CUSTOMER_ID, "--notice-date", NOTICE, "--today", NOTICE,
        "--customers", str(workspace["customers"]),
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    end = cancelled(workspace).lifecycle.termination_date
    assert end is not None
    before = cli(workspace, "customer", "due", "--today", str(end - timedelta(days=1)))
    assert before.exit_code == 0, before.output
    item = {i["customer"]: i for i in json.loads(before.stdout)["customers"]}[CUSTOMER_ID]
    assert item["due"] == "notice-running" and "in 1 day(s)" in item["message"]
    assert alive(running) == {"moto", "stunnel", "postgres", "sshd-test", "sshd-production"}


def test_at_the_end_date_a_final_backup_to_both_regions_then_the_service_stops(
    workspace: dict[str, Path], running: target.LocalTarget
):
    customer = cancelled(workspace)
    end = customer.lifecycle.termination_date
    assert end is not None
    # Through an inventory whose host cannot reach the repositories (no S3 keys there), the
    # final backup fails: the service keeps running and nothing is recorded as done.
    unreachable = cli(
        workspace, "customer", "due", "--today", str(end), "--inventory", running.state.inventory
    )
    assert unreachable.exit_code == 1, unreachable.output
    error = json.loads(unreachable.stdout)["errors"][CUSTOMER_ID]
    assert "the final backup failed" in error and "the service keeps running" in error
    assert "postgres" in alive(running)
    assert not (workspace["records"] / "records" / f"{CUSTOMER_ID}.json").exists()

    result = cli(workspace, "customer", "due", "--today", str(end))
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    (done,) = report["terminated"]
    assert done["service"] == "stopped"
    assert set(done["stopped"]) == {"postgres", "sshd-test", "sshd-production"}
    assert alive(running) == {"moto", "stunnel"}  # AWS stays: the buckets are retained
    backups = list_backups(LocalPgBackRest(running.instance), customer)
    for repo in ("repo1", "repo2"):
        newest = backups[repo][-1]
        assert (newest.label, newest.type.value) == (done["final_backup"][repo], "full")
    actions = [e["action"] for e in audit_entries(workspace["audit"])]
    assert actions == ["lifecycle.cancel", "lifecycle.terminate"]

    again = cli(workspace, "customer", "due", "--today", str(end + timedelta(days=1)))
    assert again.exit_code == 0, again.output
    second = json.loads(again.stdout)
    assert second["terminated"] == []  # once only
    item = {i["customer"]: i for i in second["customers"]}[CUSTOMER_ID]
    assert (
        item["due"] == "retained" and str(customer.lifecycle.purge_allowed_from) in item["message"]
    )


def test_purge_refused_before_the_60_days_and_without_confirmation(
    workspace: dict[str, Path], running: target.LocalTarget
):
    customer = cancelled(workspace)
    end = customer.lifecycle.termination_date
    assert end is not None
    day_59, day_61 = str(end + timedelta(days=59)), str(end + timedelta(days=61))
    purge = ("customer", "purge", CUSTOMER_ID)
    early = cli(workspace, *purge, "--confirm", CUSTOMER_ID, "--today", day_59)
    assert early.exit_code == EXIT_BAD_INPUT
    assert f"allowed from {customer.lifecycle.purge_allowed_from}" in early.stdout
    missing = cli(workspace, *purge, "--today", day_61)
    assert missing.exit_code == EXIT_BAD_INPUT and "--confirm: required" in missing.stdout
    wrong = cli(workspace, *purge, "--confirm", "acme-retail", "--today", day_61)
    assert wrong.exit_code == EXIT_BAD_INPUT and "is not the customer id" in wrong.stdout
    in_ci = cli(workspace, *purge, "--confirm", CUSTOMER_ID, "--today", day_61, env={"CI": "1"})
    assert in_ci.exit_code == EXIT_BAD_INPUT and "does not run from CI" in in_ci.stdout
    s3 = running.aws.client("s3", customer.region)
    assert all(bucket_exists(s3, name) for name in customer.backup_bucket_names)
    assert Path(running.root, "instance").is_dir()
    assert len(audit_entries(workspace["audit"])) == 2  # refusals destroy and record nothing


def test_purge_at_day_61_destroys_the_buckets_and_volumes(
    workspace: dict[str, Path], running: target.LocalTarget
):
    customer = cancelled(workspace)
    end = customer.lifecycle.termination_date
    assert end is not None
    day_61 = str(end + timedelta(days=61))
    s3 = {
        name: running.aws.client("s3", region)
        for name, region in zip(
            customer.backup_bucket_names,
            (customer.region, customer.backup_copy_region),
            strict=True,
        )
    }
    held = {name: client.list_object_versions(Bucket=name) for name, client in s3.items()}
    assert all(page.get("Versions") for page in held.values())  # backups and WAL are there
    result = cli(
        workspace, "customer", "purge", CUSTOMER_ID, "--confirm", CUSTOMER_ID, "--today", day_61
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["ran"] is True and report["mode"] == "local"
    destroyed = report["destroyed"]
    assert set(destroyed["buckets"]) == set(customer.backup_bucket_names)
    assert all(count > 0 for count in destroyed["buckets"].values())
    for name, client in s3.items():
        assert not bucket_exists(client, name)
    for folder in destroyed["folders"]:
        assert not Path(folder).exists()
    assert not Path(running.root, "instance", "pg", "data").exists()
    manager = running.aws.client("secretsmanager", customer.region)
    names = {s["Name"] for s in manager.list_secrets()["SecretList"]}
    assert not names & {secret_name(customer, w) for w in ("activation_key", "database_password")}
    assert destroyed["secrets"]
    entries = audit_entries(workspace["audit"])
    assert [e["action"] for e in entries[-2:]] == ["lifecycle.purge.start", "lifecycle.purge"]
    assert entries[-1]["ran"] is True and entries[-1]["destroyed"]["buckets"]

    after = cli(workspace, "customer", "due", "--today", day_61)
    item = {i["customer"]: i for i in json.loads(after.stdout)["customers"]}[CUSTOMER_ID]
    assert item["due"] == "purged"
    assert target.down(CUSTOMER_ID)["removed"]  # what is left (the emulator) goes as usual
    accounts = [name for host in running.state.hosts for name in host.created_users]
    assert len(accounts) == 4 and not [name for name in accounts if account_exists(name)]

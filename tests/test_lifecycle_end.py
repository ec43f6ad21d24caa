"""A customer's end on real local machines (S18): cancel, terminate at the end date with a final
backup to both regions and the machines powered off, retain, then purge only after 60 days, with
confirmation, audited.

The tests follow one customer's life in order (they share the module's machines, booted from
the product image; the commands find them as `erpcloud customer ...` does: the local site).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from erpcloud.fleet import load_fleet
from erpcloud.model import Customer, Environment
from erpcloud.output import EXIT_BAD_INPUT
from erpcloud.render import secret_name
from lifecycle.purge import bucket_exists
from localtarget import machines, onmachine
from localtarget.machines import MachineSetState
from localtarget.processes import pid_alive
from localtarget.sampledata import sample_data_script

from .test_lifecycle import audit_entries, invoke, write_local_customer

pytestmark = [pytest.mark.services, pytest.mark.timeout(900)]
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
def running(customer: Customer) -> Iterator[MachineSetState]:
    """The customer's machines, the product's database holding some data."""
    state = machines.up(customer)  # all or nothing: on failure nothing is left to take down
    try:
        onmachine.psql(state, Environment.PRODUCTION, sample_data_script(customer, 50, 100))
        yield state
    finally:
        if (machines.machines_root(customer.id) / machines.STATE_FILE).exists():
            machines.down(customer.id)


def cli(workspace: dict[str, Path], *args: str, env: dict[str, str] | None = None) -> Any:
    return invoke(
        *args, "--customers", str(workspace["customers"]), "--records", str(workspace["records"]),
        env=env,
    )  # fmt: skip


def cancelled(workspace: dict[str, Path]) -> Customer:
    return load_fleet(workspace["customers"]).customers[CUSTOMER_ID]


def alive(state: MachineSetState) -> set[str]:
    """What runs of the customer's: its machines by environment, and the AWS stand-in."""
    running = {env.value for env, record in state.machines.items() if pid_alive(record.pid)}
    return running | ({"aws"} if all(pid_alive(pid) for pid in state.aws_pids) else set())


def bucket_clients(state: MachineSetState, customer: Customer) -> dict[str, Any]:
    regions = (customer.region, customer.backup_copy_region)
    return {
        name: state.aws_client("s3", region)
        for name, region in zip(customer.backup_bucket_names, regions, strict=True)
    }


def test_cancel_then_service_runs_until_the_end_date(
    workspace: dict[str, Path], running: MachineSetState
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
    assert alive(running) == {"aws", "production", "test"}


def test_at_the_end_date_a_final_backup_to_both_regions_then_the_service_stops(
    workspace: dict[str, Path], running: MachineSetState, tmp_path: Path
):
    customer = cancelled(workspace)
    end = customer.lifecycle.termination_date
    assert end is not None
    # Through an inventory that points pgBackRest at a configuration the host does not have,
    # the final backup fails: the service keeps running and nothing is recorded as done.
    document = yaml.safe_load(Path(running.inventory).read_text())
    for host in document["hosts"]:
        host["db"]["pgbackrest_config"] = "/etc/pgbackrest/not-here.conf"
    broken = tmp_path / "broken-inventory.yaml"
    broken.write_text(yaml.safe_dump(document))
    unreachable = cli(workspace, "customer", "due", "--today", str(end), "--inventory", str(broken))
    assert unreachable.exit_code == 1, unreachable.output
    error = json.loads(unreachable.stdout)["errors"][CUSTOMER_ID]
    assert "the final backup failed" in error and "the service keeps running" in error
    assert alive(running) == {"aws", "production", "test"}
    assert not (workspace["records"] / "records" / f"{CUSTOMER_ID}.json").exists()

    result = cli(workspace, "customer", "due", "--today", str(end))  # finds the local machines
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    (done,) = report["terminated"]
    assert done["service"] == "stopped"
    names = {env: record.name for env, record in running.machines.items()}
    assert done["stopped"] == [  # production last: its clean shutdown archives the last WAL
        f"test machine {names[Environment.TEST]}",
        f"production machine {names[Environment.PRODUCTION]}",
    ]
    assert alive(running) == {"aws"}  # AWS stays: the buckets are retained
    for repo, (bucket, s3) in zip(
        ("repo1", "repo2"), bucket_clients(running, customer).items(), strict=True
    ):
        keys = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket).get("Contents", [])]
        label = done["final_backup"][repo]
        assert label.endswith("F")  # a full backup
        assert any(k.endswith(f"/backup/{customer.stanza}/{label}/backup.manifest") for k in keys)
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
    workspace: dict[str, Path], running: MachineSetState
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
    assert all(bucket_exists(s3, name) for name, s3 in bucket_clients(running, customer).items())
    assert all(Path(r.directory, "data").is_dir() for r in running.machines.values())
    assert len(audit_entries(workspace["audit"])) == 2  # refusals destroy and record nothing


def test_purge_at_day_61_destroys_the_buckets_and_volumes(
    workspace: dict[str, Path], running: MachineSetState
):
    customer = cancelled(workspace)
    end = customer.lifecycle.termination_date
    assert end is not None
    day_61 = str(end + timedelta(days=61))
    s3 = bucket_clients(running, customer)
    held = {name: client.list_object_versions(Bucket=name) for name, client in s3.items()}
    assert all(page.get("Versions") for page in held.values())  # backups and WAL are there
    result = cli(
        workspace, "customer", "purge", CUSTOMER_ID, "--confirm", CUSTOMER_ID, "--today", day_61
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["ran"] is True and report["mode"] == "local"
    destroyed = report["destroyed"]
    assert set(destroyed["buckets"]) == {
        *customer.backup_bucket_names,
        customer.access_log_bucket_name,
    }
    # Backups and WAL were there; no load balancer writes access logs locally.
    assert all(destroyed["buckets"][name] > 0 for name in customer.backup_bucket_names)
    assert set(destroyed["secrets"]) == {
        secret_name(customer, w, environment)
        for w in ("activation_key", "database_password")
        for environment in Environment  # the test environment's own secrets too (issue 13)
    }
    assert destroyed["kms_keys_scheduled"]
    assert destroyed["removed"][-1] == f"removed {running.root}"
    assert not Path(running.root).exists()  # machines, disks and data volumes
    assert not any(Path(r.directory).exists() for r in running.machines.values())
    assert not any(pid_alive(pid) for pid in running.aws_pids)  # its AWS stand-in went too
    entries = audit_entries(workspace["audit"])
    assert [e["action"] for e in entries[-2:]] == ["lifecycle.purge.start", "lifecycle.purge"]
    assert entries[-1]["ran"] is True and entries[-1]["destroyed"]["buckets"]

    after = cli(workspace, "customer", "due", "--today", day_61)
    item = {i["customer"]: i for i in json.loads(after.stdout)["customers"]}[CUSTOMER_ID]
    assert item["due"] == "purged"
    status = invoke("local", "status", CUSTOMER_ID)
    assert status.exit_code != 0 and "no local machines" in status.output

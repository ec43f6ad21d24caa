"""Customer lifecycle without hosts: the customer file's state (P3, S18), the daily schedule, the
purge rules and the AWS purge plan, the suspended stack, and S14 migrations.

The host operations (move in, export, inventory) are in ``test_lifecycle_hosts.py``; a customer's
end on real local machines (cancel, terminate, purge) in ``test_lifecycle_end.py``.
"""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from erpcloud import policy
from erpcloud.fleet import CustomerFileError, load_fleet
from erpcloud.model import Customer, Lifecycle, LifecycleState
from erpcloud.output import EXIT_BAD_INPUT, EXIT_FAILED, EXIT_WARNING
from frontdoor.cli import app
from lifecycle.customerfile import LifecycleRefused, replace_block, write_lifecycle
from lifecycle.due import PURGED, TERMINATED, Due, due_item
from lifecycle.dump import MoveInRefused
from lifecycle.movein import check_attachments
from lifecycle.platform import AwsPlatform
from lifecycle.purge import PurgeRefused, check_purge
from lifecycle.records import CustomerRecord, Event
from maintenance.change import load_change
from maintenance.rules import check_change
from stacks.plan import BUCKET_TYPE, plan_customer

from .conftest import CUSTOMERS

runner = CliRunner()
INSTANCE_STATE = "aws:ec2transitgateway/instanceState:InstanceState"


# --- helpers the host tests share ----------------------------------------------------------------
def write_local_customer(directory: Path, customer_id: str, base: str = "acme-retail") -> Path:
    """A sample customer under a unique id, prefix and user names (loopback hosts share one user
    table), keeping the sample file's comments."""
    text = (CUSTOMERS / f"{base}.yaml").read_text()
    document = yaml.safe_load(text)
    users = [u["name"] for u in document["ssh"]["users"]]
    short = customer_id.replace("-", "")
    text = text.replace(f"id: {document['id']}", f"id: {customer_id}", 1)
    text = text.replace(f"prefix: {document['prefix']}", f"prefix: {short}", 1)
    for index, name in enumerate(users):
        text = text.replace(f"- name: {name}", f"- name: {short}u{index}", 1)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{customer_id}.yaml"
    path.write_text(text)
    fleet = load_fleet(directory)
    assert fleet.ok, fleet.errors
    return path


def invoke(*args: str, env: dict[str, str] | None = None) -> Any:
    return runner.invoke(app, [*args, "--json"], env=env)


def audit_entries(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


@pytest.fixture
def audit_log(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "audit.jsonl"
    monkeypatch.setenv("ERPCLOUD_AUDIT_LOG", str(path))
    monkeypatch.delenv("CI", raising=False)
    return path


@pytest.fixture
def fleet_dir(tmp_path: Path) -> Path:
    directory = tmp_path / "customers"
    write_local_customer(directory, "lcfile-one")
    return directory


# --- suspend / resume (P3) ------------------------------------------------------------------------
def test_suspend_and_resume_change_only_the_lifecycle_block(fleet_dir: Path, audit_log: Path):
    path = fleet_dir / "lcfile-one.yaml"
    before = path.read_text()
    result = invoke("customer", "suspend", "lcfile-one", "--customers", str(fleet_dir))
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["changed"] is True and report["lifecycle"]["state"] == "suspended"
    after = path.read_text()
    added = [line for line in after.splitlines() if line not in before.splitlines()]
    assert added == ["lifecycle:", "  state: suspended"]
    assert before.splitlines() == after.splitlines()[: len(before.splitlines())]  # comments kept
    assert "# S10 default; backups copied to eu-central-1 (derived)" in after
    assert load_fleet(fleet_dir).customers["lcfile-one"].lifecycle.state is LifecycleState.SUSPENDED
    assert [e["action"] for e in audit_entries(audit_log)] == ["lifecycle.suspend"]

    again = invoke("customer", "suspend", "lcfile-one", "--customers", str(fleet_dir))
    assert again.exit_code == 0 and json.loads(again.stdout)["changed"] is False
    assert path.read_text() == after

    resumed = invoke("customer", "resume", "lcfile-one", "--customers", str(fleet_dir))
    assert resumed.exit_code == 0, resumed.output
    assert "  state: active" in path.read_text().splitlines()
    assert path.read_text().count("lifecycle:") == 1
    assert len(audit_entries(audit_log)) == 2


def test_a_suspended_customers_plan_stops_both_instances_and_keeps_its_data(fleet_dir: Path):
    path = fleet_dir / "lcfile-one.yaml"
    customer = write_lifecycle(path, "lcfile-one", Lifecycle(state=LifecycleState.SUSPENDED))
    plan = plan_customer(customer)
    states = {r.name: r.inputs["state"] for r in plan.of_type(INSTANCE_STATE)}
    assert states == {"lcfile-one-power": "stopped", "lcfile-one-test-power": "stopped"}
    buckets = plan.of_type(BUCKET_TYPE)
    assert {b.inputs["bucket"] for b in buckets} == {
        *customer.backup_bucket_names,
        customer.access_log_bucket_name,
    }
    assert all(b.protect for b in buckets)
    volumes = plan.of_type("aws:ebs/volume:Volume")
    assert [v.name for v in volumes if v.protect] == ["lcfile-one-data"]  # production's data
    active = plan_customer(write_lifecycle(path, "lcfile-one", Lifecycle()))
    assert {r.inputs["state"] for r in active.of_type(INSTANCE_STATE)} == {"running"}
    assert len(active.resources) == len(plan.resources)  # stopped, not removed


# --- cancel (S18) ---------------------------------------------------------------------------------
def test_cancel_records_the_notice_and_the_dates_that_follow(fleet_dir: Path, audit_log: Path):
    path = fleet_dir / "lcfile-one.yaml"
    common = ("--customers", str(fleet_dir), "--today", "2026-11-23")
    future = invoke("customer", "cancel", "lcfile-one", "--notice-date", "2026-11-24", *common)
    assert future.exit_code == EXIT_BAD_INPUT
    assert "notice_date: 2026-11-24 is after today" in json.loads(future.stdout)["error"]
    garbage = invoke("customer", "cancel", "lcfile-one", "--notice-date", "23/11/2026", *common)
    assert garbage.exit_code == EXIT_BAD_INPUT and "--notice-date" in garbage.stdout
    assert "lifecycle" not in path.read_text()

    done = invoke("customer", "cancel", "lcfile-one", "--notice-date", "2026-11-20", *common)
    assert done.exit_code == 0, done.output
    report = json.loads(done.stdout)
    assert report["termination_date"] == "2026-12-20"  # 30 days' notice
    assert report["purge_allowed_from"] == "2027-02-18"  # then 60 days retained
    assert "notice_date: 2026-11-20  # S18: service ends 2026-12-20" in path.read_text()
    customer = load_fleet(fleet_dir).customers["lcfile-one"]
    assert customer.lifecycle == Lifecycle(
        state=LifecycleState.CANCELLED, notice_date=date(2026, 11, 20)
    )

    same = invoke("customer", "cancel", "lcfile-one", "--notice-date", "2026-11-20", *common)
    assert same.exit_code == 0 and json.loads(same.stdout)["changed"] is False
    other = invoke("customer", "cancel", "lcfile-one", "--notice-date", "2026-11-21", *common)
    assert other.exit_code == EXIT_BAD_INPUT and "cancelled already" in other.stdout
    for command in ("suspend", "resume"):
        refused = invoke("customer", command, "lcfile-one", "--customers", str(fleet_dir))
        assert refused.exit_code == EXIT_BAD_INPUT, command
        assert "lifecycle.state: is cancelled" in json.loads(refused.stdout)["error"]
    assert [e["action"] for e in audit_entries(audit_log)] == ["lifecycle.cancel"]


def test_the_block_is_replaced_in_place_or_appended_and_never_duplicated():
    text = "id: x\nlifecycle: {state: suspended}   # flow style\nbackup:\n  retention_days: 30\n"
    cancelled = Lifecycle(state=LifecycleState.CANCELLED, notice_date=date(2026, 11, 2))
    replaced = replace_block(text, cancelled)
    assert replaced.splitlines()[0] == "id: x"
    assert replaced.splitlines()[-2:] == ["backup:", "  retention_days: 30"]
    assert yaml.safe_load(replaced)["lifecycle"] == {
        "state": "cancelled",
        "notice_date": date(2026, 11, 2),
    }
    block = "lifecycle:\n  state: cancelled\n  # a comment inside\n\n  notice_date: 2026-11-02\n"
    nested = replace_block(f"id: x\n{block}# next section\nbackup: {{}}\n", Lifecycle())
    assert nested == "id: x\nlifecycle:\n  state: active\n# next section\nbackup: {}\n"
    appended = replace_block("id: x\n\n\n", Lifecycle())
    assert appended == "id: x\nlifecycle:\n  state: active\n"
    with pytest.raises(LifecycleRefused, match="more than once"):
        replace_block("lifecycle: {}\nlifecycle: {}\n", Lifecycle())


def test_an_edit_that_would_leave_an_invalid_file_writes_nothing(fleet_dir: Path):
    path = fleet_dir / "lcfile-one.yaml"
    path.write_text(path.read_text().replace("pos_terminals: 40", "pos_terminals: 4"))
    before = path.read_text()
    with pytest.raises(CustomerFileError) as refused:
        write_lifecycle(path, "lcfile-one", Lifecycle(state=LifecycleState.SUSPENDED))
    assert "licence: commerce requires at least 20 POS terminals (S17)" in str(refused.value)
    path.write_text(before + "lifecycle:\n  state: active\nlifecycle:\n  state: active\n")
    doubled = path.read_text()
    with pytest.raises(LifecycleRefused, match="appears more than once"):
        write_lifecycle(path, "lcfile-one", Lifecycle(state=LifecycleState.SUSPENDED))
    assert path.read_text() == doubled
    assert not [p for p in fleet_dir.iterdir() if p.name.startswith(".")]  # no temporary file


# --- the daily step's schedule (S18) --------------------------------------------------------------
def test_due_follows_notice_termination_retention_and_purge(sample_fleet: dict[str, Customer]):
    customer = sample_fleet["maison-dupont"]  # notice 2026-11-02
    end = customer.lifecycle.termination_date
    purge_from = customer.lifecycle.purge_allowed_from
    assert end is not None and purge_from is not None
    assert (end, purge_from) == (date(2026, 12, 2), date(2027, 1, 31))
    empty = CustomerRecord(customer=customer.id)
    at = datetime(2026, 12, 2, 6, tzinfo=UTC)
    terminated = CustomerRecord(customer=customer.id, events=[Event(at=at, action=TERMINATED)])
    purged = CustomerRecord(
        customer=customer.id,
        events=[*terminated.events, Event(at=at + timedelta(days=62), action=PURGED)],
    )
    day = timedelta(days=1)
    assert due_item(customer, empty, end - day).due is Due.NOTICE_RUNNING
    assert due_item(customer, empty, end).due is Due.TERMINATE
    assert due_item(customer, empty, purge_from + day).due is Due.TERMINATE  # missed: still due
    assert due_item(customer, terminated, end).due is Due.RETAINED
    assert due_item(customer, terminated, purge_from - day).due is Due.RETAINED
    allowed = due_item(customer, terminated, purge_from)
    assert allowed.due is Due.PURGE_ALLOWED
    assert "erpcloud customer purge maison-dupont --confirm maison-dupont" in allowed.message
    assert due_item(customer, purged, purge_from + day).due is Due.PURGED
    assert due_item(sample_fleet["acme-retail"], empty, end).due is Due.NOTHING


def test_due_on_aws_stops_through_the_stack_whose_plan_then_stops_the_instances(
    sample_fleet: dict[str, Customer],
):
    """S18 on AWS: `pulumi up` at the termination date is what stops the service (the program
    reads the date), so the printed commands and the program cannot disagree."""
    from stacks.spec import instance_state_for

    customer = sample_fleet["maison-dupont"]
    end = customer.lifecycle.termination_date
    assert end is not None
    action = AwsPlatform().stop_instances(customer, lambda _m: None)
    assert not action.ran and action.label is not None
    commands = action.commands
    assert commands[0] == "pulumi up --yes --stack maison-dupont"
    assert "instance-stopped" in commands[1] and f"--region {customer.region}" in commands[1]
    assert instance_state_for(customer, end - timedelta(days=1)) == "running"
    assert instance_state_for(customer, end) == "stopped"


def test_due_needs_a_reachable_host_for_the_final_backup(tmp_path: Path, audit_log: Path):
    result = invoke(
        "customer", "due", "--today", "2026-12-02", "--inventory", str(tmp_path / "none.yaml"),
        "--records", str(tmp_path / "records"), "--customers", str(CUSTOMERS),
    )  # fmt: skip
    assert result.exit_code == EXIT_FAILED
    report = json.loads(result.stdout)
    due = {item["customer"]: item["due"] for item in report["customers"]}
    assert due == {
        "acme-retail": "nothing",
        "lakeside-outfitters": "nothing",
        "maison-dupont": "terminate",
        "northwind-trading": "nothing",
    }
    assert "no inventory at" in report["errors"]["maison-dupont"]
    assert not (tmp_path / "records" / "records").exists()  # nothing recorded as done
    assert audit_entries(audit_log) == []


# --- purge (S18) ----------------------------------------------------------------------------------
def test_purge_rules_confirmation_ci_and_the_60_days(sample_fleet: dict[str, Customer]):
    customer = sample_fleet["maison-dupont"]
    end = customer.lifecycle.termination_date
    assert end is not None
    day_59, day_61 = end + timedelta(days=59), end + timedelta(days=61)
    with pytest.raises(PurgeRefused, match="purge is allowed from 2027-01-31") as refused:
        check_purge(customer, customer.id, day_59, in_ci=False, allow_ci=False)
    assert "60 days after termination on 2026-12-02 (S18)" in str(refused.value)
    assert "is day 59" in str(refused.value)
    check_purge(customer, customer.id, day_61, in_ci=False, allow_ci=False)
    with pytest.raises(PurgeRefused, match="--confirm: required"):
        check_purge(customer, None, day_61, in_ci=False, allow_ci=False)
    with pytest.raises(PurgeRefused, match="'acme-retail' is not the customer id"):
        check_purge(customer, "acme-retail", day_61, in_ci=False, allow_ci=False)
    with pytest.raises(PurgeRefused, match="does not run from CI"):
        check_purge(customer, customer.id, day_61, in_ci=True, allow_ci=False)
    check_purge(customer, customer.id, day_61, in_ci=True, allow_ci=True)
    with pytest.raises(PurgeRefused, match="is active; only a cancelled customer"):
        check_purge(sample_fleet["acme-retail"], "acme-retail", day_61, False, False)


def test_purge_on_aws_is_the_destroy_plan_clearly_not_run(tmp_path: Path, audit_log: Path):
    records = tmp_path / "records"
    args = ["customer", "purge", "maison-dupont", "--records", str(records)]
    args += ["--customers", str(CUSTOMERS)]
    early = invoke(*args, "--confirm", "maison-dupont", "--today", "2027-01-30")
    assert early.exit_code == EXIT_BAD_INPUT
    assert "allowed from 2027-01-31" in json.loads(early.stdout)["error"]
    in_ci = invoke(*args, "--confirm", "maison-dupont", "--today", "2027-02-01", env={"CI": "true"})
    assert in_ci.exit_code == EXIT_BAD_INPUT and "CI is set" in in_ci.stdout
    assert audit_entries(audit_log) == []  # refused before anything was recorded

    result = invoke(*args, "--confirm", "maison-dupont", "--today", "2027-02-01")
    assert result.exit_code == EXIT_WARNING, result.output
    report = json.loads(result.stdout)
    assert report["ran"] is False and report["mode"] == "aws-plan"
    assert report["label"].startswith("PLANNED, NOT RUN")
    plan = report["plan"]
    assert "OFFLINE PLAN" in plan["offline_plan"]
    data = {d["name"]: d for d in plan["data"]}
    assert data["maison-dupont-backup-primary"]["protect"] is True
    assert data["maison-dupont-backup-copy"]["region"] == "eu-central-1"
    assert data["maison-dupont-data"]["type"] == "ebs.Volume"
    assert "maison-dupont-backup-primary" in plan["protected"]
    commands = "\n".join(plan["commands"])
    for expected in (
        "pulumi state unprotect --all --yes --stack maison-dupont",
        "--no-disable-api-termination",
        "empty s3://erpcloud-maison-dupont-backup-eu-west-3",
        "pulumi destroy --yes --stack maison-dupont",
        "pulumi stack rm --yes maison-dupont",
    ):
        assert expected in commands
    assert commands.index("unprotect") < commands.index("pulumi destroy")
    entries = audit_entries(audit_log)
    assert [e["action"] for e in entries] == ["lifecycle.purge.start", "lifecycle.purge"]
    assert entries[1]["ran"] is False and entries[1]["customer"] == "maison-dupont"
    assert not (records / "records" / "maison-dupont.json").exists()  # nothing was purged


# --- S14: data-centre migration -------------------------------------------------------------------
def test_a_recovery_move_within_the_region_needs_no_migration_notice(
    tmp_path: Path, sample_fleet: dict[str, Customer]
):
    """S14 through the maintenance validation: restoring into another availability zone of the
    same region to recover is not held to the 30 days; any other migration is."""

    def check(to_region: str, for_recovery: bool) -> dict[str, str]:
        document = {
            "id": "2026-12-recovery-move",
            "kind": "emergency",
            "reason": "availability",
            "summary": "Production is restored from its backup in another availability zone.",
            "window": {"starts_at": "2026-12-03T14:00:00+00:00", "duration_minutes": 240},
            "expected_downtime_minutes": 180,
            "targets": {"customers": ["northwind-trading"], "environments": ["production"]},
            "steps": [
                {
                    "op": "migrate_data_centre",
                    "args": {"to_region": to_region, "for_recovery": for_recovery},
                }
            ],
            "announced_at": "2026-12-03T13:00:00+00:00",
        }
        path = tmp_path / f"{document['id']}.yaml"
        path.write_text(yaml.safe_dump(document))
        result = check_change(load_change(path), sample_fleet)
        return {e.field: e.rule for e in result.errors}

    region = sample_fleet["northwind-trading"].region
    # Allowed at once: announced an hour ahead, no S14 notice and no S12 24-hour notice.
    assert check(region, for_recovery=True) == {}
    elsewhere = check(policy.COPY_REGIONS[region], for_recovery=True)
    assert f"at least {policy.MIGRATION_NOTICE.days} days ahead (S14)" in elsewhere["steps[0]"]
    planned = check(region, for_recovery=False)
    assert "(S14)" in planned["steps[0]"]


def test_attachments_with_links_are_refused_before_anything_moves(tmp_path: Path):
    folder = tmp_path / "attachments"
    (folder / "2025").mkdir(parents=True)
    (folder / "2025" / "invoice.pdf").write_bytes(b"%PDF")
    check_attachments(folder)
    (folder / "latest.pdf").symlink_to(folder / "2025" / "invoice.pdf")
    with pytest.raises(MoveInRefused, match=r"latest\.pdf is a link or a special file"):
        check_attachments(folder)
    with pytest.raises(MoveInRefused, match="is not a folder"):
        check_attachments(folder / "2025" / "invoice.pdf")

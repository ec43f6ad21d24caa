"""Change files and their rules (S11-S14): every rule refused with the file, field and rule."""

from __future__ import annotations

import copy
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from erpcloud import policy
from erpcloud.model import Customer, Environment
from erpcloud.output import EXIT_BAD_INPUT, EXIT_WARNING
from frontdoor.cli import app
from maintenance.calendar import CalendarChange
from maintenance.change import CHANGES_DIR, change_files, load_change
from maintenance.errors import ChangeFileError
from maintenance.records import HostRecord, HostStatus, RunSettings, RunState, RunStatus, RunStore
from maintenance.rules import ChangeCheck, check_change

from .conftest import REPO_ROOT

runner = CliRunner()

BASE: dict[str, Any] = {
    "id": "2026-12-base",
    "kind": "standard",
    "reason": "Routine update",
    "summary": "A configuration file changes.",
    "window": {"date": "2026-12-21"},
    "expected_downtime_minutes": 10,
    "targets": {"all": True},
    "steps": [{"op": "noop"}],
    "announced_at": "2026-11-23T09:00:00+00:00",
}


def document(**changes: Any) -> dict[str, Any]:
    data = copy.deepcopy(BASE)
    data.update(changes)
    return data


def write(folder: Path, data: dict[str, Any]) -> Path:
    path = folder / f"{data['id']}.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def check(
    folder: Path,
    customers: dict[str, Customer],
    store: RunStore | None = None,
    calendar: list[CalendarChange] | None = None,
    **changes: Any,
) -> ChangeCheck:
    return check_change(
        load_change(write(folder, document(**changes))), customers, calendar or [], store
    )


def rules_of(result: ChangeCheck) -> dict[str, str]:
    return {e.field: e.rule for e in result.errors}


def test_the_sample_changes_are_valid():
    result = runner.invoke(app, ["maintenance", "check", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert {c["id"] for c in report["changes"]} == {
        p.stem for p in change_files(REPO_ROOT / CHANGES_DIR)
    }
    kinds = {c["kind"] for c in report["changes"]}
    assert kinds == {"standard", "emergency", "major"}


def test_a_valid_standard_change_resolves_each_regions_window(
    tmp_path: Path, sample_fleet: dict[str, Customer]
):
    result = check(tmp_path, sample_fleet)
    assert result.ok, result.errors
    assert {c.id for c in result.customers} == {
        "acme-retail",
        "lakeside-outfitters",
        "northwind-trading",
    }  # maison-dupont's service ends on 2026-12-02 (S18): nothing to maintain
    assert result.windows["eu-west-1"].starts_at == datetime(2026, 12, 21, 22, tzinfo=UTC)
    assert result.windows["us-east-1"].starts_at == datetime(2026, 12, 22, 3, tzinfo=UTC)


def test_schema_registry_and_target_errors_come_all_at_once(
    tmp_path: Path, sample_fleet: dict[str, Customer]
):
    data = document(
        kind="routine",
        colour="blue",
        steps=[
            {"op": "reboot_everything"},
            {"op": "write_file", "args": {"path": "etc/relative", "content": "x", "owner": "me"}},
            {"op": "postgres_setting", "args": {"name": "Work Mem"}},
        ],
    )
    del data["reason"]
    with pytest.raises(ChangeFileError) as error:
        load_change(write(tmp_path, data))
    found = {e.field: e.rule for e in error.value.errors}
    assert "kind" in found and found["reason"] == "is required"
    assert "is not a known field" in found["colour"]
    assert found["steps[0].op"].startswith("unknown operation 'reboot_everything' (known: ")
    assert "absolute path" in found["steps[1].args.path"]
    assert found["steps[1].args.owner"] == "is not an argument of write_file"
    assert found["steps[2].args.value"] == "is required by postgres_setting"
    assert "steps[2].args.name" in found
    assert all(e.file.endswith("2026-12-base.yaml") for e in error.value.errors)

    targets = check(
        tmp_path,
        sample_fleet,
        targets={"regions": ["ap-south-9"], "partners": ["nobody"], "customers": ["ghost"]},
    )
    assert {e.field for e in targets.structural} == {
        "targets.regions[0]",
        "targets.partners[0]",
        "targets.customers[0]",
    }
    assert "no partner 'nobody'" in rules_of(targets)["targets.partners[0]"]
    ended = check(tmp_path, sample_fleet, targets={"customers": ["maison-dupont"]})
    assert "S18" in rules_of(ended)["targets.customers[0]"]


def test_the_id_must_match_the_file_name(tmp_path: Path):
    path = tmp_path / "other-name.yaml"
    path.write_text(yaml.safe_dump(document()))
    with pytest.raises(ChangeFileError, match="must equal the file name 'other-name'"):
        load_change(path)


# --- S11 standard ---------------------------------------------------------------------------------
def test_standard_outside_a_calendar_window_is_refused(
    tmp_path: Path, sample_fleet: dict[str, Customer]
):
    not_a_window = check(tmp_path, sample_fleet, window={"date": "2026-12-14"})
    rule = rules_of(not_a_window)["window.date"]
    assert "is not a maintenance window" in rule and "(S11)" in rule
    assert "next window there is 2026-12-21 22:00" in rule

    early = check(
        tmp_path,
        sample_fleet,
        targets={"customers": ["northwind-trading"]},
        window={"starts_at": "2026-12-22T01:00:00+00:00", "duration_minutes": 30},
    )
    assert "outside the calendar window in us-east-1" in rules_of(early)["window"]
    inside = check(
        tmp_path,
        sample_fleet,
        targets={"customers": ["northwind-trading"]},
        window={"starts_at": "2026-12-22T03:15:00+00:00", "duration_minutes": 30},
    )
    assert inside.ok, inside.errors

    moved = CalendarChange.model_validate(
        {
            "id": "cal-2026-12",
            "action": "moved",
            "replaces": "2026-12-21",
            "date": "2026-12-14",
            "reason": "holidays",
            "announced_at": "2026-11-20T00:00:00+00:00",
        }
    )
    assert check(tmp_path, sample_fleet, calendar=[moved], window={"date": "2026-12-14"}).ok
    assert not check(tmp_path, sample_fleet, calendar=[moved]).ok  # the 21st is no window now


def test_standard_downtime_must_be_under_the_window(
    tmp_path: Path, sample_fleet: dict[str, Customer]
):
    minutes = int(policy.MAINTENANCE_WINDOW.total_seconds() // 60)
    result = check(tmp_path, sample_fleet, expected_downtime_minutes=minutes)
    rule = rules_of(result)["expected_downtime_minutes"]
    assert f"{minutes} min is not under the {minutes}-minute window" in rule and "S11" in rule
    longer = check(tmp_path, sample_fleet, window={"date": "2026-12-21", "duration_minutes": 90})
    assert (
        "longer than the 60-minute calendar window (S11)"
        in rules_of(longer)["window.duration_minutes"]
    )


# --- S12 emergency --------------------------------------------------------------------------------
def emergency(**changes: Any) -> dict[str, Any]:
    data = {
        "kind": "emergency",
        "reason": "security",
        "window": {"starts_at": "2026-12-03T14:00:00+00:00", "duration_minutes": 60},
        "expected_downtime_minutes": 10,
        "announced_at": "2026-12-02T10:00:00+00:00",  # 28 h ahead
    }
    data.update(changes)
    return data


def test_emergency_reason_must_be_one_of_the_four(
    tmp_path: Path, sample_fleet: dict[str, Customer]
):
    assert check(tmp_path, sample_fleet, **emergency()).ok
    result = check(tmp_path, sample_fleet, **emergency(reason="new dashboard colours"))
    rule = rules_of(result)["reason"]
    assert "availability, performance, security, stability" in rule and "(S12)" in rule


def test_emergency_that_interrupts_service_needs_24_hours_notice(
    tmp_path: Path, sample_fleet: dict[str, Customer]
):
    late = emergency(announced_at="2026-12-02T18:00:00+00:00")  # 20 h ahead
    result = check(tmp_path, sample_fleet, **late)
    rule = rules_of(result)["announced_at"]
    assert "announced 20.0 h ahead" in rule and "at least 24 h ahead (S12)" in rule
    no_interruption = check(tmp_path, sample_fleet, **{**late, "expected_downtime_minutes": 0})
    assert no_interruption.ok, no_interruption.errors


# --- S13 major ------------------------------------------------------------------------------------
def major(**changes: Any) -> dict[str, Any]:
    data = {
        "id": "2027-03-major",
        "kind": "major",
        "window": {"date": "2027-03-15"},
        "expected_downtime_minutes": 240,
        "announced_at": "2027-01-05T09:00:00+00:00",
        "targets": {"regions": ["us-east-1"]},
    }
    data.update(changes)
    return data


def record_run(store: RunStore, change_id: str, kind: str, year: int, **flags: Any) -> None:
    now = datetime(year, 3, 16, 3, tzinfo=UTC)
    host = HostRecord(
        name="h",
        customer="northwind-trading",
        environment=Environment.PRODUCTION,
        region="us-east-1",
        wave=1,
        status=HostStatus.DONE,
    )
    store.save(
        RunState(
            run_id=f"{change_id}-run",
            change_id=change_id,
            change_file=f"{change_id}.yaml",
            change_digest="0",
            kind=kind,
            window_year=year,
            created_at=now,
            updated_at=now,
            status=RunStatus.COMPLETED,
            settings=RunSettings(wave_size=1, concurrency=1, max_errors=0),
            waves=[],
            hosts={"h": host},
            **flags,
        )
    )


def test_major_changes_at_most_twice_per_calendar_year(
    tmp_path: Path, sample_fleet: dict[str, Customer]
):
    store = RunStore(tmp_path / "runs")
    record_run(store, "2027-01-major-a", "major", 2027)
    record_run(store, "2027-02-major-drill", "major", 2027, drill_reason="runner drill")
    record_run(store, "2026-09-major-old", "major", 2026)
    record_run(store, "2027-02-standard", "standard", 2027)
    assert check(tmp_path, sample_fleet, store, **major()).ok  # the second of 2027
    record_run(store, "2027-02-major-b", "major", 2027)
    result = check(tmp_path, sample_fleet, store, **major())
    rule = rules_of(result)["kind"]
    assert "would be major change number 3 in 2027" in rule
    assert (
        "2027-01-major-a, 2027-02-major-b" in rule and "at most 2 per calendar year (S13)" in rule
    )
    record_run(store, "2027-03-major", "major", 2027)  # its own earlier run does not count twice
    assert "number 3" in rules_of(check(tmp_path, sample_fleet, store, **major()))["kind"]


def test_major_change_notice_downtime_and_window(tmp_path: Path, sample_fleet: dict[str, Customer]):
    late = check(tmp_path, sample_fleet, **major(announced_at="2027-02-01T09:00:00+00:00"))
    rule = rules_of(late)["announced_at"]
    assert "at least 60 days ahead (S13)" in rule and "42.7 days ahead" in rule
    long = check(tmp_path, sample_fleet, **major(expected_downtime_minutes=25 * 60))
    assert (
        "more than the 24 h of downtime a major change may have (S13)"
        in rules_of(long)["expected_downtime_minutes"]
    )
    outside = check(
        tmp_path,
        sample_fleet,
        **major(window={"starts_at": "2027-03-20T02:00:00+00:00", "duration_minutes": 300}),
    )
    assert "does not begin in a scheduled window in us-east-1" in rules_of(outside)["window"]
    assert "(S13)" in rules_of(outside)["window"]


# --- S14 migration --------------------------------------------------------------------------------
def migration(to_region: str, for_recovery: bool, announced_at: str) -> dict[str, Any]:
    return major(
        kind="standard",
        window={"date": "2027-03-15"},
        expected_downtime_minutes=45,
        targets={"customers": ["northwind-trading"], "environments": ["production"]},
        steps=[
            {
                "op": "migrate_data_centre",
                "args": {"to_region": to_region, "for_recovery": for_recovery},
            }
        ],
        announced_at=announced_at,
    )


def test_migration_to_another_data_centre_needs_30_days_notice(
    tmp_path: Path, sample_fleet: dict[str, Customer]
):
    ten_days = "2027-03-06T09:00:00+00:00"
    result = check(tmp_path, sample_fleet, **migration("us-east-2", False, ten_days))
    rule = rules_of(result)["steps[0]"]
    assert "migrates northwind-trading from us-east-1 to us-east-2" in rule
    assert "at least 30 days ahead (S14)" in rule
    same_region_planned = check(tmp_path, sample_fleet, **migration("us-east-1", False, ten_days))
    assert "steps[0]" in rules_of(same_region_planned)
    recovery = check(tmp_path, sample_fleet, **migration("us-east-1", True, ten_days))
    assert recovery.ok, recovery.errors  # an availability-zone move to recover needs no notice
    in_time = check(
        tmp_path, sample_fleet, **migration("us-east-2", False, "2027-02-01T09:00:00+00:00")
    )
    assert in_time.ok, in_time.errors


def test_a_step_that_interrupts_service_needs_declared_downtime(
    tmp_path: Path, sample_fleet: dict[str, Customer]
):
    data = migration("us-east-1", True, "2027-01-05T09:00:00+00:00")
    data["expected_downtime_minutes"] = 0
    result = check(tmp_path, sample_fleet, **data)
    assert "interrupts service" in rules_of(result)["expected_downtime_minutes"]


# --- the command ----------------------------------------------------------------------------------
def test_check_command_lists_every_error_of_every_file_with_exit_2(tmp_path: Path):
    folder = tmp_path / "changes"
    folder.mkdir()
    write(folder, document(id="2026-12-late", expected_downtime_minutes=60))
    write(folder, document(id="2026-12-bad-op", steps=[{"op": "format_disk"}]))
    write(folder, document(id="2026-12-fine"))
    result = runner.invoke(app, ["maintenance", "check", "--changes", str(folder), "--json"])
    assert result.exit_code == EXIT_BAD_INPUT
    details = json.loads(result.stdout)["details"]
    assert len(details) == 2
    assert any("2026-12-late.yaml: expected_downtime_minutes: 60 min" in d for d in details)
    assert any(
        "2026-12-bad-op.yaml: steps[0].op: unknown operation 'format_disk'" in d for d in details
    )
    human = runner.invoke(app, ["maintenance", "check", "--changes", str(folder)])
    assert human.exit_code == EXIT_BAD_INPUT and "2 rule(s) broken" in human.output
    single = runner.invoke(
        app, ["maintenance", "check", str(folder / "2026-12-fine.yaml"), "--json"]
    )
    assert single.exit_code == 0, single.output
    assert json.loads(single.stdout)["changes"][0]["needs_notice"] is True


def test_due_lists_changes_whose_window_is_open(tmp_path: Path):
    runs = tmp_path / "runs"

    def due(at: str) -> dict[str, Any]:
        result = runner.invoke(
            app, ["maintenance", "due", "--at", at, "--runs", str(runs), "--json"]
        )
        assert result.exit_code == 0, result.output
        return dict(json.loads(result.stdout))

    dublin = due("2026-12-21T22:10:00+00:00")
    assert [(d["id"], d["open_regions"]) for d in dublin["due"]] == [
        ("2026-12-log-rotation", ["eu-west-1"])
    ]
    new_york = due("2026-12-22T03:10:00+00:00")
    assert [(d["id"], d["open_regions"]) for d in new_york["due"]] == [
        ("2026-12-log-rotation", ["us-east-1"])
    ]
    assert due("2026-12-22T12:00:00+00:00")["due"] == []
    record_run(RunStore(runs), "2026-12-log-rotation", "standard", 2026)
    assert due("2026-12-22T03:10:00+00:00")["due"] == []  # completed: nothing left to do
    paths = runner.invoke(
        app,
        ["maintenance", "due", "--at", "2026-12-03T14:10:00+00:00", "--paths", "--runs", str(runs)],
    )
    assert paths.stdout.split() == ["maintenance/changes/2026-12-emergency-db-tls.yaml"]

    folder = tmp_path / "changes"
    folder.mkdir()
    write(folder, document(id="2026-12-broken", kind="emergency", reason="whim"))
    broken = runner.invoke(
        app, ["maintenance", "due", "--changes", str(folder), "--at", "2026-12-22T03:10:00+00:00"]
    )
    assert broken.exit_code == EXIT_WARNING and "S12" in broken.output

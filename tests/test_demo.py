"""`make demo` end to end (it runs `erpcloud demo`): every step against the real components,
restore drills from the copy region included (S8), and nothing left running afterwards."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from localtarget import machines
from localtarget.demo import STEPS, DemoContext, run_steps

from .conftest import CUSTOMERS

ERPCLOUD = str(Path(sys.executable).parent / "erpcloud")
TAG = f"{os.getpid() % 10000}"


def demo_fleet(directory: Path) -> str:
    """The sample fleet with acme-retail under a unique id: never clashes with a running demo."""
    directory.mkdir(parents=True)
    for path in CUSTOMERS.glob("*.yaml"):
        if path.stem != "acme-retail":
            (directory / path.name).write_text(path.read_text())
    document = yaml.safe_load((CUSTOMERS / "acme-retail.yaml").read_text())
    document["id"], document["prefix"] = f"demo-{TAG}", f"demo{TAG}"
    for index, user in enumerate(document["ssh"]["users"]):
        user["name"] = f"dm{TAG}u{index}"  # accounts on the shared user table: unique
    (directory / f"{document['id']}.yaml").write_text(yaml.safe_dump(document, sort_keys=False))
    return str(document["id"])


@pytest.mark.services
def test_the_demo_runs_every_step_and_leaves_nothing_running(tmp_path: Path):
    customers, build = tmp_path / "customers", tmp_path / "build"
    customer_id = demo_fleet(customers)
    result = subprocess.run(
        [ERPCLOUD, "demo", "--customer", customer_id, "--customers", str(customers),
         "--out", str(build), "--json"],
        capture_output=True, text=True, check=False, timeout=900,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    document = json.loads(result.stdout)
    assert document["ok"] is True
    assert [s["name"] for s in document["steps"]] == [name for name, _ in STEPS]
    assert all(s["ok"] for s in document["steps"])

    # Three drills from the copy region, each with its report on disk: one proves equality with
    # production at its restore point, one reaches a point in time, the last measures the RPO
    # of a regional loss now (S8 promises 1 h).
    drills = Path(document["facts"]["drill reports"])
    reports = [json.loads(p.read_text()) for p in sorted(drills.glob("*/report.json"))]
    assert sorted(r["mode"] for r in reports) == ["latest", "point", "time"]
    for report in reports:
        assert report["status"] == "passed" and report["repo"]["index"] == 2
        assert report["measures"]["rpo_seconds"] <= report["measures"]["rpo_limit_seconds"]
        assert (drills / report["drill_id"] / "report.md").exists()
        assert report["drill_host"]["torn_down"] is True
    # At once: each drill started before any other finished (a drill machine each).
    assert max(r["started_at"] for r in reports) < min(r["finished_at"] for r in reports)
    (point,) = [r for r in reports if r["mode"] == "point"]
    equal = {c["name"]: c["status"] for c in point["checks"]}["equal to production"]
    assert equal == "passed"
    assert Path(document["facts"]["maintenance report"]).is_dir()

    # Torn down: no machine of the demo runs, its folder is gone, and the progress said so.
    assert not machines.machines_root(customer_id).exists()
    running = subprocess.run(["pgrep", "-f", "--", f"--machine=demo{TAG}"], check=False)
    assert running.returncode == 1
    assert "teardown: stopped" in result.stderr


def test_a_failed_step_stops_the_demo_and_names_the_error(tmp_path: Path):
    ran: list[str] = []

    def works(context: DemoContext) -> str:
        ran.append("works")
        return "fine"

    def breaks(context: DemoContext) -> str:
        raise RuntimeError("the emulator is not answering")

    def never(context: DemoContext) -> str:
        ran.append("never")
        return "should not run"

    context = DemoContext(customers_dir=CUSTOMERS, build_dir=tmp_path, customer_id="acme-retail")
    results = run_steps(context, [("one", works), ("two", breaks), ("three", never)])
    assert [r.ok for r in results] == [True, False]
    assert results[1].detail == "RuntimeError: the emulator is not answering"
    assert ran == ["works"]


def test_teardown_stops_nothing_when_nothing_was_started(tmp_path: Path):
    from localtarget.demo import teardown

    context = DemoContext(customers_dir=CUSTOMERS, build_dir=tmp_path, customer_id="acme-retail")
    assert teardown(context) == "nothing was started"

"""The Fabric tasks themselves, run as CI runs them (`fab maintenance.*`), against real machines.

Each call starts the real ``fab`` program on the repository's root fabfile. The hosts are three
machines booted once for the module from the product image (:mod:`localtarget.fleet`: host keys
pinned from the console, the operations login), one canary and two production; each test's
inventory gives them a ``host_root`` of the test's own. The changes are emergency work whose
window is open now (the tasks use the real clock), so no override is needed.
"""

from __future__ import annotations

import inspect
import json
import os
import re
import shlex
import subprocess
import sys
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import typer
import yaml

from erpcloud.fleet import load_fleet
from erpcloud.model import Environment
from erpcloud.output import EXIT_BAD_INPUT, EXIT_FAILED
from frontdoor.cli import app
from localtarget.fleet import Fleet, boot_fleet, write_inventory
from maintenance import tasks
from maintenance.runner import utc_now

from .conftest import CUSTOMERS, REPO_ROOT

pytestmark = pytest.mark.timeout(900)

FAB = str(Path(sys.executable).parent / "fab")
WORKFLOW = REPO_ROOT / ".github" / "workflows" / "maintenance.yml"


def fab(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [FAB, *args],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
        env={**os.environ, **(env or {})},
    )


#: The hosts of every test's inventory: the machine, and the customer environment it serves.
LAYOUT = (
    ("test", "northwind-trading", Environment.TEST),
    ("prod-a", "lakeside-outfitters", Environment.PRODUCTION),
    ("prod-b", "northwind-trading", Environment.PRODUCTION),
)


@pytest.fixture(scope="module")
def fleet() -> Iterator[Fleet]:
    release = load_fleet(CUSTOMERS).customers["northwind-trading"].product_version
    booted = boot_fleet([name for name, _, _ in LAYOUT], release)
    try:
        yield booted
    finally:
        booted.teardown()


def root_of(workspace: Path) -> str:
    """The test's own ``host_root`` on every machine."""
    return f"/srv/maintenance-fab/{workspace.name}"


@pytest.fixture
def workspace(tmp_path: Path, fleet: Fleet) -> Path:
    """An inventory of the three machines (one canary, two production), each under its own root."""
    hosts = []
    for name, customer, environment in LAYOUT:
        fleet.as_root(name, f"mkdir -p {root_of(tmp_path)}")
        hosts.append(fleet.host(name, customer, environment, host_root=root_of(tmp_path)))
    write_inventory(tmp_path / "inventory.yaml", hosts, fleet.key_file)
    (tmp_path / "changes").mkdir()
    return tmp_path


def common(workspace: Path) -> list[str]:
    return [
        f"--inventory={workspace / 'inventory.yaml'}",
        f"--customers={CUSTOMERS}",
        f"--changes={workspace / 'changes'}",
        f"--runs={workspace / 'runs'}",
    ]


def emergency(workspace: Path, change_id: str, steps: list[dict[str, Any]]) -> Path:
    now = utc_now()
    path = workspace / "changes" / f"{change_id}.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "id": change_id,
                "kind": "emergency",
                "reason": "stability",
                "summary": "A configuration fix.",
                "window": {
                    "starts_at": (now - timedelta(minutes=5)).isoformat(),
                    "duration_minutes": 60,
                },
                "expected_downtime_minutes": 0,
                "targets": {"customers": ["lakeside-outfitters", "northwind-trading"]},
                "steps": steps,
                "announced_at": (now - timedelta(hours=2)).isoformat(),
            }
        )
    )
    return path


def test_fab_lists_the_maintenance_tasks():
    result = fab("--list")
    assert result.returncode == 0, result.stderr
    assert "maintenance.apply" in result.stdout and "maintenance.plan" in result.stdout


def test_fab_plan_shows_canaries_first(workspace: Path):
    result = fab("maintenance.plan", *common(workspace), "--wave-size=1", "--json")
    assert result.returncode == 0, result.stderr
    plan = json.loads(result.stdout)
    assert [(w["label"], w["hosts"]) for w in plan["waves"]] == [
        ("canary", ["northwind-trading-test"]),
        ("production", ["lakeside-outfitters-production"]),
        ("production", ["northwind-trading-production"]),
    ]
    human = fab(
        "maintenance.plan",
        f"--customers={CUSTOMERS}",
        "--wave-percent=50",
        "--change=2027-03-us-east-hardware-refresh",
        env={"FABRIC_MAINTENANCE_INVENTORY": str(workspace / "inventory.yaml")},
    )  # the inventory from Fabric's configuration (environment), the change from the repository
    assert human.returncode == 0, human.stderr
    assert "2 host(s) in 2 wave(s); wave size 1" in human.stdout  # us-east-1 production, 50 %
    assert "northwind-trading-production  northwind-trading production" in human.stdout
    assert "window 2027-03-16 02:00 UTC" in human.stdout
    bad = fab("maintenance.plan", *common(workspace), "--wave-size=0")
    assert bad.returncode == EXIT_BAD_INPUT and "--wave-size must be at least 1" in bad.stderr


def test_fab_apply_halts_on_a_failure_and_resumes(workspace: Path, fleet: Fleet):
    root = root_of(workspace)
    fleet.write("prod-a", f"{root}/etc/erp", "a file where a folder belongs\n")
    change = emergency(
        workspace,
        "emergency-fab-conf",
        [{"op": "write_file", "args": {"path": "/etc/erp/fix.conf", "content": "fixed\n"}}],
    )
    args = [str(change), *common(workspace), "--wave-size=1", "--concurrency=1", "--max-errors=0"]

    halted = fab("maintenance.apply", *args, "--json")
    assert halted.returncode == EXIT_FAILED, halted.stderr
    report = json.loads(halted.stdout)
    assert report["status"] == "halted" and not report["ok"]
    statuses = {h["name"]: h["status"] for h in report["hosts"]}
    assert statuses == {
        "northwind-trading-test": "done",
        "lakeside-outfitters-production": "failed",
        "northwind-trading-production": "untouched",
    }
    assert "wave 1/3 (canary): 1 host(s)" in halted.stderr  # progress, per wave and per host
    assert re.search(r"\[2/3\] lakeside-outfitters-production: FAILED", halted.stderr)
    assert fleet.read("test", f"{root}/etc/erp/fix.conf") == "fixed\n"
    assert not fleet.exists("prod-b", f"{root}/etc/erp/fix.conf")

    fleet.remove("prod-a", f"{root}/etc/erp")  # fixed on the host
    resumed = fab("maintenance.apply", *args, f"--resume={report['run_id']}")
    assert resumed.returncode == 0, resumed.stderr + resumed.stdout
    assert "completed: 3 done" in resumed.stdout
    for name, _, _ in LAYOUT:
        assert fleet.read(name, f"{root}/etc/erp/fix.conf") == "fixed\n"
    final = json.loads((workspace / "runs" / report["run_id"] / "report.json").read_text())
    attempts = {h["name"]: h["attempts"] for h in final["hosts"]}
    assert attempts == {
        "northwind-trading-test": 1,  # not redone
        "lakeside-outfitters-production": 2,
        "northwind-trading-production": 1,
    }
    key_text = Path(str(yaml.safe_load((workspace / "inventory.yaml").read_text())["ssh_key_file"]))
    private = key_text.read_text().strip().splitlines()[1]
    for path in (workspace / "runs").rglob("*"):
        if path.is_file():
            assert private not in path.read_text()  # the runner's key never lands in records
    assert private not in halted.stdout + halted.stderr + resumed.stdout + resumed.stderr


def test_fab_apply_refuses_bad_input_and_closed_windows(workspace: Path):
    unknown_step = emergency(workspace, "emergency-bad-step", [{"op": "rm_rf"}])
    bad = fab("maintenance.apply", str(unknown_step), *common(workspace))
    assert bad.returncode == EXIT_BAD_INPUT
    assert "steps[0].op: unknown operation 'rm_rf'" in bad.stderr

    standard = fab("maintenance.apply", "2026-12-log-rotation", *common(workspace)[:2], "--json")
    assert standard.returncode in (EXIT_FAILED, EXIT_BAD_INPUT)  # not now, and no notices
    refusal = json.loads(standard.stdout)
    assert not refusal["ok"] and refusal["error"] == "2026-12-log-rotation may not run now"
    assert any("no notices rendered" in d for d in refusal["details"])
    assert not (workspace / "runs").exists()

    dry = fab(
        "maintenance.apply",
        str(emergency(workspace, "emergency-dry", [{"op": "noop"}, {"op": "health_check"}])),
        *common(workspace),
        "--dry-run",
    )
    assert dry.returncode == 0, dry.stderr
    assert "dry-run: 0 done" in dry.stdout and "3 checked" in dry.stdout


# --- the CI example ---------------------------------------------------------------------------
#: A call of our tools in a shell script: the program, then words up to a shell operator.
CALL = re.compile(r"""\.venv/bin/(fab|erpcloud)((?:[ \t]+(?:"[^"]*"|'[^']*'|[^\s;|&>)"']+))*)""")


def workflow_commands() -> list[list[str]]:
    document = yaml.safe_load(WORKFLOW.read_text())
    commands = []
    for job in document["jobs"].values():
        for step in job["steps"]:
            script = step.get("run", "").replace("\\\n", " ")
            for match in CALL.finditer(script):
                commands.append([match[1], *shlex.split(match[2])])
    return commands


def test_ci_workflow_runs_the_tasks_and_commands_that_exist() -> None:
    document = yaml.safe_load(WORKFLOW.read_text())
    triggers = document.get("on", document.get(True))
    assert {"push", "schedule", "workflow_dispatch"} <= set(triggers)
    assert document["concurrency"]["cancel-in-progress"] is False
    commands = workflow_commands()
    fab_calls = [c for c in commands if c[0] == "fab"]
    assert fab_calls and all(c[1] == "maintenance.apply" for c in fab_calls)
    apply_options = {
        f"--{name.replace('_', '-')}"
        for name in inspect.signature(tasks.apply.body).parameters
        if name != "c"
    }
    array_flags = re.findall(r"flags\+=\(([^)]*)\)", WORKFLOW.read_text())
    assert array_flags  # --dry-run and --resume are passed through a bash array
    for words in [*fab_calls, *(shlex.split(a) for a in array_flags)]:
        for word in words:
            if word.startswith("--"):
                assert word.split("=")[0] in apply_options, word
    group: Any = typer.main.get_command(app)  # typer's own (vendored) click group
    maintenance = group.commands["maintenance"]
    for call in (c for c in commands if c[0] == "erpcloud" and c[1] == "maintenance"):
        command = maintenance.commands[call[2]]
        known = {opt for param in command.params for opt in param.opts}
        for word in call[3:]:
            if word.startswith("--"):
                assert word.split("=")[0] in known, (call, word)
    assert any(c[1:3] == ["maintenance", "due"] for c in commands)
    assert any(c[1:3] == ["maintenance", "notices"] for c in commands)

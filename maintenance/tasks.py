"""Fabric tasks for maintenance: ``fab maintenance.plan`` and ``fab maintenance.apply``.

Thin on purpose: parse the arguments, call the plain functions of :mod:`maintenance`, print.
The tasks open no connection themselves: the runner connects to each host through
:func:`erpcloud.ssh.connect` (pinned host keys, ``RejectPolicy``), never through Fabric's
defaults, which accept any host key.

Defaults come from the collection's configuration (``maintenance.*`` in the root fabfile),
which Fabric lets a ``fabric.yaml`` or ``FABRIC_MAINTENANCE_<KEY>`` environment variables change.
"""

from __future__ import annotations

import json as jsonlib
import sys
from pathlib import Path
from typing import Any

from invoke import Context, task
from invoke.exceptions import Exit

from erpcloud.output import EXIT_BAD_INPUT, task_refusal, to_jsonable
from maintenance.planner import PlanError, plan_waves, select_hosts
from maintenance.records import RunStore
from maintenance.reports import report_document
from maintenance.runner import RunInputs, RunOptions, RunRefused, apply_change, run_exit_code
from maintenance.workspace import (
    InputError,
    Paths,
    load_check,
    load_customers,
    load_inventory_for,
)

#: The collection's configuration defaults (the root fabfile installs them).
CONFIG: dict[str, Any] = {
    "maintenance": {
        "customers": "customers",
        "changes": "maintenance/changes",
        "calendar": "maintenance/calendar.yaml",
        "inventory": "build/inventory.yaml",
        "runs": "build/maintenance/runs",
        "notices": "build/maintenance/notices",
    }
}

PATH_HELP = {
    "inventory": "Inventory file (default: config erpcloud.inventory).",
    "customers": "Folder of customer files.",
    "runs": "Folder of run records and reports.",
    "notices": "Folder of rendered notices.",
    "calendar": "Calendar changes file.",
    "changes": "Folder of change files.",
}
WAVE_HELP = {
    "wave-size": "Production hosts per wave (default from erpcloud.policy).",
    "wave-percent": "Production hosts per wave as a percentage of them, instead of --wave-size.",
    "concurrency": "Hosts worked on at once within a wave.",
    "max-errors": "Failed hosts tolerated before no new host starts (the error budget).",
    "json": "Print JSON (for CI) on stdout; progress goes to stderr.",
}


def _paths(c: Context, **given: str | None) -> Paths:
    configured = c.config.get("maintenance", {})
    chosen = {
        key: Path(given.get(key) or configured.get(key) or default)
        for key, default in CONFIG["maintenance"].items()
    }
    return Paths(**chosen)


def _number(value: str | None, flag: str, kind: type[int] | type[float] = int) -> Any:
    if value is None:
        return None
    try:
        return kind(value)
    except ValueError:
        raise Exit(f"error: {flag}: {value!r} is not a number", code=EXIT_BAD_INPUT) from None


@task(
    auto_shortflags=False,
    help={
        "change": "Only the hosts this change targets (path or id); all hosts when left out.",
        **{k: v for k, v in PATH_HELP.items() if k != "notices"},
        **WAVE_HELP,
    },
)
def plan(
    c: Context,
    change: str | None = None,
    inventory: str | None = None,
    customers: str | None = None,
    changes: str | None = None,
    calendar: str | None = None,
    runs: str | None = None,
    wave_size: str | None = None,
    wave_percent: str | None = None,
    concurrency: str | None = None,
    max_errors: str | None = None,
    json: bool = False,
) -> None:
    """Show the hosts in waves: test environments first (canaries), then production."""
    paths = _paths(
        c, inventory=inventory, customers=customers, changes=changes, calendar=calendar, runs=runs
    )
    try:
        fleet = load_customers(paths)
        hosts_file = load_inventory_for(paths, fleet)
        check = load_check(change, paths, fleet) if change else None
        if check is not None and check.structural:
            raise InputError(f"{change} cannot be planned", [str(e) for e in check.structural])
        hosts = (
            select_hosts(hosts_file, check.customers, check.loaded.change.targets.environments)
            if check is not None
            else list(hosts_file.hosts)
        )
        waves = plan_waves(
            hosts,
            fleet,
            wave_size=_number(wave_size, "--wave-size"),
            wave_percent=_number(wave_percent, "--wave-percent", float),
            concurrency=_number(concurrency, "--concurrency"),
            max_errors=_number(max_errors, "--max-errors"),
        )
    except InputError as exc:
        raise task_refusal(exc.message, json, details=exc.details) from None
    except PlanError as exc:
        raise task_refusal(str(exc), json) from None
    summary: dict[str, Any] = {"ok": True, "change": check.loaded.id if check else None}
    summary.update(waves.summary())
    windows: dict[str, Any] = {}
    if check is not None:
        for host in hosts:
            window = check.window_for(fleet[host.customer])
            if window is not None:
                windows[host.name] = {"starts_at": window.starts_at, "ends_at": window.ends_at}
        summary["windows"] = windows
        summary["rule_errors"] = [str(e) for e in check.rules]
    if json:
        sys.stdout.write(jsonlib.dumps(to_jsonable(summary), indent=2) + "\n")
        return
    print(
        f"{waves.host_count} host(s) in {len(waves.waves)} wave(s); wave size "
        f"{waves.wave_size}, concurrency {waves.concurrency}, max_errors {waves.max_errors}"
    )
    by_name = {h.name: h for h in hosts}
    for wave in waves.waves:
        print(f"wave {wave.index} ({wave.label}):")
        for name in wave.hosts:
            host = by_name[name]
            when = windows.get(name)
            shown = f"  window {when['starts_at']:%Y-%m-%d %H:%M} UTC" if when else ""
            print(f"  {name}  {host.customer} {host.environment.value}{shown}")
    if check is not None and check.rules:
        print(f"note: {check.loaded.id} fails validation; apply will refuse it:")
        for error in check.rules:
            print(f"  {error}")


@task(
    auto_shortflags=False,
    help={
        "change": "The change file (path, or id in the changes folder).",
        "dry-run": "Connect and check, change nothing: pre-checks and what each step would do.",
        "resume": "Resume this run id (or 'latest': the change's run waiting for a window).",
        "drill": "REASON: override the gates (validation, announcement, notices, window) to "
        "drill the runner itself; logged and reported.",
        **PATH_HELP,
        **WAVE_HELP,
    },
)
def apply(
    c: Context,
    change: str,
    dry_run: bool = False,
    resume: str | None = None,
    drill: str | None = None,
    inventory: str | None = None,
    customers: str | None = None,
    changes: str | None = None,
    calendar: str | None = None,
    runs: str | None = None,
    notices: str | None = None,
    wave_size: str | None = None,
    wave_percent: str | None = None,
    concurrency: str | None = None,
    max_errors: str | None = None,
    json: bool = False,
) -> None:
    """Apply a change to its hosts in waves, with checks, rollback, error budget and a report."""
    paths = _paths(
        c,
        inventory=inventory,
        customers=customers,
        changes=changes,
        calendar=calendar,
        runs=runs,
        notices=notices,
    )
    stream = sys.stderr if json else sys.stdout

    def progress(line: str) -> None:
        print(line, file=stream, flush=True)

    options = RunOptions(
        dry_run=dry_run,
        drill_reason=drill,
        resume=resume,
        wave_size=_number(wave_size, "--wave-size"),
        wave_percent=_number(wave_percent, "--wave-percent", float),
        concurrency=_number(concurrency, "--concurrency"),
        max_errors=_number(max_errors, "--max-errors"),
    )
    try:
        fleet = load_customers(paths)
        check = load_check(change, paths, fleet)
        inputs = RunInputs(
            check=check,
            inventory=load_inventory_for(paths, fleet),
            customers=fleet,
            store=RunStore(paths.runs),
            notices_dir=paths.notices,
            progress=progress,
        )
        state = apply_change(inputs, options)
    except InputError as exc:
        raise task_refusal(exc.message, json, details=exc.details) from None
    except PlanError as exc:
        raise task_refusal(str(exc), json) from None
    except RunRefused as exc:
        raise task_refusal(exc.message, json, exc.code, exc.details) from None
    if json:
        sys.stdout.write(jsonlib.dumps(report_document(state), indent=2) + "\n")
    code = run_exit_code(state)
    if code:
        raise Exit(code=code)

"""Fabric tasks that touch a customer's host: ``fab lifecycle.import`` and ``fab lifecycle.export``.

Thin on purpose: parse the arguments, find the customer's host (:func:`lifecycle.site.resolve_site`:
its local machines, or an inventory with pinned host keys), call :func:`lifecycle.movein.move_in`
or :func:`lifecycle.export.export_customer`, print a summary or JSON (``--json``; progress then
goes to stderr). Every connection goes through :func:`erpcloud.ssh.connect` (pinned keys,
``RejectPolicy``), never Fabric's defaults. Exit codes: 0 done, 1 failed, 2 refused input.
"""

from __future__ import annotations

import json as jsonlib
import sys
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any, TypeVar

from invoke import Context, task
from invoke.exceptions import Exit

from erpcloud.fleet import load_fleet
from erpcloud.output import EXIT_BAD_INPUT, EXIT_FAILED, task_refusal, to_jsonable
from erpcloud.ssh import HostKeyError
from lifecycle.dump import DumpError, MoveInRefused
from lifecycle.export import ExportFailed, export_customer
from lifecycle.movein import MoveInFailed, move_in
from lifecycle.remote import RemoteError
from lifecycle.site import Site, SiteError, resolve_site

#: The collection's configuration defaults (``lifecycle.*``; a fabric.yaml may change them).
CONFIG: dict[str, Any] = {"lifecycle": {"customers": "customers", "records": "build/lifecycle"}}
COMMON_HELP = {
    "customer": "Customer id (the file's stem).",
    "inventory": "Inventory of the hosts (default: the customer's local machines, else "
    "build/inventory.yaml).",
    "customers": "Folder of customer files (default: config lifecycle.customers).",
    "json": "Print JSON on stdout; progress goes to stderr.",
}


#: What stops a task, and with which exit code: refused input (2) or a failure (1).
class TaskInput(ValueError):
    """Bad arguments or customer files: exit 2."""


REFUSED = (TaskInput, DumpError, MoveInRefused)
T = TypeVar("T")
FAILED = (SiteError, MoveInFailed, ExportFailed, RemoteError, HostKeyError, OSError)


def _site(c: Context, customer_id: str, inventory: str | None, customers: str | None) -> Site:
    settings = c.config.get("lifecycle", {})
    fleet = load_fleet(Path(customers or settings.get("customers", "customers")))
    if fleet.errors:
        raise TaskInput("; ".join(str(e) for e in fleet.errors))
    if customer_id not in fleet.customers:
        known = ", ".join(sorted(fleet.customers))
        raise TaskInput(f"no customer {customer_id!r} (known: {known})")
    work_dir = Path(settings.get("records", "build/lifecycle"))
    inventory_path = Path(inventory) if inventory else None
    return resolve_site(fleet.customers[customer_id], fleet.customers, inventory_path, work_dir)


def _attempt(what: str, customer: str, as_json: bool, work: Callable[[], T]) -> T:
    """``work()``, or exit 2 (refused) or 1 (failed) with the reason."""
    try:
        return work()
    except REFUSED as exc:
        raise task_refusal(f"{customer}: {what} refused: {exc}", as_json, EXIT_BAD_INPUT) from None
    except FAILED as exc:
        raise task_refusal(f"{customer}: {what} failed: {exc}", as_json, EXIT_FAILED) from None


def _say(as_json: bool) -> Any:
    stream = sys.stderr if as_json else sys.stdout
    return lambda line: print(line, file=stream, flush=True)


def _report(data: dict[str, Any], as_json: bool, lines: list[str]) -> None:
    if as_json:
        sys.stdout.write(jsonlib.dumps(to_jsonable(data), indent=2) + "\n")
    else:
        print("\n".join(lines))


@task(
    name="import",
    auto_shortflags=False,
    help={
        **COMMON_HELP,
        "dump": "The on-premises database: a pg_dump custom-format file (S19).",
        "attachments": "Folder of the on-premises attachments.",
    },
)
def import_(
    c: Context,
    customer: str,
    dump: str,
    attachments: str | None = None,
    inventory: str | None = None,
    customers: str | None = None,
    json: bool = False,
) -> None:
    """Move in (S19): load an on-premises dump and attachments; verify; back up to both regions."""
    files = Path(attachments) if attachments else None
    report = _attempt(
        "move-in",
        customer,
        json,
        lambda: move_in(_site(c, customer, inventory, customers), Path(dump), files, _say(json)),
    )
    _report(
        {**asdict(report), "ok": report.ok},
        json,
        [
            f"moved in: {report.product_version} {report.edition}, {len(report.tables)} tables, "
            f"{sum(report.tables.values())} rows verified, {report.attachments} attachment(s)",
            f"previous database kept as: {report.previous_database or '-'}",
            f"full backups: {report.backups}"
            + (f"; FAILED: {report.backup_errors}" if report.backup_errors else ""),
        ],
    )
    if not report.ok:
        raise Exit(code=EXIT_FAILED)


@task(
    auto_shortflags=False,
    help={**COMMON_HELP, "out": "Folder the export goes into (a new <customer>-<time> folder)."},
)
def export(
    c: Context,
    customer: str,
    out: str,
    inventory: str | None = None,
    customers: str | None = None,
    json: bool = False,
) -> None:
    """Export (S18): database, attachments and source, with a manifest of sizes and SHA-256."""
    report = _attempt(
        "export",
        customer,
        json,
        lambda: export_customer(_site(c, customer, inventory, customers), Path(out), _say(json)),
    )
    _report(
        {"ok": True, **asdict(report)},
        json,
        [f"exported to {report.directory}"]
        + [f"  {f.name}: {f.bytes} bytes, sha256 {f.sha256}" for f in report.files],
    )

"""``erpcloud customer suspend|resume|cancel|due|purge`` and ``erpcloud inventory``.

Thin wrappers over :mod:`lifecycle`: parse, call one plain function, print a summary or JSON.
:func:`add_customer_commands` adds the customer commands to the ``customer`` sub-app of
:mod:`frontdoor.cli`; :func:`inventory_command` is the top-level ``inventory``. Exit codes: 0 ok,
1 failed, 2 refused (the field and rule named), 3 a plan only (nothing was run here).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Annotated, Any

import typer
import yaml
from rich.table import Table

from erpcloud.audit import audit
from erpcloud.cli_common import (
    CustomersDir,
    JsonFlag,
    load_fleet_going_on,
    load_valid_customer,
    load_valid_fleet,
)
from erpcloud.files import write_atomic
from erpcloud.fleet import CUSTOMERS_DIR, CustomerFileError
from erpcloud.inventory import parse_inventory
from erpcloud.model import Customer, Lifecycle
from erpcloud.output import (
    EXIT_BAD_INPUT,
    EXIT_FAILED,
    EXIT_WARNING,
    console,
    emit,
    err_console,
    fail,
)
from erpcloud.ssh import HostKeyError
from lifecycle.customerfile import (
    LifecycleRefused,
    Transition,
    cancel,
    resume,
    suspend,
    write_lifecycle,
)
from lifecycle.due import Due, TerminationFailed, due_item, terminate
from lifecycle.inventory import (
    DEFAULT_SSH_KEY_FILE,
    KNOWN_HOSTS_FILE,
    STACK_OUTPUTS_DIR,
    InventoryError,
    InventoryRow,
    inventory_rows,
    maintenance_document,
)
from lifecycle.platform import platform_for
from lifecycle.purge import PurgeRefused, check_purge, purge
from lifecycle.records import LIFECYCLE_DIR_ENV, load_record
from lifecycle.remote import RemoteError
from lifecycle.site import SiteError, resolve_site
from maintenance.errors import ChangeFileError

CustomerArg = Annotated[str, typer.Argument(help="Customer id (the file's stem).")]
TodayOption = Annotated[
    str | None,
    typer.Option("--today", help="Today's date, YYYY-MM-DD (default: today in UTC)."),
]
RecordsDir = Annotated[
    Path,
    typer.Option(
        "--records",
        envvar=LIFECYCLE_DIR_ENV,
        help="Folder of lifecycle records (what was terminated and purged).",
        file_okay=False,
    ),
]
InventoryFile = Annotated[
    Path | None,
    typer.Option(
        "--inventory",
        help="Inventory of the hosts (default: the customer's local machines, else "
        "build/inventory.yaml).",
        dir_okay=False,
    ),
]
DEFAULT_RECORDS = Path("build/lifecycle")
#: Values of ``CI`` that do not mean "running in CI".
NOT_CI = frozenset({"", "0", "false", "no"})


def _today(value: str | None, as_json: bool) -> date:
    if value is None:
        return datetime.now(UTC).date()
    try:
        return date.fromisoformat(value)
    except ValueError:
        fail(f"--today: {value!r} is not a date YYYY-MM-DD", as_json, EXIT_BAD_INPUT)


def _progress(as_json: bool) -> Callable[[str], None]:
    out = err_console if as_json else console
    return lambda line: out.print(f"  {line}", markup=False)


# --- suspend / resume / cancel: the customer file's lifecycle block (P3, S18) ---------------------
def _change(
    customer_id: str,
    directory: Path,
    as_json: bool,
    transition: Callable[[Lifecycle], Transition],
    action: str,
    next_step: Callable[[Customer], str],
) -> None:
    customer = load_valid_customer(customer_id, directory, as_json)
    path = directory / f"{customer_id}.yaml"
    try:
        change = transition(customer.lifecycle)
        updated = write_lifecycle(path, customer_id, change.after) if change.changed else customer
    except LifecycleRefused as exc:
        fail(f"{path}: {exc}", as_json, EXIT_BAD_INPUT)
    except CustomerFileError as exc:
        fail(
            f"{path}: the change would break the file",
            as_json,
            EXIT_BAD_INPUT,
            map(str, exc.errors),
        )
    if change.changed:
        audit(
            {
                "action": f"lifecycle.{action}",
                "customer": customer_id,
                "before": change.before.model_dump(mode="json"),
                "after": change.after.model_dump(mode="json"),
            }
        )
    summary = {
        "ok": True,
        "customer": customer_id,
        "file": path,
        "changed": change.changed,
        "lifecycle": updated.lifecycle.model_dump(mode="json"),
        "termination_date": updated.lifecycle.termination_date,
        "purge_allowed_from": updated.lifecycle.purge_allowed_from,
        "next": next_step(updated),
    }
    verb = (
        f"{action} recorded in" if change.changed else f"already {updated.lifecycle.state.value}:"
    )
    emit(
        summary,
        as_json,
        lambda: console.print(f"[green]ok[/] {verb} {path}\n  next: {summary['next']}"),
    )


def _apply_through_stack(customer: Customer) -> str:
    return (
        f"review and merge the file; `pulumi up --stack {customer.id}` then sets both instances "
        f"{'stopped' if customer.lifecycle.state.value == 'suspended' else 'running'}; volumes, "
        "buckets and backups are kept (P3)"
    )


def suspend_command(
    customer_id: CustomerArg, directory: CustomersDir = CUSTOMERS_DIR, as_json: JsonFlag = False
) -> None:
    """P3: suspend the account: both instances stop through the stack; data and backups stay."""
    _change(customer_id, directory, as_json, suspend, "suspend", _apply_through_stack)


def resume_command(
    customer_id: CustomerArg, directory: CustomersDir = CUSTOMERS_DIR, as_json: JsonFlag = False
) -> None:
    """P3: resume a suspended account: both instances run again through the stack."""
    _change(customer_id, directory, as_json, resume, "resume", _apply_through_stack)


def cancel_command(
    customer_id: CustomerArg,
    notice_date: Annotated[
        str, typer.Option("--notice-date", help="Date the written notice was received (S18).")
    ],
    today: TodayOption = None,
    directory: CustomersDir = CUSTOMERS_DIR,
    as_json: JsonFlag = False,
) -> None:
    """S18: record the written notice; service ends 30 days later, data kept 60 days more."""
    try:
        notice = date.fromisoformat(notice_date)
    except ValueError:
        fail(f"--notice-date: {notice_date!r} is not a date YYYY-MM-DD", as_json, EXIT_BAD_INPUT)
    day = _today(today, as_json)

    def next_step(customer: Customer) -> str:
        return (
            f"service ends {customer.lifecycle.termination_date}: the daily `erpcloud customer "
            "due` then takes a final backup to both regions and stops the service; the data is "
            f"kept until {customer.lifecycle.purge_allowed_from} (S18)"
        )

    _change(
        customer_id,
        directory,
        as_json,
        lambda current: cancel(current, notice, day),
        "cancel",
        next_step,
    )


# --- the daily step (S18) -------------------------------------------------------------------------
def due_command(
    today: TodayOption = None,
    directory: CustomersDir = CUSTOMERS_DIR,
    inventory: InventoryFile = None,
    records: RecordsDir = DEFAULT_RECORDS,
    as_json: JsonFlag = False,
) -> None:
    """Run daily: at a cancelled customer's termination date, a final backup to both regions,
    then the service stops (S18); report retention and when a purge becomes allowed."""
    day = _today(today, as_json)
    loaded = load_fleet_going_on(directory, as_json)  # one bad file stops no one else's end
    customers = loaded.customers
    items = [due_item(c, load_record(records, c.id), day) for c in customers.values()]
    done: list[Any] = []
    errors: dict[str, str] = {}
    for item in items:
        if item.due is not Due.TERMINATE:
            continue
        customer = customers[item.customer]
        try:
            site = resolve_site(customer, customers, inventory, records)
            done.append(terminate(site, records, _progress(as_json)))
        except (SiteError, TerminationFailed, RemoteError, HostKeyError, OSError) as exc:
            errors[item.customer] = str(exc)
    summary = {
        "ok": not errors and not loaded.errors,
        "today": day,
        "customers": items,
        "terminated": done,
        "errors": errors,
        "invalid_customer_files": [str(e) for e in loaded.errors],
    }

    def human() -> None:
        table = Table(title=f"lifecycle, {day}")
        for column in ("customer", "state", "due", "service ends", "purge from", "detail"):
            table.add_column(column)
        for item in items:
            detail = errors.get(item.customer, item.message)
            table.add_row(
                item.customer, item.state, item.due.value, str(item.termination_date or "-"),
                str(item.purge_allowed_from or "-"), detail,
            )  # fmt: skip
        console.print(table)
        for report in done:
            console.print(
                f"[green]terminated[/] {report.customer}: final backup {report.final_backup}; "
                f"service {report.service} {', '.join(report.stopped)}"
            )
            for command in report.commands:
                console.print(f"  {report.label}: {command}", markup=False)

    emit(summary, as_json, human)
    if errors:
        raise SystemExit(EXIT_FAILED)
    if loaded.errors:
        raise SystemExit(EXIT_BAD_INPUT)
    if any(report.service != "stopped" for report in done):
        raise SystemExit(EXIT_WARNING)  # an operator runs the printed stop commands


def purge_command(
    customer_id: CustomerArg,
    confirm: Annotated[
        str | None, typer.Option("--confirm", help="The customer id again, to confirm.")
    ] = None,
    today: TodayOption = None,
    allow_ci: Annotated[
        bool, typer.Option("--allow-ci", help="Run even though CI is set (deliberately).")
    ] = False,
    records: RecordsDir = DEFAULT_RECORDS,
    directory: CustomersDir = CUSTOMERS_DIR,
    as_json: JsonFlag = False,
) -> None:
    """S18: destroy a cancelled customer's buckets and volumes, 60 days after termination.

    Locally (the customer's local machines) it destroys; on AWS it prints the plan of
    `pulumi destroy` and the commands, not run (exit 3)."""
    day = _today(today, as_json)
    customer = load_valid_customer(customer_id, directory, as_json)
    in_ci = os.environ.get("CI", "").strip().lower() not in NOT_CI
    try:
        check_purge(customer, confirm, day, in_ci, allow_ci)
    except PurgeRefused as exc:
        fail(f"{customer_id}: purge refused: {exc}", as_json, EXIT_BAD_INPUT)
    from stacks.plan import plan_customer  # seconds to import: only once a purge is allowed

    platform = platform_for(customer_id)
    report = purge(customer, platform, plan_customer(customer), records, _progress(as_json))

    def human() -> None:
        if report.ran:
            console.print(f"[red]purged[/] {customer_id}: {report.destroyed}")
            return
        console.print(f"[yellow]{report.label}[/]")
        console.print(
            f"pulumi destroy of stack {report.plan['stack']} would remove "
            f"{report.plan['destroys']} resources; data: "
            + ", ".join(d["name"] for d in report.plan["data"])
        )
        for command in report.plan["commands"]:
            console.print(f"  {command}", markup=False)

    emit({"ok": True, **report.__dict__}, as_json, human)
    if not report.ran:
        raise SystemExit(EXIT_WARNING)


def add_customer_commands(customer_app: typer.Typer) -> None:
    """Register the lifecycle commands under ``erpcloud customer``."""
    customer_app.command("suspend")(suspend_command)
    customer_app.command("resume")(resume_command)
    customer_app.command("cancel")(cancel_command)
    customer_app.command("due")(due_command)
    customer_app.command("purge")(purge_command)


# --- P4: the inventory ----------------------------------------------------------------------------
def _row_lines(row: InventoryRow) -> list[str]:
    """One customer for people: a few short lines, what P4 lists."""
    disk = "unknown" if row.disk_used_bytes is None else f"{row.disk_used_bytes / 2**20:.0f} MiB"
    ssh = "unknown" if row.ssh is None else f"{row.ssh.host}:{row.ssh.port}"
    db = row.database
    database = "unknown" if db is None else f"{db.user}@{db.host}:{db.port}/{db.name}"
    if db is not None and db.password_secret:
        database += f" (password in secret {db.password_secret})"
    return [
        f"{row.customer}  {row.state}  {row.url}",
        f"  partner {row.partner} ({row.zone}), region {row.region}",
        f"  licence: {row.licence_users} users, {row.pos_terminals} POS terminals; "
        f"named users: {', '.join(row.named_users)}",
        f"  SSH/SFTP {ssh}; database {database}; disk used {disk}",
        f"  from {row.source}" + "".join(f"; {note}" for note in row.notes),
    ]


def inventory_command(
    directory: CustomersDir = CUSTOMERS_DIR,
    outputs: Annotated[
        Path,
        typer.Option(
            "--stack-outputs", help="Folder of `pulumi stack output --json` files, <id>.json."
        ),
    ] = STACK_OUTPUTS_DIR,
    out: Annotated[
        Path | None,
        typer.Option(
            "--out", help="Also write the maintenance runner's inventory here.", dir_okay=False
        ),
    ] = None,
    known_hosts: Annotated[
        Path, typer.Option("--known-hosts", help="Pinned host keys of the instances.")
    ] = KNOWN_HOSTS_FILE,
    ssh_key_file: Annotated[
        Path, typer.Option("--ssh-key-file", help="The runner's private key (a path, for --out).")
    ] = DEFAULT_SSH_KEY_FILE,
    as_json: JsonFlag = False,
) -> None:
    """P4: every instance's address, users, licence, disk use and SSH/SFTP/database details."""
    customers = load_valid_fleet(directory, as_json)
    try:
        rows = inventory_rows(customers, outputs)
        written: dict[str, Any] | None = None
        if out is not None:
            document, notes = maintenance_document(
                customers, outputs, known_hosts, ssh_key_file.expanduser()
            )
            parse_inventory(document, str(out), customers)
            write_atomic(out, yaml.safe_dump(document, sort_keys=False), mode=0o600)
            written = {"file": out, "hosts": [h["name"] for h in document["hosts"]], "notes": notes}
    except InventoryError as exc:
        fail(str(exc), as_json, EXIT_BAD_INPUT)
    except ChangeFileError as exc:
        fail("the inventory would not be valid", as_json, EXIT_FAILED, map(str, exc.errors))

    def human() -> None:
        console.print(f"[bold]Instance inventory (P4)[/]: {len(rows)} customer(s)")
        for row in rows:
            for line in _row_lines(row):
                console.print(line, markup=False)
        if written is not None:
            console.print(f"[green]wrote[/] {out}: {len(written['hosts'])} host(s)")
            for note in written["notes"]:
                console.print(f"  note: {note}", markup=False)

    emit({"ok": True, "customers": rows, "maintenance_inventory": written}, as_json, human)

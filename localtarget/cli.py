"""`erpcloud local`: bring a customer's local target up, inspect it, take it down."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from erpcloud.cli_common import CustomersDir, JsonFlag, load_valid_customer
from erpcloud.fleet import CUSTOMERS_DIR
from erpcloud.output import EXIT_FAILED, console, emit, fail
from localtarget import target
from localtarget.processes import ServiceError

app = typer.Typer(
    help="The local stand-in of a customer's environment: moto as AWS, PostgreSQL, sshd hosts.",
    no_args_is_help=True,
)
CustomerArg = Annotated[str, typer.Argument(help="Customer id (the file's stem).")]


@app.command("up")
def up(
    customer_id: CustomerArg, directory: CustomersDir = CUSTOMERS_DIR, as_json: JsonFlag = False
) -> None:
    """Start the customer's local target (stopped again, by PID, if any part fails)."""
    customer = load_valid_customer(customer_id, directory, as_json)
    try:
        with console.status("starting...") as spinner:
            running = target.up(customer, progress=lambda s: spinner.update(f"starting {s}..."))
    except ServiceError as exc:
        fail(str(exc), as_json, EXIT_FAILED)
    emit(
        target.status(customer.id),
        as_json,
        lambda: console.print(
            f"[green]up[/] {customer.id}: state in {running.root}; "
            f"`erpcloud local status {customer.id}` shows it, `down` stops it"
        ),
    )


@app.command("status")
def status(customer_id: CustomerArg, as_json: JsonFlag = False) -> None:
    """Show the target's processes (alive, listening), hosts and endpoints. Exit 1 if not up."""
    try:
        report = target.status(customer_id)
    except ServiceError as exc:
        fail(str(exc), as_json, EXIT_FAILED)

    def human() -> None:
        table = Table(title=f"local target {customer_id}: {'up' if report['up'] else 'NOT up'}")
        for column in ("process", "pid", "port", "alive", "listening"):
            table.add_column(column)
        for process in report["processes"]:  # type: ignore[attr-defined]
            table.add_row(*(str(process[k]) for k in ("name", "pid", "port", "alive", "listening")))
        console.print(table)

    emit(report, as_json, human)
    if not report["up"]:
        raise SystemExit(EXIT_FAILED)


@app.command("down")
def down(
    customer_id: CustomerArg,
    keep: Annotated[bool, typer.Option("--keep", help="Keep the data directory.")] = False,
    as_json: JsonFlag = False,
) -> None:
    """Stop every process the target started (by PID) and remove its accounts and data."""
    try:
        report = target.down(customer_id, keep=keep)
    except ServiceError as exc:
        fail(str(exc), as_json, EXIT_FAILED)
    emit(
        report,
        as_json,
        lambda: console.print(
            f"[green]down[/] {customer_id}: stopped {', '.join(report['stopped']) or 'nothing'}"  # type: ignore[arg-type]
            + (f"; data kept in {report['kept']}" if keep else "; data removed")
        ),
    )

"""`erpcloud local`: boot a customer's machines from the product image, inspect them, power
them off; build the image; and the earlier host-process stand-in under ``local processes``."""

from __future__ import annotations

import re
from typing import Annotated

import typer
from rich.table import Table

from erpcloud.cli_common import CustomersDir, JsonFlag, load_valid_customer
from erpcloud.fleet import CUSTOMERS_DIR
from erpcloud.output import EXIT_BAD_INPUT, EXIT_FAILED, console, emit, fail
from localtarget import machines, target
from localtarget.image import IMAGE_CACHE, ImageBuildError, build_image, cached_images
from localtarget.machine import MachineError
from localtarget.processes import ServiceError

app = typer.Typer(
    help="A customer's environment on this machine: production and test machines booted from "
    "the product image (systemd-nspawn), moto as the AWS APIs, a TLS front as the ALB.",
    no_args_is_help=True,
)
CustomerArg = Annotated[str, typer.Argument(help="Customer id (the file's stem).")]


_CUSTOMER_ID = re.compile(r"^[a-z][a-z0-9-]{1,38}[a-z0-9]$")


def _checked_id(customer_id: str, as_json: bool) -> str:
    """An id names a folder: check its shape before anything is read (no paths, no dots)."""
    if not _CUSTOMER_ID.match(customer_id):
        fail(
            f"customer id {customer_id!r}: lowercase letters, digits and '-', 3 to 40 "
            "characters, a letter first",
            as_json,
            EXIT_BAD_INPUT,
        )
    return customer_id


@app.command("image")
def image(
    customer_id: Annotated[
        str, typer.Argument(help="Build the image of this customer's product release.")
    ],
    directory: CustomersDir = CUSTOMERS_DIR,
    as_json: JsonFlag = False,
) -> None:
    """Build (or find in the cache) the product image of a customer's release, locally."""
    customer = load_valid_customer(customer_id, directory, as_json)
    try:
        with console.status("image...") as spinner:
            info = build_image(
                customer.product_version, progress=lambda s: spinner.update(f"image: {s}")
            )
    except ImageBuildError as exc:
        fail(str(exc), as_json, EXIT_FAILED)
    report = {
        **info.as_dict(),
        "cache": str(IMAGE_CACHE),
        "cached": [str(p) for p in cached_images()],
    }
    emit(
        report,
        as_json,
        lambda: console.print(
            f"[green]image[/] {info.release}: {info.root} "
            f"({'built' if info.built_now else 'from the cache'} in {info.seconds:.0f} s)"
        ),
    )


@app.command("up")
def up(
    customer_id: CustomerArg, directory: CustomersDir = CUSTOMERS_DIR, as_json: JsonFlag = False
) -> None:
    """Boot the production and test machines; fail (and stop them) unless every machine's
    cloud-init is done with no failed unit."""
    customer = load_valid_customer(_checked_id(customer_id, as_json), directory, as_json)
    try:
        with console.status("machines...") as spinner:
            machines.up(customer, progress=lambda s: spinner.update(f"machines: {s}"))
    except (ServiceError, MachineError, ImageBuildError) as exc:
        fail(str(exc), as_json, EXIT_FAILED)
    report = machines.status(customer.id)
    emit(report, as_json, lambda: _print_machines(report))


@app.command("status")
def status(customer_id: CustomerArg, as_json: JsonFlag = False) -> None:
    """Show the machines (running, address, pinned host keys). Exit 1 if not up."""
    try:
        report = machines.status(_checked_id(customer_id, as_json))
    except ServiceError as exc:
        fail(str(exc), as_json, EXIT_FAILED)
    emit(report, as_json, lambda: _print_machines(report))
    if not report["up"]:
        raise SystemExit(EXIT_FAILED)


@app.command("down")
def down(customer_id: CustomerArg, as_json: JsonFlag = False) -> None:
    """Power the machines off (clean shutdown), stop the emulator, remove their data."""
    try:
        report = machines.down(_checked_id(customer_id, as_json))
    except ServiceError as exc:
        fail(str(exc), as_json, EXIT_FAILED)
    emit(
        report,
        as_json,
        lambda: console.print(
            f"[green]down[/] {customer_id}: {', '.join(report['stopped'])} "  # type: ignore[arg-type]
            f"in {report['seconds']} s; data removed"
        ),
    )


def _print_machines(report: dict[str, object]) -> None:
    table = Table(title=f"machines of {report['customer']}: {'up' if report['up'] else 'NOT up'}")
    for column in ("environment", "name", "address", "pid", "running", "host keys"):
        table.add_column(column)
    for environment, info in report["machines"].items():  # type: ignore[attr-defined]
        table.add_row(
            environment,
            info["name"],
            info["address"],
            str(info["pid"]),
            str(info["running"]),
            str(info["host_keys_pinned"]),
        )
    console.print(table)
    console.print(
        f"ssh -i {report['ops_key']} -o UserKnownHostsFile={report['known_hosts']} "
        f"erpcloud-ops@<address>"
    )


# --- the host-process stand-in (being retired: the machines replace it) ----------------------
processes_app = typer.Typer(
    help="The earlier stand-in, being retired: sshd processes and PostgreSQL 15 on this host, "
    "configured in code (`--site local` drills and the backup tests still use it).",
    no_args_is_help=True,
)
app.add_typer(processes_app, name="processes")


@processes_app.command("up")
def processes_up(
    customer_id: CustomerArg, directory: CustomersDir = CUSTOMERS_DIR, as_json: JsonFlag = False
) -> None:
    """Start the customer's local target (stopped again, by PID, if any part fails)."""
    customer = load_valid_customer(_checked_id(customer_id, as_json), directory, as_json)
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
            f"`erpcloud local processes status {customer.id}` shows it, `down` stops it"
        ),
    )


@processes_app.command("status")
def processes_status(customer_id: CustomerArg, as_json: JsonFlag = False) -> None:
    """Show the target's processes (alive, listening), hosts and endpoints. Exit 1 if not up."""
    try:
        report = target.status(_checked_id(customer_id, as_json))
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


@processes_app.command("down")
def processes_down(
    customer_id: CustomerArg,
    keep: Annotated[bool, typer.Option("--keep", help="Keep the data directory.")] = False,
    as_json: JsonFlag = False,
) -> None:
    """Stop every process the target started (by PID) and remove its accounts and data."""
    try:
        report = target.down(_checked_id(customer_id, as_json), keep=keep)
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

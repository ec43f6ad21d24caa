"""`erpcloud local`: boot a customer's machines from the product image, inspect them, power
them off; build the image."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from erpcloud.cli_common import CustomersDir, JsonFlag, checked_customer_id, load_valid_customer
from erpcloud.fleet import CUSTOMERS_DIR
from erpcloud.output import EXIT_FAILED, console, emit, fail
from localtarget import machines
from localtarget.image import IMAGE_CACHE, ImageBuildError, build_image, cached_images
from localtarget.machine import MachineError
from localtarget.processes import ServiceError

app = typer.Typer(
    help="A customer's environment on this machine: production and test machines booted from "
    "the product image (systemd-nspawn), moto as the AWS APIs, a TLS front as the ALB.",
    no_args_is_help=True,
)
CustomerArg = Annotated[str, typer.Argument(help="Customer id (the file's stem).")]


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
    customer = load_valid_customer(checked_customer_id(customer_id, as_json), directory, as_json)
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
        report = machines.status(checked_customer_id(customer_id, as_json))
    except ServiceError as exc:
        fail(str(exc), as_json, EXIT_FAILED)
    emit(report, as_json, lambda: _print_machines(report))
    if not report["up"]:
        raise SystemExit(EXIT_FAILED)


@app.command("down")
def down(customer_id: CustomerArg, as_json: JsonFlag = False) -> None:
    """Power the machines off (clean shutdown), stop the emulator, remove their data."""
    try:
        report = machines.down(checked_customer_id(customer_id, as_json))
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

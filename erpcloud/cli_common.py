"""What every `erpcloud` command shares: option types and the validated-input helpers.

Capability packages (backups, maintenance, stacks, localtarget) import these to build their
sub-commands; `erpcloud.cli` registers those sub-apps.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, NoReturn

import typer

from erpcloud.fleet import FieldError, load_fleet
from erpcloud.model import Customer
from erpcloud.output import EXIT_BAD_INPUT, fail

JsonFlag = Annotated[bool, typer.Option("--json", help="Print JSON for CI instead of a summary.")]
CustomersDir = Annotated[
    Path,
    typer.Option(
        "--customers",
        envvar="ERPCLOUD_CUSTOMERS_DIR",
        help="Folder of customer files.",
        file_okay=False,
    ),
]
BuildDir = Annotated[
    Path, typer.Option("--out", envvar="ERPCLOUD_BUILD_DIR", help="Where rendered files go.")
]


def refuse(errors: list[FieldError], as_json: bool) -> NoReturn:
    """Exit 2, naming every file, field and rule broken."""
    fail(
        f"{len(errors)} rule(s) broken; nothing was written",
        as_json,
        code=EXIT_BAD_INPUT,
        details=[str(e) for e in errors],
    )


def load_valid_fleet(directory: Path, as_json: bool) -> dict[str, Customer]:
    """The fleet, or exit 2 listing every broken rule of every file."""
    fleet = load_fleet(directory)
    if fleet.errors:
        refuse(fleet.errors, as_json)
    return fleet.customers


def load_valid_customer(customer_id: str, directory: Path, as_json: bool) -> Customer:
    """One customer (validated with the fleet's cross-file rules), or exit 2."""
    customers = load_valid_fleet(directory, as_json)
    if customer_id not in customers:
        fail(
            f"no customer {customer_id!r} in {directory}/ (known: {', '.join(sorted(customers))})",
            as_json,
            code=EXIT_BAD_INPUT,
        )
    return customers[customer_id]

"""What every `erpcloud` command shares: option types and the validated-input helpers.

Capability packages (backups, maintenance, stacks, localtarget) import these to build their
sub-commands; `frontdoor.cli` registers those sub-apps.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, NoReturn

import typer

from erpcloud.fleet import FieldError, Fleet, load_fleet
from erpcloud.model import CUSTOMER_ID, Customer
from erpcloud.output import EXIT_BAD_INPUT, err_console, fail

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
    """The fleet, or exit 2 listing every broken rule of every file (for commands whose
    result must cover every customer: rendering, the inventory)."""
    fleet = load_fleet(directory)
    if fleet.errors:
        refuse(fleet.errors, as_json)
    return fleet.customers


def load_fleet_going_on(directory: Path, as_json: bool) -> Fleet:
    """The fleet's valid customers, for the daily and quarter-hourly runs that must go on for
    everyone else when one file is bad (issue 13): each bad file is named on stderr (the
    caller puts ``fleet.errors`` in its JSON and exits 2 when nothing worse happened)."""
    fleet = load_fleet(directory)
    if fleet.errors and not as_json:
        err_console.print(
            f"[bold yellow]warning:[/] {len(fleet.errors)} rule(s) broken; those customers "
            "are left out, the others go on"
        )
        for error in fleet.errors:
            err_console.print(f"  {error}", markup=False)
    return fleet


def checked_customer_id(customer_id: str, as_json: bool) -> str:
    """An id names files and folders: its shape is checked before anything is read (no
    paths, no dots), or exit 2."""
    if not CUSTOMER_ID.match(customer_id):
        fail(
            f"customer id {customer_id!r}: lowercase letters, digits and '-', 3 to 40 "
            "characters, a letter first",
            as_json,
            EXIT_BAD_INPUT,
        )
    return customer_id


def load_valid_customer(customer_id: str, directory: Path, as_json: bool) -> Customer:
    """One customer (validated with the fleet's cross-file rules), or exit 2. Only the
    customer's own file can stop it: another customer's bad file does not."""
    checked_customer_id(customer_id, as_json)
    fleet = load_fleet(directory)
    own = str(directory / f"{customer_id}.yaml")
    errors = [e for e in fleet.errors if e.file in (own, str(directory))]
    if errors:
        refuse(errors, as_json)
    if customer_id not in fleet.customers:
        known = ", ".join(sorted(fleet.customers)) or "none"
        fail(
            f"no customer {customer_id!r} in {directory}/ (known: {known})", as_json, EXIT_BAD_INPUT
        )
    return fleet.customers[customer_id]

"""Where the maintenance files live, and loading them once for a command or a Fabric task.

Both front ends (the ``erpcloud maintenance`` commands and the ``fab maintenance.*`` tasks) call
these, so a file is validated the same way wherever it is read.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from erpcloud.fleet import CUSTOMERS_DIR, load_fleet
from erpcloud.inventory import INVENTORY_FILE, Inventory, load_inventory
from erpcloud.model import Customer
from maintenance.calendar import CALENDAR_FILE, CalendarChange, load_calendar_changes
from maintenance.change import CHANGES_DIR, find_change, load_change
from maintenance.errors import ChangeFileError
from maintenance.notices import NOTICES_DIR
from maintenance.records import RUNS_DIR, RunStore
from maintenance.rules import ChangeCheck, check_change


class InputError(Exception):
    """Bad input: exit 2, naming every file, field and rule."""

    def __init__(self, message: str, details: list[str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details or []


@dataclass(frozen=True)
class Paths:
    customers: Path = CUSTOMERS_DIR
    changes: Path = CHANGES_DIR
    calendar: Path = CALENDAR_FILE
    inventory: Path = INVENTORY_FILE
    runs: Path = RUNS_DIR
    notices: Path = NOTICES_DIR


def load_customers(paths: Paths) -> dict[str, Customer]:
    fleet = load_fleet(paths.customers)
    if fleet.errors:
        raise InputError(
            f"the customer files in {paths.customers}/ break {len(fleet.errors)} rule(s)",
            [str(e) for e in fleet.errors],
        )
    return fleet.customers


def load_calendar(paths: Paths) -> list[CalendarChange]:
    try:
        return load_calendar_changes(paths.calendar)
    except ChangeFileError as exc:
        raise InputError(
            f"{paths.calendar} breaks {len(exc.errors)} rule(s)", [str(e) for e in exc.errors]
        ) from None


def load_check(
    change: str, paths: Paths, customers: dict[str, Customer] | None = None
) -> ChangeCheck:
    """One change, validated with every rule (schema, registry, targets, policy)."""
    path = find_change(change, paths.changes)
    if not path.is_file():
        raise InputError(f"no change file {path}")
    fleet = customers if customers is not None else load_customers(paths)
    try:
        loaded = load_change(path)
    except ChangeFileError as exc:
        raise InputError(
            f"{path} breaks {len(exc.errors)} rule(s)", [str(e) for e in exc.errors]
        ) from None
    return check_change(loaded, fleet, load_calendar(paths), RunStore(paths.runs))


def load_inventory_for(paths: Paths, customers: dict[str, Customer]) -> Inventory:
    if not paths.inventory.is_file():
        raise InputError(
            f"no inventory at {paths.inventory}: it is written from the stacks' outputs "
            "(or by hand for the local target); pass --inventory FILE"
        )
    try:
        return load_inventory(paths.inventory, customers)
    except ChangeFileError as exc:
        raise InputError(
            f"{paths.inventory} breaks {len(exc.errors)} rule(s)", [str(e) for e in exc.errors]
        ) from None

"""Reading customer files: the edge where YAML becomes typed :class:`Customer` objects.

Every error names the file, the field path and the rule broken; all errors of a file are
reported at once; cross-file rules (unique prefixes, S3) run over the whole fleet.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from erpcloud.documents import (
    DocumentError,
    FieldError,
    errors_from_validation,
    field_path,
    read_yaml_document,
)
from erpcloud.model import Customer

__all__ = ["CustomerFileError", "FieldError", "Fleet", "field_path", "load_fleet", "load_one"]

#: Where customer files live, relative to the repository root.
CUSTOMERS_DIR = Path("customers")


#: A customer file breaking rules: the one document error (:mod:`erpcloud.documents`).
CustomerFileError = DocumentError


@dataclass
class Fleet:
    """Every customer that validated, and every error found on the way."""

    customers: dict[str, Customer] = field(default_factory=dict)
    errors: list[FieldError] = field(default_factory=list)
    files: dict[str, Path] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.errors

    def get(self, customer_id: str) -> Customer:
        try:
            return self.customers[customer_id]
        except KeyError:
            known = ", ".join(sorted(self.customers)) or "none"
            raise KeyError(f"no customer {customer_id!r} (known: {known})") from None


def parse_customer(data: Any, file: str, expected_id: str | None = None) -> Customer:
    """Validate one customer document; raise :class:`CustomerFileError` with every problem."""
    if not isinstance(data, dict):
        raise CustomerFileError([FieldError(file, "", "must be a YAML mapping of fields")])
    try:
        customer = Customer.model_validate(data)
    except ValidationError as exc:
        raise CustomerFileError(
            errors_from_validation(
                file, exc, extra_hint="check the spelling; secrets never go in this file"
            )
        ) from None
    if expected_id is not None and customer.id != expected_id:
        raise CustomerFileError(
            [FieldError(file, "id", f"must equal the file name {expected_id!r}.yaml")]
        )
    return customer


def load_customer(path: Path) -> Customer:
    """Read and validate ``customers/<id>.yaml``."""
    return parse_customer(read_yaml_document(path), str(path), expected_id=path.stem)


def customer_files(directory: Path) -> list[Path]:
    return sorted(p for p in directory.glob("*.yaml") if not p.name.startswith("."))


def fleet_errors(customers: dict[str, Customer], files: dict[str, Path]) -> list[FieldError]:
    """Rules across files: S3 host names are unique over every production and test URL."""
    owners: dict[str, set[str]] = {}
    for customer in customers.values():
        for host in (customer.url_host, customer.test_url_host):
            owners.setdefault(host, set()).add(customer.id)
    errors = []
    for host, ids in sorted(owners.items()):
        for customer_id in sorted(ids) if len(ids) > 1 else ():
            others = ", ".join(repr(o) for o in sorted(ids - {customer_id}))
            errors.append(
                FieldError(
                    str(files[customer_id]),
                    "prefix",
                    f"{customers[customer_id].prefix!r} gives {host}, which customer {others} "
                    "also uses (S3: a prefix must not be taken already)",
                )
            )
    return errors


def load_fleet(directory: Path = CUSTOMERS_DIR) -> Fleet:
    """Validate every customer file in ``directory`` and the rules across them."""
    fleet = Fleet()
    if not directory.is_dir():
        fleet.errors.append(FieldError(str(directory), "", "is not a directory"))
        return fleet
    for path in customer_files(directory):
        try:
            customer = load_customer(path)
        except CustomerFileError as exc:
            fleet.errors.extend(exc.errors)
            continue
        fleet.customers[customer.id] = customer
        fleet.files[customer.id] = path
    fleet.errors.extend(fleet_errors(fleet.customers, fleet.files))
    return fleet


def load_one(customer: str, directory: Path = CUSTOMERS_DIR) -> Customer:
    """A customer by id or by path, with the fleet's cross-file rules applied to it."""
    path = Path(customer)
    if path.suffix != ".yaml":
        path = directory / f"{customer}.yaml"
    loaded = load_customer(path)
    others = load_fleet(path.parent)
    clashes = [e for e in others.errors if e.file == str(path) and e.field == "prefix"]
    if clashes:
        raise CustomerFileError(clashes)
    return loaded

"""The instance inventory (P4): every customer's address, users, licence, disk and connections.

Sources, per customer: the customer file (always: partner, region, state, URL, licence, named
SSH/SFTP users); the stack's outputs where saved (``pulumi stack output --json --stack ID >
build/stack-outputs/ID.json``: the addresses and the database endpoint, as
:func:`stacks.program.inventory` exports them); the local machines' inventory for a customer
running locally (:mod:`erpcloud.sites`). No password is ever listed: the database password's
*secret name* is, where the stack exports it.

:func:`maintenance_document` writes the same hosts in the maintenance runner's inventory format
(:mod:`erpcloud.inventory`) for the hosts whose SSH endpoint and pinned host key are known:
the local machines' own, and stack outputs with a key pinned in a known_hosts file (read from the
instance's console output at first boot). Other customers are skipped, with a note.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any, Final

import paramiko
import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from erpcloud import policy
from erpcloud.model import Customer, Environment
from erpcloud.render import PRODUCT_DATABASE, PRODUCT_DATABASE_USER, HostLayout
from erpcloud.sites import LocalCustomer, LocalSite, local_customer

STACK_OUTPUTS_DIR: Final = Path("build/stack-outputs")
KNOWN_HOSTS_FILE: Final = Path("build/known_hosts")
#: Where the runner's private key is on the CI runner (.github/workflows/maintenance.yml).
DEFAULT_SSH_KEY_FILE: Final = Path("~/.ssh/erpcloud_ops")


class InventoryError(ValueError):
    """A stack outputs file cannot be read; names the file and the problem."""


class StackOutputs(BaseModel):
    """The part of ``pulumi stack output --json`` the inventory reads (others are ignored)."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    url: str | None = None
    test_url: str | None = None
    ssh_host: str | None = None
    ssh_port: int = policy.SSH_PORT
    ssh_users: list[str] = []
    sftp_host: str | None = None
    test_ssh_host: str | None = None
    database_host: str | None = None
    database_port: int = HostLayout().pg_port
    database_name: str = PRODUCT_DATABASE
    database_user: str = PRODUCT_DATABASE_USER
    database_access: str | None = None
    database_password_secret: str | None = None
    production_instance_id: str | None = None
    test_instance_id: str | None = None


@dataclass(frozen=True)
class Endpoint:
    host: str
    port: int
    users: list[str]


@dataclass(frozen=True)
class DatabaseEndpoint:
    host: str
    port: int
    name: str
    user: str
    access: str
    #: Where the password is kept (a secret's name), never the password.
    password_secret: str | None = None


@dataclass
class InventoryRow:
    customer: str
    company: str
    partner: str
    zone: str
    region: str
    state: str
    url: str
    test_url: str
    licence_users: int
    pos_terminals: int
    named_users: list[str]
    source: str
    ssh: Endpoint | None = None
    sftp: Endpoint | None = None
    database: DatabaseEndpoint | None = None
    disk_used_bytes: int | None = None
    disk_note: str = "not known here (S5 reports disk use in CloudWatch)"
    running: bool | None = None
    termination_date: date | None = None
    purge_allowed_from: date | None = None
    notes: list[str] = field(default_factory=list)


def load_stack_outputs(directory: Path, customer_id: str) -> StackOutputs | None:
    path = directory / f"{customer_id}.json"
    if not path.is_file():
        return None
    try:
        return StackOutputs.model_validate(json.loads(path.read_text()))
    except (json.JSONDecodeError, ValidationError) as exc:
        raise InventoryError(f"{path}: not the stack's outputs as JSON ({exc})") from None


def _base_row(customer: Customer, source: str) -> InventoryRow:
    users = [u.name for u in customer.ssh.users]
    return InventoryRow(
        customer=customer.id,
        company=customer.company,
        partner=customer.partner.id,
        zone=customer.partner.zone.value,
        region=customer.region,
        state=customer.lifecycle.state.value,
        url=f"https://{customer.url_host}",
        test_url=f"https://{customer.test_url_host}",
        licence_users=customer.licence.concurrent_users,
        pos_terminals=customer.licence.pos_terminals,
        named_users=users,
        source=source,
        termination_date=customer.lifecycle.termination_date,
        purge_allowed_from=customer.lifecycle.purge_allowed_from,
    )


def _local_hosts(machines: LocalCustomer) -> list[dict[str, Any]]:
    """The local machines' own inventory entries, each with the operations key."""
    document = yaml.safe_load(machines.inventory.read_text())
    hosts: list[dict[str, Any]] = document.get("hosts", [])
    for host in hosts:
        host["ssh"]["key_file"] = machines.ssh_key_file
    return hosts


def _local_row(customer: Customer, site: LocalSite, machines: LocalCustomer) -> InventoryRow:
    row = _base_row(customer, machines.description)
    production = next(
        h for h in _local_hosts(machines) if h["environment"] == Environment.PRODUCTION.value
    )
    address, port = production["ssh"]["host"], production["ssh"]["port"]
    row.ssh = row.sftp = Endpoint(address, port, row.named_users)
    row.database = DatabaseEndpoint(
        host=address,
        port=production["db"]["port"],
        name=PRODUCT_DATABASE,
        user=PRODUCT_DATABASE_USER,
        access="SSH tunnel to the machine (PostgreSQL listens on the machine only)",
    )
    row.running = machines.running
    row.disk_used_bytes = site.disk_used_bytes(customer.id)
    row.disk_note = (
        "production's data volume" if row.disk_used_bytes is not None else "no data volume (purged)"
    )
    return row


def _stack_row(customer: Customer, outputs: StackOutputs, file: Path) -> InventoryRow:
    row = _base_row(customer, f"stack outputs ({file})")
    row.url = outputs.url or row.url
    row.test_url = outputs.test_url or row.test_url
    users = outputs.ssh_users or row.named_users
    if outputs.ssh_host:
        row.ssh = Endpoint(outputs.ssh_host, outputs.ssh_port, users)
        row.sftp = Endpoint(outputs.sftp_host or outputs.ssh_host, outputs.ssh_port, users)
    if outputs.database_host:
        row.database = DatabaseEndpoint(
            host=outputs.database_host,
            port=outputs.database_port,
            name=outputs.database_name,
            user=outputs.database_user,
            access=outputs.database_access or "SSH tunnel to the instance",
            password_secret=outputs.database_password_secret,
        )
    return row


def inventory_rows(customers: dict[str, Customer], outputs_dir: Path) -> list[InventoryRow]:
    """One row per customer, from the best source there is for it."""
    rows = []
    for customer_id in sorted(customers):
        customer = customers[customer_id]
        local = local_customer(customer_id)
        outputs = load_stack_outputs(outputs_dir, customer_id)
        if local is not None:
            rows.append(_local_row(customer, *local))
        elif outputs is not None:
            rows.append(_stack_row(customer, outputs, outputs_dir / f"{customer_id}.json"))
        else:
            row = _base_row(customer, "customer file")
            row.notes.append(f"no stack outputs in {outputs_dir}/ and no local machines")
            rows.append(row)
    return rows


# --- the maintenance runner's inventory -----------------------------------------------------------
def pinned_key(known_hosts: paramiko.HostKeys | None, host: str, port: int) -> str | None:
    if known_hosts is None:
        return None
    entry = known_hosts.lookup(host if port == policy.SSH_PORT else f"[{host}]:{port}")
    if not entry:
        return None
    key = next(iter(entry.values()))
    return f"{key.get_name()} {key.get_base64()}"


def _stack_hosts(
    customer: Customer, outputs: StackOutputs, known_hosts: paramiko.HostKeys | None
) -> tuple[list[dict[str, Any]], list[str]]:
    hosts: list[dict[str, Any]] = []
    notes: list[str] = []
    port = HostLayout().pg_port
    for environment, address, url, db in (
        (Environment.TEST, outputs.test_ssh_host, outputs.test_url, {"port": port}),
        (
            Environment.PRODUCTION,
            outputs.ssh_host,
            outputs.url,
            {"port": outputs.database_port, "stanza": customer.stanza},
        ),
    ):
        name = f"{customer.id}-{environment.value}"
        if not address:
            notes.append(f"{name}: skipped, no SSH address in the stack outputs")
            continue
        key = pinned_key(known_hosts, address, outputs.ssh_port)
        if key is None:
            notes.append(f"{name}: skipped, no pinned host key for {address}")
            continue
        entry: dict[str, Any] = {
            "name": name,
            "customer": customer.id,
            "environment": environment.value,
            "ssh": {
                "host": address,
                "port": outputs.ssh_port,
                "user": policy.OPERATIONS_USER,
                "host_key": key,
            },
            "db": db,
        }
        if url:
            entry["https_url"] = url
        hosts.append(entry)
    return hosts, notes


def maintenance_document(
    customers: dict[str, Customer],
    outputs_dir: Path,
    known_hosts_file: Path | None,
    ssh_key_file: Path,
) -> tuple[dict[str, Any], list[str]]:
    """The runner's inventory (not yet validated) and the notes on what was skipped."""
    known_hosts = None
    if known_hosts_file is not None and known_hosts_file.is_file():
        known_hosts = paramiko.HostKeys(str(known_hosts_file))
    hosts: list[dict[str, Any]] = []
    notes: list[str] = []
    for customer_id in sorted(customers):
        local = local_customer(customer_id)
        outputs = load_stack_outputs(outputs_dir, customer_id)
        if local is not None:
            if local[1].running:
                hosts += _local_hosts(local[1])
            else:
                notes.append(f"{customer_id}: skipped, its local machines are not running")
        elif outputs is not None:
            found, skipped = _stack_hosts(customers[customer_id], outputs, known_hosts)
            hosts += found
            notes += skipped
        else:
            notes.append(f"{customer_id}: skipped, no stack outputs and no local machines")
    return {"ssh_key_file": str(ssh_key_file), "hosts": hosts}, notes

"""A customer's production host as the lifecycle operations reach it (a "site").

Found in an inventory in the maintenance runner's format (:mod:`maintenance.inventory`): the
local target's own (``erpcloud local up`` writes one), or the fleet's, written by
``erpcloud inventory --out`` from the stacks' outputs. Either way the connection uses the pinned
host key of that file, the database and pgBackRest settings come from its ``db`` entry, and the
product's paths lie below its ``host_root``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from backups.pgbackrest import SshPgBackRest
from erpcloud.model import Customer, Environment
from erpcloud.render import HostLayout
from erpcloud.ssh import SshTarget
from lifecycle.paths import HostPaths
from localtarget.s3 import LocalAws
from localtarget.target import STATE_FILE, TargetState, load_state, target_root
from maintenance.errors import ChangeFileError
from maintenance.inventory import (
    INVENTORY_FILE,
    Database,
    Inventory,
    InventoryHost,
    load_inventory,
    write_known_hosts,
)


class SiteError(RuntimeError):
    """The customer's host cannot be found or used; the message says why and what to do."""


@dataclass(frozen=True)
class Site:
    customer: Customer
    host: InventoryHost
    ssh: SshTarget
    #: pgBackRest's S3 keys: empty on AWS (the instance role signs), the emulator's locally.
    pgbackrest_env: dict[str, str] = field(default_factory=dict)
    #: The local target's state, when the site is one (the emulator and its PIDs).
    local: TargetState | None = None

    @property
    def kind(self) -> str:
        return "local target" if self.local is not None else "inventory host"

    @property
    def db(self) -> Database:
        if self.host.db is None:
            raise SiteError(f"{self.host.name}: the inventory lists no database (db) for it")
        return self.host.db

    @property
    def paths(self) -> HostPaths:
        return HostPaths(self.host.host_root)

    @property
    def layout(self) -> HostLayout:
        db = self.db
        return HostLayout(
            pg_port=db.port,
            pg_socket_dir=db.socket_dir or "",
            conf_d=db.conf_d,
            pgbackrest_config=db.pgbackrest_config,
        )

    def pgbackrest(self) -> SshPgBackRest:
        """pgBackRest on the host, as ``postgres``, over the pinned connection (S6)."""
        if not self.db.stanza:
            raise SiteError(f"{self.host.name}: no pgBackRest stanza in the inventory (S6)")
        return SshPgBackRest.for_customer(self.ssh, self.customer, self.layout, self.pgbackrest_env)


def _production_host(inventory: Inventory, customer: Customer, source: Path) -> InventoryHost:
    for host in inventory.hosts:
        if host.customer == customer.id and host.environment is Environment.PRODUCTION:
            return host
    raise SiteError(f"{source} lists no production host for {customer.id}")


def _load(path: Path, customers: dict[str, Customer]) -> Inventory:
    try:
        return load_inventory(path, customers)
    except ChangeFileError as exc:
        details = "; ".join(str(e) for e in exc.errors)
        raise SiteError(f"{path} breaks {len(exc.errors)} rule(s): {details}") from None


def local_state(customer_id: str) -> TargetState | None:
    """The local target's recorded state, if one was brought up for the customer."""
    if not (target_root(customer_id) / STATE_FILE).exists():
        return None
    return load_state(customer_id)


def local_aws(state: TargetState) -> LocalAws:
    """The target's emulator (already running: nothing is started)."""
    return LocalAws(
        Path(state.root) / "aws", http_port=state.aws_http_port, tls_port=state.aws_tls_port
    )


def local_site(customer: Customer, state: TargetState) -> Site:
    inventory_path = Path(state.inventory)
    inventory = _load(inventory_path, {customer.id: customer})
    host = _production_host(inventory, customer, inventory_path)
    return Site(
        customer=customer,
        host=host,
        ssh=inventory.target(host, Path(state.known_hosts)),
        pgbackrest_env=local_aws(state).pgbackrest_env(),
        local=state,
    )


def inventory_site(
    customer: Customer, customers: dict[str, Customer], inventory_path: Path, work_dir: Path
) -> Site:
    if not inventory_path.is_file():
        raise SiteError(
            f"no local target for {customer.id} and no inventory at {inventory_path} "
            "(`erpcloud inventory --out FILE` writes one from the stacks' outputs)"
        )
    inventory = _load(inventory_path, customers)
    host = _production_host(inventory, customer, inventory_path)
    known_hosts = write_known_hosts(inventory, work_dir / "known_hosts")
    return Site(customer=customer, host=host, ssh=inventory.target(host, known_hosts))


def resolve_site(
    customer: Customer,
    customers: dict[str, Customer],
    inventory_path: Path | None = None,
    work_dir: Path = Path("build/lifecycle"),
) -> Site:
    """The inventory given; else the customer's local target if there is one; else the fleet's
    inventory (``build/inventory.yaml``)."""
    if inventory_path is None:
        state = local_state(customer.id)
        if state is not None:
            return local_site(customer, state)
        inventory_path = INVENTORY_FILE
    return inventory_site(customer, customers, inventory_path, work_dir)

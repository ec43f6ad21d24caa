"""A customer's production host as the lifecycle operations reach it (a "site").

Found in an inventory in the maintenance runner's format (:mod:`erpcloud.inventory`): the
local machines' own (``erpcloud local up`` writes one; :mod:`erpcloud.sites`), or the
fleet's, written by ``erpcloud inventory --out`` from the stacks' outputs. Either way the
connection uses the pinned host key of that file, the database and pgBackRest settings come
from its ``db`` entry, and the product's paths lie below its ``host_root``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from backups.pgbackrest import SshPgBackRest
from erpcloud.inventory import (
    INVENTORY_FILE,
    Database,
    Inventory,
    InventoryHost,
    load_inventory,
    write_known_hosts,
)
from erpcloud.model import Customer, Environment
from erpcloud.render import HostLayout
from erpcloud.sites import local_customer
from erpcloud.ssh import SshTarget
from lifecycle.paths import HostPaths
from lifecycle.platform import AwsPlatform, LocalPlatform, Platform
from maintenance.errors import ChangeFileError


class SiteError(RuntimeError):
    """The customer's host cannot be found or used; the message says why and what to do."""


@dataclass(frozen=True)
class Site:
    customer: Customer
    host: InventoryHost
    ssh: SshTarget
    #: What runs the customer's instances: the local machines' site, or AWS.
    platform: Platform = field(default_factory=AwsPlatform)

    @property
    def kind(self) -> str:
        return "local machine" if self.platform.mode == "local" else "inventory host"

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
        """pgBackRest on the host, as ``postgres``, over the pinned connection (S6); no key: the
        instance role signs (the local machines' metadata stand-in serves it)."""
        if not self.db.stanza:
            raise SiteError(f"{self.host.name}: no pgBackRest stanza in the inventory (S6)")
        return SshPgBackRest.for_customer(self.ssh, self.customer, self.layout, {})


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


def inventory_site(
    customer: Customer,
    customers: dict[str, Customer],
    inventory_path: Path,
    work_dir: Path,
    platform: Platform | None = None,
) -> Site:
    if not inventory_path.is_file():
        raise SiteError(
            f"no local machines for {customer.id} and no inventory at {inventory_path} "
            "(`erpcloud inventory --out FILE` writes one from the stacks' outputs)"
        )
    inventory = _load(inventory_path, customers)
    host = _production_host(inventory, customer, inventory_path)
    work_dir.mkdir(parents=True, exist_ok=True)
    known_hosts = write_known_hosts(inventory, work_dir / f"known_hosts-{customer.id}")
    return Site(
        customer=customer,
        host=host,
        ssh=inventory.target(host, known_hosts),
        platform=platform or AwsPlatform(),
    )


def resolve_site(
    customer: Customer,
    customers: dict[str, Customer],
    inventory_path: Path | None = None,
    work_dir: Path = Path("build/lifecycle"),
) -> Site:
    """The inventory given; else the customer's local machines if there are; else the fleet's
    inventory (``build/inventory.yaml``)."""
    if inventory_path is None:
        found = local_customer(customer.id)
        if found is not None:
            site, machines = found
            return inventory_site(
                customer,
                {customer.id: customer},
                machines.inventory,
                work_dir,
                platform=LocalPlatform(site),
            )
        inventory_path = INVENTORY_FILE
    return inventory_site(customer, customers, inventory_path, work_dir)

"""Where a customer's pgBackRest runs: production's host from the maintenance inventory over SSH
(pinned host key, ``sudo -n -u postgres``): the fleet's, or the local machines' own
(:mod:`erpcloud.sites`).

The backup commands and the fleet-wide gap check (:mod:`backups.fleetcheck`) use these; they
hold no secret: on AWS the instance role signs pgBackRest's requests and boto3 takes the
operations role from its own configuration (``AWS_ENDPOINT_URL`` points it at an emulator).
"""

from __future__ import annotations

import atexit
import shutil
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from backups.pgbackrest import PgBackRest, SshPgBackRest
from erpcloud.inventory import load_inventory, write_known_hosts
from erpcloud.model import Customer, Environment
from erpcloud.render import HostLayout
from erpcloud.sites import aws_client_for, local_customer


@dataclass
class BackupTarget:
    """Where a customer's pgBackRest runs, and how to reach its CloudWatch (S5)."""

    runner: PgBackRest
    cloudwatch: Callable[[str], Any] | None = None  # region → boto3 CloudWatch client
    #: How it was reached, for the report (the SSH host, and the local machines where they are).
    via: str = "local"


def local_backup_target(customer: Customer) -> BackupTarget:
    """The customer's local machines (``erpcloud local up``), through their inventory as on AWS;
    ``RuntimeError`` when the local site holds none."""
    local = local_customer(customer.id)
    if local is None:
        raise RuntimeError(
            f"no local machines for {customer.id!r} (run `erpcloud local up {customer.id}`, "
            "or give --inventory)"
        )
    _site, found = local
    try:
        target = inventory_backup_target(customer, found.inventory, {customer.id: customer})
    except ValueError as exc:  # an invalid inventory (a DocumentError is one)
        raise RuntimeError(f"{found.inventory}: {exc}") from None
    target.via = f"{found.description}, {target.via}"
    return target


def inventory_backup_targets(
    inventory_file: Path, fleet: Mapping[str, Customer]
) -> dict[str, BackupTarget]:
    """Every production host with a pgBackRest stanza in the inventory, by customer id.

    Raises :class:`erpcloud.documents.DocumentError` for an invalid inventory and
    ``ValueError`` where a host's stanza is not its customer's."""
    from erpcloud.aws import emulator_pgbackrest_env

    inventory = load_inventory(inventory_file, fleet)
    folder = Path(tempfile.mkdtemp(prefix="erpcloud-backup-ssh-"))
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    known_hosts = write_known_hosts(inventory, folder / "known_hosts")
    targets: dict[str, BackupTarget] = {}
    for host in inventory.hosts:
        if host.environment is not Environment.PRODUCTION or not host.has_backups:
            continue
        assert host.db is not None  # has_backups
        customer = fleet[host.customer]
        if host.db.stanza != customer.stanza:
            raise ValueError(
                f"{inventory_file}: host {host.name} has stanza {host.db.stanza!r}, the customer "
                f"file says {customer.stanza!r}"
            )
        layout = HostLayout(
            pg_port=host.db.port,
            pg_socket_dir=host.db.socket_dir or "",
            pgbackrest_config=host.db.pgbackrest_config,
            conf_d=host.db.conf_d,
        )
        env = emulator_pgbackrest_env() if host.db.s3_emulator_keys else {}
        ssh = inventory.target(host, known_hosts)
        targets[customer.id] = BackupTarget(
            SshPgBackRest(ssh, customer.stanza, layout, env),
            partial(aws_client_for, customer.id, "cloudwatch"),
            via=f"{host.name} over SSH ({ssh.user}@{ssh.host}:{ssh.port})",
        )
    return targets


def inventory_backup_target(
    customer: Customer, inventory_file: Path, fleet: Mapping[str, Customer]
) -> BackupTarget:
    """The customer's production host from the inventory, or ``ValueError``."""
    targets = inventory_backup_targets(inventory_file, fleet)
    if customer.id not in targets:
        raise ValueError(f"{inventory_file}: no production host with a stanza for {customer.id}")
    return targets[customer.id]

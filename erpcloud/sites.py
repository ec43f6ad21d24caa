"""Where a customer's machines run (a *site*), as the capabilities see it (issue 12, item 5).

On AWS the fleet's inventory (``erpcloud inventory --out``, from the stacks' outputs, host keys
pinned from the console) says where each host is; the instance roles sign pgBackRest's requests
and boto3 uses the operations role. The local machines (:mod:`localtarget.site`) are reached the
same way, through an inventory of the same format: what differs is only what AWS would do
through its own APIs or the stack (power an instance off, destroy it, and the AWS endpoint).
That difference is the :class:`LocalSite` protocol below.

Capabilities never import the local implementation: the front doors (the ``erpcloud`` CLI, the
fabfile, the demo) register it with :func:`register_local`, and capabilities ask
:func:`local_site` for it (``None``: nothing runs locally, the fleet on AWS is meant).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol


@dataclass(frozen=True)
class LocalCustomer:
    """A customer's machines as a local site holds them."""

    customer_id: str
    #: For people: what and where ("local machines (/var/lib/erpcloud/machines/acme)").
    description: str
    #: The inventory in the runner's format, host keys pinned, production layout.
    inventory: Path
    #: The operations user's private key (the inventory names it too).
    ssh_key_file: str
    #: Every machine and the site's AWS stand-in are running.
    running: bool
    #: The site's support CA private key (P5), which the machines trust.
    support_ca_key: str = ""


class LocalSite(Protocol):
    """What a local site does that AWS does through its own APIs or the stack."""

    def find(self, customer_id: str) -> LocalCustomer | None:
        """The customer's local machines, if the site holds any (running or stopped)."""
        ...

    def aws_client(self, customer_id: str, service: str, region: str) -> Any:
        """A boto3 client for the AWS stand-in that serves the customer's machines, or
        ``None`` when it is not running (its data is gone with it)."""
        ...

    def stop_instances(self, customer_id: str) -> list[str]:
        """Power the customer's machines off cleanly; disks, backups and the AWS stand-in stay
        (what ``pulumi up`` does for a terminated customer on AWS, S18). What was stopped."""
        ...

    def disk_used_bytes(self, customer_id: str) -> int | None:
        """Bytes on production's data volume, ``None`` once purged."""
        ...

    def remove(self, customer_id: str) -> list[str]:
        """Destroy the customer's machines, volumes and the AWS stand-in; what was removed.
        Callers check the rules first (S18: 60 days, confirmation): this asks nothing."""
        ...


_registered: LocalSite | None = None


def register_local(site: LocalSite | None) -> None:
    """Front doors call this once; ``None`` unregisters (tests)."""
    global _registered
    _registered = site


def local_site() -> LocalSite | None:
    return _registered


def local_customer(customer_id: str) -> tuple[LocalSite, LocalCustomer] | None:
    """The customer's local machines and the site holding them, when the registered local
    site holds any; ``None``: the fleet on AWS is meant."""
    site = _registered
    found = site.find(customer_id) if site is not None else None
    return None if site is None or found is None else (site, found)


class StandInDown(RuntimeError):
    """The local site holds the customer, but its AWS stand-in is not running."""


def aws_client_for(customer_id: str, service: str, region: str) -> Any:
    """A boto3 client where the customer's data is: the local site's AWS stand-in when it holds
    the customer, else AWS through boto3's own configuration (the operations role).

    Raises :class:`StandInDown` when the local stand-in holding the customer is not running:
    falling back to AWS then would act on another copy of the data."""
    found = local_customer(customer_id)
    if found is None:
        import boto3

        return boto3.client(service, region_name=region)
    site, _machines = found
    client = site.aws_client(customer_id, service, region)
    if client is None:
        raise StandInDown(f"{customer_id}: the local AWS stand-in is not running")
    return client

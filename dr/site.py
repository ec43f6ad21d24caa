"""Where a drill runs: the customer's repositories as a drill host reaches them, production's
database (for the point drill's snapshot), the drill host, and the reports bucket.

Two sites. ``machines`` (registered by the front doors from :mod:`localtarget.drillsite`:
capabilities never import the local target): the customer's real machines (``erpcloud local
up``), the emulator behind TLS on the machines' bridge as S3, production (PostgreSQL 17)
reached through the machines' inventory, and by default a drill machine booted from the
customer's image per drill, whose own instance role signs (no keys anywhere), as on AWS.
``aws``: the buckets on AWS (the drill host's instance role signs), production from the
maintenance inventory, and a drill host from the command line or the drill-hosts file.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dr.host import (
    IMAGE_PG_VERSION,
    DatabaseAccess,
    DrillHost,
    DrillHostSpec,
    Shell,
    teardown_recorded,
)
from dr.model import DrillHostRecord, RepoChoice
from dr.plan import DrillRefused
from erpcloud import policy
from erpcloud.inventory import load_inventory, write_known_hosts
from erpcloud.model import Customer, Environment
from erpcloud.render import S3Repo, aws_repos

Progress = Callable[[str], None]
#: Makes a drill host for one drill (its id), saying what it does.
DrillHostFactory = Callable[[str, Progress], DrillHost]


@dataclass
class DrillSite:
    customer: Customer
    name: str
    #: Read with the drill host's instance role: no S3 key is ever handed to a drill host.
    repos: tuple[S3Repo, S3Repo]
    #: Production's database, for the point drill's snapshot; None: point drills are refused.
    production: DatabaseAccess | None = None
    #: A boto3 S3 client in ``policy.DR_REPORTS_REGION``; None: reports stay local.
    reports_client: Callable[[], Any] | None = None
    #: The machines site creates the reports bucket in its emulator; on AWS it is infrastructure.
    create_reports_bucket: bool = False
    #: An existing drill host; None: ``new_drill_host`` makes one per drill.
    drill_host: DrillHostSpec | None = None
    pg_version: int = IMAGE_PG_VERSION
    #: Makes a drill host per drill when none is given; None: a drill host must be given.
    new_drill_host: DrillHostFactory | None = None

    def repo(self, choice: RepoChoice) -> S3Repo:
        return self.repos[choice.repo_key - 1]

    def open_drill_host(self, drill_id: str, progress: Progress = lambda _m: None) -> DrillHost:
        if self.drill_host is not None:
            return DrillHost(self.drill_host, drill_id, self.pg_version)
        if self.new_drill_host is None:
            raise DrillRefused(
                "drill-host",
                "no drill host: give --drill-host (with --drill-host-key) or --drill-hosts FILE",
            )
        return self.new_drill_host(drill_id, progress)


def production_from_inventory(
    path: Path, customer: Customer, known_hosts: Path, *, pg_version: int
) -> DatabaseAccess:
    """Production's database host from the maintenance inventory (P4), its key pinned;
    ``pg_version`` is the PostgreSQL it runs (its programs' folder)."""
    inventory = load_inventory(path, {customer.id: customer})
    host = next(
        (
            h
            for h in inventory.hosts
            if h.customer == customer.id and h.environment is Environment.PRODUCTION
        ),
        None,
    )
    if host is None or host.db is None:
        raise ValueError(f"{path}: no production host with a database for {customer.id}")
    write_known_hosts(inventory, known_hosts)
    shell = Shell(inventory.target(host, known_hosts))
    return DatabaseAccess(shell, host.db.port, host.db.socket_dir, pg_version)


#: Makes a site's drill site for one customer: (customer, work folder, a given drill host).
DrillSiteFactory = Callable[[Customer, Path, DrillHostSpec | None], DrillSite]
#: Removes a drill host a site made for a drill (a drill machine) from the folder its record
#: keeps (``machine_dir``), in any process; says what it did.
MadeHostTeardown = Callable[[Path], list[str]]
#: Sites beyond AWS, registered by the front doors (the local one lives in ``localtarget/``).
_registered: dict[str, DrillSiteFactory] = {}
_made_host_teardown: MadeHostTeardown | None = None


def register_drill_site(
    name: str, factory: DrillSiteFactory, made_host_teardown: MadeHostTeardown | None = None
) -> None:
    """Make ``--site name`` known; ``made_host_teardown`` removes the hosts it makes per drill
    when a kept drill is torn down later (``fab dr.teardown``)."""
    global _made_host_teardown
    _registered[name] = factory
    if made_host_teardown is not None:
        _made_host_teardown = made_host_teardown


def teardown_kept(record: DrillHostRecord, drill_id: str) -> list[str]:
    """Tear down the drill host a ``--keep`` drill left up, from its record: a host made for
    the drill through the site that made it (a drill machine's clean poweroff stops the
    restored cluster, then it is removed), an existing one over SSH (the drill's folder)."""
    if record.machine_dir:
        if _made_host_teardown is None:
            raise ValueError(
                f"{record.name} was made for the drill by a local site, and none is registered "
                "here (run `fab dr.teardown` from the fabfile)"
            )
        return _made_host_teardown(Path(record.machine_dir))
    return teardown_recorded(record, drill_id)


def site_names() -> tuple[str, ...]:
    """Every site a drill may name: the registered ones, then ``aws``."""
    return (*_registered, "aws")


def registered_site(name: str) -> DrillSiteFactory | None:
    return _registered.get(name)


def aws_site(
    customer: Customer, drill_host: DrillHostSpec | None, production: DatabaseAccess | None
) -> DrillSite:
    """The customer's buckets on AWS; credentials come from the hosts' instance roles. The
    drill host runs production's PostgreSQL (a backup restores only with its own major)."""

    def client() -> Any:
        import boto3

        return boto3.client("s3", region_name=policy.DR_REPORTS_REGION)

    return DrillSite(
        customer=customer,
        name="aws",
        repos=aws_repos(customer),
        production=production,
        reports_client=client,
        drill_host=drill_host,
    )

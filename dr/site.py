"""Where a drill runs: the customer's repositories as a drill host reaches them, production's
database (for the point drill's snapshot), the drill host, and the reports bucket.

Three sites, two of them local (registered by the front doors from
:mod:`localtarget.drillsite`: capabilities never import the local stand-in). ``machines``: the
customer's real machines (``erpcloud local up``): the
emulator behind stunnel on the machines' bridge as S3, production (PostgreSQL 17) reached through
the machines' inventory, and by default a drill machine booted from the customer's image per
drill, whose own instance role signs (no keys anywhere), as on AWS. ``local``: the host-process
stand-in (``erpcloud local processes up``, PostgreSQL 15): the emulator as S3 (keys in pgBackRest's
environment), production reached through the local target's inventory, and by default a fresh
sshd host per drill. ``aws``: the buckets on AWS (the drill host's instance role signs),
production from the maintenance inventory, and a drill host from the command line or the
drill-hosts file.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from dr.host import DatabaseAccess, DrillHost, DrillHostSpec, Shell
from dr.model import RepoChoice
from dr.plan import DrillRefused
from erpcloud import policy
from erpcloud.model import Customer, Environment
from erpcloud.render import HostLayout, S3Repo, aws_repos

#: The host-process stand-in runs the operations host's own PostgreSQL.
STAND_IN_PG_VERSION: Final = 15

Progress = Callable[[str], None]
#: Makes a drill host for one drill (its id), saying what it does.
DrillHostFactory = Callable[[str, Progress], DrillHost]


@dataclass
class DrillSite:
    customer: Customer
    name: str
    repos: tuple[S3Repo, S3Repo]
    #: pgBackRest's S3 keys on the drill host (the local emulator's); empty where an instance
    #: role signs (AWS, the machines site).
    s3_env: dict[str, str] = field(default_factory=dict)
    #: Production's database, for the point drill's snapshot; None: point drills are refused.
    production: DatabaseAccess | None = None
    #: A boto3 S3 client in ``policy.DR_REPORTS_REGION``; None: reports stay local.
    reports_client: Callable[[], Any] | None = None
    #: The local sites create the reports bucket in their emulator; on AWS it is infrastructure.
    create_reports_bucket: bool = False
    #: An existing drill host; None: ``new_drill_host`` makes one per drill.
    drill_host: DrillHostSpec | None = None
    pg_version: int = STAND_IN_PG_VERSION
    #: Makes a drill host per drill when none is given; None: a drill host must be given.
    new_drill_host: DrillHostFactory | None = None

    def repo(self, choice: RepoChoice) -> S3Repo:
        return self.repos[choice.repo_key - 1]

    def env_for(self, choice: RepoChoice) -> dict[str, str]:
        """The chosen repository's keys only: the drill host can reach no other repository
        (pgBackRest also takes another repository's key as that repository configured)."""
        prefix = f"PGBACKREST_REPO{choice.repo_key}_"
        return {k: v for k, v in self.s3_env.items() if k.startswith(prefix)}

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
    from maintenance.inventory import load_inventory, write_known_hosts

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
#: Sites beyond AWS, registered by the front doors (the local ones live in ``localtarget/``).
_registered: dict[str, DrillSiteFactory] = {}


def register_drill_site(name: str, factory: DrillSiteFactory) -> None:
    _registered[name] = factory


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
        pg_version=HostLayout().pg_version,
    )

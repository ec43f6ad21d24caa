"""Where a drill runs: the customer's repositories as a drill host reaches them, production's
database (for the point drill's snapshot), the drill host, and the reports bucket.

Two sites. ``local``: the customer's running local target (``erpcloud local up``): the emulator
behind stunnel as S3 (keys in pgBackRest's environment), production reached through the local
target's inventory, and by default a fresh sshd host per drill. ``aws``: the buckets on AWS
(the drill host's instance role signs: no keys anywhere), production from the maintenance
inventory, and a drill host from the command line or the drill-hosts file.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dr.host import (
    DatabaseAccess,
    DrillHost,
    DrillHostSpec,
    Shell,
    create_local_drill_host,
)
from dr.model import RepoChoice
from dr.plan import DrillRefused
from erpcloud import policy
from erpcloud.model import Customer, Environment
from erpcloud.render import S3Repo, aws_repos


@dataclass
class DrillSite:
    customer: Customer
    name: str
    repos: tuple[S3Repo, S3Repo]
    #: pgBackRest's S3 keys on the drill host (the local emulator's); empty on AWS.
    s3_env: dict[str, str] = field(default_factory=dict)
    #: Production's database, for the point drill's snapshot; None: point drills are refused.
    production: DatabaseAccess | None = None
    #: A boto3 S3 client in ``policy.DR_REPORTS_REGION``; None: reports stay local.
    reports_client: Callable[[], Any] | None = None
    #: The local target creates the reports bucket in its emulator; on AWS it is infrastructure.
    create_reports_bucket: bool = False
    #: An existing drill host; None: a fresh local one per drill (local site only).
    drill_host: DrillHostSpec | None = None
    pg_version: int = 15

    def repo(self, choice: RepoChoice) -> S3Repo:
        return self.repos[choice.repo_key - 1]

    def env_for(self, choice: RepoChoice) -> dict[str, str]:
        """The chosen repository's keys only: the drill host can reach no other repository
        (pgBackRest also takes another repository's key as that repository configured)."""
        prefix = f"PGBACKREST_REPO{choice.repo_key}_"
        return {k: v for k, v in self.s3_env.items() if k.startswith(prefix)}

    def open_drill_host(self, drill_id: str) -> DrillHost:
        if self.drill_host is not None:
            return DrillHost(self.drill_host, drill_id, self.pg_version)
        if self.name != "local":
            raise DrillRefused(
                "drill-host",
                "no drill host: give --drill-host (with --drill-host-key) or --drill-hosts FILE",
            )
        spec, host = create_local_drill_host(drill_id)
        return DrillHost(spec, drill_id, self.pg_version, local_host=host)


def production_from_inventory(path: Path, customer: Customer, known_hosts: Path) -> DatabaseAccess:
    """Production's database host from the maintenance inventory (P4), its key pinned."""
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
    return DatabaseAccess(shell, host.db.port, host.db.socket_dir)


def local_site(
    customer: Customer, work_dir: Path, drill_host: DrillHostSpec | None = None
) -> DrillSite:
    """The customer's running local target (raises if it is not up)."""
    from localtarget.instance import local_repos
    from localtarget.target import attach

    running = attach(customer)
    production = production_from_inventory(
        Path(running.state.inventory), customer, work_dir / "production_known_hosts"
    )
    return DrillSite(
        customer=customer,
        name="local",
        repos=local_repos(customer, running.aws),
        s3_env=running.aws.pgbackrest_env(),
        production=production,
        reports_client=lambda: running.aws.client("s3", policy.DR_REPORTS_REGION),
        create_reports_bucket=True,
        drill_host=drill_host,
    )


def aws_site(
    customer: Customer, drill_host: DrillHostSpec | None, production: DatabaseAccess | None
) -> DrillSite:
    """The customer's buckets on AWS; credentials come from the hosts' instance roles."""

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

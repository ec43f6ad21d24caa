"""A customer's database host, locally: PostgreSQL 15 configured by the rendered files.

The cluster gets the same ``conf.d`` fragment and ``pgbackrest.conf`` that production gets
(:mod:`erpcloud.render`), rendered with a local :class:`HostLayout` (private paths and port) and
local repositories (the emulator behind stunnel, S3 keys from the environment). Only where things
are differs; the policy (archiving, timeout, retention, two repositories) is the customer's.
"""

from __future__ import annotations

import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from erpcloud.aws import bucket_location
from erpcloud.model import Customer, Environment
from erpcloud.render import (
    HostLayout,
    S3Repo,
    render_pgbackrest_conf,
    render_postgresql_conf,
)
from localtarget.postgres import PostgresCluster, chown_to_postgres, run_as_postgres
from localtarget.processes import LOOPBACK, free_port
from localtarget.s3 import LocalAws

PGBACKREST = "/usr/bin/pgbackrest"


def emulator_repos(
    customer: Customer, endpoint: str, port: int, key_type: str
) -> tuple[S3Repo, S3Repo]:
    """The customer's two repositories (S6) on the emulator's TLS proxy at ``endpoint:port``;
    ``key_type`` ``shared`` (keys in pgBackRest's environment) or ``auto`` (the instance role
    through IMDSv2, on the machines)."""
    primary, copy = customer.backup_bucket_names

    def repo(index: int, bucket: str, region: str) -> S3Repo:
        return S3Repo(
            index=index,
            bucket=bucket,
            region=region,
            endpoint=endpoint,
            port=port,
            verify_tls=False,  # stunnel's throwaway certificate
            uri_style="path",
            key_type=key_type,
        )

    return repo(1, primary, customer.region), repo(2, copy, customer.backup_copy_region)


def local_repos(customer: Customer, aws: LocalAws) -> tuple[S3Repo, S3Repo]:
    """On the host-process target: keys from the environment, never a file."""
    return emulator_repos(customer, LOOPBACK, aws.tls_port, key_type="shared")


def local_layout(root: Path, port: int) -> HostLayout:
    """Production's layout moved into ``root`` (which must be traversable by ``postgres``)."""
    return HostLayout(
        pg_data=str(root / "pg" / "data"),
        pg_port=port,
        pg_socket_dir=str(root / "pg" / "socket"),
        listen_addresses=LOOPBACK,
        pgbackrest_config=str(root / "pgbackrest" / "pgbackrest.conf"),
        spool_path=str(root / "pgbackrest" / "spool"),
        log_path=str(root / "pgbackrest" / "log"),
        lock_path=str(root / "pgbackrest" / "lock"),
        data_mount=str(root / "pg"),
        conf_d=str(root / "pg" / "data" / "conf.d"),
        block_incremental=False,  # Debian 12's pgBackRest 2.45 predates it
    )


def create_buckets(aws: LocalAws, customer: Customer) -> None:
    """Create the two backup buckets in the emulator, each in its region (S6)."""
    for bucket, region in zip(
        customer.backup_bucket_names, (customer.region, customer.backup_copy_region), strict=True
    ):
        client = aws.client("s3", region)
        existing = {b["Name"] for b in client.list_buckets().get("Buckets", [])}
        if bucket not in existing:
            client.create_bucket(Bucket=bucket, **bucket_location(region))


@dataclass
class LocalInstance:
    """One customer's production database host: cluster, rendered configs, pgBackRest."""

    customer: Customer
    root: Path
    aws: LocalAws
    cluster: PostgresCluster
    layout: HostLayout
    repos: tuple[S3Repo, S3Repo]

    @classmethod
    def create(
        cls, customer: Customer, root: Path, aws: LocalAws, port: int | None = None
    ) -> LocalInstance:
        """Initialise the cluster and write the rendered files; the cluster is not started."""
        chosen_port = port or free_port()
        layout = local_layout(root, chosen_port)
        repos = local_repos(customer, aws)
        root.mkdir(parents=True, exist_ok=True)
        root.chmod(0o755)
        backrest_dir = Path(layout.pgbackrest_config).parent
        for directory in (
            backrest_dir,
            Path(layout.spool_path),
            Path(layout.log_path),
            Path(layout.lock_path),
        ):
            directory.mkdir(parents=True, exist_ok=True)
            chown_to_postgres(directory)
        config = Path(layout.pgbackrest_config)
        config.write_text(render_pgbackrest_conf(customer, layout, repos))
        config.chmod(0o640)
        chown_to_postgres(config)
        cluster = PostgresCluster(root / "pg", port=chosen_port, env=aws.pgbackrest_env())
        cluster.init()
        cluster.write_conf(
            "erpcloud.conf", render_postgresql_conf(customer, layout, Environment.PRODUCTION)
        )
        return cls(customer, root, aws, cluster, layout, repos)

    @property
    def config_path(self) -> Path:
        return Path(self.layout.pgbackrest_config)

    def pgbackrest_env(self) -> dict[str, str]:
        return {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", **self.aws.pgbackrest_env()}

    def pgbackrest(
        self, *args: str, check: bool = True, timeout: float = 900
    ) -> subprocess.CompletedProcess[str]:
        """Run ``pgbackrest --config=... --stanza=<customer> ARGS`` as ``postgres``."""
        argv = [
            PGBACKREST,
            f"--config={self.config_path}",
            f"--stanza={self.customer.stanza}",
            *args,
        ]
        return run_as_postgres(argv, env=self.pgbackrest_env(), check=check, timeout=timeout)

    def switch_wal_and_wait(self, timeout: float = 90) -> str:
        """Close the current WAL segment and wait until the archiver has shipped it (to both
        repositories: one ``archive-push`` sends each segment to both). Returns its name."""
        psql = self.cluster.psql
        segment = psql("SELECT pg_walfile_name(pg_switch_wal())")
        deadline = time.monotonic() + timeout
        while psql("SELECT coalesce(last_archived_wal, '') FROM pg_stat_archiver") < segment:
            if time.monotonic() > deadline:
                raise RuntimeError(f"WAL segment {segment} not archived within {timeout:.0f} s")
            time.sleep(0.5)
        return segment

    def start(self) -> None:
        self.cluster.start()

    def stop(self) -> None:
        self.cluster.stop()

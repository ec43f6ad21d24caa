"""Shared fixtures: sample customers, and the real local servers (started once, stopped by PID).

Servers are session-scoped: moto with stunnel in front, and factories for PostgreSQL clusters
(run as ``postgres``) and sshd hosts. Each is stopped in the fixture's finalizer, which pytest
runs also when a test fails.
"""

from __future__ import annotations

import copy
import itertools
import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from erpcloud.fleet import load_fleet
from erpcloud.model import Customer
from localtarget.postgres import PostgresCluster
from localtarget.processes import make_state_root
from localtarget.s3 import LocalAws
from localtarget.sshhost import HostUser, SshHost, generate_keypair

REPO_ROOT = Path(__file__).resolve().parent.parent
CUSTOMERS = REPO_ROOT / "customers"


@pytest.fixture(scope="session")
def sample_fleet() -> dict[str, Customer]:
    fleet = load_fleet(CUSTOMERS)
    assert fleet.ok, fleet.errors
    return fleet.customers


@pytest.fixture
def acme_document() -> dict[str, Any]:
    """A fresh, mutable copy of a valid customer document to break in tests."""
    data = yaml.safe_load((CUSTOMERS / "acme-retail.yaml").read_text())
    return copy.deepcopy(data)


@pytest.fixture(scope="session")
def state_root() -> Iterator[Path]:
    root = make_state_root("pytest-")
    yield root
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def local_aws(state_root: Path) -> Iterator[LocalAws]:
    """moto in server mode on loopback, with stunnel4 giving it TLS for pgBackRest."""
    aws = LocalAws(state_root / "aws")
    try:
        aws.start()
        yield aws
    finally:
        aws.stop()


_ISOLATED = itertools.count()


@pytest.fixture
def isolated_aws(state_root: Path) -> Iterator[LocalAws]:
    """An emulator of its own, for a test that creates names the shared one may already hold."""
    aws = LocalAws(state_root / f"aws-isolated-{next(_ISOLATED)}")
    try:
        aws.start()
        yield aws
    finally:
        aws.stop()


@pytest.fixture(scope="session")
def pg_cluster_factory(state_root: Path) -> Iterator[Callable[..., PostgresCluster]]:
    """Make private PostgreSQL 15 clusters; every one is stopped by PID at the end."""
    clusters: list[PostgresCluster] = []
    counter = itertools.count()

    def make(env: dict[str, str] | None = None, start: bool = True) -> PostgresCluster:
        cluster = PostgresCluster(state_root / f"pg-{next(counter)}", env=env or {})
        clusters.append(cluster)
        cluster.init()
        if start:
            cluster.start()
        return cluster

    try:
        yield make
    finally:
        for cluster in clusters:
            cluster.stop()


@pytest.fixture(scope="session")
def client_key(state_root: Path) -> tuple[Path, str]:
    """The key pair the tests' SSH client (the Fabric runner) logs in with."""
    path = state_root / "client" / "id_ed25519"
    return path, generate_keypair(path, "erpcloud-tests")


@pytest.fixture(scope="session")
def ssh_host_factory(
    state_root: Path, client_key: tuple[Path, str]
) -> Iterator[Callable[..., SshHost]]:
    """Make sshd hosts on loopback, each with its own host key, user and state folder."""
    hosts: list[SshHost] = []
    counter = itertools.count()
    tag = f"{os.getpid() % 10000}"

    def make(name: str | None = None, sudo: bool = True) -> SshHost:
        index = next(counter)
        host_name = name or f"host{index}"
        user = HostUser(f"erpt{tag}h{index}", (client_key[1],), sudo=sudo)
        host = SshHost(host_name, state_root / f"ssh-{index}", [user])
        hosts.append(host)
        host.setup()
        host.start()
        return host

    try:
        yield make
    finally:
        for host in hosts:
            host.remove()

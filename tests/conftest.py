"""Shared fixtures: sample customers, and the real local servers (started once, stopped by PID).

Servers are session-scoped: moto with stunnel in front, and a factory for private PostgreSQL
clusters on the host (run as ``postgres``: a customer's on-premises server in the move-in
tests, the stand-in product's own database). Each is stopped in the fixture's finalizer, which
pytest runs also when a test fails. Machines are booted by the modules that need them.
"""

from __future__ import annotations

import copy
import itertools
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


def copy_sample(directory: Path, sample: str, customer_id: str, **changes: Any) -> Customer:
    """A sample customer under an id and prefix of its own, so that its state folder, machine
    names and buckets are its module's alone; ``changes`` replace top-level sections' keys."""
    document = yaml.safe_load((CUSTOMERS / f"{sample}.yaml").read_text())
    document["id"] = customer_id
    document["prefix"] = customer_id.replace("-", "")
    for section, values in changes.items():
        document.setdefault(section, {}).update(values)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / f"{customer_id}.yaml").write_text(yaml.safe_dump(document, sort_keys=False))
    fleet = load_fleet(directory)
    assert fleet.ok, fleet.errors
    return fleet.customers[customer_id]

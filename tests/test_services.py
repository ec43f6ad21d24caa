"""The host's own components, started the way the tests and the local site start them: a
private PostgreSQL cluster as `postgres` (an on-premises server in the move-in tests), moto
behind stunnel (TLS). sshd, pinned host keys and refusals are checked on booted machines
(`tests/test_machines.py`)."""

from __future__ import annotations

import ssl
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest

from localtarget.postgres import PostgresCluster
from localtarget.processes import pid_alive, port_open
from localtarget.s3 import LocalAws

pytestmark = pytest.mark.services


def test_postgres_runs_as_postgres_not_root(pg_cluster_factory: Callable[..., PostgresCluster]):
    cluster = pg_cluster_factory()
    assert cluster.psql("SHOW server_version_num").startswith("15")
    assert cluster.psql("SHOW data_checksums") == "on"
    owner = Path(f"/proc/{cluster.pid}").stat().st_uid
    assert owner != 0 and owner == cluster.data_dir.stat().st_uid


def test_a_stopped_cluster_is_gone_by_pid(pg_cluster_factory: Callable[..., PostgresCluster]):
    cluster = pg_cluster_factory()
    pid, port = cluster.pid, cluster.port
    cluster.stop()
    assert not pid_alive(pid) and not port_open(port)


def test_s3_emulator_answers_over_tls(local_aws: LocalAws):
    s3 = local_aws.client("s3", "eu-west-1")
    s3.create_bucket(
        Bucket="tls-probe", CreateBucketConfiguration={"LocationConstraint": "eu-west-1"}
    )
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # stunnel's throwaway certificate, as pgBackRest sees it
    url = f"https://127.0.0.1:{local_aws.tls_port}/tls-probe?list-type=2"
    with urllib.request.urlopen(url, context=context, timeout=10) as response:
        assert response.status == 200 and b"ListBucketResult" in response.read()

"""The real components this platform drives, started the way the tests and the local target
start them: PostgreSQL as `postgres`, moto behind stunnel (TLS), sshd with pinned host keys."""

from __future__ import annotations

import ssl
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest

from erpcloud.ssh import HostKeyError, SshTarget, connect, run, run_as_root
from localtarget.postgres import PostgresCluster
from localtarget.processes import pid_alive, port_open
from localtarget.s3 import LocalAws
from localtarget.sshhost import SshHost

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


def _target(host: SshHost, key: Path, known_hosts: Path) -> SshTarget:
    return SshTarget("127.0.0.1", host.port, host.users[0].name, key, known_hosts)


def test_ssh_connects_only_to_a_pinned_host(
    ssh_host_factory: Callable[..., SshHost], client_key: tuple[Path, str], tmp_path: Path
):
    host = ssh_host_factory()
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text(host.known_hosts_line() + "\n")
    connection = connect(_target(host, client_key[0], known_hosts))
    try:
        assert run(connection, "id -un").stdout.strip() == host.users[0].name
        assert run_as_root(connection, "id -u").stdout.strip() == "0"
    finally:
        connection.close()
    known_hosts.write_text("")
    with pytest.raises(HostKeyError, match="no pinned host key"):
        connect(_target(host, client_key[0], known_hosts))


def test_changed_host_key_is_refused(
    ssh_host_factory: Callable[..., SshHost], client_key: tuple[Path, str], tmp_path: Path
):
    host = ssh_host_factory()
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text(host.known_hosts_line() + "\n")
    host.regenerate_host_key()
    with pytest.raises(HostKeyError, match="host key changed"):
        connect(_target(host, client_key[0], known_hosts))


def test_hosts_have_their_own_users_and_state(ssh_host_factory: Callable[..., SshHost]):
    first, second = ssh_host_factory(), ssh_host_factory()
    assert first.users[0].name != second.users[0].name
    assert first.state_dir != second.state_dir
    assert first.host_public_key() != second.host_public_key()

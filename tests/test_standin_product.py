"""The stand-in product (issue 12): its archive, and a real run of ``erp-server``.

The archive is built twice and compared byte for byte, checked with the real ``sha256sum`` and
extracted with the same ``tar`` command as the image's build step. The server is run from that
extracted archive with the host's ``/usr/bin/python3`` against a private PostgreSQL cluster in
which role ``erp`` must log in with its password (scram, no trust), and asked over TLS,
verified against the certificate it made. ``ERP_STANDIN_PYTHON=/path/to/python3.13`` runs the
server (and the standard-library check) with another interpreter.
"""

from __future__ import annotations

import hashlib
import http.client
import itertools
import json
import os
import secrets
import signal
import socket
import ssl
import stat
import subprocess
import tarfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql

from localtarget import product
from localtarget.postgres import PostgresCluster, chown_to_postgres
from localtarget.processes import LOOPBACK, ManagedProcess, free_port

#: The product image runs it with Debian 13's python3.13; set ERP_STANDIN_PYTHON to try one.
HOST_PYTHON = os.environ.get("ERP_STANDIN_PYTHON", "/usr/bin/python3")
PUBLIC_HOST = "standin.erp.example"
RELEASE = "26Q1"
EDITION = "commerce"


# --- The archive -------------------------------------------------------------------------------


def test_archive_is_deterministic_and_its_sha256_file_checks(tmp_path: Path):
    first, digest = product.build_product_archive(RELEASE, tmp_path / "a")
    second, digest_again = product.build_product_archive(RELEASE, tmp_path / "b")

    assert first.name == f"erp-{RELEASE}.tar.gz"
    assert first.read_bytes() == second.read_bytes()
    assert digest == digest_again == hashlib.sha256(first.read_bytes()).hexdigest()
    checksum = first.with_name(f"{first.name}.sha256")
    assert checksum.read_text() == f"{digest}  erp-{RELEASE}.tar.gz\n"
    check = subprocess.run(
        ["sha256sum", "--check", "--strict", checksum.name],
        cwd=first.parent,
        capture_output=True,
        text=True,
        check=False,
    )
    assert check.returncode == 0, check.stdout + check.stderr
    # The gzip header carries no name and no time (MTIME is bytes 4-7).
    header = first.read_bytes()[:10]
    assert header[:2] == b"\x1f\x8b"
    assert header[4:8] == b"\0\0\0\0"
    assert header[3] & 0x08 == 0  # FNAME flag unset


def test_another_release_is_another_archive(tmp_path: Path):
    one, one_digest = product.build_product_archive("25Q4", tmp_path)
    two, two_digest = product.build_product_archive("26Q1", tmp_path)
    assert one != two
    assert one_digest != two_digest
    with tarfile.open(two) as tar:
        note = tar.extractfile("STAND-IN.txt")
        assert note is not None
        assert note.read().decode().startswith("erp-26Q1: the erpcloud STAND-IN")


@pytest.mark.parametrize("release", ["", "../26Q1", "26 Q1", "-26Q1", "26Q1/x"])
def test_a_release_that_cannot_name_a_file_is_refused(tmp_path: Path, release: str):
    with pytest.raises(ValueError, match="release"):
        product.build_product_archive(release, tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_archive_members_modes_and_owners(tmp_path: Path):
    archive, _ = product.build_product_archive(RELEASE, tmp_path)
    with tarfile.open(archive, "r:gz") as tar:
        members = tar.getmembers()
        assert [m.name for m in members] == ["STAND-IN.txt", "bin", "bin/erp-server"]
        by_name = {m.name: m for m in members}
        server = by_name["bin/erp-server"]
        assert server.isfile()
        assert stat.S_IMODE(server.mode) == 0o755
        assert by_name["bin"].isdir()
        assert stat.S_IMODE(by_name["STAND-IN.txt"].mode) == 0o644
        for member in members:
            assert (member.mtime, member.uid, member.gid) == (0, 0, 0), member.name
        script = tar.extractfile(server)
        assert script is not None
        content = script.read()
    assert content == product.server_script()
    assert content.startswith(b"#!/usr/bin/python3")
    assert b"STAND-IN for the ERP product" in content


def test_source_digest_is_stable_and_covers_the_script():
    digest = product.product_source_digest()
    assert len(digest) == 64
    assert int(digest, 16) >= 0
    assert digest == product.product_source_digest()
    assert digest != hashlib.sha256(b"").hexdigest()


def test_the_script_is_standard_library_only():
    """Every import in erp-server resolves on the host's bare python3 (no venv, isolated)."""
    code = product.server_script().decode()
    imports = sorted(
        {
            line.split()[1].split(".")[0]
            for line in code.splitlines()
            if line.startswith(("import ", "from ")) and "__future__" not in line
        }
    )
    assert "psycopg" not in imports
    result = subprocess.run(
        [HOST_PYTHON, "-I", "-c", "import " + ", ".join(imports)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr


# --- A real run --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The archive extracted as the image build step does it: the ``/opt/erp`` stand-in."""
    build = tmp_path_factory.mktemp("product-build")
    archive, _ = product.build_product_archive(RELEASE, build)
    opt_erp = build / "opt-erp"
    opt_erp.mkdir()
    subprocess.run(["tar", "-xzf", str(archive), "-C", str(opt_erp), "--no-same-owner"], check=True)
    assert os.access(opt_erp / "bin" / "erp-server", os.X_OK)
    return opt_erp


@dataclass
class ErpDatabase:
    cluster: PostgresCluster
    password: str

    def connect(self) -> psycopg.Connection[Any]:
        return psycopg.connect(self.cluster.conninfo("erp"), autocommit=True)


def _require_password_for_erp(cluster: PostgresCluster) -> None:
    """Role ``erp`` logs in over TCP with its password only (initdb's default is trust)."""
    hba = cluster.data_dir / "pg_hba.conf"
    rules = (
        "host all erp 127.0.0.1/32 scram-sha-256\n"
        "host all erp ::1/128 scram-sha-256\n"
        "local all erp reject\n"
    )
    hba.write_text(rules + hba.read_text())
    chown_to_postgres(hba)
    cluster.psql("SELECT pg_reload_conf()")


def _make_erp_database(make: Callable[..., PostgresCluster]) -> ErpDatabase:
    """What provisioning does before the product starts: role ``erp`` and database ``erp``."""
    cluster = make()
    _require_password_for_erp(cluster)
    password = f"pw-{secrets.token_urlsafe(18)}"
    with psycopg.connect(cluster.dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE ROLE erp LOGIN PASSWORD {}").format(sql.Literal(password)))
        conn.execute("CREATE DATABASE erp OWNER erp")
    return ErpDatabase(cluster, password)


@pytest.fixture(scope="module")
def shared_database(pg_cluster_factory: Callable[..., PostgresCluster]) -> ErpDatabase:
    return _make_erp_database(pg_cluster_factory)


@pytest.fixture
def erp_database(shared_database: ErpDatabase) -> Iterator[ErpDatabase]:
    """The shared database without the product's schema, and the right password, per test."""
    with psycopg.connect(shared_database.cluster.conninfo("erp"), autocommit=True) as conn:
        conn.execute("DROP TABLE IF EXISTS erp_system_info")
        conn.execute(
            sql.SQL("ALTER ROLE erp PASSWORD {}").format(sql.Literal(shared_database.password))
        )
    yield shared_database


@dataclass
class ErpServer:
    process: ManagedProcess
    port: int
    state_dir: Path
    env: dict[str, str] = field(repr=False)

    @property
    def certificate(self) -> Path:
        return self.state_dir / "tls" / f"{PUBLIC_HOST}.pem"

    @property
    def key(self) -> Path:
        return self.state_dir / "tls" / f"{PUBLIC_HOST}.key"

    def output(self) -> str:
        return self.process.log_path.read_text(errors="replace")

    def request(self, path: str, host: str = PUBLIC_HOST) -> tuple[int, bytes, str]:
        """GET over TLS, verified against the server's own certificate for ``host``."""
        context = ssl.create_default_context(cafile=str(self.certificate))
        context.verify_flags |= ssl.VERIFY_X509_STRICT  # as Python 3.13 clients do
        connection = _LoopbackHTTPS(host, self.port, tls=context, timeout=30)
        try:
            connection.request("GET", path)
            response = connection.getresponse()
            tls_version = connection.tls_version
            return response.status, response.read(), tls_version
        finally:
            connection.close()

    def health(self) -> tuple[int, dict[str, Any]]:
        status, body, _ = self.request("/health")
        return status, json.loads(body)


class _LoopbackHTTPS(http.client.HTTPSConnection):
    """HTTPS to 127.0.0.1, with SNI and certificate checks for the public host name."""

    def __init__(self, host: str, port: int, tls: ssl.SSLContext, timeout: float) -> None:
        super().__init__(host, port, timeout=timeout, context=tls)
        self.tls = tls
        self.tls_version = ""

    def connect(self) -> None:
        raw = socket.create_connection((LOOPBACK, self.port), self.timeout)
        wrapped = self.tls.wrap_socket(raw, server_hostname=self.host)
        self.tls_version = wrapped.version() or ""
        self.sock = wrapped


def server_env(database: ErpDatabase, root: Path, port: int) -> dict[str, str]:
    secrets_dir = root / "etc-erp"
    secrets_dir.mkdir(parents=True, exist_ok=True)
    (secrets_dir / "activation.key").write_text("local-activation-key\n")
    (secrets_dir / "db-password").write_text(database.password + "\n")
    for name in ("activation.key", "db-password"):
        (secrets_dir / name).chmod(0o400)
    return {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "LANG": "C.UTF-8",
        "ERP_HTTPS_PORT": str(port),
        "ERP_HTTPS_ADDRESS": LOOPBACK,
        "ERP_PUBLIC_URL": f"https://{PUBLIC_HOST}",
        "ERP_ACTIVATION_KEY_FILE": str(secrets_dir / "activation.key"),
        "ERP_DB_PASSWORD_FILE": str(secrets_dir / "db-password"),
        "ERP_EDITION": EDITION,
        "ERP_VERSION": RELEASE,
        "ERP_STATE_DIRECTORY": str(root / "state"),
        "ERP_DB_HOST": LOOPBACK,
        "ERP_DB_PORT": str(database.cluster.port),
    }


_RUNS = itertools.count()


@pytest.fixture
def start_server(installed: Path, tmp_path: Path) -> Iterator[Callable[..., ErpServer]]:
    """Start ``erp-server`` (host python3, deprecations are errors); stopped by PID at the end."""
    started: list[ManagedProcess] = []

    def start(database: ErpDatabase, root: Path | None = None, **overrides: str) -> ErpServer:
        root = root or tmp_path
        port = free_port()
        env = {**server_env(database, root, port), **overrides}
        process = ManagedProcess(
            name="erp-server",
            argv=[
                HOST_PYTHON,
                "-I",
                "-W",
                "error::DeprecationWarning",
                str(installed / "bin" / "erp-server"),
            ],
            log_path=tmp_path / f"erp-server-{next(_RUNS)}.log",
            env=env,
        )
        started.append(process)
        process.start()
        process.wait_for_port(port, timeout=90)
        return ErpServer(process, port, Path(env["ERP_STATE_DIRECTORY"]), env)

    try:
        yield start
    finally:
        for process in started:
            process.stop(timeout=10)


@pytest.mark.services
def test_health_answers_the_version_from_the_database_over_verified_tls(
    erp_database: ErpDatabase, start_server: Callable[..., ErpServer]
):
    server = start_server(erp_database)

    status, body = server.health()
    assert status == 200, body
    assert body == {
        "status": "ok",
        "product": "erpcloud stand-in product",
        "edition": EDITION,
        "version": RELEASE,
    }
    _, _, tls_version = server.request("/health")
    assert tls_version in {"TLSv1.2", "TLSv1.3"}

    # The product made its own schema, with the values it was given, as role erp.
    with erp_database.connect() as conn:
        row = conn.execute(
            "SELECT id, edition, version, pg_get_userbyid(c.relowner)"
            " FROM erp_system_info, pg_class c WHERE c.relname = 'erp_system_info'"
        ).fetchone()
    assert row == (1, EDITION, RELEASE, "erp")

    # A P-256 self-signed certificate for the public host; its key readable by its owner only.
    assert stat.S_IMODE(server.key.stat().st_mode) == 0o600
    text = subprocess.run(
        ["openssl", "x509", "-in", str(server.certificate), "-noout", "-text"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "prime256v1" in text
    assert f"DNS:{PUBLIC_HOST}" in text

    # The certificate is for that host only.
    with pytest.raises(ssl.SSLCertVerificationError):
        server.request("/health", host="other.erp.example")

    log = server.output()
    assert "STAND-IN" in log
    assert "GET /health 200" in log
    assert erp_database.password not in log


@pytest.mark.services
def test_root_page_unknown_path_and_query_strings_in_the_log(
    erp_database: ErpDatabase, start_server: Callable[..., ErpServer]
):
    server = start_server(erp_database)

    status, page, _ = server.request("/")
    assert status == 200
    assert b"stand-in" in page

    status, _, _ = server.request("/admin")
    assert status == 404
    status, _, _ = server.request("/health/extra")
    assert status == 404

    status, _, _ = server.request("/health?token=s3cr3t-in-query")
    assert status == 200
    log = server.output()
    assert "GET /admin 404" in log
    assert "s3cr3t-in-query" not in log


@pytest.mark.services
def test_wrong_password_gives_503_without_the_password(
    erp_database: ErpDatabase, start_server: Callable[..., ErpServer]
):
    server = start_server(erp_database)
    assert server.health()[0] == 200

    other = f"pw-{secrets.token_urlsafe(18)}"
    with erp_database.connect() as conn:
        conn.execute(sql.SQL("ALTER ROLE erp PASSWORD {}").format(sql.Literal(other)))

    status, body = server.health()
    assert status == 503
    assert body["status"] == "unavailable"
    assert "password authentication failed" in body["reason"]
    raw = json.dumps(body)
    assert erp_database.password not in raw
    assert other not in raw
    log = server.output()
    assert "GET /health 503" in log
    assert erp_database.password not in log

    # Back to the right password: healthy again without a restart.
    with erp_database.connect() as conn:
        conn.execute(
            sql.SQL("ALTER ROLE erp PASSWORD {}").format(sql.Literal(erp_database.password))
        )
    assert server.health()[0] == 200


@pytest.mark.services
def test_stopped_postgresql_gives_503_then_sigterm_stops_cleanly(
    pg_cluster_factory: Callable[..., PostgresCluster],
    start_server: Callable[..., ErpServer],
):
    database = _make_erp_database(pg_cluster_factory)  # its own cluster: this test stops it
    server = start_server(database)
    assert server.health()[0] == 200

    database.cluster.stop()
    status, body = server.health()
    assert status == 503
    assert body["status"] == "unavailable"
    assert body["reason"]
    assert database.password not in json.dumps(body)

    assert server.process.process is not None
    server.process.process.send_signal(signal.SIGTERM)
    assert server.process.process.wait(timeout=15) == 0
    log = server.output()
    assert "SIGTERM received, stopping" in log
    assert log.rstrip().endswith("erp-server: stopped")
    assert database.password not in log


@pytest.mark.services
def test_restart_keeps_certificate_and_installed_row(
    erp_database: ErpDatabase, start_server: Callable[..., ErpServer], tmp_path: Path
):
    first = start_server(erp_database, root=tmp_path / "machine")
    certificate = first.certificate.read_bytes()
    with erp_database.connect() as conn:
        installed_at = conn.execute("SELECT installed_at FROM erp_system_info").fetchone()
    first.process.stop()

    # A newer ERP_VERSION in the unit does not rewrite what the database holds.
    second = start_server(erp_database, root=tmp_path / "machine", ERP_VERSION="26Q2")
    assert second.certificate.read_bytes() == certificate
    status, body = second.health()
    assert (status, body["version"]) == (200, RELEASE)
    with erp_database.connect() as conn:
        assert conn.execute("SELECT installed_at FROM erp_system_info").fetchone() == installed_at
        assert conn.execute("SELECT count(*) FROM erp_system_info").fetchone() == (1,)


@pytest.mark.services
def test_values_reach_the_database_as_data_not_sql(
    erp_database: ErpDatabase, start_server: Callable[..., ErpServer]
):
    edition = "commerce'); DROP TABLE erp_system_info; --"
    version = "26Q1 :'x' \\echo hi"
    server = start_server(erp_database, ERP_EDITION=edition, ERP_VERSION=version)
    status, body = server.health()
    assert status == 200
    assert (body["edition"], body["version"]) == (edition, version)
    with erp_database.connect() as conn:
        assert conn.execute("SELECT edition, version FROM erp_system_info").fetchone() == (
            edition,
            version,
        )


def _run_directly(installed: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """``/opt/erp/bin/erp-server`` as systemd runs it: executed, through its ``#!`` line."""
    return subprocess.run(
        [str(installed / "bin" / "erp-server")],
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )


@pytest.mark.services
@pytest.mark.parametrize("how", ["unset", "no such file", "empty"])
def test_missing_password_file_stops_start_up_naming_the_variable(
    installed: Path, shared_database: ErpDatabase, tmp_path: Path, how: str
):
    env = server_env(shared_database, tmp_path, free_port())
    if how == "unset":
        del env["ERP_DB_PASSWORD_FILE"]
    elif how == "no such file":
        env["ERP_DB_PASSWORD_FILE"] = str(tmp_path / "nowhere" / "db-password")
    else:
        Path(env["ERP_DB_PASSWORD_FILE"]).chmod(0o600)
        Path(env["ERP_DB_PASSWORD_FILE"]).write_text("\n")

    result = _run_directly(installed, env)
    assert result.returncode != 0
    assert "ERP_DB_PASSWORD_FILE" in result.stderr
    assert not (tmp_path / "state").exists()  # nothing made before the settings are right


@pytest.mark.services
def test_every_missing_variable_is_named_at_once(
    installed: Path, shared_database: ErpDatabase, tmp_path: Path
):
    env = server_env(shared_database, tmp_path, free_port())
    for name in ("ERP_HTTPS_PORT", "ERP_EDITION"):
        del env[name]
    env["ERP_PUBLIC_URL"] = "http://plain.example"
    result = _run_directly(installed, env)
    assert result.returncode == 2
    for name in ("ERP_HTTPS_PORT", "ERP_EDITION", "ERP_PUBLIC_URL"):
        assert name in result.stderr
    assert shared_database.password not in result.stderr

"""The AWS API on loopback: moto in server mode, with stunnel4 giving it TLS.

pgBackRest 2.45 speaks only TLS to S3 and fails against moto's own ``--ssl``; stunnel in front
of moto's plain HTTP port works (self-signed certificate, ``repoN-storage-verify-tls=n``).
Emulator credentials are fixed, well-known test values (moto accepts any); they are passed
to pgBackRest through its environment, never written to a file.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from erpcloud.aws import EMULATOR_ACCESS_KEY, EMULATOR_SECRET_KEY, emulator_pgbackrest_env
from localtarget.processes import LOOPBACK, ManagedProcess, ServiceError, free_port

__all__ = ["EMULATOR_ACCESS_KEY", "EMULATOR_SECRET_KEY", "LocalAws", "emulator_pgbackrest_env"]


def moto_server_binary() -> str:
    path = Path(sys.executable).parent / "moto_server"
    if not path.exists():
        raise ServiceError(f"{path} is missing: `make setup` installs moto[server]")
    return str(path)


def write_self_signed_cert(directory: Path, address: str = LOOPBACK) -> tuple[Path, Path]:
    """A throwaway certificate for localhost and ``address`` (stunnel's server certificate)."""
    addresses = sorted({LOOPBACK, address})
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "erpcloud local S3")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=2))
        .add_extension(
            x509.SubjectAlternativeName(
                [
                    x509.DNSName("localhost"),
                    *(x509.IPAddress(ipaddress.ip_address(a)) for a in addresses),
                ]
            ),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    directory.mkdir(parents=True, exist_ok=True)
    cert_path, key_path = directory / "s3-tls.crt", directory / "s3-tls.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    key_path.chmod(0o600)
    return cert_path, key_path


@dataclass
class LocalAws:
    """moto on an HTTP port and stunnel on a TLS port in front of it."""

    root: Path
    http_port: int = field(default_factory=free_port)
    tls_port: int = field(default_factory=free_port)
    #: Where the TLS proxy listens: loopback, or a local target's bridge (the machines' S3).
    tls_host: str = LOOPBACK
    moto: ManagedProcess | None = field(default=None, init=False)
    tls_proxy: ManagedProcess | None = field(default=None, init=False)

    @property
    def endpoint_url(self) -> str:
        """For boto3 and Pulumi's ``aws:endpoints`` (plain HTTP on loopback)."""
        return f"http://{LOOPBACK}:{self.http_port}"

    def start(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        self.moto = ManagedProcess(
            name=f"moto:{self.http_port}",
            argv=[moto_server_binary(), "-H", LOOPBACK, "-p", str(self.http_port)],
            log_path=self.root / "moto.log",
        )
        self.moto.start()
        self.moto.wait_for_port(self.http_port)
        self.start_tls_proxy()

    def start_tls_proxy(self) -> None:
        """stunnel: TLS on ``tls_port`` → moto. Stopped and started alone to simulate S3 down."""
        cert, key = write_self_signed_cert(self.root / "tls", self.tls_host)
        conf = self.root / "stunnel.conf"
        conf.write_text(
            "foreground = yes\n"
            "pid =\n"
            "debug = warning\n"
            "[s3]\n"
            f"accept = {self.tls_host}:{self.tls_port}\n"
            f"connect = {LOOPBACK}:{self.http_port}\n"
            f"cert = {cert}\n"
            f"key = {key}\n"
        )
        self.tls_proxy = ManagedProcess(
            name=f"stunnel:{self.tls_port}",
            argv=["stunnel4", str(conf)],
            log_path=self.root / "stunnel.log",
        )
        self.tls_proxy.start()
        self.tls_proxy.wait_for_port(self.tls_port, host=self.tls_host)

    def stop_tls_proxy(self) -> None:
        if self.tls_proxy is not None:
            self.tls_proxy.stop()

    def stop(self) -> None:
        self.stop_tls_proxy()
        if self.moto is not None:
            self.moto.stop()

    def client(self, service: str, region: str) -> Any:
        """A boto3 client talking to the emulator."""
        import boto3

        return boto3.client(
            service,
            region_name=region,
            endpoint_url=self.endpoint_url,
            aws_access_key_id=EMULATOR_ACCESS_KEY,
            aws_secret_access_key=EMULATOR_SECRET_KEY,
        )

    def pgbackrest_env(self, repos: int = 2) -> dict[str, str]:
        """The environment that gives pgBackRest its S3 keys (never a config file)."""
        return emulator_pgbackrest_env(repos)

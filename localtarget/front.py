"""The load balancer's stand-in: a TLS front for one local target's machines (issue 12).

On AWS each environment's ``<prefix>.cloud.<domain>`` (production) or test host name points to an
Application Load Balancer whose only listener is HTTPS on 443 with the policy
:data:`erpcloud.policy.ALB_TLS_POLICY`; it forwards over HTTPS to the instance's application port
(:data:`erpcloud.policy.APP_PORT`) and does not verify the instance's certificate
(``stacks/blocks/endpoint.py``). Locally one front serves both host names of a customer:

- it runs in a network namespace of its own (``erp-f<bridge>a<octet>``), joined to the target's
  bridge by a veth, with its own address on the bridge's /24, and listens on 443 of that address
  and on nothing else (no port 80, as S3 promises);
- TLS to the client with certificates for the routed host names, issued by a local CA made at
  each start (its key is written once, 0600, in the front's state folder and is never read by
  anything else; the CA is name-constrained to the routed host names); a client verifies with
  :attr:`FrontRecord.ca_path`;
- protocols and ciphers are the listener policy's (:data:`LISTENER_POLICIES`): TLS 1.0/1.1 and
  ciphers outside the policy are refused with the alert the client would get from the ALB;
- routing by the name the client sends (SNI): each host name to its machine's ``address:8443``;
  a name that matches no route, or no name at all, is refused during the handshake
  (``unrecognized_name``), so no default backend ever answers;
- then TLS again to the backend, its certificate not verified (as the ALB does not).

Why not stunnel (which ``localtarget.s3`` uses): stunnel 5.68 completes the handshake for an
unknown SNI with the primary service's certificate and connects the primary's backend, and its
SNI services may not be in client mode, so re-encrypting to the machine would need a second,
plaintext hop through another listener. This module is a small asyncio proxy instead. Python's
own asyncio TLS transport (3.11) closes the connection without sending the handshake's fatal
alert, so the client side's TLS runs over memory BIOs here and the alert is written out.

Differences from the ALB, on purpose or out of reach: routing is by SNI, not by the ``Host``
header (the bytes are passed through unchanged: no ``X-Forwarded-*`` headers, no HTTP/2); on AWS
an unknown or absent SNI gets the listener's default certificate and action; the TLS 1.3 suites
are the policy's three but in OpenSSL's order (Python 3.11 cannot set them; checked at start);
there are no target health checks; a backend that cannot be reached gets a bare ``502 Bad
Gateway`` as the ALB would answer.

``python -m localtarget.front --config FILE --ready-file PATH`` serves until SIGTERM and exits 0;
:func:`start_front` and :func:`stop_front` are the launcher.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import ipaddress
import logging
import os
import re
import signal
import ssl
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Final

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from pydantic import BaseModel, ConfigDict

from erpcloud import policy
from localtarget import machine
from localtarget.netns import start_server_in_netns
from localtarget.processes import pid_alive

NETNS_DIR: Final = Path("/run/netns")
#: The only port the front listens on (S3).
FRONT_PORT: Final = policy.HTTPS_PORT
#: The front's end of its veth, inside its namespace.
INNER_INTERFACE: Final = "eth0"
HANDSHAKE_TIMEOUT: Final = 10.0
BACKEND_CONNECT_TIMEOUT: Final = 10.0
#: A new CA is made at every start: lifetimes only need to outlast a local target.
LOCAL_CA_LIFETIME: Final = dt.timedelta(weeks=4)
SERVER_CERTIFICATE_LIFETIME: Final = dt.timedelta(weeks=1)
CHUNK: Final = 65536
#: What the ALB answers when its target cannot be reached.
BAD_GATEWAY: Final = (
    b"HTTP/1.1 502 Bad Gateway\r\nServer: awselb/2.0\r\nContent-Type: text/plain\r\n"
    b"Content-Length: 16\r\nConnection: close\r\n\r\n502 Bad Gateway\n"
)
_HOST_NAME = re.compile(r"^(?=.{1,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}$")

log = logging.getLogger("localtarget.front")


class FrontError(RuntimeError):
    """The front could not be set up, started or stopped; the message says why."""


# --- the listener policy ----------------------------------------------------------------------
@dataclass(frozen=True)
class TlsPolicy:
    """One ELB security policy: its protocol versions and ciphers, in AWS's published order."""

    name: str
    protocols: tuple[ssl.TLSVersion, ...]
    #: TLS 1.3 suites (IANA names, as AWS lists them).
    tls13_ciphersuites: tuple[str, ...]
    #: TLS 1.2 ciphers (OpenSSL names, as AWS lists them), the server's preference first.
    tls12_ciphers: tuple[str, ...]

    @property
    def minimum_version(self) -> ssl.TLSVersion:
        return min(self.protocols)

    @property
    def maximum_version(self) -> ssl.TLSVersion:
        return max(self.protocols)

    @property
    def ciphers(self) -> tuple[str, ...]:
        """All of them, as ``aws elbv2 describe-ssl-policies`` lists them."""
        return self.tls13_ciphersuites + self.tls12_ciphers


#: The listener policies the front can apply, by name. Source: AWS's published table, "Security
#: policies for your Application Load Balancer", Elastic Load Balancing user guide,
#: https://docs.aws.amazon.com/elasticloadbalancing/latest/application/describe-ssl-policies.html
#: (the answer of ``aws elbv2 describe-ssl-policies --names ELBSecurityPolicy-TLS13-1-2-2021-06``;
#: moto's ``moto/elbv2/ssl_policies.py`` transcribes the same table, and the tests compare).
LISTENER_POLICIES: Final[Mapping[str, TlsPolicy]] = MappingProxyType(
    {
        "ELBSecurityPolicy-TLS13-1-2-2021-06": TlsPolicy(
            name="ELBSecurityPolicy-TLS13-1-2-2021-06",
            protocols=(ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3),
            tls13_ciphersuites=(
                "TLS_AES_128_GCM_SHA256",
                "TLS_AES_256_GCM_SHA384",
                "TLS_CHACHA20_POLY1305_SHA256",
            ),
            tls12_ciphers=(
                "ECDHE-ECDSA-AES128-GCM-SHA256",
                "ECDHE-RSA-AES128-GCM-SHA256",
                "ECDHE-ECDSA-AES128-SHA256",
                "ECDHE-RSA-AES128-SHA256",
                "ECDHE-ECDSA-AES256-GCM-SHA384",
                "ECDHE-RSA-AES256-GCM-SHA384",
                "ECDHE-ECDSA-AES256-SHA384",
                "ECDHE-RSA-AES256-SHA384",
            ),
        ),
    }
)


def listener_policy(name: str = policy.ALB_TLS_POLICY) -> TlsPolicy:
    """The policy the listener uses (``stacks/blocks/endpoint.py``), as data."""
    try:
        return LISTENER_POLICIES[name]
    except KeyError:
        raise FrontError(
            f"no protocol/cipher table for listener policy {name!r}: add AWS's published "
            "table for it to localtarget.front.LISTENER_POLICIES"
        ) from None


def server_context(
    tls_policy: TlsPolicy, cert: Path | None = None, key: Path | None = None
) -> ssl.SSLContext:
    """A server context that offers exactly the policy's protocols and ciphers."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = tls_policy.minimum_version
    context.maximum_version = tls_policy.maximum_version
    context.set_ciphers(":".join(tls_policy.tls12_ciphers))
    # The server's order decides (AWS: "the first cipher on the server's list that matches");
    # ALBs do not renegotiate with clients.
    context.options |= (
        ssl.OP_CIPHER_SERVER_PREFERENCE | ssl.OP_NO_COMPRESSION | ssl.OP_NO_RENEGOTIATION
    )
    if cert is not None:
        context.load_cert_chain(cert, key)
    offered = [c["name"] for c in context.get_ciphers()]
    tls13 = {c["name"] for c in context.get_ciphers() if c["protocol"] == "TLSv1.3"}
    tls12 = [name for name in offered if name not in tls13]
    # Python 3.11 cannot set the TLS 1.3 suites: OpenSSL's defaults must be the policy's.
    if tls13 != set(tls_policy.tls13_ciphersuites) or tls12 != list(tls_policy.tls12_ciphers):
        raise FrontError(
            f"this OpenSSL ({ssl.OPENSSL_VERSION}) offers {offered}, not the ciphers of "
            f"{tls_policy.name}: {list(tls_policy.ciphers)}"
        )
    return context


def backend_context() -> ssl.SSLContext:
    """TLS to the machine, its certificate not verified: the ALB does not validate target
    certificates either (AWS, "Target groups for your Application Load Balancers": self-signed
    or expired certificates on the targets are accepted). Protocols and ciphers are OpenSSL's
    defaults here; the ALB uses ELBSecurityPolicy-TLS13-1-0-2021-06 towards targets."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


# --- the local CA -----------------------------------------------------------------------------
def _write_new(path: Path, data: bytes, mode: int) -> None:
    """Write ``path`` afresh, created with ``mode`` (never readable by others, even briefly)."""
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    with os.fdopen(fd, "wb") as out:
        out.write(data)


def _pem_key(key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


@dataclass(frozen=True)
class Certificates:
    ca_cert: Path
    ca_key: Path
    #: host name → (certificate, key)
    servers: dict[str, tuple[Path, Path]]


def create_certificates(directory: Path, hosts: Sequence[str], label: str) -> Certificates:
    """A new CA, allowed to vouch only for ``hosts``, and a server certificate for each.

    Server keys are RSA 2048 as ACM issues by default, so the policy's ``ECDHE-RSA-*`` ciphers
    are the ones negotiated, as on the ALB. Keys are 0600; the CA key is only ever read here.
    """
    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "erpcloud local target"),
            x509.NameAttribute(NameOID.COMMON_NAME, f"erpcloud local front CA {label}"),
        ]
    )
    ca_ski = x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key())
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + LOCAL_CA_LIFETIME)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.NameConstraints(
                permitted_subtrees=[x509.DNSName(h) for h in hosts], excluded_subtrees=None
            ),
            critical=True,
        )
        .add_extension(ca_ski, critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    directory.mkdir(parents=True, exist_ok=True)
    ca_cert_path, ca_key_path = directory / "ca.crt", directory / "ca.key"
    _write_new(ca_key_path, _pem_key(ca_key), 0o600)
    _write_new(ca_cert_path, ca_cert.public_bytes(serialization.Encoding.PEM), 0o644)
    servers = {}
    for host in hosts:
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)]))
            .issuer_name(ca_name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + SERVER_CERTIFICATE_LIFETIME)
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(host)]), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski),
                critical=False,
            )
            .add_extension(
                x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False
            )
            .sign(ca_key, hashes.SHA256())
        )
        cert_path, key_path = directory / f"{host}.crt", directory / f"{host}.key"
        _write_new(key_path, _pem_key(key), 0o600)
        _write_new(cert_path, cert.public_bytes(serialization.Encoding.PEM), 0o644)
        servers[host] = (cert_path, key_path)
    return Certificates(ca_cert_path, ca_key_path, servers)


# --- the server (runs in the front's namespace) -----------------------------------------------
class FrontRoute(BaseModel):
    model_config = ConfigDict(extra="forbid")

    host: str
    backend: str  # ip:port
    cert: Path
    key: Path


class FrontConfig(BaseModel):
    """What the server process reads (written 0600 by :func:`start_front`)."""

    model_config = ConfigDict(extra="forbid")

    address: str
    port: int = FRONT_PORT
    policy: str = policy.ALB_TLS_POLICY
    routes: list[FrontRoute]


def parse_backend(backend: str) -> tuple[ipaddress.IPv4Address, int]:
    host, sep, port = backend.rpartition(":")
    try:
        address = ipaddress.IPv4Address(host)
    except ValueError:
        raise FrontError(f"backend {backend!r} is not IPv4-address:port") from None
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise FrontError(f"backend {backend!r} is not IPv4-address:port")
    return address, int(port)


@dataclass(frozen=True)
class _Route:
    host: str
    context: ssl.SSLContext
    backend_host: str
    backend_port: int


class _ClientTls:
    """The client side's TLS over memory BIOs, so that a refused handshake's alert is sent."""

    def __init__(
        self, context: ssl.SSLContext, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        self.reader, self.writer = reader, writer
        self.incoming, self.outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        self.tls = context.wrap_bio(self.incoming, self.outgoing, server_side=True)
        self._drain = asyncio.Lock()

    async def _flush(self) -> None:
        data = self.outgoing.read()
        if data:
            self.writer.write(data)
            async with self._drain:
                await self.writer.drain()

    async def _fill(self) -> None:
        data = await self.reader.read(CHUNK)
        if data:
            self.incoming.write(data)
        else:
            self.incoming.write_eof()

    async def handshake(self) -> None:
        while True:
            try:
                self.tls.do_handshake()
            except ssl.SSLWantReadError:
                await self._flush()
                await self._fill()
            except ssl.SSLError:
                with contextlib.suppress(OSError):
                    await self._flush()  # the alert: protocol_version, handshake_failure, ...
                raise
            else:
                await self._flush()
                return

    async def read(self) -> bytes:
        """Application data; ``b""`` at the end (close_notify or the connection closed)."""
        while True:
            try:
                data = self.tls.read(CHUNK)
            except ssl.SSLWantReadError:
                await self._flush()
                await self._fill()
            except (ssl.SSLZeroReturnError, ssl.SSLEOFError):
                return b""
            else:
                await self._flush()
                return data

    async def write(self, data: bytes) -> None:
        self.tls.write(data)
        await self._flush()

    async def close(self) -> None:
        with contextlib.suppress(ssl.SSLError, OSError):
            self.tls.unwrap()
        with contextlib.suppress(OSError):
            await self._flush()
        self.writer.close()
        with contextlib.suppress(OSError, ssl.SSLError):
            await self.writer.wait_closed()


class Front:
    """The proxy: one listening socket, routes by SNI."""

    def __init__(self, config: FrontConfig) -> None:
        tls_policy = listener_policy(config.policy)
        self.routes: dict[str, _Route] = {}
        for route in config.routes:
            backend_host, backend_port = parse_backend(route.backend)
            self.routes[route.host.lower()] = _Route(
                route.host.lower(),
                server_context(tls_policy, route.cert, route.key),
                str(backend_host),
                backend_port,
            )
        self._by_context = {id(r.context): r for r in self.routes.values()}
        # The context a handshake starts in has no certificate: only a routed name gets one.
        self.context = server_context(tls_policy)
        self.context.sni_callback = self._select
        self.backend_tls = backend_context()
        self.tasks: set[asyncio.Task[None]] = set()

    def _select(self, tls: ssl.SSLObject, server_name: str | None, _: ssl.SSLContext) -> int | None:
        route = self.routes.get((server_name or "").lower().rstrip("."))
        if route is None:
            log.warning("refused: SNI %s matches no route", ascii(server_name))
            return ssl.ALERT_DESCRIPTION_UNRECOGNIZED_NAME
        tls.context = route.context
        return None

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self.tasks.add(task)
        peer = writer.get_extra_info("peername")
        client = _ClientTls(self.context, reader, writer)
        try:
            try:
                await asyncio.wait_for(client.handshake(), HANDSHAKE_TIMEOUT)
            except (ssl.SSLError, OSError, TimeoutError) as exc:
                reason = getattr(exc, "reason", None) or type(exc).__name__
                log.info("%s: handshake refused or failed (%s)", peer, reason)
                return
            route = self._by_context.get(id(client.tls.context))
            if route is None:  # cannot happen: the callback set a route's context or refused
                return
            await self._forward(client, route, peer)
        finally:
            await client.close()
            if task is not None:
                self.tasks.discard(task)

    async def _forward(self, client: _ClientTls, route: _Route, peer: object) -> None:
        backend = f"{route.backend_host}:{route.backend_port}"
        try:
            b_reader, b_writer = await asyncio.wait_for(
                asyncio.open_connection(
                    route.backend_host,
                    route.backend_port,
                    ssl=self.backend_tls,
                    server_hostname="",  # no SNI and no name check towards the target
                    ssl_handshake_timeout=HANDSHAKE_TIMEOUT,
                ),
                BACKEND_CONNECT_TIMEOUT,
            )
        except (OSError, TimeoutError) as exc:
            log.warning("%s: %s -> %s unreachable (%s): 502", peer, route.host, backend, exc)
            with contextlib.suppress(OSError, ssl.SSLError):
                await client.write(BAD_GATEWAY)
            return
        cipher = client.tls.cipher()
        log.info(
            "%s: %s -> %s (%s %s)",
            peer,
            route.host,
            backend,
            client.tls.version(),
            cipher[0] if cipher else "-",
        )

        async def upstream() -> None:
            while data := await client.read():
                b_writer.write(data)
                await b_writer.drain()

        async def downstream() -> None:
            while data := await b_reader.read(CHUNK):
                await client.write(data)

        pipes = {asyncio.ensure_future(upstream()), asyncio.ensure_future(downstream())}
        try:
            # Neither side can half-close under TLS: the first direction to end ends both.
            await asyncio.wait(pipes, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for pipe in pipes:
                pipe.cancel()
            await asyncio.gather(*pipes, return_exceptions=True)
            b_writer.close()
            with contextlib.suppress(OSError, ssl.SSLError):
                await b_writer.wait_closed()


async def serve(config: FrontConfig, ready_file: Path | None) -> int:
    front = Front(config)
    try:
        server = await asyncio.start_server(front.handle, config.address, config.port)
    except OSError as exc:
        log.error("cannot listen on %s:%d: %s", config.address, config.port, exc.strerror)
        return 1
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    if ready_file is not None:
        temporary = ready_file.with_name(f".{ready_file.name}.{os.getpid()}")
        temporary.write_text(f"{os.getpid()} {config.address}:{config.port}\n")
        temporary.replace(ready_file)
    log.info(
        "listening on %s:%d (%s): %s",
        config.address,
        config.port,
        config.policy,
        ", ".join(f"{r.host} -> {r.backend}" for r in config.routes),
    )
    await stop.wait()
    log.info("stopping")
    server.close()
    for task in list(front.tasks):
        task.cancel()
    await asyncio.gather(*front.tasks, return_exceptions=True)
    await server.wait_closed()
    if ready_file is not None:
        ready_file.unlink(missing_ok=True)
    log.info("stopped")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m localtarget.front", description="the load balancer's local stand-in"
    )
    parser.add_argument("--config", type=Path, required=True)
    parser.add_argument("--ready-file", type=Path)
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s front[%(process)d] %(message)s",
        stream=sys.stderr,
        force=True,
    )
    try:
        config = FrontConfig.model_validate_json(args.config.read_text())
        return asyncio.run(serve(config, args.ready_file))
    except (OSError, ValueError, FrontError, ssl.SSLError) as exc:
        log.error("%s", exc)
        return 2


# --- the launcher (host side) -----------------------------------------------------------------
class FrontRecord(BaseModel):
    """A running front: enough to reach it and to stop it (kept in state files)."""

    netns: str
    veth: str
    address: str  # without the prefix length: what clients connect to
    port: int = FRONT_PORT
    pid: int
    ca_path: Path
    state_dir: Path
    routes: dict[str, str]

    @property
    def config_path(self) -> Path:
        return self.state_dir / "front.json"

    @property
    def log_path(self) -> Path:
        return self.state_dir / "front.log"

    @property
    def ready_file(self) -> Path:
        return self.state_dir / "front.ready"


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(["ip", *args], capture_output=True, text=True, check=False, timeout=30)
    if check and result.returncode != 0:
        raise FrontError(f"ip {' '.join(args)}: {result.stderr.strip()}")
    return result


def _link_exists(name: str) -> bool:
    return _ip("link", "show", name, check=False).returncode == 0


def front_interface(network: machine.Network, address: str) -> ipaddress.IPv4Interface:
    """``address`` (``a.b.c.d`` or ``a.b.c.d/24``) as an address of the bridge's /24 that is
    neither the host's (``.1``) nor a machine's (``.10`` on)."""
    try:
        interface = ipaddress.IPv4Interface(address if "/" in address else f"{address}/24")
    except ValueError:
        raise FrontError(f"{address!r} is not an IPv4 address") from None
    subnet = network.subnet
    first_machine = ipaddress.IPv4Address(network.machine_address(0))
    last_machine = ipaddress.IPv4Address(network.machine_address(199))
    ip = interface.ip
    if interface.network != subnet:
        raise FrontError(f"{address} is not an address of {network.bridge}'s {subnet}")
    if ip in (subnet.network_address, subnet.broadcast_address) or str(ip) == (
        network.host_address
    ):
        raise FrontError(f"{address} is reserved on {network.bridge} (network, host, broadcast)")
    if first_machine <= ip <= last_machine:
        raise FrontError(f"{address} is in the machines' range {first_machine}-{last_machine}")
    return interface


def front_names(network: machine.Network, interface: ipaddress.IPv4Interface) -> tuple[str, str]:
    """The namespace and host-side veth (kernel names are at most 15 characters)."""
    short = f"f{network.index}a{int(interface.ip) & 0xFF}"
    return f"erp-{short}", f"ve-{short}"


def _check_routes(network: machine.Network, routes: Mapping[str, str]) -> dict[str, str]:
    if not routes:
        raise FrontError("a front needs at least one route (host name -> ip:port)")
    checked = {}
    for host, backend in routes.items():
        name = host.lower().rstrip(".")
        if not _HOST_NAME.match(name):
            raise FrontError(f"{host!r} is not a DNS host name")
        if name in checked:
            raise FrontError(f"{host!r} is routed twice")
        address, _port = parse_backend(backend)
        if address not in network.subnet:
            raise FrontError(
                f"backend {backend} for {host} is outside {network.bridge}'s {network.subnet}: "
                "the front has no route beyond its bridge"
            )
        checked[name] = backend
    return checked


def _server_argv(config_path: Path, ready_file: Path) -> list[str]:
    return [
        sys.executable, "-m", "localtarget.front",
        "--config", str(config_path),
        "--ready-file", str(ready_file),
    ]  # fmt: skip


def start_front(
    network: machine.Network,
    address: str,
    routes: dict[str, str],
    state_dir: Path,
    *,
    timeout: float = 30.0,
) -> FrontRecord:
    """Start the front on ``address`` (on ``network``'s bridge), routing each host name in
    ``routes`` to its backend ``ip:port``; returns once it listens on 443.

    Its files (CA and server certificates and keys, config, log) are in ``state_dir``, which is
    made 0700. On any failure what was started is stopped and the namespace deleted again.
    """
    interface = front_interface(network, address)
    checked = _check_routes(network, routes)
    netns, veth = front_names(network, interface)
    if not network.exists():
        raise FrontError(f"bridge {network.bridge} does not exist")
    if (NETNS_DIR / netns).exists() or _link_exists(veth):
        raise FrontError(
            f"network namespace {netns} or link {veth} exists already (a front on {interface.ip}"
            " is running, or was not stopped): not touching it"
        )
    state_dir.mkdir(parents=True, exist_ok=True)
    state_dir.chmod(0o700)
    certificates = create_certificates(state_dir, list(checked), f"{netns} {interface.ip}")
    record = FrontRecord(
        netns=netns,
        veth=veth,
        address=str(interface.ip),
        pid=0,
        ca_path=certificates.ca_cert,
        state_dir=state_dir,
        routes=checked,
    )
    config = FrontConfig(
        address=record.address,
        routes=[
            FrontRoute(
                host=h, backend=b, cert=certificates.servers[h][0], key=certificates.servers[h][1]
            )
            for h, b in checked.items()
        ],
    )
    _write_new(record.config_path, config.model_dump_json(indent=2).encode(), 0o600)
    record.ready_file.unlink(missing_ok=True)
    created = False
    process: subprocess.Popen[bytes] | None = None
    try:
        _ip("netns", "add", netns)
        created = True
        _ip("link", "add", veth, "type", "veth", "peer", "name", INNER_INTERFACE, "netns", netns)
        _ip("link", "set", veth, "master", network.bridge)
        _ip("link", "set", veth, "up")
        _ip("-n", netns, "link", "set", "lo", "up")
        _ip("-n", netns, "addr", "add", str(interface), "dev", INNER_INTERFACE)
        _ip("-n", netns, "link", "set", INNER_INTERFACE, "up")
        process = start_server_in_netns(
            netns,
            _server_argv(record.config_path, record.ready_file),
            log_path=record.log_path,
            ready_file=record.ready_file,
            timeout=timeout,
            what="front",
            error=FrontError,
        )
        record.pid = process.pid
    except BaseException:
        _stop(record, delete_netns=created, process=process)
        raise
    return record


def _in_netns(pid: int, netns: str) -> bool:
    """``pid`` runs in the front's namespace (so it is the front's, not a PID reused since)."""
    try:
        own = Path(f"/proc/{pid}/ns/net").stat()
        front = (NETNS_DIR / netns).stat()
    except OSError:
        return False
    return (own.st_dev, own.st_ino) == (front.st_dev, front.st_ino)


def _stop(
    record: FrontRecord,
    *,
    delete_netns: bool,
    process: subprocess.Popen[bytes] | None = None,
    timeout: float = 10.0,
) -> None:
    """SIGTERM to the server (``process`` when the caller started it, else ``record.pid`` if
    that still runs in the front's namespace), SIGKILL if it lingers; then the namespace."""
    pid = process.pid if process is not None else record.pid
    if pid and pid_alive(pid) and (process is not None or _in_netns(pid, record.netns)):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while pid_alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        if pid_alive(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    if process is not None:
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=5)
    elif pid:
        with contextlib.suppress(ChildProcessError, OSError):
            os.waitpid(pid, os.WNOHANG)
    if not delete_netns:
        return
    _ip("netns", "del", record.netns, check=False)
    # The veth goes with the namespace once the kernel has dismantled it.
    deadline = time.monotonic() + timeout
    while _link_exists(record.veth) and time.monotonic() < deadline:
        time.sleep(0.1)
    if _link_exists(record.veth):
        _ip("link", "del", record.veth, check=False)


def stop_front(record: FrontRecord) -> None:
    """SIGTERM to the server by its PID (SIGKILL if it lingers), then delete its namespace,
    which removes the veth. The state folder (CA, log) stays; what is already gone is skipped."""
    _stop(record, delete_netns=True)


if __name__ == "__main__":
    sys.exit(main())

"""The load balancer's local stand-in (issue 12): a TLS front in its own network namespace on a
target's bridge, checked from the host as a client on the internet would see the ALB.

Two small HTTPS backends stand in for the machines: each in a namespace of its own on the bridge
(``.10`` and ``.11``), with a self-signed certificate, answering ``/health`` with their name.
Everything here runs on one bridge allocated for this module and is removed at the end.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import shutil
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from erpcloud import policy
from erpcloud.model import Customer
from localtarget import front, machine
from localtarget.processes import port_open, stop_pid
from localtarget.s3 import write_self_signed_cert

pytestmark = [
    pytest.mark.timeout(300),
    # The refused-protocol checks build TLS 1.0/1.1 clients on purpose.
    pytest.mark.filterwarnings("ignore:ssl.TLSVersion.TLSv1:DeprecationWarning"),
]

BACKEND_SCRIPT = """
import http.server, json, ssl, sys

name, address, port, cert, key = sys.argv[1:6]


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):
        if self.path != "/health":
            self.send_error(404)
            return
        body = json.dumps(
            {"status": "ok", "backend": name, "host": self.headers.get("Host"),
             "tls": self.connection.version()}
        ).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format, *args):
        pass


server = http.server.ThreadingHTTPServer((address, int(port)), Handler)
context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
context.load_cert_chain(cert, key)
server.socket = context.wrap_socket(server.socket, server_side=True)
server.serve_forever()
"""


def _ip(*args: str) -> None:
    result = subprocess.run(["ip", *args], capture_output=True, text=True, check=False)
    assert result.returncode == 0, f"ip {' '.join(args)}: {result.stderr}"


def _netns_exists(name: str) -> bool:
    return (front.NETNS_DIR / name).exists()


def _link_exists(name: str) -> bool:
    return subprocess.run(["ip", "link", "show", name], capture_output=True).returncode == 0


@dataclass
class Backend:
    name: str
    netns: str
    veth: str
    address: str
    process: subprocess.Popen[bytes] | None = None

    @property
    def endpoint(self) -> str:
        return f"{self.address}:{policy.APP_PORT}"


def _start_backend(network: machine.Network, slot: int, name: str, root: Path) -> Backend:
    """A machine-like namespace on the bridge with an HTTPS server on 8443."""
    short = f"b{network.index}x{slot}"
    backend = Backend(name, f"erp-{short}", f"ve-{short}", network.machine_address(slot))
    assert not _netns_exists(backend.netns) and not _link_exists(backend.veth)
    _ip("netns", "add", backend.netns)
    _ip(
        "link", "add", backend.veth, "type", "veth", "peer", "name", "host0", "netns", backend.netns
    )
    _ip("link", "set", backend.veth, "master", network.bridge)
    _ip("link", "set", backend.veth, "up")
    _ip("-n", backend.netns, "link", "set", "lo", "up")
    _ip("-n", backend.netns, "addr", "add", f"{backend.address}/24", "dev", "host0")
    _ip("-n", backend.netns, "link", "set", "host0", "up")
    cert, key = write_self_signed_cert(root / name, backend.address)
    script = root / "backend.py"
    script.write_text(BACKEND_SCRIPT)
    backend.process = subprocess.Popen(
        ["ip", "netns", "exec", backend.netns, sys.executable, str(script), name,
         backend.address, str(policy.APP_PORT), str(cert), str(key)],
        stdin=subprocess.DEVNULL,
        stdout=(root / f"{name}.log").open("ab"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )  # fmt: skip
    deadline = time.monotonic() + 30
    while not port_open(policy.APP_PORT, backend.address):
        assert backend.process.poll() is None, (root / f"{name}.log").read_text()
        assert time.monotonic() < deadline, f"backend {name} did not listen"
        time.sleep(0.1)
    return backend


def _stop_backend(backend: Backend) -> None:
    if backend.process is not None:
        stop_pid(backend.process.pid, timeout=10)
        with contextlib.suppress(subprocess.TimeoutExpired):
            backend.process.wait(timeout=5)
    subprocess.run(["ip", "netns", "del", backend.netns], capture_output=True, check=False)
    subprocess.run(["ip", "link", "del", backend.veth], capture_output=True, check=False)


@dataclass
class Site:
    network: machine.Network
    prod_host: str
    test_host: str
    backends: dict[str, Backend]
    record: front.FrontRecord
    root: Path


@pytest.fixture(scope="module")
def site(
    sample_fleet: dict[str, Customer], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Site]:
    customer = sample_fleet["acme-retail"]
    root = tmp_path_factory.mktemp("front")
    network = machine.allocate_network()
    backends: list[Backend] = []
    record: front.FrontRecord | None = None
    try:
        backends.append(_start_backend(network, 0, "production", root))
        backends.append(_start_backend(network, 1, "test", root))
        record = front.start_front(
            network,
            f"{network.subnet.network_address + 2}/24",
            {
                customer.url_host: backends[0].endpoint,
                customer.test_url_host: backends[1].endpoint,
            },
            root / "front-state",
        )
        yield Site(
            network,
            customer.url_host,
            customer.test_url_host,
            {b.name: b for b in backends},
            record,
            root,
        )
    finally:
        if record is not None:
            front.stop_front(record)
        for backend in backends:
            _stop_backend(backend)
        network.remove()


# --- clients ----------------------------------------------------------------------------------
def _verifying_client(ca: Path) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(ca))
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
    return context


def _old_client(
    version: ssl.TLSVersion,
    ciphers: str = "ALL:@SECLEVEL=0",
    *,
    maximum: ssl.TLSVersion | None = None,
) -> ssl.SSLContext:
    """A client that offers what the policy forbids (no verification: the handshake is what is
    checked, and it must fail on the server's side)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    context.minimum_version = version
    context.maximum_version = maximum or version
    context.set_ciphers(ciphers)
    return context


@contextlib.contextmanager
def _tls(
    context: ssl.SSLContext, address: str, server_name: str | None, port: int = 443
) -> Iterator[ssl.SSLSocket]:
    sock = socket.create_connection((address, port), timeout=15)
    try:
        with context.wrap_socket(sock, server_hostname=server_name) as tls:
            yield tls
    finally:
        sock.close()


def _get_health(tls: ssl.SSLSocket, host: str) -> tuple[int, dict[str, str]]:
    tls.sendall(f"GET /health HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
    response = http.client.HTTPResponse(tls)
    response.begin()
    body = response.read()
    return response.status, json.loads(body)


def _handshake_error(
    context: ssl.SSLContext, address: str, server_name: str | None
) -> ssl.SSLError:
    with pytest.raises(ssl.SSLError) as caught, _tls(context, address, server_name):
        pass
    return caught.value


# --- routing ----------------------------------------------------------------------------------
@pytest.mark.parametrize("environment", ["production", "test"])
def test_each_host_name_reaches_its_own_machine(site, environment):
    host = site.prod_host if environment == "production" else site.test_host
    with _tls(_verifying_client(site.record.ca_path), site.record.address, host) as tls:
        # The certificate is for this very name, issued by the front's CA (verified above).
        assert tls.getpeercert()["subjectAltName"] == (("DNS", host),)
        status, body = _get_health(tls, host)
        assert status == 200
        assert body == {"status": "ok", "backend": environment, "host": host, "tls": "TLSv1.3"}
        # Keep-alive: the next request on the same connection goes to the same machine.
        assert _get_health(tls, host) == (200, body)


def test_the_backend_is_reached_over_tls_not_plain_http(site):
    """The front re-encrypts: the backends speak only TLS (plain HTTP to them fails)."""
    backend = site.backends["production"]
    answer = b""
    with (
        contextlib.suppress(ConnectionResetError),
        socket.create_connection((backend.address, policy.APP_PORT), timeout=10) as plain,
    ):
        plain.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        answer = plain.recv(100)
    assert not answer.startswith(b"HTTP/")


@pytest.mark.parametrize(
    "server_name", ["other.cloud.erpcloud.example", "acme.cloud.example.org", "localhost"]
)
def test_an_unknown_name_is_refused_in_the_handshake(site, server_name):
    context = _verifying_client(site.record.ca_path)
    context.check_hostname = False  # so the client does not give up first
    error = _handshake_error(context, site.record.address, server_name)
    assert error.reason == "TLSV1_UNRECOGNIZED_NAME", error


def test_a_client_without_sni_is_refused(site):
    context = _old_client(ssl.TLSVersion.TLSv1_2, maximum=ssl.TLSVersion.TLSv1_3)
    error = _handshake_error(context, site.record.address, None)
    assert error.reason == "TLSV1_UNRECOGNIZED_NAME", error


def test_the_test_certificate_does_not_vouch_for_production(site):
    """Each name has its own certificate (as each environment has its own ACM certificate)."""
    context = _verifying_client(site.record.ca_path)
    context.check_hostname = False
    with _tls(context, site.record.address, site.test_host) as tls:
        assert tls.getpeercert()["subjectAltName"] == (("DNS", site.test_host),)


# --- the listener policy ----------------------------------------------------------------------
def test_the_policy_table_is_the_listeners_and_matches_awss_published_one():
    tls_policy = front.listener_policy()
    assert tls_policy.name == policy.ALB_TLS_POLICY
    assert tls_policy.protocols == (ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3)
    # moto transcribes the same AWS table (describe-ssl-policies); a second reading of it.
    from moto.elbv2.ssl_policies import SSL_POLICIES

    published = SSL_POLICIES[policy.ALB_TLS_POLICY]
    assert list(tls_policy.ciphers) == published["ciphers"]
    assert set(published["ssl_protocols"]) == {"TLSv1.2", "TLSv1.3"}
    with pytest.raises(front.FrontError, match="no protocol/cipher table"):
        front.listener_policy("ELBSecurityPolicy-2016-08")


@pytest.fixture(scope="module")
def permissive_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    """A loopback server that accepts anything: proves the old clients below really offer
    TLS 1.0/1.1 and the excluded ciphers, so their refusal by the front is the front's."""
    # RSA, as the front's server certificates, so the same ciphers are possible.
    certificates = front.create_certificates(
        tmp_path_factory.mktemp("permissive"), ["x.example"], "permissive"
    )
    cert, key = certificates.servers["x.example"]
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    context.minimum_version = ssl.TLSVersion.MINIMUM_SUPPORTED
    context.set_ciphers("ALL:@SECLEVEL=0")
    listener = socket.create_server(("127.0.0.1", 0))
    stopping = threading.Event()

    def serve() -> None:
        while not stopping.is_set():
            with contextlib.suppress(OSError):
                conn, _ = listener.accept()
                with contextlib.suppress(OSError), context.wrap_socket(conn, server_side=True):
                    pass

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield int(listener.getsockname()[1])
    finally:
        stopping.set()
        listener.close()


OLD_PROTOCOLS = [ssl.TLSVersion.TLSv1, ssl.TLSVersion.TLSv1_1]


@pytest.mark.parametrize("version", OLD_PROTOCOLS, ids=["TLSv1.0", "TLSv1.1"])
def test_tls_1_0_and_1_1_are_refused(site, permissive_server, version):
    with _tls(_old_client(version), "127.0.0.1", "x.example", permissive_server) as tls:
        assert tls.version() == {"TLSv1": "TLSv1", "TLSv1_1": "TLSv1.1"}[version.name]
    error = _handshake_error(_old_client(version), site.record.address, site.prod_host)
    assert error.reason == "TLSV1_ALERT_PROTOCOL_VERSION", error


#: TLS 1.2 ciphers an OpenSSL server offers by default (or a wider ALB policy does) that
#: ELBSecurityPolicy-TLS13-1-2-2021-06 excludes: ChaCha20 for TLS 1.2, SHA-1 CBC, static RSA.
EXCLUDED_CIPHERS = [
    "ECDHE-RSA-CHACHA20-POLY1305",
    "ECDHE-RSA-AES128-SHA",
    "ECDHE-RSA-AES256-SHA",
    "AES128-GCM-SHA256",
    "AES256-GCM-SHA384",
    "AES128-SHA256",
    "AES128-SHA",
    "AES256-SHA256",
]


@pytest.mark.parametrize("cipher", EXCLUDED_CIPHERS)
def test_ciphers_outside_the_policy_are_refused(site, permissive_server, cipher):
    assert cipher not in front.listener_policy().ciphers
    client = _old_client(ssl.TLSVersion.TLSv1_2, f"{cipher}:@SECLEVEL=0")
    with _tls(client, "127.0.0.1", "x.example", permissive_server) as tls:
        assert tls.cipher()[0] == cipher
    error = _handshake_error(client, site.record.address, site.prod_host)
    assert error.reason == "SSLV3_ALERT_HANDSHAKE_FAILURE", error


@pytest.mark.parametrize(
    "cipher", [c for c in front.listener_policy().tls12_ciphers if c.startswith("ECDHE-RSA-")]
)
def test_every_tls_1_2_cipher_of_the_policy_works(site, cipher):
    """RSA server certificates (as ACM issues by default): the ``ECDHE-RSA-`` half applies."""
    context = _verifying_client(site.record.ca_path)
    context.maximum_version = ssl.TLSVersion.TLSv1_2
    context.set_ciphers(cipher)
    with _tls(context, site.record.address, site.prod_host) as tls:
        assert (tls.version(), tls.cipher()[0]) == ("TLSv1.2", cipher)
        assert _get_health(tls, site.prod_host)[1]["backend"] == "production"


def test_the_server_prefers_its_own_order(site):
    context = _verifying_client(site.record.ca_path)
    context.maximum_version = ssl.TLSVersion.TLSv1_2
    context.set_ciphers("ECDHE-RSA-AES256-SHA384:ECDHE-RSA-AES128-GCM-SHA256")
    with _tls(context, site.record.address, site.prod_host) as tls:
        assert tls.cipher()[0] == "ECDHE-RSA-AES128-GCM-SHA256"  # first in AWS's list


def test_tls_1_3_offers_the_policys_suites(site):
    assert shutil.which("openssl"), "the openssl command line tool checks the TLS 1.3 suites"
    for suite in front.listener_policy().tls13_ciphersuites:
        result = subprocess.run(
            ["openssl", "s_client", "-connect", f"{site.record.address}:443",
             "-servername", site.prod_host, "-tls1_3", "-ciphersuites", suite,
             "-CAfile", str(site.record.ca_path), "-verify_return_error", "-brief"],
            input="", capture_output=True, text=True, timeout=30, check=False,
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
        assert f"Ciphersuite: {suite}" in result.stderr
        assert "Verification: OK" in result.stderr


# --- what listens -----------------------------------------------------------------------------
def test_nothing_answers_on_port_80(site):
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection((site.record.address, 80), timeout=10).close()


def test_the_front_listens_on_443_of_its_address_and_nothing_else(site):
    def listening(flags: str) -> list[str]:
        out = subprocess.run(
            ["ip", "netns", "exec", site.record.netns, "ss", flags],
            capture_output=True, text=True, check=True,
        ).stdout  # fmt: skip
        return [line.split()[3] for line in out.splitlines() if line.strip()]

    assert listening("-ltnH") == [f"{site.record.address}:443"]
    assert listening("-lunH") == []
    # The namespace's IPv4 addresses: loopback and the front's own on its veth.
    out = subprocess.run(
        ["ip", "-4", "-n", site.record.netns, "-j", "addr", "show"],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    addresses = {
        (link["ifname"], f"{a['local']}/{a['prefixlen']}")
        for link in json.loads(out)
        for a in link.get("addr_info", [])
    }
    assert addresses == {
        ("lo", "127.0.0.1/8"),
        (front.INNER_INTERFACE, f"{site.record.address}/24"),
    }


def test_the_ca_key_stays_private_in_the_state_folder(site):
    state = site.record.state_dir
    assert site.record.ca_path.parent == state
    assert (state.stat().st_mode & 0o777) == 0o700
    assert ((state / "ca.key").stat().st_mode & 0o777) == 0o600
    for host in (site.prod_host, site.test_host):
        assert ((state / f"{host}.key").stat().st_mode & 0o777) == 0o600
    assert ((state / "front.json").stat().st_mode & 0o777) == 0o600
    assert "ca.key" not in (state / "front.json").read_text()
    assert b"PRIVATE KEY" not in site.record.ca_path.read_bytes()


# --- lifecycle --------------------------------------------------------------------------------
def _front_pids(marker: Path) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                if str(marker).encode() in (entry / "cmdline").read_bytes():
                    pids.append(int(entry.name))
    return pids


def test_stop_removes_namespace_and_veth_and_keeps_the_state(site, tmp_path):
    address = str(site.network.subnet.network_address + 3)
    prod = site.backends["production"]
    routes = {
        site.prod_host: prod.endpoint,
        site.test_host: f"{prod.address}:{policy.APP_PORT + 1}",  # nothing listens there
    }
    record = front.start_front(site.network, address, routes, tmp_path / "state")
    try:
        assert _netns_exists(record.netns) and _link_exists(record.veth)
        master = subprocess.run(
            ["ip", "-j", "link", "show", record.veth], capture_output=True, text=True, check=True
        ).stdout
        assert json.loads(master)[0]["master"] == site.network.bridge
        with _tls(_verifying_client(record.ca_path), address, site.prod_host) as tls:
            assert _get_health(tls, site.prod_host)[1]["backend"] == "production"
        # An unreachable target: 502 from the front, as from the ALB.
        with _tls(_verifying_client(record.ca_path), address, site.test_host) as tls:
            tls.sendall(f"GET /health HTTP/1.1\r\nHost: {site.test_host}\r\n\r\n".encode())
            assert tls.recv(100).startswith(b"HTTP/1.1 502 Bad Gateway")
        # The other front's CA does not vouch for this one.
        with (
            pytest.raises(ssl.SSLCertVerificationError),
            _tls(_verifying_client(site.record.ca_path), address, site.prod_host),
        ):
            pass
        # A second front on the same address is refused; the first is left alone.
        with pytest.raises(front.FrontError, match="exists already"):
            front.start_front(site.network, address, routes, tmp_path / "other")
        assert _netns_exists(record.netns)
    finally:
        front.stop_front(record)
    assert not _netns_exists(record.netns)
    assert not _link_exists(record.veth)
    assert not _front_pids(record.config_path)
    assert not port_open(443, address)
    assert (record.state_dir / "ca.key").is_file() and record.log_path.is_file()
    log = record.log_path.read_text()
    assert "listening on" in log and "stopped" in log
    assert "unreachable" in log and "502" in log
    front.stop_front(record)  # again: nothing left to do, no error
    # The module's front is untouched.
    assert _netns_exists(site.record.netns)
    with _tls(_verifying_client(site.record.ca_path), site.record.address, site.prod_host):
        pass


def test_a_front_that_does_not_come_up_is_removed_again(site, tmp_path, monkeypatch):
    address = str(site.network.subnet.network_address + 4)
    marker = tmp_path / "never-ready"

    def never_ready(config_path: Path, ready_file: Path) -> list[str]:
        return [sys.executable, "-c", "import time; time.sleep(120)", str(marker)]

    monkeypatch.setattr(front, "_server_argv", never_ready)
    interface = front.front_interface(site.network, address)
    netns, veth = front.front_names(site.network, interface)
    with pytest.raises(front.FrontError, match="did not listen"):
        front.start_front(
            site.network,
            address,
            {site.prod_host: site.backends["production"].endpoint},
            tmp_path / "state",
            timeout=2,
        )
    assert not _netns_exists(netns)
    assert not _link_exists(veth)
    assert not _front_pids(marker)


def test_a_front_that_fails_is_removed_again(site, tmp_path, monkeypatch):
    address = str(site.network.subnet.network_address + 5)

    def failing(config_path: Path, ready_file: Path) -> list[str]:
        return [sys.executable, "-m", "localtarget.front", "--config", "/nonexistent"]

    monkeypatch.setattr(front, "_server_argv", failing)
    interface = front.front_interface(site.network, address)
    netns, veth = front.front_names(site.network, interface)
    with pytest.raises(front.FrontError, match="exited with code 2"):
        front.start_front(
            site.network, address, {site.prod_host: site.backends["production"].endpoint},
            tmp_path / "state",
        )  # fmt: skip
    assert not _netns_exists(netns)
    assert not _link_exists(veth)


@pytest.mark.parametrize(
    ("address", "routes", "message"),
    [
        ("{net}.1/24", None, "reserved"),
        ("{net}.10/24", None, "machines' range"),
        ("{net}.2/16", None, "not an address of"),
        ("10.0.0.2/24", None, "not an address of"),
        ("{net}.2/24", {"not a name": "{net}.10:8443"}, "not a DNS host name"),
        ("{net}.2/24", {"a.cloud.example.com": "192.0.2.1:8443"}, "outside"),
        ("{net}.2/24", {"a.cloud.example.com": "{net}.10"}, "IPv4-address:port"),
        ("{net}.2/24", {}, "at least one route"),
    ],
)
def test_bad_arguments_are_refused_before_anything_is_created(
    site, tmp_path, address, routes, message
):
    net = str(site.network.subnet.network_address).rsplit(".", 1)[0]
    routes = (
        {site.prod_host: f"{net}.10:8443"}
        if routes is None
        else {h: b.format(net=net) for h, b in routes.items()}
    )
    before = set(front.NETNS_DIR.iterdir())
    with pytest.raises(front.FrontError, match=message):
        front.start_front(site.network, address.format(net=net), routes, tmp_path / "state")
    assert set(front.NETNS_DIR.iterdir()) == before
    assert not (tmp_path / "state").exists()

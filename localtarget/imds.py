"""An IMDSv2 stand-in: the EC2 instance metadata service for a local machine.

On AWS an instance learns who it is and gets its role's credentials from the instance metadata
service at ``http://169.254.169.254:80``; pgBackRest (``repo1-s3-key-type=auto``, which
hard-codes that address) and the AWS CLI v2 / botocore both use it. A local machine (a
``systemd-nspawn`` guest in a network namespace we created) sees the same thing: this server
runs as a host process *inside the machine's network namespace*, on 169.254.169.254 added to
that namespace's ``lo``. The host's own namespace is never touched (the host may itself use a
real 169.254.169.254).

The subset served is the one botocore, the AWS CLI v2 and pgBackRest use, with the details they
depend on (checked against botocore's ``IMDSFetcher`` / ``InstanceMetadataFetcher`` and
pgBackRest's ``storageS3AuthAuto``):

* ``PUT /latest/api/token`` with ``X-aws-ec2-metadata-token-ttl-seconds`` (1..21600, else 400)
  gives a random token; every GET needs a live ``X-aws-ec2-metadata-token`` (else 401), as on an
  instance with IMDSv1 disabled. A token PUT carrying ``X-Forwarded-For`` is refused (403), as
  the real service does.
* Paths answer with and without a trailing slash: botocore asks for
  ``placement/availability-zone/`` and ``iam/security-credentials/``, pgBackRest for
  ``iam/security-credentials`` (no slash).
* The role's credentials are the real JSON document (``Code``, ``LastUpdated``, ``Type``,
  ``AccessKeyId``, ``SecretAccessKey``, ``Token``, ``Expiration`` as ``%Y-%m-%dT%H:%M:%SZ``,
  six hours ahead). ``Token`` is always present, since botocore ignores a document without it
  and pgBackRest stops with "token missing"; without a session token in the configuration it
  is the empty string: botocore then signs without ``X-Amz-Security-Token`` (it tests the
  token's truth); pgBackRest sends (and signs) an empty ``x-amz-security-token``, which moto
  accepts in its default mode (no IAM enforcement), the way ``localtarget.s3`` runs it. With
  moto's enforcement on (``INITIAL_NO_AUTH_ACTION_COUNT``), moto refuses a long-term key sent
  with that header at all (400, InvalidToken), so there the config needs temporary
  credentials from moto's STS (``session_token`` set), which work in both modes.

Secrets are never logged: each request is logged as method, path and status only.

``python -m localtarget.imds --config FILE [--address A] [--port P] [--ready-file PATH]`` serves
until SIGTERM and exits 0. The machine launcher uses :func:`add_metadata_address` and
:func:`start_in_netns`.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import errno
import http.server
import json
import logging
import os
import platform
import re
import secrets
import signal
import socketserver
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from ipaddress import IPv4Address
from pathlib import Path
from types import FrameType
from typing import Any, Final, TypeAlias

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, model_validator

from localtarget.netns import start_server_in_netns
from localtarget.processes import ServiceError, stop_pid

METADATA_ADDRESS: Final = "169.254.169.254"
METADATA_PORT: Final = 80
#: The account every local instance belongs to (moto's default account).
ACCOUNT_ID: Final = "123456789012"
TOKEN_PATH: Final = "/latest/api/token"  # noqa: S105 - a URL path
TTL_HEADER: Final = "X-aws-ec2-metadata-token-ttl-seconds"
TOKEN_HEADER: Final = "X-aws-ec2-metadata-token"  # noqa: S105 - a header name
MAX_TOKEN_TTL: Final = 21600
#: How far ahead the served credentials expire, as role credentials on EC2 do.
CREDENTIAL_LIFETIME: Final = dt.timedelta(hours=6)
#: Live tokens kept at most; the ones closest to expiry go first past that.
MAX_TOKENS: Final = 4096
ISO_Z: Final = "%Y-%m-%dT%H:%M:%SZ"

NETNS_DIR: Final = Path("/run/netns")

log = logging.getLogger("localtarget.imds")


class ImdsError(ServiceError):
    """The metadata stand-in could not be configured or started; the message says why."""


class ImdsConfigError(ImdsError):
    """The configuration file is unsafe or invalid (no secret value is ever in the message)."""


class ImdsConfig(BaseModel):
    """What the instance is and which role credentials it hands out."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    instance_id: str = Field(pattern=r"^i-[0-9a-f]{8,17}$")
    region: str = Field(pattern=r"^[a-z]{2}(-[a-z]+)+-[0-9]+$")
    availability_zone: str
    role_name: str = Field(pattern=r"^[A-Za-z0-9+=,.@_-]{1,64}$")
    access_key_id: str = Field(pattern=r"^[A-Za-z0-9]{1,128}$")
    secret_access_key: SecretStr = Field(min_length=1)
    session_token: SecretStr | None = None
    local_ipv4: IPv4Address
    hostname: str = Field(pattern=r"^[A-Za-z0-9]([A-Za-z0-9.-]{0,251}[A-Za-z0-9])?$")
    #: Not needed by the clients; served in the listing and the identity document.
    instance_type: str = Field(default="m6i.large", pattern=r"^[a-z0-9-]+\.[a-z0-9]+$")
    image_id: str = Field(default="ami-0123456789abcdef0", pattern=r"^ami-[0-9a-f]{8,17}$")

    @model_validator(mode="after")
    def _zone_in_region(self) -> ImdsConfig:
        # botocore (and so the AWS CLI) takes the region as the zone minus its last letter.
        zone = self.availability_zone
        if not (zone[:-1] == self.region and zone[-1:].isalpha() and zone[-1:].islower()):
            raise ValueError(
                f"availability_zone {zone!r} must be the region {self.region!r} followed by "
                "one lowercase letter (clients derive the region by dropping that letter)"
            )
        return self


def load_config(path: Path) -> ImdsConfig:
    """Read ``path``: a regular file of ours, mode 0600 (0400 too), holding the JSON config."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as exc:
        raise ImdsConfigError(f"{path}: cannot open the IMDS config: {exc.strerror}") from exc
    with os.fdopen(fd, "rb") as handle:
        info = os.fstat(handle.fileno())
        if not stat.S_ISREG(info.st_mode):
            raise ImdsConfigError(f"{path}: the IMDS config must be a regular file")
        mode = stat.S_IMODE(info.st_mode)
        if mode & 0o077 or not mode & stat.S_IRUSR:
            raise ImdsConfigError(
                f"{path}: refusing the IMDS config with mode {mode:04o}: it holds the role's "
                f"secret access key and must be mode 0600 (owner only); run `chmod 600 {path}`"
            )
        if info.st_uid != os.geteuid():
            raise ImdsConfigError(
                f"{path}: refusing the IMDS config owned by uid {info.st_uid}: it must belong "
                f"to the user running the server (uid {os.geteuid()})"
            )
        data = handle.read()
    try:
        return ImdsConfig.model_validate_json(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(part) for part in error['loc']) or '(file)'}: {error['msg']}"
            for error in exc.errors(include_url=False, include_input=False, include_context=False)
        )
        raise ImdsConfigError(f"{path}: invalid IMDS config: {problems}") from None


# --- the service ----------------------------------------------------------------------------


class TokenStore:
    """IMDSv2 session tokens, each remembered with its expiry (monotonic clock)."""

    def __init__(self) -> None:
        self._tokens: dict[str, float] = {}
        self._lock = threading.Lock()

    def issue(self, ttl: int) -> str:
        token = secrets.token_urlsafe(42)
        now = time.monotonic()
        with self._lock:
            for old in [key for key, expiry in self._tokens.items() if expiry <= now]:
                del self._tokens[old]
            while len(self._tokens) >= MAX_TOKENS:
                del self._tokens[min(self._tokens, key=self._tokens.__getitem__)]
            self._tokens[token] = now + ttl
        return token

    def valid(self, token: str | None) -> bool:
        if not token:
            return False
        with self._lock:
            expiry = self._tokens.get(token)
        return expiry is not None and expiry > time.monotonic()


def _iso(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).strftime(ISO_Z)


def _imds_json(document: dict[str, Any]) -> str:
    """JSON laid out as the real service does (``"Key" : value``, two-space indent)."""
    return json.dumps(document, indent=2, separators=(",", " : "))


def _architecture() -> str:
    machine = platform.machine().lower()
    return {"amd64": "x86_64", "aarch64": "arm64"}.get(machine, machine)


#: A tree node: a folder (name → node) or a leaf computed at request time.
Node: TypeAlias = dict[str, "Node"] | Callable[[], str]


class MetadataTree:
    """The metadata categories served, and the documents computed from the config."""

    def __init__(self, config: ImdsConfig, started: dt.datetime) -> None:
        self.config = config
        self.started = started
        c = config
        self.root: dict[str, Node] = {
            "latest": {
                "meta-data": {
                    "ami-id": lambda: c.image_id,
                    "hostname": lambda: c.hostname,
                    "iam": {
                        "info": self.iam_info,
                        "security-credentials": {c.role_name: self.credentials},
                    },
                    "instance-id": lambda: c.instance_id,
                    "instance-type": lambda: c.instance_type,
                    "local-hostname": lambda: c.hostname,
                    "local-ipv4": lambda: str(c.local_ipv4),
                    "placement": {
                        "availability-zone": lambda: c.availability_zone,
                        "region": lambda: c.region,
                    },
                },
                "dynamic": {"instance-identity": {"document": self.identity_document}},
            }
        }

    def credentials(self) -> str:
        issued = dt.datetime.now(dt.UTC).replace(microsecond=0)
        token = self.config.session_token
        return _imds_json(
            {
                "Code": "Success",
                "LastUpdated": _iso(issued),
                "Type": "AWS-HMAC",
                "AccessKeyId": self.config.access_key_id,
                "SecretAccessKey": self.config.secret_access_key.get_secret_value(),
                # Always present (botocore and pgBackRest require the field); empty without a
                # session token, so botocore signs without X-Amz-Security-Token.
                "Token": token.get_secret_value() if token is not None else "",
                "Expiration": _iso(issued + CREDENTIAL_LIFETIME),
            }
        )

    def iam_info(self) -> str:
        return _imds_json(
            {
                "Code": "Success",
                "LastUpdated": _iso(self.started),
                "InstanceProfileArn": (
                    f"arn:aws:iam::{ACCOUNT_ID}:instance-profile/{self.config.role_name}"
                ),
                "InstanceProfileId": "AIPA" + self.config.instance_id[2:].upper().ljust(17, "0"),
            }
        )

    def identity_document(self) -> str:
        c = self.config
        return _imds_json(
            {
                "accountId": ACCOUNT_ID,
                "architecture": _architecture(),
                "availabilityZone": c.availability_zone,
                "billingProducts": None,
                "devpayProductCodes": None,
                "marketplaceProductCodes": None,
                "imageId": c.image_id,
                "instanceId": c.instance_id,
                "instanceType": c.instance_type,
                "kernelId": None,
                "pendingTime": _iso(self.started),
                "privateIp": str(c.local_ipv4),
                "ramdiskId": None,
                "region": c.region,
                "version": "2017-09-30",
            }
        )

    def lookup(self, path: str) -> str | None:
        """The body for ``path`` (a folder gives its listing), or None when unknown."""
        if not path.strip("/"):
            return "latest"  # the versions served (the real service lists dated ones too)
        node: Node = self.root
        for part in path.strip("/").split("/"):
            if not isinstance(node, dict) or part not in node:
                return None
            node = node[part]
        if isinstance(node, dict):
            return "\n".join(
                f"{name}/" if isinstance(child, dict) else name
                for name, child in sorted(node.items())
            )
        return node()


def _html_error(code: int, reason: str) -> bytes:
    return (
        '<?xml version="1.0" encoding="iso-8859-1"?>\n'
        '<!DOCTYPE html PUBLIC "-//W3C//DTD XHTML 1.0 Transitional//EN"\n'
        '\t"http://www.w3.org/TR/xhtml1/DTD/xhtml1-transitional.dtd">\n'
        '<html xmlns="http://www.w3.org/1999/xhtml" xml:lang="en" lang="en">\n'
        f" <head>\n  <title>{code} - {reason}</title>\n </head>\n"
        f" <body>\n  <h1>{code} - {reason}</h1>\n </body>\n</html>\n"
    ).encode()


class ImdsHandler(http.server.BaseHTTPRequestHandler):
    """One connection; HTTP/1.1 with keep-alive, like the real service."""

    protocol_version = "HTTP/1.1"
    server_version = "EC2ws"
    sys_version = ""
    timeout = 60  # an idle keep-alive connection is closed after this many seconds

    @property
    def imds(self) -> ImdsServer:
        assert isinstance(self.server, ImdsServer)
        return self.server

    # Logging: method, path and status only; never headers, bodies or tokens.
    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:  # noqa: ARG002
        method = getattr(self, "command", None) or "-"
        path = (getattr(self, "path", None) or "-").split("?", 1)[0]
        status = code.value if isinstance(code, http.HTTPStatus) else code
        log.info("%s %s %s", method, ascii(path[:200])[1:-1], status)

    def version_string(self) -> str:
        return self.server_version

    def log_message(self, format: str, *args: Any) -> None:
        """Silenced: the base class would log request lines and error texts verbatim."""

    def _drain(self) -> None:
        length = self.headers.get("Content-Length")
        if length and length.isdigit() and int(length) > 0:
            if int(length) > 65536:
                self.close_connection = True  # not worth reading; the rest is out of sync
            else:
                self.rfile.read(int(length))

    def _send(
        self,
        code: int,
        body: bytes,
        content_type: str = "text/plain",
        headers: dict[str, str] | None = None,
    ) -> None:
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _error(self, code: int, headers: dict[str, str] | None = None) -> None:
        reason = http.HTTPStatus(code).phrase
        self._send(code, _html_error(code, reason), "text/html", headers)

    def _path(self) -> str:
        path = self.path.split("?", 1)[0]
        return path.rstrip("/") or "/"

    def do_PUT(self) -> None:
        self._drain()
        if self._path() != TOKEN_PATH:
            self._error(405 if self.imds.tree.lookup(self._path()) is not None else 404)
            return
        if self.headers.get("X-Forwarded-For") is not None:
            self._error(403)
            return
        raw = (self.headers.get(TTL_HEADER) or "").strip()
        if not re.fullmatch(r"[0-9]{1,6}", raw) or not 1 <= int(raw) <= MAX_TOKEN_TTL:
            self._error(400)
            return
        token = self.imds.tokens.issue(int(raw))
        self._send(200, token.encode(), headers={TTL_HEADER: raw})

    def do_GET(self) -> None:
        self._drain()
        path = self._path()
        if path == TOKEN_PATH:
            self._error(405, {"Allow": "OPTIONS, PUT"})
            return
        if not self.imds.tokens.valid(self.headers.get(TOKEN_HEADER)):
            self._error(401)
            return
        body = self.imds.tree.lookup(path)
        if body is None:
            self._error(404)
            return
        self._send(200, body.encode())

    def do_HEAD(self) -> None:
        self.do_GET()

    def _not_allowed(self) -> None:
        self._drain()
        self._error(405)

    do_POST = do_DELETE = do_PATCH = _not_allowed


class ImdsServer(http.server.ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], config: ImdsConfig) -> None:
        self.tokens = TokenStore()
        self.tree = MetadataTree(config, dt.datetime.now(dt.UTC).replace(microsecond=0))
        super().__init__(address, ImdsHandler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind resolves the address's name (a DNS query, slow or hanging
        # in a namespace without a resolver); the name is never needed here.
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name = str(host)
        self.server_port = int(port)


def _write_ready(path: Path, server: ImdsServer) -> None:
    host, port = server.server_address[:2]
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}")
    temporary.write_text(f"{os.getpid()} {host!s}:{port}\n")
    temporary.replace(path)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m localtarget.imds", description="IMDSv2 stand-in for a local machine"
    )
    parser.add_argument("--config", type=Path, required=True, help="JSON config, mode 0600")
    parser.add_argument("--address", default=METADATA_ADDRESS)
    parser.add_argument("--port", type=int, default=METADATA_PORT)
    parser.add_argument("--ready-file", type=Path, help="written once the socket is bound")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s imds[%(process)d] %(message)s",
        stream=sys.stderr,
        force=True,
    )
    try:
        config = load_config(args.config)
    except ImdsConfigError as exc:
        log.error("%s", exc)
        return 2
    try:
        server = ImdsServer((args.address, args.port), config)
    except OSError as exc:
        hint = ""
        if exc.errno == errno.EADDRNOTAVAIL:
            hint = " (not an address of this network namespace: add_metadata_address first)"
        log.error("cannot listen on %s:%d: %s%s", args.address, args.port, exc.strerror, hint)
        return 1

    def stop(signum: int, _frame: FrameType | None) -> None:
        log.info("signal %d: stopping", signum)
        # shutdown() waits for serve_forever(), which runs in this (the main) thread.
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    try:
        if args.ready_file is not None:
            _write_ready(args.ready_file, server)
        host, port = server.server_address[:2]
        log.info(
            "serving IMDSv2 for %s (%s, role %s) on %s:%s",
            config.instance_id,
            config.availability_zone,
            config.role_name,
            host,
            port,
        )
        server.serve_forever(poll_interval=0.2)
    finally:
        server.server_close()
        if args.ready_file is not None:
            args.ready_file.unlink(missing_ok=True)
    log.info("stopped")
    return 0


# --- for the machine launcher -----------------------------------------------------------------


def _run_ip(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=False, timeout=30)


def _require_own_netns(netns: str) -> Path:
    """``/run/netns/<netns>``, after checking it is a named namespace that is not the host's."""
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}", netns):
        raise ImdsError(f"{netns!r} is not a network namespace name")
    path = NETNS_DIR / netns
    try:
        target = path.stat()
    except OSError as exc:
        raise ImdsError(f"network namespace {netns!r} does not exist ({path})") from exc
    for own in ("/proc/self/ns/net", "/proc/1/ns/net"):
        with contextlib.suppress(OSError):
            host = Path(own).stat()
            if (host.st_dev, host.st_ino) == (target.st_dev, target.st_ino):
                raise ImdsError(
                    f"network namespace {netns!r} is the host's own ({own}): refusing to touch it"
                )
    return path


def _lo_addresses(netns: str) -> set[str]:
    result = _run_ip("-n", netns, "-j", "addr", "show", "dev", "lo")
    if result.returncode != 0:
        raise ImdsError(f"ip -n {netns} addr show dev lo failed: {result.stderr.strip()}")
    return {
        str(info.get("local"))
        for link in json.loads(result.stdout or "[]")
        for info in link.get("addr_info", [])
    }


def add_metadata_address(netns: str) -> None:
    """Put 169.254.169.254/32 on ``lo`` of ``netns`` and set ``lo`` up (idempotent).

    Only ever a named namespace under /run/netns, and never the host's own.
    """
    _require_own_netns(netns)
    result = _run_ip("-n", netns, "link", "set", "lo", "up")
    if result.returncode != 0:
        raise ImdsError(f"ip -n {netns} link set lo up failed: {result.stderr.strip()}")
    if METADATA_ADDRESS in _lo_addresses(netns):
        return
    result = _run_ip("-n", netns, "addr", "add", f"{METADATA_ADDRESS}/32", "dev", "lo")
    if result.returncode != 0 and "File exists" not in result.stderr:
        raise ImdsError(
            f"ip -n {netns} addr add {METADATA_ADDRESS}/32 dev lo failed: {result.stderr.strip()}"
        )


def ready_file_for(log_path: Path) -> Path:
    """Where :func:`start_in_netns` has the server say it listens: next to its log."""
    return log_path.with_name(log_path.name + ".ready")


def start_in_netns(
    netns: str, config_path: Path, log_path: Path, *, timeout: float = 15.0
) -> subprocess.Popen[bytes]:
    """Start the server in ``netns`` on 169.254.169.254:80 and wait until it listens.

    The config is checked here first (same rules as the server's). The process leads its own
    session; ``ip netns exec`` execs the interpreter, so the returned PID is the server's:
    stop it with SIGTERM to that PID (it exits 0). Its log (method, path, status per request)
    goes to ``log_path``; the ready file is :func:`ready_file_for` ``(log_path)``.
    """
    _require_own_netns(netns)
    config_path = config_path.resolve()
    load_config(config_path)
    if METADATA_ADDRESS not in _lo_addresses(netns):
        raise ImdsError(
            f"{METADATA_ADDRESS} is not on lo in network namespace {netns!r}: "
            "call add_metadata_address first"
        )
    ready = ready_file_for(log_path)
    argv = [
        sys.executable, "-m", "localtarget.imds",
        "--config", str(config_path),
        "--address", METADATA_ADDRESS,
        "--port", str(METADATA_PORT),
        "--ready-file", str(ready),
    ]  # fmt: skip
    return start_server_in_netns(
        netns,
        argv,
        log_path=log_path,
        ready_file=ready,
        timeout=timeout,
        what="IMDS stand-in",
        error=ImdsError,
    )


def stop_server(process: subprocess.Popen[bytes], timeout: float = 10.0) -> int | None:
    """SIGTERM to the server's PID, wait, SIGKILL if it lingers; its exit code."""
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            stop_pid(process.pid, signal.SIGKILL, timeout=5)
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=5)
    return process.poll()


if __name__ == "__main__":
    sys.exit(main())

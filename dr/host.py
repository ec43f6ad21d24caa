"""The hosts a drill works on, all reached over SSH through :func:`erpcloud.ssh.connect`.

* The drill host: an SSH host given on the command line (``user@host:port`` with its pinned
  host key), one from a drill-hosts inventory (per region), or one a site makes for the drill
  (on the machines site a drill machine booted from the customer's image, see
  :mod:`dr.site`). Everything of one drill lives in ``<drill root>/<drill id>/`` on it; a host
  made for the drill goes with it.
* Production's database host, only for the consistent snapshot of a point drill (read-only
  sums and a restore point; nothing is restored there).

Root work goes through one ``sudo -n bash -c`` chain, database work as ``postgres``
(``sudo -n -u postgres``), always with stdin closed.
"""

from __future__ import annotations

import base64
import hashlib
import shlex
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Final

import paramiko
from pydantic import Field, ValidationError

from backups.pgbackrest import CommandResult
from dr.model import DrillHostRecord
from dr.sql import psql_argv
from erpcloud.files import write_atomic
from erpcloud.inventory import AbsolutePath, SshEndpoint, Strict, check_host_key
from erpcloud.render import HostLayout
from erpcloud.ssh import HostKeyError, SshTarget, connect, known_hosts_line, run, run_as_root
from maintenance.errors import ChangeFileError, errors_from_validation, read_yaml

if TYPE_CHECKING:
    from fabric import Connection

#: Where drills live on a drill host.
DEFAULT_DRILL_ROOT: Final = "/var/lib/erpcloud-drill"
#: The PostgreSQL of the product image, production's and a drill machine's: a backup restores
#: only with its own major version.
IMAGE_PG_VERSION: Final = HostLayout().pg_version
#: The restored cluster listens on the drill host's loopback only.
LOOPBACK: Final = "127.0.0.1"
#: Ports tried for the restored cluster on the drill host (loopback only): below Linux's
#: ephemeral range (32768-60999), where an outgoing connection's own port can make a free-
#: looking port impossible to listen on.
DRILL_PORTS: Final = range(25432, 25632)


class HostUnreachable(RuntimeError):
    """The host did not answer over SSH, presented another key, or refused the login."""


class HostCommandError(RuntimeError):
    """A command on a host failed; the message holds its last lines of output."""


def _result(argv: str, code: int, out: str, err: str) -> CommandResult:
    return CommandResult((argv,), code, out, err)


@dataclass
class Shell:
    """Commands on one host through a pinned-key connection, opened on first use."""

    target: SshTarget
    _connection: Connection | None = field(default=None, init=False, repr=False)

    def connection(self) -> Connection:
        if self._connection is None:
            try:
                self._connection = connect(self.target)
            except (HostKeyError, paramiko.SSHException, OSError) as exc:
                raise HostUnreachable(f"{self.target}: {exc}") from None
        return self._connection

    def run(self, command: str, timeout: float = 600) -> CommandResult:
        result = run(self.connection(), command, timeout=timeout)
        return _result(command, int(result.exited), str(result.stdout), str(result.stderr))

    def root(self, script: str, timeout: float = 600) -> CommandResult:
        result = run_as_root(self.connection(), script, timeout=timeout)
        return _result(script, int(result.exited), str(result.stdout), str(result.stderr))

    def postgres(
        self, script: str, env: Mapping[str, str] | None = None, timeout: float = 600
    ) -> CommandResult:
        """``script`` in bash as ``postgres`` (``cd /``: it may not enter the login's home)."""
        environment = [f"{k}={v}" for k, v in sorted((env or {}).items())]
        argv = ["env", *environment, "bash", "-c", "set -euo pipefail; " + script]
        return self.run("cd / && sudo -n -u postgres " + shlex.join(argv), timeout=timeout)

    def checked(self, result: CommandResult, what: str) -> str:
        if not result.ok:
            raise HostCommandError(f"{what} on {self.target} failed: {result.message}")
        return result.stdout

    def close(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None


def pg_bin(pg_version: int, name: str) -> str:
    """PostgreSQL's programs where Debian and Ubuntu (PGDG) install them."""
    return f"/usr/lib/postgresql/{pg_version}/bin/{name}"


@dataclass(frozen=True)
class DatabaseAccess:
    """A PostgreSQL server reached as ``postgres`` on its own host."""

    shell: Shell
    port: int
    socket_dir: str | None
    pg_version: int = IMAGE_PG_VERSION

    @property
    def psql(self) -> str:
        return pg_bin(self.pg_version, "psql")


# --- which drill host -----------------------------------------------------------------------------
@dataclass(frozen=True)
class DrillHostSpec:
    """An existing drill host: where to connect, with which pinned key, where drills live."""

    name: str
    target: SshTarget
    root: str = DEFAULT_DRILL_ROOT


def parse_host_address(text: str) -> tuple[str, str, int]:
    """``user@host[:port]`` → (user, host, port); anything else refused, naming the rule."""
    user, at, rest = text.partition("@")
    host, colon, port_text = rest.rpartition(":") if ":" in rest else (rest, "", "")
    if not at or not user or not host:
        raise ValueError(f"--drill-host: {text!r} must be user@host[:port]")
    try:
        port = int(port_text) if colon else 22
    except ValueError:
        raise ValueError(f"--drill-host: port {port_text!r} is not a number") from None
    if not 1 <= port <= 65535:
        raise ValueError(f"--drill-host: port {port} is outside 1-65535")
    return user, host, port


def host_from_command_line(
    address: str, host_key: str | None, key_file: Path, known_hosts: Path, root: str | None
) -> DrillHostSpec:
    """A drill host given as ``user@host[:port]``; its host key is pinned into ``known_hosts``."""
    user, host, port = parse_host_address(address)
    if not host_key:
        raise ValueError("--drill-host-key: the drill host's public host key is required (pinned)")
    key = check_host_key(host_key)
    write_atomic(known_hosts, known_hosts_line(host, port, key) + "\n", mode=0o600)
    target = SshTarget(host, port, user, key_file, known_hosts)
    return DrillHostSpec(f"{host}:{port}", target, root or DEFAULT_DRILL_ROOT)


class DrillHostEntry(Strict):
    name: Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9.-]{0,62}$")]
    #: The region the host stands in: a copy-region drill uses the copy region's host (S8).
    region: str
    ssh: SshEndpoint
    drill_root: AbsolutePath = DEFAULT_DRILL_ROOT


class DrillHostsFile(Strict):
    """``dr/drill-hosts.example.yaml``: the drill hosts, one or more per region."""

    ssh_key_file: Path
    hosts: list[DrillHostEntry] = Field(default_factory=list)


class DrillHostsError(ValueError):
    pass


def host_from_inventory(path: Path, region: str, known_hosts: Path) -> DrillHostSpec:
    """The first drill host of ``region`` in a drill-hosts file (errors name file and field)."""
    try:
        data = read_yaml(path)
        hosts = DrillHostsFile.model_validate(data)
    except ChangeFileError as exc:
        raise DrillHostsError(str(exc)) from None
    except ValidationError as exc:
        errors = errors_from_validation(str(path), exc)
        raise DrillHostsError("\n".join(str(e) for e in errors)) from None
    entry = next((h for h in hosts.hosts if h.region == region), None)
    if entry is None:
        known = ", ".join(sorted({h.region for h in hosts.hosts})) or "none"
        raise DrillHostsError(f"{path}: no drill host in region {region} (regions: {known})")
    ssh = entry.ssh
    write_atomic(known_hosts, known_hosts_line(ssh.host, ssh.port, ssh.host_key) + "\n", 0o600)
    key_file = ssh.key_file or hosts.ssh_key_file
    target = SshTarget(ssh.host, ssh.port, ssh.user, key_file, known_hosts)
    return DrillHostSpec(entry.name, target, entry.drill_root)


# --- one drill on its host ------------------------------------------------------------------------
@dataclass
class DrillHost:
    """One drill's folder and restored cluster on the drill host."""

    spec: DrillHostSpec
    drill_id: str
    pg_version: int = IMAGE_PG_VERSION
    #: A host made for this drill elsewhere (a drill machine): removed after the drill's own
    #: cleanup, saying what it did.
    on_teardown: Callable[[], list[str]] | None = None
    #: A drill machine's folder on this host (its state for another process's teardown).
    machine_dir: str | None = None
    shell: Shell = field(init=False)
    port: int | None = None
    postmaster_pid: int | None = None

    def __post_init__(self) -> None:
        self.shell = Shell(self.spec.target)

    @property
    def directory(self) -> str:
        """Short on purpose: the socket's path must stay under 108 bytes."""
        return f"{self.spec.root}/d{hashlib.sha256(self.drill_id.encode()).hexdigest()[:10]}"

    def path(self, *parts: str) -> str:
        return "/".join([self.directory, *parts])

    def layout(self) -> HostLayout:
        """The drill's own paths: nothing is shared with production or another drill."""
        return HostLayout(
            pg_version=self.pg_version,
            pg_data=self.path("data"),
            pg_port=self.port or 0,
            pg_socket_dir=self.path("socket"),
            listen_addresses=LOOPBACK,
            pgbackrest_config=self.path("pgbackrest.conf"),
            spool_path=self.path("pgbackrest", "spool"),
            log_path=self.path("pgbackrest", "log"),
            lock_path=self.path("pgbackrest", "lock"),
            data_mount=self.directory,
            conf_d=self.path("conf"),
        )

    def record(self) -> DrillHostRecord:
        target = self.spec.target
        return DrillHostRecord(
            name=self.spec.name,
            address=str(target),
            local=False,  # the host-process stand-in's sshd drill hosts are gone
            directory=self.directory,
            pg_port=self.port,
            postmaster_pid=self.postmaster_pid,
            ssh_host=target.host,
            ssh_user=target.user,
            ssh_port=target.port,
            key_file=str(target.key_filename),
            known_hosts=str(target.known_hosts),
            machine_dir=self.machine_dir,
        )

    # --- preparation ---------------------------------------------------------------------------
    def check_access(self) -> None:
        """Reachable with the pinned key, and root and ``postgres`` through ``sudo -n``."""
        self.shell.checked(self.shell.root("true"), "sudo -n (root)")
        self.shell.checked(self.shell.postgres("true"), "sudo -n -u postgres")

    def find_port(self) -> int:
        script = (
            f"for p in {' '.join(str(p) for p in DRILL_PORTS)}; do "
            f"(exec 3<>/dev/tcp/{LOOPBACK}/$p) 2>/dev/null || "
            '{ [ -z "$(ss -Htan "( sport = :$p )" 2>/dev/null)" ] && echo $p && exit 0; }; '
            "done; exit 1"
        )
        out = self.shell.checked(self.shell.run(f"bash -c {shlex.quote(script)}"), "a free port")
        self.port = int(out.strip())
        return self.port

    def prepare(self, files: Mapping[str, tuple[str, int]]) -> None:
        """The drill's folders (postgres owns what it writes) and files ({path: (text, mode)})."""
        owned = [self.path(p) for p in ("pgbackrest/log", "pgbackrest/lock", "pgbackrest/spool")]
        owned += [self.path("socket"), self.path("log")]
        lines = [
            f"install -d -m 0755 {shlex.quote(self.spec.root)}",
            f"if [ -e {shlex.quote(self.directory)} ]; then echo 'drill folder exists' >&2; "
            "exit 1; fi",
            f"install -d -m 0755 {shlex.quote(self.directory)} {shlex.quote(self.path('conf'))}",
            f"install -d -o postgres -g postgres -m 0700 {shlex.quote(self.path('data'))}",
            "install -d -o postgres -g postgres -m 0750 " + " ".join(map(shlex.quote, owned)),
        ]
        self.shell.checked(self.shell.root("\n".join(lines)), "preparing the drill folder")
        self.prepare_files(files)

    def free_bytes(self) -> int:
        """Free bytes on the file system of the drill's data directory (``df``)."""
        out = self.shell.checked(
            self.shell.run(f"df -P -B1 {shlex.quote(self.path('data'))}"), "df"
        )
        return int(out.splitlines()[-1].split()[3])

    def control_settings(self) -> dict[str, str]:
        """The restored backup's ``max_*`` settings (``pg_controldata``): a hot standby needs at
        least the primary's values, or recovery pauses."""
        out = self.shell.checked(
            self.shell.postgres(
                f"{pg_bin(self.pg_version, 'pg_controldata')} -D {shlex.quote(self.path('data'))}"
            ),
            "pg_controldata",
        )
        names = {
            "max_connections setting": "max_connections",
            "max_worker_processes setting": "max_worker_processes",
            "max_wal_senders setting": "max_wal_senders",
            "max_prepared_xacts setting": "max_prepared_transactions",
            "max_locks_per_xact setting": "max_locks_per_transaction",
        }
        settings = {}
        for line in out.splitlines():
            key, _, value = line.partition(":")
            if key.strip() in names:
                settings[names[key.strip()]] = value.strip()
        return settings

    def write_server_config(self, settings: Mapping[str, str]) -> None:
        """The restored cluster's own configuration, beside (not in) its data directory: its
        port and socket on loopback, peer login for ``postgres`` only, and no archiving (S8: a
        drill never writes to a repository), whatever production's copied files say."""
        lines = [
            f"# erpcloud restore drill {self.drill_id}: written by the drill, removed with it.",
            f"data_directory = '{self.path('data')}'",
            f"hba_file = '{self.path('conf', 'pg_hba.conf')}'",
            f"ident_file = '{self.path('conf', 'pg_ident.conf')}'",
            f"port = {self.port}",
            f"listen_addresses = '{LOOPBACK}'",
            f"unix_socket_directories = '{self.path('socket')}'",
            "archive_mode = off",
            "hot_standby = on",
            *(f"{name} = {value}" for name, value in sorted(settings.items())),
        ]
        self.prepare_files(
            {
                self.path("conf", "postgresql.conf"): ("\n".join(lines) + "\n", 0o644),
                self.path("conf", "pg_hba.conf"): ("local all postgres peer\n", 0o644),
                self.path("conf", "pg_ident.conf"): ("", 0o644),
            }
        )

    def prepare_files(self, files: Mapping[str, tuple[str, int]]) -> None:
        lines = []
        for path, (text, mode) in files.items():
            encoded = base64.b64encode(text.encode()).decode() or "''"
            quoted = shlex.quote(path)
            lines += [
                f"printf %s {encoded} | base64 -d > {quoted}",
                f"chown root:postgres {quoted}",
                f"chmod {mode:o} {quoted}",
            ]
        self.shell.checked(self.shell.root("\n".join(lines)), "writing the drill's files")

    # --- the restored cluster -------------------------------------------------------------------
    def pg_ctl(
        self, action: str, *options: str, env: Mapping[str, str] | None = None
    ) -> CommandResult:
        argv = [pg_bin(self.pg_version, "pg_ctl"), "-D", self.path("conf"), *options, action]
        return self.shell.postgres(shlex.join(argv), env=env, timeout=120)

    def start_postgres(
        self, env: Mapping[str, str], settings: Mapping[str, str], attempts: int = 3
    ) -> None:
        """Write the server configuration and start the restored cluster as ``postgres``
        (recovery begins); wait only for its PID. A port taken in the meantime (another drill
        on the host) is replaced by the next free one."""
        log = self.path("log", "postgres.log")
        pid_file, log_file = shlex.quote(self.path("data", "postmaster.pid")), shlex.quote(log)
        for attempt in range(1, attempts + 1):
            self.write_server_config(settings)
            self.shell.checked(self.pg_ctl("start", "-W", "-l", log, env=env), "pg_ctl start")
            found = self.shell.postgres(
                f"for _ in $(seq 1 300); do [ -s {pid_file} ] && exec head -1 {pid_file}; "
                f"grep -qs 'database system is shut down' {log_file} && exit 2; sleep 0.1; "
                "done; exit 1"
            )
            if found.ok and found.stdout.strip().isdigit():
                self.postmaster_pid = int(found.stdout.strip())
                return
            if attempt < attempts and self.log_has("could not create any TCP/IP sockets"):
                self.shell.root(f"mv {log_file} {log_file}.{attempt}")
                self.find_port()
                continue
            break
        raise HostCommandError(f"the restored cluster did not start:\n{self.log_tail()}")

    def running(self) -> bool:
        return self.pg_ctl("status").returncode == 0

    def log_tail(self, lines: int = 15) -> str:
        log = shlex.quote(self.path("log", "postgres.log"))
        return self.shell.root(f"tail -n {lines} {log} 2>/dev/null || true").stdout.strip()

    def log_has(self, text: str) -> bool:
        log = shlex.quote(self.path("log", "postgres.log"))
        return self.shell.root(f"grep -qF -- {shlex.quote(text)} {log}").ok

    def psql_argv(self, dbname: str) -> list[str]:
        psql = pg_bin(self.pg_version, "psql")
        return psql_argv(psql, self.path("socket"), self.port or 0, dbname)

    def run_sql(self, script: str, what: str, timeout: float = 600) -> str:
        """A psql script (see :mod:`dr.sql`) as ``postgres``; its output, or an error."""
        return self.shell.checked(self.shell.postgres(script, timeout=timeout), what)

    def stop_postgres(self) -> None:
        if self.port is not None and self.running():
            self.pg_ctl("stop", "-m", "fast", "-t", "60")

    # --- teardown --------------------------------------------------------------------------------
    def teardown(self) -> list[str]:
        """Stop the restored cluster and remove the drill's folder; a host made for the drill
        (a drill machine) is then powered off and removed (``on_teardown``). Never touches a
        repository: a drill deletes no backup."""
        done: list[str] = []
        try:
            self.stop_postgres()
            done.append("restored cluster stopped")
            self.shell.root(f"rm -rf -- {shlex.quote(self.directory)}")
            done.append(f"{self.directory} removed")
        except (HostUnreachable, HostCommandError, paramiko.SSHException, OSError) as exc:
            done.append(f"drill host not reachable for cleanup ({exc})")
        finally:
            self.shell.close()
            if self.on_teardown is not None:
                done.extend(self.on_teardown())
        return done


def teardown_recorded(record: DrillHostRecord, drill_id: str) -> list[str]:
    """Tear down the drill on an existing drill host kept with ``--keep``, from its record
    (another process may ask): its restored cluster and folder, over SSH. A host made for the
    drill goes through its site instead (:func:`dr.site.teardown_kept`)."""
    if not (
        record.ssh_host
        and record.ssh_user
        and record.ssh_port
        and record.key_file
        and record.known_hosts
    ):
        raise ValueError(f"the record of {record.name} lacks its SSH details")
    target = SshTarget(
        record.ssh_host,
        record.ssh_port,
        record.ssh_user,
        Path(record.key_file),
        Path(record.known_hosts),
    )
    root = record.directory.rstrip("/").rpartition("/")[0]
    drill = DrillHost(DrillHostSpec(record.name, target, root), drill_id)
    drill.port = record.pg_port
    return drill.teardown()

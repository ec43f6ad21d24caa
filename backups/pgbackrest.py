"""Running pgBackRest for one customer on its database host, over SSH.

Everything in :mod:`backups` talks to pgBackRest through a :class:`PgBackRest` runner, so the
same plain functions serve every host: production on AWS, the local machines (through their
inventory, as on AWS), and a drill host (the DR code). A runner adds ``--config`` and
``--stanza`` and runs as ``postgres``; it never raises on a non-zero exit: callers decide what a
failure means.
"""

from __future__ import annotations

import json
import re
import shlex
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final, Protocol

from erpcloud.model import Customer
from erpcloud.render import HostLayout
from erpcloud.ssh import SshTarget, connect, run

if TYPE_CHECKING:
    from fabric import Connection

PGBACKREST_BINARY: Final = "/usr/bin/pgbackrest"
#: A backup of a large database takes hours; nothing else should take minutes.
BACKUP_TIMEOUT_SECONDS: Final = 12 * 3600
COMMAND_TIMEOUT_SECONDS: Final = 900
#: pgBackRest's error code for "cannot connect" (``[049] HostConnectError``).
HOST_CONNECT_ERROR: Final = 49
_ERROR_CODE = re.compile(r"ERROR: \[(\d{3})\]")
_CURRENT_WAL_SQL: Final = "SELECT pg_walfile_name(pg_current_wal_lsn())"


@dataclass(frozen=True)
class CommandResult:
    argv: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str

    @property
    def ok(self) -> bool:
        return self.returncode == 0

    @property
    def error_code(self) -> int | None:
        """pgBackRest's own error code (``ERROR: [049]: ...``), when it printed one."""
        match = _ERROR_CODE.search(self.stderr) or _ERROR_CODE.search(self.stdout)
        return int(match[1]) if match else None

    @property
    def message(self) -> str:
        text = (self.stderr or self.stdout).strip()
        return "\n".join(text.splitlines()[-5:])


class PgBackRestError(RuntimeError):
    """pgBackRest exited non-zero (or printed something that is not the JSON asked for)."""

    def __init__(self, result: CommandResult, what: str = "") -> None:
        self.result = result
        detail = what or result.message or f"exit code {result.returncode}"
        super().__init__(f"pgbackrest {' '.join(result.argv)}: {detail}")

    @property
    def unreachable(self) -> bool:
        return self.result.error_code == HOST_CONNECT_ERROR


class PgBackRest(Protocol):
    """Runs ``pgbackrest --config=<host's> --stanza=<customer's> ARGS`` as ``postgres``."""

    @property
    def stanza(self) -> str: ...

    def run(self, *args: str, timeout: float = COMMAND_TIMEOUT_SECONDS) -> CommandResult: ...

    def current_wal_file(self) -> str | None:
        """The WAL file the database writes now, or None when it cannot be asked."""
        ...

    def version(self) -> str:
        """What ``pgbackrest version`` prints on the host ("pgBackRest 2.55.1")."""
        ...


def run_checked(runner: PgBackRest, *args: str, timeout: float = COMMAND_TIMEOUT_SECONDS) -> str:
    result = runner.run(*args, timeout=timeout)
    if not result.ok:
        raise PgBackRestError(result)
    return result.stdout


def run_json(runner: PgBackRest, *args: str, timeout: float = COMMAND_TIMEOUT_SECONDS) -> Any:
    """Run a command with ``--output=json`` and return the parsed document."""
    result = runner.run("--output=json", *args, timeout=timeout)
    if not result.ok:
        raise PgBackRestError(result)
    try:
        return json.loads(result.stdout)
    except json.JSONDecodeError as exc:
        raise PgBackRestError(result, f"printed no JSON ({exc})") from None


# --- a host over SSH ------------------------------------------------------------------------------
@dataclass
class SshPgBackRest:
    """pgBackRest on a database host, through the pinned-key connection of :mod:`erpcloud.ssh`.

    Each command is ``sudo -n -u postgres pgbackrest ...`` (non-interactive; the login user
    needs sudo to ``postgres``). On AWS the repositories' credentials come from the instance
    role (the local machines' too), so ``env`` is empty; an inventory host marked
    ``s3_emulator_keys`` gets the AWS stand-in's published test keys here.
    """

    target: SshTarget
    customer_stanza: str
    layout: HostLayout = field(default_factory=HostLayout)
    env: Mapping[str, str] = field(default_factory=dict)
    _connection: Connection | None = field(default=None, init=False, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)

    @classmethod
    def for_customer(
        cls,
        target: SshTarget,
        customer: Customer,
        layout: HostLayout | None = None,
        env: Mapping[str, str] | None = None,
    ) -> SshPgBackRest:
        return cls(target, customer.stanza, layout or HostLayout(), dict(env or {}))

    @property
    def stanza(self) -> str:
        return self.customer_stanza

    def _as_postgres(self, argv: list[str]) -> str:
        environment = [f"{k}={v}" for k, v in sorted(self.env.items())]
        prefix = ["env", *environment] if environment else []
        # cd /: postgres may not enter the login user's home directory.
        return "cd / && sudo -n -u postgres " + shlex.join([*prefix, *argv])

    def _run(self, command: str, timeout: float) -> tuple[int, str, str]:
        with self._lock:  # one connection; each command is a channel of its own on it
            if self._connection is None:
                self._connection = connect(self.target)
            connection = self._connection
        result = run(connection, command, timeout=timeout)
        return int(result.exited), str(result.stdout), str(result.stderr)

    def run(self, *args: str, timeout: float = COMMAND_TIMEOUT_SECONDS) -> CommandResult:
        argv = [
            PGBACKREST_BINARY,
            f"--config={self.layout.pgbackrest_config}",
            f"--stanza={self.stanza}",
            *args,
        ]
        code, out, err = self._run(self._as_postgres(argv), timeout)
        return CommandResult(tuple(argv), code, out, err)

    def current_wal_file(self) -> str | None:
        argv = ["psql", "-X", "-At", "-p", str(self.layout.pg_port), "-d", "postgres"]
        if self.layout.pg_socket_dir:
            argv += ["-h", self.layout.pg_socket_dir]
        argv += ["-c", _CURRENT_WAL_SQL]
        code, out, _ = self._run(self._as_postgres(argv), 60)
        return (out.strip() or None) if code == 0 else None

    def version(self) -> str:
        code, out, err = self._run(self._as_postgres([PGBACKREST_BINARY, "version"]), 60)
        if code != 0:
            raise PgBackRestError(CommandResult((PGBACKREST_BINARY, "version"), code, out, err))
        return out

    def close(self) -> None:
        with self._lock:
            if self._connection is not None:
                self._connection.close()
                self._connection = None

    def __enter__(self) -> SshPgBackRest:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

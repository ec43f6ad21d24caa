"""The one SSH connection factory: pinned host keys, ``RejectPolicy``, no stdin.

Fabric 3 accepts any host key by default (paramiko's ``AutoAddPolicy``) and reads no
known_hosts. Every connection the platform opens goes through :func:`connect`, which loads a
pinned known_hosts file and refuses a host that is missing from it or presents another key.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paramiko
from fabric import Config, Connection
from invoke.runners import Result


class HostKeyError(RuntimeError):
    """The host is not pinned, or presented a key other than the pinned one."""


@dataclass(frozen=True)
class SshTarget:
    """Where to connect and with what: everything a connection needs, and nothing implicit."""

    host: str
    port: int
    user: str
    key_filename: Path
    known_hosts: Path

    @property
    def host_id(self) -> str:
        """The known_hosts name: ``host`` on 22, ``[host]:port`` elsewhere."""
        return self.host if self.port == 22 else f"[{self.host}]:{self.port}"

    def __str__(self) -> str:
        return f"{self.user}@{self.host_id}"


def _pinned_keys(target: SshTarget) -> paramiko.HostKeys:
    if not target.known_hosts.is_file():
        raise HostKeyError(f"{target}: known_hosts file {target.known_hosts} does not exist")
    keys = paramiko.HostKeys(str(target.known_hosts))
    if keys.lookup(target.host_id) is None:
        raise HostKeyError(
            f"{target}: no pinned host key for {target.host_id} in {target.known_hosts}; "
            "pin it (from the instance's console output or inventory) before connecting"
        )
    return keys


def connect(target: SshTarget, timeout: float = 10.0) -> Connection:
    """An opened Fabric connection whose host key matched the pinned one."""
    _pinned_keys(target)
    config = Config(
        overrides={
            "load_ssh_configs": False,  # nothing from ~/.ssh/config changes where we connect
            "run": {"in_stream": False, "hide": True, "warn": True},
            "sudo": {"prompt": ""},
        }
    )
    connection = Connection(
        host=target.host,
        port=target.port,
        user=target.user,
        config=config,
        connect_timeout=int(timeout),
        connect_kwargs={
            "key_filename": [str(target.key_filename)],
            "look_for_keys": False,
            "allow_agent": False,
        },
    )
    client: paramiko.SSHClient = connection.client
    client.load_host_keys(str(target.known_hosts))
    client.set_missing_host_key_policy(paramiko.RejectPolicy())
    try:
        connection.open()
    except paramiko.BadHostKeyException as exc:
        raise HostKeyError(
            f"{target}: host key changed (got {exc.key.get_name()} "
            f"{exc.key.fingerprint}, pinned {exc.expected_key.fingerprint}); refusing to connect"
        ) from None
    except paramiko.SSHException as exc:
        if "not found in known_hosts" in str(exc):
            raise HostKeyError(f"{target}: {exc}") from None
        raise
    return connection


def run(connection: Connection, command: str, timeout: float | None = None) -> Result:
    """Run a command as the login user, stdin closed, output captured, never raising on exit."""
    result: Result = connection.run(command, in_stream=False, hide=True, warn=True, timeout=timeout)
    return result


def run_as_root(connection: Connection, script: str, timeout: float | None = None) -> Result:
    """Run a command chain as root in one ``sudo -n bash -c`` (non-interactive: no prompt)."""
    command = f"sudo -n bash -c {shlex.quote('set -euo pipefail; ' + script)}"
    return run(connection, command, timeout=timeout)


def known_hosts_line(host: str, port: int, public_key: str) -> str:
    """A known_hosts entry for a key line such as ``ssh-ed25519 AAAA...``."""
    parts = public_key.split()
    host_id = host if port == 22 else f"[{host}]:{port}"
    return f"{host_id} {parts[0]} {parts[1]}"


def result_summary(result: Any) -> str:
    """The last lines of a command's output, for reports and errors."""
    text = ((result.stdout or "") + (result.stderr or "")).strip()
    return "\n".join(text.splitlines()[-10:])

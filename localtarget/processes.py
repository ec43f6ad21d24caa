"""Starting and stopping the local servers: free loopback ports, PIDs, and nothing left behind.

Every server the platform starts locally (PostgreSQL, moto, stunnel, sshd) goes through
:class:`ManagedProcess`: it runs in its own session, is waited for on its port, and is stopped by
its PID (the whole process group), also when the caller failed part way.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

LOOPBACK = "127.0.0.1"


class ServiceError(RuntimeError):
    """A local server did not start or stop as it should; the message says which and why."""


def free_port() -> int:
    """A TCP port on loopback that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


def port_open(port: int, host: str = LOOPBACK) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.2)
        return sock.connect_ex((host, port)) == 0


#: Where local servers keep their state. Not the system temporary directory: it is
#: world-writable, and sshd's StrictModes refuses key files below a world-writable folder.
STATE_BASE = Path(os.environ.get("ERPCLOUD_STATE_BASE", "/var/lib/erpcloud"))


def make_state_root(prefix: str = "run-") -> Path:
    """A fresh state folder that ``postgres`` may traverse and nobody else may write."""
    STATE_BASE.mkdir(parents=True, exist_ok=True)
    STATE_BASE.chmod(0o755)
    root = Path(tempfile.mkdtemp(prefix=prefix, dir=STATE_BASE))
    root.chmod(0o755)
    return root


@dataclass
class ManagedProcess:
    """One server process, started in its own session and stopped by PID."""

    name: str
    argv: Sequence[str]
    log_path: Path
    env: Mapping[str, str] | None = None
    user: str | None = None
    cwd: Path | None = None
    stop_signal: int = signal.SIGTERM
    process: subprocess.Popen[bytes] | None = field(default=None, init=False, repr=False)

    @property
    def pid(self) -> int:
        if self.process is None:
            raise ServiceError(f"{self.name} is not started")
        return self.process.pid

    def start(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                list(self.argv),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=dict(self.env) if self.env is not None else None,
                user=self.user,
                group=self.user,
                extra_groups=[] if self.user else None,
                cwd=self.cwd,
                start_new_session=True,
            )

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def wait_for_port(self, port: int, timeout: float = 30.0, host: str = LOOPBACK) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.running():
                raise ServiceError(
                    f"{self.name} exited with code {self.exit_code()} before listening on "
                    f"{port}:\n{self.log_tail()}"
                )
            if port_open(port, host):
                return
            time.sleep(0.05)
        raise ServiceError(
            f"{self.name} did not listen on {port} in {timeout:.0f} s:\n{self.log_tail()}"
        )

    def exit_code(self) -> int | None:
        return None if self.process is None else self.process.poll()

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def stop(self, timeout: float = 20.0) -> None:
        """Stop by PID: the stop signal to the process group, then SIGKILL if it lingers."""
        if self.process is None or self.process.poll() is not None:
            return
        stop_pid(self.process.pid, self.stop_signal, timeout)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=1)


def stop_pid(pid: int, sig: int = signal.SIGTERM, timeout: float = 20.0) -> None:
    """Signal ``pid``'s process group (it leads its own session), wait, then kill it."""
    try:
        os.killpg(pid, sig)
    except ProcessLookupError:
        return
    except PermissionError:
        os.kill(pid, sig)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not pid_alive(pid):
            return
        time.sleep(0.05)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)


def pid_alive(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
    except OSError:
        return False
    return state != "Z"

"""A server of the local site started inside a network namespace the site created (the
metadata stand-in, the TLS front): ``ip netns exec NS ARGV``, waited for until it writes its PID
to a ready file after binding. ``ip netns exec`` execs the interpreter, so
the PID returned is the server's own; it leads its own session and is stopped by that PID.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Final

from localtarget.processes import ServiceError, stop_pid

REPO_ROOT: Final = Path(__file__).resolve().parent.parent


def log_tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def start_server_in_netns(
    netns: str,
    argv: Sequence[str],
    *,
    log_path: Path,
    ready_file: Path,
    timeout: float,
    what: str,
    error: type[Exception] = ServiceError,
) -> subprocess.Popen[bytes]:
    """Start ``argv`` (a server that writes its PID to ``ready_file`` once it listens) in
    ``netns``; wait until it is ready. If it exits first or is not ready in time, it is killed
    and ``error`` raised with the log's tail (``what`` names it)."""
    ready_file.unlink(missing_ok=True)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        part for part in (str(REPO_ROOT), env.get("PYTHONPATH", "")) if part
    )
    env["PYTHONUNBUFFERED"] = "1"
    with log_path.open("ab") as log_file:
        process = subprocess.Popen(
            ["ip", "netns", "exec", netns, *argv],
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            cwd=REPO_ROOT,
            env=env,
            start_new_session=True,
        )
    deadline = time.monotonic() + timeout
    while True:
        with contextlib.suppress(OSError, ValueError, IndexError):
            if int(ready_file.read_text().split()[0]) == process.pid:
                return process
        code = process.poll()
        if code is not None:
            raise error(
                f"{what} in {netns} exited with code {code} before listening "
                f"(log {log_path}):\n{log_tail(log_path)}"
            )
        if time.monotonic() >= deadline:
            stop_pid(process.pid, signal.SIGKILL, timeout=5)
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=5)
            raise error(
                f"{what} in {netns} did not listen within {timeout:.0f} s, killed "
                f"(log {log_path}):\n{log_tail(log_path)}"
            )
        time.sleep(0.05)

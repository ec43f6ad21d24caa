"""A private PostgreSQL 15 cluster on a loopback port, run as ``postgres`` (never root).

It is configured with the same rendered ``conf.d`` fragment as production (archiving through
pgBackRest), plus the few lines that make it private: its own port, socket folder and a
loopback-only listen address.
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import subprocess
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from localtarget.processes import LOOPBACK, ManagedProcess, ServiceError, free_port

PG_BIN = Path("/usr/lib/postgresql/15/bin")
PG_USER = "postgres"


def pg_binary(name: str) -> str:
    path = PG_BIN / name
    if not path.exists():
        raise ServiceError(f"{path} is missing: `make setup` installs postgresql-15")
    return str(path)


def chown_to_postgres(path: Path) -> None:
    entry = pwd.getpwnam(PG_USER)
    os.chown(path, entry.pw_uid, entry.pw_gid)


def run_as_postgres(
    argv: list[str], env: Mapping[str, str] | None = None, check: bool = True, timeout: float = 600
) -> subprocess.CompletedProcess[str]:
    """Run a command as the ``postgres`` user (pg tools and pgBackRest refuse to run as root)."""
    result = subprocess.run(
        argv,
        user=PG_USER,
        group=PG_USER,
        extra_groups=[],
        env=dict(env) if env is not None else None,
        capture_output=True,
        text=True,
        check=False,
        timeout=timeout,
        cwd="/",
    )
    if check and result.returncode != 0:
        raise ServiceError(f"{' '.join(argv)} exited {result.returncode}:\n{result.stderr.strip()}")
    return result


@dataclass
class PostgresCluster:
    """One private cluster: ``root/data``, ``root/socket``, ``root/log``."""

    root: Path
    port: int = field(default_factory=free_port)
    env: dict[str, str] = field(default_factory=dict)
    process: ManagedProcess | None = field(default=None, init=False)

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    @property
    def socket_dir(self) -> Path:
        return self.root / "socket"

    @property
    def conf_d(self) -> Path:
        return self.data_dir / "conf.d"

    def _environment(self) -> dict[str, str]:
        base = {
            "PATH": f"{PG_BIN}:/usr/bin:/bin",
            "LANG": "C.UTF-8",
            "HOME": str(self.root),
        }
        return {**base, **self.env}

    def init(self) -> None:
        """``initdb`` with data checksums; the cluster accepts only loopback connections."""
        for directory in (self.root, self.socket_dir, self.root / "log"):
            directory.mkdir(parents=True, exist_ok=True)
            chown_to_postgres(directory)
        self.root.chmod(0o755)
        run_as_postgres(
            [
                pg_binary("initdb"),
                "--pgdata",
                str(self.data_dir),
                "--data-checksums",
                "--username",
                PG_USER,
                "--auth-local=trust",
                "--auth-host=trust",
                "--encoding=UTF8",
                "--locale=C.UTF-8",
            ],
            env=self._environment(),
        )
        self.conf_d.mkdir(exist_ok=True)
        chown_to_postgres(self.conf_d)
        with (self.data_dir / "postgresql.conf").open("a") as conf:
            # Relative to the data directory: a restored copy reads its own conf.d, never
            # the production cluster's (a restore must not archive into production's repos).
            conf.write(f"\ninclude_dir = '{self.conf_d.name}'\n")

    def write_conf(self, name: str, text: str) -> Path:
        """Add a ``conf.d`` fragment (the rendered one, or local overrides)."""
        path = self.conf_d / name
        path.write_text(text)
        chown_to_postgres(path)
        return path

    def start(self) -> None:
        self.process = ManagedProcess(
            name=f"postgres:{self.port}",
            argv=[
                pg_binary("postgres"),
                "-D",
                str(self.data_dir),
                "-p",
                str(self.port),
                "-k",
                str(self.socket_dir),
                "-c",
                f"listen_addresses={LOOPBACK}",
            ],
            log_path=self.root / "log" / "postgres.log",
            env=self._environment(),
            user=PG_USER,
            stop_signal=signal.SIGINT,  # "fast" shutdown: roll back sessions, checkpoint
        )
        self.process.start()
        self.process.wait_for_port(self.port, timeout=60)
        self.wait_ready()

    def wait_ready(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            result = subprocess.run(
                [pg_binary("pg_isready"), "-h", str(self.socket_dir), "-p", str(self.port)],
                capture_output=True,
                check=False,
            )
            if result.returncode == 0:
                return
            if self.process is not None and not self.process.running():
                raise ServiceError(f"postgres exited:\n{self.process.log_tail()}")
            time.sleep(0.1)
        raise ServiceError(f"postgres on {self.port} not ready in {timeout:.0f} s")

    @property
    def pid(self) -> int:
        """The postmaster's PID."""
        if self.process is None:
            raise ServiceError(f"postgres on {self.port} is not started")
        return self.process.pid

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop(timeout=60)

    def remove(self) -> None:
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)

    @property
    def dsn(self) -> str:
        return f"host={self.socket_dir} port={self.port} user={PG_USER} dbname=postgres"

    def conninfo(self, dbname: str = "postgres") -> str:
        return f"host={self.socket_dir} port={self.port} user={PG_USER} dbname={dbname}"

    def psql(self, sql: str, dbname: str = "postgres") -> str:
        """Run SQL through ``psql`` and return its unaligned output."""
        result = subprocess.run(
            [
                "psql",
                "--no-psqlrc",
                "-X",
                "-v",
                "ON_ERROR_STOP=1",
                "-At",
                "-h",
                str(self.socket_dir),
                "-p",
                str(self.port),
                "-U",
                PG_USER,
                "-d",
                dbname,
                "-c",
                sql,
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode != 0:
            raise ServiceError(f"psql failed on {self.port}: {result.stderr.strip()}")
        return result.stdout.strip()

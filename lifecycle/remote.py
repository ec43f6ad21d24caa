"""Commands and file transfers on a customer's host: root chains, PostgreSQL tools, SFTP.

Every command runs as one ``sudo -n bash -c`` chain with stdin closed
(:func:`erpcloud.ssh.run_as_root`); PostgreSQL's tools run as ``postgres`` through ``runuser``.
Files travel over SFTP on the same pinned connection.
"""

from __future__ import annotations

import hashlib
import posixpath
import shlex
from collections.abc import Callable, Iterator
from pathlib import Path

from fabric import Connection
from paramiko import SFTPClient

from erpcloud.inventory import Database
from erpcloud.ssh import SshTarget, result_summary, run_as_root
from lifecycle.dump import DumpError, Shell

q = shlex.quote
#: (file name, bytes done, bytes in all): progress of a transfer.
Progress = Callable[[str, int, int], None]


class RemoteError(RuntimeError):
    """A command on the host failed; the message names the host, the action and its output."""


def root(connection: Connection, target: SshTarget, what: str, script: str) -> str:
    """Run ``script`` as root; its standard output, or :class:`RemoteError`."""
    result = run_as_root(connection, script)
    if not result.ok:
        raise RemoteError(f"{target}: {what} failed:\n{result_summary(result)}")
    return str(result.stdout)


def host_shell(connection: Connection, target: SshTarget) -> Shell:
    """Read a dump on the host, as root (staging folders are private to their user), with the
    host's own ``pg_restore``: the server's major, which reads what its ``pg_dump`` wrote."""

    def shell(command: str) -> str:
        result = run_as_root(connection, f"set -o pipefail; {command}")
        if not result.ok:
            raise DumpError(f"{target}: {result_summary(result)}")
        return str(result.stdout)

    return shell


def pg_shell_functions(db: Database) -> str:
    """Shell functions for a root chain, all as ``postgres`` on the host's cluster: ``psqlx ARGS``,
    ``p DB SQL`` (one statement, unaligned output) and ``pgtool TOOL ARGS`` (pg_dump,
    pg_restore). The chain moves to ``/``: ``postgres`` may not enter the login user's home."""
    connection = f"{'-h ' + q(db.socket_dir) + ' ' if db.socket_dir else ''}-p {db.port}"
    return (
        "cd /; "
        f"psqlx() {{ runuser -u postgres -- psql -X -q -At -v ON_ERROR_STOP=1 {connection} "
        '"$@"; }; '
        'p() { psqlx -d "$1" -c "$2"; }; '
        f'pgtool() {{ t="$1"; shift; runuser -u postgres -- "$t" {connection} "$@"; }}'
    )


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def local_files(directory: Path) -> Iterator[tuple[str, Path]]:
    """Every regular file below ``directory`` as (relative POSIX path, path), sorted."""
    for path in sorted(directory.rglob("*")):
        if path.is_file():
            yield path.relative_to(directory).as_posix(), path


def parse_sha256sum(output: str) -> dict[str, str]:
    """``sha256sum`` lines (``HASH  ./relative/path``) as {relative path: hash}."""
    found = {}
    for line in output.splitlines():
        digest, sep, name = line.partition("  ")
        if sep:
            found[name.removeprefix("./")] = digest
    return found


def reporting(progress: Progress, name: str) -> Callable[[int, int], None]:
    """An SFTP callback reporting ``name``'s progress."""
    return lambda done, total: progress(name, done, total)


def upload_tree(
    sftp: SFTPClient, local_dir: Path, remote_dir: str, progress: Progress
) -> dict[str, str]:
    """Copy every file below ``local_dir`` into ``remote_dir``; {relative path: SHA-256}."""
    sums = {}
    made = {remote_dir}
    for relative, path in local_files(local_dir):
        remote = posixpath.join(remote_dir, relative)
        parent = posixpath.dirname(remote)
        missing = []
        while parent not in made:
            missing.append(parent)
            parent = posixpath.dirname(parent)
        for directory in reversed(missing):
            sftp.mkdir(directory, mode=0o700)
            made.add(directory)
        size = path.stat().st_size
        sftp.put(str(path), remote, callback=reporting(progress, relative))
        if size == 0:
            progress(relative, 0, 0)
        sums[relative] = sha256_file(path)
    return sums

"""Move in (S19): an on-premises database dump and attachments into the customer's instance.

1. Copy the dump to the host's staging folder over SFTP (pinned key) and read it there, with
   the server's own ``pg_restore``, before anything is loaded: its product version must be at
   least the minimum to move in and supported (S19, S15); its rows per table are counted from
   the archive. A refused dump is removed again. Then the attachments follow.
3. Restore into a new database with ``pg_restore`` as ``postgres``, in one ``sudo -n bash -c``
   chain, and compare every table's row count with the dump's. A difference stops here: the
   new database is dropped and the instance is as it was.
4. Swap in: the database takes the product's name, the attachments their folder. What was
   there before is kept aside under a dated name, never dropped (nothing is lost).
5. A full backup to both repositories (S6), so the moved-in data is recoverable from now on.
"""

from __future__ import annotations

import posixpath
import shlex
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from backups.info import BackupType
from backups.runs import BackupRun, run_backups
from erpcloud.render import PRODUCT_DATABASE, PRODUCT_DATABASE_USER
from erpcloud.ssh import connect
from lifecycle.dump import DumpContents, DumpError, MoveInRefused, check_dump, read_dump
from lifecycle.remote import (
    Progress,
    RemoteError,
    host_shell,
    parse_sha256sum,
    pg_shell_functions,
    reporting,
    root,
    upload_tree,
)
from lifecycle.site import Site

q = shlex.quote
#: Checksums of every file below the current folder, as ``sha256sum`` prints them.
SHA256_TREE = "find . -type f -print0 | sort -z | xargs -0 -r sha256sum"


class MoveInFailed(RuntimeError):
    """The move-in stopped; the message says where, and what state the instance is in."""


@dataclass
class MoveInReport:
    customer: str
    site: str
    dump: str
    edition: str
    product_version: str
    tables: dict[str, int]
    verified: bool
    attachments: int = 0
    attachment_bytes: int = 0
    previous_database: str | None = None
    previous_attachments: str | None = None
    backups: dict[str, str | None] = field(default_factory=dict)
    backup_errors: dict[str, str] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.verified and not self.backup_errors


def _stamp(now: datetime) -> str:
    return now.astimezone(UTC).strftime("%Y%m%d%H%M%S")


def count_sql(tables: list[str]) -> str:
    """One query counting every table's rows, in the order given (``index|count`` lines)."""
    parts = [
        f"select {index} as i, count(*) from {table}"  # noqa: S608 - names from pg_dump itself
        for index, table in enumerate(tables)
    ]
    return "\nunion all\n".join(parts) + "\norder by 1;\n"


def parse_counts(output: str, tables: list[str]) -> dict[str, int]:
    counts = {}
    for line in output.split():
        index, _, count = line.partition("|")
        counts[tables[int(index)]] = int(count)
    return counts


# Constant SQL (names from erpcloud.render), run by the ``p`` shell function on the host.
_ROLE_EXISTS = f"select 1 from pg_roles where rolname = '{PRODUCT_DATABASE_USER}'"  # noqa: S608
_PRODUCT_DB_EXISTS = f"select 1 from pg_database where datname = '{PRODUCT_DATABASE}'"  # noqa: S608
_DISCONNECT = (
    "select pg_terminate_backend(pid) from pg_stat_activity "  # noqa: S608 - constant names
    f"where datname = '{PRODUCT_DATABASE}' and pid <> pg_backend_pid()"
)
_RESTORE_OPTIONS = (
    "--exit-on-error --single-transaction --no-owner --no-privileges --no-tablespaces "
    "--no-publications --no-subscriptions"
)


def restore_script(site: Site, stage: str, database: str) -> str:
    """Create ``database`` (owned by the product's role where it exists), restore into it and
    count its rows (``verify.sql``)."""
    return "; ".join(
        [
            pg_shell_functions(site.db),
            f"chown postgres:postgres {q(stage)} {q(stage)}/database.dump {q(stage)}/verify.sql",
            "owner=postgres",
            f'if [ "$(p postgres {q(_ROLE_EXISTS)})" = 1 ]; then owner={PRODUCT_DATABASE_USER}; fi',
            f'p postgres "create database {database} owner $owner"',
            f'pgtool pg_restore {_RESTORE_OPTIONS} --role="$owner" -d {database} '
            f"{q(stage)}/database.dump",
            f"psqlx -d {database} -f {q(stage)}/verify.sql",
        ]
    )


def drop_script(site: Site, database: str) -> str:
    return f'{pg_shell_functions(site.db)}; p postgres "drop database if exists {database}"'


def swap_script(site: Site, stage: str, database: str, stamp: str, attachments: bool) -> str:
    """The new database takes the product's name; the attachments their folder. The old ones
    are renamed aside, never dropped."""
    kept = f"{PRODUCT_DATABASE}_before_movein_{stamp}"
    target = site.paths.attachments
    kept_files = f"{target}.before-movein-{stamp}"
    lines = [
        pg_shell_functions(site.db),
        f'if [ "$(p postgres {q(_PRODUCT_DB_EXISTS)})" = 1 ]; then '
        f"p postgres {q(_DISCONNECT)} >/dev/null; "
        f'p postgres "alter database {PRODUCT_DATABASE} rename to {kept}"; '
        f"echo previous_database={kept}; fi",
        f'p postgres "alter database {database} rename to {PRODUCT_DATABASE}"',
    ]
    if attachments:
        lines += [
            f"mkdir -p {q(posixpath.dirname(target))}",
            f"if [ -e {q(target)} ]; then mv {q(target)} {q(kept_files)}; "
            f"echo previous_attachments={q(kept_files)}; fi",
            f"mv {q(stage)}/attachments {q(target)}",
            f"if id {PRODUCT_DATABASE_USER} >/dev/null 2>&1; then owner={PRODUCT_DATABASE_USER}; "
            "else owner=root; fi",
            f'chown -R "$owner": {q(target)}',
        ]
    return "; ".join(lines)


def move_in(
    site: Site,
    dump: Path,
    attachments: Path | None = None,
    progress: Callable[[str], None] = lambda _: None,
    transfer: Progress = lambda *_: None,
    now: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> MoveInReport:
    """Load ``dump`` (and ``attachments``) into the site's instance; see the module's steps.

    Raises :class:`~lifecycle.dump.MoveInRefused` or :class:`~lifecycle.dump.DumpError` before
    anything is loaded (the copied dump is removed again), and :class:`MoveInFailed` if a later
    step fails."""
    customer = site.customer
    if not dump.is_file():
        raise MoveInRefused(f"--dump: {dump} is not a file")
    if attachments is not None:
        check_attachments(attachments)
    stamp = _stamp(now())
    stage = posixpath.join(site.paths.staging, f"import-{stamp}")
    database = f"{PRODUCT_DATABASE}_movein_{stamp}"
    connection = connect(site.ssh)
    staged_database = False
    try:
        root(
            connection, site.ssh, "preparing the staging folder",
            f'install -d -m 0700 -o "$SUDO_USER" {q(stage)}',
        )  # fmt: skip
        progress(f"copying {dump.name} to {site.host.name}:{stage} (SFTP)")
        sftp = connection.sftp()
        sftp.put(str(dump), f"{stage}/database.dump", callback=reporting(transfer, dump.name))
        progress(f"reading {dump.name} on the host: product version and rows per table")
        try:
            contents: DumpContents = read_dump(
                f"{stage}/database.dump", host_shell(connection, site.ssh)
            )
        except DumpError as exc:
            raise DumpError(f"{dump} (read on {site.host.name}): {exc}") from None
        version = check_dump(customer, contents.system_info)
        assert contents.system_info is not None
        tables = sorted(contents.rows)
        report = MoveInReport(
            customer=customer.id,
            site=f"{site.kind} {site.host.name} ({site.ssh})",
            dump=str(dump),
            edition=contents.system_info.edition,
            product_version=str(version),
            tables=contents.rows,
            verified=False,
        )
        with sftp.open(f"{stage}/verify.sql", "w") as handle:
            handle.write(count_sql(tables))
        sent: dict[str, str] = {}
        if attachments is not None:
            progress(f"copying the attachments in {attachments} (SFTP)")
            sftp.mkdir(f"{stage}/attachments", mode=0o700)
            sent = upload_tree(sftp, attachments, f"{stage}/attachments", transfer)
            report.attachments = len(sent)
            report.attachment_bytes = sum(
                p.stat().st_size for p in attachments.rglob("*") if p.is_file()
            )
        progress(f"restoring into a new database {database} and counting its rows")
        staged_database = True
        counted = parse_counts(
            root(connection, site.ssh, "the restore", restore_script(site, stage, database)),
            tables,
        )
        different = {
            t: (n, counted.get(t)) for t, n in contents.rows.items() if counted.get(t) != n
        }
        if different:
            details = ", ".join(f"{t}: dump {a}, restored {b}" for t, (a, b) in different.items())
            raise MoveInFailed(f"row counts differ after the restore ({details})")
        if sent:
            listing = root(
                connection, site.ssh, "checksumming the attachments",
                f"cd {q(stage)}/attachments && {SHA256_TREE}",
            )  # fmt: skip
            if parse_sha256sum(listing) != sent:
                raise MoveInFailed("the attachments on the host differ from the ones sent")
        report.verified = True
        progress("swapping in the new database and attachments (the previous ones are kept)")
        facts = root(
            connection, site.ssh, "swapping in",
            swap_script(site, stage, database, stamp, attachments is not None),
        )  # fmt: skip
        staged_database = False
        for line in facts.splitlines():
            key, _, value = line.partition("=")
            if key == "previous_database":
                report.previous_database = value
            elif key == "previous_attachments":
                report.previous_attachments = value
    except RemoteError as exc:
        raise MoveInFailed(str(exc)) from None
    finally:
        cleanup = f"rm -rf {q(stage)}"
        if staged_database:  # the new database never took the product's name: it goes
            cleanup = f"{drop_script(site, database)}; {cleanup}"
        try:
            root(connection, site.ssh, "cleaning up the staging folder", cleanup)
        except RemoteError as exc:  # never hide the error that got us here
            progress(f"warning: {exc}")
        finally:
            connection.close()
    progress("full backup of the moved-in database to both repositories (S6)")
    with site.pgbackrest() as runner:
        backup = run_backups(runner, customer, BackupType.FULL, progress)
    _record_backups(report, backup)
    return report


def check_attachments(folder: Path) -> None:
    """Only folders and regular files: anything else would not arrive as it is (nothing lost)."""
    if not folder.is_dir():
        raise MoveInRefused(f"--attachments: {folder} is not a folder")
    for path in sorted(folder.rglob("*")):
        if path.is_symlink() or not (path.is_dir() or path.is_file()):
            raise MoveInRefused(
                f"--attachments: {path} is a link or a special file; copy what it points to"
            )


def _record_backups(report: MoveInReport, run: BackupRun) -> None:
    for repo in run.repositories:
        report.backups[repo.repo.name] = repo.label
        if not repo.ok:
            report.backup_errors[repo.repo.name] = repo.error or "failed"

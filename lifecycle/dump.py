"""What a pg_dump custom-format archive holds: its tables' row counts and the product version.

Read from the archive itself, before anything is loaded: ``pg_restore --list`` (the table of
contents: which tables have data) and ``pg_restore --data-only -f -`` (the COPY blocks: one line
per row in COPY's text format, where a newline inside a value is written ``\\n``; counted where
the dump is, so the rows never travel). The product records its version in its
system-information table (``erp_system_info``), so the S19/S15 checks read the version the
database really is, not what someone says it is.

Where the dump is read is a :data:`Shell`: this machine (:func:`local_shell`), or the customer's
host over SSH, whose ``pg_restore`` is the server's own major: an older one cannot read a newer
archive ("unsupported version in file header"), so moved-in and exported dumps are read there.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from erpcloud import policy
from erpcloud.model import Customer
from erpcloud.product import SYSTEM_INFO_TABLE
from erpcloud.versions import ProductVersion, check_move_in

_TABLE_DATA = re.compile(r"^\d+; \d+ \d+ TABLE DATA (?P<entry>.+)$")
_COPY = re.compile(r"^COPY (?P<table>.+?) (?:\((?P<columns>.*)\) )?FROM stdin;$")
_END_OF_COPY = "\\."
_COPY_ESCAPES = {"t": "\t", "n": "\n", "r": "\r", "\\": "\\"}


class DumpError(ValueError):
    """The file is not a readable pg_dump custom-format archive of the product's database."""


class MoveInRefused(ValueError):
    """The dump may not move in; the message names the rule (S19, S15)."""


#: Where Debian puts the client tools when pg_restore is not on PATH (the dump is read here).
HOST_PG_BIN = Path("/usr/lib/postgresql/15/bin")


@dataclass(frozen=True)
class SystemInfo:
    edition: str
    version: str


@dataclass(frozen=True)
class DumpContents:
    #: Rows per table, keyed by the table as pg_dump names it (``public.c_order``).
    rows: dict[str, int]
    system_info: SystemInfo | None

    @property
    def total_rows(self) -> int:
        return sum(self.rows.values())


#: Runs a shell command where the dump is and returns its standard output; raises
#: :class:`DumpError` with the command's error when it fails.
Shell = Callable[[str], str]


def local_shell(command: str) -> str:
    """``command`` on this machine (Debian's client tools when they are not on ``PATH``)."""
    env = {**os.environ, "PATH": f"{os.environ.get('PATH', '')}:{HOST_PG_BIN}"}
    result = subprocess.run(
        ["bash", "-o", "pipefail", "-c", command],
        capture_output=True,
        text=True,
        check=False,
        timeout=3600,
        env=env,
    )
    if result.returncode != 0:
        raise DumpError(result.stderr.strip()[-300:] or f"exit {result.returncode}")
    return result.stdout


#: Rows per COPY block of ``pg_restore --data-only``: ``count<TAB>COPY header`` lines.
_COUNT_COPY_ROWS = (
    'awk \'inside && $0 == "\\\\." { print n "\\t" header; inside = 0; next } '
    "inside { n++; next } /^COPY .* FROM stdin;$/ { header = $0; n = 0; inside = 1 }'"
)


def _unescape(value: str) -> str | None:
    if value == "\\N":
        return None
    return re.sub(r"\\(.)", lambda m: _COPY_ESCAPES.get(m[1], m[1]), value)


def _read(shell: Shell, dump: str, command: str) -> str:
    try:
        return shell(command)
    except DumpError as exc:
        raise DumpError(f"{dump} is not a readable pg_dump custom-format archive: {exc}") from None


def tables_with_data(dump: str, shell: Shell = local_shell) -> list[str]:
    """The table of contents' TABLE DATA entries (``schema table owner``, as listed)."""
    listing = _read(shell, dump, f"pg_restore --list {shlex.quote(dump)}")
    return [m["entry"] for m in map(_TABLE_DATA.match, listing.splitlines()) if m]


def copy_row_counts(dump: str, shell: Shell = local_shell) -> dict[str, int]:
    """Rows per table of the dump's COPY blocks, counted where the dump is."""
    output = _read(
        shell, dump, f"pg_restore --data-only --file=- {shlex.quote(dump)} | {_COUNT_COPY_ROWS}"
    )
    counts: dict[str, int] = {}
    for line in output.splitlines():
        count, _, header = line.partition("\t")
        match = _COPY.match(header)
        if match is None or not count.isdigit():
            raise DumpError(f"{dump}: unexpected line from pg_restore: {line[:120]!r}")
        counts[match["table"]] = int(count)
    return counts


def _copy_blocks(dump: str, shell: Shell, table: str) -> dict[str, tuple[list[str], list[str]]]:
    """{table: (columns, rows)} of the COPY blocks of one (small) table."""
    output = _read(
        shell, dump, f"pg_restore --data-only --table={table} --file=- {shlex.quote(dump)}"
    )
    blocks: dict[str, tuple[list[str], list[str]]] = {}
    current: list[str] | None = None
    for line in output.splitlines():
        if current is not None:
            if line == _END_OF_COPY:
                current = None
            else:
                current.append(line)
            continue
        match = _COPY.match(line)
        if match:
            columns = [c.strip().strip('"') for c in (match["columns"] or "").split(",")]
            current = []
            blocks[match["table"]] = (columns, current)
    return blocks


def read_system_info(dump: str, shell: Shell = local_shell) -> SystemInfo | None:
    """The product's edition and version from the dump's ``erp_system_info`` rows."""
    blocks = _copy_blocks(dump, shell, SYSTEM_INFO_TABLE)
    if not blocks:
        return None
    if len(blocks) > 1:
        raise DumpError(f"{dump} has {len(blocks)} {SYSTEM_INFO_TABLE} tables: {sorted(blocks)}")
    columns, rows = next(iter(blocks.values()))
    if len(rows) != 1 or "version" not in columns or "edition" not in columns:
        raise DumpError(
            f"{dump}: {SYSTEM_INFO_TABLE} must hold one row with edition and version "
            f"(found {len(rows)} row(s), columns {columns})"
        )
    values = dict(zip(columns, (_unescape(v) for v in rows[0].split("\t")), strict=False))
    return SystemInfo(edition=values["edition"] or "", version=values["version"] or "")


def read_dump(dump: Path | str, shell: Shell | None = None) -> DumpContents:
    """Row counts of every table with data, checked against the table of contents: of a file
    on this machine, or with ``shell``, of a path where that shell runs."""
    if shell is None:
        if not Path(dump).is_file():
            raise DumpError(f"{dump} is not a file")
        shell = local_shell
    dump = str(dump)
    listed = tables_with_data(dump, shell)
    rows = copy_row_counts(dump, shell)
    if len(listed) != len(rows):
        raise DumpError(
            f"{dump}: the table of contents lists data for {len(listed)} table(s), but "
            f"{len(rows)} could be read"
        )
    return DumpContents(rows=rows, system_info=read_system_info(dump, shell))


def check_dump(customer: Customer, info: SystemInfo | None) -> ProductVersion:
    """The dump's version if it may move in to ``customer`` (S19 minimum, then S15)."""
    if info is None:
        raise MoveInRefused(
            f"the dump has no {SYSTEM_INFO_TABLE} table: it is not a database of the product, "
            "or its version cannot be read (S19 needs it)"
        )
    if info.edition != customer.edition.value:
        raise MoveInRefused(
            f"the dump is a {info.edition} database; {customer.id} has the "
            f"{customer.edition.value} edition (S17)"
        )
    try:
        version = ProductVersion.parse(info.version)
    except ValueError as exc:
        raise MoveInRefused(f"{SYSTEM_INFO_TABLE}.version: {exc}") from None
    try:
        check_move_in(version, policy.Edition(info.edition))
    except ValueError as exc:
        raise MoveInRefused(f"the dump's product version is refused: {exc}") from None
    return version

"""What a pg_dump custom-format archive holds: its tables' row counts and the product version.

Read from the archive itself, before anything is loaded: ``pg_restore --list`` (the table of
contents: which tables have data) and ``pg_restore --data-only -f -`` (the COPY blocks: one line
per row in COPY's text format, where a newline inside a value is written ``\\n``). The product
records its version in its system-information table (``erp_system_info``), so the S19/S15 checks
read the version the database really is, not what someone says it is.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from erpcloud import policy
from erpcloud.model import Customer
from erpcloud.versions import ProductVersion, check_move_in
from localtarget.postgres import PG_BIN
from localtarget.sampledata import SYSTEM_INFO_TABLE

_TABLE_DATA = re.compile(r"^\d+; \d+ \d+ TABLE DATA (?P<entry>.+)$")
_COPY = re.compile(r"^COPY (?P<table>.+?) (?:\((?P<columns>.*)\) )?FROM stdin;$")
_END_OF_COPY = "\\."
_COPY_ESCAPES = {"t": "\t", "n": "\n", "r": "\r", "\\": "\\"}


class DumpError(ValueError):
    """The file is not a readable pg_dump custom-format archive of the product's database."""


class MoveInRefused(ValueError):
    """The dump may not move in; the message names the rule (S19, S15)."""


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


def pg_restore_binary() -> str:
    found = shutil.which("pg_restore") or str(PG_BIN / "pg_restore")
    if not Path(found).exists():
        raise DumpError("pg_restore is not installed (PostgreSQL 15 client tools)")
    return found


def _unescape(value: str) -> str | None:
    if value == "\\N":
        return None
    return re.sub(r"\\(.)", lambda m: _COPY_ESCAPES.get(m[1], m[1]), value)


def _run(argv: list[str]) -> str:
    result = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=3600)
    if result.returncode != 0:
        raise DumpError(
            f"{argv[-1]} is not a readable pg_dump custom-format archive: "
            f"{result.stderr.strip()[-300:]}"
        )
    return result.stdout


def tables_with_data(dump: Path) -> list[str]:
    """The table of contents' TABLE DATA entries (``schema table owner``, as listed)."""
    listing = _run([pg_restore_binary(), "--list", str(dump)])
    return [m["entry"] for m in map(_TABLE_DATA.match, listing.splitlines()) if m]


def _copy_blocks(dump: Path, *extra: str) -> dict[str, tuple[list[str], list[str]]]:
    """{table: (columns, rows)} of every COPY block ``pg_restore --data-only`` prints."""
    argv = [pg_restore_binary(), "--data-only", *extra, "--file=-", str(dump)]
    blocks: dict[str, tuple[list[str], list[str]]] = {}
    with subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as proc:
        assert proc.stdout is not None
        current: list[str] | None = None
        for line in proc.stdout:
            line = line.rstrip("\n")
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
        error = proc.stderr.read() if proc.stderr else ""
    if proc.returncode != 0:
        raise DumpError(f"{dump} could not be read: {error.strip()[-300:]}")
    return blocks


def read_system_info(dump: Path) -> SystemInfo | None:
    """The product's edition and version from the dump's ``erp_system_info`` rows."""
    blocks = _copy_blocks(dump, f"--table={SYSTEM_INFO_TABLE}")
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


def read_dump(dump: Path) -> DumpContents:
    """Row counts of every table with data, checked against the table of contents."""
    if not dump.is_file():
        raise DumpError(f"{dump} is not a file")
    listed = tables_with_data(dump)
    blocks = _copy_blocks(dump)
    rows = {table: len(lines) for table, (_, lines) in blocks.items()}
    if len(listed) != len(rows):
        raise DumpError(
            f"{dump}: the table of contents lists data for {len(listed)} table(s), but "
            f"{len(rows)} could be read"
        )
    return DumpContents(rows=rows, system_info=read_system_info(dump))


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

"""The SQL of a drill: production's consistent snapshot, and the same sums on the restore.

Everything runs through ``psql`` as ``postgres`` on the database's own host (production's, or
the drill host), over SSH: no erpcloud code, no extension and no object is added to any
database (S16). Both sides compute the same per-table figures with the same session settings,
so a difference means different data, never a different rendering.

The snapshot takes two sessions. Session A, in REPEATABLE READ, share-locks every user table
(before its first query, so its snapshot is taken after the lock: every writer to those tables
has committed, none can start), exports its snapshot, and creates the restore point in the
same statement. Session B imports the snapshot; A then commits, releasing the locks after
milliseconds, while B computes the sums at leisure. A restore to that restore point
(``--type=name``) therefore holds exactly what B saw.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Final

from dr.model import TableSum

#: Rendering settings for both sides: a row's text must not depend on a session default.
SESSION_SETTINGS: Final = (
    "SET TimeZone = 'UTC';\n"
    "SET DateStyle = 'ISO, YMD';\n"
    "SET IntervalStyle = 'postgres';\n"
    "SET extra_float_digits = 3;\n"
    "SET bytea_output = 'hex';\n"
)
#: Permanent tables and partitioned parents outside the system schemas: the product's data.
#: Unlogged tables are left out (their content is not in the WAL, so no restore has it).
USER_TABLES: Final = (
    "FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
    "WHERE c.relkind IN ('r', 'p') AND c.relpersistence = 'p' "
    "AND n.nspname NOT IN ('pg_catalog', 'information_schema')"
)
#: One query per table, run by ``\gexec``: its row count and the sum of 60 bits of each row's
#: MD5 (order-independent, so no sort of the table is needed).
#: The names come from the catalog and are quoted by format().
SUMS_GEXEC: Final = (
    "SELECT format('SELECT %L, %L, count(*), coalesce(sum((''x'' || left(md5(t::text), 15))"  # noqa: S608
    "::bit(60)::bigint), 0) FROM %I.%I t', 'table', n.nspname || '.' || c.relname, "
    f"n.nspname, c.relname) {USER_TABLES} ORDER BY n.nspname, c.relname \\gexec\n"
)
_RESTORE_POINT = re.compile(r"^[A-Za-z0-9_.:-]{1,63}$")


def psql_argv(psql: str, socket_dir: str | None, port: int, dbname: str) -> list[str]:
    """Unaligned, tab-separated, quiet, stopping at the first error."""
    argv = [psql, "-X", "-q", "-At", "-F", "\t", "-v", "ON_ERROR_STOP=1", "-p", str(port)]
    if socket_dir:
        argv += ["-h", socket_dir]
    return [*argv, "-d", dbname]


def snapshot_script(psql: Sequence[str], restore_point: str, lock_timeout_ms: int) -> str:
    """The bash script (run as ``postgres``) printing ``snapshot``, ``locked`` and ``table``
    lines: production in one snapshot at a new restore point (see the module's docstring)."""
    if not _RESTORE_POINT.match(restore_point):
        raise ValueError(f"restore point name {restore_point!r} must be 1-63 of [A-Za-z0-9_.:-]")
    command = shlex.join(psql)
    session_a = (
        SESSION_SETTINGS
        + f"SELECT string_agg(format('%I.%I', n.nspname, c.relname), ', ') AS tables {USER_TABLES}"
        + " \\gset\n"
        f"SET lock_timeout = '{int(lock_timeout_ms)}ms';\n"
        "BEGIN ISOLATION LEVEL REPEATABLE READ;\n"
        "\\if :{?tables}\n"
        "LOCK TABLE :tables IN SHARE MODE;\n"
        "\\endif\n"
        "SELECT pg_export_snapshot() AS snapshot, "
        f"pg_create_restore_point('{restore_point}') AS lsn, clock_timestamp() AS taken_at \\gset\n"
        "SELECT pg_walfile_name(:'lsn') AS wal_file \\gset\n"
        "\\o :info\n"
        "\\qecho snapshot :snapshot :lsn :wal_file :taken_at\n"
        "\\o\n"
    )
    session_b = (
        SESSION_SETTINGS + "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY;\n"
        "SET TRANSACTION SNAPSHOT :'snapshot';\n"
        "\\o :marker\n"
        "\\qecho imported\n"
        "\\o\n" + SUMS_GEXEC + "COMMIT;\n"
    )
    return f"""set -euo pipefail
a_pid= b_pid=
work=$(mktemp -d)
trap 'for p in $a_pid $b_pid; do kill $p 2>/dev/null || true; done; rm -rf "$work"' EXIT
fail() {{ echo "$1" >&2; cat "$work"/*.err >&2 2>/dev/null || true; exit 1; }}
wait_for() {{  # file, pid: until the file has content, or the session died
  for _ in $(seq 1 1200); do
    [ -s "$1" ] && return 0
    kill -0 "$2" 2>/dev/null || return 1
    sleep 0.05
  done
  return 1
}}
mkfifo "$work/a"
{command} -v info="$work/a.info" <"$work/a" >"$work/a.out" 2>"$work/a.err" &
a_pid=$!
exec 3>"$work/a"
locked_from=$(date +%s%N)
cat >&3 <<'SQL'
{session_a}SQL
wait_for "$work/a.info" "$a_pid" || fail "session A could not lock, snapshot and mark"
read -r _ snapshot lsn wal_file taken_at < "$work/a.info"
{command} -v snapshot="$snapshot" -v marker="$work/b.imported" \\
  >"$work/b.out" 2>"$work/b.err" <<'SQL' &
{session_b}SQL
b_pid=$!
wait_for "$work/b.imported" "$b_pid" || fail "session B could not import the snapshot"
echo 'COMMIT;' >&3
exec 3>&-
wait "$a_pid" || fail "session A did not commit"
locked_to=$(date +%s%N)
a_pid=
wait "$b_pid" || fail "session B failed while summing the tables"
b_pid=
printf 'snapshot\\t%s\\t%s\\t%s\\t%s\\n' "$snapshot" "$lsn" "$wal_file" "$taken_at"
printf 'locked\\t%s\\n' "$(( (locked_to - locked_from) / 1000000 ))"
cat "$work/b.out"
"""


def sums_script(psql: Sequence[str]) -> str:
    """The same sums on a database nobody writes to (the restore), in one snapshot."""
    sql = (
        SESSION_SETTINGS
        + "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY;\n"
        + SUMS_GEXEC
        + "COMMIT;\n"
    )
    return f"{shlex.join(psql)} <<'SQL'\n{sql}SQL\n"


STATE_SQL: Final = (
    "SELECT 'state', pg_is_in_recovery(), coalesce(pg_last_xact_replay_timestamp()::text, ''), "
    "coalesce(pg_last_wal_replay_lsn()::text, ''), current_setting('archive_mode')"
)


@dataclass(frozen=True)
class ProductionSnapshot:
    snapshot_id: str
    lsn: str
    wal_file: str
    taken_at: datetime
    locked_seconds: float
    tables: dict[str, TableSum]


@dataclass(frozen=True)
class RestoredState:
    in_recovery: bool
    last_commit: datetime | None
    replay_lsn: str | None
    archive_mode: str


def _timestamp(text: str) -> datetime:
    """PostgreSQL's ISO output (``2026-11-23 09:30:00.123+00``) as an aware datetime."""
    value = text.strip()
    if re.search(r"[+-]\d\d$", value):
        value += ":00"
    return datetime.fromisoformat(value)


def parse_tables(output: str) -> dict[str, TableSum]:
    tables = {}
    for line in output.splitlines():
        fields = line.split("\t")
        if fields[0] == "table" and len(fields) == 4:
            tables[fields[1]] = TableSum(rows=int(fields[2]), checksum=fields[3])
    return tables


def parse_snapshot(output: str) -> ProductionSnapshot:
    head: list[str] | None = None
    locked = 0.0
    for line in output.splitlines():
        fields = line.split("\t")
        if fields[0] == "snapshot" and len(fields) == 5:
            head = fields
        elif fields[0] == "locked" and len(fields) == 2:
            locked = int(fields[1] or 0) / 1000  # milliseconds
    if head is None:
        raise ValueError(f"the snapshot script printed no snapshot line: {output[-300:]!r}")
    return ProductionSnapshot(
        snapshot_id=head[1],
        lsn=head[2],
        wal_file=head[3],
        taken_at=_timestamp(head[4]),
        locked_seconds=locked,
        tables=parse_tables(output),
    )


def parse_state(output: str) -> RestoredState:
    for line in output.splitlines():
        fields = line.split("\t")
        if fields[0] == "state" and len(fields) == 5:
            return RestoredState(
                in_recovery=fields[1] == "t",
                last_commit=_timestamp(fields[2]) if fields[2] else None,
                replay_lsn=fields[3] or None,
                archive_mode=fields[4],
            )
    raise ValueError(f"no state line in {output[-300:]!r}")


def compare_tables(production: dict[str, TableSum], restored: dict[str, TableSum]) -> list[str]:
    """Every difference, one sentence each; empty when the two are equal."""
    differences = []
    for name in sorted(production.keys() - restored.keys()):
        differences.append(f"{name} is missing from the restore")
    for name in sorted(restored.keys() - production.keys()):
        differences.append(f"{name} is in the restore but not in production's snapshot")
    for name in sorted(production.keys() & restored.keys()):
        ours, theirs = production[name], restored[name]
        if ours.rows != theirs.rows:
            differences.append(f"{name}: {theirs.rows} rows restored, {ours.rows} in production")
        elif ours.checksum != theirs.checksum:
            differences.append(f"{name}: same {ours.rows} rows, different contents (checksum)")
    return differences

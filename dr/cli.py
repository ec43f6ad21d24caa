"""``erpcloud dr history|schedule``: the drills on record, and the monthly rotation (S8).

The drills themselves run as Fabric tasks (``fab dr.drill``); these commands read their reports
(``build/dr/drills/``, which CI syncs from the reports bucket). ``history`` exits 1 when a
customer has no passing drill within ``DR_DRILL_MAX_INTERVAL`` (S8: tested every year).
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from dr.history import CustomerHistory, history, rotation_schedule
from dr.reports import DRILLS_DIR, load_reports
from erpcloud import policy
from erpcloud.cli_common import CustomersDir, JsonFlag, load_valid_fleet
from erpcloud.fleet import CUSTOMERS_DIR
from erpcloud.output import EXIT_BAD_INPUT, EXIT_FAILED, console, emit, fail

dr_app = typer.Typer(
    help="Restore drills (S8): the history of drills per customer and the monthly rotation.",
    no_args_is_help=True,
)
DrillsDir = Annotated[
    Path,
    typer.Option("--drills", envvar="ERPCLOUD_DR_DRILLS_DIR", help="Folder of drill reports."),
]
AsOf = Annotated[
    str | None,
    typer.Option("--as-of", help="Judge as of this ISO 8601 time (default: now)."),
]


def _as_of(text: str | None, as_json: bool) -> datetime:
    if text is None:
        return datetime.now(UTC)
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        fail(f"--as-of: {text!r} is not an ISO 8601 time", as_json, EXIT_BAD_INPUT)
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _histories(
    drills: Path, directory: Path, as_of: str | None, as_json: bool
) -> tuple[datetime, list[CustomerHistory]]:
    moment = _as_of(as_of, as_json)
    return moment, history(load_valid_fleet(directory, as_json), load_reports(drills), moment)


def _when(moment: datetime | None) -> str:
    return "-" if moment is None else f"{moment:%Y-%m-%d %H:%M}"


@dr_app.command("history")
def history_command(
    drills: DrillsDir = DRILLS_DIR,
    directory: CustomersDir = CUSTOMERS_DIR,
    as_of: AsOf = None,
    as_json: JsonFlag = False,
) -> None:
    """Drills per customer; flags every customer without a passing drill in the last year."""
    moment, entries = _histories(drills, directory, as_of, as_json)
    flagged = [e.customer for e in entries if e.in_fleet and e.overdue]
    interval_days = policy.DR_DRILL_MAX_INTERVAL.days

    def human() -> None:
        table = Table(title=f"restore drills as of {moment:%Y-%m-%d %H:%M} UTC")
        for column in ("customer", "drills", "last drill", "last passed", "RTO s", "RPO s", "flag"):
            table.add_column(column)
        for entry in entries:
            newest = entry.drills[0] if entry.drills else None
            flag = "[bold red]OVERDUE[/]" if entry.overdue else ""
            table.add_row(
                entry.customer + ("" if entry.in_fleet else " (not in fleet)"),
                str(len(entry.drills)),
                _when(entry.last_drill) + (f" {newest.status}" if newest else ""),
                _when(entry.last_passed),
                "-" if not newest or newest.rto_seconds is None else f"{newest.rto_seconds:.0f}",
                "-" if not newest or newest.rpo_seconds is None else f"{newest.rpo_seconds:.1f}",
                flag,
            )
        console.print(table)
        if flagged:
            console.print(
                f"[bold red]{len(flagged)} customer(s) without a passing drill in "
                f"{interval_days} days (S8):[/] {', '.join(flagged)}"
            )

    emit(
        {"ok": not flagged, "as_of": moment, "overdue": flagged, "customers": entries},
        as_json,
        human,
    )
    if flagged:
        raise SystemExit(EXIT_FAILED)


@dr_app.command("schedule")
def schedule_command(
    start: Annotated[
        str | None, typer.Option("--start", help="First day of the rotation (default: today).")
    ] = None,
    drills: DrillsDir = DRILLS_DIR,
    directory: CustomersDir = CUSTOMERS_DIR,
    as_of: AsOf = None,
    as_json: JsonFlag = False,
) -> None:
    """Propose the next monthly rotation: every customer once, the most overdue first."""
    moment, entries = _histories(drills, directory, as_of, as_json)
    try:
        first_day = date.fromisoformat(start) if start else moment.date()
    except ValueError:
        fail(f"--start: {start!r} is not a date (YYYY-MM-DD)", as_json, EXIT_BAD_INPUT)
    slots = rotation_schedule(entries, first_day)

    def human() -> None:
        table = Table(
            title=f"drill rotation from {first_day} ({policy.DR_DRILL_ROTATION.days} days)"
        )
        for column in ("day", "customer", "last passed", "due", "overdue"):
            table.add_column(column)
        for slot in slots:
            table.add_row(
                slot.day.isoformat(),
                slot.customer,
                _when(slot.last_passed),
                _when(slot.due),
                "yes" if slot.overdue else "",
            )
        console.print(table)

    emit(
        {"start": first_day, "rotation_days": policy.DR_DRILL_ROTATION.days, "slots": slots},
        as_json,
        human,
    )

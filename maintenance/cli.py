"""``erpcloud maintenance``: the calendar, change checks, notices, and what is due now.

The Fabric tasks (``fab maintenance.plan`` / ``fab maintenance.apply``) run changes; these
commands prepare and review them. Thin: parse, call :mod:`maintenance`, print or ``--json``.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from erpcloud.cli_common import CustomersDir, JsonFlag
from erpcloud.fleet import CUSTOMERS_DIR
from erpcloud.output import EXIT_BAD_INPUT, EXIT_WARNING, console, emit, fail
from maintenance.calendar import (
    CALENDAR_FILE,
    effective_windows,
    regions_with_calendars,
)
from maintenance.change import CHANGES_DIR, change_files
from maintenance.notices import NOTICES_DIR, needs_notice, render_notices
from maintenance.records import RUNS_DIR, RunStatus, RunStore
from maintenance.workspace import InputError, Paths, load_calendar, load_check, load_customers

maintenance_app = typer.Typer(
    help="Maintenance windows (S11-S14): calendar, change checks, notices. "
    "Changes are applied with `fab maintenance.apply`.",
    no_args_is_help=True,
)

ChangesOpt = Annotated[
    Path, typer.Option("--changes", help="Folder of change files.", file_okay=False)
]
CalendarOpt = Annotated[
    Path, typer.Option("--calendar", help="Announced calendar changes (moved/extra windows).")
]
RunsOpt = Annotated[
    Path,
    typer.Option(
        "--runs", envvar="ERPCLOUD_MAINTENANCE_RUNS", help="Folder of run records (S13 count)."
    ),
]


def _paths(customers: Path, changes: Path, calendar: Path, runs: Path) -> Paths:
    return Paths(customers=customers, changes=changes, calendar=calendar, runs=runs)


def _bad_input(exc: InputError, as_json: bool) -> None:
    fail(exc.message, as_json, code=EXIT_BAD_INPUT, details=exc.details)


@maintenance_app.command("calendar")
def calendar_command(
    year: Annotated[int | None, typer.Option(help="Calendar year (default: this year).")] = None,
    region: Annotated[
        list[str] | None, typer.Option(help="Region (repeat); default: every region in use.")
    ] = None,
    calendar: CalendarOpt = CALENDAR_FILE,
    customers: CustomersDir = CUSTOMERS_DIR,
    as_json: JsonFlag = False,
) -> None:
    """The standard windows (S11) per region, in local and UTC time, after announced changes."""
    paths = Paths(customers=customers, calendar=calendar)
    try:
        changes = load_calendar(paths)
        fleet = load_customers(paths) if not region else {}
    except InputError as exc:
        _bad_input(exc, as_json)
    chosen_year = year or datetime.now(UTC).year
    regions = region or regions_with_calendars(c.region for c in fleet.values())
    try:
        windows = {r: effective_windows(chosen_year, r, changes) for r in regions}
    except ValueError as exc:
        fail(f"--region: {exc}", as_json, code=EXIT_BAD_INPUT)
    document = {
        "year": chosen_year,
        "regions": regions,
        "windows": [w.summary() for r in regions for w in windows[r]],
        "calendar_changes": [c.model_dump(mode="json") for c in changes],
    }

    def human() -> None:
        for name in regions:
            table = Table(title=f"{name} ({windows[name][0].timezone}) {chosen_year}")
            for column in ("date", "local", "UTC", "window"):
                table.add_column(column)
            for w in windows[name]:
                origin = w.origin.value + (f" ({w.calendar_change})" if w.calendar_change else "")
                table.add_row(
                    f"{w.local_start:%a %Y-%m-%d}",
                    f"{w.local_start:%H:%M}-{w.local_end:%H:%M} {w.local_start:%Z}",
                    f"{w.starts_at:%a %Y-%m-%d %H:%M}-{w.ends_at:%H:%M} UTC",
                    origin,
                )
            console.print(table)

    emit(document, as_json, human)


@maintenance_app.command("check")
def check_command(
    files: Annotated[
        list[Path] | None, typer.Argument(help="Change files (default: every file in --changes).")
    ] = None,
    changes: ChangesOpt = CHANGES_DIR,
    calendar: CalendarOpt = CALENDAR_FILE,
    customers: CustomersDir = CUSTOMERS_DIR,
    runs: RunsOpt = RUNS_DIR,
    as_json: JsonFlag = False,
) -> None:
    """Validate change files: schema, steps, targets, and the S11-S14 rules; all errors at once."""
    paths = _paths(customers, changes, calendar, runs)
    chosen = files or change_files(changes)
    results: list[dict[str, Any]] = []
    errors: list[str] = []
    try:
        fleet = load_customers(paths)
        load_calendar(paths)
    except InputError as exc:
        _bad_input(exc, as_json)
    for path in chosen:
        try:
            check = load_check(str(path), paths, fleet)
        except InputError as exc:
            errors.extend(exc.details or [exc.message])
            continue
        errors.extend(str(e) for e in check.errors)
        results.append(
            {
                "id": check.loaded.id,
                "file": check.loaded.file,
                "kind": check.loaded.change.kind.value,
                "ok": check.ok,
                "customers": [c.id for c in check.customers],
                "needs_notice": needs_notice(check) if check.ok else None,
                "windows": {
                    region: {"starts_at": w.starts_at, "ends_at": w.ends_at}
                    for region, w in sorted(check.windows.items())
                },
            }
        )
    if errors:
        fail(
            f"{len(errors)} rule(s) broken in {len(chosen)} change file(s)",
            as_json,
            code=EXIT_BAD_INPUT,
            details=errors,
        )

    def human() -> None:
        for row in results:
            console.print(
                f"[green]ok[/] {row['id']} ({row['kind']}): {len(row['customers'])} customer(s)"
                f"{', notices needed' if row['needs_notice'] else ''}"
            )

    emit({"ok": True, "changes": results}, as_json, human)


@maintenance_app.command("notices")
def notices_command(
    change: Annotated[str, typer.Argument(help="The change (path, or id in --changes).")],
    out: Annotated[
        Path, typer.Option("--out", help="Folder: notices land in OUT/<change-id>/.")
    ] = NOTICES_DIR,
    changes: ChangesOpt = CHANGES_DIR,
    calendar: CalendarOpt = CALENDAR_FILE,
    customers: CustomersDir = CUSTOMERS_DIR,
    runs: RunsOpt = RUNS_DIR,
    as_json: JsonFlag = False,
) -> None:
    """Render one notice per affected customer and a digest per partner (text and HTML)."""
    try:
        check = load_check(change, _paths(customers, changes, calendar, runs))
    except InputError as exc:
        _bad_input(exc, as_json)
    if not check.ok:
        fail(
            f"{check.loaded.id} breaks {len(check.errors)} rule(s); no notice was written",
            as_json,
            code=EXIT_BAD_INPUT,
            details=[str(e) for e in check.errors],
        )
    rendered = render_notices(check, out)
    document = {
        "ok": True,
        "change": check.loaded.id,
        "needs_notice": needs_notice(check),
        "directory": rendered.directory,
        "customers": rendered.customers,
        "partners": rendered.partners,
        "files": rendered.files,
    }
    emit(
        document,
        as_json,
        lambda: console.print(
            f"[green]ok[/] {len(rendered.customers)} customer notice(s) and "
            f"{len(rendered.partners)} partner digest(s) in {rendered.directory}/"
        ),
    )


@maintenance_app.command("due")
def due_command(
    at: Annotated[
        str | None,
        typer.Option("--at", help="The moment to look at (ISO 8601 with offset); default: now."),
    ] = None,
    paths_only: Annotated[
        bool, typer.Option("--paths", help="Print only the due change files, one a line.")
    ] = False,
    changes: ChangesOpt = CHANGES_DIR,
    calendar: CalendarOpt = CALENDAR_FILE,
    customers: CustomersDir = CUSTOMERS_DIR,
    runs: RunsOpt = RUNS_DIR,
    as_json: JsonFlag = False,
) -> None:
    """Valid changes whose window is open now and which have not completed (what CI applies)."""
    if at is None:
        moment = datetime.now(UTC)
    else:
        try:
            moment = datetime.fromisoformat(at)
        except ValueError:
            fail(f"--at: {at!r} is not an ISO 8601 date-time", as_json, code=EXIT_BAD_INPUT)
        if moment.tzinfo is None:
            fail("--at needs an offset, e.g. 2026-12-21T22:05:00+00:00", as_json, EXIT_BAD_INPUT)
    paths = _paths(customers, changes, calendar, runs)
    try:
        fleet = load_customers(paths)
    except InputError as exc:
        _bad_input(exc, as_json)
    store = RunStore(runs)
    due: list[dict[str, Any]] = []
    invalid: list[str] = []
    for path in change_files(changes):
        try:
            check = load_check(str(path), paths, fleet)
        except InputError as exc:
            invalid.extend(exc.details or [exc.message])
            continue
        if not check.ok:
            invalid.extend(str(e) for e in check.errors)
            continue
        open_regions = sorted(r for r, w in check.windows.items() if w.contains(moment))
        runs_of = store.runs_of(check.loaded.id)
        latest = runs_of[-1] if runs_of else None
        if not open_regions or (latest is not None and latest.status is RunStatus.COMPLETED):
            continue
        due.append(
            {
                "id": check.loaded.id,
                "file": check.loaded.file,
                "open_regions": open_regions,
                "latest_run": latest.run_id if latest else None,
                "latest_status": latest.status.value if latest else None,
            }
        )
    document = {"at": moment, "due": due, "invalid": invalid}
    if paths_only and not as_json:
        for row in due:
            print(row["file"])
    else:
        emit(
            document,
            as_json,
            lambda: console.print(
                "\n".join(f"{r['id']}: window open in {', '.join(r['open_regions'])}" for r in due)
                or f"nothing due at {moment:%Y-%m-%d %H:%M %Z}"
            ),
        )
    if invalid:
        for line in invalid:
            typer.echo(f"warning: invalid change: {line}", err=True)
        raise typer.Exit(EXIT_WARNING)

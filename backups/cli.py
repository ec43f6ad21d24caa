"""``erpcloud backup run|list|verify|expire CUSTOMER``: thin wrappers over :mod:`backups`.

Each command loads the customer (validated with the fleet), finds its pgBackRest through
:data:`resolve_target` (the customer's local machines by default, else a host of
``--inventory``; either way over SSH through :class:`backups.pgbackrest.SshPgBackRest`), calls
one plain function and prints a summary or JSON. Exit codes: 0 OK, 1 failed (for ``verify``: a
WAL segment missing), 2 bad input, 3 a warning (``verify``: late, behind or unreachable).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import Annotated, Any

import paramiko
import typer
from rich.table import Table

from backups.fleetcheck import DEFAULT_WORKERS, FleetEntry, check_fleet
from backups.gapcheck import GapCheckResult, Outcome, publish_metrics, verify
from backups.info import BackupType
from backups.pgbackrest import PgBackRestError
from backups.recover import recover_bucket
from backups.retention import ExpireReport, RetentionRefused, expire
from backups.runs import list_backups, run_backups
from backups.schedule import scheduled_type
from backups.targets import (
    BackupTarget,
    inventory_backup_target,
    inventory_backup_targets,
    local_backup_target,
)
from erpcloud.audit import audit
from erpcloud.cli_common import (
    CustomersDir,
    JsonFlag,
    load_fleet_going_on,
    load_valid_customer,
    load_valid_fleet,
)
from erpcloud.files import write_atomic
from erpcloud.fleet import CUSTOMERS_DIR
from erpcloud.model import Customer
from erpcloud.output import EXIT_BAD_INPUT, EXIT_FAILED, console, emit, fail
from erpcloud.render import render_gap_check_units
from erpcloud.sites import StandInDown, aws_client_for
from erpcloud.ssh import HostKeyError
from maintenance.errors import ChangeFileError

backup_app = typer.Typer(
    help="Backups (S6) and WAL archiving (S7): run, list, verify (the gap check, one customer "
    "or the fleet), expire.",
    no_args_is_help=True,
)

CustomerArg = Annotated[str, typer.Argument(help="Customer id (the file's stem).")]


InventoryOption = Annotated[
    Path | None,
    typer.Option(
        "--inventory",
        envvar="ERPCLOUD_INVENTORY",
        help="Reach production's pgBackRest over SSH through this maintenance inventory "
        "(default: the customer's local machines, from `erpcloud local up`).",
    ),
]


#: How the commands find a customer's pgBackRest without an inventory (replaceable in tests).
resolve_target: Callable[[Customer], BackupTarget] = local_backup_target


def _customer(customer_id: str, directory: Path, as_json: bool) -> Customer:
    return load_valid_customer(customer_id, directory, as_json)


def _target(
    customer: Customer, as_json: bool, inventory: Path | None = None, directory: Path = Path()
) -> BackupTarget:
    if inventory is not None:
        try:
            return inventory_backup_target(
                customer, inventory, load_valid_fleet(directory, as_json)
            )
        except ChangeFileError as exc:
            fail(f"{inventory}: invalid inventory", as_json, EXIT_BAD_INPUT, map(str, exc.errors))
        except ValueError as exc:
            fail(str(exc), as_json, EXIT_BAD_INPUT)
    try:
        return resolve_target(customer)
    except (RuntimeError, OSError) as exc:
        fail(f"{customer.id}: no pgBackRest to talk to: {exc}", as_json)


def _local(moment: datetime | None, customer: Customer) -> str:
    return (
        "-" if moment is None else moment.astimezone(customer.timezone).strftime("%Y-%m-%d %H:%M")
    )


# --- run ------------------------------------------------------------------------------------------
@backup_app.command("run")
def run_command(
    customer_id: CustomerArg,
    backup_type: Annotated[
        BackupType | None,
        typer.Option("--type", help="full, diff or incr (default: tonight's per the schedule)."),
    ] = None,
    directory: CustomersDir = CUSTOMERS_DIR,
    inventory: InventoryOption = None,
    as_json: JsonFlag = False,
) -> None:
    """Back up the database to both repositories, the primary region first (S6)."""
    customer = _customer(customer_id, directory, as_json)
    target = _target(customer, as_json, inventory, directory)
    chosen = backup_type or scheduled_type(datetime.now(customer.timezone).date())
    progress = (lambda _: None) if as_json else (lambda line: console.print(f"… {line}"))
    result = run_backups(target.runner, customer, chosen, progress)

    def human() -> None:
        for repo in result.repositories:
            state = "[green]ok[/]" if repo.ok else "[bold red]FAILED[/]"
            detail = f"{repo.type} {repo.label}" if repo.ok else repo.error
            console.print(f"{state} {repo.repo}: {detail} ({repo.seconds:.1f} s)")

    emit({"ok": result.ok, **result.__dict__}, as_json, human)
    if not result.ok:
        raise SystemExit(EXIT_FAILED)


# --- list -----------------------------------------------------------------------------------------
@backup_app.command("list")
def list_command(
    customer_id: CustomerArg,
    directory: CustomersDir = CUSTOMERS_DIR,
    inventory: InventoryOption = None,
    as_json: JsonFlag = False,
) -> None:
    """The backup sets in each repository, from pgBackRest's info."""
    customer = _customer(customer_id, directory, as_json)
    target = _target(customer, as_json, inventory, directory)
    try:
        backups = list_backups(target.runner, customer)
    except PgBackRestError as exc:
        fail(str(exc), as_json)

    def human() -> None:
        for repo, sets in backups.items():
            table = Table(
                title=f"{customer.id} {repo}: {len(sets)} backup(s), times {customer.timezone}"
            )
            table.add_column("label", no_wrap=True)
            for column in ("type", "started", "seconds", "size MB", "stored MB", "WAL from"):
                table.add_column(column)
            for b in sets:
                table.add_row(
                    b.label,
                    b.type.value,
                    _local(b.started, customer),
                    f"{(b.stopped - b.started).total_seconds():.0f}",
                    f"{b.size_bytes / 1e6:.1f}",
                    f"{b.repo_size_bytes / 1e6:.1f}",
                    b.wal_start,
                )
            console.print(table)

    emit({"customer": customer.id, "repositories": backups}, as_json, human)


# --- verify ---------------------------------------------------------------------------------------
def _print_gap_check(result: GapCheckResult, customer: Customer) -> None:
    colour = {Outcome.OK: "green", Outcome.WARNING: "yellow", Outcome.FAILURE: "bold red"}
    for check in result.repositories:
        age = "-" if check.newest_age_seconds is None else f"{check.newest_age_seconds:.0f} s"
        console.print(
            f"[{colour[check.status]}]{check.status.value}[/] {check.repo}: "
            f"{check.backups} backup(s); {check.segments_checked} segment(s) checked from "
            f"{check.checked_from or '-'}; newest {check.newest or '-'} ({age} old, archived "
            f"{_local(check.newest_archived_at, customer)}); timelines {check.timelines or '-'}"
        )
        for finding in check.findings:
            console.print(f"  {finding.outcome.value}: {finding.message}", markup=False)
    console.print(
        f"gap check of {result.customer}: [{colour[result.status]}]{result.status.value}[/]"
    )


@backup_app.command("verify")
def verify_command(
    customer_id: CustomerArg,
    publish: Annotated[
        bool, typer.Option("--publish", help="Also put the result to CloudWatch (S5 metrics).")
    ] = False,
    directory: CustomersDir = CUSTOMERS_DIR,
    inventory: InventoryOption = None,
    as_json: JsonFlag = False,
) -> None:
    """The WAL gap check: every segment from the oldest kept backup on, in each repository.

    Exit 0 OK, 3 WARNING (newest segment late, a repository behind or unreachable),
    1 FAILURE (a segment missing: the first one and its repository are named).
    """
    customer = _customer(customer_id, directory, as_json)
    target = _target(customer, as_json, inventory, directory)
    try:
        result = verify(target.runner, customer)
    except (OSError, paramiko.SSHException, HostKeyError) as exc:
        fail(f"{customer.id}: {target.via} cannot be reached: {exc}", as_json)
    published: list[dict[str, Any]] = []
    if publish:
        if target.cloudwatch is None:
            fail(f"{customer.id}: no CloudWatch to publish to", as_json)
        published = publish_metrics(result, target.cloudwatch(customer.region))
    document = {
        "ok": result.status is Outcome.OK,
        **result.__dict__,
        "exit_code": result.exit_code,
        "via": target.via,
        "published_metrics": [m["MetricName"] for m in published],
    }
    emit(document, as_json, lambda: _print_gap_check(result, customer))
    raise SystemExit(result.exit_code)


@backup_app.command("verify-fleet")
def verify_fleet_command(
    inventory: Annotated[
        Path,
        typer.Option(
            "--inventory",
            envvar="ERPCLOUD_INVENTORY",
            help="The maintenance inventory: every production host with a stanza is checked.",
        ),
    ],
    publish: Annotated[
        bool, typer.Option("--publish", help="Put each result to CloudWatch (S5 alarms).")
    ] = False,
    workers: Annotated[int, typer.Option("--workers", min=1, help="Hosts checked at once.")] = (
        DEFAULT_WORKERS
    ),
    directory: CustomersDir = CUSTOMERS_DIR,
    as_json: JsonFlag = False,
) -> None:
    """The gap check on every production host of the inventory (what the operations timer runs
    every WAL_GAP_CHECK_INTERVAL). Exit: the worst outcome (0 OK, 3 WARNING, 1 FAILURE); a bad
    customer file is named and the others are still checked, then exit 2 unless one failed."""
    loaded = load_fleet_going_on(directory, as_json)
    fleet = loaded.customers
    try:
        targets = inventory_backup_targets(inventory, fleet)
    except ChangeFileError as exc:
        fail(f"{inventory}: invalid inventory", as_json, EXIT_BAD_INPUT, map(str, exc.errors))
    except ValueError as exc:
        fail(str(exc), as_json, EXIT_BAD_INPUT)

    def progress(entry: FleetEntry) -> None:
        if not as_json:
            console.print(f"… {entry.customer}: {entry.status.value}", markup=False)

    checked = check_fleet(fleet, targets, publish, workers, progress)

    def human() -> None:
        table = Table(title=f"WAL gap check of {len(checked.entries)} production host(s)")
        for column in ("customer", "status", "repositories", "via", "published"):
            table.add_column(column)
        for entry in checked.entries:
            repos = (
                ", ".join(f"{c.repo.name}: {c.status.value}" for c in entry.result.repositories)
                if entry.result
                else entry.error or "-"
            )
            published = entry.publish_error or ("yes" if entry.published else "-")
            table.add_row(entry.customer, entry.status.value, repos, entry.via, published)
        console.print(table)

    emit(
        {
            "ok": checked.status is Outcome.OK and not loaded.errors,
            "status": checked.status,
            "exit_code": checked.exit_code,
            "checked": len(checked.entries),
            "entries": checked.entries,
            "invalid_customer_files": [str(e) for e in loaded.errors],
        },
        as_json,
        human,
    )
    if loaded.errors and checked.status is not Outcome.FAILURE:
        raise SystemExit(EXIT_BAD_INPUT)
    raise SystemExit(checked.exit_code)


@backup_app.command("ops-units")
def ops_units_command(
    out: Annotated[Path, typer.Option("--out", help="Folder for the two unit files.")],
    inventory: Annotated[
        str, typer.Option("--inventory", help="The inventory's path on the operations host.")
    ] = "/etc/erpcloud/inventory.yaml",
    customers: Annotated[
        str, typer.Option("--customers", help="The customer files' folder there.")
    ] = "/srv/erpcloud/customers",
    erpcloud: Annotated[
        str, typer.Option("--erpcloud", help="The erpcloud program there.")
    ] = "/srv/erpcloud/.venv/bin/erpcloud",
    user: Annotated[str, typer.Option("--user", help="The account that runs it.")] = (
        "erpcloud-ops"
    ),
    as_json: JsonFlag = False,
) -> None:
    """Render the operations host's systemd timer for `backup verify-fleet --publish` (S5-S7)."""
    for name, value in (("--inventory", inventory), ("--customers", customers)):
        if not value.startswith("/"):
            fail(f"{name}: {value!r} must be an absolute path on the host", as_json, EXIT_BAD_INPUT)
    if not erpcloud.startswith("/"):
        fail(f"--erpcloud: {erpcloud!r} must be an absolute path", as_json, EXIT_BAD_INPUT)
    units = render_gap_check_units(
        erpcloud, inventory, customers, str(PurePosixPath(customers).parent), user
    )
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name, text in units.items():
        write_atomic(out / name, text, mode=0o644)
        written.append(str(out / name))
    emit(
        {"ok": True, "written": written},
        as_json,
        lambda: console.print("\n".join(f"wrote {path}" for path in written)),
    )


# --- expire ---------------------------------------------------------------------------------------
def _print_expiry(report: ExpireReport) -> None:
    verb = "would expire" if report.dry_run else "expired"
    for entry in report.repositories:
        plan = entry.plan
        gone = plan.expire if report.dry_run else tuple(entry.expired)
        state = "[green]ok[/]" if entry.ok else "[bold red]FAILED[/]"
        console.print(
            f"{state} {entry.repo}: {verb} {len(gone)} backup(s) {list(gone) or ''}; keeps "
            f"{len(plan.keep)} from {plan.anchor or '-'} (finished before "
            f"{plan.cutoff:%Y-%m-%d %H:%M} UTC, covers the {report.retention_days}-day window)"
        )
        if entry.error:
            console.print(f"  {entry.error}", markup=False)
    if report.override_reason:
        console.print(
            f"[yellow]below-policy retention, logged to {report.audit_log}:[/] "
            f"{report.override_reason}"
        )


@backup_app.command("expire")
def expire_command(
    customer_id: CustomerArg,
    retention_days: Annotated[
        int | None,
        typer.Option(help="Days to keep (default: the customer's, at least S6's 30).", min=1),
    ] = None,
    below_policy: Annotated[
        bool, typer.Option("--below-policy", help="Allow a retention below the customer's.")
    ] = False,
    reason: Annotated[
        str | None, typer.Option(help="Why (required with --below-policy; logged).")
    ] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Show the plan only.")] = False,
    directory: CustomersDir = CUSTOMERS_DIR,
    inventory: InventoryOption = None,
    as_json: JsonFlag = False,
) -> None:
    """Expire backups (and their WAL) past the retention per repository; never the newest full."""
    customer = _customer(customer_id, directory, as_json)
    if below_policy and not (reason and reason.strip()):
        fail(
            "--below-policy needs --reason (it is written to the audit log)",
            as_json,
            EXIT_BAD_INPUT,
        )
    target = _target(customer, as_json, inventory, directory)
    try:
        report = expire(
            target.runner,
            customer,
            retention_days,
            reason if below_policy else None,
            dry_run=dry_run,
            now=datetime.now(UTC),
        )
    except RetentionRefused as exc:
        fail(str(exc), as_json, EXIT_BAD_INPUT)
    except PgBackRestError as exc:
        fail(str(exc), as_json)
    emit({"ok": report.ok, **report.__dict__}, as_json, lambda: _print_expiry(report))
    if not report.ok:
        raise SystemExit(EXIT_FAILED)


@backup_app.command("recover-deleted")
def recover_deleted_command(
    customer_id: CustomerArg,
    since: Annotated[
        str,
        typer.Option(
            "--since",
            help="When the damage started (ISO 8601): delete markers from then on are removed.",
        ),
    ],
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Say what would come back; change nothing.")
    ] = False,
    directory: CustomersDir = CUSTOMERS_DIR,
    as_json: JsonFlag = False,
) -> None:
    """Bring both repositories back after a mass delete (issue 13, S6): remove the delete
    markers written since --since, so every object's newest version is current again. Run
    `backup verify` afterwards. Logged in the audit log."""
    customer = _customer(customer_id, directory, as_json)
    try:
        moment = datetime.fromisoformat(since.replace("Z", "+00:00"))
    except ValueError:
        fail(f"--since: {since!r} is not an ISO 8601 time", as_json, EXIT_BAD_INPUT)
    moment = moment if moment.tzinfo else moment.replace(tzinfo=UTC)
    regions = (customer.region, customer.backup_copy_region)
    results = []
    for bucket, region in zip(customer.backup_bucket_names, regions, strict=True):
        try:
            s3 = aws_client_for(customer.id, "s3", region)
        except StandInDown as exc:
            fail(str(exc), as_json)
        results.append(recover_bucket(s3, bucket, region, moment, dry_run=dry_run))
    audit(
        {
            "action": "backup.recover-deleted",
            "customer": customer.id,
            "since": moment,
            "dry_run": dry_run,
            "restored": {r.bucket: len(r.restored) for r in results},
        }
    )

    def human() -> None:
        verb = "would restore" if dry_run else "restored"
        for result in results:
            console.print(
                f"s3://{result.bucket} ({result.region}): {verb} {len(result.restored)} "
                f"object(s); {result.left_deleted} deleted before --since left as they are"
            )
        if not dry_run:
            console.print(f"next: erpcloud backup verify {customer.id}")

    emit({"ok": True, "dry_run": dry_run, "since": moment, "buckets": results}, as_json, human)

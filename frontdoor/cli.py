"""The ``erpcloud`` command: everything that is not a Fabric task.

Each command is a thin wrapper: it parses arguments, calls a plain function, and prints a human
summary or JSON (``--json``). Exit codes are in :mod:`erpcloud.output`.
"""

from __future__ import annotations

import time
from datetime import date
from pathlib import Path
from typing import Annotated

import typer
import yaml
from rich.table import Table

from erpcloud import policy
from erpcloud.cli_common import (
    BuildDir,
    CustomersDir,
    JsonFlag,
    load_valid_customer,
    load_valid_fleet,
    refuse,
)
from erpcloud.files import write_atomic
from erpcloud.fleet import (
    CUSTOMERS_DIR,
    CustomerFileError,
    fleet_errors,
    load_fleet,
    parse_customer,
)
from erpcloud.model import Customer
from erpcloud.output import EXIT_BAD_INPUT, console, emit, err_console, fail
from erpcloud.render import UserDataError, render_customer, validate_user_data_file
from erpcloud.sites import register_local

app = typer.Typer(
    name="erpcloud",
    help=(
        "Provision and operate managed, dedicated ERP instances on AWS. Customer files in "
        "customers/ are validated once, here, and everything else is derived from them."
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
customer_app = typer.Typer(
    help="Customer files and lifecycle: new, check, show; suspend, resume, cancel, due, purge.",
    no_args_is_help=True,
)
app.add_typer(customer_app, name="customer")


# --- customer ---------------------------------------------------------------------------------
@customer_app.command("check")
def customer_check(
    directory: Annotated[Path, typer.Argument(help="Folder of customer files.")] = CUSTOMERS_DIR,
    as_json: JsonFlag = False,
) -> None:
    """Validate every customer file and the rules across them (unique prefixes, S3)."""
    started = time.perf_counter()
    fleet = load_fleet(directory)
    elapsed = time.perf_counter() - started
    summary = {
        "ok": fleet.ok,
        "customers": sorted(fleet.customers),
        "errors": [e.__dict__ for e in fleet.errors],
        "seconds": round(elapsed, 3),
    }
    if fleet.ok:
        emit(
            summary,
            as_json,
            lambda: console.print(
                f"[green]ok[/] {len(fleet.customers)} customer file(s) in {directory}/ are valid "
                f"({elapsed:.2f} s)"
            ),
        )
        return
    if as_json:
        emit(summary, True, lambda: None)
        raise SystemExit(EXIT_BAD_INPUT)
    refuse(fleet.errors, as_json)


def _customer_summary(customer: Customer) -> dict[str, object]:
    test = customer.test_sizing
    return {
        "id": customer.id,
        "company": customer.company,
        "partner": customer.partner.id,
        "zone": customer.partner.zone.value,
        "edition": customer.edition.value,
        "product_version": customer.product_version,
        "url": f"https://{customer.url_host}",
        "test_url": f"https://{customer.test_url_host}",
        "region": customer.region,
        "copy_region": customer.backup_copy_region,
        "production": customer.production.model_dump(),
        "test_environment": test.model_dump(),
        "ssh_users": [u.name for u in customer.ssh.users],
        "state": customer.lifecycle.state.value,
        "termination_date": customer.lifecycle.termination_date,
        "purge_allowed_from": customer.lifecycle.purge_allowed_from,
    }


@customer_app.command("show")
def customer_show(
    customer_id: Annotated[str, typer.Argument(help="Customer id (the file's stem).")],
    directory: CustomersDir = CUSTOMERS_DIR,
    as_json: JsonFlag = False,
) -> None:
    """Show one customer with everything derived from it (URLs, copy region, test sizing)."""
    customer = load_valid_customer(customer_id, directory, as_json)
    summary = _customer_summary(customer)

    def human() -> None:
        table = Table(title=f"{customer.id} ({customer.company})", show_header=False)
        for key, value in summary.items():
            table.add_row(key, str(value))
        console.print(table)

    emit(summary, as_json, human)


@customer_app.command("new")
def customer_new(
    customer_id: Annotated[str, typer.Argument(help="Customer id: the stack and file name.")],
    company: Annotated[str, typer.Option(help="Company name.")],
    contact_email: Annotated[str, typer.Option("--email", help="Primary contact e-mail.")],
    partner: Annotated[str, typer.Option(help="Partner id (P1).")],
    zone: Annotated[policy.Zone, typer.Option(help="Partner zone (P1).")],
    edition: Annotated[policy.Edition, typer.Option(help="Product edition (S17).")],
    product_version: Annotated[str, typer.Option("--version", help="Product version (S15).")],
    prefix: Annotated[str, typer.Option(help="URL prefix: <prefix>.cloud.<domain> (S3).")],
    region: Annotated[str, typer.Option(help="AWS region (S10).")],
    instance_type: Annotated[str, typer.Option(help="Production instance type (S1).")],
    data_volume_gib: Annotated[int, typer.Option("--volume-gib", help="Data volume (S1).")],
    ssh_user: Annotated[str, typer.Option(help="First SSH/SFTP user (S4).")],
    ssh_key_file: Annotated[
        Path, typer.Option(help="That user's public key file (S4).", exists=True, dir_okay=False)
    ],
    cidr: Annotated[list[str], typer.Option(help="Allowed SSH source network (repeat).")],
    concurrent_users: Annotated[int, typer.Option("--users", help="Concurrent users (S17).")],
    invoice_date: Annotated[str, typer.Option(help="Invoice date YYYY-MM-DD (S17).")],
    pos_terminals: Annotated[int, typer.Option("--pos", help="POS terminals (S17).")] = 0,
    region_exception: Annotated[
        str | None, typer.Option(help="Reason for a non-default region (S10).")
    ] = None,
    copy_region: Annotated[
        str | None, typer.Option(help="Backup copy region, where not derived (S6).")
    ] = None,
    directory: CustomersDir = CUSTOMERS_DIR,
    as_json: JsonFlag = False,
) -> None:
    """Create customers/<id>.yaml, validated with the rest of the fleet before it is written."""
    path = directory / f"{customer_id}.yaml"
    if path.exists():
        fail(f"{path} exists already; edit it in a pull request instead", as_json, EXIT_BAD_INPUT)
    try:
        invoice = date.fromisoformat(invoice_date)
    except ValueError:
        fail(f"--invoice-date: {invoice_date!r} is not a date YYYY-MM-DD", as_json, EXIT_BAD_INPUT)
    document: dict[str, object] = {
        "id": customer_id,
        "company": company,
        "contact_email": contact_email,
        "partner": {"id": partner, "zone": zone.value},
        "edition": edition.value,
        "product_version": product_version,
        "prefix": prefix,
        "region": region,
        "production": {"instance_type": instance_type, "data_volume_gib": data_volume_gib},
        "ssh": {
            "allowed_cidrs": cidr,
            "users": [{"name": ssh_user, "keys": [ssh_key_file.read_text().strip()]}],
        },
        "licence": {
            "concurrent_users": concurrent_users,
            "pos_terminals": pos_terminals,
            "invoice_date": invoice,
        },
    }
    if region_exception:
        document["region_exception"] = region_exception
    if copy_region:
        document["copy_region"] = copy_region
    try:
        customer = parse_customer(document, str(path), expected_id=customer_id)
    except CustomerFileError as exc:
        refuse(exc.errors, as_json)
    if directory.is_dir():
        fleet = load_fleet(directory)
        customers = {**fleet.customers, customer.id: customer}
        files = {**fleet.files, customer.id: path}
        clashes = [e for e in fleet_errors(customers, files) if e.file == str(path)]
        if clashes:
            refuse(clashes, as_json)
    text = "# Created by `erpcloud customer new`; review it in a pull request.\n" + yaml.safe_dump(
        document, sort_keys=False, default_flow_style=False
    )
    write_atomic(path, text)
    emit(
        {"ok": True, "file": path, "customer": _customer_summary(customer)},
        as_json,
        lambda: console.print(f"[green]created[/] {path} (https://{customer.url_host})"),
    )


# --- render -----------------------------------------------------------------------------------
@app.command("render")
def render(
    customer_ids: Annotated[
        list[str] | None, typer.Argument(help="Customers to render (default: all).")
    ] = None,
    directory: CustomersDir = CUSTOMERS_DIR,
    out: BuildDir = Path("build/rendered"),
    validate: Annotated[
        bool, typer.Option(help="Check every user-data with `cloud-init schema`.")
    ] = True,
    as_json: JsonFlag = False,
) -> None:
    """Render each customer's cloud-init, PostgreSQL, pgBackRest, systemd and monitoring files."""
    customers = load_valid_fleet(directory, as_json)
    chosen = customer_ids or sorted(customers)
    unknown = [c for c in chosen if c not in customers]
    if unknown:
        fail(f"unknown customer(s): {', '.join(unknown)}", as_json, EXIT_BAD_INPUT)
    results = []
    for customer_id in chosen:
        rendered = render_customer(customers[customer_id], out)
        checked = []
        if validate:
            for user_data in sorted(rendered.directory.glob("*/user-data.yaml")):
                try:
                    validate_user_data_file(user_data)
                except UserDataError as exc:
                    fail(str(exc), as_json)
                checked.append(str(user_data))
        results.append(
            {
                "customer": customer_id,
                "directory": str(rendered.directory),
                "files": len(rendered.files),
                "user_data_validated": checked,
            }
        )

    def human() -> None:
        table = Table(title="Rendered")
        for column in ("customer", "files", "cloud-init schema", "folder"):
            table.add_column(column)
        for row in results:
            valid = "valid" if row["user_data_validated"] else "not checked"
            table.add_row(str(row["customer"]), str(row["files"]), valid, str(row["directory"]))
        console.print(table)

    emit({"ok": True, "rendered": results}, as_json, human)


# --- policy -----------------------------------------------------------------------------------
@app.command("policy")
def show_policy(as_json: JsonFlag = False) -> None:
    """List the service promises' numbers as the platform enforces them."""
    names = [n for n in dir(policy) if n.isupper()]
    values = {n: getattr(policy, n) for n in names}

    def human() -> None:
        table = Table(title="Service policy (erpcloud/policy.py)")
        table.add_column("name")
        table.add_column("value")
        for name, value in values.items():
            text = str(value)
            table.add_row(name, text if len(text) < 90 else text[:87] + "...")
        console.print(table)

    emit(values, as_json, human)


def main() -> None:
    app()


def _print_demo_summary(table: Table, facts: dict[str, str]) -> None:
    console.print(table)
    for name, where in facts.items():
        console.print(f"  {name}: {where}")


# --- demo -------------------------------------------------------------------------------------
@app.command("demo")
def demo(
    customer_id: Annotated[
        str, typer.Option("--customer", help="The sample customer to run locally.")
    ] = "acme-retail",
    directory: CustomersDir = CUSTOMERS_DIR,
    out: BuildDir = Path("build/demo"),
    as_json: JsonFlag = False,
) -> None:
    """The main job end to end on embedded defaults (what `make demo` runs)."""
    from localtarget.demo import STEPS, DemoContext, run_steps, summary_table, teardown

    context = DemoContext(customers_dir=directory, build_dir=out, customer_id=customer_id)
    progress = err_console if as_json else console
    try:
        results = run_steps(context, STEPS, progress)
    finally:
        with progress.status("tearing the local target down..."):
            stopped = teardown(context)
        progress.print(f"[green]ok[/] teardown: {stopped}")
    ok = len(results) == len(STEPS) and all(r.ok for r in results)
    emit(
        {"ok": ok, "steps": results, "facts": context.facts},
        as_json,
        lambda: _print_demo_summary(summary_table(results, len(STEPS)), context.facts),
    )
    if not ok:
        raise SystemExit(1)


# --- capability sub-commands (each lives in its own package) ---------------------------------
from localtarget.cli import app as local_app  # noqa: E402 - registered after the shared helpers
from localtarget.site import MachinesSite  # noqa: E402 - the front door picks the local site

app.add_typer(local_app, name="local")
register_local(MachinesSite())  # the customer's local machines, where `local up` booted them
from maintenance.cli import maintenance_app  # noqa: E402 - registered after the shared helpers

app.add_typer(maintenance_app, name="maintenance")
from stacks.cli import plan_command  # noqa: E402 - registered after the shared helpers

app.command("plan")(plan_command)
from backups.cli import backup_app  # noqa: E402 - registered after the shared helpers

app.add_typer(backup_app, name="backup")
from lifecycle.cli import add_customer_commands, inventory_command  # noqa: E402 - as above

add_customer_commands(customer_app)
app.command("inventory")(inventory_command)
from dr.cli import dr_app  # noqa: E402 - registered after the shared helpers

app.add_typer(dr_app, name="dr")
from support.cli import support_app  # noqa: E402 - registered after the shared helpers

app.add_typer(support_app, name="support")

"""Fabric tasks for restore drills (S8): ``fab dr.drill`` and ``fab dr.teardown``.

Thin on purpose: parse and validate the arguments (exit 2 naming the option and the rule),
build the drill's site, call :func:`dr.drill.run_drill`, print a summary or the report as JSON
(exit 0 passed, 1 failed). Every connection goes through :func:`erpcloud.ssh.connect` with
pinned host keys. Defaults come from the collection's configuration (``dr.*``), which a
``fabric.yaml`` or ``FABRIC_DR_<KEY>`` environment variables change (e.g. ``dr.site: aws``).

Sites (:mod:`dr.site`): ``machines`` (the default), the customer's real machines from
``erpcloud local up`` (a drill machine from the customer's image per drill); ``aws``.
"""

from __future__ import annotations

import json as jsonlib
import sys
from pathlib import Path
from typing import Any

from invoke import Context, task
from invoke.exceptions import Exit

from dr.drill import DrillRequest, run_drill
from dr.host import (
    IMAGE_PG_VERSION,
    DrillHostsError,
    DrillHostSpec,
    host_from_command_line,
    host_from_inventory,
)
from dr.model import DrillMode, DrillReport, RepoChoice
from dr.plan import parse_target_time
from dr.reports import load_report, write_reports
from dr.site import (
    DrillSite,
    aws_site,
    production_from_inventory,
    registered_site,
    site_names,
    teardown_kept,
)
from erpcloud.fleet import load_fleet
from erpcloud.model import Customer
from erpcloud.output import EXIT_FAILED, task_refusal, to_jsonable

#: The collection's configuration defaults (the root fabfile installs them).
CONFIG: dict[str, Any] = {
    "dr": {
        "site": "machines",
        "customers": "customers",
        "drills": "build/dr/drills",
        "inventory": "build/inventory.yaml",
    }
}


class _BadInput(ValueError):
    pass


def _setting(c: Context, key: str, given: str | None) -> str:
    configured = c.config.get("dr", {})
    return str(given or configured.get(key) or CONFIG["dr"][key])


def _customer(directory: Path, customer_id: str) -> Customer:
    fleet = load_fleet(directory)
    if fleet.errors:
        raise _BadInput("; ".join(str(e) for e in fleet.errors))
    if customer_id not in fleet.customers:
        known = ", ".join(sorted(fleet.customers)) or "none"
        raise _BadInput(f"--customer: no customer {customer_id!r} in {directory}/ ({known})")
    return fleet.customers[customer_id]


def _mode(target_time: str | None, latest: bool) -> DrillMode:
    if target_time and latest:
        raise _BadInput("--target-time and --latest exclude each other: choose one target")
    if target_time:
        return DrillMode.TIME
    return DrillMode.LATEST if latest else DrillMode.POINT


def _repo(value: str) -> RepoChoice:
    try:
        return RepoChoice(value)
    except ValueError:
        raise _BadInput(f"--repo: {value!r} is not one of copy, primary") from None


def _min_free(value: str | None) -> int:
    if value is None:
        return 0
    try:
        megabytes = float(value)
    except ValueError:
        raise _BadInput(f"--min-free-mb: {value!r} is not a number") from None
    if megabytes < 0:
        raise _BadInput("--min-free-mb must not be negative")
    return int(megabytes * 1_000_000)


def _drill_host(
    customer: Customer,
    choice: RepoChoice,
    work: Path,
    address: str | None,
    host_key: str | None,
    key_file: str | None,
    hosts_file: str | None,
    root: str | None,
) -> DrillHostSpec | None:
    known_hosts = work / "drill_known_hosts"
    if address:
        if not key_file:
            raise _BadInput("--key-file: the private key to log in to --drill-host is required")
        return host_from_command_line(address, host_key, Path(key_file), known_hosts, root)
    if hosts_file:
        region = customer.backup_copy_region if choice is RepoChoice.COPY else customer.region
        return host_from_inventory(Path(hosts_file), region, known_hosts)
    return None


def _print_summary(report: DrillReport, drills: Path) -> None:
    m = report.measures
    verdict = "PASSED" if report.passed else "FAILED"
    print(f"drill {report.drill_id}: {verdict} ({report.mode.value}, repo{report.repo.index})")
    if report.error:
        print(f"  failed at {report.failed_step}: {report.error}")
    for check in report.checks:
        print(f"  {check.status.value:8} {check.name}: {check.detail}")
    if m.rto_seconds is not None:
        print(f"  RTO {m.rto_seconds:.1f} s (S8 {m.rto_limit_seconds / 3600:.0f} h)")
    if m.rpo_seconds is not None:
        print(f"  RPO {m.rpo_seconds:.1f} s (S8 {m.rpo_limit_seconds / 60:.0f} min)")
    if m.throughput_mb_s is not None:
        print(f"  restore {m.restore_seconds:.1f} s, {m.throughput_mb_s:.1f} MB/s")
    print(f"  report: {drills / report.drill_id}/report.md; uploaded: {report.uploaded or 'no'}")
    if report.drill_host and report.drill_host.kept:
        print(f"  drill host kept: fab dr.teardown --drill {report.drill_id}")


@task(
    auto_shortflags=False,
    help={
        "customer": "Customer id (customers/<id>.yaml).",
        "target-time": "Recover to this ISO 8601 time (with offset), instead of the snapshot.",
        "latest": "Recover everything the repository holds now (the region is lost now).",
        "repo": "copy (default: the copy region, as in a regional loss) or primary.",
        "keep": "Leave the drill host and the restored cluster up (fab dr.teardown later).",
        "drill-host": "user@host[:port] of an existing drill host (default on --site machines: "
        "a drill machine booted from the customer's image for the drill).",
        "drill-host-key": "The drill host's public host key ('ssh-ed25519 AAAA...'), pinned.",
        "key-file": "Private key to log in to --drill-host.",
        "drill-hosts": "Drill-hosts file: the host of the repository's region is used.",
        "drill-root": "Folder for drills on --drill-host (default /var/lib/erpcloud-drill).",
        "site": "machines (the customer's machines from `erpcloud local up`) or aws "
        "(default: config dr.site, machines).",
        "inventory": "aws site, point drills: the maintenance inventory (production's host).",
        "customers": "Folder of customer files.",
        "drills": "Folder of drill reports (default build/dr/drills).",
        "min-free-mb": "Free space the drill host must have at least, in MB.",
        "json": "Print the report as JSON on stdout; progress goes to stderr.",
    },
)
def drill(
    c: Context,
    customer: str,
    target_time: str | None = None,
    latest: bool = False,
    repo: str = "copy",
    keep: bool = False,
    drill_host: str | None = None,
    drill_host_key: str | None = None,
    key_file: str | None = None,
    drill_hosts: str | None = None,
    drill_root: str | None = None,
    site: str | None = None,
    inventory: str | None = None,
    customers: str | None = None,
    drills: str | None = None,
    min_free_mb: str | None = None,
    json: bool = False,
) -> None:
    """Restore a customer from its copy region onto a drill host, verify it, measure RTO/RPO."""
    drills_dir = Path(_setting(c, "drills", drills))
    stream = sys.stderr if json else sys.stdout
    try:
        chosen_site = _setting(c, "site", site)
        if chosen_site not in site_names():
            raise _BadInput(f"--site: {chosen_site!r} is not one of {', '.join(site_names())}")
        subject = _customer(Path(_setting(c, "customers", customers)), customer)
        mode = _mode(target_time, latest)
        choice = _repo(repo)
        request = DrillRequest(
            mode=mode,
            repo=choice,
            target_time=parse_target_time(target_time) if target_time else None,
            keep=keep,
            min_free_bytes=_min_free(min_free_mb),
        )
        work = drills_dir / ".ssh"
        spec = _drill_host(
            subject, choice, work, drill_host, drill_host_key, key_file, drill_hosts, drill_root
        )
        drill_site: DrillSite
        make_site = registered_site(chosen_site)
        if make_site is not None:
            try:
                drill_site = make_site(subject, work, spec)
            except RuntimeError as exc:
                raise _BadInput(f"--site {chosen_site}: {exc}") from None
        else:
            production = None
            if mode is DrillMode.POINT:
                path = Path(_setting(c, "inventory", inventory))
                production = production_from_inventory(
                    path, subject, work / "production_hosts", pg_version=IMAGE_PG_VERSION
                )
            drill_site = aws_site(subject, spec, production)
    except (_BadInput, DrillHostsError, ValueError) as exc:
        raise task_refusal(str(exc), json) from None

    def progress(line: str) -> None:
        print(f"… {line}", file=stream, flush=True)

    report = run_drill(drill_site, request, drills_dir, progress=progress)
    if json:
        sys.stdout.write(jsonlib.dumps(to_jsonable(report), indent=2) + "\n")
    else:
        _print_summary(report, drills_dir)
    if not report.passed:
        raise Exit(code=EXIT_FAILED)


@task(
    auto_shortflags=False,
    help={
        "drill": "The drill id whose kept drill host is torn down.",
        "drills": "Folder of drill reports (default build/dr/drills).",
    },
)
def teardown(c: Context, drill: str, drills: str | None = None) -> None:
    """Tear down the drill host a ``--keep`` drill left up (never a backup)."""
    drills_dir = Path(_setting(c, "drills", drills))
    try:
        report = load_report(drills_dir, drill)
    except (FileNotFoundError, ValueError) as exc:
        raise task_refusal(str(exc), False) from None
    host = report.drill_host
    if host is None or not host.kept or host.torn_down:
        raise task_refusal(f"drill {drill} has no kept drill host to tear down", False)
    try:
        done = teardown_kept(host, report.drill_id)
    except ValueError as exc:
        raise task_refusal(str(exc), False) from None
    for line in done:
        print(line)
    host.torn_down = True
    write_reports(report, drills_dir)

"""`erpcloud demo`: the main job end to end on embedded defaults, step by step.

Validate the sample fleet, render every customer's files, print one customer's offline plan,
boot its production and test machines (the product image, the rendered user-data), load sample
data and keep writing on production, back up to both regions, check the archive for gaps, apply
a sample maintenance change through the Fabric runner (canary, then the production wave), run
restore drills from the copy region on drill machines, print one summary, and tear everything
down, also when a step fails. Everything after the boot reaches the machines over SSH with
their pinned host keys, as on AWS. Each step is a plain function returning a short line; the
runner shows progress, stops at the first failure and exits 1.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from erpcloud.fleet import load_fleet
from erpcloud.model import Customer, Environment
from erpcloud.output import console
from erpcloud.render import render_customer, validate_user_data_file
from localtarget import machines, onmachine, sampledata
from localtarget.machines import MachineSetState

#: The sample change the demo applies (a drill of the runner: its window is not now).
DEMO_CHANGE = "2026-12-log-rotation"


@dataclass
class DemoContext:
    customers_dir: Path
    build_dir: Path
    customer_id: str
    facts: dict[str, str] = field(default_factory=dict)
    customer: Customer | None = None
    machines: MachineSetState | None = None
    writing: bool = False
    orders_before_writer: int = 0

    def need_customer(self) -> Customer:
        if self.customer is None:
            raise RuntimeError("the fleet was not validated")
        return self.customer

    def need_machines(self) -> MachineSetState:
        if self.machines is None:
            raise RuntimeError("the machines are not up")
        return self.machines

    def backup_target(self) -> Any:
        """Production's pgBackRest over SSH, through the machines' inventory (as on AWS)."""
        from backups.targets import inventory_backup_target

        fleet = load_fleet(self.customers_dir).customers
        inventory = Path(self.need_machines().inventory)
        return inventory_backup_target(self.need_customer(), inventory, fleet)


@dataclass(frozen=True)
class StepResult:
    name: str
    ok: bool
    seconds: float
    detail: str


Step = tuple[str, Callable[[DemoContext], str]]


def step_validate_fleet(context: DemoContext) -> str:
    fleet = load_fleet(context.customers_dir)
    if not fleet.ok:
        raise ValueError("\n".join(str(e) for e in fleet.errors))
    if context.customer_id not in fleet.customers:
        raise ValueError(f"demo customer {context.customer_id!r} is not in the fleet")
    context.customer = fleet.customers[context.customer_id]
    return f"{len(fleet.customers)} customer files valid (model, policies, unique prefixes)"


def step_render(context: DemoContext) -> str:
    fleet = load_fleet(context.customers_dir)
    checked = 0
    for customer in fleet.customers.values():
        rendered = render_customer(customer, context.build_dir / "rendered")
        for user_data in sorted(rendered.directory.glob("*/user-data.yaml")):
            validate_user_data_file(user_data)
            checked += 1
    context.facts["rendered files"] = str(context.build_dir / "rendered")
    return f"{checked} cloud-init user-data files rendered and accepted by `cloud-init schema`"


def step_offline_plan(context: DemoContext) -> str:
    from stacks.checks import run_checks
    from stacks.plan import plan_customer

    customer = context.need_customer()
    plan = plan_customer(customer)
    violations = run_checks(plan, customer)
    if violations:
        raise ValueError("promise checks failed: " + "; ".join(violations))
    path = context.build_dir / "plan" / f"{customer.id}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(plan.to_json(), indent=2, default=str) + "\n")
    context.facts["offline plan"] = str(path)
    groups = ", ".join(f"{name}: {len(items)}" for name, items in plan.components().items())
    return f"OFFLINE plan, {len(plan.resources)} resources ({groups}); promise checks passed"


def step_machines_up(context: DemoContext) -> str:
    customer = context.need_customer()
    context.machines = machines.up(customer)
    state = context.machines
    image = state.image
    built = "built" if image["built_now"] else "from the cache"
    context.facts["machines"] = f"{state.root} (`erpcloud local status {customer.id}`)"
    created = len(state.provisioned.created)
    production, test = (
        state.machines[e].address for e in (Environment.PRODUCTION, Environment.TEST)
    )
    return (
        f"image {image['release']} {built}; production {production}"
        f" and test {test} ready (cloud-init done, no failed "
        f"unit, host keys pinned from the console); {created} AWS resources from the plan"
    )


def step_sample_data(context: DemoContext) -> str:
    state = context.need_machines()
    onmachine.psql(
        state, Environment.PRODUCTION, sampledata.sample_data_script(context.need_customer())
    )
    context.orders_before_writer = onmachine.order_count(state)
    onmachine.start_order_writer(state)
    context.writing = True
    orders = onmachine.wait_for_orders(state, context.orders_before_writer + 10)
    return f"product database loaded ({orders} orders) and an order writer on production"


def step_backup(context: DemoContext) -> str:
    from backups.info import BackupType
    from backups.runs import run_backups

    target = context.backup_target()
    run = run_backups(target.runner, context.need_customer(), BackupType.FULL)
    failed = [r for r in run.repositories if not r.ok]
    if failed:
        raise RuntimeError("; ".join(f"{r.repo}: {r.error}" for r in failed))
    done = ", ".join(f"{r.repo}: {r.label} ({r.seconds:.0f} s)" for r in run.repositories)
    return f"pgBackRest on the production machine, over SSH: {done}"


def step_gap_check(context: DemoContext) -> str:
    from backups.gapcheck import Outcome, verify

    onmachine.switch_wal_and_wait(context.need_machines())  # the check covers every write so far
    result = verify(context.backup_target().runner, context.need_customer())
    if result.status is not Outcome.OK:
        details = "; ".join(f.message for f in result.findings)
        raise RuntimeError(f"gap check {result.status.value}: {details}")
    return "; ".join(f"{c.repo}: {c.status.value}" for c in result.repositories)


def _run_json(argv: list[str]) -> dict[str, Any]:
    completed = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=600)
    try:
        document: dict[str, Any] = json.loads(completed.stdout)
    except json.JSONDecodeError:
        raise RuntimeError(
            f"{' '.join(argv[:3])} exited {completed.returncode}: {completed.stderr[-800:]}"
        ) from None
    if completed.returncode != 0:
        raise RuntimeError(f"{' '.join(argv[:3])} exited {completed.returncode}: {document}")
    return document


def step_maintenance(context: DemoContext) -> str:
    state = context.need_machines()
    bin_dir = Path(sys.executable).parent
    notices = context.build_dir / "maintenance" / "notices"
    runs = context.build_dir / "maintenance" / "runs"
    common = ["--customers", str(context.customers_dir)]
    _run_json(
        [str(bin_dir / "erpcloud"), "maintenance", "notices", DEMO_CHANGE, "--out", str(notices),
         *common, "--json"]
    )  # fmt: skip
    report = _run_json(
        [str(bin_dir / "fab"), "maintenance.apply", "--change", DEMO_CHANGE,
         "--inventory", state.inventory, "--notices", str(notices), "--runs", str(runs),
         "--drill", "make demo: a drill of the runner outside the change's window",
         *common, "--json"]
    )  # fmt: skip
    context.facts["maintenance report"] = str(runs)
    context.facts["maintenance notices"] = str(notices)
    hosts = report.get("hosts", [])
    order = " then ".join(f"{h.get('name')} ({h.get('status')})" for h in hosts)
    return f"run {report.get('run_id')}: {report.get('status')}; {order}"


def _drill(context: DemoContext, *mode: str) -> str:
    """``fab dr.drill`` from the copy region (S8) while the writer goes on; one line of it."""
    bin_dir = Path(sys.executable).parent
    drills = context.build_dir / "dr" / "drills"
    report = _run_json(
        [str(bin_dir / "fab"), "dr.drill", "--site", "machines",
         "--customer", context.need_customer().id,
         "--customers", str(context.customers_dir), "--drills", str(drills), *mode, "--json"]
    )  # fmt: skip
    context.facts["drill reports"] = str(drills)
    m = report["measures"]
    passed = sum(c["status"] == "passed" for c in report["checks"])
    others = "".join(
        f", {c['name']}: {c['status']}" for c in report["checks"] if c["status"] != "passed"
    )
    checks = f"{passed} checks passed{others}"
    return (
        f"drill {report['drill_id']}: {report['status']} from repo{report['repo']['index']} "
        f"({report['repo']['region']}); RTO {m['rto_seconds']:.0f} s of "
        f"{m['rto_limit_seconds'] / 3600:.0f} h, RPO {m['rpo_seconds']:.1f} s of "
        f"{m['rpo_limit_seconds'] / 60:.0f} min; {checks}"
    )


def step_drills(context: DemoContext) -> str:
    """Three drills at once, each on a drill machine of its own, as a DR team would run them:
    to a restore point (equality with production checked), to a moment a second ago (once its
    WAL is archived; orders were written all along), and the latest moment (regional loss)."""
    moment = datetime.now(UTC).replace(microsecond=0) - timedelta(seconds=1)
    onmachine.switch_wal_and_wait(context.need_machines())
    modes = {
        "restore point": (),
        "point in time": ("--target-time", moment.isoformat()),
        "latest": ("--latest",),
    }
    with ThreadPoolExecutor(max_workers=len(modes), thread_name_prefix="drill") as pool:
        running = {name: pool.submit(_drill, context, *mode) for name, mode in modes.items()}
        done = {name: future.result() for name, future in running.items()}
    return "\n".join(f"{name}: {line}" for name, line in done.items())


def step_stop_writer(context: DemoContext) -> str:
    if not context.writing:
        return "no writer"
    state = context.need_machines()
    onmachine.stop_order_writer(state)
    context.writing = False
    written = onmachine.order_count(state) - context.orders_before_writer
    return f"{written} orders committed on production while the platform worked"


STEPS: list[Step] = [
    ("Validate the sample fleet", step_validate_fleet),
    ("Render every customer's machine files", step_render),
    ("Offline plan of the demo customer", step_offline_plan),
    ("Boot the customer's machines from the product image", step_machines_up),
    ("Load sample data and keep writing", step_sample_data),
    ("Full backup to both regions", step_backup),
    ("Check the WAL archive for gaps", step_gap_check),
    ("Maintenance through the Fabric runner", step_maintenance),
    ("Three restore drills from the copy region at once", step_drills),
    ("Stop the writer", step_stop_writer),
]


def teardown(context: DemoContext) -> str:
    """Always run: stop the writer, power the machines off, stop what the target started."""
    if context.machines is None:
        return "nothing was started"
    if context.writing:
        with contextlib.suppress(Exception):  # a failed step may leave it running
            onmachine.stop_order_writer(context.machines)
    report = machines.down(context.machines.customer_id)
    return f"stopped {', '.join(report['stopped'])}"  # type: ignore[arg-type]


def run_steps(
    context: DemoContext, steps: list[Step], out: Console | None = None
) -> list[StepResult]:
    """Run steps in order with a progress line each; stop at the first failure.

    Progress goes to ``out`` (stderr when the caller prints JSON on stdout)."""
    out = out or console
    results: list[StepResult] = []
    for index, (name, function) in enumerate(steps, 1):
        started = time.perf_counter()
        with out.status(f"[{index}/{len(steps)}] {name}..."):
            try:
                detail = function(context)
                ok = True
            except Exception as exc:  # every failure is reported, then exit 1
                detail = f"{type(exc).__name__}: {exc}"
                ok = False
        result = StepResult(name, ok, time.perf_counter() - started, detail)
        results.append(result)
        mark = "[green]ok[/]" if ok else "[bold red]FAILED[/]"
        out.print(f"{mark} [{index}/{len(steps)}] {name} ({result.seconds:.1f} s)")
        if not ok:
            out.print(f"  {detail}", markup=False)
            break
    return results


def summary_table(results: list[StepResult], total_steps: int) -> Table:
    table = Table(title="erpcloud demo")
    table.add_column("step")
    table.add_column("result")
    table.add_column("seconds", justify="right")
    table.add_column("detail")
    for result in results:
        table.add_row(
            result.name,
            "ok" if result.ok else "FAILED",
            f"{result.seconds:.1f}",
            result.detail,
        )
    for _ in range(total_steps - len(results)):
        table.add_row("(not run)", "-", "-", "")
    return table

"""`erpcloud demo`: the main job end to end on embedded defaults, step by step.

Each step is a plain function returning a short result line; the runner shows progress, stops
at the first failure (exit 1) and prints one summary. Later capabilities add their steps here.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from rich.table import Table

from erpcloud.fleet import load_fleet
from erpcloud.output import console
from erpcloud.render import render_customer, validate_user_data_file


@dataclass
class DemoContext:
    customers_dir: Path
    build_dir: Path
    customer_id: str
    facts: dict[str, str] = field(default_factory=dict)


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
    return f"{len(fleet.customers)} customer files valid (model, policies, unique prefixes)"


def step_render(context: DemoContext) -> str:
    fleet = load_fleet(context.customers_dir)
    checked = 0
    for customer in fleet.customers.values():
        rendered = render_customer(customer, context.build_dir / "rendered")
        for user_data in sorted(rendered.directory.glob("*/user-data.yaml")):
            validate_user_data_file(user_data)
            checked += 1
    context.facts["rendered"] = str(context.build_dir / "rendered")
    return f"{checked} cloud-init user-data files rendered and accepted by `cloud-init schema`"


STEPS: list[Step] = [
    ("Validate the sample fleet", step_validate_fleet),
    ("Render every customer's machine files", step_render),
]


def run_steps(context: DemoContext, steps: list[Step]) -> list[StepResult]:
    """Run steps in order with a progress line each; stop at the first failure."""
    results: list[StepResult] = []
    for index, (name, function) in enumerate(steps, 1):
        started = time.perf_counter()
        with console.status(f"[{index}/{len(steps)}] {name}..."):
            try:
                detail = function(context)
                ok = True
            except Exception as exc:  # every failure is reported, then exit 1
                detail = f"{type(exc).__name__}: {exc}"
                ok = False
        result = StepResult(name, ok, time.perf_counter() - started, detail)
        results.append(result)
        mark = "[green]ok[/]" if ok else "[bold red]FAILED[/]"
        console.print(f"{mark} [{index}/{len(steps)}] {name} ({result.seconds:.1f} s)")
        if not ok:
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

"""Run reports: JSON for CI, Markdown for people, both written beside the run state.

Per host: status, timings, the checks, steps and rollbacks, errors. Per customer: the minutes of
service interruption, recorded as scheduled maintenance for standard and major changes, which
the monthly availability figure does not count as unscheduled downtime (S11). Emergency work is
recorded as such (S12 makes no such exclusion).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from erpcloud.files import write_atomic
from erpcloud.model import Environment
from maintenance.records import HostRecord, HostStatus, RunState

SCHEDULED_KINDS = frozenset({"standard", "major"})


def downtime_records(state: RunState) -> list[dict[str, Any]]:
    """Minutes of interruption per production customer touched by the run (S9: the test
    environment has no service levels, so it is not recorded)."""
    scheduled = state.kind in SCHEDULED_KINDS
    records = []
    for host in state.ordered_hosts():
        if host.environment is not Environment.PRODUCTION or host.started_at is None:
            continue
        if host.status not in (HostStatus.DONE, HostStatus.FAILED):
            continue
        records.append(
            {
                "customer": host.customer,
                "host": host.name,
                "minutes": round(host.downtime_seconds / 60, 2),
                "category": "scheduled-maintenance" if scheduled else "emergency-maintenance",
                "excluded_from_unscheduled_downtime": scheduled,
                "window_start": host.window_start.isoformat() if host.window_start else None,
                "window_end": host.window_end.isoformat() if host.window_end else None,
            }
        )
    return records


def report_document(state: RunState) -> dict[str, Any]:
    counts = {status.value: state.count(status) for status in HostStatus}
    return {
        "run_id": state.run_id,
        "change_id": state.change_id,
        "change_file": state.change_file,
        "kind": state.kind,
        "status": state.status.value,
        "ok": state.status.value in ("completed", "dry-run")
        and not counts["failed"]
        and not counts["refused"],
        "dry_run": state.dry_run,
        "drill_reason": state.drill_reason,
        "overrides": state.overrides,
        "halted_reason": state.halted_reason,
        "created_at": state.created_at.isoformat(),
        "updated_at": state.updated_at.isoformat(),
        "settings": state.settings.model_dump(),
        "counts": counts,
        "waves": [w.model_dump() for w in state.waves],
        "hosts": [h.model_dump(mode="json") for h in state.ordered_hosts()],
        "downtime": downtime_records(state),
        "attempts": [a.model_dump(mode="json") for a in state.attempts],
    }


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ").strip()


def _host_line(host: HostRecord) -> str:
    began = f"{host.started_at:%H:%M:%S}" if host.started_at else "-"
    problem = host.error or host.reason
    return (
        f"| {host.wave} | {host.name} | {host.customer} | {host.environment.value} | "
        f"**{host.status.value}** | {began} | {host.seconds:.1f} | "
        f"{round(host.downtime_seconds / 60, 2)} | {_cell(problem)[:300]} |"
    )


def markdown(state: RunState) -> str:
    document = report_document(state)
    counts = document["counts"]
    lines = [
        f"# Maintenance run {state.run_id}",
        "",
        f"- change: `{state.change_id}` ({state.kind}) from `{state.change_file}`",
        f"- status: **{state.status.value}**"
        + (f": {state.halted_reason}" if state.halted_reason else ""),
        f"- hosts: {counts['done']} done, {counts['failed']} failed, {counts['refused']} refused "
        f"(host key), {counts['untouched']} untouched, {counts['checked']} checked (dry run)",
        f"- waves: {len(state.waves)} (wave size {state.settings.wave_size}, concurrency "
        f"{state.settings.concurrency}, max_errors {state.settings.max_errors})",
        f"- started {state.created_at:%Y-%m-%d %H:%M:%S %Z}, attempts: {len(state.attempts)}",
    ]
    if state.drill_reason:
        lines.append(f"- **drill** of the runner itself: {state.drill_reason}")
    if state.overrides:
        lines += ["", "## Overrides (logged)", ""]
        lines += [f"- {o}" for o in state.overrides]
    lines += [
        "",
        "## Hosts (in planned order)",
        "",
        "| wave | host | customer | environment | status | started (UTC) | seconds | "
        "downtime min | error or reason |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    lines += [_host_line(h) for h in state.ordered_hosts()]
    troubled = [
        h for h in state.ordered_hosts() if h.status in (HostStatus.FAILED, HostStatus.REFUSED)
    ]
    if troubled:
        lines += ["", "## Failures", ""]
        for host in troubled:
            lines.append(f"### {host.name}")
            lines.append("")
            lines.append(f"- error: {_cell(host.error)}")
            for check in host.prechecks + host.postchecks:
                if check.status.value == "failed":
                    lines.append(f"- check {check.name}: {_cell(check.detail)}")
            for step in host.steps:
                lines.append(f"- step {step.index} {step.op}: {step.status} ({step.seconds:.1f} s)")
            for rollback in host.rollbacks:
                verdict = (
                    "rolled back" if rollback.ok else f"ROLLBACK FAILED: {_cell(rollback.output)}"
                )
                lines.append(f"- step {rollback.index} {rollback.op}: {verdict}")
            lines.append("")
    earlier = [h for h in state.ordered_hosts() if h.history]
    if earlier:
        lines += ["", "## Earlier attempts of this run", ""]
        lines += [f"- {h.name}: {_cell(line)[:300]}" for h in earlier for line in h.history]
    downtime = document["downtime"]
    if downtime:
        lines += [
            "",
            "## Downtime per customer",
            "",
            "| customer | minutes | recorded as | counts as unscheduled downtime |",
            "| --- | --- | --- | --- |",
        ]
        lines += [
            f"| {d['customer']} | {d['minutes']} | {d['category']} | "
            f"{'no (S11)' if d['excluded_from_unscheduled_downtime'] else 'yes'} |"
            for d in downtime
        ]
    return "\n".join(lines) + "\n"


def write_reports(state: RunState, directory: Path) -> tuple[Path, Path]:
    """``report.json`` and ``report.md`` in the run's folder, each written atomically."""
    json_path = directory / "report.json"
    md_path = directory / "report.md"
    write_atomic(json_path, json.dumps(report_document(state), indent=2) + "\n")
    write_atomic(md_path, markdown(state))
    return json_path, md_path

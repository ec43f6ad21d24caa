"""Drill reports: ``report.json`` (the model) and ``report.md`` for people, kept locally in
``build/dr/drills/<drill id>/`` and uploaded to the platform's reports bucket under
``drills/<drill id>/`` (the same layout, so ``aws s3 sync`` of the bucket gives the folder).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final

from pydantic import ValidationError

from dr.model import CheckStatus, DrillReport
from erpcloud import policy
from erpcloud.aws import bucket_location
from erpcloud.files import write_atomic

#: Default home of drill reports, relative to the working directory.
DRILLS_DIR: Final = Path("build/dr/drills")
REPORT_JSON: Final = "report.json"
REPORT_MD: Final = "report.md"


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f} s"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ").strip()


def markdown(report: DrillReport) -> str:
    m = report.measures
    status = report.status.value.upper()
    lines = [
        f"# Restore drill {report.drill_id}: {status}",
        "",
        f"- customer: `{report.customer}`; mode: {report.mode.value}; repository: "
        f"repo{report.repo.index} ({report.repo.choice.value} region {report.repo.region}, "
        f"bucket `{report.repo.bucket}`)",
        f"- started {report.started_at:%Y-%m-%d %H:%M:%S} UTC"
        + (f", finished {report.finished_at:%H:%M:%S} UTC" if report.finished_at else ""),
    ]
    target = report.target
    if target.restore_point:
        lines.append(f"- target: restore point `{target.restore_point}` at {target.lsn}")
    elif target.time:
        lines.append(f"- target: {target.time.isoformat()}")
    else:
        lines.append("- target: the end of the archive as of the event (latest)")
    if report.event_time:
        lines.append(f"- event time (RPO measured from it): {report.event_time.isoformat()}")
    if report.error:
        lines += ["", f"**Failed at {report.failed_step}:** {_cell(report.error)}"]
    lines += [
        "",
        "## Against S8",
        "",
        "| measure | value | bound | met |",
        "| --- | --- | --- | --- |",
        f"| RTO (drill start to verified service) | {_seconds(m.rto_seconds)} | "
        f"{m.rto_limit_seconds / 3600:.0f} h (S8) | {_met(m.rto_seconds, m.rto_limit_seconds)} |",
        f"| RPO (event minus last recovered commit) | {_seconds(m.rpo_seconds)} | "
        f"{m.rpo_limit_seconds / 60:.0f} min (S8) | {_met(m.rpo_seconds, m.rpo_limit_seconds)} |",
    ]
    if m.rpo_target_seconds is not None:
        lines.append(
            f"| RPO, latest point | {_seconds(m.rpo_seconds)} | {m.rpo_target_seconds:.0f} s "
            f"(our target) | {_met(m.rpo_seconds, m.rpo_target_seconds)} |"
        )
    throughput = "-" if m.throughput_mb_s is None else f"{m.throughput_mb_s:.1f} MB/s"
    lines += [
        f"| restore | {_seconds(m.restore_seconds)}, {throughput} | - | - |",
        f"| recovery (replay to promotion) | {_seconds(m.recovery_seconds)} | - | - |",
    ]
    if report.backup:
        b = report.backup
        lines += [
            "",
            "## Backup and WAL used",
            "",
            f"- backup `{b.label}` ({b.type}), {b.started:%Y-%m-%d %H:%M:%S} to "
            f"{b.stopped:%H:%M:%S} UTC, {b.size_bytes / 1e6:.1f} MB "
            f"({b.repo_size_bytes / 1e6:.1f} MB stored), WAL {b.wal_start} to {b.wal_stop}",
        ]
    if report.wal:
        w = report.wal
        missing = f"; **first missing {w.first_missing}** ({w.missing})" if w.first_missing else ""
        lines.append(
            f"- WAL {w.first} to {w.last} ({w.segments_needed} segments, archive {w.archive_id}, "
            f"timelines {w.timelines}); served up to {w.served_until}{missing}"
        )
    if report.checks:
        lines += ["", "## Checks", "", "| check | result | detail |", "| --- | --- | --- |"]
        lines += [
            f"| {c.name} | {_result(c.status)} | {_cell(c.detail)[:400]} |" for c in report.checks
        ]
    lines += ["", "## Steps", "", "| step | ok | seconds | detail |", "| --- | --- | --- | --- |"]
    lines += [
        f"| {s.name} | {'yes' if s.ok else '**no**'} | {s.seconds:.2f} | {_cell(s.detail)[:300]} |"
        for s in report.steps
    ]
    if report.snapshot:
        snap = report.snapshot
        lines += [
            "",
            f"## Production snapshot ({snap.database}, {snap.taken_at.isoformat()}, "
            f"writers held {snap.locked_seconds * 1000:.0f} ms at most)",
            "",
            "| table | rows | restored rows |",
            "| --- | --- | --- |",
        ]
        restored = report.restored.tables if report.restored else {}
        for name, figures in sorted(snap.tables.items()):
            got = restored.get(name)
            lines.append(f"| {name} | {figures.rows} | {got.rows if got else '-'} |")
    if report.drill_host:
        host = report.drill_host
        state = "kept (tear down: `fab dr.teardown`)" if host.kept else "torn down"
        lines += ["", f"Drill host: {host.name} ({host.address}), {host.directory}: {state}."]
    return "\n".join(lines) + "\n"


def _met(value: float | None, bound: float) -> str:
    if value is None:
        return "-"
    return "yes" if value <= bound else "**NO**"


def _result(status: CheckStatus) -> str:
    return {"passed": "passed", "failed": "**FAILED**", "skipped": "n/a"}[status.value]


def write_reports(report: DrillReport, drills_dir: Path) -> tuple[Path, Path]:
    folder = drills_dir / report.drill_id
    json_path, md_path = folder / REPORT_JSON, folder / REPORT_MD
    write_atomic(json_path, report.model_dump_json(indent=2) + "\n")
    write_atomic(md_path, markdown(report))
    return json_path, md_path


def upload_reports(
    report: DrillReport, files: tuple[Path, Path], client: Any, create_bucket: bool
) -> list[str]:
    """Put both files in the reports bucket; returns the object keys."""
    bucket = policy.DR_REPORTS_BUCKET
    if create_bucket:
        existing = {b["Name"] for b in client.list_buckets().get("Buckets", [])}
        if bucket not in existing:
            client.create_bucket(Bucket=bucket, **bucket_location(policy.DR_REPORTS_REGION))
    keys = []
    for path, content_type in zip(files, ("application/json", "text/markdown"), strict=True):
        key = f"drills/{report.drill_id}/{path.name}"
        client.put_object(Bucket=bucket, Key=key, Body=path.read_bytes(), ContentType=content_type)
        keys.append(key)
    return keys


def publish(
    report: DrillReport, drills_dir: Path, client_factory: Callable[[], Any] | None, create: bool
) -> DrillReport:
    """Write the report locally, then upload it; an upload failure is recorded, not raised."""
    files = write_reports(report, drills_dir)
    if client_factory is None:
        return report
    try:
        report.uploaded = upload_reports(report, files, client_factory(), create)
    except Exception as exc:  # boto3's many errors: the report itself is safe on disk
        report.upload_error = f"{type(exc).__name__}: {exc}"
    write_reports(report, drills_dir)
    return report


def load_reports(drills_dir: Path = DRILLS_DIR) -> list[DrillReport]:
    """Every readable drill report, oldest first (a damaged file is not a record)."""
    if not drills_dir.is_dir():
        return []
    reports = []
    for path in sorted(drills_dir.glob(f"*/{REPORT_JSON}")):
        try:
            reports.append(DrillReport.model_validate(json.loads(path.read_text())))
        except (OSError, ValueError, ValidationError):
            continue
    return sorted(reports, key=lambda r: r.started_at)


def load_report(drills_dir: Path, drill_id: str) -> DrillReport:
    path = drills_dir / drill_id / REPORT_JSON
    if not path.is_file():
        raise FileNotFoundError(f"no drill {drill_id!r} in {drills_dir}/")
    return DrillReport.model_validate_json(path.read_text())

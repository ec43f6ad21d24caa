"""Benchmark: latest-point restore drills on the machines (S8), against the physical floor.

Real components only: the customer's machines booted from the product image (PostgreSQL 17,
pgBackRest 2.55 with the rendered ``pgbackrest.conf``: lz4, ``process-max=2``, bundles with
block incrementals), its repositories in moto behind TLS on the machines' bridge, and the drill
as ``fab dr.drill --latest`` runs it: ``run_drill`` on the machines site, onto a drill machine
booted from the same image for the drill, signed by a drill role of its own.

The machines are booted once; then per pgbench scale (default 50 and 200), on production:
``pgbench -i -s SCALE`` in the product database (beside the product's schema), a full backup
to the copy region (repo2), a light pgbench write load (the database keeps changing, so the
drill's RPO is a real one), the archive timeout and a margin without a WAL switch of ours, then
the drill. The baseline, in the same run and on the same machine, is the physical floor of the
restore: downloading the same backup objects with boto3 through the same TLS endpoint into a
folder on the same disk, with no backup tool (no decompression, no checksums, no manifest), two
and eight at a time, the faster counting; for information also a ``cp -a`` of production's
data directory on this disk.

Targets: restore time / baseline ≤ 1.5; RPO of the latest-point drill ≤ 60 s (our target;
S8 promises 1 h); RTO (drill start, drill machine boot included, to verified service) far
inside S8's 12 h. Output: ``build/bench/restore_drill.json``.

    .venv/bin/python -m bench.restore_drill [--scales 50,200] [--process-max N]
"""

from __future__ import annotations

import argparse
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import FrameType
from typing import Any, Final

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from backups.info import BackupSet, customer_repositories
from backups.pgbackrest import SshPgBackRest
from backups.runs import stanza_info
from bench.common import write_result
from bench.machine_backup import data_directory, tls_s3
from dr.drill import DrillRequest, run_drill
from dr.model import DrillMode
from erpcloud import policy
from erpcloud.cli_common import load_valid_customer
from erpcloud.model import Customer, Environment
from erpcloud.render import PRODUCT_DATABASE
from localtarget import machines, onmachine
from localtarget.drillsite import machines_site
from localtarget.machines import MachineSetState

REPO_ROOT = Path(__file__).resolve().parent.parent
CUSTOMER_ID = "acme-retail"
#: Its own id: its own state folder, buckets and machines, never the tests' acme-retail.
BENCH_ID = "bench-drill"
PRODUCTION = Environment.PRODUCTION
RATIO_TARGET = 1.5
RPO_TARGET_SECONDS = policy.RPO_TARGET.total_seconds()
#: The light write load during the drill: transactions per second (pgbench ``-R``).
LOAD_RATE = 20
LOAD_UNIT: Final = "erpcloud-bench-load"
#: Download concurrencies tried for the baseline; the fastest is the floor.
DOWNLOAD_WORKERS = (2, 8)
#: After the archive timeout, archive-push's own time to reach the bucket.
PUSH_MARGIN_SECONDS = 15
#: Where the baselines write: the disk the drill machines' data volumes are on.
SCRATCH_PARENT = Path("/var/tmp")


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def as_postgres(state: MachineSetState, command: str, timeout: float = 7200) -> str:
    return onmachine.as_root(state, PRODUCTION, f"runuser -u postgres -- {command}", timeout)


def start_load(state: MachineSetState) -> None:
    """A light, steady write load on production: a transient unit (``stop_load`` ends it)."""
    pgbench = f"pgbench -c 1 -R {LOAD_RATE} -T 86400 -n {PRODUCT_DATABASE}"
    onmachine.as_root(
        state,
        PRODUCTION,
        f"systemd-run --quiet --unit={LOAD_UNIT} --uid=postgres --working-directory=/ {pgbench}",
    )


def stop_load(state: MachineSetState) -> None:
    onmachine.as_root(state, PRODUCTION, f"systemctl stop {LOAD_UNIT} || true")


def full_backup_to_copy_region(
    state: MachineSetState, customer: Customer
) -> tuple[BackupSet, float]:
    """pgBackRest on production: a full backup to repo2 only; the set and its seconds."""
    with SshPgBackRest.for_customer(state.ssh_target(PRODUCTION), customer) as runner:
        started = time.monotonic()
        result = runner.run("--repo=2", "--type=full", "backup", timeout=7200)
        seconds = time.monotonic() - started
        if not result.ok:
            raise RuntimeError(f"backup to repo2 failed: {result.stderr[-500:]}")
        return stanza_info(runner, 2).backups_in(2)[-1], seconds


def baseline_download(
    state: MachineSetState, customer: Customer, label: str, into: Path, workers: int
) -> dict[str, Any]:
    """The backup's objects from the copy bucket to disk with boto3, ``workers`` at a time."""
    repo = customer_repositories(customer)[1]
    client = tls_s3(state, repo.region)  # one client: boto3 clients are thread-safe
    prefix = f"pgbackrest/backup/{customer.stanza}/{label}/"
    pages = client.get_paginator("list_objects_v2").paginate(Bucket=repo.bucket, Prefix=prefix)
    keys = [(o["Key"], o["Size"]) for page in pages for o in page.get("Contents", [])]
    for folder in {(into / key[len(prefix) :]).parent for key, _ in keys}:
        folder.mkdir(parents=True, exist_ok=True)

    def fetch(key: str) -> None:
        body = client.get_object(Bucket=repo.bucket, Key=key)["Body"].read()
        (into / key[len(prefix) :]).write_bytes(body)

    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=workers) as pool:
        list(pool.map(fetch, [k for k, _ in keys]))
    seconds = time.monotonic() - started
    shutil.rmtree(into, ignore_errors=True)
    return {"objects": len(keys), "bytes": sum(size for _, size in keys), "seconds": seconds}


def baseline_copy(state: MachineSetState, into: Path) -> float:
    """Production's data directory copied on this disk: writing the bytes, no network."""
    volume, cluster = data_directory(state)
    started = time.monotonic()
    subprocess.run(["cp", "-a", str(volume / cluster), str(into)], check=True, timeout=7200)
    seconds = time.monotonic() - started
    shutil.rmtree(into, ignore_errors=True)
    return seconds


def one_scale(
    state: MachineSetState, customer: Customer, scale: int, root: Path, process_max: int | None
) -> dict[str, Any]:
    log(f"pgbench -i -s {scale} in the product database on production")
    started = time.monotonic()
    as_postgres(state, f"pgbench -i -q -s {scale} {PRODUCT_DATABASE}")
    as_postgres(state, f"psql -XAtq -d {PRODUCT_DATABASE} -c CHECKPOINT")
    init_seconds = time.monotonic() - started
    log("full backup to the copy region (repo2)")
    backup, backup_seconds = full_backup_to_copy_region(state, customer)
    log(f"backup {backup.label}: {backup.size_bytes / 1e6:.0f} MB in {backup_seconds:.0f} s")

    quiet = customer.backup.archive_timeout_seconds + PUSH_MARGIN_SECONDS
    start_load(state)
    try:
        log(f"write load {LOAD_RATE} tps; {quiet} s without a switch of ours, then the drill")
        time.sleep(quiet)
        lines: list[str] = []

        def progress(line: str) -> None:
            lines.append(line)
            log(f"drill: {line}")

        report = run_drill(
            machines_site(customer, root / f"work-{scale}"),
            DrillRequest(mode=DrillMode.LATEST, restore_processes=process_max),
            root / f"drills-{scale}",
            progress=progress,
        )
    finally:
        stop_load(state)
    if not report.passed:
        raise RuntimeError(f"the drill failed at {report.failed_step}: {report.error}")
    ready = next(
        (float(m.group(1)) for m in map(re.compile(r" ready in ([0-9.]+) s").search, lines) if m),
        None,
    )
    log("baselines: the backup's objects with boto3 through the TLS endpoint; cp of the data")
    downloads = [
        baseline_download(state, customer, backup.label, root / "baseline", workers)
        for workers in DOWNLOAD_WORKERS
    ]
    baseline = min(downloads, key=lambda d: d["seconds"])  # the floor: the fastest
    copy_seconds = baseline_copy(state, root / "copy")
    m = report.measures
    assert m.restore_seconds is not None and m.rto_seconds is not None
    assert m.rpo_seconds is not None
    return {
        "pgbench_scale": scale,
        "pgbench_init_seconds": round(init_seconds, 1),
        "database_mb": round(backup.size_bytes / 1e6, 1),
        # What the backup stored: its objects (pgBackRest reports no size for bundled repos).
        "stored_mb": round(baseline["bytes"] / 1e6, 1),
        "backup_to_copy_region_seconds": round(backup_seconds, 1),
        "drill_id": report.drill_id,
        "drill_machine_ready_seconds": ready,
        "rto_seconds": round(m.rto_seconds, 1),
        "restore_seconds": round(m.restore_seconds, 1),
        "recovery_seconds": round(m.recovery_seconds or 0.0, 1),
        "restore_mb_per_second": round(m.throughput_mb_s or 0.0, 1),
        "restore_process_max": process_max or "as configured (process-max=2)",
        "rpo_seconds": round(m.rpo_seconds, 1),
        "archive_timeout_seconds": customer.backup.archive_timeout_seconds,
        "steps": {s.name: round(s.seconds, 1) for s in report.steps},
        "baseline_objects": baseline["objects"],
        "baseline_mb": round(baseline["bytes"] / 1e6, 1),
        "baseline_seconds": round(baseline["seconds"], 1),
        "baseline_mb_per_second": round(baseline["bytes"] / 1e6 / baseline["seconds"], 1),
        "baseline_download_seconds_by_workers": {
            str(w): round(d["seconds"], 1) for w, d in zip(DOWNLOAD_WORKERS, downloads, strict=True)
        },
        "ratio_to_baseline": round(m.restore_seconds / baseline["seconds"], 2),
        "local_copy_of_data_directory_seconds": round(copy_seconds, 1),
        "ratio_to_local_copy": round(m.restore_seconds / copy_seconds, 2),
    }


def judge(scale: int, figures: dict[str, Any]) -> dict[str, Any]:
    return {
        f"ratio_to_baseline_scale_{scale}": {
            "measured": figures["ratio_to_baseline"],
            "max": RATIO_TARGET,
            "met": figures["ratio_to_baseline"] <= RATIO_TARGET,
        },
        f"latest_point_rpo_seconds_scale_{scale}": {
            "measured": figures["rpo_seconds"],
            "max": RPO_TARGET_SECONDS,
            "met": figures["rpo_seconds"] <= RPO_TARGET_SECONDS,
            "promise_s8_seconds": policy.RPO.total_seconds(),
        },
        f"rto_seconds_scale_{scale}": {
            "measured": figures["rto_seconds"],
            "max": policy.RTO.total_seconds(),
            "met": figures["rto_seconds"] <= policy.RTO.total_seconds(),
        },
    }


def _terminate(signum: int, _frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")  # the finally below powers the machines off


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scales", default="50,200", help="Comma-separated pgbench scales.")
    parser.add_argument(
        "--process-max", type=int, default=None, help="Restore processes (default: the config's)."
    )
    options = parser.parse_args()
    signal.signal(signal.SIGTERM, _terminate)
    scales = [int(s) for s in options.scales.split(",") if s.strip()]
    loaded = load_valid_customer(CUSTOMER_ID, REPO_ROOT / "customers", False)
    customer = loaded.model_copy(update={"id": BENCH_ID})
    root = Path(tempfile.mkdtemp(prefix="bench-drill-", dir=SCRATCH_PARENT))
    results: dict[str, Any] = {"customer": CUSTOMER_ID, "run_as_id": BENCH_ID, "site": "machines"}
    targets: dict[str, Any] = {}
    log(f"machines up {BENCH_ID}")
    state = machines.up(customer, progress=lambda line: log(f"  {line}"))
    try:
        for scale in scales:
            figures = one_scale(state, customer, scale, root, options.process_max)
            results[f"scale_{scale}"] = figures
            log(f"scale {scale}: {figures}")
            targets.update(judge(scale, figures))
    finally:
        log(f"machines down {BENCH_ID}")
        machines.down(customer.id)  # drill machines left by a failure go first
        shutil.rmtree(root, ignore_errors=True)
    path = write_result("restore_drill", results, targets)
    log(f"wrote {path}")
    for name, judged in targets.items():
        print(f"  target {name}: {'met' if judged['met'] else 'NOT met'} ({judged})")
    return 0 if all(t["met"] for t in targets.values()) else 1


if __name__ == "__main__":
    sys.exit(main())

"""Benchmark: latest-point restore drills of a generated database (S8), against the physical floor.

Per pgbench scale (default 50 and 200): a local target (PostgreSQL 15, pgBackRest 2.45, moto
behind stunnel, sshd), the product's sample schema plus ``pgbench -i -s SCALE`` in the product
database, a full backup to the copy region, a light pgbench write load (the database keeps
changing, so the drill's RPO is a real one), then ``run_drill`` in latest mode onto a fresh sshd
drill host, exactly as ``fab dr.drill --latest`` runs it. The baseline, in the same run and on
the same machine, is the physical floor of the restore: downloading the same backup objects
with boto3 through the same TLS proxy into a folder on the same disk, with no backup tool (no
decompression, no checksums, no manifest), two and eight at a time (pgBackRest runs
``process-max=2``), the faster counting; for information also a local ``cp -a`` of the data
directory. Output: ``build/bench/restore_drill.json``.

Targets: restore time / baseline ≤ 1.5; RPO of the latest-point drill ≤ 60 s (our target;
S8 promises 1 h); RTO far inside S8's 12 h.

    .venv/bin/python -m bench.restore_drill [--scales 50,200]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from backups.info import customer_repositories
from backups.pgbackrest import LocalPgBackRest, run_checked
from backups.runs import stanza_info
from bench.backup import log, tls_s3, wait_archive_caught_up
from bench.common import write_result
from dr.drill import DrillRequest, run_drill
from dr.model import DrillMode
from erpcloud import policy
from erpcloud.fleet import load_fleet
from erpcloud.model import Customer, SshUser
from erpcloud.render import PRODUCT_DATABASE
from localtarget import sampledata, target
from localtarget.drillsite import local_site
from localtarget.postgres import pg_binary, run_as_postgres
from localtarget.processes import make_state_root, stop_pid
from localtarget.s3 import LocalAws

REPO_ROOT = Path(__file__).resolve().parent.parent
RATIO_TARGET = 1.5
RPO_TARGET_SECONDS = policy.RPO_TARGET.total_seconds()
#: The light write load during the drill: transactions per second (pgbench ``-R``).
LOAD_RATE = 20
#: Download concurrencies tried for the baseline; the fastest is the floor.
DOWNLOAD_WORKERS = (2, 8)


def bench_customer(scale: int) -> Customer:
    base = load_fleet(REPO_ROOT / "customers").customers["acme-retail"]
    tag = f"{os.getpid() % 10000}s{scale}"
    users = [SshUser(name=f"bd{tag}u{i}", keys=u.keys) for i, u in enumerate(base.ssh.users)]
    return base.model_copy(
        update={"id": f"bench-drill-{tag}", "ssh": base.ssh.model_copy(update={"users": users})}
    )


def pgbench_argv(running: target.LocalTarget, *args: str) -> list[str]:
    cluster = running.instance.cluster
    socket = ["-h", str(cluster.socket_dir), "-p", str(cluster.port)]
    return [pg_binary("pgbench"), *socket, *args, PRODUCT_DATABASE]


def start_load(running: target.LocalTarget) -> subprocess.Popen[bytes]:
    """A light, steady write load (stopped by PID when the drill is done)."""
    argv = pgbench_argv(running, "-c", "1", "-R", str(LOAD_RATE), "-T", "86400", "-n")
    return subprocess.Popen(
        argv,
        user="postgres",
        group="postgres",
        extra_groups=[],
        cwd="/",
        env={"PATH": "/usr/bin:/bin"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )


def baseline_download(
    aws: LocalAws, customer: Customer, label: str, into: Path, workers: int
) -> dict[str, Any]:
    """The backup's objects from the copy bucket to disk with boto3, ``workers`` at a time."""
    repo = customer_repositories(customer)[1]
    client = tls_s3(aws, repo.region)  # one client: boto3 clients are thread-safe
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


def baseline_copy(running: target.LocalTarget, into: Path) -> float:
    """The data directory (without pg_wal) copied on this disk: writing the bytes, no network."""
    started = time.monotonic()
    subprocess.run(
        ["cp", "-a", str(running.instance.cluster.data_dir), str(into)], check=True, timeout=7200
    )
    seconds = time.monotonic() - started
    shutil.rmtree(into, ignore_errors=True)
    return seconds


def one_scale(scale: int, root: Path, process_max: int | None = None) -> dict[str, Any]:
    customer = bench_customer(scale)
    running = target.up(customer, progress=lambda line: log(f"local target: {line}"))
    load: subprocess.Popen[bytes] | None = None
    try:
        cluster = running.instance.cluster
        sampledata.create_database(cluster.conninfo())
        sampledata.load_sample_data(cluster.conninfo(PRODUCT_DATABASE), customer)
        log(f"pgbench -i -s {scale} in the product database")
        started = time.monotonic()
        run_as_postgres(
            pgbench_argv(running, "-i", "-s", str(scale), "-q"),
            env={"PATH": "/usr/bin:/bin"},
            timeout=7200,
        )
        init_seconds = time.monotonic() - started
        wait_archive_caught_up(running.instance)
        runner = LocalPgBackRest(running.instance)
        log("full backup to the copy region (repo2)")
        started = time.monotonic()
        run_checked(runner, "--repo=2", "--type=full", "backup", timeout=7200)
        backup_seconds = time.monotonic() - started
        backup = stanza_info(runner, 2).backups_in(2)[-1]
        log(f"backup {backup.label}: {backup.size_bytes / 1e6:.0f} MB in {backup_seconds:.0f} s")

        quiet = customer.backup.archive_timeout_seconds + 15
        load = start_load(running)
        log(f"write load {LOAD_RATE} tps; {quiet} s without a switch of ours, then the drill")
        time.sleep(quiet)
        drills = root / f"drills-{scale}"
        report = run_drill(
            local_site(customer, root / f"work-{scale}"),
            DrillRequest(mode=DrillMode.LATEST, restore_processes=process_max),
            drills,
            progress=lambda line: log(f"drill: {line}"),
        )
        if not report.passed:
            raise RuntimeError(f"the drill failed at {report.failed_step}: {report.error}")
        log("baselines: the backup's objects with boto3 through the TLS proxy; cp of the data")
        downloads = [
            baseline_download(running.aws, customer, backup.label, root / "baseline", workers)
            for workers in DOWNLOAD_WORKERS
        ]
        baseline = min(downloads, key=lambda d: d["seconds"])  # the floor: the fastest
        copy_seconds = baseline_copy(running, root / "copy")
        m = report.measures
        assert m.restore_seconds is not None and m.rto_seconds is not None
        assert m.rpo_seconds is not None
        return {
            "pgbench_scale": scale,
            "pgbench_init_seconds": round(init_seconds, 1),
            "database_mb": round(backup.size_bytes / 1e6, 1),
            "stored_mb": round(backup.repo_size_bytes / 1e6, 1),
            "backup_to_copy_region_seconds": round(backup_seconds, 1),
            "drill_id": report.drill_id,
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
                str(w): round(d["seconds"], 1)
                for w, d in zip(DOWNLOAD_WORKERS, downloads, strict=True)
            },
            "ratio_to_baseline": round(m.restore_seconds / baseline["seconds"], 2),
            "local_copy_of_data_directory_seconds": round(copy_seconds, 1),
            "ratio_to_local_copy": round(m.restore_seconds / copy_seconds, 2),
        }
    finally:
        if load is not None:
            stop_pid(load.pid)
            load.wait(timeout=30)
        target.down(customer.id)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scales", default="50,200", help="Comma-separated pgbench scales.")
    parser.add_argument(
        "--process-max", type=int, default=None, help="Restore processes (default: the config's)."
    )
    options = parser.parse_args()
    scales = [int(s) for s in options.scales.split(",") if s.strip()]
    root = make_state_root("bench-drill-")
    results: dict[str, Any] = {}
    targets: dict[str, Any] = {}
    try:
        for scale in scales:
            figures = one_scale(scale, root, options.process_max)
            results[f"scale_{scale}"] = figures
            log(f"scale {scale}: {figures}")
            targets[f"ratio_to_baseline_scale_{scale}"] = {
                "measured": figures["ratio_to_baseline"],
                "max": RATIO_TARGET,
                "met": figures["ratio_to_baseline"] <= RATIO_TARGET,
            }
            targets[f"latest_point_rpo_seconds_scale_{scale}"] = {
                "measured": figures["rpo_seconds"],
                "max": RPO_TARGET_SECONDS,
                "met": figures["rpo_seconds"] <= RPO_TARGET_SECONDS,
                "promise_s8_seconds": policy.RPO.total_seconds(),
            }
            targets[f"rto_seconds_scale_{scale}"] = {
                "measured": figures["rto_seconds"],
                "max": policy.RTO.total_seconds(),
                "met": figures["rto_seconds"] <= policy.RTO.total_seconds(),
            }
    finally:
        shutil.rmtree(root, ignore_errors=True)
    path = write_result("restore_drill", results, targets)
    log(f"wrote {path}")
    for name, judged in targets.items():
        print(f"  target {name}: {'met' if judged['met'] else 'NOT met'} ({judged})")
    return 0 if all(t["met"] for t in targets.values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())

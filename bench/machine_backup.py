"""Benchmark: backups on the real machines (issue 12): both regions at once, block incrementals.

Real components only: the customer's production machine booted from the product image
(PostgreSQL 17, pgBackRest 2.55, the rendered ``pgbackrest.conf``: lz4, two processes, bundles
with block-level incrementals), its two repositories in moto behind TLS on the machines'
bridge, reached as on AWS: over SSH through the machines' inventory (``run_backups``), signed
by the instance role the metadata stand-in serves.

1. ``pgbench -i -s SCALE`` on production (a database of its own).
2. A full backup to both repositories at once (pgBackRest 2.55 locks per repository), against
   the baseline measured in the same run: the same data directory (``tar``, uncompressed,
   ``pg_wal`` left out as pgBackRest leaves it out) uploaded with boto3 to the two buckets one
   after the other, through the same TLS endpoint. Target: ratio ≤ 1.0.
3. A full backup to the primary repository alone, then 1 % of ``pgbench_accounts`` updated (a
   contiguous range, as a shop's recent orders are) and an incremental backup to the same
   repository. Target: the incremental takes ≤ 10 % of the full's time. The repository bytes
   each added are reported too.
4. The RPO under a write load (S7): the age of the newest archived WAL segment, the older of
   the two repositories' newest uploads counting (listed with boto3), sampled every second,
   max, p95 and median; under a steady full-speed ``pgbench`` load and under a light
   rate-limited one (5 transactions per second, where only ``archive_timeout`` closes the
   segments). Target: max ≤ 60 s for both (``policy.RPO_TARGET``; S8 promises 1 h).

Output: ``build/bench/machine_backup.json``.

    .venv/bin/python -m bench.machine_backup [--scale 400] [--rpo-seconds 120]   # ~15 min, 6 GB
"""

from __future__ import annotations

import argparse
import shlex
import signal
import statistics
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import boto3
from boto3.s3.transfer import TransferConfig

from backups.info import BackupType, customer_repositories
from backups.pgbackrest import SshPgBackRest
from backups.runs import list_backups, run_backups
from bench.common import write_result
from erpcloud import policy
from erpcloud.cli_common import load_valid_customer
from erpcloud.model import Customer, Environment
from localtarget import machine, machines, onmachine
from localtarget.machines import MachineSetState
from localtarget.s3 import EMULATOR_ACCESS_KEY, EMULATOR_SECRET_KEY

REPO_ROOT = Path(__file__).resolve().parent.parent
CUSTOMER_ID = "acme-retail"
#: Its own id: its own state folder, buckets and machines, never the tests' acme-retail.
BENCH_ID = "bench-backup"
PARALLEL_RATIO_TARGET = 1.0
INCREMENTAL_RATIO_TARGET = 0.10
RPO_TARGET_SECONDS = policy.RPO_TARGET.total_seconds()
#: pgbench's options for the two write loads of the RPO measurement.
STEADY_LOAD = ("-c", "2", "-j", "2")
LIGHT_LOAD = ("-c", "1", "-R", "5")
CHANGED_FRACTION = 0.01
PGBENCH_ACCOUNTS_PER_SCALE = 100_000  # pgbench's own constant
PRODUCTION = Environment.PRODUCTION
DATABASE_SIZE = "SELECT pg_database_size(current_database())"
#: A contiguous range of accounts (``aid <= N``), as a shop's recent orders are.
UPDATE_ACCOUNTS = "UPDATE pgbench_accounts SET abalance = abalance + 1 WHERE aid <="


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def as_postgres(state: MachineSetState, command: str, timeout: float = 3600) -> str:
    return onmachine.as_root(state, PRODUCTION, f"runuser -u postgres -- {command}", timeout)


def data_directory(state: MachineSetState) -> tuple[Path, str]:
    """Production's data volume as this host sees it, and the cluster below it."""
    record = state.machines[PRODUCTION]
    return Path(record.directory) / "data", "17/main"


def tls_s3(state: MachineSetState, region: str) -> Any:
    """boto3 through the TLS endpoint the machines' pgBackRest uses (the emulator's own cert)."""
    network = machine.Network(state.network_index)
    return boto3.client(
        "s3",
        region_name=region,
        endpoint_url=f"https://{network.host_address}:{state.aws_tls_port}",
        verify=str(Path(state.root) / "aws" / "tls" / "s3-tls.crt"),
        aws_access_key_id=EMULATOR_ACCESS_KEY,
        aws_secret_access_key=EMULATOR_SECRET_KEY,
    )


def baseline_upload(state: MachineSetState, customer: Customer) -> dict[str, Any]:
    """``tar`` of the data directory to each bucket, one after the other; seconds and bytes."""
    volume, cluster = data_directory(state)
    config = TransferConfig(multipart_chunksize=16 * 2**20, max_concurrency=4)
    seconds: dict[str, float] = {}
    sent = 0
    for repo in customer_repositories(customer):
        s3 = tls_s3(state, repo.region)
        key = "bench/baseline-data.tar"
        started = time.monotonic()
        with subprocess.Popen(
            ["tar", "-C", str(volume), f"--exclude={cluster}/pg_wal/*", "-cf", "-", cluster],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
        ) as tar:
            assert tar.stdout is not None
            s3.upload_fileobj(tar.stdout, repo.bucket, key, Config=config)
        seconds[repo.name] = round(time.monotonic() - started, 2)
        sent = s3.head_object(Bucket=repo.bucket, Key=key)["ContentLength"]
        # The bucket is versioned: remove the version itself, not only hide it.
        for version in s3.list_object_versions(Bucket=repo.bucket, Prefix=key)["Versions"]:
            s3.delete_object(Bucket=repo.bucket, Key=key, VersionId=version["VersionId"])
    total = sum(seconds.values())
    return {"seconds": round(total, 2), "per_bucket": seconds, "bytes_per_bucket": sent}


def timed_backup(
    runner: SshPgBackRest, customer: Customer, backup_type: BackupType, repo: int | None = None
) -> dict[str, Any]:
    """``run_backups`` to both repositories (at once), or pgBackRest to one repository."""
    started = time.monotonic()
    if repo is None:
        run = run_backups(runner, customer, backup_type, progress=lambda m: log(f"  {m}"))
        if not run.ok:
            raise RuntimeError(f"backup failed: {run.repositories}")
    else:
        result = runner.run(f"--repo={repo}", f"--type={backup_type.value}", "backup")
        if not result.ok:
            raise RuntimeError(f"backup to repo{repo} failed: {result.stderr[-500:]}")
    seconds = round(time.monotonic() - started, 2)
    newest = {name: sets[-1] for name, sets in list_backups(runner, customer).items() if sets}
    return {
        "seconds": seconds,
        "backups": {
            name: {
                "label": b.label,
                "type": b.type.value,
                "started": b.started.isoformat(),
                "stopped": b.stopped.isoformat(),
                "repo_delta_bytes": b.repo_delta_bytes,
                "database_bytes": b.size_bytes,
            }
            for name, b in newest.items()
        },
    }


def newest_archived_at(
    state: MachineSetState, customer: Customer, last_key: dict[str, str]
) -> datetime:
    """The older of the two repositories' newest WAL upload times (listing only new keys)."""
    newest: list[datetime] = []
    prefix = f"pgbackrest/archive/{customer.stanza}/"
    for repo in customer_repositories(customer):
        s3 = state.aws_client("s3", repo.region)
        best: datetime | None = None
        pages = s3.get_paginator("list_objects_v2").paginate(
            Bucket=repo.bucket, Prefix=prefix, StartAfter=last_key.get(repo.name, "")
        )
        for page in pages:
            for item in page.get("Contents", []):
                if item["Key"].endswith(".lz4") and ".partial" not in item["Key"]:
                    last_key[repo.name] = max(last_key.get(repo.name, ""), item["Key"])
                    if best is None or item["LastModified"] > best:
                        best = item["LastModified"]
        if best is None:  # nothing new since the last sample: the last one still is the newest
            best = s3.head_object(Bucket=repo.bucket, Key=last_key[repo.name])["LastModified"]
        newest.append(best)
    return min(newest)


def rpo_under_load(
    state: MachineSetState, customer: Customer, seconds: int, load: tuple[str, ...]
) -> dict[str, Any]:
    """pgbench on production for ``seconds`` (after 5 s to settle), the RPO sampled each second."""
    archived = "psql -XAtq -d bench -c 'SELECT archived_count FROM pg_stat_archiver'"
    load_seconds = seconds + 10
    pgbench = f"pgbench -n -T {load_seconds} {shlex.join(load)} bench"
    writer = threading.Thread(
        target=as_postgres, args=(state, pgbench, load_seconds + 120), daemon=True
    )
    before = int(as_postgres(state, archived))
    writer.start()
    time.sleep(5)  # the load reaches its steady state
    last_key: dict[str, str] = {}
    ages: list[float] = []
    next_sample = time.monotonic()
    for _ in range(seconds):
        at = newest_archived_at(state, customer, last_key)
        ages.append((datetime.now(UTC) - at).total_seconds())
        next_sample += 1
        time.sleep(max(0.0, next_sample - time.monotonic()))
    writer.join()
    ordered = sorted(ages)
    return {
        "pgbench_load": " ".join(load),
        "rpo_samples": len(ages),
        "rpo_max_seconds": round(max(ages), 1),
        "rpo_p95_seconds": round(ordered[int(0.95 * (len(ordered) - 1))], 1),
        "rpo_median_seconds": round(statistics.median(ages), 1),
        "segments_archived_during_load": int(as_postgres(state, archived)) - before,
        "archive_timeout_seconds": customer.backup.archive_timeout_seconds,
    }


def _terminate(signum: int, _frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")  # the finally below powers the machines off


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=int, default=400, help="pgbench scale (default 400).")
    parser.add_argument(
        "--rpo-seconds", type=int, default=120, help="RPO samples per load (default 120)."
    )
    options = parser.parse_args()
    signal.signal(signal.SIGTERM, _terminate)
    loaded = load_valid_customer(CUSTOMER_ID, REPO_ROOT / "customers", False)
    customer = loaded.model_copy(update={"id": BENCH_ID})
    figures: dict[str, Any] = {"customer": CUSTOMER_ID, "run_as_id": BENCH_ID}
    log(f"machines up {BENCH_ID}")
    state = machines.up(customer, progress=lambda m: log(f"  {m}"))
    try:
        log(f"pgbench -i -s {options.scale} on production")
        as_postgres(state, "createdb bench")
        as_postgres(state, f"pgbench -i -q -s {options.scale} bench")
        as_postgres(state, "psql -XAtq -d bench -c CHECKPOINT")
        size = as_postgres(state, f"psql -XAtq -d bench -c {shlex.quote(DATABASE_SIZE)}")
        figures["scale"] = options.scale
        figures["database_bytes"] = int(size)
        with SshPgBackRest.for_customer(state.ssh_target(PRODUCTION), customer) as runner:
            log("full backup to both repositories at once")
            figures["full_both_at_once"] = timed_backup(runner, customer, BackupType.FULL)
            log("baseline: tar of the data directory to each bucket, one after the other")
            figures["baseline_upload_one_after_the_other"] = baseline_upload(state, customer)
            log("full backup to repo1 alone")
            figures["full_repo1"] = timed_backup(runner, customer, BackupType.FULL, repo=1)
            changed = int(options.scale * PGBENCH_ACCOUNTS_PER_SCALE * CHANGED_FRACTION)
            log(f"updating {changed} rows of pgbench_accounts (1 %), then CHECKPOINT")
            update = f"{UPDATE_ACCOUNTS} {changed}"
            as_postgres(state, f"psql -XAtq -d bench -c {shlex.quote(update)} -c CHECKPOINT")
            log("incremental backup to repo1 (block-level)")
            figures["incremental_repo1"] = timed_backup(runner, customer, BackupType.INCR, repo=1)
            figures["changed_rows"] = changed
        log(f"RPO under a steady pgbench load for {options.rpo_seconds} s")
        figures["rpo_steady_load"] = rpo_under_load(
            state, customer, options.rpo_seconds, STEADY_LOAD
        )
        log(f"RPO under a light load for {options.rpo_seconds} s (archive_timeout ships WAL)")
        figures["rpo_light_load"] = rpo_under_load(state, customer, options.rpo_seconds, LIGHT_LOAD)
    finally:
        log(f"machines down {BENCH_ID}")
        machines.down(customer.id)

    both = figures["full_both_at_once"]["seconds"]
    baseline = figures["baseline_upload_one_after_the_other"]["seconds"]
    full1 = figures["full_repo1"]["seconds"]
    incr1 = figures["incremental_repo1"]["seconds"]
    parallel_ratio = round(both / baseline, 3)
    incremental_ratio = round(incr1 / full1, 3)
    targets = {
        "full_both_regions_vs_raw_upload_one_after_the_other": {
            "measured": parallel_ratio,
            "max": PARALLEL_RATIO_TARGET,
            "seconds": both,
            "baseline_seconds": baseline,
            "met": parallel_ratio <= PARALLEL_RATIO_TARGET,
        },
        "block_incremental_after_1pct_vs_full": {
            "measured": incremental_ratio,
            "max": INCREMENTAL_RATIO_TARGET,
            "seconds": incr1,
            "full_seconds": full1,
            "repo_bytes_added": figures["incremental_repo1"]["backups"]["repo1"][
                "repo_delta_bytes"
            ],
            "full_repo_bytes_added": figures["full_repo1"]["backups"]["repo1"]["repo_delta_bytes"],
            "met": incremental_ratio <= INCREMENTAL_RATIO_TARGET,
        },
    }
    for load in ("rpo_steady_load", "rpo_light_load"):
        worst = figures[load]["rpo_max_seconds"]
        targets[f"{load}_max_seconds"] = {
            "measured": worst,
            "max": RPO_TARGET_SECONDS,
            "p95": figures[load]["rpo_p95_seconds"],
            "promise_s8_seconds": policy.RPO.total_seconds(),
            "met": worst <= RPO_TARGET_SECONDS,
        }
    path = write_result("machine_backup", figures, targets)
    for name, judged in targets.items():
        verdict = "met" if judged["met"] else "NOT met"
        log(f"{name}: {judged['measured']} (max {judged['max']}) {verdict}")
    log(f"wrote {path}")
    return 0 if all(t["met"] for t in targets.values()) else 1


if __name__ == "__main__":
    sys.exit(main())

"""Benchmark: a full base backup of pgbench scale 50 to both repositories, and the RPO under load.

Real components only: PostgreSQL 15 configured by the rendered files, pgBackRest 2.45 pushing to
moto through stunnel, both regions' buckets. The baseline, measured in the same run on the same
data directory, is the naive copy: ``tar`` of the data directory streamed with boto3 to the same
two buckets through the same TLS proxy. Figures: seconds and MB/s of each, the ratio to the
baseline, and the RPO under a steady pgbench write load: the age of the newest archived WAL
segment (the newer of the two repositories' newest is not enough: the older counts), sampled
every second for two minutes, max and p95, under a steady full-speed load and under a light
rate-limited one (where `archive_timeout` closes the segments). Output: ``build/bench/backup.json``.

Targets: ratio ≤ 1.2; RPO max ≤ 60 s (S7/S8: far inside the 1 h of S8).

    .venv/bin/python bench/backup.py [--scale 50] [--rpo-seconds 120]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import threading
import time
import warnings
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import boto3
from boto3.s3.transfer import TransferConfig

from backups.info import BackupType, customer_repositories
from backups.pgbackrest import LocalPgBackRest
from backups.runs import run_backups
from bench.common import write_result
from erpcloud import policy
from erpcloud.fleet import load_fleet
from localtarget.instance import LocalInstance, create_buckets
from localtarget.postgres import pg_binary, run_as_postgres
from localtarget.processes import LOOPBACK, make_state_root
from localtarget.s3 import EMULATOR_ACCESS_KEY, EMULATOR_SECRET_KEY, LocalAws

REPO_ROOT = Path(__file__).resolve().parent.parent
RATIO_TARGET = 1.2
RPO_TARGET_SECONDS = policy.RPO_TARGET.total_seconds()


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def pgbench(instance: LocalInstance, *args: str, timeout: float = 3600) -> None:
    cluster = instance.cluster
    argv = [pg_binary("pgbench"), "-h", str(cluster.socket_dir), "-p", str(cluster.port), *args]
    run_as_postgres([*argv, "postgres"], env={"PATH": "/usr/bin:/bin"}, timeout=timeout)


def wait_archive_caught_up(instance: LocalInstance, timeout: float = 1800) -> float:
    """Until every finished segment is archived (the init's WAL must not slow the backup)."""
    started = time.monotonic()
    instance.switch_wal_and_wait(timeout)
    return time.monotonic() - started


def tls_s3(aws: LocalAws, region: str) -> Any:
    """boto3 through stunnel's TLS port: the path pgBackRest takes to the emulator."""
    warnings.filterwarnings("ignore", message="Unverified HTTPS request")
    return boto3.client(
        "s3",
        region_name=region,
        endpoint_url=f"https://{LOOPBACK}:{aws.tls_port}",
        verify=False,
        aws_access_key_id=EMULATOR_ACCESS_KEY,
        aws_secret_access_key=EMULATOR_SECRET_KEY,
    )


def baseline_tar_upload(aws: LocalAws, instance: LocalInstance) -> dict[str, float]:
    """``tar`` of the data directory, streamed to each bucket; the objects are removed after."""
    seconds: dict[str, float] = {}
    config = TransferConfig(multipart_chunksize=16 * 1024 * 1024, max_concurrency=4)
    for repo in customer_repositories(instance.customer):
        client = tls_s3(aws, repo.region)
        started = time.monotonic()
        tar = subprocess.Popen(
            # pg_wal's files are not part of a base backup either: the archive holds the WAL.
            ["tar", "-cf", "-", "--exclude=./pg_wal/*", "-C", str(instance.cluster.data_dir), "."],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
        )
        assert tar.stdout is not None
        client.upload_fileobj(tar.stdout, repo.bucket, "baseline/pgdata.tar", Config=config)
        tar.wait()
        seconds[repo.name] = time.monotonic() - started
        client.delete_object(Bucket=repo.bucket, Key="baseline/pgdata.tar")
    return seconds


def newest_archived_at(
    aws: LocalAws, instance: LocalInstance, last_key: dict[str, str]
) -> datetime:
    """The older of the two repositories' newest WAL upload times (listing only new keys)."""
    newest: list[datetime] = []
    stanza = instance.customer.stanza
    for repo in customer_repositories(instance.customer):
        client = aws.client("s3", repo.region)
        prefix = f"pgbackrest/archive/{stanza}/"
        best: datetime | None = None
        paginator = client.get_paginator("list_objects_v2")
        pages = paginator.paginate(
            Bucket=repo.bucket, Prefix=prefix, StartAfter=last_key.get(repo.name, "")
        )
        for page in pages:
            for item in page.get("Contents", []):
                if item["Key"].endswith(".lz4") and ".partial" not in item["Key"]:
                    last_key[repo.name] = max(last_key.get(repo.name, ""), item["Key"])
                    if best is None or item["LastModified"] > best:
                        best = item["LastModified"]
        if best is None:  # nothing new since the last sample: the last one still is the newest
            item = client.head_object(Bucket=repo.bucket, Key=last_key[repo.name])
            best = item["LastModified"]
        newest.append(best)
    return min(newest)


def rpo_under_load(
    aws: LocalAws, instance: LocalInstance, seconds: int, load_args: tuple[str, ...]
) -> dict[str, Any]:
    load_seconds = seconds + 15
    load = threading.Thread(
        target=pgbench,
        args=(instance, *load_args, "-T", str(load_seconds), "-n"),
        kwargs={"timeout": load_seconds + 120},
        daemon=True,
    )
    before = int(instance.cluster.psql("SELECT archived_count FROM pg_stat_archiver"))
    load.start()
    time.sleep(5)  # the load reaches its steady state
    last_key: dict[str, str] = {}
    ages: list[float] = []
    next_sample = time.monotonic()
    for _ in range(seconds):
        ages.append(
            (datetime.now(UTC) - newest_archived_at(aws, instance, last_key)).total_seconds()
        )
        next_sample += 1
        time.sleep(max(0.0, next_sample - time.monotonic()))
    load.join()
    archived = int(instance.cluster.psql("SELECT archived_count FROM pg_stat_archiver")) - before
    ordered = sorted(ages)
    return {
        "pgbench_load": " ".join(load_args),
        "rpo_samples": len(ages),
        "rpo_max_seconds": round(max(ages), 1),
        "rpo_p95_seconds": round(ordered[int(0.95 * (len(ordered) - 1))], 1),
        "rpo_median_seconds": round(statistics.median(ages), 1),
        "segments_archived_during_load": archived,
        "archive_timeout_seconds": instance.customer.backup.archive_timeout_seconds,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=int, default=50)
    parser.add_argument("--rpo-seconds", type=int, default=120)
    options = parser.parse_args()

    fleet = load_fleet(REPO_ROOT / "customers")
    customer = fleet.customers["acme-retail"].model_copy(update={"id": "bench-backup"})
    root = make_state_root("bench-backup-")
    aws = LocalAws(root / "aws")
    instance: LocalInstance | None = None
    try:
        aws.start()
        create_buckets(aws, customer)
        instance = LocalInstance.create(customer, root / "instance", aws)
        instance.start()
        instance.pgbackrest("stanza-create")
        log(f"pgbench -i -s {options.scale}")
        started = time.monotonic()
        pgbench(instance, "-i", "-s", str(options.scale), "-q")
        init_seconds = time.monotonic() - started
        caught_up = wait_archive_caught_up(instance)
        instance.cluster.psql("CHECKPOINT")
        data_mb = int(instance.cluster.psql("SELECT pg_database_size('postgres')")) / 1e6
        du = subprocess.run(
            ["du", "-sb", "--exclude=pg_wal", str(instance.cluster.data_dir)],
            capture_output=True,
            text=True,
            check=True,
        )
        data_dir_mb = int(du.stdout.split()[0]) / 1e6
        log(f"data directory {data_dir_mb:.0f} MB without pg_wal (database {data_mb:.0f} MB)")

        run = run_backups(LocalPgBackRest(instance), customer, BackupType.FULL, log)
        if not run.ok:
            raise RuntimeError(f"backup failed: {[r.error for r in run.repositories]}")
        backup_seconds = {r.repo.name: r.seconds for r in run.repositories}
        log(f"backup {backup_seconds}; baseline: tar streamed to both buckets with boto3")
        baseline_seconds = baseline_tar_upload(aws, instance)
        log(f"baseline {baseline_seconds}; RPO under pgbench load for {options.rpo_seconds} s")
        rpo = rpo_under_load(aws, instance, options.rpo_seconds, ("-c", "2", "-j", "2"))
        log(f"RPO {rpo}; again under a light load (archive_timeout closes the segments)")
        light = rpo_under_load(aws, instance, options.rpo_seconds, ("-c", "1", "-R", "5"))

        backup_total = sum(backup_seconds.values())
        baseline_total = sum(baseline_seconds.values())
        figures = {
            "pgbench_scale": options.scale,
            "pgbench_init_seconds": round(init_seconds, 1),
            "archive_catch_up_after_init_seconds": round(caught_up, 1),
            "data_directory_mb_without_pg_wal": round(data_dir_mb, 1),
            "database_mb": round(data_mb, 1),
            "backup_seconds": {k: round(v, 1) for k, v in backup_seconds.items()},
            "backup_seconds_total": round(backup_total, 1),
            "backup_mb_per_second": round(2 * data_dir_mb / backup_total, 1),
            "baseline_seconds": {k: round(v, 1) for k, v in baseline_seconds.items()},
            "baseline_seconds_total": round(baseline_total, 1),
            "baseline_mb_per_second": round(2 * data_dir_mb / baseline_total, 1),
            "ratio_to_baseline": round(backup_total / baseline_total, 2),
            **rpo,
            "light_load": light,
        }
        targets = {
            "ratio_to_baseline": {
                "measured": figures["ratio_to_baseline"],
                "max": RATIO_TARGET,
                "met": figures["ratio_to_baseline"] <= RATIO_TARGET,
            },
            "rpo_max_seconds": {
                "measured": rpo["rpo_max_seconds"],
                "max": RPO_TARGET_SECONDS,
                "met": rpo["rpo_max_seconds"] <= RPO_TARGET_SECONDS,
                "promise_s8_seconds": policy.RPO.total_seconds(),
            },
            "light_load_rpo_max_seconds": {
                "measured": light["rpo_max_seconds"],
                "max": RPO_TARGET_SECONDS,
                "met": light["rpo_max_seconds"] <= RPO_TARGET_SECONDS,
            },
        }
        path = write_result("backup", figures, targets)
        log(f"wrote {path}")
        for name, value in figures.items():
            print(f"  {name}: {value}")
        for name, target in targets.items():
            print(f"  target {name}: {'met' if target['met'] else 'NOT met'} ({target})")
        return 0
    finally:
        if instance is not None:
            instance.stop()
        aws.stop()
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())

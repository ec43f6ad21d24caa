"""Benchmark: one no-op-plus-health-check change over N machines, at several concurrencies.

Boots up to 20 machines from the product image at once (:mod:`localtarget.fleet`: each its own
host keys, pinned from its console, and the operations login), then runs the maintenance runner
(pinned keys, pre-checks, one ``sudo -n bash -c`` chain per step, post-checks, run state written
after every host) over N = 5, 10, 20 of them at concurrency 1, 5, 10, with the production
layout (``host_root`` ``/``). The baseline, measured in the same run, is a bare pinned
connection plus one command per machine. Output: ``build/bench/maintenance_fleet.json``.

Targets: per-host time (the runner's overhead for a change that does nothing) under 2 s, and a
model showing 200 hosts within one maintenance window (S11) at the policy's concurrency.

    .venv/bin/python bench/maintenance_fleet.py [--sizes 5,10,20] [--concurrency 1,5,10]
"""

from __future__ import annotations

import argparse
import math
import shutil
import statistics
import sys
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import yaml

from bench.common import write_result
from erpcloud import policy
from erpcloud.fleet import load_fleet
from erpcloud.inventory import load_inventory, write_known_hosts
from erpcloud.model import Customer, Environment
from erpcloud.ssh import connect, run
from localtarget.fleet import Fleet, boot_fleet, write_inventory
from localtarget.processes import make_state_root
from maintenance.change import load_change
from maintenance.records import HostStatus, RunStore
from maintenance.rules import check_change
from maintenance.runner import RunInputs, RunOptions, apply_change, utc_now

FLEET_TARGET_HOSTS = 200
PER_HOST_TARGET_SECONDS = 2.0


def synthetic_fleet(count: int) -> dict[str, Customer]:
    """``count`` customers shaped like a sample customer (one production host each)."""
    template = load_fleet(Path("customers")).customers["northwind-trading"]
    return {
        f"bench-{n:03d}": template.model_copy(update={"id": f"bench-{n:03d}"}) for n in range(count)
    }


def write_change(folder: Path, customers: list[str]) -> Path:
    now = utc_now()
    path = folder / "bench-noop.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "id": "bench-noop",
                "kind": "emergency",
                "reason": "stability",
                "summary": "Benchmark: nothing changes.",
                "window": {
                    "starts_at": (now - timedelta(minutes=1)).isoformat(),
                    "duration_minutes": 600,
                },
                "expected_downtime_minutes": 0,
                "targets": {"customers": customers, "environments": ["production"]},
                "steps": [{"op": "noop"}, {"op": "health_check"}],
                "announced_at": (now - timedelta(minutes=90)).isoformat(),
            }
        )
    )
    return path


def baseline(inputs: RunInputs, known_hosts: Path) -> float:
    """Seconds per host for a bare pinned connection and one command, sequentially."""
    times = []
    for host in inputs.inventory.hosts:
        began = time.perf_counter()
        connection = connect(inputs.inventory.target(host, known_hosts))
        run(connection, "true")
        connection.close()
        times.append(time.perf_counter() - began)
    return statistics.mean(times)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="5,10,20")
    parser.add_argument("--concurrency", default="1,5,10")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    concurrencies = [int(c) for c in args.concurrency.split(",")]
    root = make_state_root("bench-maintenance-")
    fleet: Fleet | None = None
    try:
        template = load_fleet(Path("customers")).customers["northwind-trading"]
        print(f"booting {max(sizes)} machines ...", flush=True)
        began = time.perf_counter()
        fleet = boot_fleet([f"b{n}" for n in range(max(sizes))], template.product_version)
        boot_seconds = time.perf_counter() - began
        print(f"{max(sizes)} machines ready in {boot_seconds:.1f} s", flush=True)
        customers = synthetic_fleet(max(sizes))
        ids = sorted(customers)
        runs: list[dict[str, Any]] = []
        baselines: dict[int, float] = {}
        for size in sizes:
            folder = root / f"n{size}"
            folder.mkdir()
            hosts = [fleet.host(f"b{n}", ids[n], Environment.PRODUCTION) for n in range(size)]
            inventory_path = write_inventory(folder / "inventory.yaml", hosts, fleet.key_file)
            chosen = {cid: customers[cid] for cid in ids[:size]}
            store = RunStore(folder / "runs")
            change = write_change(folder, ids[:size])
            inputs = RunInputs(
                check=check_change(load_change(change), chosen, [], store),
                inventory=load_inventory(inventory_path, chosen),
                customers=chosen,
                store=store,
                notices_dir=folder / "notices",
            )
            baselines[size] = baseline(inputs, write_known_hosts(inputs.inventory, folder / "kh"))
            for concurrency in concurrencies:
                began = time.perf_counter()
                state = apply_change(
                    inputs,
                    RunOptions(wave_size=size, concurrency=concurrency, max_errors=size),
                )
                wall = time.perf_counter() - began
                done = state.count(HostStatus.DONE)
                per_host = statistics.mean(h.seconds for h in state.hosts.values())
                runs.append(
                    {
                        "hosts": size,
                        "concurrency": concurrency,
                        "done": done,
                        "wall_seconds": round(wall, 3),
                        "per_host_seconds_mean": round(per_host, 3),
                        "per_host_seconds_max": round(
                            max(h.seconds for h in state.hosts.values()), 3
                        ),
                        "wall_per_host_seconds": round(wall / size, 3),
                        "ratio_to_bare_ssh": round(per_host / baselines[size], 2),
                    }
                )
                print(
                    f"N={size:3d} c={concurrency:2d}: {done}/{size} done, wall {wall:6.2f} s, "
                    f"per host {per_host:.2f} s ({per_host / baselines[size]:.1f}x bare ssh)",
                    flush=True,
                )
        window = policy.MAINTENANCE_WINDOW.total_seconds()
        largest = max(sizes)
        model = {}
        for row in (r for r in runs if r["hosts"] == largest):
            # Waves of the policy's size run one after another; within a wave, `concurrency`
            # hosts at once. Scale the measured wall time per host to the target fleet.
            predicted = row["wall_seconds"] / largest * FLEET_TARGET_HOSTS
            per_slot = window * row["concurrency"] / FLEET_TARGET_HOSTS
            model[str(row["concurrency"])] = {
                "predicted_wall_seconds_for_200_hosts": round(predicted, 1),
                "fits_one_window": predicted < window,
                # What a real step may take per host and still fit 200 hosts in the window.
                "step_budget_seconds_per_host": round(per_slot - row["per_host_seconds_mean"], 1),
            }
        worst = max(r["per_host_seconds_mean"] for r in runs)
        policy_row = (
            model.get(str(policy.MAINTENANCE_CONCURRENCY)) or model[str(max(concurrencies))]
        )
        figures = {
            "runs": runs,
            "baseline_bare_ssh_seconds_per_host": {
                str(k): round(v, 3) for k, v in baselines.items()
            },
            "model_200_hosts": model,
            "fleet_boot_seconds": {"machines": max(sizes), "seconds": round(boot_seconds, 1)},
            "window_seconds": window,
            "waves_for_200_hosts": math.ceil(FLEET_TARGET_HOSTS / policy.MAINTENANCE_WAVE_SIZE),
        }
        targets = {
            "per_host_overhead_seconds": {
                "target": f"< {PER_HOST_TARGET_SECONDS}",
                "measured_worst_mean": worst,
                "met": worst < PER_HOST_TARGET_SECONDS,
            },
            "200_hosts_in_one_window": {
                "target": f"< {window:.0f} s at concurrency {policy.MAINTENANCE_CONCURRENCY}",
                "predicted_seconds": policy_row["predicted_wall_seconds_for_200_hosts"],
                "met": policy_row["fits_one_window"],
            },
        }
        path = write_result("maintenance_fleet", figures, targets)
        print(f"wrote {path}")
        return 0 if all(t["met"] for t in targets.values()) else 1
    finally:
        if fleet is not None:
            fleet.teardown()
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())

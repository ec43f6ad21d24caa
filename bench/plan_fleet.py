"""Benchmark: plan a fleet of N generated customers offline (N = 1, 50, 200).

Each customer is a separate run of the real program under the recording engine (its own
stack, as `pulumi up` would run one stack per customer). Figures: seconds per fleet size in one
process, milliseconds per customer, the ratio of the 200-customer time to 200 times the
one-customer time measured in the same run (1.0 = linear; the one-customer time is the median
of five single plans), and the largest fleet again split over two worker processes, as plans
of independent stacks run in parallel (DESIGN.md). Target: 200 customers in under 60 s on a
2-core machine.

    .venv/bin/python bench/plan_fleet.py [--sizes 1,50,200] [--workers 2]
"""

from __future__ import annotations

import argparse
import copy
import multiprocessing
import statistics
import sys
import time
import warnings
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.common import write_result  # noqa: E402
from erpcloud import policy  # noqa: E402
from erpcloud.fleet import parse_customer  # noqa: E402
from erpcloud.model import Customer  # noqa: E402

TARGET_SECONDS_FOR_200 = 60.0
#: Production types the generated fleet cycles through (all sold for production, S1).
TYPES = sorted(name for name, t in policy.INSTANCE_TYPES.items() if t.production)


def generated_fleet(count: int) -> list[Customer]:
    """``count`` valid customers made from the acme sample: own ids, prefixes, sizes, regions."""
    template = yaml.safe_load((ROOT / "customers" / "acme-retail.yaml").read_text())
    regions = sorted(policy.DEFAULT_REGIONS)
    customers = []
    for index in range(count):
        document: dict[str, Any] = copy.deepcopy(template)
        region = regions[index % len(regions)]
        document["id"] = f"bench-{index:04d}"
        document["prefix"] = f"bench{index:04d}"
        document["region"] = region
        document["partner"] = {
            "id": "bench-partner",
            "zone": "EU" if region.startswith("eu") else "US",
        }
        document["production"] = {
            "instance_type": TYPES[index % len(TYPES)],
            "data_volume_gib": 100 + index,
            "max_data_volume_gib": 400 + 4 * index if index % 2 == 0 else None,
        }
        if document["production"]["max_data_volume_gib"] is None:
            del document["production"]["max_data_volume_gib"]
        customers.append(parse_customer(document, f"{document['id']}.yaml"))
    return customers


def plan_all(customers: list[Customer]) -> tuple[float, int]:
    from stacks.plan import plan_customer

    started = time.perf_counter()
    resources = 0
    for customer in customers:
        resources += len(plan_customer(customer).resources)
    return time.perf_counter() - started, resources


def plan_in_workers(customers: list[Customer], workers: int) -> float:
    """Wall time to plan ``customers`` split over ``workers`` fresh processes (imports included)."""
    chunks = [customers[index::workers] for index in range(workers)]
    context = multiprocessing.get_context("spawn")
    started = time.perf_counter()
    with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
        results = list(pool.map(_worker, chunks))
    elapsed = time.perf_counter() - started
    assert sum(count for _, count in results) > 0
    return elapsed


def _worker(customers: list[Customer]) -> tuple[float, int]:
    warnings.simplefilter("ignore", DeprecationWarning)
    return plan_all(customers)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1,50,200", help="fleet sizes, comma-separated")
    parser.add_argument("--workers", type=int, default=2, help="processes for the parallel run")
    arguments = parser.parse_args()
    sizes = [int(s) for s in arguments.sizes.split(",")]
    warnings.simplefilter("ignore", DeprecationWarning)

    started = time.perf_counter()
    fleet = generated_fleet(max(sizes))
    generate_seconds = time.perf_counter() - started
    plan_all(fleet[:1])  # warm-up: imports the Pulumi modules once, as a CLI run would

    figures: dict[str, Any] = {"generate_seconds": round(generate_seconds, 2)}
    for size in sizes:
        if size == 1:
            seconds = statistics.median(plan_all(fleet[i : i + 1])[0] for i in range(5))
            resources = plan_all(fleet[:1])[1]
        else:
            seconds, resources = plan_all(fleet[:size])
        figures[f"n{size}_seconds"] = round(seconds, 3)
        figures[f"n{size}_ms_per_customer"] = round(1000 * seconds / size, 1)
        figures[f"n{size}_resources"] = resources
        print(
            f"N={size}: {seconds:.1f} s, {1000 * seconds / size:.0f} ms per customer, "
            f"{resources} resources"
        )
    largest = max(sizes)
    if 1 in sizes and largest > 1:
        figures[f"ratio_n{largest}_to_{largest}x_n1"] = round(
            figures[f"n{largest}_seconds"] / (largest * figures["n1_seconds"]), 2
        )
    parallel = plan_in_workers(fleet[:largest], arguments.workers)
    figures[f"n{largest}_seconds_{arguments.workers}_workers"] = round(parallel, 2)
    print(f"N={largest} in {arguments.workers} worker processes: {parallel:.1f} s")
    targets: dict[str, Any] = {}
    if largest == 200:
        best = min(figures["n200_seconds"], parallel)
        targets["n200_under_60s"] = {
            "limit_seconds": TARGET_SECONDS_FOR_200,
            "best_seconds": round(best, 2),
            "met": best < TARGET_SECONDS_FOR_200,
        }
    path = write_result("plan_fleet", figures, targets)
    print(f"written {path}")


if __name__ == "__main__":
    main()

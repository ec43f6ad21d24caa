"""Shared by the benchmarks: where results go and how they are written.

Each benchmark measures its subject and a baseline in the same run and reports ratios (or
counts), so that a figure holds on a noisy machine. One JSON file per benchmark lands in
``build/bench/``; ``make bench`` prints the summary table from them.
"""

from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path
from typing import Any

RESULTS_DIR = Path("build/bench")


def write_result(name: str, figures: dict[str, Any], targets: dict[str, Any]) -> Path:
    """Write ``build/bench/<name>.json`` with the figures, the targets and whether each is met.

    ``targets`` maps a target's name to ``{"met": bool, ...}`` with the measured figure and the
    bound it was judged against; ``bench/summary.py`` tabulates them.
    """
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    document = {
        "benchmark": name,
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": {"python": platform.python_version(), "cpus": _cpus()},
        "figures": figures,
        "targets": targets,
    }
    path = RESULTS_DIR / f"{name}.json"
    path.write_text(json.dumps(document, indent=2) + "\n")
    return path


def _cpus() -> int:
    return len(os.sched_getaffinity(0))

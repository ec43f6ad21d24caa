"""`make bench`'s last step: one table of every benchmark's targets, met or not.

Reads the JSON files the benchmarks wrote in ``build/bench/`` (each target a mapping with a
``met`` flag and the figures it was judged on) and writes ``build/bench/summary.json`` and
``summary.md`` beside them. Exit code 1 when a target is not met, or a benchmark left no file.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from bench.common import RESULTS_DIR

#: The benchmarks `make bench` runs; each must have left its JSON file.
EXPECTED = (
    "plan_fleet",
    "maintenance_fleet",
    "restore_drill",
    "local_machines",
    "machine_backup",
)


def collect(results_dir: Path = RESULTS_DIR) -> list[dict[str, Any]]:
    rows = []
    for name in EXPECTED:
        path = results_dir / f"{name}.json"
        if not path.exists():
            rows.append({"benchmark": name, "target": "-", "met": False, "figures": "no result"})
            continue
        document = json.loads(path.read_text())
        for target, judged in document["targets"].items():
            figures = {k: v for k, v in judged.items() if k != "met"}
            rows.append(
                {
                    "benchmark": name,
                    "target": target,
                    "met": bool(judged["met"]),
                    "figures": figures,
                    "measured_at": document.get("measured_at"),
                }
            )
    return rows


def markdown(rows: list[dict[str, Any]]) -> str:
    lines = ["| benchmark | target | met | figures |", "| --- | --- | --- | --- |"]
    for row in rows:
        figures = row["figures"]
        text = (
            figures
            if isinstance(figures, str)
            else ", ".join(f"{k}={v}" for k, v in figures.items())
        )
        lines.append(
            f"| {row['benchmark']} | {row['target']} | {'yes' if row['met'] else 'NO'} | {text} |"
        )
    return "\n".join(lines) + "\n"


def main() -> int:
    rows = collect()
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    (RESULTS_DIR / "summary.json").write_text(json.dumps(rows, indent=2) + "\n")
    table = markdown(rows)
    (RESULTS_DIR / "summary.md").write_text(table)
    sys.stdout.write(table)
    return 0 if all(row["met"] for row in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())

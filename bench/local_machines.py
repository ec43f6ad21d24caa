"""Benchmark: the local target's real machines (issue 12): image builds, boot to ready.

Real components only: ``debootstrap`` and ``systemd-nspawn`` build the product image
(:mod:`localtarget.image`), ``systemd-nspawn --boot`` runs the machines
(:mod:`localtarget.machine`), readiness is what an operator checks (console host keys pinned,
then over SSH cloud-init done and no failed unit). Figures:

1. the image built cold, into a fresh cache folder under ``/var/tmp`` (removed afterwards): the
   parent layer (``debootstrap``, then its configuration) and the product layer (the copy of the
   parent, then every build step), split by the times of the build's progress messages;
   ``--skip-cold`` leaves it out (about two minutes);
2. the image again from the default cache (``IMAGE_CACHE``): it must be a cache hit;
3. ``machines.up`` of acme-retail, both machines ready from a warm cache, then ``down``; the
   phases from the times of ``up``'s progress messages. The customer runs under the id
   ``bench-acme-retail`` (its own state folder, buckets and instance ids), so a test run on the
   same host with acme-retail's machines is never touched;
4. one drill machine: the product image with a minimal user-data (only the operations user,
   ``manage_etc_hosts``), on a network of its own, from boot start to ``check_ready`` done.

Targets, absolute bounds the issue sets (not ratios against a baseline: there is no naive
equivalent of booting a machine), judged on the worst of the repetitions: both machines ready
≤ 60 s; the drill machine ready ≤ 15 s; the warm build a cache hit.
Output: ``build/bench/local_machines.json``.

    .venv/bin/python -m bench.local_machines [--skip-cold] [--repeat 3]
"""

from __future__ import annotations

import argparse
import contextlib
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from types import FrameType
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import write_result
from erpcloud import policy
from erpcloud.cli_common import load_valid_customer
from erpcloud.model import Customer
from erpcloud.ssh import SshTarget
from localtarget import machine, machines
from localtarget.drillmachine import drill_user_data
from localtarget.image import IMAGE_CACHE, ImageInfo, build_image
from localtarget.keys import generate_keypair
from localtarget.processes import make_state_root

REPO_ROOT = Path(__file__).resolve().parent.parent
CUSTOMER_ID = "acme-retail"
#: The id the customer runs under here: its own state folder, never the tests' acme-retail.
BENCH_ID = "bench-acme-retail"
BOTH_READY_TARGET_SECONDS = 60.0
DRILL_READY_TARGET_SECONDS = 15.0
READY_TIMEOUT_SECONDS = 240.0
COLD_CACHE_PARENT = Path("/var/tmp")
ABSOLUTE = "absolute bound (issue 12), not a ratio against a baseline"


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


class Timeline:
    """A progress callback that keeps each message with its time since ``start``."""

    def __init__(self, echo: bool = True) -> None:
        self.started = time.monotonic()
        self.events: list[tuple[float, str]] = []
        self.echo = echo

    def __call__(self, message: str) -> None:
        self.events.append((time.monotonic() - self.started, message))
        if self.echo:
            log(f"  {message}")

    def at(self, prefix: str) -> float:
        """Seconds from the start to the first message starting with ``prefix``."""
        for offset, message in self.events:
            if message.startswith(prefix):
                return offset
        raise KeyError(f"no progress message {prefix!r} (got {[m for _, m in self.events]})")

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def as_list(self) -> list[dict[str, Any]]:
        return [{"at_seconds": round(t, 2), "message": m} for t, m in self.events]


def spread(values: list[float]) -> dict[str, Any]:
    return {
        "runs": [round(v, 1) for v in values],
        "median": round(statistics.median(values), 1),
        "max": round(max(values), 1),
    }


# --- 1 and 2: the image --------------------------------------------------------------------
def _unmount_under(folder: Path) -> None:
    """Whatever an interrupted build left mounted below ``folder``, deepest first."""
    resolved = str(folder.resolve())
    mounts = [
        line.split()[1].replace("\\040", " ")
        for line in Path("/proc/self/mounts").read_text().splitlines()
    ]
    for point in sorted((m for m in mounts if m.startswith(resolved + "/")), reverse=True):
        subprocess.run(["umount", "-l", point], check=False, capture_output=True)


def cold_build(release: str) -> dict[str, Any]:
    """The image into a fresh cache folder: both layers built, each timed from the progress."""
    cache = Path(tempfile.mkdtemp(prefix="erpcloud-bench-image-", dir=COLD_CACHE_PARENT))
    try:
        timeline = Timeline()
        info = build_image(release, cache=cache, progress=timeline)
        if not info.built_now:
            raise RuntimeError(f"cold build into the fresh {cache} was not built now")
        end = timeline.elapsed()
        parent_done = timeline.at("copying the parent image")
        steps: dict[str, float] = {}
        step_events = [(t, m) for t, m in timeline.events if m.startswith("image step ")]
        for index, (offset, message) in enumerate(step_events):
            following = step_events[index + 1][0] if index + 1 < len(step_events) else end
            steps[message.removeprefix("image step ")] = round(following - offset, 1)
        size = subprocess.run(
            ["du", "-sb", str(info.root)], capture_output=True, text=True, check=True
        )
        return {
            "cache": str(cache),
            "seconds": round(info.seconds, 1),
            "parent_layer_seconds": round(parent_done, 1),
            "parent_debootstrap_seconds": round(
                timeline.at("configuring the parent image") - timeline.at("debootstrap"), 1
            ),
            "parent_configure_seconds": round(
                parent_done - timeline.at("configuring the parent image"), 1
            ),
            "product_layer_seconds": round(end - parent_done, 1),
            "product_copy_of_parent_and_archive_seconds": round(
                (step_events[0][0] if step_events else end) - parent_done, 1
            ),
            "product_step_seconds": steps,
            "product_image_mb": round(int(size.stdout.split()[0]) / 1e6),
            "progress": timeline.as_list(),
        }
    finally:
        _unmount_under(cache)
        shutil.rmtree(cache, ignore_errors=True)


def warm_build(release: str) -> tuple[ImageInfo, dict[str, Any]]:
    """Make sure the default cache has the image, then take it again: a cache hit."""
    ensured = build_image(release, progress=Timeline())
    log(
        f"default cache {IMAGE_CACHE}: {'built now' if ensured.built_now else 'already built'}"
        f" ({ensured.seconds:.1f} s)"
    )
    warm = build_image(release, progress=Timeline())
    return warm, {
        "cache": str(IMAGE_CACHE),
        "ensure_built_now": ensured.built_now,
        "ensure_seconds": round(ensured.seconds, 1),
        "built_now": warm.built_now,
        "seconds": round(warm.seconds, 3),
        "key": warm.key,
    }


# --- 3: the customer's two machines --------------------------------------------------------
def both_machines_once(customer: Customer) -> dict[str, Any]:
    """``machines.up`` until both machines are ready, then ``down``; phases from the progress."""
    timeline = Timeline()
    state_file = machines.machines_root(customer.id) / machines.STATE_FILE
    try:
        state = machines.up(customer, timeline, timeout=READY_TIMEOUT_SECONDS)
        up_seconds = timeline.elapsed()
    finally:
        down_started = time.monotonic()
        if state_file.exists():
            machines.down(customer.id)
        down_seconds = time.monotonic() - down_started
    booting_production = timeline.at("booting production")
    booting_test = timeline.at("booting test")
    waiting_production = timeline.at("waiting for production")
    waiting_test = timeline.at("waiting for test")
    return {
        "up_seconds": round(up_seconds, 1),
        "phases": {
            "image_from_cache": round(timeline.at("AWS emulator"), 1),
            "emulator_and_provisioning": round(booting_production - timeline.at("AWS emulator"), 1),
            "production_disk_and_start": round(booting_test - booting_production, 1),
            "test_disk_and_start": round(waiting_production - booting_test, 1),
            "production_host_keys_and_ready": round(waiting_test - waiting_production, 1),
            "test_host_keys_and_ready": round(up_seconds - waiting_test, 1),
        },
        # Each machine's boot start to the moment its readiness check had passed (the checks
        # run one after the other, so the test machine may have been ready a little earlier).
        "production_boot_to_ready_seconds": round(waiting_test - booting_production, 1),
        "test_boot_to_ready_seconds": round(up_seconds - booting_test, 1),
        "image": state.image,
        "down_seconds": round(down_seconds, 1),
    }


# --- 4: one drill machine ------------------------------------------------------------------
@contextlib.contextmanager
def drill_network() -> Iterator[machine.Network]:
    network = machine.allocate_network()
    try:
        yield network
    finally:
        network.remove()


def drill_machine_once(image: ImageInfo, root: Path, run: int) -> dict[str, Any]:
    """Boot start to ``check_ready`` done, console host keys pinned first; then removed."""
    folder = root / f"drill-{run}"
    key = folder / "ops" / "id_ed25519"
    ops_public = generate_keypair(key, "erpcloud bench drill operations key")
    known_hosts = folder / "ops" / "known_hosts"
    with drill_network() as network:
        spec = machine.MachineSpec(
            name="bench-drill",
            instance_id=f"i-{secrets.token_hex(9)[:17]}",
            image_root=image.root,
            user_data=drill_user_data("bench-drill", ops_public),
            network=network,
            slot=0,
        )
        record: machine.MachineRecord | None = None
        try:
            started = time.monotonic()
            record = machine.boot(spec, folder / "machine")
            booted = time.monotonic()
            record.host_keys = machine.wait_for_host_keys(record, READY_TIMEOUT_SECONDS)
            machine.pin_host_keys(record, known_hosts)
            keys_seen = time.monotonic()
            target = SshTarget(
                host=record.address,
                port=22,
                user=policy.OPERATIONS_USER,
                key_filename=key,
                known_hosts=known_hosts,
            )
            readiness = machine.check_ready(target, READY_TIMEOUT_SECONDS)
            ready = time.monotonic()
            if not readiness.ready:
                raise machine.MachineError(machine.readiness_report(record.name, readiness))
        finally:
            off_started = time.monotonic()
            if record is not None:
                machine.power_off(record)
                machine.remove_machine_files(record)
            off_seconds = time.monotonic() - off_started
    shutil.rmtree(folder, ignore_errors=True)
    return {
        "ready_seconds": round(ready - started, 1),
        "phases": {
            "disk_and_start": round(booted - started, 1),
            "console_host_keys": round(keys_seen - booted, 1),
            "ssh_and_readiness_check": round(ready - keys_seen, 1),
        },
        "power_off_and_remove_seconds": round(off_seconds, 1),
    }


# --- the run -------------------------------------------------------------------------------
def _terminate(signum: int, _frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")  # every finally below tears down


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--skip-cold", action="store_true", help="Leave out the cold image build (~2 min)."
    )
    parser.add_argument("--repeat", type=int, default=3, help="Boots of each kind (default 3).")
    options = parser.parse_args()
    signal.signal(signal.SIGTERM, _terminate)

    loaded = load_valid_customer(CUSTOMER_ID, REPO_ROOT / "customers", False)
    customer = loaded.model_copy(update={"id": BENCH_ID})
    release = customer.product_version
    figures: dict[str, Any] = {
        "customer": CUSTOMER_ID,
        "run_as_id": BENCH_ID,
        "release": release,
        "repeat": options.repeat,
    }
    root = make_state_root("bench-machines-")
    try:
        if options.skip_cold:
            figures["image_cold"] = "skipped (--skip-cold)"
        else:
            log(f"image {release}, cold: a fresh cache under {COLD_CACHE_PARENT}")
            figures["image_cold"] = cold_build(release)
            log(f"cold build {figures['image_cold']['seconds']} s")
        log(f"image {release}, warm: the default cache")
        image, figures["image_warm"] = warm_build(release)
        log(f"warm build {figures['image_warm']}")

        both = []
        for run in range(1, options.repeat + 1):
            log(f"machines up {BENCH_ID} ({run}/{options.repeat})")
            both.append(both_machines_once(customer))
            log(f"both ready after {both[-1]['up_seconds']} s; phases {both[-1]['phases']}")
        figures["both_machines"] = {
            "up_seconds": spread([b["up_seconds"] for b in both]),
            "production_boot_to_ready_seconds": spread(
                [b["production_boot_to_ready_seconds"] for b in both]
            ),
            "test_boot_to_ready_seconds": spread([b["test_boot_to_ready_seconds"] for b in both]),
            "down_seconds": spread([b["down_seconds"] for b in both]),
            "each_run": both,
        }

        drills = []
        for run in range(1, options.repeat + 1):
            log(f"drill machine ({run}/{options.repeat})")
            drills.append(drill_machine_once(image, root, run))
            log(f"drill machine ready after {drills[-1]['ready_seconds']} s: {drills[-1]}")
        figures["drill_machine"] = {
            "ready_seconds": spread([d["ready_seconds"] for d in drills]),
            "each_run": drills,
        }
    finally:
        shutil.rmtree(root, ignore_errors=True)

    both_worst = figures["both_machines"]["up_seconds"]["max"]
    drill_worst = figures["drill_machine"]["ready_seconds"]["max"]
    targets = {
        "both_machines_ready_seconds": {
            "measured": both_worst,
            "median_of_runs": figures["both_machines"]["up_seconds"]["median"],
            "max": BOTH_READY_TARGET_SECONDS,
            "judged_on": f"worst of {options.repeat} runs",
            "kind": ABSOLUTE,
            "met": both_worst <= BOTH_READY_TARGET_SECONDS,
        },
        "drill_machine_ready_seconds": {
            "measured": drill_worst,
            "median_of_runs": figures["drill_machine"]["ready_seconds"]["median"],
            "max": DRILL_READY_TARGET_SECONDS,
            "judged_on": f"worst of {options.repeat} runs",
            "kind": ABSOLUTE,
            "met": drill_worst <= DRILL_READY_TARGET_SECONDS,
        },
        "warm_image_from_cache": {
            "measured": "cache hit" if not figures["image_warm"]["built_now"] else "built",
            "seconds": figures["image_warm"]["seconds"],
            "met": not figures["image_warm"]["built_now"],
        },
    }
    path = write_result("local_machines", figures, targets)
    log(f"wrote {path}")
    cold = figures["image_cold"]
    if isinstance(cold, dict):
        print(
            f"  image cold: {cold['seconds']} s (parent {cold['parent_layer_seconds']} s: "
            f"debootstrap {cold['parent_debootstrap_seconds']} s, configure "
            f"{cold['parent_configure_seconds']} s; product {cold['product_layer_seconds']} s)"
        )
    else:
        print(f"  image cold: {cold}")
    warm = figures["image_warm"]
    print(f"  image warm: {warm['seconds']} s, {'built' if warm['built_now'] else 'cache hit'}")
    for name in ("up_seconds", "production_boot_to_ready_seconds", "test_boot_to_ready_seconds"):
        print(f"  both machines {name}: {figures['both_machines'][name]}")
    print(f"  drill machine ready_seconds: {figures['drill_machine']['ready_seconds']}")
    for name, judged in targets.items():
        print(f"  target {name}: {'met' if judged['met'] else 'NOT met'} ({judged})")
    return 0 if all(t["met"] for t in targets.values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())

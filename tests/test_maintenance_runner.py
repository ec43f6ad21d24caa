"""The maintenance runner against a fleet of real machines (plain Python, no Fabric CLI).

Three machines booted once for the module from the product image (:mod:`localtarget.fleet`),
each with its own host keys pinned from its console and the operations login (key only,
passwordless sudo). Each test writes its own inventory: which customer environment a machine
serves, and a ``host_root`` of the test's own on it, so the tests never see each other's files.
Files are written and read on the machines over SSH, as the machines see them. The clock is
injected: the runs happen "inside" the December 2026 windows of their regions.
"""

from __future__ import annotations

import http.server
import json
import ssl
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from erpcloud.inventory import load_inventory
from erpcloud.model import Customer, Environment
from localtarget.fleet import Fleet, boot_fleet, generate_keypair, write_inventory
from localtarget.processes import LOOPBACK, free_port
from maintenance.change import load_change
from maintenance.notices import render_notices
from maintenance.records import HostStatus, RunStatus, RunStore
from maintenance.rules import check_change
from maintenance.runner import RunInputs, RunOptions, RunRefused, apply_change, run_exit_code

pytestmark = [pytest.mark.services, pytest.mark.timeout(900)]

#: us-east-1's December window: Monday 21st 22:00 EST is 03:00 UTC on the 22nd (S11).
US_WINDOW = datetime(2026, 12, 22, 3, 10, tzinfo=UTC)
#: eu-west-1's December window: 22:00 GMT on the 21st.
EU_WINDOW = datetime(2026, 12, 21, 22, 10, tzinfo=UTC)

#: The fleet: one canary machine and two production machines.
MACHINES = ("test", "prod-a", "prod-b")
#: The hosts the tests' inventories list: customer, environment, and the machine it is on
#: (ls-prod and acme-prod share one, never in the same inventory).
HOSTS = {
    "nw-test": ("northwind-trading", Environment.TEST, "test"),
    "ls-prod": ("lakeside-outfitters", Environment.PRODUCTION, "prod-a"),
    "nw-prod": ("northwind-trading", Environment.PRODUCTION, "prod-b"),
    "acme-prod": ("acme-retail", Environment.PRODUCTION, "prod-a"),
}


@pytest.fixture(scope="module")
def fleet(sample_fleet: dict[str, Customer]) -> Iterator[Fleet]:
    booted = boot_fleet(MACHINES, sample_fleet["northwind-trading"].product_version)
    try:
        yield booted
    finally:
        booted.teardown()


@dataclass
class Harness:
    """One test's hosts: its own ``host_root`` on every machine, inventory, runs and notices."""

    tmp: Path
    fleet: Fleet
    roots: dict[str, str]
    inventory_path: Path
    store: RunStore
    notices: Path
    customers: dict[str, Customer]
    progress: list[str]

    def path(self, host: str, path: str) -> str:
        return f"{self.roots[host]}/{path.lstrip('/')}"

    def machine(self, host: str) -> str:
        return HOSTS[host][2]

    def read(self, host: str, path: str) -> str | None:
        return self.fleet.read(self.machine(host), self.path(host, path))

    def write(self, host: str, path: str, text: str) -> None:
        self.fleet.write(self.machine(host), self.path(host, path), text)

    def exists(self, host: str, path: str) -> bool:
        return self.fleet.exists(self.machine(host), self.path(host, path))

    def mode(self, host: str, path: str) -> int:
        return self.fleet.mode(self.machine(host), self.path(host, path))

    def remove(self, host: str, path: str) -> None:
        self.fleet.remove(self.machine(host), self.path(host, path))

    def change(self, document: dict[str, Any]) -> Path:
        path = self.tmp / "changes" / f"{document['id']}.yaml"
        path.parent.mkdir(exist_ok=True)
        path.write_text(yaml.safe_dump(document, sort_keys=False))
        return path

    def inputs(self, change: Path, now: datetime) -> RunInputs:
        """The run's inputs, with a clock that starts at ``now`` and ticks in real time."""
        check = check_change(load_change(change), self.customers, [], self.store)
        began = time.monotonic()
        return RunInputs(
            check=check,
            inventory=load_inventory(self.inventory_path, self.customers),
            customers=self.customers,
            store=self.store,
            notices_dir=self.notices,
            clock=lambda: now + timedelta(seconds=time.monotonic() - began),
            progress=self.progress.append,
            step_timeout=60,
        )

    def announce(self, change: Path) -> None:
        render_notices(
            check_change(load_change(change), self.customers, [], self.store), self.notices
        )


def make_harness(
    tmp_path: Path,
    fleet: Fleet,
    customers: dict[str, Customer],
    names: tuple[str, ...] = ("nw-test", "ls-prod", "nw-prod"),
    https_urls: dict[str, str] | None = None,
    ca_file: Path | None = None,
    reach: dict[str, dict[str, str]] | None = None,
) -> Harness:
    """``reach`` overrides a host's ``address`` or pinned ``host_key`` in the inventory."""
    root = f"/srv/maintenance-tests/{tmp_path.name}"
    roots = {}
    hosts = []
    for name in names:
        fleet.as_root(HOSTS[name][2], f"mkdir -p {root}")
        roots[name] = root
        customer, environment, on = HOSTS[name]
        hosts.append(
            fleet.host(
                on,
                customer,
                environment,
                host_root=root,
                https_url=(https_urls or {}).get(name),
                **(reach or {}).get(name, {}),
            )
        )
    inventory = write_inventory(tmp_path / "inventory.yaml", hosts, fleet.key_file, ca_file)
    return Harness(
        tmp=tmp_path,
        fleet=fleet,
        roots=roots,
        inventory_path=inventory,
        store=RunStore(tmp_path / "runs"),
        notices=tmp_path / "notices",
        customers=customers,
        progress=[],
    )


def host_name(short: str) -> str:
    customer, environment, _ = HOSTS[short]
    return f"{customer}-{environment.value}"


def standard_change(change_id: str, steps: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    document = {
        "id": change_id,
        "kind": "standard",
        "reason": "Routine configuration update",
        "summary": "A configuration file of the product is updated.",
        "window": {"date": "2026-12-21"},
        "expected_downtime_minutes": 0,
        "targets": {"customers": ["lakeside-outfitters", "northwind-trading"]},
        "steps": steps,
        "announced_at": "2026-11-23T09:00:00+00:00",
    }
    document.update(extra)
    return document


def write_step(path: str, content: str) -> dict[str, Any]:
    return {"op": "write_file", "args": {"path": path, "content": content, "mode": "0640"}}


# --- a local HTTPS endpoint for the post-checks -------------------------------------------------
@pytest.fixture(scope="module")
def https_endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """A real TLS server on loopback (self-signed) answering 200 on /health."""
    folder = tmp_path_factory.mktemp("https")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-keyout", str(key), "-out", str(cert), "-subj", f"/CN={LOOPBACK}",
         "-addext", f"subjectAltName=IP:{LOOPBACK}"],
        check=True,
        capture_output=True,
    )  # fmt: skip

    class Health(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200 if self.path == "/health" else 404)
            self.end_headers()
            self.wfile.write(b"ok\n")

        def log_message(self, *args: object) -> None:
            return None

    server = http.server.ThreadingHTTPServer((LOOPBACK, free_port()), Health)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"https://{LOOPBACK}:{server.server_address[1]}/health", cert
    finally:
        server.shutdown()
        server.server_close()


# --- the tests -----------------------------------------------------------------------------------
def test_change_reaches_every_host_in_the_planned_order(
    tmp_path: Path,
    fleet: Fleet,
    sample_fleet: dict[str, Customer],
    https_endpoint: tuple[str, Path],
):
    url, ca_file = https_endpoint
    harness = make_harness(
        tmp_path,
        fleet,
        sample_fleet,
        names=("nw-prod", "ls-prod", "nw-test"),  # the inventory lists production first
        https_urls={"nw-prod": url},
        ca_file=ca_file,
    )
    for name in harness.roots:
        harness.write(name, "/etc/erp/app.conf", f"old settings of {name}\n")
    change = harness.change(
        standard_change(
            "2026-12-app-conf",
            [
                write_step("/etc/erp/app.conf", "workers = 4\n"),
                {"op": "health_check", "args": {"paths": ["/etc/erp/app.conf"]}},
            ],
        )
    )
    harness.announce(change)

    state = apply_change(
        harness.inputs(change, US_WINDOW), RunOptions(wave_size=1, concurrency=1, max_errors=0)
    )

    assert state.status is RunStatus.COMPLETED and run_exit_code(state) == 0
    planned = [name for wave in state.waves for name in wave.hosts]
    assert planned == [
        host_name("nw-test"),
        host_name("ls-prod"),
        host_name("nw-prod"),
    ]  # the canary (test environment) first, then production, one host per wave
    assert [w.label for w in state.waves] == ["canary", "production", "production"]
    starts = {h.name: h.started_at for h in state.hosts.values() if h.started_at}
    assert sorted(starts, key=lambda name: starts[name]) == planned  # started in planned order
    ends = [h.finished_at for h in state.ordered_hosts() if h.finished_at]
    assert len(ends) == 3 and ends == sorted(ends)
    for name in harness.roots:
        assert harness.read(name, "/etc/erp/app.conf") == "workers = 4\n"
        assert harness.mode(name, "/etc/erp/app.conf") == 0o640
        saved = harness.read(name, "/var/lib/erpcloud/maintenance/2026-12-app-conf/step-1/original")
        assert saved == f"old settings of {name}\n"  # kept for a rollback
    record = state.hosts[host_name("nw-prod")]
    assert [s.status for s in record.steps] == ["applied", "verified"]
    assert {c.name: c.status.value for c in record.prechecks} == {
        "reachable": "ok",
        "host_key": "ok",
        "sudo": "ok",
        "host_root": "ok",
        "disk": "ok",
        "postgresql": "n/a",
        "backup": "n/a",
    }
    https = next(c for c in record.postchecks if c.name == "https")
    assert https.status.value == "ok" and "answered 200" in https.detail
    test_backup = next(c for c in state.hosts[host_name("nw-test")].prechecks if c.name == "backup")
    assert "S9" in test_backup.detail

    run_dir = harness.store.run_dir(state.run_id)
    report = json.loads((run_dir / "report.json").read_text())
    assert report["ok"] and report["counts"]["done"] == 3
    assert [h["name"] for h in report["hosts"]] == planned
    assert {d["customer"] for d in report["downtime"]} == {
        "lakeside-outfitters",
        "northwind-trading",
    }
    assert all(
        d["category"] == "scheduled-maintenance" and d["excluded_from_unscheduled_downtime"]
        for d in report["downtime"]
    )
    markdown = (run_dir / "report.md").read_text()
    assert "**completed**" in markdown and host_name("nw-prod") in markdown
    assert any(line.startswith("wave 1/3 (canary)") for line in harness.progress)
    assert any(f"[3/3] {host_name('nw-prod')}: done" in line for line in harness.progress)

    again = apply_change(harness.inputs(change, US_WINDOW + timedelta(minutes=5)), RunOptions())
    assert again.status is RunStatus.COMPLETED and again.run_id != state.run_id
    assert {s.status for h in again.hosts.values() for s in h.steps} == {"already", "verified"}


def test_failed_step_halts_within_budget_rolls_back_and_resumes(
    tmp_path: Path,
    fleet: Fleet,
    sample_fleet: dict[str, Customer],
):
    harness = make_harness(tmp_path, fleet, sample_fleet)
    for name in harness.roots:
        harness.write(name, "/etc/erp/app.conf", f"v1 {name}\n")
    # On this host /etc/erpcloud is a file, so step 2 cannot create /etc/erpcloud/marker.
    harness.write("ls-prod", "/etc/erpcloud", "not a directory\n")
    change = harness.change(
        standard_change(
            "2026-12-two-steps",
            [
                write_step("/etc/erp/app.conf", "v2\n"),
                write_step("/etc/erpcloud/marker", "2026-12-two-steps\n"),
            ],
        )
    )
    harness.announce(change)

    state = apply_change(
        harness.inputs(change, US_WINDOW), RunOptions(wave_size=1, concurrency=1, max_errors=0)
    )

    failed, untouched = state.hosts[host_name("ls-prod")], state.hosts[host_name("nw-prod")]
    assert state.status is RunStatus.HALTED and run_exit_code(state) == 1
    assert "error budget spent" in state.halted_reason
    assert failed.status is HostStatus.FAILED
    assert "step 2 (write_file) failed" in failed.error and "/etc/erpcloud" in failed.error
    assert [(r.index, r.ok) for r in failed.rollbacks] == [(2, True), (1, True)]
    assert harness.read("ls-prod", "/etc/erp/app.conf") == "v1 ls-prod\n"  # rolled back
    assert untouched.status is HostStatus.UNTOUCHED and untouched.attempts == 0
    assert "error budget spent" in untouched.reason
    assert harness.read("nw-prod", "/etc/erp/app.conf") == "v1 nw-prod\n"
    assert not harness.exists("nw-prod", "/etc/erpcloud/marker")
    assert state.hosts[host_name("nw-test")].status is HostStatus.DONE
    assert harness.read("nw-test", "/etc/erpcloud/marker") == "2026-12-two-steps\n"
    report = json.loads((harness.store.run_dir(state.run_id) / "report.json").read_text())
    assert not report["ok"] and report["counts"] == {
        "pending": 0,
        "done": 1,
        "failed": 1,
        "refused": 0,
        "untouched": 1,
        "checked": 0,
    }
    markdown = (harness.store.run_dir(state.run_id) / "report.md").read_text()
    assert "## Failures" in markdown and "rolled back" in markdown and "untouched" in markdown

    with pytest.raises(RunRefused, match="resumes it by its id"):
        apply_change(harness.inputs(change, US_WINDOW), RunOptions(resume="latest"))

    harness.remove("ls-prod", "/etc/erpcloud")  # the operator fixes the host
    canary_start = state.hosts[host_name("nw-test")].started_at
    resumed = apply_change(
        harness.inputs(change, US_WINDOW + timedelta(minutes=10)),
        RunOptions(resume=state.run_id),
    )
    assert resumed.run_id == state.run_id and resumed.status is RunStatus.COMPLETED
    assert resumed.hosts[host_name("nw-test")].attempts == 1  # finished hosts are not redone
    assert resumed.hosts[host_name("nw-test")].started_at == canary_start
    assert resumed.hosts[host_name("ls-prod")].attempts == 2
    assert resumed.hosts[host_name("nw-prod")].attempts == 1
    assert [a.resumed for a in resumed.attempts] == [False, True]
    assert "failed: step 2 (write_file) failed" in resumed.hosts[host_name("ls-prod")].history[0]
    assert "untouched: error budget spent" in resumed.hosts[host_name("nw-prod")].history[0]
    resumed_report = (harness.store.run_dir(state.run_id) / "report.md").read_text()
    assert "## Earlier attempts of this run" in resumed_report
    for name in harness.roots:
        assert harness.read(name, "/etc/erp/app.conf") == "v2\n"
        assert harness.exists(name, "/etc/erpcloud/marker")


def test_error_budget_lets_the_run_continue_past_one_failure(
    tmp_path: Path,
    fleet: Fleet,
    sample_fleet: dict[str, Customer],
):
    harness = make_harness(tmp_path, fleet, sample_fleet, names=("ls-prod", "nw-prod"))
    harness.write("ls-prod", "/etc/erpcloud", "blocks the step\n")
    change = harness.change(
        standard_change("2026-12-budget", [write_step("/etc/erpcloud/marker", "x\n")])
    )
    harness.announce(change)
    state = apply_change(
        harness.inputs(change, US_WINDOW), RunOptions(wave_size=1, concurrency=2, max_errors=1)
    )
    assert state.status is RunStatus.FAILED and run_exit_code(state) == 1
    assert state.hosts[host_name("ls-prod")].status is HostStatus.FAILED
    assert state.hosts[host_name("nw-prod")].status is HostStatus.DONE
    assert harness.read("nw-prod", "/etc/erpcloud/marker") == "x\n"


def test_failed_post_check_rolls_the_host_back(
    tmp_path: Path,
    fleet: Fleet,
    sample_fleet: dict[str, Customer],
    https_endpoint: tuple[str, Path],
):
    _, ca_file = https_endpoint
    dead_url = f"https://{LOOPBACK}:{free_port()}/health"  # nothing listens there
    harness = make_harness(
        tmp_path,
        fleet,
        sample_fleet,
        names=("nw-prod",),
        https_urls={"nw-prod": dead_url},
        ca_file=ca_file,
    )
    harness.write("nw-prod", "/etc/erp/app.conf", "before\n")
    change = harness.change(
        standard_change("2026-12-post-check", [write_step("/etc/erp/app.conf", "after\n")])
    )
    harness.announce(change)
    state = apply_change(harness.inputs(change, US_WINDOW), RunOptions())
    record = state.hosts[host_name("nw-prod")]
    assert record.status is HostStatus.FAILED
    assert record.error.startswith("post-check https failed")
    assert [s.status for s in record.steps] == ["applied"] and record.rollbacks[0].ok
    assert harness.read("nw-prod", "/etc/erp/app.conf") == "before\n"


def test_hosts_outside_their_window_wait_and_a_later_run_continues(
    tmp_path: Path,
    fleet: Fleet,
    sample_fleet: dict[str, Customer],
):
    harness = make_harness(tmp_path, fleet, sample_fleet, names=("acme-prod", "nw-prod"))
    change = harness.change(
        standard_change(
            "2026-12-two-regions",
            [write_step("/etc/erp/region.conf", "ok\n")],
            targets={
                "customers": ["acme-retail", "northwind-trading"],
                "environments": ["production"],
            },
        )
    )
    harness.announce(change)
    first = apply_change(harness.inputs(change, EU_WINDOW), RunOptions(resume="latest"))
    assert first.status is RunStatus.WAITING and run_exit_code(first) == 3
    assert first.hosts[host_name("acme-prod")].status is HostStatus.DONE
    assert harness.read("acme-prod", "/etc/erp/region.conf") == "ok\n"
    waiting = first.hosts[host_name("nw-prod")]
    assert waiting.status is HostStatus.UNTOUCHED and "waits for it" in waiting.reason
    assert not harness.exists("nw-prod", "/etc/erp/region.conf")

    later = apply_change(harness.inputs(change, US_WINDOW), RunOptions(resume="latest"))
    assert later.run_id == first.run_id and later.status is RunStatus.COMPLETED
    assert later.hosts[host_name("acme-prod")].attempts == 1
    assert harness.read("nw-prod", "/etc/erp/region.conf") == "ok\n"


def test_an_unreachable_host_fails_and_counts_against_the_budget(
    tmp_path: Path,
    fleet: Fleet,
    sample_fleet: dict[str, Customer],
):
    down = fleet.free_address()  # on the fleet's network, where no machine runs
    harness = make_harness(
        tmp_path,
        fleet,
        sample_fleet,
        names=("ls-prod", "nw-prod"),
        reach={"ls-prod": {"address": down}},
    )
    change = harness.change(standard_change("2026-12-down", [{"op": "noop"}]))
    harness.announce(change)
    began = time.monotonic()
    state = apply_change(harness.inputs(change, US_WINDOW), RunOptions(concurrency=1))
    record = state.hosts[host_name("ls-prod")]
    assert record.status is HostStatus.FAILED and record.error.startswith("unreachable:")
    assert down in record.error
    assert state.hosts[host_name("nw-prod")].status is HostStatus.UNTOUCHED
    assert state.status is RunStatus.HALTED
    assert time.monotonic() - began < 30  # the connection timeout bounds the wait


def test_a_host_with_a_changed_host_key_is_refused(
    tmp_path: Path,
    fleet: Fleet,
    sample_fleet: dict[str, Customer],
):
    # The key pinned before the machine was reinstalled: the machine now presents another.
    before = generate_keypair(tmp_path / "old_host_key", "the host key before the reinstall")
    harness = make_harness(
        tmp_path,
        fleet,
        sample_fleet,
        names=("acme-prod",),
        reach={"acme-prod": {"host_key": " ".join(before.split()[:2])}},
    )
    change = tmp_path / "2026-12-emergency-key.yaml"
    change.write_text(
        yaml.safe_dump(
            {
                "id": "2026-12-emergency-key",
                "kind": "emergency",
                "reason": "security",
                "summary": "A security fix.",
                "window": {"starts_at": "2026-12-03T14:00:00+00:00", "duration_minutes": 60},
                "expected_downtime_minutes": 0,
                "targets": {"customers": ["acme-retail"]},
                "steps": [write_step("/etc/erp/fix.conf", "fixed\n")],
                "announced_at": "2026-12-02T10:00:00+00:00",
            }
        )
    )
    store = RunStore(tmp_path / "runs")
    inputs = RunInputs(
        check=check_change(load_change(change), sample_fleet, [], store),
        inventory=load_inventory(harness.inventory_path, sample_fleet),
        customers=sample_fleet,
        store=store,
        notices_dir=tmp_path / "notices",
        clock=lambda: datetime(2026, 12, 3, 14, 5, tzinfo=UTC),
    )
    state = apply_change(inputs, RunOptions())
    record = state.hosts["acme-retail-production"]
    assert record.status is HostStatus.REFUSED and state.status is RunStatus.HALTED
    assert "host key changed" in record.error and "refusing to connect" in record.error
    # The machine itself answers with its real key (pinned by the fleet): only the run refused.
    assert not harness.exists("acme-prod", "/etc/erp/fix.conf")
    assert "refused" in (store.run_dir(state.run_id) / "report.md").read_text()


def test_gates_refuse_and_a_drill_override_is_logged(
    tmp_path: Path,
    fleet: Fleet,
    sample_fleet: dict[str, Customer],
):
    harness = make_harness(tmp_path, fleet, sample_fleet, names=("nw-test",))
    change = harness.change(
        standard_change("2026-12-gated", [{"op": "noop"}, {"op": "health_check"}])
    )
    with pytest.raises(RunRefused) as refused:
        apply_change(harness.inputs(change, US_WINDOW), RunOptions())
    assert refused.value.code == 1
    assert any("no notices rendered" in d for d in refused.value.details)

    harness.announce(change)
    outside = US_WINDOW + timedelta(hours=2)
    with pytest.raises(RunRefused) as refused:
        apply_change(harness.inputs(change, outside), RunOptions())
    assert any("outside its window" in d for d in refused.value.details)
    assert not harness.store.runs()  # nothing ran, nothing recorded

    bad = harness.change(
        standard_change(
            "2026-12-too-long",
            [{"op": "noop"}],
            expected_downtime_minutes=90,
            announced_at="2026-12-23T00:00:00+00:00",
        )
    )
    with pytest.raises(RunRefused) as refused:
        apply_change(harness.inputs(bad, US_WINDOW), RunOptions())
    assert refused.value.code == 2
    assert any("S11" in d and "expected_downtime_minutes" in d for d in refused.value.details)
    assert any("not announced yet" in d for d in refused.value.details)

    with pytest.raises(RunRefused, match="needs a reason"):
        apply_change(harness.inputs(change, outside), RunOptions(drill_reason=" "))
    drill = apply_change(
        harness.inputs(change, outside), RunOptions(drill_reason="quarterly runner drill")
    )
    assert drill.status is RunStatus.COMPLETED and drill.drill_reason == "quarterly runner drill"
    assert any("outside its window" in o for o in drill.overrides)
    assert any(
        line.startswith("OVERRIDE drill (quarterly runner drill)") for line in harness.progress
    )
    markdown = (harness.store.run_dir(drill.run_id) / "report.md").read_text()
    assert "quarterly runner drill" in markdown and "Overrides (logged)" in markdown


def test_dry_run_changes_nothing_and_says_what_would_happen(
    tmp_path: Path,
    fleet: Fleet,
    sample_fleet: dict[str, Customer],
):
    harness = make_harness(tmp_path, fleet, sample_fleet, names=("nw-test", "ls-prod"))
    harness.write("ls-prod", "/etc/erp/app.conf", "current\n")
    change = harness.change(
        standard_change("2026-12-dry", [write_step("/etc/erp/app.conf", "next\n")])
    )
    state = apply_change(  # a day early and without notices: a dry run still looks
        harness.inputs(change, US_WINDOW - timedelta(days=1)), RunOptions(dry_run=True)
    )
    assert state.status is RunStatus.DRY_RUN and run_exit_code(state) == 0
    assert {h.status for h in state.hosts.values()} == {HostStatus.CHECKED}
    assert [s.status for s in state.hosts[host_name("ls-prod")].steps] == ["would-apply"]
    assert harness.read("ls-prod", "/etc/erp/app.conf") == "current\n"
    assert not harness.exists("nw-test", "/etc/erp/app.conf")
    assert any("apply would refuse" in o and "outside its window" in o for o in state.overrides)
    assert harness.store.major_changes(2026) == []

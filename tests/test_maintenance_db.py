"""Database pre-checks and steps on a customer's real machines: PostgreSQL 17, pgBackRest 2.55.

lakeside-outfitters' production and test machines, booted once for the module from the
customer's image (:func:`localtarget.machines.up`, under an id of this module's own). Production
archives through pgBackRest into its own two S3 repositories (the emulator, signed by the
instance role); the test environment has a database and no backups (S9). The runner reaches
them through the machines' inventory, as written by ``up`` (real addresses, port 22, the
production layout, host keys from the console); every pgBackRest and psql command here runs on
a machine.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from erpcloud.inventory import load_inventory
from erpcloud.model import Customer, Environment
from erpcloud.render import HostLayout
from localtarget import machines
from localtarget.machines import MachineSetState
from localtarget.onmachine import as_root, psql
from maintenance.change import load_change
from maintenance.records import CheckStatus, HostStatus, RunStore
from maintenance.rules import check_change
from maintenance.runner import RunInputs, RunOptions, apply_change, utc_now

from .conftest import copy_sample

pytestmark = [pytest.mark.services, pytest.mark.timeout(900)]

TAG = os.getpid() % 100000
LAYOUT = HostLayout()
#: A port on the production machine where no PostgreSQL listens: its database "is down".
DEAD_PORT = 5499


@dataclass
class Booted:
    customer: Customer
    customers: dict[str, Customer]
    state: MachineSetState

    @property
    def production(self) -> str:
        return f"{self.customer.id}-production"

    @property
    def test(self) -> str:
        return f"{self.customer.id}-test"

    def backups(self) -> list[dict[str, Any]]:
        """The production stanza's backups in both repositories (``pgbackrest info``)."""
        out = as_root(
            self.state,
            Environment.PRODUCTION,
            f"cd / && runuser -u postgres -- pgbackrest --config={LAYOUT.pgbackrest_config} "
            f"--stanza={self.customer.stanza} --output=json info",
        )
        backups: list[dict[str, Any]] = json.loads(out)[0]["backup"]
        return backups

    def setting(self, environment: Environment, sql: str) -> str:
        return psql(self.state, environment, sql, dbname="postgres")

    def conf_fragment(self, environment: Environment, name: str) -> str | None:
        path = f"{LAYOUT.conf_d}/60-erpcloud-{name}.conf"
        out = as_root(self.state, environment, f"if [ -f {path} ]; then echo y; cat {path}; fi")
        return out[2:] if out.startswith("y\n") else None


@pytest.fixture(scope="module")
def booted(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Booted]:
    customers_dir = tmp_path_factory.mktemp("mdb-customers")
    customer = copy_sample(customers_dir, "lakeside-outfitters", f"mdb-{TAG}")
    state = machines.up(customer)  # all or nothing: on failure nothing is left to take down
    try:
        yield Booted(customer, {customer.id: customer}, state)
    finally:
        machines.down(customer.id)


def emergency_change(
    folder: Path, change_id: str, steps: list[dict[str, Any]], **targets: Any
) -> Path:
    """A security change whose window is open now (the real clock: backups are real too)."""
    now = utc_now()
    path = folder / f"{change_id}.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "id": change_id,
                "kind": "emergency",
                "reason": "security",
                "summary": "A database setting changes.",
                "window": {
                    "starts_at": (now - timedelta(minutes=5)).isoformat(),
                    "duration_minutes": 60,
                },
                "expected_downtime_minutes": 0,
                "targets": targets,
                "steps": steps,
                "announced_at": (now - timedelta(hours=1)).isoformat(),
            }
        )
    )
    return path


def machines_inventory(
    booted: Booted, path: Path, names: list[str], db_port: dict[str, int] | None = None
) -> Path:
    """The inventory ``up`` wrote, with the hosts ``names`` only and any database ports moved."""
    document = yaml.safe_load(Path(booted.state.inventory).read_text())
    hosts = [h for h in document["hosts"] if h["name"] in names]
    for host in hosts:
        if host["name"] in (db_port or {}):
            host["db"]["port"] = (db_port or {})[host["name"]]
    document["hosts"] = sorted(hosts, key=lambda h: names.index(h["name"]))
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return path


def inputs_for(tmp_path: Path, change: Path, inventory: Path, booted: Booted) -> RunInputs:
    store = RunStore(tmp_path / "runs")
    return RunInputs(
        check=check_change(load_change(change), booted.customers, [], store),
        inventory=load_inventory(inventory, booted.customers),
        customers=booted.customers,
        store=store,
        notices_dir=tmp_path / "notices",
        step_timeout=300,
    )


def test_risky_step_takes_a_backup_first_then_finds_it_recent(tmp_path: Path, booted: Booted):
    inventory = machines_inventory(booted, tmp_path / "inventory.yaml", [booted.production])
    entry = yaml.safe_load(inventory.read_text())["hosts"][0]
    assert entry["host_root"] == "/" and entry["db"]["stanza"] == booted.customer.stanza
    change = emergency_change(
        tmp_path,
        "emergency-work-mem",
        [{"op": "postgres_setting", "args": {"name": "work_mem", "value": "6MB"}}],
        customers=[booted.customer.id],
        environments=["production"],
    )
    assert booted.backups() == []  # the stanza exists (cloud-init), no backup yet

    first = apply_change(inputs_for(tmp_path, change, inventory, booted), RunOptions())

    record = first.hosts[booted.production]
    assert record.status is HostStatus.DONE, record.error
    checks = [(c.name, c.status) for c in record.prechecks]
    assert ("postgresql", CheckStatus.OK) in checks
    assert ("backup", CheckStatus.WARNING) in checks  # none yet, and the step is risky...
    assert ("backup", CheckStatus.TAKEN) in checks  # ...so one was taken first (S6)
    taken = booted.backups()
    assert len(taken) == 1 and taken[0]["type"] == "full"  # the first one is a full
    assert booted.setting(Environment.PRODUCTION, "show work_mem") == "6MB"
    fragment = booted.conf_fragment(Environment.PRODUCTION, "work_mem")
    assert fragment == "work_mem = '6MB'\n"
    assert [s.status for s in record.steps] == ["applied"]

    second = apply_change(inputs_for(tmp_path, change, inventory, booted), RunOptions())
    again = second.hosts[booted.production]
    backup = next(c for c in again.prechecks if c.name == "backup")
    assert backup.status is CheckStatus.OK and "old" in backup.detail
    assert taken[0]["label"] in backup.detail  # the backup pgBackRest on the machine lists
    assert len(booted.backups()) == 1  # a recent good backup: none taken
    assert [s.status for s in again.steps] == ["already"]


def test_prechecks_without_backups_or_database_and_a_refused_setting_rolled_back(
    tmp_path: Path, booted: Booted
):
    # The canary is the test machine (a database, no backups: S9); production's database is
    # "down": the inventory names a port where nothing listens.
    inventory = machines_inventory(
        booted,
        tmp_path / "inventory.yaml",
        [booted.test, booted.production],
        db_port={booted.production: DEAD_PORT},
    )
    change = emergency_change(
        tmp_path,
        "emergency-shared-buffers",
        [{"op": "postgres_setting", "args": {"name": "shared_buffers", "value": "256MB"}}],
        customers=[booted.customer.id],
    )
    state = apply_change(inputs_for(tmp_path, change, inventory, booted), RunOptions(max_errors=2))
    canary = state.hosts[booted.test]
    assert ("postgresql", CheckStatus.OK) in [(c.name, c.status) for c in canary.prechecks]
    backup = next(c for c in canary.prechecks if c.name == "backup")
    assert backup.status is CheckStatus.NOT_APPLICABLE and "S9" in backup.detail
    # shared_buffers needs a restart, which a maintenance step never does: refused, rolled back.
    assert canary.status is HostStatus.FAILED and "needs a restart" in canary.error
    assert canary.rollbacks and canary.rollbacks[0].ok
    assert booted.conf_fragment(Environment.TEST, "shared_buffers") is None
    pending = "select pending_restart from pg_settings where name = 'shared_buffers'"
    assert booted.setting(Environment.TEST, pending) == "f"
    down = state.hosts[booted.production]
    assert state.waves[0].label == "canary"
    assert down.status is HostStatus.UNTOUCHED and "canary" in down.reason  # canary failed

    production_only = apply_change(  # a run of the production host alone reaches it
        inputs_for(
            tmp_path,
            change,
            machines_inventory(
                booted,
                tmp_path / "production.yaml",
                [booted.production],
                db_port={booted.production: DEAD_PORT},
            ),
            booted,
        ),
        RunOptions(max_errors=2),
    )
    down = production_only.hosts[booted.production]
    assert down.status is HostStatus.FAILED
    assert "pre-check postgresql failed" in down.error
    assert down.steps == []  # no step runs on a host whose database is down
    assert booted.conf_fragment(Environment.PRODUCTION, "shared_buffers") is None

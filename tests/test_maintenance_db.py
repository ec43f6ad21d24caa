"""Database pre-checks and steps against a real PostgreSQL 15 cluster and real pgBackRest.

One cluster archives through pgBackRest into a repository on the local disk (a posix repository:
what is checked here is the runner's use of ``pgbackrest info`` and ``backup`` on the host, not
S3, which the backup tests cover). The runner reaches it over a loopback sshd host.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from erpcloud.model import Customer, Environment
from localtarget.postgres import PostgresCluster, chown_to_postgres, run_as_postgres
from localtarget.processes import free_port
from localtarget.sshhost import SshHost
from maintenance.change import load_change
from maintenance.inventory import load_inventory
from maintenance.localfleet import LocalHost, write_inventory
from maintenance.records import CheckStatus, HostStatus, RunStore
from maintenance.rules import check_change
from maintenance.runner import RunInputs, RunOptions, apply_change, utc_now

pytestmark = pytest.mark.services

STANZA = "lakeside-outfitters"


@dataclass
class DbHost:
    host: SshHost
    cluster: PostgresCluster
    pgbackrest_config: Path

    def db(self, stanza: str | None = STANZA) -> dict[str, Any]:
        entry: dict[str, Any] = {
            "port": self.cluster.port,
            "socket_dir": str(self.cluster.socket_dir),
            "conf_d": str(self.cluster.conf_d),
            "pgbackrest_config": str(self.pgbackrest_config),
        }
        if stanza:
            entry["stanza"] = stanza
        return entry

    def backups(self) -> list[dict[str, Any]]:
        result = run_as_postgres(
            [
                "pgbackrest",
                f"--config={self.pgbackrest_config}",
                f"--stanza={STANZA}",
                "--output=json",
                "info",
            ]
        )
        backups: list[dict[str, Any]] = json.loads(result.stdout)[0]["backup"]
        return backups


@pytest.fixture(scope="module")
def db_host(
    ssh_host_factory: Callable[..., SshHost],
    pg_cluster_factory: Callable[..., PostgresCluster],
) -> DbHost:
    host = ssh_host_factory("db-prod")
    cluster = pg_cluster_factory(start=False)
    base = cluster.root / "pgbackrest"
    for folder in (base, base / "repo", base / "log", base / "lock"):
        folder.mkdir(exist_ok=True)
        chown_to_postgres(folder)
    config = base / "pgbackrest.conf"
    config.write_text(
        "\n".join(
            [
                "[global]",
                f"repo1-path={base / 'repo'}",
                "repo1-retention-full=2",
                f"log-path={base / 'log'}",
                f"lock-path={base / 'lock'}",
                "start-fast=y",
                "log-level-console=warn",
                f"[{STANZA}]",
                f"pg1-path={cluster.data_dir}",
                f"pg1-port={cluster.port}",
                f"pg1-socket-path={cluster.socket_dir}",
                "",
            ]
        )
    )
    chown_to_postgres(config)
    cluster.write_conf(
        "90-archive.conf",
        "archive_mode = on\n"
        f"archive_command = 'pgbackrest --config={config} --stanza={STANZA} archive-push %p'\n",
    )
    cluster.start()
    run_as_postgres(["pgbackrest", f"--config={config}", f"--stanza={STANZA}", "stanza-create"])
    return DbHost(host, cluster, config)


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


def inputs_for(
    tmp_path: Path, change: Path, hosts: list[LocalHost], customers: dict[str, Customer], key: Path
) -> RunInputs:
    inventory = write_inventory(tmp_path / "inventory.yaml", hosts, key)
    store = RunStore(tmp_path / "runs")
    return RunInputs(
        check=check_change(load_change(change), customers, [], store),
        inventory=load_inventory(inventory, customers),
        customers=customers,
        store=store,
        notices_dir=tmp_path / "notices",
        step_timeout=120,
    )


def test_risky_step_takes_a_backup_first_then_finds_it_recent(
    tmp_path: Path,
    db_host: DbHost,
    sample_fleet: dict[str, Customer],
    client_key: tuple[Path, str],
):
    root = db_host.host.state_dir / "risky"
    root.mkdir()
    host = LocalHost(
        db_host.host, "lakeside-outfitters", Environment.PRODUCTION, root, db=db_host.db()
    )
    change = emergency_change(
        tmp_path,
        "emergency-work-mem",
        [{"op": "postgres_setting", "args": {"name": "work_mem", "value": "6MB"}}],
        customers=["lakeside-outfitters"],
        environments=["production"],
    )
    assert db_host.backups() == []

    first = apply_change(
        inputs_for(tmp_path, change, [host], sample_fleet, client_key[0]), RunOptions()
    )

    record = first.hosts["lakeside-outfitters-production"]
    assert record.status is HostStatus.DONE, record.error
    checks = [(c.name, c.status) for c in record.prechecks]
    assert ("postgresql", CheckStatus.OK) in checks
    assert ("backup", CheckStatus.WARNING) in checks  # none yet, and the step is risky...
    assert ("backup", CheckStatus.TAKEN) in checks  # ...so one was taken first (S6)
    assert len(db_host.backups()) == 1
    assert db_host.cluster.psql("show work_mem") == "6MB"
    fragment = db_host.cluster.conf_d / "60-erpcloud-work_mem.conf"
    assert fragment.read_text() == "work_mem = '6MB'\n"
    assert [s.status for s in record.steps] == ["applied"]

    second = apply_change(
        inputs_for(tmp_path, change, [host], sample_fleet, client_key[0]), RunOptions()
    )
    again = second.hosts["lakeside-outfitters-production"]
    backup = next(c for c in again.prechecks if c.name == "backup")
    assert backup.status is CheckStatus.OK and "old" in backup.detail
    assert len(db_host.backups()) == 1  # a recent good backup: none taken
    assert [s.status for s in again.steps] == ["already"]


def test_prechecks_without_backups_or_database_and_a_refused_setting_rolled_back(
    tmp_path: Path,
    db_host: DbHost,
    ssh_host_factory: Callable[..., SshHost],
    sample_fleet: dict[str, Customer],
    client_key: tuple[Path, str],
):
    test_root = db_host.host.state_dir / "test-env"
    test_root.mkdir()
    down_host = ssh_host_factory("db-down")
    down_root = down_host.state_dir / "down"
    down_root.mkdir()
    dead = {"port": free_port(), "socket_dir": str(db_host.cluster.socket_dir)}
    hosts = [
        LocalHost(
            db_host.host, "northwind-trading", Environment.TEST, test_root, db=db_host.db(None)
        ),
        LocalHost(down_host, "northwind-trading", Environment.PRODUCTION, down_root, db=dead),
    ]
    change = emergency_change(
        tmp_path,
        "emergency-shared-buffers",
        [{"op": "postgres_setting", "args": {"name": "shared_buffers", "value": "256MB"}}],
        customers=["northwind-trading"],
    )
    state = apply_change(
        inputs_for(tmp_path, change, hosts, sample_fleet, client_key[0]),
        RunOptions(max_errors=2),
    )
    canary = state.hosts["northwind-trading-test"]
    backup = next(c for c in canary.prechecks if c.name == "backup")
    assert backup.status is CheckStatus.NOT_APPLICABLE and "S9" in backup.detail
    # shared_buffers needs a restart, which a maintenance step never does: refused, rolled back.
    assert canary.status is HostStatus.FAILED and "needs a restart" in canary.error
    assert canary.rollbacks and canary.rollbacks[0].ok
    assert not (db_host.cluster.conf_d / "60-erpcloud-shared_buffers.conf").exists()
    assert (
        db_host.cluster.psql(
            "select pending_restart from pg_settings where name = 'shared_buffers'"
        )
        == "f"
    )
    down = state.hosts["northwind-trading-production"]
    assert state.waves[0].label == "canary"
    assert down.status is HostStatus.UNTOUCHED and "canary" in down.reason  # canary failed
    production_only = apply_change(  # a run of the production host alone reaches it
        inputs_for(tmp_path, change, hosts[1:], sample_fleet, client_key[0]),
        RunOptions(max_errors=2),
    )
    down = production_only.hosts["northwind-trading-production"]
    assert down.status is HostStatus.FAILED
    assert "pre-check postgresql failed" in down.error
    assert down.steps == []  # no step runs on a host whose database is down

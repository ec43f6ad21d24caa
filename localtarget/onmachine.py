"""Work on a booted machine over SSH, as an operator does it on AWS: root in one ``sudo -n bash
-c`` chain, database work as ``postgres`` through ``runuser``, scripts shipped as base64 (stdin
stays closed), every failure raised with the command's last lines.

Used by the demo and the tests on the real machines (:mod:`localtarget.machines`).
"""

from __future__ import annotations

import base64
import shlex
import time
from typing import Final

from erpcloud.model import Environment
from erpcloud.render import PRODUCT_DATABASE
from erpcloud.ssh import connect, result_summary, run_as_root
from localtarget.machines import MachineSetState
from localtarget.sampledata import ORDER_STATEMENT

#: The transient unit that keeps writing orders on production (the demo's shop).
WRITER_UNIT: Final = "erpcloud-demo-orders"


class MachineCommandError(RuntimeError):
    """A command on a machine failed; the message names the machine and shows the output."""


def as_root(
    state: MachineSetState, environment: Environment, script: str, timeout: float = 600
) -> str:
    """``script`` as root on the environment's machine; its standard output."""
    connection = connect(state.ssh_target(environment))
    try:
        result = run_as_root(connection, script, timeout=timeout)
    finally:
        connection.close()
    if result.exited != 0:
        name = state.machines[environment].name
        raise MachineCommandError(f"{name}: {script.splitlines()[0]}…: {result_summary(result)}")
    return str(result.stdout)


def psql(
    state: MachineSetState,
    environment: Environment,
    script: str,
    dbname: str = PRODUCT_DATABASE,
    timeout: float = 600,
) -> str:
    """A psql script as ``postgres`` on the machine (``-XAtq``, stops at the first error)."""
    encoded = base64.b64encode(script.encode()).decode()
    command = (
        f"printf %s {encoded} | base64 -d | runuser -u postgres -- "
        f"psql -XAtq -v ON_ERROR_STOP=1 -d {shlex.quote(dbname)} -f -"
    )
    return as_root(state, environment, command, timeout).strip()


def start_order_writer(state: MachineSetState, interval: float = 0.1) -> None:
    """Keep committing orders on production, as a shop does: a transient systemd unit on the
    machine (``systemctl stop`` ends it)."""
    loop = (
        "while :; do psql -XAtq -d "
        f"{PRODUCT_DATABASE} -c {shlex.quote(ORDER_STATEMENT)} >/dev/null; sleep {interval}; done"
    )
    as_root(
        state,
        Environment.PRODUCTION,
        f"systemd-run --quiet --unit={WRITER_UNIT} --property=User=postgres "
        f"/bin/bash -c {shlex.quote(loop)}",
    )


def stop_order_writer(state: MachineSetState) -> None:
    as_root(state, Environment.PRODUCTION, f"systemctl stop {WRITER_UNIT} || true")


def order_count(state: MachineSetState) -> int:
    return int(psql(state, Environment.PRODUCTION, "SELECT count(*) FROM c_order;"))


def wait_for_orders(state: MachineSetState, more_than: int, timeout: float = 30.0) -> int:
    deadline = time.monotonic() + timeout
    while True:
        count = order_count(state)
        if count > more_than:
            return count
        if time.monotonic() > deadline:
            raise MachineCommandError(f"no new order in {timeout:.0f} s (still {count})")
        time.sleep(0.5)


def switch_wal_and_wait(state: MachineSetState, timeout: float = 90.0) -> str:
    """Close the current WAL segment on production and wait until it is archived (to both
    repositories: one archive-push sends each segment to both, S7); the segment's name."""
    segment = psql(
        state,
        Environment.PRODUCTION,
        "SELECT pg_walfile_name(pg_switch_wal());",
        dbname="postgres",
    )
    deadline = time.monotonic() + timeout
    while True:
        archived = psql(
            state,
            Environment.PRODUCTION,
            "SELECT coalesce(last_archived_wal, '') FROM pg_stat_archiver;",
            dbname="postgres",
        )
        if archived and archived[-24:] >= segment:
            return segment
        if time.monotonic() > deadline:
            raise MachineCommandError(f"WAL segment {segment} not archived in {timeout:.0f} s")
        time.sleep(0.5)

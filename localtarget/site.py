"""The local machines as a site (:class:`erpcloud.sites.LocalSite`): what AWS does through its
APIs or the stack, done to the machines ``erpcloud local up`` booted. Everything else (SSH,
pgBackRest, psql) reaches them through their inventory, as on AWS."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from erpcloud.files import directory_bytes
from erpcloud.sites import LocalCustomer
from localtarget import machine, machines
from localtarget.drillmachine import teardown_for_customer
from localtarget.processes import pid_alive


def _state(customer_id: str) -> machines.MachineSetState | None:
    if not (machines.machines_root(customer_id) / machines.STATE_FILE).is_file():
        return None
    return machines.load_state(customer_id)


class MachinesSite:
    """The customer's machines under :func:`localtarget.machines.machines_root`."""

    def find(self, customer_id: str) -> LocalCustomer | None:
        state = _state(customer_id)
        if state is None or not state.inventory:
            return None
        running = all(pid_alive(r.pid) for r in state.machines.values()) and all(
            pid_alive(pid) for pid in state.aws_pids
        )
        return LocalCustomer(
            customer_id=customer_id,
            description=f"local machines ({state.root})",
            inventory=Path(state.inventory),
            ssh_key_file=state.ops_key,
            running=running,
            support_ca_key=str(state.support_ca_key),
        )

    def aws_client(self, customer_id: str, service: str, region: str) -> Any:
        state = _state(customer_id)
        if state is None or not all(pid_alive(pid) for pid in state.aws_pids):
            return None
        return state.aws_client(service, region)

    def stop_instances(self, customer_id: str) -> list[str]:
        state = _state(customer_id)
        if state is None:
            return []
        stopped = [f"drill machine: {line}" for line in teardown_for_customer(customer_id)]
        # Production last: its clean shutdown archives the last WAL segment.
        order = sorted(state.machines.items(), key=lambda item: item[0].has_backups)
        for environment, record in order:
            if pid_alive(record.pid):
                machine.power_off(record, timeout=60)
                stopped.append(f"{environment.value} machine {record.name}")
        return stopped

    def disk_used_bytes(self, customer_id: str) -> int | None:
        state = _state(customer_id)
        if state is None:
            return None
        production = next(r for env, r in state.machines.items() if env.has_backups)
        data = Path(production.directory) / "data"
        return directory_bytes(data) if data.is_dir() else None

    def remove(self, customer_id: str) -> list[str]:
        state = _state(customer_id)
        if state is None:
            return []
        stopped = machines.down(customer_id)["stopped"]
        folders = [state.root, *(r.directory for r in state.machines.values())]
        still = [folder for folder in folders if Path(folder).exists()]
        if still:
            raise RuntimeError(f"still present after removing the machines: {', '.join(still)}")
        assert isinstance(stopped, list)
        return [*map(str, stopped), f"removed {state.root}"]

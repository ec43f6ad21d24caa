"""A local fleet for the maintenance runner (S11-S14): small machines from the product image.

Each machine is a real one (:mod:`localtarget.machine`: the image under its own writable layer,
its own network namespace on a bridge of the fleet's own, systemd as PID 1, sshd on port 22),
booted with minimal user-data, as drill machines are: one non-root login (the operations
user, key only, passwordless sudo) whose key the fleet's owner holds, and Debian's default
cluster disabled (a runner fleet has no database; a host with one is a customer's machine
from :func:`localtarget.machines.up`). Its host keys are pinned from the console, as an operator
pins them from ``ec2 get-console-output``; then ``cloud-init status --wait`` must say done and
no unit may have failed.

The machines boot at once (:func:`boot_fleet`) and are powered off and removed by
:meth:`Fleet.teardown`. Which customer and environment a machine serves is the inventory's say
(:meth:`Fleet.host`, :func:`write_inventory`, the format of :mod:`erpcloud.inventory`), so
one fleet serves several inventories, each under a ``host_root`` of its own on every machine.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import os
import posixpath
import shlex
import shutil
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Protocol

import yaml
from fabric import Connection

from erpcloud import policy
from erpcloud.files import write_atomic
from erpcloud.model import Environment
from erpcloud.ssh import SshTarget, connect, result_summary, run_as_root
from localtarget import machine
from localtarget.image import build_image
from localtarget.keys import generate_keypair
from localtarget.processes import STATE_BASE

FLEETS_BASE: Final = STATE_BASE / "fleets"
READY_TIMEOUT_SECONDS: Final = 240.0

Progress = Callable[[str], None]
q = shlex.quote


class FleetError(machine.MachineError):
    """A fleet machine did not boot, is not ready, or a command on it failed."""


# --- the inventory ------------------------------------------------------------------------------
class InventoryEntry(Protocol):
    """A host of an inventory: its ``hosts[]`` entry in :mod:`erpcloud.inventory`'s format."""

    def entry(self) -> dict[str, Any]: ...


def inventory_document(
    hosts: Sequence[InventoryEntry], key_file: Path, https_ca_file: Path | None = None
) -> dict[str, Any]:
    document: dict[str, Any] = {
        "ssh_key_file": str(key_file),
        "hosts": [h.entry() for h in hosts],
    }
    if https_ca_file is not None:
        document["https_ca_file"] = str(https_ca_file)
    return document


def write_inventory(
    path: Path,
    hosts: Sequence[InventoryEntry],
    key_file: Path,
    https_ca_file: Path | None = None,
) -> Path:
    document = inventory_document(hosts, key_file, https_ca_file)
    write_atomic(path, yaml.safe_dump(document, sort_keys=False), mode=0o600)
    return path


# --- the fleet --------------------------------------------------------------------------------
@dataclass(frozen=True)
class FleetMachine:
    """A booted, ready machine of the fleet."""

    name: str
    record: machine.MachineRecord

    @property
    def address(self) -> str:
        return self.record.address

    @property
    def host_key(self) -> str:
        """The key the inventory pins: ed25519, the one paramiko negotiates first."""
        keys = sorted(self.record.host_keys, key=lambda k: not k.startswith("ssh-ed25519"))
        return keys[0]


@dataclass(frozen=True)
class FleetHost:
    """One inventory host on a fleet machine: which customer environment it serves, where."""

    machine: FleetMachine
    user: str
    customer: str
    environment: Environment
    host_root: str = "/"
    https_url: str | None = None
    db: Mapping[str, Any] | None = None
    #: Where the runner connects (default: the machine); another address stands for a host
    #: that is down, another key for one that was reinstalled.
    address: str | None = None
    host_key: str | None = None

    @property
    def name(self) -> str:
        return f"{self.customer}-{self.environment.value}"

    def entry(self) -> dict[str, Any]:
        entry: dict[str, Any] = {
            "name": self.name,
            "customer": self.customer,
            "environment": self.environment.value,
            "ssh": {
                "host": self.address or self.machine.address,
                "port": 22,
                "user": self.user,
                "host_key": self.host_key or self.machine.host_key,
            },
            "host_root": self.host_root,
        }
        if self.https_url:
            entry["https_url"] = self.https_url
        if self.db:
            entry["db"] = dict(self.db)
        return entry


@dataclass
class Fleet:
    """Machines on a bridge of their own, the login key, and their pinned host keys."""

    directory: Path
    network: machine.Network
    user: str
    key_file: Path
    known_hosts: Path
    machines: dict[str, FleetMachine] = field(default_factory=dict)
    records: list[machine.MachineRecord] = field(default_factory=list)
    _connections: dict[str, Connection] = field(default_factory=dict)

    def target(self, name: str) -> SshTarget:
        return SshTarget(
            host=self.machines[name].address,
            port=22,
            user=self.user,
            key_filename=self.key_file,
            known_hosts=self.known_hosts,
        )

    def host(self, name: str, customer: str, environment: Environment, **options: Any) -> FleetHost:
        return FleetHost(self.machines[name], self.user, customer, environment, **options)

    def free_address(self) -> str:
        """An address on the fleet's bridge where no machine runs (a host that is down)."""
        taken = {r.address for r in self.records}
        for slot in range(len(self.records), 200):
            address = self.network.machine_address(slot)
            if address not in taken:
                return address
        raise FleetError(f"no free address on {self.network.bridge}")

    def as_root(self, name: str, script: str, timeout: float = 120) -> str:
        """``script`` as root on machine ``name`` (one ``sudo -n bash -c``); its output."""
        connection = self._connections.get(name)
        if connection is None or not connection.is_connected:
            connection = connect(self.target(name))
            self._connections[name] = connection
        result = run_as_root(connection, script, timeout=timeout)
        if result.exited != 0:
            raise FleetError(f"{name}: {script[:120]}: {result_summary(result)}")
        return str(result.stdout)

    # Files as the machine sees them (over SSH, as root).
    def read(self, name: str, path: str) -> str | None:
        """The file's text, or None where it does not exist."""
        out = self.as_root(name, f"if [ -f {q(path)} ]; then echo y; base64 -w0 {q(path)}; fi")
        if not out.startswith("y"):
            return None
        return base64.b64decode(out[1:].strip()).decode()

    def write(self, name: str, path: str, text: str) -> None:
        data = base64.b64encode(text.encode()).decode()
        self.as_root(
            name,
            f"mkdir -p {q(posixpath.dirname(path))} && echo {data} | base64 -d > {q(path)}",
        )

    def exists(self, name: str, path: str) -> bool:
        return self.as_root(name, f"if [ -e {q(path)} ]; then echo y; fi").strip() == "y"

    def mode(self, name: str, path: str) -> int:
        return int(self.as_root(name, f"stat -c %a {q(path)}").strip(), 8)

    def remove(self, name: str, path: str) -> None:
        self.as_root(name, f"rm -rf -- {q(path)}")

    def teardown(self) -> list[str]:
        """Power every machine off, remove its files, the bridge and the fleet's folder."""
        done = []
        for connection in self._connections.values():
            with contextlib.suppress(Exception):
                connection.close()
        self._connections.clear()
        for record in reversed(self.records):
            machine.power_off(record)
            machine.remove_machine_files(record)
            done.append(f"{record.name} ({record.address}) powered off")
        self.network.remove()
        done.append(f"bridge {self.network.bridge} removed")
        shutil.rmtree(self.directory, ignore_errors=True)
        return done


def boot_fleet(
    names: Sequence[str],
    release: str,
    progress: Progress = lambda _m: None,
    *,
    timeout: float = READY_TIMEOUT_SECONDS,
) -> Fleet:
    """Boot one machine per name from ``release``'s product image, all at once, on a bridge of
    their own; return when every one is ready (host keys pinned from the console, cloud-init
    done, no failed unit), or raise after removing everything started."""
    began = time.monotonic()
    image = build_image(release, progress=progress)
    FLEETS_BASE.mkdir(parents=True, exist_ok=True)
    FLEETS_BASE.chmod(0o755)
    tag = hashlib.sha256(f"{os.getpid()} {time.time_ns()}".encode()).hexdigest()[:6]
    directory = FLEETS_BASE / f"fleet-{tag}"
    directory.mkdir()
    directory.chmod(0o755)
    network = machine.allocate_network()
    fleet = Fleet(
        directory=directory,
        network=network,
        user=policy.OPERATIONS_USER,
        key_file=directory / "id_ed25519",
        known_hosts=directory / "known_hosts",
    )
    try:
        public = generate_keypair(fleet.key_file, f"erpcloud maintenance fleet {tag}")
        fleet.known_hosts.write_text("")
        for slot, name in enumerate(names):
            hostname = f"{name}-{tag}"
            spec = machine.MachineSpec(
                name=hostname,
                instance_id=f"i-{hashlib.sha256(hostname.encode()).hexdigest()[:17]}",
                image_root=image.root,
                user_data=machine.operations_user_data(hostname, fleet.user, public),
                network=network,
                slot=slot,
            )
            progress(f"booting {hostname} ({spec.address})")
            fleet.records.append(machine.boot(spec, directory / name))
        # They boot side by side; each is waited for in turn (the slowest sets the time).
        for name, record in zip(names, fleet.records, strict=True):
            record.host_keys = machine.wait_for_host_keys(record, timeout)
            machine.pin_host_keys(record, fleet.known_hosts)
            fleet.machines[name] = FleetMachine(name, record)
        for name in names:
            readiness = machine.check_ready(fleet.target(name), timeout)
            if not readiness.ready:
                raise FleetError(machine.readiness_report(name, readiness))
    except BaseException:
        with contextlib.suppress(Exception):  # the boot's own error is the one to see
            fleet.teardown()
        raise
    progress(f"{len(names)} machine(s) ready in {time.monotonic() - began:.1f} s")
    return fleet

"""Drill machines (issue 12): one fresh machine from the customer's image per restore drill.

A restore drill (S8) restores a backup onto a host of its own and never onto production. On the
machines site that host is a machine booted from the same product image as production (Debian
13, PostgreSQL 17, pgBackRest 2.55), so every pgBackRest command of the drill runs where it
would run on AWS: on a machine from the image, signed by an instance role of its own.

- **Network**: the target's bridge (``erpbrN``), in a free slot from 2 on (0 and 1 are
  production and test); the slot is taken under a lock, so parallel drills never share one.
- **Disk and data volume** as :func:`localtarget.machine.boot` makes them for every machine
  (the image under the machine's own writable layer, the data volume a copy of the image's
  ``/var/lib/postgresql``).
- **User-data**: minimal, not the customer's: the operations user with the target's ops key
  (key only, passwordless sudo), ``manage_etc_hosts``, hostname ``drill-<short>``, and Debian's
  default cluster disabled (the drill runs its own restored cluster).
- **Site files** as for the other machines (the emulator's endpoint and CA), and an IMDSv2
  stand-in handing out a **drill role**: an emulator IAM user ``<customer>-drill-<short>``,
  deleted at teardown.

Readiness is the machines' own: console host keys pinned (in the drill's own known_hosts), then
:func:`localtarget.machine.check_ready`. A machine that is not ready is powered off and removed,
and the error carries its journals.

Everything about one drill machine is in ``/var/lib/erpcloud/drill-machines/<customer>-<short>/``
(state in ``drill-machine.json``), so another process (``fab dr.teardown`` after ``--keep``) can
power it off: :func:`teardown_directory`.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from ipaddress import IPv4Address
from pathlib import Path
from typing import Any, Final

from pydantic import BaseModel, SecretStr

from dr.host import DEFAULT_DRILL_ROOT, DrillHostSpec
from erpcloud import policy
from erpcloud.files import write_atomic
from erpcloud.model import Customer
from erpcloud.ssh import SshTarget
from localtarget import machine
from localtarget.imds import ImdsConfig, add_metadata_address, start_in_netns
from localtarget.machines import MachineSetState, place_site_files, site_variables
from localtarget.processes import LOOPBACK, STATE_BASE
from localtarget.s3 import EMULATOR_ACCESS_KEY, EMULATOR_SECRET_KEY

DRILL_MACHINES_BASE: Final = STATE_BASE / "drill-machines"
STATE_FILE: Final = "drill-machine.json"
#: Slots on the target's network: 0 and 1 are production and test.
DRILL_SLOTS: Final = range(2, 200)
READY_TIMEOUT_SECONDS: Final = 240.0

Progress = Callable[[str], None]


class DrillMachineError(machine.MachineError):
    """A drill machine did not boot or is not ready; the message holds why (journals)."""


def short_id(drill_id: str) -> str:
    """Eight hex characters of the drill id: the machine's and the drill role's suffix."""
    return hashlib.sha256(drill_id.encode()).hexdigest()[:8]


def drill_user_data(hostname: str, ops_public_key: str) -> str:
    """The drill machine's user-data: the operations user only, and no default cluster."""
    return machine.operations_user_data(hostname, policy.OPERATIONS_USER, ops_public_key)


class DrillMachineState(BaseModel):
    """``drill-machine.json``: what :func:`teardown_directory` needs, in any process."""

    customer_id: str
    drill_id: str
    directory: str
    iam_user: str
    aws_http_port: int
    known_hosts: str
    record: machine.MachineRecord | None = None


# --- the emulator's IAM: the drill role --------------------------------------------------------
def _iam(aws_http_port: int) -> Any:
    import boto3

    return boto3.client(
        "iam",
        region_name="us-east-1",  # aws-fact: IAM is global; its API lives in us-east-1
        endpoint_url=f"http://{LOOPBACK}:{aws_http_port}",
        aws_access_key_id=EMULATOR_ACCESS_KEY,
        aws_secret_access_key=EMULATOR_SECRET_KEY,
    )


def _create_drill_role(aws_http_port: int, name: str, customer_id: str) -> tuple[str, str]:
    iam = _iam(aws_http_port)
    iam.create_user(
        UserName=name,
        Tags=[
            {"Key": "erpcloud:customer", "Value": customer_id},
            {"Key": "erpcloud:purpose", "Value": "restore-drill"},
        ],
    )
    key = iam.create_access_key(UserName=name)["AccessKey"]
    return str(key["AccessKeyId"]), str(key["SecretAccessKey"])


def _delete_drill_role(aws_http_port: int, name: str) -> str:
    """Delete the drill role's keys and user; says what happened (the emulator may be gone)."""
    try:
        iam = _iam(aws_http_port)
        for key in iam.list_access_keys(UserName=name)["AccessKeyMetadata"]:
            iam.delete_access_key(UserName=name, AccessKeyId=key["AccessKeyId"])
        iam.delete_user(UserName=name)
    except Exception as exc:
        if "NoSuchEntity" in str(exc):
            return f"drill role {name} already gone"
        return f"drill role {name} NOT deleted ({type(exc).__name__}: {exc})"
    return f"drill role {name} deleted"


def drill_role_exists(aws_http_port: int, name: str) -> bool:
    try:
        _iam(aws_http_port).get_user(UserName=name)
    except Exception as exc:
        if "NoSuchEntity" in str(exc):
            return False
        raise
    return True


# --- slots on the target's network -------------------------------------------------------------
@contextlib.contextmanager
def _slot_lock(network: machine.Network) -> Iterator[None]:
    """One booter at a time picks a slot on ``network`` and creates its namespace and veth."""
    DRILL_MACHINES_BASE.mkdir(parents=True, exist_ok=True)
    with (DRILL_MACHINES_BASE / f".slots-{network.bridge}.lock").open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _links() -> set[str]:
    out = subprocess.run(
        ["ip", "-o", "link", "show"], capture_output=True, text=True, check=True
    ).stdout
    return {line.split(":")[1].strip().split("@")[0] for line in out.splitlines() if ":" in line}


def free_slot(network: machine.Network) -> int:
    """The lowest drill slot whose veth and namespace do not exist (call under the lock)."""
    links = _links()
    for slot in DRILL_SLOTS:
        short = f"m{network.index}x{slot}"
        if f"ve-{short}" not in links and not Path(f"/run/netns/erp-{short}").exists():
            return slot
    raise DrillMachineError(f"no free drill slot on {network.bridge}")


def _forget_neighbour(address: str) -> None:
    """Drop the host's ARP entry for ``address``: a slot is reused by the next drill machine
    with another MAC address, and a stale entry holds connections off for half a minute."""
    subprocess.run(["ip", "neigh", "flush", "to", address], capture_output=True, check=False)


# --- one drill machine -------------------------------------------------------------------------
@dataclass
class DrillMachine:
    """A booted drill machine; :meth:`teardown` powers it off and removes everything of it."""

    state: DrillMachineState

    @property
    def directory(self) -> Path:
        return Path(self.state.directory)

    @property
    def address(self) -> str:
        assert self.state.record is not None
        return self.state.record.address

    def save(self) -> None:
        write_atomic(self.directory / STATE_FILE, self.state.model_dump_json(indent=2) + "\n")

    def teardown(self) -> list[str]:
        return teardown_state(self.state)


def teardown_state(state: DrillMachineState) -> list[str]:
    """Power off (a clean shutdown inside; the IMDS stand-in, namespace and veth go with it),
    remove the machine's disk and files, delete the drill role. What is already gone is
    skipped."""
    done = []
    record = state.record
    if record is not None:
        machine.power_off(record)
        _forget_neighbour(record.address)
        done.append(f"drill machine {record.name} ({record.address}) powered off")
        machine.remove_machine_files(record)
    shutil.rmtree(state.directory, ignore_errors=True)
    done.append(f"{state.directory} removed")
    done.append(_delete_drill_role(state.aws_http_port, state.iam_user))
    return done


def teardown_directory(directory: Path) -> list[str]:
    """Tear down the drill machine whose folder is ``directory`` (e.g. after ``--keep``)."""
    path = directory / STATE_FILE
    if not path.is_file():
        return [f"no drill machine in {directory}"]
    return teardown_state(DrillMachineState.model_validate_json(path.read_text()))


def teardown_for_customer(customer_id: str) -> list[str]:
    """Tear down every drill machine of ``customer_id`` (kept ones included): what taking the
    customer's machines down must do first, since the drill machines sit on their network."""
    done = []
    if DRILL_MACHINES_BASE.is_dir():
        for path in sorted(DRILL_MACHINES_BASE.glob(f"{customer_id}-*/{STATE_FILE}")):
            state = DrillMachineState.model_validate_json(path.read_text())
            if state.customer_id == customer_id:
                done += teardown_state(state)
    return done


def _imds_config(
    customer: Customer, spec: machine.MachineSpec, role: str, key: tuple[str, str]
) -> dict[str, Any]:
    # A drill restores from the copy region by default (S8): the drill machine stands there.
    region = customer.backup_copy_region
    config = ImdsConfig(
        instance_id=spec.instance_id,
        region=region,
        availability_zone=f"{region}a",
        role_name=role,
        access_key_id=key[0],
        secret_access_key=SecretStr(key[1]),
        local_ipv4=IPv4Address(spec.address),
        hostname=spec.name,
        instance_type=customer.production.instance_type,
    )
    payload = config.model_dump(mode="json")
    payload["secret_access_key"] = key[1]
    return payload


def _imds_starter(payload: dict[str, Any]) -> Callable[[str, Path], int]:
    def start(netns: str, directory: Path) -> int:
        path = directory / "imds.json"
        path.touch(mode=0o600)
        path.chmod(0o600)
        path.write_text(json.dumps(payload))
        add_metadata_address(netns)
        return start_in_netns(netns, path, directory / "imds.log").pid

    return start


def boot_drill_machine(
    state: MachineSetState,
    customer: Customer,
    drill_id: str,
    progress: Progress = lambda _m: None,
    *,
    timeout: float = READY_TIMEOUT_SECONDS,
) -> tuple[DrillHostSpec, DrillMachine]:
    """Boot a drill machine for ``drill_id`` on the target's network; return when it is ready
    (host keys pinned, cloud-init done, no failed unit), or raise after removing it."""
    began = time.monotonic()
    short = short_id(drill_id)
    name = f"drill-{short}"
    image_root = Path(str(state.image["root"]))
    network = machine.Network(state.network_index)
    if not network.exists():
        raise DrillMachineError(f"the target's network {network.bridge} does not exist")
    directory = DRILL_MACHINES_BASE / f"{customer.id}-{short}"
    directory.mkdir(parents=True, exist_ok=False)
    directory.chmod(0o755)
    known_hosts = directory / "known_hosts"
    known_hosts.write_text("")
    drill = DrillMachine(
        DrillMachineState(
            customer_id=customer.id,
            drill_id=drill_id,
            directory=str(directory),
            iam_user=f"{customer.id}-drill-{short}",
            aws_http_port=state.aws_http_port,
            known_hosts=str(known_hosts),
        )
    )
    drill.save()
    try:
        ops_public = Path(f"{state.ops_key}.pub").read_text().strip()
        key = _create_drill_role(state.aws_http_port, drill.state.iam_user, customer.id)
        ca_pem = (Path(state.root) / "aws" / "tls" / "s3-tls.crt").read_text()
        variables = site_variables(network.host_address, state.aws_tls_port)

        with _slot_lock(network):
            spec = machine.MachineSpec(
                name=name,
                instance_id=f"i-{hashlib.sha256(drill_id.encode()).hexdigest()[:17]}",
                image_root=image_root,
                user_data=drill_user_data(name, ops_public),
                network=network,
                slot=free_slot(network),
            )
            progress(f"booting drill machine {name} ({spec.address}) from {image_root.parent.name}")
            try:
                drill.state.record = machine.boot(
                    spec,
                    directory / "machine",
                    start_imds=_imds_starter(
                        _imds_config(customer, spec, drill.state.iam_user, key)
                    ),
                    before_start=lambda disk: place_site_files(disk, variables, ca_pem),
                )
            finally:
                drill.save()
        record = drill.state.record
        assert record is not None
        _forget_neighbour(record.address)
        record.host_keys = machine.wait_for_host_keys(record, timeout)
        machine.pin_host_keys(record, known_hosts)
        drill.save()
        progress(f"{name}: host keys on the console ({time.monotonic() - began:.1f} s)")
        target = SshTarget(
            host=record.address,
            port=22,
            user=state.ops_user,
            key_filename=Path(state.ops_key),
            known_hosts=known_hosts,
        )
        readiness = machine.check_ready(target, timeout)
        if not readiness.ready:
            raise DrillMachineError(machine.readiness_report(record.name, readiness))
    except BaseException:
        with contextlib.suppress(Exception):  # the boot's own error is the one to see
            teardown_state(drill.state)
        raise
    progress(f"drill machine {name} ready in {time.monotonic() - began:.1f} s")
    return DrillHostSpec(name, target, DEFAULT_DRILL_ROOT), drill

"""Real machines: the product image booted with ``systemd-nspawn --boot`` (systemd as PID 1).

Each machine is what an EC2 instance is, on this host:

- its own disk (a copy of the image) and a separate data folder mounted on
  ``/var/lib/postgresql``, standing for the EBS data volume (so the image's
  ``prepare-data-volume`` finds its volume mounted, as after the first boot on AWS);
- its own network namespace (``ip netns``), joined by a veth to the target's bridge, with an
  address the target assigns and sshd on port 22;
- a NoCloud seed whose ``user-data`` is the rendered file, byte for byte, and whose
  ``meta-data`` and ``network-config`` say what EC2's metadata would;
- optionally an IMDSv2 stand-in on 169.254.169.254 inside its namespace (``localtarget/imds.py``),
  serving credentials scoped like the instance role.

Readiness is what an operator checks on AWS: the host keys cloud-init prints on the console
(``ec2 get-console-output``) are pinned, then over SSH with those keys ``cloud-init status
--wait`` must say done and ``systemctl --failed`` must be empty. Anything else is a
:class:`MachineError` carrying the failing units' journals.

Only namespaces and addresses this module creates are used: the target's bridge and its
198.18.0.0/15 addresses (the range set aside for network tests, RFC 2544); the machines have no
route beyond the bridge.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import yaml
from fabric import Connection
from pydantic import BaseModel

from erpcloud.ssh import HostKeyError, SshTarget, connect, run, run_as_root
from localtarget.processes import pid_alive

#: The addresses local targets give their bridges and machines (RFC 2544's test range).
MACHINE_NETWORKS: Final = ipaddress.ip_network("198.18.0.0/15")
BRIDGE_PREFIX: Final = "erpbr"
SEED_MOUNT: Final = "/var/lib/cloud/seed/nocloud"
CGROUP_FOLDER: Final = "erpcloud-machines"
DATA_MOUNT: Final = "/var/lib/postgresql"
HOST_KEYS_BEGIN: Final = "-----BEGIN SSH HOST KEY KEYS-----"
HOST_KEYS_END: Final = "-----END SSH HOST KEY KEYS-----"
_KEY_LINE = re.compile(r"^(ssh-ed25519|ecdsa-sha2-nistp\d+|ssh-rsa) ([A-Za-z0-9+/=]+)(?: .*)?$")

Progress = Callable[[str], None]


class MachineError(RuntimeError):
    """A machine did not boot, or booted with a failure; the message shows why."""


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(["ip", *args], capture_output=True, text=True, check=False)
    if check and result.returncode != 0:
        raise MachineError(f"ip {' '.join(args)}: {result.stderr.strip()}")
    return result


def operations_user_data(hostname: str, user: str, public_key: str) -> str:
    """User-data of a machine that only the provider works on (a drill machine, a runner
    fleet's host): one key-only login with passwordless sudo (``sudo -n``), and Debian's default
    cluster disabled (a drill starts its own restored one; a fleet host has none)."""
    document = {
        "hostname": hostname,
        "manage_etc_hosts": True,
        "disable_root": True,
        "ssh_pwauth": False,
        "users": [
            {
                "name": user,
                "shell": "/bin/bash",
                "lock_passwd": True,
                "sudo": "ALL=(ALL) NOPASSWD:ALL",
                "ssh_authorized_keys": [public_key],
            }
        ],
        "runcmd": [["systemctl", "disable", "--now", "postgresql"]],
    }
    return "#cloud-config\n" + yaml.safe_dump(document, sort_keys=False)


# --- the target's network ---------------------------------------------------------------------
@dataclass(frozen=True)
class Network:
    """One local target's bridge and its /24 (host side ``.1``, machines from ``.10``)."""

    index: int

    @property
    def bridge(self) -> str:
        return f"{BRIDGE_PREFIX}{self.index}"

    @property
    def subnet(self) -> ipaddress.IPv4Network:
        first = int(MACHINE_NETWORKS.network_address) + self.index * 256
        return ipaddress.IPv4Network((first, 24))

    @property
    def host_address(self) -> str:
        return str(self.subnet.network_address + 1)

    def machine_address(self, slot: int) -> str:
        if not 0 <= slot < 200:
            raise MachineError(f"machine slot {slot} outside 0..199")
        return str(self.subnet.network_address + 10 + slot)

    def exists(self) -> bool:
        return _ip("link", "show", self.bridge, check=False).returncode == 0

    def remove(self) -> None:
        if self.exists():
            _ip("link", "del", self.bridge)


def allocate_network() -> Network:
    """The lowest-numbered bridge not in use (one per local target)."""
    taken = {
        int(name[len(BRIDGE_PREFIX) :])
        for name in _link_names()
        if name.startswith(BRIDGE_PREFIX) and name[len(BRIDGE_PREFIX) :].isdigit()
    }
    for index in range(MACHINE_NETWORKS.num_addresses // 256):
        if index in taken:
            continue
        network = Network(index)
        # Creating the bridge is the claim: another ``up`` running at the same time may have
        # taken this index since the listing; then the next one is tried.
        if _ip("link", "add", network.bridge, "type", "bridge", check=False).returncode != 0:
            continue
        _ip("addr", "add", f"{network.host_address}/24", "dev", network.bridge)
        _ip("link", "set", network.bridge, "up")
        return network
    raise MachineError("every local machine network is in use")


def _link_names() -> list[str]:
    out = _ip("-o", "link", "show").stdout
    return [line.split(":")[1].strip().split("@")[0] for line in out.splitlines() if ":" in line]


# --- one machine ------------------------------------------------------------------------------
@dataclass(frozen=True)
class MachineSpec:
    """Everything needed to boot one machine."""

    name: str  # the machine (and its hostname in meta-data)
    instance_id: str
    image_root: Path
    user_data: str
    network: Network
    slot: int

    @property
    def short(self) -> str:
        """Kernel interface names are at most 15 characters: ``m<bridge>x<slot>``."""
        return f"m{self.network.index}x{self.slot}"

    @property
    def address(self) -> str:
        return self.network.machine_address(self.slot)


class MachineRecord(BaseModel):
    """A booted machine: enough to reach it, inspect it and power it off (kept in state files)."""

    name: str
    instance_id: str
    address: str
    short: str
    pid: int
    netns: str
    veth: str
    directory: str
    host_keys: list[str] = []
    imds_pid: int | None = None

    @property
    def console_log(self) -> Path:
        return Path(self.directory) / "console.log"

    def known_hosts_lines(self) -> list[str]:
        return [f"{self.address} {' '.join(k.split()[:2])}" for k in self.host_keys]


def seed_files(spec: MachineSpec) -> dict[str, str]:
    """The NoCloud seed: user-data as rendered, meta-data and network-config as EC2 says."""
    meta = {"instance-id": spec.instance_id, "local-hostname": spec.name}
    network = {
        "version": 2,
        "ethernets": {"host0": {"addresses": [f"{spec.address}/24"]}},
    }
    return {
        "user-data": spec.user_data,
        "meta-data": yaml.safe_dump(meta, sort_keys=False),
        "network-config": yaml.safe_dump(network, sort_keys=False),
    }


def mount_disk(image_root: Path, directory: Path) -> Path:
    """The machine's disk: the image, read-only, under the machine's own writable layer
    (overlayfs), as an EBS root volume is made from a snapshot; copying the image instead
    took 2-20 s per machine here (ext4 has no reflinks)."""
    root, upper, work = directory / "root", directory / "disk", directory / "disk-work"
    for folder in (root, upper, work):
        folder.mkdir(parents=True, exist_ok=True)
    options = f"lowerdir={image_root},upperdir={upper},workdir={work}"
    result = subprocess.run(
        ["mount", "-t", "overlay", "overlay", "-o", options, str(root)],
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise MachineError(f"mounting the disk of {directory.name}: {result.stderr.strip()}")
    return root


def unmount_disk(directory: Path) -> None:
    root = directory / "root"
    if root.is_dir() and os.path.ismount(root):
        subprocess.run(["umount", "--lazy", str(root)], capture_output=True, check=False)


def prepare(spec: MachineSpec, directory: Path) -> None:
    """The machine's disk, data volume and seed, under ``directory``."""
    data, seed = directory / "data", directory / "seed"
    seed.mkdir(parents=True, exist_ok=False)
    # The data volume: on AWS, prepare-data-volume copies the image's cluster onto the blank
    # volume at first boot; locally the volume is this folder, prepared the same way.
    subprocess.run(
        ["cp", "-a", str(spec.image_root / DATA_MOUNT.lstrip("/")), str(data)],
        check=True,
        capture_output=True,
    )
    mount_disk(spec.image_root, directory)
    for name, text in seed_files(spec).items():
        (seed / name).write_bytes(text.encode("utf-8"))
    seed.chmod(0o755)


def _netns_create(spec: MachineSpec) -> tuple[str, str]:
    netns, veth = f"erp-{spec.short}", f"ve-{spec.short}"
    _ip("netns", "add", netns)
    _ip("link", "add", veth, "type", "veth", "peer", "name", "host0", "netns", netns)
    _ip("link", "set", veth, "master", spec.network.bridge)
    _ip("link", "set", veth, "up")
    return netns, veth


def boot(
    spec: MachineSpec,
    directory: Path,
    *,
    start_imds: Callable[[str, Path], int] | None = None,
    before_start: Callable[[Path], None] | None = None,
) -> MachineRecord:
    """Prepare and start the machine; returns at once (then :func:`wait_for_host_keys` and
    :func:`check_ready`).

    ``before_start(root)`` may add the site's files to the machine's disk; ``start_imds(netns,
    directory)`` starts the metadata stand-in in its namespace and returns its PID. On any
    failure what was created is removed again.
    """
    directory.mkdir(parents=True, exist_ok=False)
    record = MachineRecord(
        name=spec.name,
        instance_id=spec.instance_id,
        address=spec.address,
        short=spec.short,
        pid=0,
        netns=f"erp-{spec.short}",
        veth=f"ve-{spec.short}",
        directory=str(directory),
    )
    try:
        prepare(spec, directory)
        if before_start is not None:
            before_start(directory / "root")
        _netns_create(spec)
        if start_imds is not None:
            record.imds_pid = start_imds(record.netns, directory)
        argv = [
            "systemd-nspawn",
            f"--directory={directory / 'root'}",
            "--boot",
            "--register=no",
            "--keep-unit",
            f"--machine={spec.name}",
            "--console=read-only",
            "--capability=CAP_NET_ADMIN",
            f"--network-namespace-path=/run/netns/{record.netns}",
            f"--bind-ro={directory / 'seed'}:{SEED_MOUNT}",
            f"--bind={directory / 'data'}:{DATA_MOUNT}",
        ]
        # Pure cgroup v2 inside: the hybrid default taints the journal, and newer systemd
        # drops v1 (COMPONENT-NOTES, Debian 13 guests).
        env = {**os.environ, "SYSTEMD_NSPAWN_UNIFIED_HIERARCHY": "1"}
        cgroups = machine_cgroups(spec.short)
        for folder in cgroups:
            folder.mkdir(parents=True, exist_ok=True)
        with record.console_log.open("wb") as console:
            process = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=console,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,
                preexec_fn=_enter_cgroups(cgroups),
            )
        record.pid = process.pid
    except BaseException:
        power_off(record)
        raise
    return record


# --- readiness --------------------------------------------------------------------------------
def console_host_keys(console: str) -> list[str]:
    """The host keys cloud-init printed between its markers (as ``get-console-output`` shows)."""
    if HOST_KEYS_END not in console:
        return []
    block = console.split(HOST_KEYS_BEGIN, 1)[-1].split(HOST_KEYS_END, 1)[0]
    keys = []
    for raw in block.splitlines():
        match = _KEY_LINE.match(raw.strip())
        if match:
            keys.append(f"{match.group(1)} {match.group(2)}")
    return keys


def _console_tail(record: MachineRecord, lines: int = 30) -> str:
    try:
        text = record.console_log.read_text(errors="replace")
    except OSError:
        return "(no console output)"
    return "\n".join(text.splitlines()[-lines:])


def wait_for_host_keys(record: MachineRecord, timeout: float) -> list[str]:
    """Read the console until cloud-init has printed the host keys (it does so at its end)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not pid_alive(record.pid):
            raise MachineError(
                f"machine {record.name} stopped while booting:\n{_console_tail(record)}"
            )
        with contextlib.suppress(OSError):
            keys = console_host_keys(record.console_log.read_text(errors="replace"))
            if keys:
                return keys
        time.sleep(0.2)
    raise MachineError(
        f"machine {record.name}: no host keys on the console after {timeout:.0f} s:\n"
        f"{_console_tail(record)}"
    )


def pin_host_keys(record: MachineRecord, known_hosts: Path) -> None:
    """Replace this machine's entries in ``known_hosts`` with its console keys."""
    lines = []
    if known_hosts.is_file():
        lines = [
            line
            for line in known_hosts.read_text().splitlines()
            if line.strip() and line.split()[0] != record.address
        ]
    lines.extend(record.known_hosts_lines())
    known_hosts.parent.mkdir(parents=True, exist_ok=True)
    known_hosts.write_text("\n".join(lines) + "\n")


@dataclass(frozen=True)
class Readiness:
    cloud_init: str
    failed_units: list[str]
    journals: dict[str, str]

    @property
    def ready(self) -> bool:
        return self.cloud_init == "done" and not self.failed_units


def check_ready(target: SshTarget, timeout: float = 300.0) -> Readiness:
    """Over SSH (pinned keys): cloud-init's verdict and the failed units with their journals."""
    with contextlib.closing(_connect_when_listening(target, timeout)) as connection:
        status = run(connection, "cloud-init status --wait", timeout=timeout)
        # Jobs queued during boot (a unit started by runcmd) settle before units are listed.
        run(connection, "systemctl is-system-running --wait", timeout=timeout)
        verdict = (status.stdout or "").strip().splitlines()[-1:] or ["(no answer)"]
        cloud_init = verdict[0].removeprefix("status:").strip()
        failed = run(connection, "systemctl --failed --no-legend --plain --no-pager")
        units = [line.split()[0] for line in (failed.stdout or "").splitlines() if line.strip()]
        journals = {}
        for unit in units:
            journal = run_as_root(connection, f"journalctl -b -u {unit} --no-pager -n 40 -o cat")
            journals[unit] = (journal.stdout or "") + (journal.stderr or "")
        if cloud_init != "done":
            output = run_as_root(connection, "tail -n 40 /var/log/cloud-init-output.log")
            journals["cloud-init-output.log"] = output.stdout or ""
    return Readiness(cloud_init, units, journals)


def _connect_when_listening(target: SshTarget, timeout: float) -> Connection:
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            return connect(target, timeout=5)
        except HostKeyError:
            raise
        except Exception as exc:
            last = exc
            time.sleep(0.3)
    raise MachineError(f"{target}: no SSH connection in {timeout:.0f} s ({last})")


def readiness_report(name: str, readiness: Readiness) -> str:
    parts = [
        f"machine {name}: cloud-init {readiness.cloud_init}, failed units: "
        f"{', '.join(readiness.failed_units) or 'none'}"
    ]
    for unit, journal in readiness.journals.items():
        parts.append(f"--- {unit}\n{journal.rstrip()}")
    return "\n".join(parts)


# --- power off --------------------------------------------------------------------------------
def power_off(record: MachineRecord, timeout: float = 30.0) -> None:
    """SIGTERM to nspawn (a clean poweroff inside), then the namespace, veth and metadata
    stand-in; what is already gone is skipped. Data stays in ``record.directory``."""
    if record.pid and pid_alive(record.pid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(record.pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while pid_alive(record.pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        if pid_alive(record.pid):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(record.pid, signal.SIGKILL)
    _reap(record.pid)
    if record.imds_pid and pid_alive(record.imds_pid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(record.imds_pid, signal.SIGTERM)
        deadline = time.monotonic() + 10
        while pid_alive(record.imds_pid) and time.monotonic() < deadline:
            time.sleep(0.05)
    _reap(record.imds_pid)
    _ip("link", "del", record.veth, check=False)
    _ip("netns", "del", record.netns, check=False)
    remove_cgroups(record.short)
    unmount_disk(Path(record.directory))


def _reap(pid: int | None) -> None:
    if pid:
        with contextlib.suppress(ChildProcessError, OSError):
            os.waitpid(pid, os.WNOHANG)


def cgroup_roots(base: Path = Path("/sys/fs/cgroup")) -> list[Path]:
    """The cgroup hierarchies nspawn uses: cgroup2 alone, or (hybrid) v1's and the unified one."""
    if (base / "cgroup.controllers").is_file():
        return [base]
    return [
        base / name for name in ("unified", "systemd") if (base / name / "cgroup.procs").is_file()
    ]


def machine_cgroups(short: str) -> list[Path]:
    """Each machine runs in cgroups of its own: nspawn (``--keep-unit``) creates its
    ``payload`` and ``supervisor`` below the cgroup it starts in, so two machines started from
    one cgroup would share them."""
    return [root / CGROUP_FOLDER / short for root in cgroup_roots()]


def _enter_cgroups(folders: list[Path]) -> Callable[[], None]:
    def enter() -> None:
        for folder in folders:
            (folder / "cgroup.procs").write_text(str(os.getpid()))

    return enter


def remove_cgroups(short: str) -> None:
    """Remove the machine's cgroups, deepest first (each must be empty by then)."""
    for folder in machine_cgroups(short):
        if folder.is_dir():
            for path, _dirs, _files in os.walk(folder, topdown=False):
                with contextlib.suppress(OSError):
                    Path(path).rmdir()


def remove_machine_files(record: MachineRecord) -> None:
    unmount_disk(Path(record.directory))
    shutil.rmtree(record.directory, ignore_errors=True)

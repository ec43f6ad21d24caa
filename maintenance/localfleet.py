"""Inventories for loopback sshd hosts: the local target, the tests and the benchmark.

Each :class:`~localtarget.sshhost.SshHost` is one "host" of the fleet with its own host key,
user and state folder; the folder is the host's ``host_root``, so the steps really change a
different filesystem on each host. Production inventories come from the stacks' outputs instead.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from erpcloud.files import write_atomic
from erpcloud.model import Environment
from localtarget.processes import LOOPBACK
from localtarget.sshhost import SshHost


@dataclass(frozen=True)
class LocalHost:
    host: SshHost
    customer: str
    environment: Environment
    #: Default: the host's own state folder.
    host_root: Path | None = None
    https_url: str | None = None
    db: dict[str, Any] | None = None

    @property
    def name(self) -> str:
        return f"{self.customer}-{self.environment.value}"

    def entry(self) -> dict[str, Any]:
        entry: dict[str, Any] = {
            "name": self.name,
            "customer": self.customer,
            "environment": self.environment.value,
            "ssh": {
                "host": LOOPBACK,
                "port": self.host.port,
                "user": self.host.users[0].name,
                "host_key": self.host.host_public_key(),
            },
            "host_root": str(self.host_root or self.host.state_dir),
        }
        if self.https_url:
            entry["https_url"] = self.https_url
        if self.db:
            entry["db"] = self.db
        return entry


def inventory_document(
    hosts: Sequence[LocalHost], key_file: Path, https_ca_file: Path | None = None
) -> dict[str, Any]:
    document: dict[str, Any] = {
        "ssh_key_file": str(key_file),
        "hosts": [h.entry() for h in hosts],
    }
    if https_ca_file is not None:
        document["https_ca_file"] = str(https_ca_file)
    return document


def write_inventory(
    path: Path, hosts: Sequence[LocalHost], key_file: Path, https_ca_file: Path | None = None
) -> Path:
    document = inventory_document(hosts, key_file, https_ca_file)
    write_atomic(path, yaml.safe_dump(document, sort_keys=False), mode=0o600)
    return path

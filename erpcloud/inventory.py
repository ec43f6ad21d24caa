"""The fleet's hosts as the maintenance runner reaches them: a typed inventory file (P4).

One entry per host: the customer and environment it serves, how to reach it over SSH, the host
key it must present (pinned: it becomes the known_hosts file the runner connects with, through
:func:`erpcloud.ssh.connect` and paramiko's ``RejectPolicy``), and what its checks look at.

In production the file is produced from the stacks' outputs (instance address, the host key
from the instance's console output, the database port); the local target and the tests write
it for their loopback sshd hosts, whose ``host_root`` is each host's own state folder.
"""

from __future__ import annotations

import base64
import binascii
import posixpath
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated

import paramiko
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, model_validator

from erpcloud.documents import DocumentError, errors_from_validation, read_yaml_document
from erpcloud.files import write_atomic
from erpcloud.fleet import FieldError
from erpcloud.model import Customer, Environment
from erpcloud.render import HostLayout
from erpcloud.ssh import SshTarget, known_hosts_line

#: Where the runner looks for the inventory unless told otherwise (``erpcloud inventory``
#: writes it from the stacks' outputs).
INVENTORY_FILE = Path("build/inventory.yaml")

_PRODUCTION_LAYOUT = HostLayout()


def check_host_key(value: str) -> str:
    """``<type> <base64>`` as in known_hosts, parsed by paramiko (the client that checks it)."""
    parts = value.split()
    if len(parts) < 2:
        raise ValueError("must be a host public key '<type> <base64>' (from ssh-keyscan)")
    try:
        blob = base64.b64decode(parts[1], validate=True)
        paramiko.PKey.from_type_string(parts[0], blob)
    except (binascii.Error, paramiko.SSHException, ValueError) as exc:
        raise ValueError(f"is not a valid {parts[0]} host key ({exc})") from None
    return f"{parts[0]} {parts[1]}"


def check_absolute(value: str) -> str:
    if not value.startswith("/") or value.startswith("//") or posixpath.normpath(value) != value:
        raise ValueError("must be an absolute, normalised path (no '..', '//' or trailing '/')")
    return value


HostKey = Annotated[str, AfterValidator(check_host_key)]
AbsolutePath = Annotated[str, AfterValidator(check_absolute)]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)


class SshEndpoint(Strict):
    host: Annotated[str, Field(min_length=1)]
    port: Annotated[int, Field(ge=1, le=65535)] = 22
    #: The operations account (non-root, passwordless sudo for ``sudo -n``).
    user: Annotated[str, Field(pattern=r"^[a-z_][a-z0-9_-]{0,31}$")]
    #: The host key the host must present (pinned).
    host_key: HostKey
    #: This host's private key file, where it differs from the inventory's ``ssh_key_file``.
    key_file: Path | None = None


class Database(Strict):
    """The host's PostgreSQL, for the pre-checks (up; a recent good backup) and DB steps."""

    port: Annotated[int, Field(ge=1, le=65535)] = _PRODUCTION_LAYOUT.pg_port
    #: The server's socket folder; empty: the distribution default.
    socket_dir: AbsolutePath | None = None
    conf_d: AbsolutePath = _PRODUCTION_LAYOUT.conf_d
    #: The pgBackRest stanza: production only (S6). A test environment has none (S9).
    stanza: str | None = None
    pgbackrest_config: AbsolutePath = _PRODUCTION_LAYOUT.pgbackrest_config
    #: Local targets only: pgBackRest gets the S3 emulator's well-known test keys in its
    #: environment. On AWS the instance role signs (no key anywhere), so it stays false.
    s3_emulator_keys: bool = False


class InventoryHost(Strict):
    name: Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9.-]{0,62}$")]
    customer: str
    environment: Environment
    ssh: SshEndpoint
    #: The folder the steps operate under: ``/`` on a real host.
    host_root: AbsolutePath = "/"
    #: Checked after the steps where present (S3: the service answers over HTTPS).
    https_url: Annotated[str, Field(pattern=r"^https://[^\s]+$")] | None = None
    db: Database | None = None

    @model_validator(mode="after")
    def _no_backups_in_test(self) -> InventoryHost:
        if self.environment is Environment.TEST and self.db is not None and self.db.stanza:
            raise ValueError("a test environment has no backups (S9): remove db.stanza")
        return self

    @property
    def has_backups(self) -> bool:
        return self.db is not None and bool(self.db.stanza)


class Inventory(Strict):
    #: The runner's private key (a path; the key itself never goes in this file).
    ssh_key_file: Path
    #: CA bundle for the HTTPS post-checks, where endpoints use a private CA (the local target).
    https_ca_file: Path | None = None
    hosts: list[InventoryHost] = Field(default_factory=list)

    def host(self, name: str) -> InventoryHost:
        for host in self.hosts:
            if host.name == name:
                return host
        raise KeyError(f"no host {name!r} in the inventory")

    def target(self, host: InventoryHost, known_hosts: Path) -> SshTarget:
        return SshTarget(
            host=host.ssh.host,
            port=host.ssh.port,
            user=host.ssh.user,
            key_filename=host.ssh.key_file or self.ssh_key_file,
            known_hosts=known_hosts,
        )


def inventory_errors(
    file: str, inventory: Inventory, customers: Mapping[str, Customer]
) -> list[FieldError]:
    """Rules across entries: unique names, one host per customer environment, known customers."""
    errors: list[FieldError] = []
    seen_names: set[str] = set()
    seen_slots: set[tuple[str, Environment]] = set()
    for index, host in enumerate(inventory.hosts):
        where = f"hosts[{index}]"
        if host.name in seen_names:
            errors.append(FieldError(file, f"{where}.name", f"{host.name!r} is used twice"))
        seen_names.add(host.name)
        if host.customer not in customers:
            known = ", ".join(sorted(customers)) or "none"
            errors.append(
                FieldError(file, f"{where}.customer", f"no customer {host.customer!r} ({known})")
            )
        slot = (host.customer, host.environment)
        if slot in seen_slots:
            errors.append(
                FieldError(
                    file,
                    f"{where}.environment",
                    f"{host.customer} has a {host.environment.value} host already",
                )
            )
        seen_slots.add(slot)
    return errors


def parse_inventory(data: object, file: str, customers: Mapping[str, Customer]) -> Inventory:
    if not isinstance(data, dict):
        raise DocumentError([FieldError(file, "", "must be a YAML mapping")])
    try:
        inventory = Inventory.model_validate(data)
    except ValidationError as exc:
        raise DocumentError(errors_from_validation(file, exc)) from None
    errors = inventory_errors(file, inventory, customers)
    if errors:
        raise DocumentError(errors)
    return inventory


def load_inventory(path: Path, customers: Mapping[str, Customer]) -> Inventory:
    """Read and validate an inventory file; every error at once."""
    return parse_inventory(read_yaml_document(path), str(path), customers)


def write_known_hosts(inventory: Inventory, path: Path) -> Path:
    """The pinned keys as the known_hosts file :func:`erpcloud.ssh.connect` loads."""
    lines = [known_hosts_line(h.ssh.host, h.ssh.port, h.ssh.host_key) for h in inventory.hosts]
    write_atomic(path, "".join(f"{line}\n" for line in lines), mode=0o600)
    return path

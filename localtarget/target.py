"""`erpcloud local processes up|status|down`: a customer's environment on this machine.

The same customer file and the same rendered configs as production, with local stand-ins:
moto (behind stunnel) as AWS, a private PostgreSQL 15 cluster as the database host, and two
private sshd hosts (the test environment and production) as the Fabric targets. Everything the
target starts is recorded, with its PID, in a state file, so that `down` (or another process,
via :func:`attach`) stops exactly what was started and removes what was created.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import secrets
import shutil
import signal
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from pydantic import BaseModel

from erpcloud import policy
from erpcloud.files import write_atomic
from erpcloud.model import Customer, Environment, SecretSource
from erpcloud.render import secret_name
from erpcloud.ssh import SshTarget
from lifecycle.paths import HostPaths
from localtarget.instance import LocalInstance, local_layout, local_repos
from localtarget.postgres import PostgresCluster
from localtarget.processes import STATE_BASE, ServiceError, pid_alive, port_open, stop_pid
from localtarget.provision import ProvisionReport, provision_from_plan
from localtarget.s3 import LocalAws
from localtarget.sshhost import HostUser, SshHost, generate_keypair
from maintenance.localfleet import LocalHost, write_inventory
from stacks.plan import plan_customer

TARGETS_BASE = STATE_BASE / "local"
STATE_FILE = "state.json"


class ProcessRecord(BaseModel):
    name: str
    pid: int
    port: int
    stop_signal: int = int(signal.SIGTERM)


class HostRecord(BaseModel):
    """One local sshd host: what Fabric needs to reach it, and what to remove at `down`."""

    environment: Environment
    name: str
    port: int
    ops_user: str
    created_users: list[str]
    host_public_key: str
    state_dir: str
    root: str


class TargetState(BaseModel):
    """The state file: enough to attach to, inspect and tear down a running local target."""

    customer_id: str
    root: str
    started_at: datetime
    aws_http_port: int
    aws_tls_port: int
    pg_port: int
    processes: list[ProcessRecord]
    hosts: list[HostRecord]
    ops_key: str
    known_hosts: str
    #: The maintenance runner's inventory of the two hosts (`fab maintenance.* --inventory`).
    inventory: str
    #: What the offline plan created in the emulator, and what it skipped (with reasons).
    provisioned: ProvisionReport

    def host(self, environment: Environment) -> HostRecord:
        return next(h for h in self.hosts if h.environment is environment)


def local_secret_values(customer: Customer) -> dict[str, str]:
    """The values of the customer's secrets in the emulator, by Secrets Manager name.

    A value given in the environment (``env:VAR`` references, or ``ERPCLOUD_ACTIVATION_KEY``
    for the stack's activation key) is used; otherwise a random local one. None is ever printed.
    """
    values = {}
    for which in ("activation_key", "database_password"):
        ref = getattr(customer.secrets, which)
        given = None
        if ref.source is SecretSource.ENV:
            given = os.environ.get(ref.name)
        elif which == "activation_key":
            given = os.environ.get("ERPCLOUD_ACTIVATION_KEY")
        values[secret_name(customer, which)] = given or f"local-{secrets.token_urlsafe(24)}"
    return values


def referenced_secrets(customer: Customer) -> dict[str, str]:
    """Secrets the customer file names as existing (``secrets-manager:NAME``), by region."""
    return {
        secret_name(customer, which): customer.region
        for which in ("activation_key", "database_password")
        if getattr(customer.secrets, which).source is SecretSource.SECRETS_MANAGER
    }


def target_root(customer_id: str) -> Path:
    return TARGETS_BASE / customer_id


def local_ops_user(customer_id: str, environment: Environment) -> str:
    """The operations login on a local host (``policy.OPERATIONS_USER`` in production).

    Loopback hosts share one user table, so each local host's operations account needs its own
    name: short, POSIX-valid, derived from the customer and environment.
    """
    digest = hashlib.sha256(customer_id.encode()).hexdigest()[:6]
    return f"{policy.OPERATIONS_USER}-{environment.value[:4]}-{digest}"


@dataclass
class LocalTarget:
    """A running (or attached) local target."""

    customer: Customer
    state: TargetState
    aws: LocalAws
    instance: LocalInstance
    hosts: dict[Environment, SshHost] = field(default_factory=dict)

    @property
    def root(self) -> Path:
        return Path(self.state.root)

    def ssh_target(self, environment: Environment) -> SshTarget:
        record = self.state.host(environment)
        return SshTarget(
            host="127.0.0.1",
            port=record.port,
            user=record.ops_user,
            key_filename=Path(self.state.ops_key),
            known_hosts=Path(self.state.known_hosts),
        )


def _save(state: TargetState) -> None:
    write_atomic(Path(state.root) / STATE_FILE, state.model_dump_json(indent=2) + "\n")


def load_state(customer_id: str) -> TargetState:
    path = target_root(customer_id) / STATE_FILE
    if not path.exists():
        raise ServiceError(
            f"no local target for {customer_id!r} (run `erpcloud local processes up {customer_id}`)"
        )
    return TargetState.model_validate_json(path.read_text())


def install_product_files(host_root: Path, customer: Customer) -> None:
    """What the product image puts on a host (S1), as far as the platform reads it: the product
    folder with its version and customer modules, and the attachments folder (S18: exported)."""
    paths = HostPaths(str(host_root))
    product = Path(paths.product)
    (product / "modules").mkdir(parents=True, exist_ok=True)
    (product / "VERSION").write_text(f"{customer.product_version}\n")
    Path(paths.attachments).mkdir(parents=True, exist_ok=True)


def up(customer: Customer, progress: Callable[[str], None] = lambda _: None) -> LocalTarget:
    """Start the customer's local target; on any failure, stop and remove what was started."""
    root = target_root(customer.id)
    if (root / STATE_FILE).exists():
        existing = load_state(customer.id)
        if any(pid_alive(p.pid) for p in existing.processes):
            raise ServiceError(
                f"a local target for {customer.id!r} is already up "
                f"(`erpcloud local processes down {customer.id}` first)"
            )
        _remove(existing, keep=False)
    root.mkdir(parents=True, exist_ok=True)
    root.chmod(0o755)
    started: list[ProcessRecord] = []
    hosts: dict[Environment, SshHost] = {}
    aws = LocalAws(root / "aws")
    try:
        progress("AWS emulator (moto) and its TLS proxy")
        aws.start()
        assert aws.moto is not None and aws.tls_proxy is not None
        started += [
            ProcessRecord(name="moto", pid=aws.moto.pid, port=aws.http_port),
            ProcessRecord(name="stunnel", pid=aws.tls_proxy.pid, port=aws.tls_port),
        ]
        progress("the customer's buckets, keys and secrets, from the offline plan")
        provisioned = provision_from_plan(
            plan_customer(customer), aws, local_secret_values(customer)
        )

        progress("PostgreSQL 15 configured by the rendered files")
        instance = LocalInstance.create(customer, root / "instance", aws)
        instance.start()
        started.append(
            ProcessRecord(
                name="postgres",
                pid=instance.cluster.pid,
                port=instance.cluster.port,
                stop_signal=int(signal.SIGINT),
            )
        )
        instance.pgbackrest("stanza-create")

        progress("SSH hosts for the test environment and production")
        ops_key = root / "ops" / "id_ed25519"
        ops_public = generate_keypair(ops_key, f"erpcloud local operations key for {customer.id}")
        for environment in (Environment.TEST, Environment.PRODUCTION):
            ops_user = local_ops_user(customer.id, environment)
            users = [HostUser(ops_user, (ops_public,), sudo=True)]
            if environment is Environment.PRODUCTION:
                users += [HostUser(u.name, tuple(u.keys), sudo=u.sudo) for u in customer.ssh.users]
            host = SshHost(
                f"{customer.id}-{environment.value}", root / "hosts" / environment.value, users
            )
            hosts[environment] = host
            host.setup()
            install_product_files(host.state_dir, customer)
            host.start()
            assert host.process is not None
            sshd = ProcessRecord(
                name=f"sshd-{environment.value}", pid=host.process.pid, port=host.port
            )
            started.append(sshd)
        known_hosts = root / "ops" / "known_hosts"
        known_hosts.write_text("".join(h.known_hosts_line() + "\n" for h in hosts.values()))
        inventory = write_inventory(
            root / "inventory.yaml",
            [
                LocalHost(hosts[Environment.TEST], customer.id, Environment.TEST),
                LocalHost(
                    hosts[Environment.PRODUCTION],
                    customer.id,
                    Environment.PRODUCTION,
                    db={
                        "port": instance.cluster.port,
                        "socket_dir": str(instance.cluster.socket_dir),
                        "conf_d": instance.layout.conf_d,
                        "stanza": customer.stanza,
                        "pgbackrest_config": instance.layout.pgbackrest_config,
                        "s3_emulator_keys": True,
                    },
                ),
            ],
            key_file=ops_key,
        )

        state = TargetState(
            customer_id=customer.id,
            root=str(root),
            started_at=datetime.now(UTC),
            aws_http_port=aws.http_port,
            aws_tls_port=aws.tls_port,
            pg_port=instance.cluster.port,
            processes=started,
            hosts=[
                HostRecord(
                    environment=environment,
                    name=host.name,
                    port=host.port,
                    ops_user=local_ops_user(customer.id, environment),
                    created_users=list(host.created_users),
                    host_public_key=host.host_public_key(),
                    state_dir=str(host.state_dir),
                    root=str(host.root),
                )
                for environment, host in hosts.items()
            ],
            ops_key=str(ops_key),
            known_hosts=str(known_hosts),
            inventory=str(inventory),
            provisioned=provisioned,
        )
        _save(state)
    except BaseException:
        for record in reversed(started):
            stop_pid(record.pid, record.stop_signal)
        for host in hosts.values():
            host.remove()
        shutil.rmtree(root, ignore_errors=True)
        raise
    return LocalTarget(customer, state, aws, instance, hosts)


def attach(customer: Customer) -> LocalTarget:
    """The running local target of ``customer``, without starting anything."""
    state = load_state(customer.id)
    dead = [p.name for p in state.processes if not pid_alive(p.pid)]
    if dead:
        raise ServiceError(
            f"the local target of {customer.id!r} is not fully up ({', '.join(dead)} stopped); "
            f"run `erpcloud local processes down {customer.id}` then `up`"
        )
    root = Path(state.root)
    aws = LocalAws(root / "aws", http_port=state.aws_http_port, tls_port=state.aws_tls_port)
    instance_root = root / "instance"
    cluster = PostgresCluster(instance_root / "pg", port=state.pg_port, env=aws.pgbackrest_env())
    instance = LocalInstance(
        customer=customer,
        root=instance_root,
        aws=aws,
        cluster=cluster,
        layout=local_layout(instance_root, state.pg_port),
        repos=local_repos(customer, aws),
    )
    return LocalTarget(customer, state, aws, instance)


def status(customer_id: str) -> dict[str, object]:
    """What is recorded for the target, and whether each process is alive and listening."""
    state = load_state(customer_id)
    processes = [
        {
            "name": p.name,
            "pid": p.pid,
            "port": p.port,
            "alive": pid_alive(p.pid),
            "listening": port_open(p.port),
        }
        for p in state.processes
    ]
    return {
        "customer": customer_id,
        "root": state.root,
        "started_at": state.started_at,
        "up": all(p["alive"] and p["listening"] for p in processes),
        "processes": processes,
        "hosts": [
            {"environment": h.environment.value, "port": h.port, "user": h.ops_user}
            for h in state.hosts
        ],
        "s3_endpoint": f"http://127.0.0.1:{state.aws_http_port}",
        "from_offline_plan": {
            "created": state.provisioned.created,
            "skipped": state.provisioned.skipped,
        },
        "database": {"host": "127.0.0.1", "port": state.pg_port, "user": "postgres"},
    }


def _remove(state: TargetState, keep: bool) -> list[str]:
    stopped = []
    # PostgreSQL first (its archiver talks to the emulator), then sshd, stunnel, moto.
    order = sorted(state.processes, key=lambda p: p.name != "postgres")
    for record in order:
        if pid_alive(record.pid):
            stop_pid(record.pid, record.stop_signal, timeout=60)
            stopped.append(record.name)
    for host_record in state.hosts:
        host = SshHost(host_record.name, Path(host_record.root), users=[])
        host.created_users = list(host_record.created_users)
        if keep:
            host.remove_accounts()
        else:
            host.remove()
    if not keep:
        shutil.rmtree(state.root, ignore_errors=True)
    return stopped


def down(customer_id: str, keep: bool = False) -> dict[str, object]:
    """Stop every process the target started, by PID; remove its accounts and (unless ``keep``)
    its data directory."""
    state = load_state(customer_id)
    stopped = _remove(state, keep)
    if keep:
        with contextlib.suppress(FileNotFoundError):
            (Path(state.root) / STATE_FILE).rename(Path(state.root) / "state.stopped.json")
    return {
        "customer": customer_id,
        "stopped": stopped,
        "kept": state.root if keep else None,
        "removed": None if keep else state.root,
    }

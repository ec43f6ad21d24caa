"""`erpcloud local up|status|down`: a customer's production and test machines, real.

What the customer's stack creates on AWS, built on this host from the same sources:

- the product image of the customer's release (:mod:`localtarget.image`);
- the AWS APIs as moto, with the customer's buckets, keys and secrets created from the offline
  plan; the machines reach it through TLS (stunnel) on their bridge's host address;
- per environment an "instance role": an IAM user in the emulator whose keys the machine's
  IMDSv2 stand-in hands out, so the AWS CLI and pgBackRest sign as on EC2;
- per environment a machine (:mod:`localtarget.machine`) booted with the rendered user-data,
  byte for byte, and the operations key of this target in place of the team's keys.

``up`` returns when every machine's cloud-init is done and no unit has failed; otherwise it
raises with the failing units' journals, after powering off and removing all it started.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

import yaml
from pydantic import BaseModel

from erpcloud.files import write_atomic
from erpcloud.model import Customer, Environment
from erpcloud.policy import APP_PORT
from erpcloud.render import HostLayout, S3Repo, render_user_data
from erpcloud.ssh import SshTarget
from localtarget import machine
from localtarget.front import FrontRecord, start_front, stop_front
from localtarget.image import ImageInfo, build_image, cloud_init_schema_in_image, output_of
from localtarget.imds import ImdsConfig, add_metadata_address, start_in_netns
from localtarget.keys import generate_keypair
from localtarget.processes import STATE_BASE, ServiceError, pid_alive, stop_pid
from localtarget.provision import ProvisionReport, provision_from_plan
from localtarget.s3 import LocalAws
from localtarget.secrets import local_secret_values, referenced_secrets
from stacks.plan import plan_customer

MACHINES_BASE: Final = STATE_BASE / "machines"
#: The local support CA (P5), beside the operations key: each target has its own.
SUPPORT_CA_FILE: Final = "support-ca"
STATE_FILE: Final = "state.json"
#: The operations login on the machines, as on AWS (policy.OPERATIONS_USER).
BOOT_TIMEOUT_SECONDS: Final = 240.0

Progress = Callable[[str], None]


class MachineSetState(BaseModel):
    """The state file: what ``status`` reads and ``down`` removes."""

    customer_id: str
    root: str
    started_at: datetime
    network_index: int
    aws_http_port: int
    aws_tls_port: int
    aws_pids: list[int]
    ops_key: str
    ops_user: str
    known_hosts: str
    image: dict[str, object]
    machines: dict[Environment, machine.MachineRecord]
    provisioned: ProvisionReport
    #: The maintenance runner's and gap check's inventory of these machines (as on AWS).
    inventory: str = ""
    #: The TLS front standing in for the load balancers (443, both host names).
    front: FrontRecord | None = None

    @property
    def network(self) -> machine.Network:
        return machine.Network(self.network_index)

    @property
    def support_ca_key(self) -> Path:
        """The local support CA's private key (P5: `erpcloud support grant` signs with it)."""
        return Path(self.ops_key).parent / SUPPORT_CA_FILE

    def rendered_user_data(self, customer: Customer, environment: Environment) -> str:
        """The user-data this target gave the machine (rendered again from the same inputs)."""
        ops_public = Path(f"{self.ops_key}.pub").read_text().strip()
        return render_user_data(
            customer,
            environment,
            HostLayout(),
            ops_keys=(ops_public,),
            repos=machine_repos(customer, self.network.host_address, self.aws_tls_port),
            support_ca=Path(f"{self.support_ca_key}.pub").read_text().strip(),
        )

    def aws_client(self, service: str, region: str) -> Any:
        """A boto3 client of the machines' AWS stand-in (plain HTTP on loopback)."""
        return LocalAws(
            Path(self.root) / "aws", http_port=self.aws_http_port, tls_port=self.aws_tls_port
        ).client(service, region)

    def ssh_target(self, environment: Environment) -> SshTarget:
        record = self.machines[environment]
        return SshTarget(
            host=record.address,
            port=22,
            user=self.ops_user,
            key_filename=Path(self.ops_key),
            known_hosts=Path(self.known_hosts),
        )


def machines_root(customer_id: str) -> Path:
    return MACHINES_BASE / customer_id


def instance_id(customer_id: str, environment: Environment) -> str:
    """A stable EC2-shaped id per customer and environment (the NoCloud instance-id)."""
    digest = hashlib.sha256(f"{customer_id}/{environment.value}".encode()).hexdigest()
    return f"i-{digest[:17]}"


def machine_name(customer: Customer, environment: Environment) -> str:
    """The hostname the rendered user-data gives the machine (the endpoint's first label)."""
    host = customer.url_host if environment is Environment.PRODUCTION else customer.test_url_host
    return host.split(".")[0]


def machine_repos(customer: Customer, endpoint: str, port: int) -> tuple[S3Repo, S3Repo]:
    """The two repositories (S6) on the emulator's TLS front at ``endpoint:port``, signed with
    the instance role (``auto``: IMDSv2, as on EC2)."""
    primary, copy = customer.backup_bucket_names

    def repo(index: int, bucket: str, region: str) -> S3Repo:
        return S3Repo(
            index=index,
            bucket=bucket,
            region=region,
            endpoint=endpoint,
            port=port,
            verify_tls=False,  # the emulator's throwaway certificate
            uri_style="path",
            key_type="auto",
        )

    return repo(1, primary, customer.region), repo(2, copy, customer.backup_copy_region)


#: Where the machines find the emulator's TLS certificate (the local site's CA bundle).
EMULATOR_CA_PATH: Final = "/usr/local/share/erpcloud-local/emulator-ca.pem"


def site_variables(endpoint_host: str, tls_port: int) -> dict[str, str]:
    """The AWS CLI's endpoint and CA bundle: the emulator's TLS front on the bridge."""
    return {
        "AWS_ENDPOINT_URL": f"https://{endpoint_host}:{tls_port}",
        "AWS_CA_BUNDLE": EMULATOR_CA_PATH,
    }


def place_site_files(root: Path, variables: dict[str, str], ca_pem: str) -> None:
    """What makes the machine's AWS CLI talk to the emulator, on the machine's disk.

    On AWS there is nothing to say (the real endpoints); this is the local site's part of the
    machine, not the customer's, so it is not in the user-data. Services get the variables from
    systemd's default environment; logins and sudo from ``/etc/environment`` (pam_env).
    """
    manager = " ".join(f'"{k}={v}"' for k, v in variables.items())
    files = {
        EMULATOR_CA_PATH: ca_pem,
        "/etc/systemd/system.conf.d/50-erpcloud-local-aws.conf": (
            "# erpcloud local site: the AWS APIs are the emulator on the host.\n"
            f"[Manager]\nDefaultEnvironment={manager}\n"
        ),
    }
    for path, content in files.items():
        target = root / path.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(content)
        target.chmod(0o644)
    _environment_file(root, variables)
    # sudo resets the environment: let the endpoint through (names only, no values).
    sudoers = root / "etc/sudoers.d/erpcloud-local-aws"
    sudoers.parent.mkdir(parents=True, exist_ok=True)
    sudoers.write_text(f'Defaults env_keep += "{" ".join(variables)}"\n')
    sudoers.chmod(0o440)


def _environment_file(root: Path, variables: dict[str, str]) -> None:
    """Logins and sudo read ``/etc/environment`` (pam_env): the same endpoint for ops' shells."""
    path = root / "etc/environment"
    existing = path.read_text() if path.exists() else ""
    path.write_text(existing + "".join(f"{k}={v}\n" for k, v in variables.items()))


def _role_credentials(
    aws: LocalAws, customer: Customer, environment: Environment
) -> dict[str, str]:
    """An IAM user standing for the environment's instance role, and its access key."""
    iam = aws.client("iam", customer.region)
    name = f"{customer.id}-{environment.value}-instance"
    iam.create_user(UserName=name, Tags=[{"Key": "erpcloud:customer", "Value": customer.id}])
    key = iam.create_access_key(UserName=name)["AccessKey"]
    return {
        "role_name": name,
        "access_key_id": key["AccessKeyId"],
        "secret": key["SecretAccessKey"],
    }


def _imds_starter(
    customer: Customer, environment: Environment, spec: machine.MachineSpec, role: dict[str, str]
) -> Callable[[str, Path], int]:
    def start(netns: str, directory: Path) -> int:
        config = ImdsConfig(
            instance_id=spec.instance_id,
            region=customer.region,
            availability_zone=f"{customer.region}a",
            role_name=role["role_name"],
            access_key_id=role["access_key_id"],
            secret_access_key=role["secret"],  # type: ignore[arg-type]
            local_ipv4=spec.address,  # type: ignore[arg-type]
            hostname=spec.name,
            instance_type=(
                customer.production.instance_type
                if environment is Environment.PRODUCTION
                else customer.test_sizing.instance_type
            ),
        )
        path = directory / "imds.json"
        path.touch(mode=0o600)
        path.chmod(0o600)
        payload = config.model_dump(mode="json")
        payload["secret_access_key"] = role["secret"]
        path.write_text(json.dumps(payload))
        add_metadata_address(netns)
        return start_in_netns(netns, path, directory / "imds.log").pid

    return start


@dataclass
class _Started:
    aws: LocalAws | None = None
    network: machine.Network | None = None
    front: FrontRecord | None = None
    records: list[machine.MachineRecord] = field(default_factory=list)


def up(
    customer: Customer,
    progress: Progress = lambda _m: None,
    *,
    timeout: float = BOOT_TIMEOUT_SECONDS,
) -> MachineSetState:
    """Boot the customer's test and production machines; all or nothing."""
    root = machines_root(customer.id)
    if (root / STATE_FILE).exists():
        existing = load_state(customer.id)
        if any(pid_alive(r.pid) for r in existing.machines.values()):
            raise ServiceError(
                f"machines for {customer.id!r} are already up "
                f"(`erpcloud local down {customer.id}` first)"
            )
        _teardown(existing)
    progress(f"product image {customer.product_version}")
    image = build_image(customer.product_version, progress=progress)
    root.mkdir(parents=True, exist_ok=True)
    root.chmod(0o755)
    started = _Started()
    try:
        started.network = machine.allocate_network()
        progress("AWS emulator (moto) and its TLS front on the machines' network")
        aws = LocalAws(root / "aws", tls_host=started.network.host_address)
        started.aws = aws
        aws.start()
        provisioned = provision_from_plan(
            plan_customer(customer),
            aws,
            local_secret_values(customer),
            referenced_secrets(customer),
        )
        ops_key = root / "ops" / "id_ed25519"
        ops_public = generate_keypair(ops_key, f"erpcloud local operations key for {customer.id}")
        support_ca = generate_keypair(
            ops_key.parent / SUPPORT_CA_FILE, f"erpcloud local support CA for {customer.id}"
        )
        known_hosts = root / "ops" / "known_hosts"
        known_hosts.write_text("")
        ca_pem = (aws.root / "tls" / "s3-tls.crt").read_text()
        environments = (Environment.PRODUCTION, Environment.TEST)
        specs = {}
        for slot, environment in enumerate(environments):
            spec = machine.MachineSpec(
                name=machine_name(customer, environment),
                instance_id=instance_id(customer.id, environment),
                image_root=image.root,
                user_data=render_user_data(
                    customer,
                    environment,
                    HostLayout(),
                    ops_keys=(ops_public,),
                    repos=machine_repos(customer, aws.tls_host, aws.tls_port),
                    support_ca=support_ca,
                ),
                network=started.network,
                slot=slot,
            )
            specs[environment] = spec
            checked = cloud_init_schema_in_image(image.root, spec.user_data)
            if checked.returncode != 0:
                raise machine.MachineError(
                    f"the {environment.value} user-data is refused by the image's cloud-init: "
                    f"{output_of(checked)}"
                )
            role = _role_credentials(aws, customer, environment)
            progress(f"booting {environment.value} ({spec.address})")
            record = machine.boot(
                spec,
                root / environment.value,
                start_imds=_imds_starter(customer, environment, spec, role),
                before_start=lambda disk: place_site_files(
                    disk, site_variables(aws.tls_host, aws.tls_port), ca_pem
                ),
            )
            started.records.append(record)
        state = MachineSetState(
            customer_id=customer.id,
            root=str(root),
            started_at=datetime.now(UTC),
            network_index=started.network.index,
            aws_http_port=aws.http_port,
            aws_tls_port=aws.tls_port,
            aws_pids=[p.pid for p in (aws.moto, aws.tls_proxy) if p is not None],
            ops_key=str(ops_key),
            ops_user="erpcloud-ops",
            known_hosts=str(known_hosts),
            image=image.as_dict(),
            machines=dict(zip(environments, started.records, strict=True)),
            provisioned=provisioned,
        )
        _save(state)
        for environment, record in state.machines.items():
            progress(f"waiting for {environment.value}: console host keys, cloud-init, units")
            record.host_keys = machine.wait_for_host_keys(record, timeout)
            machine.pin_host_keys(record, known_hosts)
            _save(state)
            readiness = machine.check_ready(state.ssh_target(environment), timeout)
            if not readiness.ready:
                raise machine.MachineError(machine.readiness_report(record.name, readiness))
        progress("TLS front (the load balancers' stand-in) on 443")
        routes = {
            customer.url_host: f"{state.machines[Environment.PRODUCTION].address}:{APP_PORT}",
            customer.test_url_host: f"{state.machines[Environment.TEST].address}:{APP_PORT}",
        }
        started.front = start_front(
            started.network, front_address(started.network), routes, root / "front"
        )
        state.front = started.front
        state.inventory = str(write_machine_inventory(state, customer))
        _save(state)
    except BaseException:
        _stop_started(started)
        shutil.rmtree(root, ignore_errors=True)
        raise
    return state


def inventory_document(state: MachineSetState, customer: Customer) -> dict[str, object]:
    """The inventory the runner and the gap check read, as ``erpcloud inventory`` writes it from
    the stacks' outputs: real addresses, port 22, the production layout (``host_root`` ``/``),
    the host key from the console, and no emulator keys (the instance role signs)."""
    layout = HostLayout()
    hosts = []
    for environment, record in state.machines.items():
        preferred = sorted(record.host_keys, key=lambda k: not k.startswith("ssh-ed25519"))
        entry: dict[str, object] = {
            "name": f"{customer.id}-{environment.value}",
            "customer": customer.id,
            "environment": environment.value,
            "ssh": {
                "host": record.address,
                "port": 22,
                "user": state.ops_user,
                "host_key": preferred[0],
            },
            "host_root": "/",
            "db": {
                "port": layout.pg_port,
                "conf_d": layout.conf_d,
                "pgbackrest_config": layout.pgbackrest_config,
                **({"stanza": customer.stanza} if environment.has_backups else {}),
            },
        }
        hosts.append(entry)
    return {"ssh_key_file": state.ops_key, "hosts": hosts}


def write_machine_inventory(state: MachineSetState, customer: Customer) -> Path:
    path = Path(state.root) / "inventory.yaml"
    text = yaml.safe_dump(inventory_document(state, customer), sort_keys=False)
    write_atomic(path, text, mode=0o600)
    return path


def front_address(network: machine.Network) -> str:
    """The front's own address on the bridge (``.2``: below the machines' range)."""
    return str(network.subnet.network_address + 2)


def _stop_started(started: _Started) -> None:
    if started.front is not None:
        stop_front(started.front)
    for record in reversed(started.records):
        machine.power_off(record)
    if started.aws is not None:
        started.aws.stop()
    if started.network is not None:
        started.network.remove()


def _save(state: MachineSetState) -> None:
    write_atomic(Path(state.root) / STATE_FILE, state.model_dump_json(indent=2) + "\n")


def load_state(customer_id: str) -> MachineSetState:
    path = machines_root(customer_id) / STATE_FILE
    if not path.is_file():
        raise ServiceError(
            f"no local machines for {customer_id!r} (run `erpcloud local up {customer_id}`)"
        )
    return MachineSetState.model_validate_json(path.read_text())


def status(customer_id: str) -> dict[str, object]:
    state = load_state(customer_id)
    machines = {
        env.value: {
            "name": r.name,
            "address": r.address,
            "pid": r.pid,
            "running": pid_alive(r.pid),
            "host_keys_pinned": len(r.host_keys),
        }
        for env, r in state.machines.items()
    }
    running = all(m["running"] for m in machines.values()) and all(
        pid_alive(p) for p in state.aws_pids
    )
    return {
        "customer": customer_id,
        "up": running,
        "image": state.image,
        "machines": machines,
        "known_hosts": state.known_hosts,
        "ops_key": state.ops_key,
        "front": (
            {
                "address": state.front.address,
                "port": state.front.port,
                "ca": state.front.ca_path,
                "hosts": sorted(state.front.routes),
                "running": pid_alive(state.front.pid),
            }
            if state.front is not None
            else None
        ),
    }


def _teardown(state: MachineSetState) -> list[str]:
    from localtarget.drillmachine import teardown_for_customer  # it builds on this module

    stopped = [f"drill machine: {line}" for line in teardown_for_customer(state.customer_id)]
    if state.front is not None:
        stop_front(state.front)
        stopped.append("TLS front")
    for environment, record in state.machines.items():
        machine.power_off(record)
        stopped.append(f"{environment.value} machine")
    for pid in state.aws_pids:
        if pid_alive(pid):
            stop_pid(pid)
    stopped.append("AWS emulator")
    machine.Network(state.network_index).remove()
    shutil.rmtree(state.root, ignore_errors=True)
    return stopped


def down(customer_id: str) -> dict[str, object]:
    """Power every machine off (clean shutdown), stop the emulator, remove all state."""
    started = time.monotonic()
    state = load_state(customer_id)
    stopped = _teardown(state)
    with contextlib.suppress(OSError):
        machines_root(customer_id).rmdir()
    return {
        "customer": customer_id,
        "stopped": stopped,
        "seconds": round(time.monotonic() - started, 1),
    }


def image_info(customer: Customer, progress: Progress = lambda _m: None) -> ImageInfo:
    return build_image(customer.product_version, progress=progress)

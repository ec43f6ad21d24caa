"""Real machines (issue 12): the product image booted with systemd-nspawn, configured by the
rendered user-data, checked where it runs: on the machine, over SSH with pinned host keys.

One customer's two machines are booted once for the module; a failing boot gets its own.
"""

from __future__ import annotations

import json
import shlex
import socket
import ssl
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import paramiko
import pytest
import yaml
from typer.testing import CliRunner

from erpcloud import policy
from erpcloud.cli import app
from erpcloud.model import Customer, Environment
from erpcloud.render import render_user_data
from erpcloud.ssh import HostKeyError, SshTarget, connect, run, run_as_root
from localtarget import image, machine, machines
from localtarget.image import cloud_init_schema_in_image, output_of
from localtarget.machines import MachineSetState

pytestmark = pytest.mark.timeout(900)


@pytest.fixture(scope="module")
def booted(sample_fleet: dict[str, Customer]) -> Iterator[tuple[Customer, MachineSetState]]:
    """acme-retail's machines, through the CLI as an operator starts them."""
    customer = sample_fleet["acme-retail"]
    runner = CliRunner()
    result = runner.invoke(app, ["local", "up", customer.id, "--json"])
    try:
        assert result.exit_code == 0, result.output
        status = json.loads(result.output)
        assert status["up"] is True
        assert set(status["machines"]) == {"production", "test"}
        yield customer, machines.load_state(customer.id)
    finally:
        down = runner.invoke(app, ["local", "down", customer.id, "--json"])
        assert down.exit_code == 0, down.output


def _sh(state: MachineSetState, environment: Environment, command: str, root: bool = False) -> str:
    connection = connect(state.ssh_target(environment))
    try:
        result = (run_as_root if root else run)(connection, command, timeout=120)
    finally:
        connection.close()
    assert result.return_code == 0, f"{command}: {result.stdout}{result.stderr}"
    return str(result.stdout)


@pytest.mark.parametrize("environment", [Environment.PRODUCTION, Environment.TEST])
def test_cloud_init_ran_the_rendered_user_data_byte_for_byte(booted, environment):
    customer, state = booted
    ran = _sh(state, environment, "cat /var/lib/cloud/instance/user-data.txt", root=True)
    assert ran == state.rendered_user_data(customer, environment)
    assert _sh(state, environment, "cloud-init status").strip() == "status: done"
    assert _sh(state, environment, "systemctl --failed --no-legend --plain").strip() == ""
    # The build's dpkg setting (no fsync) stayed with the build.
    left = _sh(state, environment, f"ls /{image.BUILD_DPKG_CONFIG} 2>/dev/null; true")
    assert left.strip() == ""


def test_sshd_runs_the_stock_config_with_the_rendered_drop_in(booted):
    customer, state = booted
    effective = _sh(state, Environment.PRODUCTION, "sshd -T", root=True).lower().splitlines()
    settings = {line.split(" ", 1)[0]: line.split(" ", 1)[1] for line in effective if " " in line}
    assert settings["permitrootlogin"] == "no"
    assert settings["passwordauthentication"] == "no"
    assert settings["kbdinteractiveauthentication"] == "no"
    assert settings["authenticationmethods"] == "publickey"
    allowed = {line.split(" ", 1)[1] for line in effective if line.startswith("allowusers ")}
    assert allowed == {u.name for u in customer.ssh.users} | {policy.OPERATIONS_USER}
    # SFTP works: the stock file's subsystem, not a second definition (which broke sshd).
    assert settings["subsystem"].startswith("sftp ")
    drop_in = _sh(state, Environment.PRODUCTION, "cat /etc/ssh/sshd_config.d/50-erpcloud.conf")
    assert "Subsystem" not in [line.split(" ")[0] for line in drop_in.splitlines()]
    connection = connect(state.ssh_target(Environment.PRODUCTION))
    try:
        sftp = connection.sftp()
        assert "50-erpcloud.conf" in sftp.listdir("/etc/ssh/sshd_config.d")
    finally:
        connection.close()


def _auth_types(address: str, known_hosts: str) -> list[str]:
    transport = paramiko.Transport((address, 22))
    try:
        transport.start_client(timeout=10)
        try:
            transport.auth_none("root")
        except paramiko.BadAuthenticationType as exc:
            return list(exc.allowed_types)
        return ["none"]
    finally:
        transport.close()


def test_root_and_password_logins_are_refused(booted):
    _customer, state = booted
    record = state.machines[Environment.PRODUCTION]
    assert _auth_types(record.address, state.known_hosts) == ["publickey"]
    as_root = SshTarget(record.address, 22, "root", Path(state.ops_key), Path(state.known_hosts))
    with pytest.raises(paramiko.AuthenticationException):
        connect(as_root).close()
    client = paramiko.SSHClient()
    client.load_host_keys(state.known_hosts)
    client.set_missing_host_key_policy(paramiko.RejectPolicy())
    with pytest.raises(paramiko.AuthenticationException):
        client.connect(
            record.address,
            username=policy.OPERATIONS_USER,
            password="not-a-key",
            look_for_keys=False,
            allow_agent=False,
            timeout=10,
        )
    client.close()


def test_a_wrong_host_key_is_refused(booted, tmp_path):
    _customer, state = booted
    record = state.machines[Environment.PRODUCTION]
    other = state.machines[Environment.TEST]
    # The test machine's keys, pinned for the production address: another machine's keys.
    wrong = tmp_path / "known_hosts"
    wrong.write_text(
        "".join(f"{record.address} {' '.join(k.split()[:2])}\n" for k in other.host_keys)
    )
    target = SshTarget(record.address, 22, state.ops_user, Path(state.ops_key), wrong)
    with pytest.raises(HostKeyError, match="host key changed"):
        connect(target)


def test_the_pinned_keys_are_the_keys_the_machine_serves(booted):
    _customer, state = booted
    record = state.machines[Environment.PRODUCTION]
    served = _sh(
        state, Environment.PRODUCTION, "cat /etc/ssh/ssh_host_ed25519_key.pub", root=True
    ).split()[:2]
    assert " ".join(served) in record.host_keys


def test_the_product_answers_on_8443_from_its_database_and_nothing_on_80(booted):
    customer, state = booted
    record = state.machines[Environment.PRODUCTION]
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # the stand-in's self-signed certificate
    url = f"https://{record.address}:{policy.APP_PORT}/health"
    with urllib.request.urlopen(url, context=context, timeout=10) as response:
        health = json.load(response)
    assert response.status == 200
    assert health["version"] == customer.product_version
    with socket.socket() as sock:
        sock.settimeout(3)
        assert sock.connect_ex((record.address, 80)) != 0
    # The product's answer comes from its database: lock its role out and it says so.
    psql = "runuser -u postgres -- psql -XAtq -d postgres -c"
    _sh(state, Environment.PRODUCTION, f"{psql} 'ALTER ROLE erp NOLOGIN'", root=True)
    try:
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(url, context=context, timeout=10)
        assert refused.value.code == 503
    finally:
        _sh(state, Environment.PRODUCTION, f"{psql} 'ALTER ROLE erp LOGIN'", root=True)


def test_secrets_come_from_secrets_manager_with_the_instance_role(booted):
    customer, state = booted
    identity = json.loads(
        _sh(state, Environment.PRODUCTION, "aws sts get-caller-identity --output json", root=True)
    )
    assert identity["Arn"].endswith(f"user/{customer.id}-production-instance")
    listing = _sh(state, Environment.PRODUCTION, "ls -l /etc/erp/", root=True)
    assert "activation.key" in listing and "db-password" in listing
    # No secret value in the rendered user-data that cloud-init keeps on the machine.
    password = _sh(state, Environment.PRODUCTION, "cat /etc/erp/db-password", root=True).strip()
    ran = _sh(state, Environment.PRODUCTION, "cat /var/lib/cloud/instance/user-data.txt", root=True)
    assert password and password not in ran


def test_wal_reaches_both_repositories_signed_by_the_instance_role(booted):
    customer, state = booted
    stanza = shlex.quote(f"--stanza={customer.stanza}")
    _sh(state, Environment.PRODUCTION, f"runuser -u postgres -- pgbackrest {stanza} check", True)
    for repo in (1, 2):
        info = _sh(
            state,
            Environment.PRODUCTION,
            f"runuser -u postgres -- pgbackrest {stanza} --repo={repo} --output=json info",
            root=True,
        )
        archives = json.loads(info)[0]["archive"]
        assert archives and archives[0]["max"], f"repo{repo} has no archived WAL"


def test_the_test_environment_has_no_backups(booted):
    _customer, state = booted
    assert _sh(state, Environment.TEST, "test ! -e /etc/pgbackrest/pgbackrest.conf; echo none")
    archive_mode = _sh(
        state, Environment.TEST, "runuser -u postgres -- psql -XAtc 'SHOW archive_mode'", True
    )
    assert archive_mode.strip() == "off"


def test_a_unit_that_fails_at_boot_fails_up_with_its_journal(sample_fleet, monkeypatch):
    customer = sample_fleet["lakeside-outfitters"]

    def with_broken_unit(*args: object, **kwargs: object) -> str:
        data = yaml.safe_load(render_user_data(*args, **kwargs))  # type: ignore[arg-type]
        data["write_files"].append(
            {
                "path": "/etc/systemd/system/erpcloud-broken.service",
                "content": "[Service]\nType=oneshot\n"
                "ExecStart=/bin/sh -c 'echo broken-on-purpose >&2; exit 3'\n",
            }
        )
        data["runcmd"].append(["systemctl", "start", "--no-block", "erpcloud-broken.service"])
        return "#cloud-config\n" + yaml.safe_dump(data, sort_keys=False)

    monkeypatch.setattr(machines, "render_user_data", with_broken_unit)
    allocated: list[machine.Network] = []
    allocate = machine.allocate_network

    def remembered() -> machine.Network:
        allocated.append(allocate())
        return allocated[-1]

    monkeypatch.setattr(machine, "allocate_network", remembered)
    with pytest.raises(machine.MachineError) as failed:
        machines.up(customer)
    message = str(failed.value)
    assert "erpcloud-broken.service" in message
    assert "broken-on-purpose" in message
    # Nothing of this target is left: machines, namespaces, veths, bridge, state.
    (network,) = allocated
    name = machines.machine_name(customer, Environment.PRODUCTION)
    assert subprocess.run(["pgrep", "-f", "--", f"--machine={name}$"], check=False).returncode == 1
    ours = {network.bridge, *(f"{kind}-m{network.index}x{slot}" for kind in ("ve", "erp")
                              for slot in (0, 1))}  # fmt: skip
    assert not ours & {link.split("@")[0] for link in _links()}
    assert not ours & _namespaces()
    assert not machines.machines_root(customer.id).exists()


def _links() -> set[str]:
    out = subprocess.run(["ip", "-br", "link"], capture_output=True, text=True, check=True).stdout
    return {line.split()[0] for line in out.splitlines()}


def _namespaces() -> set[str]:
    out = subprocess.run(["ip", "netns"], capture_output=True, text=True, check=True).stdout
    return {line.split()[0] for line in out.splitlines() if line.strip()}


def test_every_rendered_user_data_passes_the_images_own_cloud_init(booted, sample_fleet):
    _customer, state = booted
    image_root = Path(str(state.image["root"]))
    for customer in sample_fleet.values():
        for environment in Environment:
            result = cloud_init_schema_in_image(image_root, render_user_data(customer, environment))
            assert result.returncode == 0, f"{customer.id} {environment}: {output_of(result)}"


@pytest.mark.must_fail
def test_the_images_cloud_init_refuses_what_the_hosts_accepts(booted, sample_fleet):
    """cloud-init 25 refuses an unknown top-level key (22.4 on the host let it through)."""
    _customer, state = booted
    data = yaml.safe_load(render_user_data(sample_fleet["acme-retail"]))
    data["ssh_authorized_key"] = ["a typo of ssh_authorized_keys"]
    result = cloud_init_schema_in_image(
        Path(str(state.image["root"])), "#cloud-config\n" + yaml.safe_dump(data)
    )
    assert result.returncode == 1
    assert "ssh_authorized_key" in output_of(result)


# --- capabilities against the machines, over SSH, as on AWS ---------------------------------
def test_backups_and_the_gap_check_run_on_the_machine_through_its_inventory(booted):
    customer, state = booted
    runner = CliRunner()
    inventory = ["--inventory", state.inventory, "--customers", "customers", "--json"]
    backup = runner.invoke(app, ["backup", "run", customer.id, "--type", "full", *inventory])
    assert backup.exit_code == 0, backup.output
    repos = json.loads(backup.output)["repositories"]
    assert [r["ok"] for r in repos] == [True, True]
    listing = runner.invoke(app, ["backup", "list", customer.id, *inventory])
    assert listing.exit_code == 0, listing.output
    # The backups are on the emulator, put there by pgBackRest 2.55 on the machine.
    assert "2.55" in _sh(state, Environment.PRODUCTION, "pgbackrest version")
    gap = runner.invoke(app, ["backup", "verify", customer.id, *inventory])
    document = json.loads(gap.output)
    assert gap.exit_code == 0, gap.output
    assert document["ok"] is True
    assert (
        "over SSH" in document["via"]
        and state.machines[Environment.PRODUCTION].address in (document["via"])
    )


def test_a_maintenance_change_runs_through_fabric_on_the_machines(booted, tmp_path):
    customer, state = booted
    bin_dir = Path(sys.executable).parent
    notices, runs = tmp_path / "notices", tmp_path / "runs"
    common = ["--customers", "customers"]
    subprocess.run(
        [str(bin_dir / "erpcloud"), "maintenance", "notices", "2026-12-log-rotation",
         "--out", str(notices), *common, "--json"],
        check=True, capture_output=True,
    )  # fmt: skip
    applied = subprocess.run(
        [str(bin_dir / "fab"), "maintenance.apply", "--change", "2026-12-log-rotation",
         "--inventory", state.inventory, "--notices", str(notices), "--runs", str(runs),
         "--drill", "tests: the runner against real machines", *common, "--json"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert applied.returncode == 0, applied.stdout + applied.stderr
    report = json.loads(applied.stdout)
    hosts = [h["name"] for h in report["hosts"] if h["customer"] == customer.id]
    assert hosts == [f"{customer.id}-test", f"{customer.id}-production"]  # test first (S14)
    for environment in (Environment.TEST, Environment.PRODUCTION):
        written = _sh(state, environment, "cat /etc/logrotate.d/erp-product")
        assert "2026-12-log-rotation" in written


def _get_through_front(state: MachineSetState, host: str, path: str) -> tuple[int, str]:
    """An HTTPS request to ``host`` as a customer's browser makes it: SNI and certificate check
    against the front's CA, the connection going to the front's own address."""
    assert state.front is not None
    context = ssl.create_default_context(cafile=state.front.ca_path)
    request = f"GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    data = b""
    with (
        socket.create_connection((state.front.address, 443), timeout=10) as raw,
        context.wrap_socket(raw, server_hostname=host) as tls,
    ):
        tls.sendall(request.encode())
        while chunk := tls.recv(65536):
            data += chunk
    head, _, body = data.decode().partition("\r\n\r\n")
    return int(head.split()[1]), body


def test_each_endpoint_answers_through_the_tls_front_and_nothing_on_80(booted):
    customer, state = booted
    assert state.front is not None
    for host, environment in (
        (customer.url_host, Environment.PRODUCTION),
        (customer.test_url_host, Environment.TEST),
    ):
        status, body = _get_through_front(state, host, "/health")
        assert status == 200, body
        assert json.loads(body)["version"] == customer.product_version
        served = _sh(state, environment, "hostname").strip()
        assert served == machines.machine_name(customer, environment)
    with socket.socket() as sock:
        sock.settimeout(3)
        assert sock.connect_ex((state.front.address, 80)) != 0
    with pytest.raises(ssl.SSLError):
        _get_through_front(state, "someone-else.cloud.example.net", "/health")

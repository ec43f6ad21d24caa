"""Real machines (issue 12): the product image booted with systemd-nspawn, configured by the
rendered user-data, checked where it runs: on the machine, over SSH with pinned host keys.

One customer's two machines are booted once for the module; a failing boot gets its own.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import shlex
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import paramiko
import pytest
import yaml
from ssh_audit import exitcodes
from typer.testing import CliRunner

from erpcloud import policy, render
from erpcloud.model import Customer, Environment
from erpcloud.render import render_user_data
from erpcloud.ssh import HostKeyError, SshTarget, connect, run, run_as_root
from frontdoor.cli import app
from localtarget import image, machine, machines
from localtarget.image import cloud_init_schema_in_image, output_of
from localtarget.machines import MachineSetState
from support import certs as support_certs

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
    # S4/S20: each customer user from the customer's networks only (user@cidr).
    assert allowed == set(render.sshd_allow_users(customer))
    assert f"{customer.ssh.users[0].name}@{customer.ssh.allowed_cidrs[0]}" in allowed
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
    # The test environment has secrets of its own (issue 13): another password, its own names.
    test_password = _sh(state, Environment.TEST, "cat /etc/erp/db-password", root=True).strip()
    assert test_password and test_password != password
    fetch = _sh(state, Environment.TEST, "cat /usr/local/lib/erpcloud/fetch-secrets", root=True)
    assert f"erpcloud/{customer.id}/test/database-password" in fetch


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


#: Model-valid company names that are hostile to unit files: specifiers, quotes, shell and
#: template syntax, unicode (issue 13; control characters and backslashes the model refuses).
HOSTILE_COMPANIES = (
    'Acme 100%n "Retail" $(id) `id` {{ x }} ; ExecStartPre=+/bin/sh',
    "Ünïcödé 名前 ☃ %% %i 'single' #not-a-comment",
)


def test_systemd_reads_hostile_values_as_the_values_they_are(booted):
    """The product unit rendered for hostile company names, loaded by the machine's systemd:
    its Description is the name, and the unit has no setting the template does not write."""
    customer, state = booted
    expected = {}
    script = []
    for index, company in enumerate(HOSTILE_COMPANIES):
        hostile = customer.model_copy(update={"company": company})
        files = render.host_files(hostile, Environment.PRODUCTION, render.HostLayout())
        unit = next(f.content for f in files if f.path.endswith("erp-product.service"))
        name = f"erp-hostile-probe-{index}.service"
        expected[name] = f"ERP {customer.edition} {customer.product_version} for {company}"
        script.append(f"printf %s {shlex.quote(unit)} > /run/systemd/system/{name}")
    script.append("systemctl daemon-reload")
    try:
        _sh(state, Environment.TEST, " && ".join(script), root=True)
        for name, description in expected.items():
            shown = _sh(
                state, Environment.TEST, f"systemctl show {name} -p Description -p ExecStartPre"
            )
            assert f"Description={description}\n" in shown
            assert not [line for line in shown.splitlines() if line.startswith("ExecStartPre=")]
            environment = _sh(state, Environment.TEST, f"systemctl show {name} -p Environment")
            assert f"ERP_EDITION={customer.edition}" in environment
    finally:
        names = " ".join(f"/run/systemd/system/{n}" for n in expected)
        _sh(state, Environment.TEST, f"rm -f {names} && systemctl daemon-reload", root=True)


def test_the_database_password_reaches_no_log_even_with_log_statement_all(booted):
    """Issue 13 item 4 (S1): the first-boot path sets the product role's password from a SCRAM
    verifier; run again with every statement logged, and once failing, the clear password is in
    no server log, no journal, no output. The product still logs in with it afterwards."""
    customer, state = booted
    prod = Environment.PRODUCTION
    password = _sh(state, prod, "cat /etc/erp/db-password", root=True).strip()
    assert len(password) >= 16
    psql = "runuser -u postgres -- psql -XAtq -v ON_ERROR_STOP=1 -d postgres -c"
    _sh(state, prod, f"{psql} \"ALTER SYSTEM SET log_statement = 'all'\" && {psql} "
        "'SELECT pg_reload_conf()'", root=True)  # fmt: skip
    try:
        outputs = [_sh(state, prod, "/usr/local/lib/erpcloud/fetch-secrets 2>&1", root=True)]
        # The failure path: the statement is refused (no such role), and logged as an error.
        _sh(state, prod, f"{psql} 'ALTER ROLE erp RENAME TO erp_away'", root=True)
        try:
            connection = connect(state.ssh_target(prod))
            try:
                failed = run_as_root(
                    connection, "/usr/local/lib/erpcloud/fetch-secrets 2>&1", timeout=120
                )
            finally:
                connection.close()
            assert failed.return_code != 0
            outputs.append(str(failed.stdout) + str(failed.stderr))
        finally:
            _sh(state, prod, f"{psql} 'ALTER ROLE erp_away RENAME TO erp'", root=True)
        _sh(state, prod, "/usr/local/lib/erpcloud/fetch-secrets", root=True)
        server_log = _sh(state, prod, "cat /var/log/postgresql/*.log", root=True)
        assert "ALTER ROLE erp WITH LOGIN PASSWORD 'SCRAM-SHA-256$4096:" in server_log
        assert 'role "erp" does not exist' in server_log
        journal = _sh(state, prod, "journalctl -b --no-pager -o cat", root=True)
        cloud_init = _sh(state, prod, "cat /var/log/cloud-init-output.log", root=True)
        for text in (server_log, journal, cloud_init, *outputs):
            assert password not in text
    finally:
        _sh(state, prod, f"{psql} 'ALTER SYSTEM RESET log_statement' && {psql} "
            "'SELECT pg_reload_conf()'", root=True)  # fmt: skip
    # The verifier is the password's: the product logs in with the clear one from its file.
    _sh(state, prod, "systemctl restart erp-product", root=True)
    health = _sh(state, prod, f"curl -skf --retry 10 --retry-all-errors --retry-delay 1 "
                 f"https://127.0.0.1:{policy.APP_PORT}/health")  # fmt: skip
    assert json.loads(health)["version"] == customer.product_version


def test_customer_users_are_not_root_but_may_restart_the_product(booted):
    """S4/S16, issue 13 item 8: sudo's own view of the customer's users on the machine."""
    customer, state = booted
    assert "parsed OK" in _sh(state, Environment.PRODUCTION, "visudo -c", root=True)
    for user in customer.ssh.users:
        allowed = _sh(state, Environment.PRODUCTION, f"sudo -l -U {user.name}", root=True)
        commands = [line.strip() for line in allowed.splitlines() if "NOPASSWD" in line]
        assert commands == ["(root) NOPASSWD: /usr/bin/systemctl restart erp-product.service"]
        groups = _sh(state, Environment.PRODUCTION, f"id -nG {user.name}").split()
        assert "systemd-journal" in groups and "sudo" not in groups


# --- refusals last: OpenSSH 10 penalises a source's failed logins (PerSourcePenalties), so
# they go to the test machine, after everything else that logs in there.
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


@contextlib.contextmanager
def office_namespace(state: MachineSetState, environment: Environment, cidr: str) -> Iterator[str]:
    """A network namespace of ours on the target's bridge with the first host address of
    ``cidr`` (a customer's office), and an on-link route to it on the machine; removed after."""
    record = state.machines[environment]
    office, veth = f"erp-office{state.network_index}", f"vo-office{state.network_index}"
    address = next(ipaddress.ip_network(cidr).hosts())
    steps = [
        ["ip", "netns", "add", office],
        ["ip", "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", office],
        ["ip", "link", "set", veth, "master", state.network.bridge, "up"],
        ["ip", "-n", office, "addr", "add", f"{address}/{ipaddress.ip_network(cidr).prefixlen}",
         "dev", "eth0"],
        ["ip", "-n", office, "link", "set", "eth0", "up"],
        ["ip", "-n", office, "route", "add", f"{record.address}/32", "dev", "eth0"],
        ["ip", "-n", record.netns, "route", "add", cidr, "dev", "host0"],
    ]  # fmt: skip
    try:
        for step in steps:
            subprocess.run(step, check=True, capture_output=True, timeout=30)
        yield office
    finally:
        subprocess.run(["ip", "-n", record.netns, "route", "del", cidr], capture_output=True)
        subprocess.run(["ip", "link", "del", veth], capture_output=True)
        subprocess.run(["ip", "netns", "del", office], capture_output=True)


def test_customer_users_log_in_only_from_the_customers_networks(booted, tmp_path):
    """S4/S20, issue 13 item 6, at run time: ``AllowUsers user@cidr`` as sshd applies it. The
    samples carry no customer's private key, so a fresh key is added for the customer's user on
    the test machine. From an address in the customer's first network (an office namespace of
    ours on the bridge) the user logs in; from the host, outside the customer's networks, the
    same key is refused."""
    customer, state = booted
    user = customer.ssh.users[0].name
    record = state.machines[Environment.TEST]
    key_file = tmp_path / "customer_key"
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "test", "-f", str(key_file)],
        check=True,
    )
    public = key_file.with_suffix(".pub").read_text().strip()
    _sh(
        state,
        Environment.TEST,
        f"echo {shlex.quote(public)} >> ~{user}/.ssh/authorized_keys",
        root=True,
    )
    login = [
        "ssh", "-i", str(key_file), "-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes",
        "-o", f"UserKnownHostsFile={state.known_hosts}", "-o", "StrictHostKeyChecking=yes",
        "-o", "ConnectTimeout=10", f"{user}@{record.address}", "id -un",
    ]  # fmt: skip
    with office_namespace(state, Environment.TEST, customer.ssh.allowed_cidrs[0]) as office:
        inside = subprocess.run(
            ["ip", "netns", "exec", office, *login], capture_output=True, text=True, timeout=60
        )
    assert inside.returncode == 0 and inside.stdout.strip() == user, inside.stderr
    outside = subprocess.run(login, capture_output=True, text=True, timeout=60)
    assert outside.returncode == 255 and "Permission denied" in outside.stderr, outside.stderr
    journal = _sh(state, Environment.TEST, "journalctl -u ssh --no-pager -n 50", root=True)
    assert f"User {user} from {state.network.host_address} not allowed" in journal


def test_root_and_password_logins_are_refused(booted):
    _customer, state = booted
    record = state.machines[Environment.TEST]
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
    record = state.machines[Environment.TEST]
    other = state.machines[Environment.PRODUCTION]
    # Production's keys, pinned for the test machine's address: another machine's keys.
    wrong = tmp_path / "known_hosts"
    wrong.write_text(
        "".join(f"{record.address} {' '.join(k.split()[:2])}\n" for k in other.host_keys)
    )
    target = SshTarget(record.address, 22, state.ops_user, Path(state.ops_key), wrong)
    with pytest.raises(HostKeyError, match="host key changed"):
        connect(target)


def _support_login(state: MachineSetState, key: Path, certificate: Path) -> str:
    """Log in as the support user with a certificate (host key pinned); ``id -un``."""
    pkey = paramiko.Ed25519Key.from_private_key_file(str(key))
    pkey.load_certificate(str(certificate))
    client = paramiko.SSHClient()
    client.load_host_keys(state.known_hosts)
    client.set_missing_host_key_policy(paramiko.RejectPolicy())
    try:
        client.connect(
            state.machines[Environment.PRODUCTION].address, username=policy.SUPPORT_USER,
            pkey=pkey, look_for_keys=False, allow_agent=False, timeout=10,
        )  # fmt: skip
        _in, out, _err = client.exec_command("id -un; sudo -n true && echo ROOT", timeout=30)
        out.channel.shutdown_write()
        return str(out.read().decode())
    finally:
        client.close()


def test_support_access_by_certificate_expires_and_can_be_revoked(booted, tmp_path, monkeypatch):
    """P5, issue 13 item 7: a grant works inside its validity as the support user (not root);
    a certificate for another customer's principal, an expired one and a revoked key are each
    refused by the machine's sshd; grants and revocations are audited."""
    customer, state = booted
    audit_log = tmp_path / "audit.jsonl"
    monkeypatch.setenv("ERPCLOUD_AUDIT_LOG", str(audit_log))
    key = tmp_path / "engineer"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    runner = CliRunner()
    granted = runner.invoke(
        app,
        ["support", "grant", customer.id, "--engineer", "jdoe", "--hours", "2",
         "--reason", "ticket 4711: slow reports", "--key-file", f"{key}.pub", "--json"],
    )  # fmt: skip
    assert granted.exit_code == 0, granted.output
    certificate = Path(json.loads(granted.output)["certificate"])
    assert _support_login(state, key, certificate).split() == [policy.SUPPORT_USER]  # no ROOT
    journal = _sh(state, Environment.PRODUCTION, "journalctl -u ssh --no-pager -o cat", root=True)
    assert "support:" + customer.id + ":jdoe:" in journal  # the certificate's id, logged

    ca = Path(state.ops_key).parent / "support-ca"
    elsewhere = support_certs.grant(
        "another-customer", "jdoe", Path(f"{key}.pub"), ca, "test", timedelta(hours=1),
        tmp_path / "elsewhere-cert.pub",
    )  # fmt: skip
    with pytest.raises(paramiko.AuthenticationException):
        _support_login(state, key, elsewhere.certificate)
    short = support_certs.grant(
        customer.id, "jdoe", Path(f"{key}.pub"), ca, "test", timedelta(seconds=2),
        tmp_path / "short-cert.pub",
    )  # fmt: skip
    time.sleep(3)
    with pytest.raises(paramiko.AuthenticationException):
        _support_login(state, key, short.certificate)

    revoked = runner.invoke(
        app,
        ["support", "revoke", customer.id, "--cert", str(certificate), "--reason", "done",
         "--json"],
    )  # fmt: skip
    assert revoked.exit_code == 0, revoked.output
    assert set(json.loads(revoked.output)["hosts"].values()) == {"revoked"}
    with pytest.raises(paramiko.AuthenticationException):
        _support_login(state, key, certificate)
    actions = [json.loads(line)["action"] for line in audit_log.read_text().splitlines()]
    assert actions == ["support.grant", "support.revoke"]


def test_sshd_is_hardened_and_a_peer_auditor_finds_no_failure(booted):
    """Issue 13 item 6 (S4): the policy's algorithms and limits are what sshd runs with, and
    ssh-audit, run against the machine's real sshd, reports no failure."""
    _customer, state = booted
    effective = _sh(state, Environment.PRODUCTION, "sshd -T", root=True).lower().splitlines()
    settings = {line.split(" ", 1)[0]: line.split(" ", 1)[1] for line in effective if " " in line}
    assert settings["kexalgorithms"] == ",".join(policy.SSH_KEX_ALGORITHMS)
    assert settings["ciphers"] == ",".join(policy.SSH_CIPHERS)
    assert settings["macs"] == ",".join(policy.SSH_MACS)
    assert settings["loglevel"] == "verbose"
    assert settings["maxauthtries"] == str(policy.SSH_MAX_AUTH_TRIES)
    assert settings["logingracetime"] == str(policy.SSH_LOGIN_GRACE_SECONDS)
    for forwarding in ("allowagentforwarding", "allowtcpforwarding", "x11forwarding"):
        assert settings[forwarding] == "no", forwarding
    # LogLevel VERBOSE: the key a login used is in the journal.
    journal = _sh(state, Environment.PRODUCTION, "journalctl -u ssh --no-pager -o cat", root=True)
    assert "Accepted publickey for" in journal and "SHA256:" in journal
    # Last in the module: OpenSSH 10 penalises a source whose connections never log in
    # (PerSourcePenalties), which is what an auditor's probes are.
    address = state.machines[Environment.PRODUCTION].address
    audit = subprocess.run(
        [str(Path(sys.executable).parent / "ssh-audit"), "--json", "--timeout=10", address],
        capture_output=True, text=True, check=False, timeout=120,
    )  # fmt: skip
    report = json.loads(audit.stdout)
    failures = [
        (kind, entry["algorithm"], note)
        for kind in ("kex", "key", "enc", "mac")
        for entry in report.get(kind, [])
        for note in entry.get("notes", {}).get("fail", [])
    ]
    assert failures == [], failures
    # Warnings only: curve25519 and DH group 16/18 stay for clients without post-quantum key
    # exchange (older WinSCP, PuTTY); ssh-audit warns that they are not post-quantum.
    assert audit.returncode in (exitcodes.GOOD, exitcodes.WARNING), audit.stdout[-2000:]

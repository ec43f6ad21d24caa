"""The real machines' plain parts, without booting anything: console keys, seeds, addresses,
the image's cache keys and sources, the CLI's id check (issue 12)."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from erpcloud.model import Environment
from frontdoor.cli import app
from images import component
from localtarget import image, machine, machines

CONSOLE = """\
[  240.0] cloud-init[68]: Generating public/private ed25519 key pair.
<14>Dec  1 00:52:08 cloud-init: -----BEGIN SSH HOST KEY FINGERPRINTS-----
<14>Dec  1 00:52:08 cloud-init: 256 SHA256:abc root@lab1 (ED25519)
<14>Dec  1 00:52:08 cloud-init: -----END SSH HOST KEY FINGERPRINTS-----
-----BEGIN SSH HOST KEY KEYS-----
ecdsa-sha2-nistp256 AAAAE2VjZHNhLXNoYTItbmlzdHAyNTYAAAAI root@lab1
ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAICE7H1e9 root@lab1
-----END SSH HOST KEY KEYS-----
"""


def test_host_keys_are_read_from_between_cloud_inits_markers():
    assert machine.console_host_keys(CONSOLE) == [
        "ecdsa-sha2-nistp256 AAAAE2VjZHNhLXNoYTItbmlzdHAyNTYAAAAI",
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAICE7H1e9",
    ]


def test_no_keys_until_the_block_is_complete():
    assert machine.console_host_keys(CONSOLE.split("-----END SSH HOST KEY KEYS")[0]) == []
    # A line that merely looks like a key outside the block is not a key.
    assert machine.console_host_keys("ssh-ed25519 AAAAC3Nza root@x\n") == []


def test_a_key_line_with_garbage_is_skipped():
    console = CONSOLE.replace("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAICE7H1e9", "ssh-ed25519 !!")
    assert machine.console_host_keys(console) == [
        "ecdsa-sha2-nistp256 AAAAE2VjZHNhLXNoYTItbmlzdHAyNTYAAAAI"
    ]


def test_pinning_replaces_only_this_machines_entries(tmp_path: Path):
    known = tmp_path / "known_hosts"
    known.write_text("198.18.0.11 ssh-ed25519 OTHER\n198.18.0.10 ssh-ed25519 OLD\n")
    record = machine.MachineRecord(
        name="acme",
        instance_id="i-0123456789abcdef0",
        address="198.18.0.10",
        short="m0x0",
        pid=1,
        netns="erp-m0x0",
        veth="ve-m0x0",
        directory=str(tmp_path),
        host_keys=["ssh-ed25519 NEW"],
    )
    machine.pin_host_keys(record, known)
    assert known.read_text().splitlines() == [
        "198.18.0.11 ssh-ed25519 OTHER",
        "198.18.0.10 ssh-ed25519 NEW",
    ]


def test_networks_stay_inside_the_test_range_and_do_not_overlap():
    subnets = [machine.Network(i).subnet for i in (0, 1, 255, 511)]
    for subnet in subnets:
        assert subnet.subnet_of(machine.MACHINE_NETWORKS)
    assert len(set(subnets)) == len(subnets)
    network = machine.Network(3)
    assert network.host_address == "198.18.3.1"
    assert network.machine_address(0) == "198.18.3.10"
    assert ipaddress.ip_address(network.machine_address(199)) in network.subnet
    with pytest.raises(machine.MachineError):
        network.machine_address(200)
    # Interface names fit the kernel's 15 characters even for the last network.
    spec = machine.MachineSpec("x", "i-0", Path("/"), "", machine.Network(511), 199)
    assert len(f"ve-{spec.short}") <= 15 and len(machine.Network(511).bridge) <= 15


def test_the_seed_carries_the_user_data_unchanged(sample_fleet):
    customer = sample_fleet["acme-retail"]
    text = "#cloud-config\n# ünïcode and 'quotes' survive\nusers: []\n"
    spec = machine.MachineSpec(
        machines.machine_name(customer, Environment.PRODUCTION),
        machines.instance_id(customer.id, Environment.PRODUCTION),
        Path("/"),
        text,
        machine.Network(0),
        0,
    )
    seed = machine.seed_files(spec)
    assert seed["user-data"] == text
    meta = yaml.safe_load(seed["meta-data"])
    assert meta == {"instance-id": spec.instance_id, "local-hostname": "acme"}
    network = yaml.safe_load(seed["network-config"])
    assert network["ethernets"]["host0"]["addresses"] == ["198.18.0.10/24"]


def test_instance_ids_are_stable_and_differ_per_environment():
    production = machines.instance_id("acme-retail", Environment.PRODUCTION)
    assert production == machines.instance_id("acme-retail", Environment.PRODUCTION)
    assert production != machines.instance_id("acme-retail", Environment.TEST)
    assert production.startswith("i-") and len(production) == 19


def test_the_mirror_comes_from_the_hosts_apt_sources(tmp_path: Path):
    apt = tmp_path / "apt"
    (apt / "sources.list.d").mkdir(parents=True)
    (apt / "sources.list.d" / "debian.sources").write_text(
        "Types: deb\nURIs: http://mirror.example/debian-security\nSuites: x\n\n"
        "Types: deb\nURIs: http://mirror.example/debian/\nSuites: bookworm\n"
    )
    assert image.host_mirror(apt) == "http://mirror.example/debian"
    empty = tmp_path / "empty"
    (empty / "sources.list.d").mkdir(parents=True)
    (empty / "sources.list").write_text(
        "deb [arch=amd64] http://other.example/debian stable main\n"
    )
    assert image.host_mirror(empty) == "http://other.example/debian"
    assert "trixie-security" in image.sources_list("http://other.example/debian")
    assert "http://other.example/debian-security" in image.sources_list(
        "http://other.example/debian"
    )


def test_a_changed_build_step_is_a_new_image_and_the_parent_is_kept():
    document = component.product_component("26Q1", image.LOCAL_ARTIFACT_BUCKET)
    changed = document.model_copy(update={"description": document.description + " (changed)"})
    assert image.product_key(document) != image.product_key(changed)
    assert image.product_key(document) == image.product_key(
        component.product_component("26Q1", image.LOCAL_ARTIFACT_BUCKET)
    )
    assert image.product_key(document) != image.product_key(
        component.product_component("26Q2", image.LOCAL_ARTIFACT_BUCKET)
    )


def test_the_local_build_replaces_only_the_download_step():
    document = component.product_component("26Q1", image.LOCAL_ARTIFACT_BUCKET)
    names = [step.name for _phase, step in document.steps()]
    assert component.FETCH_PRODUCT_STEP in names
    fetch = next(s for _p, s in document.steps() if s.name == component.FETCH_PRODUCT_STEP)
    assert any("aws s3 cp" in c for c in fetch.commands)
    install = next(s for _p, s in document.steps() if s.name == "InstallProduct")
    assert any(component.PRODUCT_ARCHIVE_DIR in c for c in install.commands)


def test_site_files_name_the_emulator_and_no_secret(tmp_path: Path):
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    (root / "etc/environment").write_text("LANG=en_US.UTF-8\n")
    variables = machines.site_variables("198.18.0.1", 4443)
    machines.place_site_files(root, variables, "-----BEGIN CERTIFICATE-----\n")
    environment = (root / "etc/environment").read_text()
    assert environment.startswith("LANG=en_US.UTF-8\n")
    assert "AWS_ENDPOINT_URL=https://198.18.0.1:4443" in environment
    manager = (root / "etc/systemd/system.conf.d/50-erpcloud-local-aws.conf").read_text()
    assert '"AWS_ENDPOINT_URL=https://198.18.0.1:4443"' in manager
    sudoers = root / "etc/sudoers.d/erpcloud-local-aws"
    assert oct(sudoers.stat().st_mode & 0o777) == "0o440"
    for path in root.rglob("*"):
        if path.is_file():
            assert "SECRET" not in path.read_text().upper()


@pytest.mark.parametrize("bad", ["../../x", "Acme", "a", "x" * 41, "acme_retail", "-acme"])
@pytest.mark.parametrize("command", [["status"], ["down"]])
def test_local_commands_refuse_a_bad_id_before_reading_anything(bad, command):
    """An id names a folder: `local down ../../x` must not read or delete outside it (S20)."""
    result = CliRunner().invoke(app, ["local", *command, "--", bad])
    assert result.exit_code == 2
    assert "customer id" in result.output


@pytest.mark.parametrize("command", [["local", "image"], ["local", "up"]])
def test_image_and_up_refuse_an_unknown_customer(command):
    result = CliRunner().invoke(app, [*command, "no-such-customer", "--json"])
    assert result.exit_code == 2
    assert "no-such-customer" in result.output

"""The inventory file and the planner: canary waves first, wave size or percentage, budgets."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from erpcloud import policy
from erpcloud.inventory import Inventory, load_inventory, parse_inventory, write_known_hosts
from erpcloud.model import Customer, Environment
from maintenance.errors import ChangeFileError
from maintenance.planner import PlanError, plan_waves, select_hosts

from .conftest import REPO_ROOT


def host_key() -> str:
    key = Ed25519PrivateKey.generate().public_key()
    return key.public_bytes(Encoding.OpenSSH, PublicFormat.OpenSSH).decode()


def entry(customer: str, environment: str, port: int, **extra: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "name": f"{customer}-{environment}",
        "customer": customer,
        "environment": environment,
        "ssh": {"host": "10.0.1.10", "port": port, "user": "erpops", "host_key": host_key()},
    }
    data.update(extra)
    return data


@pytest.fixture
def many_customers(sample_fleet: dict[str, Customer]) -> dict[str, Customer]:
    """The sample fleet plus copies of northwind-trading: ten customers in all."""
    fleet = dict(sample_fleet)
    template = sample_fleet["northwind-trading"]
    for number in range(6):
        customer_id = f"copy-{number}"
        fleet[customer_id] = template.model_copy(update={"id": customer_id})
    return fleet


@pytest.fixture
def inventory(many_customers: dict[str, Customer]) -> Inventory:
    hosts = []
    for port, customer_id in enumerate(sorted(many_customers), start=2200):
        hosts.append(entry(customer_id, "production", port))
        if customer_id.startswith(("acme", "copy-0", "copy-1")):
            hosts.append(entry(customer_id, "test", port + 100))
    return parse_inventory(
        {"ssh_key_file": "/etc/erpcloud/ops_key", "hosts": hosts}, "inventory.yaml", many_customers
    )


def test_canaries_first_then_production_in_waves_of_a_size(
    inventory: Inventory, many_customers: dict[str, Customer]
):
    plan = plan_waves(inventory.hosts, many_customers, wave_size=4, concurrency=3, max_errors=1)
    assert [(w.label, len(w.hosts)) for w in plan.waves] == [
        ("canary", 3),
        ("production", 4),
        ("production", 4),
        ("production", 2),
    ]
    assert all(name.endswith("-test") for name in plan.waves[0].hosts)
    assert plan.host_count == 13 and len(set(plan.order)) == 13
    assert (plan.concurrency, plan.max_errors) == (3, 1)
    # the order is stable: by region, then customer (eu-west-1 before us-east-1)
    assert plan.waves[1].hosts[0] == "acme-retail-production"


def test_waves_as_a_percentage_of_production(
    inventory: Inventory, many_customers: dict[str, Customer]
):
    plan = plan_waves(inventory.hosts, many_customers, wave_percent=25)
    production = [w for w in plan.waves if w.label == "production"]
    assert plan.wave_size == 3  # 25 % of 10 production hosts, rounded up
    assert [len(w.hosts) for w in production] == [3, 3, 3, 1]


def test_defaults_come_from_policy(inventory: Inventory, many_customers: dict[str, Customer]):
    plan = plan_waves(inventory.hosts, many_customers)
    assert plan.wave_size == policy.MAINTENANCE_WAVE_SIZE
    assert plan.concurrency == policy.MAINTENANCE_CONCURRENCY
    assert plan.max_errors == policy.MAINTENANCE_MAX_ERRORS


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"wave_size": 2, "wave_percent": 10}, "not both"),
        ({"wave_size": 0}, "--wave-size must be at least 1"),
        ({"wave_percent": 0}, "--wave-percent must be above 0"),
        ({"wave_percent": 150}, "at most 100"),
        ({"concurrency": 0}, "--concurrency must be at least 1"),
        ({"max_errors": -1}, "--max-errors must be 0 or more"),
    ],
)
def test_nonsense_wave_settings_are_refused(
    inventory: Inventory, many_customers: dict[str, Customer], options: dict[str, Any], message: str
):
    with pytest.raises(PlanError, match=message):
        plan_waves(inventory.hosts, many_customers, **options)


def test_select_hosts_by_customer_and_environment(
    inventory: Inventory, sample_fleet: dict[str, Customer]
):
    chosen = select_hosts(inventory, [sample_fleet["acme-retail"]], [Environment.TEST])
    assert [h.name for h in chosen] == ["acme-retail-test"]


def test_inventory_errors_name_the_field_and_rule_all_at_once(many_customers: dict[str, Customer]):
    good = entry("acme-retail", "production", 22)
    broken_key = entry("northwind-trading", "production", 22)
    broken_key["ssh"]["host_key"] = "ssh-ed25519 bm90IGEga2V5"
    test_with_backups = entry("acme-retail", "test", 22, db={"stanza": "acme-retail"})
    relative = entry("lakeside-outfitters", "production", 22, host_root="srv/state")
    plain_http = entry("maison-dupont", "production", 22, https_url="http://maison.example")
    unknown = entry("nobody-here", "production", 22)
    duplicate = copy.deepcopy(good)
    document: dict[str, Any] = {
        "ssh_key_file": "/etc/erpcloud/ops_key",
        "hosts": [good, broken_key, test_with_backups, relative, plain_http, unknown, duplicate],
    }
    with pytest.raises(ChangeFileError) as error:
        parse_inventory(document, "inventory.yaml", many_customers)
    found = {e.field: e.rule for e in error.value.errors}
    assert "is not a valid ssh-ed25519 host key" in found["hosts[1].ssh.host_key"]
    assert "no backups (S9)" in found["hosts[2]"]
    assert "absolute" in found["hosts[3].host_root"]
    assert "hosts[4].https_url" in found
    assert len(found) == 4  # schema errors first; the cross-entry rules need a valid schema
    del document["hosts"][1:5]
    with pytest.raises(ChangeFileError) as error:
        parse_inventory(document, "inventory.yaml", many_customers)
    found = {e.field: e.rule for e in error.value.errors}
    assert found["hosts[1].customer"].startswith("no customer 'nobody-here'")
    assert found["hosts[2].name"] == "'acme-retail-production' is used twice"


def test_pinned_keys_become_the_known_hosts_file(tmp_path: Path, inventory: Inventory):
    path = write_known_hosts(inventory, tmp_path / "known_hosts")
    lines = path.read_text().splitlines()
    assert len(lines) == len(inventory.hosts)
    first = inventory.hosts[0]
    assert lines[0] == f"[10.0.1.10]:{first.ssh.port} {first.ssh.host_key}"
    assert oct(path.stat().st_mode & 0o777) == "0o600"


def test_the_documented_example_inventory_is_valid(sample_fleet: dict[str, Customer]):
    example = load_inventory(REPO_ROOT / "maintenance" / "inventory.example.yaml", sample_fleet)
    production = example.host("acme-retail-production")
    assert production.has_backups and production.db is not None
    assert production.db.conf_d == "/etc/postgresql/17/main/conf.d"  # the production layout
    assert not example.host("acme-retail-test").has_backups
    plan = plan_waves(example.hosts, sample_fleet)
    assert [w.label for w in plan.waves] == ["canary", "production"]

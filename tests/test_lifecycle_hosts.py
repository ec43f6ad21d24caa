"""Move in (S19), export (S18) and the inventory (P4) against real hosts.

A customer's local target (PostgreSQL with both backup repositories in moto behind stunnel, and
its sshd hosts) and a separate PostgreSQL cluster standing for the customer's on-premises
server. The Fabric tasks run as a user runs them (``fab lifecycle.import|export``).
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import tarfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from backups.pgbackrest import LocalPgBackRest
from backups.runs import list_backups
from erpcloud.cli import app
from erpcloud.fleet import load_fleet
from erpcloud.model import Customer, Environment
from erpcloud.render import PRODUCT_DATABASE, secret_name
from erpcloud.ssh import connect, run
from lifecycle.dump import DumpError, MoveInRefused, read_dump
from lifecycle.export import MANIFEST, export_customer, verify_export
from lifecycle.movein import move_in
from lifecycle.site import Site, local_site
from localtarget import sampledata, target
from localtarget.postgres import PG_BIN, PostgresCluster
from maintenance.inventory import load_inventory, write_known_hosts
from stacks.plan import plan_customer

from .conftest import CUSTOMERS, REPO_ROOT
from .test_lifecycle import invoke, local_target, write_local_customer

pytestmark = pytest.mark.services
TAG = os.getpid() % 100000
CUSTOMER_ID = f"lch-{TAG}"
FAB = str(Path(sys.executable).parent / "fab")
runner = CliRunner()
#: Rows that stress COPY's text format: a tab, a newline and a backslash inside values.
AWKWARD_ROWS = "insert into \"Notes & Remarks\" values (E'tab\\there'), (E'two\\nlines'), (E'\\\\')"


def pg_dump(cluster: PostgresCluster, path: Path) -> Path:
    subprocess.run(
        [str(PG_BIN / "pg_dump"), "--format=custom", "-h", str(cluster.socket_dir),
         "-p", str(cluster.port), "-U", "postgres", "-d", PRODUCT_DATABASE, "-f", str(path)],
        check=True, capture_output=True,
    )  # fmt: skip
    return path


def counts(cluster: PostgresCluster, database: str = PRODUCT_DATABASE) -> dict[str, int]:
    """Rows per table of the public schema, named as pg_dump names them."""
    tables = cluster.psql(
        "select format('%I.%I', schemaname, tablename) from pg_tables "
        "where schemaname = 'public' order by 1",
        dbname=database,
    ).splitlines()
    return {
        table: int(cluster.psql(f"select count(*) from {table}", dbname=database))  # noqa: S608
        for table in tables
    }


def fab(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [FAB, *args, "--json"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=600
    )


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def customers_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("lifecycle-hosts") / "customers"
    write_local_customer(directory, CUSTOMER_ID)
    return directory


@pytest.fixture(scope="module")
def customer(customers_dir: Path) -> Customer:
    return load_fleet(customers_dir).customers[CUSTOMER_ID]


@pytest.fixture(scope="module")
def running(customer: Customer) -> Iterator[target.LocalTarget]:
    with local_target(customer) as started:
        yield started


@pytest.fixture(scope="module")
def site(customer: Customer, running: target.LocalTarget) -> Site:
    return local_site(customer, running.state)


@pytest.fixture(scope="module")
def onprem(
    pg_cluster_factory: Callable[..., PostgresCluster], customer: Customer
) -> PostgresCluster:
    """The customer's on-premises server: the product's database, with some awkward rows."""
    cluster = pg_cluster_factory()
    sampledata.create_database(cluster.conninfo())
    sampledata.load_sample_data(cluster.conninfo(PRODUCT_DATABASE), customer, 120, 300)
    cluster.psql('create table "Notes & Remarks" (body text)', dbname=PRODUCT_DATABASE)
    cluster.psql(AWKWARD_ROWS, dbname=PRODUCT_DATABASE)
    return cluster


@pytest.fixture(scope="module")
def dumps(onprem: PostgresCluster, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Dumps of the on-premises database as it says it is at several versions and editions."""
    folder = tmp_path_factory.mktemp("dumps")
    made = {}
    for name, edition, version in (
        ("old-business", "business", "PR15Q2"),
        ("too-old", "commerce", "RR14Q4"),
        ("unsupported", "commerce", "RR15Q2"),
        ("current", "commerce", "25Q4.1"),
    ):
        onprem.psql(
            f"update erp_system_info set edition = '{edition}', version = '{version}'",  # noqa: S608
            dbname=PRODUCT_DATABASE,
        )
        made[name] = pg_dump(onprem, folder / f"{name}.dump")
    not_a_dump = folder / "plain.sql"
    not_a_dump.write_text("create table t (id int);\n")
    made["plain"] = not_a_dump
    return made


@pytest.fixture(scope="module")
def attachments(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("attachments") / "files"
    (folder / "2025" / "invoices").mkdir(parents=True)
    (folder / "2025" / "invoices" / "INV 0001.pdf").write_bytes(os.urandom(70_000))
    (folder / "2025" / "empty.txt").write_bytes(b"")
    (folder / "logo.png").write_bytes(os.urandom(300))
    return folder


@pytest.fixture(scope="module")
def imported(
    running: target.LocalTarget,
    customers_dir: Path,
    dumps: dict[str, Path],
    attachments: Path,
) -> dict[str, Any]:
    """``fab lifecycle.import`` into an instance that already has a database of the product."""
    cluster = running.instance.cluster
    sampledata.create_database(cluster.conninfo())
    cluster.psql("create table before_move_in (note text)", dbname=PRODUCT_DATABASE)
    cluster.psql("insert into before_move_in values ('kept')", dbname=PRODUCT_DATABASE)
    result = fab(
        "lifecycle.import", "--customer", CUSTOMER_ID, "--dump", str(dumps["current"]),
        "--attachments", str(attachments), "--customers", str(customers_dir),
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    report: dict[str, Any] = json.loads(result.stdout)
    return report


# --- reading a dump -------------------------------------------------------------------------------
def test_the_dump_says_its_version_and_rows_per_table(
    onprem: PostgresCluster, dumps: dict[str, Path]
):
    contents = read_dump(dumps["current"])
    assert contents.rows == counts(onprem)
    assert contents.rows['public."Notes & Remarks"'] == 3  # a newline inside a value is one row
    assert contents.system_info is not None
    assert (contents.system_info.edition, contents.system_info.version) == ("commerce", "25Q4.1")
    with pytest.raises(DumpError, match="not a readable pg_dump custom-format archive"):
        read_dump(dumps["plain"])


def test_move_in_refuses_a_dump_below_the_minimum_or_unsupported(
    site: Site, customers_dir: Path, dumps: dict[str, Path], running: target.LocalTarget
):
    with pytest.raises(
        MoveInRefused, match=r"below the minimum version to move in .*\(RR15Q2, S19\)"
    ):
        move_in(site, dumps["too-old"])
    with pytest.raises(MoveInRefused, match=r"RR15Q2 is not supported: S15 requires"):
        move_in(site, dumps["unsupported"])
    with pytest.raises(MoveInRefused, match=r"business database; .* commerce edition"):
        move_in(site, dumps["old-business"])
    refused = fab(
        "lifecycle.import", "--customer", CUSTOMER_ID, "--dump", str(dumps["too-old"]),
        "--customers", str(customers_dir),
    )  # fmt: skip
    assert refused.returncode == 2, refused.stdout + refused.stderr
    assert "(RR15Q2, S19)" in json.loads(refused.stdout)["error"]
    staging = Path(site.paths.staging)
    assert not staging.exists() or not list(staging.iterdir())  # nothing was copied


# --- move in (S19) --------------------------------------------------------------------------------
def test_import_loads_verifies_and_backs_up_to_both_regions(
    imported: dict[str, Any],
    running: target.LocalTarget,
    site: Site,
    onprem: PostgresCluster,
    attachments: Path,
    customer: Customer,
):
    assert imported["ok"] is True and imported["verified"] is True
    assert imported["product_version"] == "25Q4.1"
    cluster = running.instance.cluster
    assert counts(cluster) == counts(onprem) == imported["tables"]
    assert cluster.psql(sampledata.HEALTH_QUERY, dbname=PRODUCT_DATABASE) == "25Q4.1"
    # Nothing lost: the database that was there is kept aside under a dated name.
    kept = imported["previous_database"]
    assert kept.startswith(f"{PRODUCT_DATABASE}_before_movein_")
    assert cluster.psql("select note from before_move_in", dbname=kept) == "kept"
    # The attachments are on the host, byte for byte.
    on_host = Path(site.paths.attachments)
    sent = {p.relative_to(attachments): sha256(p) for p in attachments.rglob("*") if p.is_file()}
    there = {p.relative_to(on_host): sha256(p) for p in on_host.rglob("*") if p.is_file()}
    assert there == sent and imported["attachments"] == len(sent) == 3
    assert not list(Path(site.paths.staging).iterdir())  # the staging folder is cleaned up
    # A full backup right after, in each region's repository.
    sets = list_backups(LocalPgBackRest(running.instance), customer)
    for repo in ("repo1", "repo2"):
        assert imported["backups"][repo] in {b.label for b in sets[repo]}
        assert sets[repo][-1].type.value == "full"


# --- export (S18) ---------------------------------------------------------------------------------
def test_export_restores_elsewhere_with_the_same_rows(
    imported: dict[str, Any],
    running: target.LocalTarget,
    site: Site,
    customers_dir: Path,
    tmp_path: Path,
    pg_cluster_factory: Callable[..., PostgresCluster],
):
    product = Path(site.paths.product)
    (product / "modules" / "custom").mkdir(parents=True, exist_ok=True)
    (product / "modules" / "custom" / "pricing.py").write_text("DISCOUNT = 0.1\n")
    out = tmp_path / "exports"
    result = fab(
        "lifecycle.export", "--customer", CUSTOMER_ID, "--out", str(out),
        "--customers", str(customers_dir),
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads(result.stdout)
    folder = Path(report["directory"])
    assert [p.name for p in out.iterdir()] == [folder.name]
    manifest = json.loads((folder / MANIFEST).read_text())
    assert {f["name"] for f in manifest["files"]} == {
        "database.dump",
        "attachments.tar.gz",
        "source.tar.gz",
    }
    assert verify_export(folder) == []
    assert manifest["product_version"] == "25Q4.1"
    source_db = counts(running.instance.cluster)
    assert manifest["files"][0]["tables"] == source_db

    fresh = pg_cluster_factory()
    fresh.psql(f"create database {PRODUCT_DATABASE}")
    subprocess.run(
        [str(PG_BIN / "pg_restore"), "--exit-on-error", "--no-owner", "-h", str(fresh.socket_dir),
         "-p", str(fresh.port), "-U", "postgres", "-d", PRODUCT_DATABASE,
         str(folder / "database.dump")],
        check=True, capture_output=True,
    )  # fmt: skip
    assert counts(fresh) == source_db

    with tarfile.open(folder / "attachments.tar.gz") as archive:
        names = {m.name for m in archive.getmembers() if m.isfile()}
        member = archive.extractfile("attachments/logo.png")
        assert member is not None
        logo = member.read()
    assert names == {
        "attachments/logo.png",
        "attachments/2025/empty.txt",
        "attachments/2025/invoices/INV 0001.pdf",
    }
    assert logo == (Path(site.paths.attachments) / "logo.png").read_bytes()
    with tarfile.open(folder / "source.tar.gz") as archive:
        member = archive.extractfile("erp/modules/custom/pricing.py")
        assert member is not None and member.read() == b"DISCOUNT = 0.1\n"

    (folder / "source.tar.gz").write_bytes(b"tampered")
    assert verify_export(folder) == [
        f"source.tar.gz: 8 bytes, manifest {manifest['files'][2]['bytes']}"
    ]


def test_an_interrupted_export_leaves_nothing_presented_as_complete(
    imported: dict[str, Any], site: Site, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    out = tmp_path / "exports"
    seen: list[tuple[str, int]] = []

    def interrupt(name: str, done: int, total: int) -> None:
        seen.append((name, done))
        if name == "source.tar.gz":
            raise KeyboardInterrupt  # the operator's ^C, mid-file

    # First as a crash would leave it: no clean-up runs.
    monkeypatch.setattr("lifecycle.export.shutil.rmtree", lambda *_, **__: None)
    with pytest.raises(KeyboardInterrupt):
        export_customer(site, out, transfer=interrupt)
    left = sorted(p.relative_to(out).as_posix() for p in out.rglob("*"))
    assert all(name.startswith(".") for name in left), left  # only a hidden, partial folder
    assert not [name for name in left if name.endswith(MANIFEST)]
    partial = next(p for p in out.iterdir())
    assert partial.name.endswith(".partial")
    assert (partial / "source.tar.gz.part").exists() and not (partial / "source.tar.gz").exists()
    assert {name for name, _ in seen} == {"database.dump", "attachments.tar.gz", "source.tar.gz"}
    monkeypatch.undo()

    # Then with the clean-up an interrupted process does run.
    second = tmp_path / "second"
    with pytest.raises(KeyboardInterrupt):
        export_customer(site, second, transfer=interrupt)
    assert list(second.iterdir()) == []
    assert not list(Path(site.paths.staging).iterdir())  # the host's staging folder went too


# --- the inventory (P4) ---------------------------------------------------------------------------
def test_inventory_lists_the_fleet_and_writes_the_runners_inventory(
    running: target.LocalTarget,
    customer: Customer,
    customers_dir: Path,
    tmp_path: Path,
    sample_fleet: dict[str, Customer],
):
    fleet_dir = tmp_path / "customers"
    fleet_dir.mkdir()
    (fleet_dir / f"{CUSTOMER_ID}.yaml").write_text(
        (customers_dir / f"{CUSTOMER_ID}.yaml").read_text()
    )
    for sample in ("northwind-trading", "lakeside-outfitters", "maison-dupont"):
        (fleet_dir / f"{sample}.yaml").write_text((CUSTOMERS / f"{sample}.yaml").read_text())
    outputs_dir = tmp_path / "stack-outputs"
    outputs_dir.mkdir()
    outputs = {}
    for sample in ("northwind-trading", "lakeside-outfitters"):
        outputs[sample] = plan_customer(sample_fleet[sample]).outputs  # as `pulumi stack output`
        (outputs_dir / f"{sample}.json").write_text(json.dumps(outputs[sample]))
    northwind = outputs["northwind-trading"]
    pinned = running.state.host(Environment.TEST).host_public_key  # any valid host key
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text(
        f"{northwind['ssh_host']} {pinned}\n{northwind['test_ssh_host']} {pinned}\n"
    )
    out = tmp_path / "inventory.yaml"
    result = invoke(
        "inventory", "--customers", str(fleet_dir), "--stack-outputs", str(outputs_dir),
        "--known-hosts", str(known_hosts), "--out", str(out),
        "--ssh-key-file", str(tmp_path / "ops_key"),
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    rows = {row["customer"]: row for row in report["customers"]}
    assert sorted(rows) == sorted([CUSTOMER_ID, *outputs, "maison-dupont"])

    local = rows[CUSTOMER_ID]
    production = running.state.host(Environment.PRODUCTION)
    assert (
        local["ssh"]
        == local["sftp"]
        == {
            "host": "127.0.0.1",
            "port": production.port,
            "users": [u.name for u in customer.ssh.users],
        }
    )
    assert local["database"]["port"] == running.state.pg_port
    assert local["disk_used_bytes"] > 10 * 2**20 and local["running"] is True
    assert (local["licence_users"], local["pos_terminals"]) == (25, 40)
    assert (local["partner"], local["region"], local["state"]) == (
        "iberia-partners",
        "eu-west-1",
        "active",
    )
    remote = rows["northwind-trading"]
    assert remote["ssh"]["host"] == northwind["ssh_host"] and remote["url"] == northwind["url"]
    assert remote["database"] == {
        "host": northwind["database_host"],
        "port": 5432,
        "name": "erp",
        "user": "erp",
        "access": northwind["database_access"],
        "password_secret": northwind["database_password_secret"],
    }
    assert remote["disk_used_bytes"] is None
    dupont = rows["maison-dupont"]
    assert dupont["source"] == "customer file" and dupont["ssh"] is None
    assert (dupont["state"], dupont["purge_allowed_from"]) == ("cancelled", "2027-01-31")

    written = report["maintenance_inventory"]
    assert sorted(written["hosts"]) == sorted(
        [f"{CUSTOMER_ID}-test", f"{CUSTOMER_ID}-production", "northwind-trading-test",
         "northwind-trading-production"]
    )  # fmt: skip
    notes = "\n".join(written["notes"])
    assert "lakeside-outfitters-production: skipped, no pinned host key" in notes
    assert "maison-dupont: skipped, no stack outputs and no local target" in notes
    assert oct(out.stat().st_mode & 0o777) == "0o600"
    inventory = load_inventory(out, load_fleet(fleet_dir).customers)
    entry = inventory.host("northwind-trading-production")
    assert (entry.ssh.user, entry.db and entry.db.stanza) == ("erpcloud-ops", "northwind-trading")
    # The written inventory reaches the local host with its pinned key, as the runner would.
    host = inventory.host(f"{CUSTOMER_ID}-production")
    connection = connect(inventory.target(host, write_known_hosts(inventory, tmp_path / "kh")))
    try:
        assert run(connection, "id -un").stdout.strip() == production.ops_user
    finally:
        connection.close()

    # Never a password: the local secrets' values appear nowhere.
    manager = running.aws.client("secretsmanager", customer.region)
    password = manager.get_secret_value(SecretId=secret_name(customer, "database_password"))
    for text in (result.stdout, out.read_text()):
        assert password["SecretString"] not in text
    assert "password" not in yaml.safe_load(out.read_text())


def test_inventory_summary_for_people_and_unreadable_outputs(customers_dir: Path, tmp_path: Path):
    human = runner.invoke(app, ["inventory", "--customers", str(customers_dir)])
    assert human.exit_code == 0, human.output
    assert CUSTOMER_ID in human.output and "127.0.0.1" in human.output
    fleet_dir = tmp_path / "customers"
    fleet_dir.mkdir()
    (fleet_dir / "northwind-trading.yaml").write_text(
        (CUSTOMERS / "northwind-trading.yaml").read_text()
    )
    outputs_dir = tmp_path / "outputs"
    outputs_dir.mkdir()
    (outputs_dir / "northwind-trading.json").write_text("{not json")
    broken = invoke("inventory", "--customers", str(fleet_dir), "--stack-outputs", str(outputs_dir))
    assert broken.exit_code == 2
    assert "northwind-trading.json: not the stack's outputs as JSON" in broken.stdout

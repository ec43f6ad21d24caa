"""Move in (S19), export (S18) and the inventory (P4) against real machines.

The customer's production and test machines, booted from the product image (PostgreSQL 17,
both backup repositories in the AWS stand-in behind TLS), and a separate PostgreSQL cluster on
this host standing for the customer's on-premises server. The Fabric tasks run as a user runs
them (``fab lifecycle.import|export``) and find the machines as the commands do: the local site.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shlex
import subprocess
import sys
import tarfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from backups.runs import list_backups
from erpcloud.fleet import load_fleet
from erpcloud.inventory import load_inventory, write_known_hosts
from erpcloud.model import Customer, Environment
from erpcloud.product import HEALTH_QUERY
from erpcloud.render import PRODUCT_DATABASE, secret_name
from erpcloud.ssh import connect, run
from frontdoor.cli import app
from lifecycle.dump import DumpError, MoveInRefused, read_dump
from lifecycle.export import MANIFEST, export_customer, verify_export
from lifecycle.movein import move_in
from lifecycle.site import Site, resolve_site
from localtarget import machines, onmachine, sampledata
from localtarget.machines import MachineSetState
from localtarget.postgres import PG_BIN, PostgresCluster
from stacks.plan import plan_customer

from .conftest import CUSTOMERS, REPO_ROOT
from .test_lifecycle import invoke, write_local_customer

pytestmark = [pytest.mark.services, pytest.mark.timeout(900)]
TAG = os.getpid() % 100000
CUSTOMER_ID = f"lch-{TAG}"
FAB = str(Path(sys.executable).parent / "fab")
runner = CliRunner()
#: Rows that stress COPY's text format: a tab, a newline and a backslash inside values.
AWKWARD_ROWS = "insert into \"Notes & Remarks\" values (E'tab\\there'), (E'two\\nlines'), (E'\\\\')"
PRODUCTION, TEST = Environment.PRODUCTION, Environment.TEST
#: Rows per table of the public schema, named as pg_dump names them (``table|count`` lines).
COUNT_TABLES = (
    "select format('%I.%I', schemaname, tablename) || '|' || (xpath('/row/c/text()', "
    "query_to_xml(format('select count(*) as c from %I.%I', schemaname, tablename), "
    "false, true, '')))[1]::text from pg_tables where schemaname = 'public' order by 1"
)


def pg_dump(cluster: PostgresCluster, path: Path) -> Path:
    subprocess.run(
        [str(PG_BIN / "pg_dump"), "--format=custom", "-h", str(cluster.socket_dir),
         "-p", str(cluster.port), "-U", "postgres", "-d", PRODUCT_DATABASE, "-f", str(path)],
        check=True, capture_output=True,
    )  # fmt: skip
    return path


def counts(cluster: PostgresCluster, database: str = PRODUCT_DATABASE) -> dict[str, int]:
    """Rows per table of the public schema of a cluster on this host."""
    return parse_table_counts(cluster.psql(COUNT_TABLES, dbname=database))


def machine_counts(
    state: MachineSetState, environment: Environment = PRODUCTION, database: str = PRODUCT_DATABASE
) -> dict[str, int]:
    """The same, on a machine."""
    return parse_table_counts(onmachine.psql(state, environment, COUNT_TABLES, dbname=database))


def parse_table_counts(output: str) -> dict[str, int]:
    pairs = (line.rpartition("|") for line in output.splitlines() if line)
    return {table: int(count) for table, _, count in pairs}


def on_machine(state: MachineSetState, script: str, environment: Environment = PRODUCTION) -> str:
    return onmachine.as_root(state, environment, script)


def remote_files(state: MachineSetState, folder: str) -> dict[str, str]:
    """{relative path: SHA-256} of every file below a folder on production."""
    listing = on_machine(
        state,
        f"cd {shlex.quote(folder)} && find . -type f -print0 | sort -z | xargs -0 -r sha256sum",
    )
    return {
        name.removeprefix("./"): digest
        for digest, _, name in (line.partition("  ") for line in listing.splitlines())
    }


def remote_entries(state: MachineSetState, folder: str) -> list[str]:
    """What a folder on production holds (nothing if it does not exist)."""
    quoted = shlex.quote(folder)
    return on_machine(state, f"[ ! -d {quoted} ] || ls -A {quoted}").split()


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
def running(customer: Customer) -> Iterator[MachineSetState]:
    state = machines.up(customer)  # all or nothing: on failure nothing is left to take down
    try:
        yield state
    finally:
        machines.down(customer.id)


@pytest.fixture(scope="module")
def site(
    customer: Customer, running: MachineSetState, tmp_path_factory: pytest.TempPathFactory
) -> Site:
    """Found as the commands find it: the local site holds the customer's machines."""
    found = resolve_site(customer, {customer.id: customer}, work_dir=tmp_path_factory.mktemp("s"))
    assert (
        found.platform.mode == "local"
        and found.host.ssh.host == running.machines[PRODUCTION].address
    )
    return found


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
    running: MachineSetState,
    customers_dir: Path,
    dumps: dict[str, Path],
    attachments: Path,
) -> dict[str, Any]:
    """``fab lifecycle.import`` into an instance that already has a database of the product
    (provisioning created it at first boot)."""
    onmachine.psql(
        running, PRODUCTION, "create table before_move_in (note text); "
        "insert into before_move_in values ('kept')",
    )  # fmt: skip
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
    site: Site, customers_dir: Path, dumps: dict[str, Path], running: MachineSetState
):
    with pytest.raises(
        MoveInRefused, match=r"below the minimum version to move in .*\(RR15Q2, S19\)"
    ):
        move_in(site, dumps["too-old"])
    with pytest.raises(MoveInRefused, match=r"RR15Q2 is not supported: S15 requires"):
        move_in(site, dumps["unsupported"])
    with pytest.raises(MoveInRefused, match=r"business database; .* commerce edition"):
        move_in(site, dumps["old-business"])
    with pytest.raises(DumpError, match=r"plain\.sql \(read on .* not a readable pg_dump"):
        move_in(site, dumps["plain"])
    refused = fab(
        "lifecycle.import", "--customer", CUSTOMER_ID, "--dump", str(dumps["too-old"]),
        "--customers", str(customers_dir),
    )  # fmt: skip
    assert refused.returncode == 2, refused.stdout + refused.stderr
    assert "(RR15Q2, S19)" in json.loads(refused.stdout)["error"]
    assert remote_entries(running, site.paths.staging) == []  # the copied dumps went again
    assert "before_move_in" not in onmachine.psql(running, PRODUCTION, "select * from pg_tables")


# --- move in (S19) --------------------------------------------------------------------------------
def test_import_loads_verifies_and_backs_up_to_both_regions(
    imported: dict[str, Any],
    running: MachineSetState,
    site: Site,
    onprem: PostgresCluster,
    attachments: Path,
    customer: Customer,
):
    assert imported["ok"] is True and imported["verified"] is True
    assert imported["product_version"] == "25Q4.1"
    assert machine_counts(running) == counts(onprem) == imported["tables"]
    assert onmachine.psql(running, PRODUCTION, HEALTH_QUERY) == "25Q4.1"
    # Nothing lost: the database that was there is kept aside under a dated name.
    kept = imported["previous_database"]
    assert kept.startswith(f"{PRODUCT_DATABASE}_before_movein_")
    assert onmachine.psql(running, PRODUCTION, "select note from before_move_in", kept) == "kept"
    # The attachments are on the machine, byte for byte.
    sent = {
        p.relative_to(attachments).as_posix(): sha256(p)
        for p in attachments.rglob("*")
        if p.is_file()
    }
    assert remote_files(running, site.paths.attachments) == sent
    assert imported["attachments"] == len(sent) == 3
    assert remote_entries(running, site.paths.staging) == []  # the staging folder is cleaned up
    # A full backup right after, in each region's repository.
    with site.pgbackrest() as pgbackrest:
        sets = list_backups(pgbackrest, customer)
    for repo in ("repo1", "repo2"):
        assert imported["backups"][repo] in {b.label for b in sets[repo]}
        assert sets[repo][-1].type.value == "full"


# --- export (S18) ---------------------------------------------------------------------------------
def test_export_restores_elsewhere_with_the_same_rows(
    imported: dict[str, Any],
    running: MachineSetState,
    site: Site,
    customers_dir: Path,
    tmp_path: Path,
):
    custom = f"{site.paths.product}/modules/custom"
    on_machine(running, f"install -d {custom} && printf 'DISCOUNT = 0.1\\n' > {custom}/pricing.py")
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
    source_db = machine_counts(running)
    assert manifest["files"][0]["tables"] == source_db

    # Elsewhere: the test machine (the same PostgreSQL major), into a database of its own.
    staged = "/var/tmp/exported.dump"
    connection = connect(running.ssh_target(TEST))
    try:
        connection.sftp().put(str(folder / "database.dump"), staged)
    finally:
        connection.close()
    on_machine(
        running,
        "runuser -u postgres -- createdb exported && runuser -u postgres -- pg_restore "
        f"--exit-on-error --no-owner -d exported {staged}",
        TEST,
    )
    assert machine_counts(running, TEST, "exported") == source_db

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
    on_host = on_machine(running, f"base64 -w0 {site.paths.attachments}/logo.png")
    assert logo == base64.b64decode(on_host)
    with tarfile.open(folder / "source.tar.gz") as archive:
        member = archive.extractfile("erp/modules/custom/pricing.py")
        assert member is not None and member.read() == b"DISCOUNT = 0.1\n"

    (folder / "source.tar.gz").write_bytes(b"tampered")
    assert verify_export(folder) == [
        f"source.tar.gz: 8 bytes, manifest {manifest['files'][2]['bytes']}"
    ]


def test_an_interrupted_export_leaves_nothing_presented_as_complete(
    imported: dict[str, Any],
    running: MachineSetState,
    site: Site,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
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
    assert remote_entries(running, site.paths.staging) == []  # the host's staging folder went too


# --- the inventory (P4) ---------------------------------------------------------------------------
def test_inventory_lists_the_fleet_and_writes_the_runners_inventory(
    running: MachineSetState,
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
    pinned = " ".join(running.machines[TEST].host_keys[0].split()[:2])  # any valid host key
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
    production = running.machines[PRODUCTION]
    assert (
        local["ssh"]
        == local["sftp"]
        == {
            "host": production.address,
            "port": 22,
            "users": [u.name for u in customer.ssh.users],
        }
    )
    assert (local["database"]["host"], local["database"]["port"]) == (production.address, 5432)
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
    assert "maison-dupont: skipped, no stack outputs and no local machines" in notes
    assert oct(out.stat().st_mode & 0o777) == "0o600"
    inventory = load_inventory(out, load_fleet(fleet_dir).customers)
    entry = inventory.host("northwind-trading-production")
    assert (entry.ssh.user, entry.db and entry.db.stanza) == ("erpcloud-ops", "northwind-trading")
    # The written inventory reaches the local host with its pinned key, as the runner would.
    host = inventory.host(f"{CUSTOMER_ID}-production")
    connection = connect(inventory.target(host, write_known_hosts(inventory, tmp_path / "kh")))
    try:
        assert run(connection, "id -un").stdout.strip() == running.ops_user
    finally:
        connection.close()

    # Never a password: the local secrets' values appear nowhere.
    manager = running.aws_client("secretsmanager", customer.region)
    password = manager.get_secret_value(SecretId=secret_name(customer, "database_password"))
    for text in (result.stdout, out.read_text()):
        assert password["SecretString"] not in text
    assert "password" not in yaml.safe_load(out.read_text())


def test_inventory_summary_for_people_and_unreadable_outputs(
    customers_dir: Path, running: MachineSetState, tmp_path: Path
):
    human = runner.invoke(app, ["inventory", "--customers", str(customers_dir)])
    assert human.exit_code == 0, human.output
    address = running.machines[PRODUCTION].address
    assert CUSTOMER_ID in human.output and f"SSH/SFTP {address}:22" in human.output
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

"""The fleet check and the `erpcloud customer` commands, run as a user would run them."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from erpcloud.fleet import load_fleet, load_one
from erpcloud.output import EXIT_BAD_INPUT
from frontdoor.cli import app

from .conftest import CUSTOMERS
from .test_model import ED25519

runner = CliRunner()


@pytest.fixture
def fleet_dir(tmp_path: Path) -> Path:
    target = tmp_path / "customers"
    shutil.copytree(CUSTOMERS, target)
    return target


def test_check_passes_on_samples():
    result = runner.invoke(app, ["customer", "check", str(CUSTOMERS), "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["ok"] and "acme-retail" in report["customers"]


def test_duplicate_prefix_across_files_is_refused_in_both(fleet_dir: Path):
    other = yaml.safe_load((fleet_dir / "lakeside-outfitters.yaml").read_text())
    other["prefix"] = "acme"
    (fleet_dir / "lakeside-outfitters.yaml").write_text(yaml.safe_dump(other))
    fleet = load_fleet(fleet_dir)
    flagged = {Path(e.file).name for e in fleet.errors if e.field == "prefix"}
    assert flagged == {"acme-retail.yaml", "lakeside-outfitters.yaml"}
    result = runner.invoke(app, ["customer", "check", str(fleet_dir)])
    assert result.exit_code == EXIT_BAD_INPUT
    assert "S3" in result.output


def test_prefix_colliding_with_another_test_url_is_refused(fleet_dir: Path):
    other = yaml.safe_load((fleet_dir / "lakeside-outfitters.yaml").read_text())
    other["prefix"] = "acme-test"  # acme's test environment is acme-test.cloud.<domain>
    (fleet_dir / "lakeside-outfitters.yaml").write_text(yaml.safe_dump(other))
    errors = load_fleet(fleet_dir).errors
    assert any("acme-test.cloud." in e.rule for e in errors)
    with pytest.raises(ValueError, match="acme-test"):
        load_one("lakeside-outfitters", fleet_dir)


def test_check_reports_every_file_and_field_with_exit_2(fleet_dir: Path):
    broken = yaml.safe_load((fleet_dir / "acme-retail.yaml").read_text())
    broken["prefix"] = "www"
    broken["region"] = "us-east-1"
    (fleet_dir / "acme-retail.yaml").write_text(yaml.safe_dump(broken))
    (fleet_dir / "bad-yaml.yaml").write_text("id: [unclosed\n")
    result = runner.invoke(app, ["customer", "check", str(fleet_dir), "--json"])
    assert result.exit_code == EXIT_BAD_INPUT
    errors = json.loads(result.stdout)["errors"]
    located = {(Path(e["file"]).name, e["field"]) for e in errors}
    assert {("acme-retail.yaml", "prefix"), ("acme-retail.yaml", "region")} <= located
    assert any(
        Path(e["file"]).name == "bad-yaml.yaml" and "not valid YAML" in e["rule"] for e in errors
    )


def test_id_must_match_file_name(fleet_dir: Path):
    (fleet_dir / "acme-retail.yaml").rename(fleet_dir / "acme.yaml")
    errors = load_fleet(fleet_dir).errors
    assert [(e.field, "file name" in e.rule) for e in errors] == [("id", True)]


def test_show_prints_derived_values():
    result = runner.invoke(app, ["customer", "show", "northwind-trading", "--json"])
    assert result.exit_code == 0, result.output
    shown = json.loads(result.stdout)
    assert shown["copy_region"] == "us-east-2"
    assert shown["test_environment"]["instance_type"] == "r6i.large"


def _new_args(fleet_dir: Path, key_file: Path, prefix: str) -> list[str]:
    return [
        "customer",
        "new",
        "harbour-foods",
        "--customers",
        str(fleet_dir),
        "--company",
        "Harbour Foods Ltd",
        "--email",
        "it@harbour.example.com",
        "--partner",
        "iberia-partners",
        "--zone",
        "EU",
        "--edition",
        "commerce",
        "--version",
        "26Q1",
        "--prefix",
        prefix,
        "--region",
        "eu-west-1",
        "--instance-type",
        "m6i.xlarge",
        "--volume-gib",
        "120",
        "--ssh-user",
        "hf-admin",
        "--ssh-key-file",
        str(key_file),
        "--cidr",
        "198.51.100.0/24",
        "--users",
        "12",
        "--pos",
        "25",
        "--invoice-date",
        "2026-11-01",
        "--json",
    ]


def test_new_writes_a_valid_file(fleet_dir: Path, tmp_path: Path):
    key = tmp_path / "id.pub"
    key.write_text(ED25519 + "\n")
    result = runner.invoke(app, _new_args(fleet_dir, key, "harbour"))
    assert result.exit_code == 0, result.output
    created = fleet_dir / "harbour-foods.yaml"
    assert load_fleet(fleet_dir).ok
    assert load_one(str(created)).url_host.startswith("harbour.cloud.")
    again = runner.invoke(app, _new_args(fleet_dir, key, "harbour"))
    assert again.exit_code == EXIT_BAD_INPUT and "exists already" in again.stdout


def _refused_details(fleet_dir: Path, key_file: Path, prefix: str) -> list[str]:
    result = runner.invoke(app, _new_args(fleet_dir, key_file, prefix))
    assert result.exit_code == EXIT_BAD_INPUT
    assert not (fleet_dir / "harbour-foods.yaml").exists()
    assert not [p for p in fleet_dir.iterdir() if p.name.startswith(".")]
    return list(json.loads(result.stdout)["details"])


def test_new_refuses_bad_fields_and_writes_nothing(fleet_dir: Path, tmp_path: Path):
    key = tmp_path / "id.pub"
    key.write_text("ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABAQC6Alh short\n")
    details = _refused_details(fleet_dir, key, "Bad_Prefix")
    assert any(": prefix: must be a valid DNS label" in d for d in details)
    assert any(": ssh.users[0].keys[0]: " in d for d in details)


def test_new_refuses_a_taken_prefix_and_writes_nothing(fleet_dir: Path, tmp_path: Path):
    key = tmp_path / "id.pub"
    key.write_text(ED25519 + "\n")
    details = _refused_details(fleet_dir, key, "acme")
    assert details and all("acme-retail" in d and ": prefix: " in d for d in details)

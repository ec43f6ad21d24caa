"""Notices: one per affected customer and a digest per partner, before a change may run."""

from __future__ import annotations

import json
from pathlib import Path

import yaml
from typer.testing import CliRunner

from erpcloud.model import Customer
from erpcloud.output import EXIT_BAD_INPUT
from frontdoor.cli import app
from maintenance.change import load_change
from maintenance.notices import needs_notice, notice_problems, render_notices
from maintenance.rules import ChangeCheck, check_change

from .conftest import REPO_ROOT

runner = CliRunner()
CHANGES = REPO_ROOT / "maintenance" / "changes"


def sample(name: str, customers: dict[str, Customer]) -> ChangeCheck:
    return check_change(load_change(CHANGES / f"{name}.yaml"), customers)


def test_each_customer_gets_its_own_time_and_each_partner_a_digest(
    tmp_path: Path, sample_fleet: dict[str, Customer]
):
    check = sample("2026-12-log-rotation", sample_fleet)
    rendered = render_notices(check, tmp_path)
    folder = tmp_path / "2026-12-log-rotation"
    assert rendered.directory == folder
    assert rendered.customers == ["acme-retail", "lakeside-outfitters", "northwind-trading"]
    assert rendered.partners == ["iberia-partners", "keystone-erp"]
    dublin = (folder / "customers/acme-retail.txt").read_text()
    assert "Monday 21 December 2026 22:00 GMT to 23:00 GMT" in dublin
    assert "2026-12-21 22:00 UTC to 2026-12-21 23:00 UTC" in dublin
    assert "(S11)" in dublin and "none expected" in dublin
    new_york = (folder / "customers/northwind-trading.txt").read_text()
    assert "Monday 21 December 2026 22:00 EST to 23:00 EST" in new_york
    assert "2026-12-22 03:00 UTC" in new_york  # Tuesday in UTC, Monday evening locally
    html = (folder / "customers/northwind-trading.html").read_text()
    assert html.startswith("<!DOCTYPE html>") and "2026-12-22 03:00 UTC" in html
    digest = (folder / "partners/keystone-erp.txt").read_text()
    assert "Lakeside Outfitters" in digest and "Northwind Trading" in digest
    assert "Acme Retail" not in digest  # another partner's customer
    assert "UTC UTC" not in digest
    assert not (folder / "customers/maison-dupont.txt").exists()  # service ended (S18)
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["notice_digest"] == check.loaded.notice_digest
    for path in folder.rglob("*"):
        if path.is_file():
            text = path.read_text()
            assert "activationKey" not in text and "PRIVATE KEY" not in text


def test_major_and_emergency_notices_use_their_own_terms(
    tmp_path: Path, sample_fleet: dict[str, Customer]
):
    major = sample("2027-03-us-east-hardware-refresh", sample_fleet)
    render_notices(major, tmp_path)
    text = (tmp_path / major.loaded.id / "customers/northwind-trading.txt").read_text()
    assert text.startswith("Major maintenance change") and "(S13)" in text
    assert "up to 4 h 00 min" in text
    emergency = sample("2026-12-emergency-db-tls", sample_fleet)
    assert not needs_notice(emergency)  # no interruption: S12 asks no notice
    render_notices(emergency, tmp_path)
    text = (tmp_path / emergency.loaded.id / "customers/acme-retail.txt").read_text()
    assert "protect the security" in text and "(S12)" in text


def test_a_change_may_not_run_without_current_notices(
    tmp_path: Path, sample_fleet: dict[str, Customer]
):
    changes = tmp_path / "changes"
    changes.mkdir()
    source = (CHANGES / "2026-12-log-rotation.yaml").read_text()
    path = changes / "2026-12-log-rotation.yaml"
    path.write_text(source)
    check = check_change(load_change(path), sample_fleet)
    notices = tmp_path / "notices"
    assert needs_notice(check)
    assert "no notices rendered for 2026-12-log-rotation" in notice_problems(check, notices)[0]
    render_notices(check, notices)
    assert notice_problems(check, notices) == []
    data = yaml.safe_load(source)
    data["expected_downtime_minutes"] = 20  # what the customers were told no longer holds
    path.write_text(yaml.safe_dump(data))
    changed = check_change(load_change(path), sample_fleet)
    assert "announce an earlier version" in notice_problems(changed, notices)[0]
    manifest = notices / "2026-12-log-rotation" / "manifest.json"
    document = json.loads(manifest.read_text())
    document["customers"].remove("acme-retail")
    document["notice_digest"] = changed.loaded.notice_digest
    manifest.write_text(json.dumps(document))
    assert notice_problems(changed, notices) == [
        "no notice for acme-retail: render them with `erpcloud maintenance notices "
        "2026-12-log-rotation` and send them"
    ]


def test_notices_command(tmp_path: Path):
    out = tmp_path / "notices"
    result = runner.invoke(
        app, ["maintenance", "notices", "2026-12-log-rotation", "--out", str(out), "--json"]
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["needs_notice"] is True
    assert "customers/lakeside-outfitters.html" in report["files"]
    assert (out / "2026-12-log-rotation" / "partners" / "iberia-partners.html").is_file()

    broken = tmp_path / "changes"
    broken.mkdir()
    data = yaml.safe_load((CHANGES / "2026-12-log-rotation.yaml").read_text())
    data["window"] = {"date": "2026-12-14"}
    (broken / "2026-12-log-rotation.yaml").write_text(yaml.safe_dump(data))
    refused = runner.invoke(
        app,
        ["maintenance", "notices", "2026-12-log-rotation", "--changes", str(broken),
         "--out", str(tmp_path / "other"), "--json"],
    )  # fmt: skip
    assert refused.exit_code == EXIT_BAD_INPUT
    assert any("window.date" in d for d in json.loads(refused.stdout)["details"])
    assert not (tmp_path / "other").exists()  # nothing written

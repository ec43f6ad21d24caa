"""Rendered files: checked by Debian's real cloud-init, scanned for secrets, written atomically."""

from __future__ import annotations

import json
import subprocess
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml

from erpcloud import policy, render
from erpcloud.model import Customer, Environment
from erpcloud.render import (
    HostLayout,
    NoticeWindow,
    UserDataError,
    check_cloud_config_keys,
    cloud_init_schema,
    render_customer,
    render_notice,
    render_pgbackrest_conf,
    render_user_data,
    validate_user_data_file,
)

ENVIRONMENTS = list(Environment)


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory, sample_fleet: dict[str, Customer]) -> Path:
    build = tmp_path_factory.mktemp("build")
    for customer in sample_fleet.values():
        render_customer(customer, build)
    return build


def user_data_files(build: Path) -> list[Path]:
    return sorted(build.glob("*/*/user-data.yaml"))


def test_every_rendered_user_data_passes_cloud_init_schema(rendered: Path):
    files = user_data_files(rendered)
    assert len(files) == 2 * len(list(rendered.iterdir()))
    for path in files:
        result = cloud_init_schema(path)
        assert result.returncode == 0, f"{path}: {result.stderr}"
        validate_user_data_file(path)


@pytest.mark.must_fail
def test_a_deliberately_broken_user_data_is_refused_by_cloud_init(rendered: Path, tmp_path: Path):
    """The gate is real: cloud-init's exit code fails a wrong type inside a users entry."""
    good = yaml.safe_load(next(iter(user_data_files(rendered))).read_text())
    good["users"][0]["lock_passwd"] = "not-a-boolean"
    good["ssh_pwauth"] = {"nested": "mapping"}
    broken = tmp_path / "user-data.yaml"
    broken.write_text("#cloud-config\n" + yaml.safe_dump(good))
    result = cloud_init_schema(broken)
    assert result.returncode == 1
    with pytest.raises(UserDataError, match="cloud-init schema refused it"):
        validate_user_data_file(broken)


def test_unknown_top_level_keys_and_missing_header_are_refused():
    with pytest.raises(UserDataError, match="unknown top-level cloud-config keys: user"):
        check_cloud_config_keys("#cloud-config\nuser: {name: x}\n")
    with pytest.raises(UserDataError, match="#cloud-config"):
        check_cloud_config_keys("users: []\n")


@pytest.mark.parametrize("environment", ENVIRONMENTS)
def test_users_are_key_only_and_non_root(sample_fleet: dict[str, Customer], environment):
    for customer in sample_fleet.values():
        data = yaml.safe_load(render_user_data(customer, environment))
        assert data["disable_root"] is True and data["ssh_pwauth"] is False
        names = [u["name"] for u in data["users"]]
        assert names == [u.name for u in customer.ssh.users] + [
            policy.OPERATIONS_USER,
            policy.SUPPORT_USER,
        ]
        assert "root" not in names
        sudoers = [u["name"] for u in data["users"] if "sudo" in u]
        assert sudoers == [policy.OPERATIONS_USER]  # S4/S16: nobody else is root
        assert all(u["lock_passwd"] is True for u in data["users"])
        # Keys for everyone but the support user, who logs in by certificate only (P5).
        keyless = [u["name"] for u in data["users"] if not u.get("ssh_authorized_keys")]
        assert keyless == [policy.SUPPORT_USER]
        principals = _file(data, f"/etc/ssh/erpcloud-principals/{policy.SUPPORT_USER}")
        assert principals == f"support-{customer.id}\n"
        sshd = _file(data, "/etc/ssh/sshd_config.d/50-erpcloud.conf")
        assert "PasswordAuthentication no" in sshd and "PermitRootLogin no" in sshd
        # S4/S20: customer users from the customer's networks only, as the security group.
        allowed = next(line for line in sshd.splitlines() if line.startswith("AllowUsers "))
        expected = [
            f"{u.name}@{cidr}" for u in customer.ssh.users for cidr in customer.ssh.allowed_cidrs
        ]
        assert allowed.split()[1:] == [*expected, policy.OPERATIONS_USER, policy.SUPPORT_USER]


def _file(data: dict, path: str) -> str:
    matches = [f["content"] for f in data["write_files"] if f["path"] == path]
    assert len(matches) == 1, f"{path} not written exactly once"
    return str(matches[0])


def _paths(data: dict) -> set[str]:
    return {f["path"] for f in data["write_files"]}


def test_production_archives_wal_to_both_regions(sample_fleet: dict[str, Customer]):
    customer = sample_fleet["acme-retail"]
    data = yaml.safe_load(render_user_data(customer, Environment.PRODUCTION))
    pg_conf = _file(data, "/etc/postgresql/17/main/conf.d/erpcloud.conf")
    assert "archive_mode = on" in pg_conf
    assert "archive-push %p" in pg_conf and "--stanza=acme-retail" in pg_conf
    assert f"archive_timeout = {int(policy.ARCHIVE_TIMEOUT.total_seconds())}s" in pg_conf
    backrest = _file(data, "/etc/pgbackrest/pgbackrest.conf")
    primary, copy = customer.backup_bucket_names
    assert f"repo1-s3-bucket={primary}" in backrest and "repo1-s3-region=eu-west-1" in backrest
    assert f"repo2-s3-bucket={copy}" in backrest and "repo2-s3-region=eu-central-1" in backrest
    assert backrest.count(f"retention-full={policy.BACKUP_RETENTION_DAYS}") == 2
    assert "s3-key-type=auto" in backrest and "s3-key=" not in backrest
    # Block-level incrementals in both repositories (pgBackRest 2.55 in the image, S6).
    assert [f"repo{i}-{o}=y" in backrest for i in (1, 2) for o in ("bundle", "block")] == [True] * 4
    older = render_pgbackrest_conf(customer, replace(HostLayout(), block_incremental=False))
    assert "-bundle=" not in older and "-block=" not in older
    timers = _file(data, "/etc/systemd/system/pgbackrest-full.timer")
    assert "OnCalendar=Sun *-*-* 01:30:00 Europe/Dublin" in timers


def test_test_environment_has_no_backups_and_no_monitoring(sample_fleet: dict[str, Customer]):
    """S9: no monitoring, no backups for the test environment."""
    for customer in sample_fleet.values():
        data = yaml.safe_load(render_user_data(customer, Environment.TEST))
        paths = _paths(data)
        assert not any("pgbackrest" in p or "cloudwatch" in p or "metrics" in p for p in paths)
        assert "archive_mode = off" in _file(data, "/etc/postgresql/17/main/conf.d/erpcloud.conf")
        commands = json.dumps(data["runcmd"])
        assert "pgbackrest" not in commands and "cloudwatch" not in commands
        assert data["fqdn"] == customer.test_url_host


def test_monitoring_agent_collects_what_s5_lists(sample_fleet: dict[str, Customer]):
    data = yaml.safe_load(render_user_data(sample_fleet["northwind-trading"]))
    agent = json.loads(_file(data, render.CLOUDWATCH_CONFIG_PATH))
    collected = agent["metrics"]["metrics_collected"]
    assert {"cpu", "mem", "disk", "diskio", "net"} <= set(collected)
    metrics = _file(data, "/usr/local/lib/erpcloud/db-metrics")
    for name in ("DatabaseConnections", "DatabaseSizeBytes", "WalArchiveAgeSeconds"):
        assert name in metrics
    assert "pg_stat_archiver" in metrics


def test_rendered_files_never_contain_secret_values(
    sample_fleet: dict[str, Customer], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    """Plant secret values where a careless renderer could pick them up; none may leak."""
    planted = {
        "ERPCLOUD_ACTIVATION_KEY": "PLANTED-ACTIVATION-7f3a9c",
        "ACME_DB_PASSWORD": "PLANTED-DBPASS-b81e2d",
        "PGBACKREST_REPO1_S3_KEY_SECRET": "PLANTED-S3SECRET-55aa01",
        "PULUMI_CONFIG": json.dumps({"erpcloud:activationKey": "PLANTED-PULUMI-c0ffee"}),
    }
    for name, value in planted.items():
        monkeypatch.setenv(name, value)
    customer = sample_fleet["acme-retail"].model_copy(
        update={
            "secrets": sample_fleet["acme-retail"].secrets.model_validate(
                {
                    "activation_key": "env:ERPCLOUD_ACTIVATION_KEY",
                    "database_password": "env:ACME_DB_PASSWORD",
                }
            )
        }
    )
    out = render_customer(customer, tmp_path)
    texts = [p.read_text() for p in out.directory.rglob("*") if p.is_file()]
    assert len(texts) == len(out.files) > 10
    for needle in (
        "PLANTED-ACTIVATION-7f3a9c",
        "PLANTED-DBPASS-b81e2d",
        "PLANTED-S3SECRET-55aa01",
        "PLANTED-PULUMI-c0ffee",
    ):
        assert not any(needle in text for text in texts), needle
    fetch = (out.directory / "production/files/usr/local/lib/erpcloud/fetch-secrets").read_text()
    assert "erpcloud/acme-retail/activation-key" in fetch  # the name, read at boot (S1)


def test_render_is_all_or_nothing(
    sample_fleet: dict[str, Customer], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    customer = sample_fleet["acme-retail"]
    first = render_customer(customer, tmp_path)
    before = {p: p.read_bytes() for p in first.directory.rglob("*") if p.is_file()}

    def broken(*args, **kwargs):
        raise RuntimeError("template failed half way")

    monkeypatch.setattr(render, "render_cloudwatch_agent_config", broken)
    with pytest.raises(RuntimeError):
        render_customer(customer, tmp_path)
    after = {p: p.read_bytes() for p in first.directory.rglob("*") if p.is_file()}
    assert after == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["acme-retail"]


def test_script_templates_are_valid_bash(rendered: Path):
    scripts = [
        p for p in rendered.rglob("*") if p.is_file() and p.read_text().startswith("#!/bin/bash")
    ]
    assert len(scripts) >= 4
    for script in scripts:
        result = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
        assert result.returncode == 0, f"{script}: {result.stderr}"


def test_local_layout_changes_paths_not_policy(sample_fleet: dict[str, Customer]):
    customer = sample_fleet["acme-retail"]
    layout = HostLayout(
        pg_data="/x/data",
        pg_port=55432,
        pg_socket_dir="/x/sock",
        pgbackrest_config="/x/pgbackrest.conf",
    )
    text = render.render_postgresql_conf(customer, layout)
    assert "port = 55432" in text and "--config=/x/pgbackrest.conf" in text
    assert text.replace("55432", "5432").replace(
        "/x/pgbackrest.conf", "/etc/pgbackrest/pgbackrest.conf"
    ).replace("unix_socket_directories = '/x/sock'\n", "") == render.render_postgresql_conf(
        customer, HostLayout()
    )


@pytest.mark.parametrize(
    ("kind", "starts", "local", "utc"),
    [
        # Dublin is on summer time (UTC+1) in March after the last Sunday, winter time before.
        (
            "standard",
            datetime(2026, 3, 16, 22, 0, tzinfo=UTC),
            "Monday 16 March 2026 22:00 GMT",
            "2026-03-16 22:00 UTC",
        ),
        (
            "emergency",
            datetime(2026, 7, 20, 21, 0, tzinfo=UTC),
            "Monday 20 July 2026 22:00 IST",
            "2026-07-20 21:00 UTC",
        ),
        (
            "major",
            datetime(2026, 10, 19, 21, 0, tzinfo=UTC),
            "Monday 19 October 2026 22:00 IST",
            "2026-10-19 21:00 UTC",
        ),
    ],
)
def test_notices_show_data_centre_time_and_utc(
    sample_fleet: dict[str, Customer], kind: str, starts: datetime, local: str, utc: str
):
    customer = sample_fleet["acme-retail"]
    notice = NoticeWindow(
        change_id="2026-07-kernel",
        kind=kind,
        reason="security",
        summary="Kernel update",
        starts_at=starts,
        duration=timedelta(hours=1),
        expected_downtime=timedelta(minutes=20),
        timezone=policy.REGION_TIMEZONES[customer.region],
        reason_category="security",
    )
    rendered_notice = render_notice(customer, notice)
    for body in (rendered_notice.text, rendered_notice.html):
        assert local in body and utc in body and "up to 20 minutes" in body
    assert {"standard": "S11", "emergency": "S12", "major": "S13"}[kind] in rendered_notice.text
    assert (
        "<script"
        not in render_notice(
            customer.model_copy(update={"company": "<script>x</script>"}), notice
        ).html
    )


def test_render_command_writes_and_validates_every_customer(tmp_path: Path):
    from typer.testing import CliRunner

    from frontdoor.cli import app

    result = CliRunner().invoke(app, ["render", "acme-retail", "--out", str(tmp_path), "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)["rendered"]
    assert [r["customer"] for r in report] == ["acme-retail"]
    assert len(report[0]["user_data_validated"]) == 2
    assert (tmp_path / "acme-retail" / "production" / "user-data.yaml").exists()
    unknown = CliRunner().invoke(app, ["render", "nobody", "--out", str(tmp_path)])
    assert unknown.exit_code == 2 and "unknown customer" in unknown.output

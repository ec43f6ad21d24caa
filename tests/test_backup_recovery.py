"""After a mass delete by a compromised instance (issue 13, S6): the versioned repositories
come back with one command, and pgBackRest's own earlier expiry stays expired.

Against the AWS stand-in (moto in server mode); the command reaches it as it reaches AWS, through
boto3's ``AWS_ENDPOINT_URL``. That the instance role cannot delete versions is the plan's
(``tests/test_stacks.py``: the role's S3 actions); a restore after a recovery is the drills'.
"""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
from typer.testing import CliRunner

from backups.recover import recover_bucket
from erpcloud.aws import EMULATOR_ACCESS_KEY, EMULATOR_SECRET_KEY
from erpcloud.model import Customer
from frontdoor.cli import app
from localtarget.s3 import LocalAws

pytestmark = pytest.mark.services


def make_bucket(aws: LocalAws, name: str, region: str) -> object:
    s3 = aws.client("s3", region)
    s3.create_bucket(Bucket=name, CreateBucketConfiguration={"LocationConstraint": region})
    s3.put_bucket_versioning(Bucket=name, VersioningConfiguration={"Status": "Enabled"})
    return s3


def body(s3: object, bucket: str, key: str) -> bytes:
    return s3.get_object(Bucket=bucket, Key=key)["Body"].read()  # type: ignore[attr-defined]


def keys(s3: object, bucket: str) -> set[str]:
    listed = s3.list_objects_v2(Bucket=bucket)  # type: ignore[attr-defined]
    return {o["Key"] for o in listed.get("Contents", [])}


def test_markers_since_the_damage_are_removed_and_older_expiry_stays(isolated_aws: LocalAws):
    s3 = make_bucket(isolated_aws, "recover-unit", "eu-west-1")
    put = s3.put_object  # type: ignore[attr-defined]
    put(Bucket="recover-unit", Key="archive/000001", Body=b"first")
    put(Bucket="recover-unit", Key="archive/000001", Body=b"second")  # two versions
    put(Bucket="recover-unit", Key="backup/expired", Body=b"old backup")
    s3.delete_object(Bucket="recover-unit", Key="backup/expired")  # type: ignore[attr-defined]
    time.sleep(1.1)  # S3 times have second precision in listings
    since = datetime.now(UTC)
    put(Bucket="recover-unit", Key="backup/backup.info", Body=b"info")
    for key in ("archive/000001", "backup/backup.info"):
        s3.delete_object(Bucket="recover-unit", Key=key)  # type: ignore[attr-defined]
    assert keys(s3, "recover-unit") == set()

    preview = recover_bucket(s3, "recover-unit", "eu-west-1", since, dry_run=True)
    assert preview.restored == ["archive/000001", "backup/backup.info"] and not preview.ran
    assert keys(s3, "recover-unit") == set()  # a dry run changes nothing

    done = recover_bucket(s3, "recover-unit", "eu-west-1", since)
    assert done.ran and done.left_deleted == 1
    assert keys(s3, "recover-unit") == {"archive/000001", "backup/backup.info"}
    assert body(s3, "recover-unit", "archive/000001") == b"second"  # the newest real version


def test_the_command_brings_both_regions_back_and_is_audited(
    isolated_aws: LocalAws,
    sample_fleet: dict[str, Customer],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
):
    customer = sample_fleet["acme-retail"]
    regions = (customer.region, customer.backup_copy_region)
    clients = {}
    for bucket, region in zip(customer.backup_bucket_names, regions, strict=True):
        clients[bucket] = s3 = make_bucket(isolated_aws, bucket, region)
        s3.put_object(Bucket=bucket, Key="pgbackrest/archive.info", Body=region.encode())  # type: ignore[attr-defined]
    since = datetime.now(UTC).isoformat()
    for bucket, s3 in clients.items():
        s3.delete_object(Bucket=bucket, Key="pgbackrest/archive.info")  # type: ignore[attr-defined]
    monkeypatch.setenv("AWS_ENDPOINT_URL", isolated_aws.endpoint_url)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", EMULATOR_ACCESS_KEY)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", EMULATOR_SECRET_KEY)
    audit_log = tmp_path / "audit.jsonl"
    monkeypatch.setenv("ERPCLOUD_AUDIT_LOG", str(audit_log))
    result = CliRunner().invoke(
        app, ["backup", "recover-deleted", customer.id, "--since", since, "--json"]
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert [b["restored"] for b in report["buckets"]] == [["pgbackrest/archive.info"]] * 2
    for bucket, s3 in clients.items():
        assert body(s3, bucket, "pgbackrest/archive.info") in {r.encode() for r in regions}
    (event,) = [json.loads(line) for line in audit_log.read_text().splitlines()]
    assert event["action"] == "backup.recover-deleted" and event["customer"] == customer.id


def test_a_bad_since_is_refused(sample_fleet: dict[str, Customer]):
    result = CliRunner().invoke(
        app, ["backup", "recover-deleted", "acme-retail", "--since", "yesterday", "--json"]
    )
    assert result.exit_code == 2
    assert "ISO 8601" in json.loads(result.output)["error"]

"""`erpcloud plan`: the offline plan for reviewers, and its typed API for other tools."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from erpcloud.model import Customer
from erpcloud.output import EXIT_BAD_INPUT, EXIT_FAILED
from frontdoor.cli import app
from localtarget.s3 import LocalAws
from stacks.plan import (
    BUCKET_TYPE,
    KMS_KEY_TYPE,
    OFFLINE_PLACEHOLDER,
    SECRET_TYPE,
    Plan,
    PlannedResource,
    plan_customer,
)
from stacks.recording import REDACTED_MARK

from .conftest import CUSTOMERS

runner = CliRunner()


@pytest.fixture(scope="module")
def acme_plan(sample_fleet: dict[str, Customer]):
    return plan_customer(sample_fleet["acme-retail"])


def test_plan_records_are_typed_grouped_and_redacted(acme_plan, sample_fleet):
    customer = sample_fleet["acme-retail"]
    groups = acme_plan.components()
    assert set(groups) == {"(stack)", customer.id, f"{customer.id}-test"}
    assert {r.component_type for r in groups[customer.id]} == {"erpcloud:index:CustomerInstance"}
    assert {r.component_type for r in groups[f"{customer.id}-test"]} == {
        "erpcloud:index:TestEnvironment"
    }
    instance = acme_plan.named(f"{customer.id}-instance")
    assert isinstance(instance, PlannedResource)
    assert (instance.provider, instance.region) == (f"{customer.id}-primary", customer.region)
    assert instance.parent == customer.id and instance.short_type == "ec2.Instance"
    assert instance.inputs["rootBlockDevice"]["volumeSize"] == 30  # integers, not wire doubles
    assert instance.ignore_changes == ("ami", "userDataBase64")
    version = acme_plan.named(f"{customer.id}-activation-key-version")
    assert version.secret_inputs == ("secretString",)
    assert version.inputs["secretString"] == REDACTED_MARK
    text = json.dumps(acme_plan.to_json())
    assert OFFLINE_PLACEHOLDER not in text
    assert acme_plan.to_json()["offline"] is True


def test_the_plan_carries_what_an_emulator_needs_to_create_the_customers_storage(
    acme_plan, sample_fleet
):
    """The API another tool uses: buckets with their regions and keys, secret names."""
    customer = sample_fleet["acme-retail"]
    buckets = {b.inputs["bucket"]: b.region for b in acme_plan.of_type(BUCKET_TYPE)}
    primary, copy = customer.backup_bucket_names
    assert buckets == {
        primary: customer.region,
        copy: customer.backup_copy_region,
        customer.access_log_bucket_name: customer.region,
    }
    keys = {k.region: k.inputs["enableKeyRotation"] for k in acme_plan.of_type(KMS_KEY_TYPE)}
    assert keys == {customer.region: True, customer.backup_copy_region: True}
    secrets = {s.inputs["name"] for s in acme_plan.of_type(SECRET_TYPE)}
    assert secrets == {
        f"erpcloud/{customer.id}/activation-key",
        f"erpcloud/{customer.id}/database-password",
        f"erpcloud/{customer.id}/test/activation-key",  # the test environment's own (issue 13)
        f"erpcloud/{customer.id}/test/database-password",
    }


@pytest.mark.services
def test_an_emulator_can_be_provisioned_from_the_offline_plan(
    acme_plan: Plan, isolated_aws: LocalAws
) -> None:
    """Create the customer's buckets, keys and secrets in moto from the offline plan of the real
    program, then read them back. Its own emulator: the backup tests' buckets share these names."""
    local_aws = isolated_aws
    keys: dict[str, str] = {}
    for key in acme_plan.of_type(KMS_KEY_TYPE):
        kms = local_aws.client("kms", key.aws_region)
        created = kms.create_key(Description=key.inputs["description"])["KeyMetadata"]
        if key.inputs["enableKeyRotation"]:
            kms.enable_key_rotation(KeyId=created["KeyId"])
        keys[key.aws_region] = created["Arn"]
    for bucket in acme_plan.of_type(BUCKET_TYPE):
        s3 = local_aws.client("s3", bucket.aws_region)
        name = bucket.inputs["bucket"]
        s3.create_bucket(
            Bucket=name, CreateBucketConfiguration={"LocationConstraint": bucket.region}
        )
        s3.put_bucket_versioning(Bucket=name, VersioningConfiguration={"Status": "Enabled"})
        s3.put_bucket_encryption(
            Bucket=name,
            ServerSideEncryptionConfiguration={
                "Rules": [
                    {
                        "ApplyServerSideEncryptionByDefault": {
                            "SSEAlgorithm": "aws:kms",
                            "KMSMasterKeyID": keys[bucket.aws_region],
                        }
                    }
                ]
            },
        )
        rule = s3.get_bucket_encryption(Bucket=name)["ServerSideEncryptionConfiguration"]
        assert rule["Rules"][0]["ApplyServerSideEncryptionByDefault"]["SSEAlgorithm"] == "aws:kms"
        assert s3.get_bucket_location(Bucket=name)["LocationConstraint"] == bucket.region
    for secret in acme_plan.of_type(SECRET_TYPE):
        manager = local_aws.client("secretsmanager", secret.aws_region)
        manager.create_secret(Name=secret.inputs["name"], SecretString="set-by-the-tool")
        assert (
            manager.describe_secret(SecretId=secret.inputs["name"])["Name"] == secret.inputs["name"]
        )


def test_plan_command_prints_an_offline_plan_grouped_by_component():
    result = runner.invoke(app, ["plan", "northwind-trading", "--customers", str(CUSTOMERS)])
    assert result.exit_code == 0, result.output
    assert result.output.startswith("OFFLINE PLAN")
    assert "not a `pulumi preview`" in result.output
    assert "northwind-trading (erpcloud:index:CustomerInstance)" in result.output
    assert "northwind-trading-test (erpcloud:index:TestEnvironment)" in result.output
    assert "promise checks passed" in result.output


def test_plan_command_json_lists_every_resource_and_the_checks():
    result = runner.invoke(
        app, ["plan", "maison-dupont", "--json", "--customers", str(CUSTOMERS), "--preview-mode"]
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["offline"] is True and report["ok"] is True
    assert report["checks"] == {"ok": True, "violations": []}
    count = sum(len(resources) for resources in report["components"].values())
    assert count == report["resource_count"] > 80
    regions = {
        r["region"] for resources in report["components"].values() for r in resources if r["region"]
    }
    assert regions == {"eu-west-3", "eu-central-1"}  # S10 exception region and its named copy
    assert report["outputs"]["url"] == "https://dupont.cloud.erp-cloud.example.net"


def test_plan_command_refuses_an_unknown_customer_with_exit_2():
    result = runner.invoke(app, ["plan", "nobody", "--json", "--customers", str(CUSTOMERS)])
    assert result.exit_code == EXIT_BAD_INPUT
    assert "no customer 'nobody'" in json.loads(result.stdout)["error"]


def test_plan_command_fails_when_the_program_refuses_the_customer(tmp_path: Path):
    folder = tmp_path / "customers"
    folder.mkdir()
    document = yaml.safe_load((CUSTOMERS / "lakeside-outfitters.yaml").read_text())
    document["secrets"] = {"activation_key": "generated"}
    (folder / "lakeside-outfitters.yaml").write_text(yaml.safe_dump(document))
    result = runner.invoke(app, ["plan", "lakeside-outfitters", "--customers", str(folder)])
    assert result.exit_code == EXIT_FAILED
    assert "cannot be 'generated'" in result.output


def test_a_cancelled_customer_stops_at_its_termination_date_and_keeps_its_data(sample_fleet):
    """S18: service stops at the end of the notice period; buckets stay (60 days, protected)."""
    customer = sample_fleet["maison-dupont"]
    end = customer.lifecycle.termination_date
    assert end is not None
    before = plan_customer(customer, today=end - timedelta(days=1))
    after = plan_customer(customer, today=end)
    state = "aws:ec2transitgateway/instanceState:InstanceState"
    assert {r.inputs["state"] for r in before.of_type(state)} == {"running"}
    assert {r.inputs["state"] for r in after.of_type(state)} == {"stopped"}
    assert len(after.resources) == len(before.resources)
    assert all(b.protect for b in after.of_type(BUCKET_TYPE))

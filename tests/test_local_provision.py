"""The local AWS stand-in is provisioned from the offline plan of the real program (S1, S6):
what the machines read at boot exists, with the values the target chose, for both
environments (issue 13: the test environment's secrets are its own)."""

from __future__ import annotations

import pytest

from erpcloud import policy
from erpcloud.aws import S3_LEGACY_REGION
from erpcloud.model import Customer, Environment
from erpcloud.render import secret_name
from localtarget.provision import provision_from_plan
from localtarget.s3 import LocalAws
from localtarget.secrets import SECRET_FIELDS, local_secret_values, referenced_secrets
from stacks.plan import plan_customer

pytestmark = pytest.mark.services


@pytest.mark.parametrize("customer_id", ["northwind-trading", "acme-retail"])
def test_storage_keys_and_secrets_come_from_the_offline_plan(
    customer_id: str, sample_fleet: dict[str, Customer], isolated_aws: LocalAws
):
    """S6 buckets (us-east-1 takes no LocationConstraint, every other region needs one), with
    what the program declares for them; both environments' secrets; the rest skipped."""
    customer = sample_fleet[customer_id]
    plan = plan_customer(customer)
    values = local_secret_values(customer)
    report = provision_from_plan(plan, isolated_aws, values, referenced_secrets(customer))
    regions = (customer.region, customer.backup_copy_region)
    for bucket, region in zip(customer.backup_bucket_names, regions, strict=True):
        s3 = isolated_aws.client("s3", region)
        location = s3.get_bucket_location(Bucket=bucket)["LocationConstraint"]
        assert (location or S3_LEGACY_REGION) == region
        assert s3.get_bucket_versioning(Bucket=bucket)["Status"] == "Enabled"
        rule = s3.get_bucket_encryption(Bucket=bucket)["ServerSideEncryptionConfiguration"]
        default = rule["Rules"][0]["ApplyServerSideEncryptionByDefault"]
        assert default["SSEAlgorithm"] == "aws:kms"
        key = isolated_aws.client("kms", region).describe_key(KeyId=default["KMSMasterKeyID"])
        assert key["KeyMetadata"]["KeyState"] == "Enabled"
        block = s3.get_public_access_block(Bucket=bucket)["PublicAccessBlockConfiguration"]
        assert all(block.values()) and len(block) == 4
        lifecycle = s3.get_bucket_lifecycle_configuration(Bucket=bucket)["Rules"][0]
        noncurrent = lifecycle["NoncurrentVersionExpiration"]["NoncurrentDays"]
        assert noncurrent > policy.BACKUP_RETENTION_DAYS  # a safety net beyond retention (S6)
    manager = isolated_aws.client("secretsmanager", customer.region)
    stored = {name: manager.get_secret_value(SecretId=name)["SecretString"] for name in values}
    assert stored == values
    production = {w: stored[secret_name(customer, w)] for w in SECRET_FIELDS}
    test = {w: stored[secret_name(customer, w, Environment.TEST)] for w in SECRET_FIELDS}
    assert test["activation_key"] == production["activation_key"]  # the vendor's one key
    assert test["database_password"] != production["database_password"]  # its own
    created = {r["type"] for r in report.created}
    skipped = {r["type"]: r["reason"] for r in report.skipped}
    assert "aws:s3/bucket:Bucket" in created and "aws:ec2/instance:Instance" in skipped
    assert "systemd-nspawn" in skipped["aws:ec2/instance:Instance"]
    assert "TLS proxy" in skipped["aws:s3/bucketPolicy:BucketPolicy"]
    existing = len(referenced_secrets(customer))
    assert existing == (1 if customer_id == "northwind-trading" else 0)
    assert len(report.created) + len(report.skipped) == len(plan.resources) + existing

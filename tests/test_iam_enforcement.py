"""The plan's instance-role policies, enforced by the AWS stand-in (issue 13 item 5; S6, S9).

moto in server mode authorizes every request against the caller's IAM policies once
``/moto-api/reset-auth`` sets the number of unchecked calls (``INITIAL_NO_AUTH_ACTION_COUNT``)
to 0. Each instance role stands as an IAM user carrying the role policy document of the recorded
plan, byte for byte (moto authorizes a user's policies as AWS authorizes a role's). Set-up (the
buckets, versioning, the users) runs before enforcement starts, as the operators' stack would.

What the emulator does not enforce, and where it is checked instead:
- resource-based policies (the TLS-only bucket policy): ``tests/test_stacks.py``;
- multi-object deletes (``DeleteObjects``, which pgBackRest's expiry uses for whole paths): AWS
  authorizes each entry on the object's ARN (``s3:DeleteObject``, or ``s3:DeleteObjectVersion``
  for an entry naming a version); moto authorizes the batch on the *bucket's* ARN and so refuses
  every entry for a role scoped to ``bucket/*``. The deletes below are single-object ones, the
  same permission on the same ARN AWS checks per entry;
- Secrets Manager authorizes only on ``Resource: "*"`` in moto, so the secret ARNs are checked
  with moto's policy evaluator directly, on the ARNs the plan gives.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import boto3
import pytest
import requests
from botocore.exceptions import ClientError
from moto.iam.access_control import IAMPolicy, PermissionResult

from backups.recover import recover_bucket
from erpcloud.aws import bucket_location
from erpcloud.model import Customer
from localtarget.s3 import LocalAws
from stacks.plan import record_customer
from stacks.recording import Recording

pytestmark = pytest.mark.services

CUSTOMER_ID = "acme-retail"
#: Another sample customer: its buckets are out of acme-retail's reach.
NEIGHBOUR_ID = "northwind-trading"
#: The operations role, which alone may recover a repository (``backup recover-deleted``).
OPERATIONS_POLICY = json.dumps(
    {
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Action": ["s3:*"], "Resource": "*"}],
    }
)


def role_policy(recording: Recording, name: str) -> str:
    return str(recording.named(name).inputs["policy"])


@dataclass
class Enforced:
    """The emulator with enforcement on, and a client per identity and region."""

    aws: LocalAws
    keys: dict[str, tuple[str, str]]
    customer: Customer
    neighbour_bucket: str

    def s3(self, identity: str, region: str) -> Any:
        key_id, secret = self.keys[identity]
        return boto3.client(
            "s3",
            region_name=region,
            endpoint_url=self.aws.endpoint_url,
            aws_access_key_id=key_id,
            aws_secret_access_key=secret,
        )

    @property
    def buckets(self) -> list[tuple[str, str]]:
        """(bucket, region) of the customer's two repositories."""
        primary, copy = self.customer.backup_bucket_names
        return [(primary, self.customer.region), (copy, self.customer.backup_copy_region)]


@pytest.fixture(scope="module")
def recording(sample_fleet: dict[str, Customer]) -> Recording:
    return record_customer(sample_fleet[CUSTOMER_ID])


@pytest.fixture
def enforced(
    isolated_aws: LocalAws, recording: Recording, sample_fleet: dict[str, Customer]
) -> Iterator[Enforced]:
    customer = sample_fleet[CUSTOMER_ID]
    neighbour = sample_fleet[NEIGHBOUR_ID]
    admin = isolated_aws.client("s3", customer.region)
    regions = (customer.region, customer.backup_copy_region)
    buckets = [*zip(customer.backup_bucket_names, regions, strict=True)]
    neighbour_bucket = neighbour.backup_bucket_names[0]
    for bucket, region in [*buckets, (neighbour_bucket, neighbour.region)]:
        s3 = isolated_aws.client("s3", region)
        s3.create_bucket(Bucket=bucket, **bucket_location(region))
        s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    admin.put_object(Bucket=neighbour_bucket, Key="backup/backup.info", Body=b"neighbour")
    iam = isolated_aws.client("iam", customer.region)
    policies = {
        "production": role_policy(recording, f"{CUSTOMER_ID}-role-policy"),
        "test": role_policy(recording, f"{CUSTOMER_ID}-test-role-policy"),
        "operations": OPERATIONS_POLICY,
    }
    keys = {}
    for identity, document in policies.items():
        user = f"{CUSTOMER_ID}-{identity}"
        iam.create_user(UserName=user)
        iam.put_user_policy(UserName=user, PolicyName="role", PolicyDocument=document)
        key = iam.create_access_key(UserName=user)["AccessKey"]
        keys[identity] = (key["AccessKeyId"], key["SecretAccessKey"])
    set_unchecked_calls(isolated_aws, "0")
    try:
        yield Enforced(isolated_aws, keys, customer, neighbour_bucket)
    finally:
        set_unchecked_calls(isolated_aws, "inf")


def set_unchecked_calls(aws: LocalAws, count: str) -> None:
    answer = requests.post(f"{aws.endpoint_url}/moto-api/reset-auth", data=count, timeout=10)
    answer.raise_for_status()


def denied(call: Callable[..., Any], **kwargs: Any) -> str:
    """The error code of a call that must fail; fails the test if the call succeeds."""
    with pytest.raises(ClientError) as raised:
        call(**kwargs)
    return str(raised.value.response["Error"]["Code"])


def test_enforcement_is_on_an_unknown_key_is_refused(enforced: Enforced):
    """Not vacuous: the emulator's default key, which the set-up used, no longer works."""
    s3 = enforced.aws.client("s3", enforced.customer.region)
    bucket, _ = enforced.buckets[0]
    assert denied(s3.list_objects_v2, Bucket=bucket) == "InvalidAccessKeyId"


def test_production_role_does_what_pgbackrest_does_in_both_regions(enforced: Enforced):
    """S6/S7: list, read, write (multipart too) and expire, on each repository."""
    for bucket, region in enforced.buckets:
        s3 = enforced.s3("production", region)
        location = s3.get_bucket_location(Bucket=bucket)["LocationConstraint"]
        assert location == bucket_location(region).get("CreateBucketConfiguration", {}).get(
            "LocationConstraint"
        )
        s3.put_object(Bucket=bucket, Key="archive/demo/000001", Body=b"wal")
        upload = s3.create_multipart_upload(Bucket=bucket, Key="backup/demo/bundle/1")
        part = s3.upload_part(
            Bucket=bucket,
            Key="backup/demo/bundle/1",
            UploadId=upload["UploadId"],
            PartNumber=1,
            Body=b"bundle",
        )
        s3.complete_multipart_upload(
            Bucket=bucket,
            Key="backup/demo/bundle/1",
            UploadId=upload["UploadId"],
            MultipartUpload={"Parts": [{"ETag": part["ETag"], "PartNumber": 1}]},
        )
        listed = s3.list_objects_v2(Bucket=bucket, Prefix="archive/")
        assert [o["Key"] for o in listed["Contents"]] == ["archive/demo/000001"]
        assert s3.get_object(Bucket=bucket, Key="archive/demo/000001")["Body"].read() == b"wal"
        s3.head_object(Bucket=bucket, Key="backup/demo/bundle/1")
        for key in ("archive/demo/000001", "backup/demo/bundle/1"):  # pgBackRest's expiry
            s3.delete_object(Bucket=bucket, Key=key)
        assert "Contents" not in s3.list_objects_v2(Bucket=bucket)


def test_production_role_cannot_make_backups_unrecoverable(enforced: Enforced):
    """S6: no version deleted, no policy, lifecycle or versioning changed, no bucket deleted."""
    for bucket, region in enforced.buckets:
        s3 = enforced.s3("production", region)
        version = s3.put_object(Bucket=bucket, Key="backup/backup.info", Body=b"x")["VersionId"]
        attempts: list[tuple[Callable[..., Any], dict[str, Any]]] = [
            (s3.delete_object, {"Key": "backup/backup.info", "VersionId": version}),
            (s3.list_object_versions, {}),
            (s3.put_bucket_versioning, {"VersioningConfiguration": {"Status": "Suspended"}}),
            (s3.put_bucket_policy, {"Policy": OPERATIONS_POLICY}),
            (s3.delete_bucket_policy, {}),
            (
                s3.put_bucket_lifecycle_configuration,
                {
                    "LifecycleConfiguration": {
                        "Rules": [
                            {
                                "ID": "wipe",
                                "Status": "Enabled",
                                "Filter": {"Prefix": ""},
                                "Expiration": {"Days": 1},
                                "NoncurrentVersionExpiration": {"NoncurrentDays": 1},
                            }
                        ]
                    }
                },
            ),
            (s3.delete_bucket_lifecycle, {}),
            (s3.delete_bucket, {}),
        ]
        for call, kwargs in attempts:
            assert denied(call, Bucket=bucket, **kwargs) == "AccessDenied", call.__name__
    operations = enforced.s3("operations", enforced.customer.region)
    primary, _ = enforced.buckets[0]
    status = operations.get_bucket_versioning(Bucket=primary)["Status"]
    assert status == "Enabled"


def test_no_role_reaches_another_environment_or_customer(enforced: Enforced):
    """S9: the test environment reads no backup; production no other customer's (S1)."""
    test = enforced.s3("test", enforced.customer.region)
    for bucket, _ in enforced.buckets:
        assert denied(test.list_objects_v2, Bucket=bucket) == "AccessDenied"
        assert denied(test.get_object, Bucket=bucket, Key="backup/backup.info") == "AccessDenied"
        assert denied(test.put_object, Bucket=bucket, Key="x", Body=b"x") == "AccessDenied"
    production = enforced.s3("production", enforced.customer.region)
    other = enforced.neighbour_bucket
    assert denied(production.list_objects_v2, Bucket=other) == "AccessDenied"
    assert denied(production.get_object, Bucket=other, Key="backup/backup.info") == "AccessDenied"
    assert denied(production.delete_object, Bucket=other, Key="backup/backup.info") == (
        "AccessDenied"
    )


def test_a_mass_delete_by_the_instance_is_undone_by_the_operations_role(enforced: Enforced):
    """S6: what a compromised instance can do (delete markers) the recovery undoes."""
    stored = {f"archive/demo/{n:06d}": f"segment {n}".encode() for n in range(5)}
    bucket, region = enforced.buckets[1]
    production = enforced.s3("production", region)
    for key, content in stored.items():
        production.put_object(Bucket=bucket, Key=key, Body=content)
    since = datetime.now(UTC)
    for key in stored:
        production.delete_object(Bucket=bucket, Key=key)
    assert "Contents" not in production.list_objects_v2(Bucket=bucket)
    assert denied(recover_bucket, s3=production, bucket=bucket, region=region, since=since) == (
        "AccessDenied"
    )

    recovery = recover_bucket(enforced.s3("operations", region), bucket, region, since)
    assert recovery.restored == sorted(stored) and recovery.ran
    for key, content in stored.items():
        assert production.get_object(Bucket=bucket, Key=key)["Body"].read() == content


@pytest.mark.parametrize("environment", ["production", "test"])
def test_each_role_reads_its_own_secrets_only(recording: Recording, environment: str):
    """S1/S9 with moto's policy evaluator, on the secret ARNs of the plan (module docstring)."""
    infix = "" if environment == "production" else "test-"
    name = f"{CUSTOMER_ID}-{infix}role-policy"
    evaluator = IAMPolicy(role_policy(recording, name))
    secrets = {
        r.outputs["arn"]: r.inputs["name"]
        for r in recording.of_type("aws:secretsmanager/secret:Secret")
    }
    own = {arn for arn, name in secrets.items() if ("/test/" in name) == (environment == "test")}
    assert own and own != set(secrets)
    for arn in secrets:
        verdict = evaluator.is_action_permitted("secretsmanager:GetSecretValue", arn)
        expected = PermissionResult.PERMITTED if arn in own else PermissionResult.NEUTRAL
        assert verdict == expected, (arn, verdict)

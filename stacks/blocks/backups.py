"""S6/S7: the backup buckets pgBackRest writes to: repo1 in the primary region, repo2 in the
copy region (explicit provider, S10). SSE-KMS with the customer's key of that region,
versioning, public access blocked, TLS-only policy, and a lifecycle that only acts beyond the
retention pgBackRest enforces (expired files kept a while longer; stale uploads removed).
"""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_aws as aws

from erpcloud import policy
from stacks.blocks import child
from stacks.blocks.buckets import private_bucket
from stacks.blocks.iam import as_json, tls_only_bucket_policy
from stacks.spec import EnvironmentSpec


@dataclass(frozen=True)
class BackupBucket:
    name: str
    region: str
    bucket: aws.s3.Bucket

    @property
    def arn(self) -> pulumi.Output[str]:
        return self.bucket.arn


def backup_bucket(
    owner: pulumi.Resource,
    name: str,
    spec: EnvironmentSpec,
    provider: aws.Provider,
    *,
    role: str,
    bucket_name: str,
    region: str,
    key_arn: pulumi.Input[str],
) -> BackupBucket:
    if not spec.environment.has_backups:
        raise ValueError(f"{spec.environment.value} has no backups (S9)")
    prefix = f"{name}-{role}"
    opts = child(owner, provider)
    bucket, public_access = private_bucket(
        owner, prefix, spec, provider, bucket_name=bucket_name, promise="S6"
    )
    aws.s3.BucketVersioning(
        f"{prefix}-versioning",
        bucket=bucket.id,
        versioning_configuration={"status": "Enabled"},
        opts=opts,
    )
    aws.s3.BucketServerSideEncryptionConfiguration(
        f"{prefix}-encryption",
        bucket=bucket.id,
        rules=[
            {
                "apply_server_side_encryption_by_default": {
                    "sse_algorithm": "aws:kms",
                    "kms_master_key_id": key_arn,
                },
                "bucket_key_enabled": True,
            }
        ],
        opts=opts,
    )
    aws.s3.BucketPolicy(
        f"{prefix}-tls-only",
        bucket=bucket.id,
        policy=as_json(tls_only_bucket_policy, bucket_arn=bucket.arn),
        opts=child(owner, provider, depends_on=[public_access]),
    )
    aws.s3.BucketLifecycleConfiguration(
        f"{prefix}-lifecycle",
        bucket=bucket.id,
        rules=[
            {
                "id": "safety-net-beyond-retention",
                "status": "Enabled",
                "filter": {"prefix": ""},
                "noncurrent_version_expiration": {
                    "noncurrent_days": policy.BACKUP_NONCURRENT_VERSION_DAYS
                },
                "abort_incomplete_multipart_upload": {
                    "days_after_initiation": policy.BACKUP_INCOMPLETE_UPLOAD_DAYS
                },
                "expiration": {"expired_object_delete_marker": True},
            }
        ],
        opts=opts,
    )
    return BackupBucket(name=bucket_name, region=region, bucket=bucket)

"""What every bucket of a customer's stack starts as: protected (only `erpcloud customer purge`
removes it, S18), tagged with the promise it serves, public access blocked. Its encryption,
policy and lifecycle are the caller's (backups: S6; access logs: S5)."""

from __future__ import annotations

import pulumi
import pulumi_aws as aws

from stacks.blocks import child
from stacks.spec import EnvironmentSpec


def private_bucket(
    owner: pulumi.Resource,
    prefix: str,
    spec: EnvironmentSpec,
    provider: aws.Provider,
    *,
    bucket_name: str,
    promise: str,
) -> tuple[aws.s3.Bucket, aws.s3.BucketPublicAccessBlock]:
    """The bucket ``prefix`` and its public access block ``{prefix}-public-access`` (a bucket
    policy must wait for the block: depend on it)."""
    bucket = aws.s3.Bucket(
        prefix,
        bucket=bucket_name,
        force_destroy=False,
        tags=spec.tags(promise, Name=bucket_name),
        opts=child(owner, provider, protect=True),
    )
    public_access = aws.s3.BucketPublicAccessBlock(
        f"{prefix}-public-access",
        bucket=bucket.id,
        block_public_acls=True,
        block_public_policy=True,
        ignore_public_acls=True,
        restrict_public_buckets=True,
        opts=child(owner, provider),
    )
    return bucket, public_access

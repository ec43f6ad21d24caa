"""S5: the load balancers' access logs, one bucket per customer in the primary region.

Both environments' load balancers write there, each under its own prefix. Elastic Load
Balancing writes access logs only to a bucket encrypted with S3-managed keys (SSE-S3; it cannot
use a KMS key), in the load balancer's region, whose policy lets the region's Elastic Load
Balancing account put objects under ``<prefix>/AWSLogs/<account>/``. Otherwise the bucket is
kept like the backup buckets: public access blocked, TLS only, and a lifecycle that removes
logs after :data:`erpcloud.policy.ACCESS_LOG_RETENTION_DAYS`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

import pulumi
import pulumi_aws as aws

from erpcloud import policy
from stacks.blocks import child, lookup
from stacks.blocks.buckets import private_bucket
from stacks.blocks.iam import Document, as_json, statement, tls_only_bucket_policy
from stacks.spec import EnvironmentSpec

#: The only server-side encryption access-log delivery accepts.
ACCESS_LOG_ENCRYPTION: Final = "AES256"  # aws-fact: ELB access logs need SSE-S3


@dataclass(frozen=True)
class AccessLogs:
    bucket_name: str
    #: Ready once the delivery policy is in place: a load balancer that logs depends on it.
    policy: aws.s3.BucketPolicy

    def settings(self, environment_prefix: str) -> aws.lb.LoadBalancerAccessLogsArgs:
        """A load balancer's ``access_logs`` argument, under the environment's own prefix."""
        return aws.lb.LoadBalancerAccessLogsArgs(
            bucket=self.bucket_name, prefix=environment_prefix, enabled=True
        )


def delivery_policy(
    *, bucket_arn: str, elb_account_arn: str, account_id: str, prefixes: Sequence[str]
) -> Document:
    """TLS only for everyone; Elastic Load Balancing may add log files under each prefix."""
    delivery = {
        **statement(
            "LoadBalancerLogDelivery",
            ["s3:PutObject"],
            [f"{bucket_arn}/{prefix}/AWSLogs/{account_id}/*" for prefix in prefixes],
        ),
        "Principal": {"AWS": elb_account_arn},
    }
    tls_only = tls_only_bucket_policy(bucket_arn=bucket_arn)
    return {**tls_only, "Statement": [*tls_only["Statement"], delivery]}


def access_log_bucket(
    owner: pulumi.Resource,
    name: str,
    spec: EnvironmentSpec,
    provider: aws.Provider,
    *,
    account_id: pulumi.Input[str],
    prefixes: Sequence[str],
) -> AccessLogs:
    prefix = f"{name}-access-logs"
    opts = child(owner, provider)
    bucket_name = spec.customer.access_log_bucket_name
    bucket, public_access = private_bucket(
        owner, prefix, spec, provider, bucket_name=bucket_name, promise="S5"
    )
    aws.s3.BucketServerSideEncryptionConfiguration(
        f"{prefix}-encryption",
        bucket=bucket.id,
        rules=[
            {"apply_server_side_encryption_by_default": {"sse_algorithm": ACCESS_LOG_ENCRYPTION}}
        ],
        opts=opts,
    )
    aws.s3.BucketOwnershipControls(
        f"{prefix}-ownership",
        bucket=bucket.id,
        rule={"object_ownership": "BucketOwnerEnforced"},
        opts=opts,
    )
    elb_account = aws.elb.get_service_account_output(opts=lookup(owner, provider))
    bucket_policy = aws.s3.BucketPolicy(
        f"{prefix}-policy",
        bucket=bucket.id,
        policy=as_json(
            lambda **arns: delivery_policy(**arns, prefixes=prefixes),
            bucket_arn=bucket.arn,
            elb_account_arn=elb_account.arn,
            account_id=account_id,
        ),
        opts=child(owner, provider, depends_on=[public_access]),
    )
    aws.s3.BucketLifecycleConfiguration(
        f"{prefix}-lifecycle",
        bucket=bucket.id,
        rules=[
            {
                "id": "access-log-retention",
                "status": "Enabled",
                "filter": {"prefix": ""},
                "expiration": {"days": policy.ACCESS_LOG_RETENTION_DAYS},
            }
        ],
        opts=opts,
    )
    return AccessLogs(bucket_name=bucket_name, policy=bucket_policy)

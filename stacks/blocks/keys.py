"""S1: the customer's own KMS key per region, rotation on (volumes, secrets, backups, logs and
alarm topics), with an explicit key policy (issue 13): the account administers it through IAM,
CloudWatch Logs may use it for the customer's log group only, CloudWatch alarms may publish to
the customer's encrypted topics; nothing else."""

from __future__ import annotations

import json
from typing import Any

import pulumi
import pulumi_aws as aws

from erpcloud import policy
from stacks.blocks import child
from stacks.spec import EnvironmentSpec


def key_policy(account_id: str, region: str, customer_id: str) -> dict[str, Any]:
    """The key policy: IAM decides for the account's principals (the instance roles' own
    policies name the key); two AWS services get exactly what they need, scoped."""
    root = f"arn:aws:iam::{account_id}:root"
    log_group = f"arn:aws:logs:{region}:{account_id}:log-group:/erpcloud/{customer_id}"
    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "AccountAdministersThroughIam",
                "Effect": "Allow",
                "Principal": {"AWS": root},
                "Action": "kms:*",
                "Resource": "*",
            },
            {
                "Sid": "CloudWatchLogsForTheCustomersLogGroup",
                "Effect": "Allow",
                "Principal": {"Service": f"logs.{region}.amazonaws.com"},
                "Action": [
                    "kms:Encrypt*",
                    "kms:Decrypt*",
                    "kms:ReEncrypt*",
                    "kms:GenerateDataKey*",
                    "kms:Describe*",
                ],
                "Resource": "*",
                "Condition": {"ArnEquals": {"kms:EncryptionContext:aws:logs:arn": log_group}},
            },
            {
                "Sid": "CloudWatchAlarmsPublishToEncryptedTopics",
                "Effect": "Allow",
                "Principal": {"Service": "cloudwatch.amazonaws.com"},
                "Action": ["kms:Decrypt", "kms:GenerateDataKey*"],
                "Resource": "*",
                "Condition": {"StringEquals": {"aws:SourceAccount": account_id}},
            },
        ],
    }


def customer_key(
    owner: pulumi.Resource,
    name: str,
    spec: EnvironmentSpec,
    provider: aws.Provider,
    *,
    region: str,
    account_id: pulumi.Input[str],
    role: str = "key",
) -> aws.kms.Key:
    """A symmetric key with yearly rotation; production's is protected from ``pulumi destroy``."""
    customer_id = spec.customer.id
    key = aws.kms.Key(
        f"{name}-{role}",
        description=f"erpcloud {customer_id} in {region}: volumes, secrets, backups (S1, S6)",
        policy=pulumi.Output.from_input(account_id).apply(
            lambda account: json.dumps(key_policy(account, region, customer_id))
        ),
        enable_key_rotation=True,
        deletion_window_in_days=policy.KMS_DELETION_WINDOW_DAYS,
        tags=spec.tags("S1"),
        opts=child(owner, provider, protect=spec.is_production),
    )
    aws.kms.Alias(
        f"{name}-{role}-alias",
        name=f"alias/erpcloud/{spec.customer.id}",
        target_key_id=key.key_id,
        opts=child(owner, provider),
    )
    return key

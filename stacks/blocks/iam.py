"""IAM policy documents as plain data (least privilege, S1, S2, S5, S6).

Builders take ARNs as strings and return dicts; :func:`as_json` turns one into an
``Output[str]`` once the ARNs are known. No ``s3:*`` and no ``"Resource": "*"`` except for the
few AWS actions that have no resource-level permissions (:data:`RESOURCELESS_ACTIONS`), and
those only with a condition or read-only.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Any, Final

import pulumi

Document = dict[str, Any]
Statement = dict[str, Any]

#: Actions AWS authorizes only on ``"Resource": "*"``; nothing else may use ``*``.
RESOURCELESS_ACTIONS: Final[frozenset[str]] = frozenset(
    {"cloudwatch:PutMetricData", "ec2:DescribeVolumes", "ec2:DescribeVolumesModifications"}
)
#: What pgBackRest does on its repositories: list, read, write, expire (S6, S7).
BACKUP_BUCKET_ACTIONS: Final = ("s3:ListBucket", "s3:GetBucketLocation")
BACKUP_OBJECT_ACTIONS: Final = ("s3:GetObject", "s3:PutObject", "s3:DeleteObject")


def statement(
    sid: str,
    actions: Sequence[str],
    resources: Sequence[str],
    condition: dict[str, Any] | None = None,
    effect: str = "Allow",
) -> Statement:
    entry: Statement = {
        "Sid": sid,
        "Effect": effect,
        "Action": sorted(actions),
        "Resource": sorted(resources) if len(resources) != 1 else resources[0],
    }
    if condition:
        entry["Condition"] = condition
    return entry


def document(*statements: Statement) -> Document:
    return {"Version": "2012-10-17", "Statement": list(statements)}


def assume_role_policy(service: str) -> str:
    """Who may assume a role: one AWS service."""
    return json.dumps(
        document(
            {
                "Sid": "AssumedBy" + service.split(".")[0].capitalize(),
                "Effect": "Allow",
                "Principal": {"Service": service},
                "Action": "sts:AssumeRole",
            }
        )
    )


def instance_policy(
    *,
    secret_arns: Sequence[str],
    key_arns: Sequence[str],
    bucket_arns: Sequence[str] = (),
    log_group_arn: str | None = None,
    metrics_namespace: str | None = None,
) -> Document:
    """The instance role: its own secrets (S1), its own buckets (S6/S7), its metrics and logs (S5).

    The test environment passes no buckets, logs or metrics (S9).
    """
    statements = [
        statement(
            "ReadOwnSecrets",
            ["secretsmanager:GetSecretValue", "secretsmanager:DescribeSecret"],
            secret_arns,
        ),
        # Decrypt reads secrets and backups; only a writer of backups generates data keys.
        statement(
            "UseCustomerKeys",
            ["kms:Decrypt", "kms:GenerateDataKey"] if bucket_arns else ["kms:Decrypt"],
            key_arns,
        ),
    ]
    if bucket_arns:
        statements.append(statement("ListOwnBackupBuckets", BACKUP_BUCKET_ACTIONS, bucket_arns))
        statements.append(
            statement(
                "ReadWriteOwnBackups",
                BACKUP_OBJECT_ACTIONS,
                [f"{arn}/*" for arn in bucket_arns],
            )
        )
    if log_group_arn is not None:
        statements.append(
            statement(
                "ShipOwnLogs",
                ["logs:CreateLogStream", "logs:PutLogEvents", "logs:DescribeLogStreams"],
                [log_group_arn, f"{log_group_arn}:*"],
            )
        )
    if metrics_namespace is not None:
        statements.append(
            statement(
                "PublishOwnMetrics",
                ["cloudwatch:PutMetricData"],
                ["*"],
                {"StringEquals": {"cloudwatch:namespace": metrics_namespace}},
            )
        )
    return document(*statements)


def grow_volume_policy(*, volume_arn: str) -> Document:
    """S2: the automation may grow this one volume, and watch the change."""
    return document(
        statement("GrowOwnDataVolume", ["ec2:ModifyVolume"], [volume_arn]),
        statement(
            "WatchVolumeChanges",
            ["ec2:DescribeVolumes", "ec2:DescribeVolumesModifications"],
            ["*"],
        ),
    )


def start_automation_policy(
    *, automation_definition_arn: str, automation_role_arn: str
) -> Document:
    """S2: EventBridge may start this one automation, passing only its role to SSM."""
    return document(
        statement(
            "StartOwnAutomation",
            ["ssm:StartAutomationExecution"],
            [automation_definition_arn.removesuffix(":$DEFAULT") + ":*"],
        ),
        statement(
            "PassAutomationRole",
            ["iam:PassRole"],
            [automation_role_arn],
            {"StringEquals": {"iam:PassedToService": "ssm.amazonaws.com"}},
        ),
    )


def tls_only_bucket_policy(*, bucket_arn: str) -> Document:
    """S6: the backup bucket refuses any request not over TLS 1.2 or newer."""
    resources = [bucket_arn, f"{bucket_arn}/*"]
    deny_all = {"AWS": "*"}
    return document(
        {
            **statement(
                "DenyInsecureTransport",
                ["s3:*"],
                resources,
                {"Bool": {"aws:SecureTransport": "false"}},
                effect="Deny",
            ),
            "Principal": deny_all,
        },
        {
            **statement(
                "DenyOldTls",
                ["s3:*"],
                resources,
                {"NumericLessThan": {"s3:TlsVersion": "1.2"}},
                effect="Deny",
            ),
            "Principal": deny_all,
        },
    )


def as_json(builder: Callable[..., Document], **arns: pulumi.Input[Any]) -> pulumi.Output[str]:
    """``builder(**arns)`` as a JSON string, once every ARN is known."""
    return pulumi.Output.all(**arns).apply(lambda values: json.dumps(builder(**values)))

"""S1: the customer's own KMS key per region, rotation on (volumes, secrets, backups)."""

from __future__ import annotations

import pulumi
import pulumi_aws as aws

from erpcloud import policy
from stacks.blocks import child
from stacks.spec import EnvironmentSpec


def customer_key(
    owner: pulumi.Resource,
    name: str,
    spec: EnvironmentSpec,
    provider: aws.Provider,
    *,
    region: str,
    role: str = "key",
) -> aws.kms.Key:
    """A symmetric key with yearly rotation; production's is protected from ``pulumi destroy``."""
    key = aws.kms.Key(
        f"{name}-{role}",
        description=f"erpcloud {spec.customer.id} in {region}: volumes, secrets, backups (S1, S6)",
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

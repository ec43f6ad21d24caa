"""S1: the instance. Product image, IMDSv2 only, encrypted root and data volumes with the
customer's key, the rendered cloud-init as user data, a role that reads only its own secrets
(and, in production, writes only its own backups, metrics and logs). S4: an Elastic IP for SSH.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import pulumi
import pulumi_aws as aws

from erpcloud import policy
from stacks.blocks import child
from stacks.blocks.firewall import Firewall
from stacks.blocks.iam import assume_role_policy
from stacks.blocks.network import Network
from stacks.spec import DATA_DEVICE, EnvironmentSpec

VOLUME_TYPE = "gp3"


@dataclass(frozen=True)
class Server:
    instance: aws.ec2.Instance
    data_volume: aws.ebs.Volume
    address: aws.ec2.Eip
    role: aws.iam.Role


def server(
    owner: pulumi.Resource,
    name: str,
    spec: EnvironmentSpec,
    provider: aws.Provider,
    *,
    network: Network,
    firewall: Firewall,
    image_id: pulumi.Input[str],
    key_arn: pulumi.Input[str],
    role_policy: pulumi.Input[str],
    boot_after: Sequence[pulumi.Resource] = (),
) -> Server:
    production = spec.is_production
    role = aws.iam.Role(
        f"{name}-role",
        description=f"{spec.host}: the instance's own secrets, backups, metrics (S1, S5, S6)",
        assume_role_policy=assume_role_policy("ec2.amazonaws.com"),
        tags=spec.tags("S1"),
        opts=child(owner, provider),
    )
    policy_attachment = aws.iam.RolePolicy(
        f"{name}-role-policy",
        role=role.id,
        policy=role_policy,
        opts=child(owner, provider),
    )
    profile = aws.iam.InstanceProfile(
        f"{name}-profile", role=role.name, tags=spec.tags("S1"), opts=child(owner, provider)
    )
    # Production keeps its instance when a new image or user data appears: cloud-init runs at
    # first boot only, and a replacement belongs in a maintenance window (S11), done on purpose
    # with `pulumi up --replace`. The test environment follows every change (S9).
    instance = aws.ec2.Instance(
        f"{name}-instance",
        ami=image_id,
        instance_type=spec.sizing.instance_type,
        subnet_id=network.subnet_ids[0],
        vpc_security_group_ids=[firewall.instance_group.id],
        iam_instance_profile=profile.name,
        associate_public_ip_address=True,
        user_data_base64=spec.user_data_base64(),
        user_data_replace_on_change=not production,
        metadata_options={
            "http_endpoint": "enabled",
            "http_tokens": "required",
            "http_put_response_hop_limit": 1,
            "instance_metadata_tags": "disabled",
        },
        root_block_device={
            "volume_size": policy.ROOT_VOLUME_GIB,
            "volume_type": VOLUME_TYPE,
            "encrypted": True,
            "kms_key_id": key_arn,
            "delete_on_termination": True,
            "tags": spec.tags("S1", Name=f"{spec.customer.id}-{spec.environment.value}-root"),
        },
        monitoring=spec.environment.has_monitoring,
        disable_api_termination=production,
        tags=spec.tags("S1", Name=f"{spec.customer.id}-{spec.environment.value}"),
        opts=child(
            owner,
            provider,
            ignore_changes=["ami", "userDataBase64"] if production else (),
            depends_on=[policy_attachment, *boot_after],
        ),
    )
    # S2: production's volume grows online outside Pulumi (EBS cannot shrink), so its size is
    # the automation's from then on.
    data_volume = aws.ebs.Volume(
        f"{name}-data",
        availability_zone=network.availability_zones[0],
        size=spec.sizing.data_volume_gib,
        type=VOLUME_TYPE,
        encrypted=True,
        kms_key_id=key_arn,
        final_snapshot=production,
        tags=spec.tags("S1", Name=f"{spec.customer.id}-{spec.environment.value}-data"),
        opts=child(
            owner,
            provider,
            protect=production,
            ignore_changes=["size"] if production else (),
        ),
    )
    attachment = aws.ec2.VolumeAttachment(
        f"{name}-data-attachment",
        device_name=DATA_DEVICE,
        volume_id=data_volume.id,
        instance_id=instance.id,
        stop_instance_before_detaching=True,
        opts=child(owner, provider),
    )
    address = aws.ec2.Eip(
        f"{name}-address",
        domain="vpc",
        instance=instance.id,
        tags=spec.tags("S4", Name=f"{spec.customer.id}-{spec.environment.value}-ssh"),
        opts=child(owner, provider),
    )
    # P3/S18: a suspended customer's instances are stopped; volumes and backups stay.
    aws.ec2transitgateway.InstanceState(
        f"{name}-power",
        instance_id=instance.id,
        state=spec.instance_state,
        opts=child(owner, provider, depends_on=[attachment, address]),
    )
    return Server(instance=instance, data_volume=data_volume, address=address, role=role)

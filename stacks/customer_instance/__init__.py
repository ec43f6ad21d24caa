"""``CustomerInstance``: one customer's production environment (S1-S8, S10).

Made of the shared building blocks (:mod:`stacks.blocks`) plus the production-only ones:
monitoring (S5), backups in two regions (S6/S7) and elasticity (S2). It also owns what both
environments share: the VPC, the customer's KMS keys and its secrets.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date
from typing import Final

import pulumi
import pulumi_aws as aws

from erpcloud import policy
from erpcloud.model import Customer, Environment
from erpcloud.render import METRICS_NAMESPACE
from stacks.blocks import child
from stacks.blocks.access_logs import AccessLogs, access_log_bucket
from stacks.blocks.backups import BackupBucket, backup_bucket
from stacks.blocks.elasticity import elasticity
from stacks.blocks.endpoint import endpoint
from stacks.blocks.firewall import firewall
from stacks.blocks.iam import as_json, instance_policy
from stacks.blocks.keys import customer_key
from stacks.blocks.monitoring import monitoring
from stacks.blocks.network import Network, network
from stacks.blocks.providers import RegionProviders
from stacks.blocks.secrets import CustomerSecrets, SecretValues, customer_secrets
from stacks.blocks.server import server
from stacks.spec import EnvironmentSpec

COMPONENT_TYPE: Final = "erpcloud:index:CustomerInstance"


@dataclass(frozen=True)
class CustomerInstanceArgs:
    """Everything production is made from: the validated customer and the stack's lookups."""

    customer: Customer
    providers: RegionProviders
    image_id: pulumi.Input[str]
    zone_id: pulumi.Input[str]
    account_id: pulumi.Input[str]
    secret_values: SecretValues
    #: The day the program runs (S18: a cancelled customer's service stops at termination).
    today: date = field(default_factory=date.today)

    @property
    def spec(self) -> EnvironmentSpec:
        return EnvironmentSpec.production(self.customer, self.today)


class CustomerInstance(pulumi.ComponentResource):
    """Production: instance, endpoint, monitoring, backups, elasticity (children ``{name}-*``)."""

    url: pulumi.Output[str]
    ssh_host: pulumi.Output[str]
    instance_id: pulumi.Output[str]
    ops_topic_arn: pulumi.Output[str]
    backup_buckets: tuple[BackupBucket, BackupBucket]
    access_logs: AccessLogs
    network: Network
    key_arn: pulumi.Output[str]
    secrets: CustomerSecrets

    def __init__(
        self, name: str, args: CustomerInstanceArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__(COMPONENT_TYPE, name, None, opts)
        spec = args.spec
        customer = args.customer
        providers = args.providers
        primary = providers.primary

        self.network = network(self, name, spec, primary)
        key = customer_key(
            self, name, spec, primary, region=providers.primary_region, account_id=args.account_id
        )
        copy_key = customer_key(
            self,
            name,
            spec,
            providers.copy,
            region=providers.copy_region,
            account_id=args.account_id,
            role="copy-key",
        )
        self.key_arn = key.arn
        self.secrets = customer_secrets(
            self, name, spec, primary, key_arn=key.arn, values=args.secret_values
        )

        primary_bucket, copy_bucket = customer.backup_bucket_names
        self.backup_buckets = (
            backup_bucket(
                self,
                name,
                spec,
                primary,
                role="backup-primary",
                bucket_name=primary_bucket,
                region=providers.primary_region,
                key_arn=key.arn,
            ),
            backup_bucket(
                self,
                name,
                spec,
                providers.copy,
                role="backup-copy",
                bucket_name=copy_bucket,
                region=providers.copy_region,
                key_arn=copy_key.arn,
            ),
        )
        logs = aws.cloudwatch.LogGroup(
            f"{name}-logs",
            name=f"/erpcloud/{customer.id}",
            retention_in_days=policy.LOG_RETENTION_DAYS,
            kms_key_id=key.arn,
            tags=spec.tags("S5"),
            opts=child(self, primary),
        )
        role_policy = as_json(
            lambda secrets, keys, buckets, log_group: instance_policy(
                secret_arns=secrets,
                key_arns=keys,
                bucket_arns=buckets,
                log_group_arn=log_group,
                metrics_namespace=METRICS_NAMESPACE,
            ),
            secrets=self.secrets.arn_list,
            keys=[key.arn, copy_key.arn],
            buckets=[b.arn for b in self.backup_buckets],
            log_group=logs.arn,
        )
        walls = firewall(self, name, spec, primary, self.network.vpc_id)
        machine = server(
            self,
            name,
            spec,
            primary,
            network=self.network,
            firewall=walls,
            image_id=args.image_id,
            key_arn=key.arn,
            role_policy=role_policy,
            boot_after=self.secrets.versions,
        )
        self.access_logs = access_log_bucket(
            self,
            name,
            spec,
            primary,
            account_id=args.account_id,
            prefixes=[environment.value for environment in Environment],
        )
        front = endpoint(
            self,
            name,
            spec,
            primary,
            network=self.network,
            firewall=walls,
            zone_id=args.zone_id,
            instance_id=machine.instance.id,
            access_logs=self.access_logs,
        )
        topic = monitoring(
            self, name, spec, primary, server=machine, endpoint=front, key_arn=key.arn
        )
        elastic = elasticity(
            self,
            name,
            spec,
            primary,
            server=machine,
            region=providers.primary_region,
            account_id=args.account_id,
            key_arn=key.arn,
        )

        self.url = pulumi.Output.from_input(spec.url)
        self.ssh_host = machine.address.public_ip
        self.instance_id = machine.instance.id
        self.ops_topic_arn = topic.arn
        self.register_outputs(
            {
                "url": self.url,
                "sshHost": self.ssh_host,
                "instanceId": self.instance_id,
                "opsTopicArn": self.ops_topic_arn,
                "resizeTopicArn": elastic.resize_topic.arn,
                "backupBuckets": [b.name for b in self.backup_buckets],
            }
        )

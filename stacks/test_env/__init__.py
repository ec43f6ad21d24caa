"""``TestEnvironment``: the customer's test environment, derived from production (S9).

The same building blocks as production (firewall, server, endpoint), sized by the model's
``customer.test_sizing`` (at most 50 % of production), in production's VPC with its own
security groups, with secrets of its own (its role reads nothing of production's, issue 13).
No monitoring, no backups, no alarms, no elasticity.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date
from typing import Final

import pulumi
import pulumi_aws as aws

from erpcloud.model import Customer
from stacks.blocks.access_logs import AccessLogs
from stacks.blocks.endpoint import endpoint
from stacks.blocks.firewall import firewall
from stacks.blocks.iam import as_json, instance_policy
from stacks.blocks.network import Network
from stacks.blocks.secrets import SecretValues, customer_secrets
from stacks.blocks.server import server
from stacks.customer_instance import CustomerInstance, CustomerInstanceArgs
from stacks.spec import EnvironmentSpec

COMPONENT_TYPE: Final = "erpcloud:index:TestEnvironment"


@dataclass(frozen=True)
class TestEnvironmentArgs:
    """What the test environment takes from production; its sizing comes from the model."""

    __test__ = False  # not a pytest class

    customer: Customer
    provider: aws.Provider
    image_id: pulumi.Input[str]
    zone_id: pulumi.Input[str]
    network: Network
    key_arn: pulumi.Input[str]
    #: What production's secrets are made from: the test environment's copy of the activation
    #: key comes from the same source; its database password is its own.
    secret_values: SecretValues
    #: Production's access-log bucket: the test endpoint logs there under its own prefix.
    access_logs: AccessLogs
    today: date = field(default_factory=date.today)

    @classmethod
    def derived_from(
        cls, production: CustomerInstance, args: CustomerInstanceArgs
    ) -> TestEnvironmentArgs:
        return cls(
            customer=args.customer,
            provider=args.providers.primary,
            image_id=args.image_id,
            zone_id=args.zone_id,
            network=production.network,
            key_arn=production.key_arn,
            secret_values=args.secret_values,
            access_logs=production.access_logs,
            today=args.today,
        )

    @property
    def spec(self) -> EnvironmentSpec:
        return EnvironmentSpec.test(self.customer, self.today)


class TestEnvironment(pulumi.ComponentResource):
    """The test instance and its endpoint (children ``{name}-*``), S9."""

    __test__ = False  # not a pytest class

    url: pulumi.Output[str]
    ssh_host: pulumi.Output[str]
    instance_id: pulumi.Output[str]

    def __init__(
        self, name: str, args: TestEnvironmentArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__(COMPONENT_TYPE, name, None, opts)
        spec = args.spec
        provider = args.provider
        walls = firewall(self, name, spec, provider, args.network.vpc_id)
        secrets = customer_secrets(
            self, name, spec, provider, key_arn=args.key_arn, values=args.secret_values
        )
        role_policy = as_json(
            lambda arns, keys: instance_policy(secret_arns=arns, key_arns=keys),
            arns=secrets.arn_list,
            keys=[args.key_arn],
        )
        machine = server(
            self,
            name,
            spec,
            provider,
            network=args.network,
            firewall=walls,
            image_id=args.image_id,
            key_arn=args.key_arn,
            role_policy=role_policy,
            boot_after=secrets.versions,
        )
        endpoint(
            self,
            name,
            spec,
            provider,
            network=args.network,
            firewall=walls,
            zone_id=args.zone_id,
            instance_id=machine.instance.id,
            access_logs=args.access_logs,
        )
        self.url = pulumi.Output.from_input(spec.url)
        self.ssh_host = machine.address.public_ip
        self.instance_id = machine.instance.id
        self.register_outputs(
            {"url": self.url, "sshHost": self.ssh_host, "instanceId": self.instance_id}
        )

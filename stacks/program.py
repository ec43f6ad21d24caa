"""The Pulumi program: one stack per customer, production plus its derived test environment.

``pulumi up`` runs :func:`main` (through ``stacks/__main__.py``): it reads the stack's config,
loads and validates ``customers/<id>.yaml`` with the rest of the fleet, and calls
:func:`deploy`. The offline plan (:mod:`stacks.plan`) calls :func:`deploy` with the same
customer object under the recording engine. Nothing is created at import time.

Stack config (``Pulumi.<stack>.yaml``):

* ``erpcloud:customer``: the customer id (defaults to the stack name);
* ``erpcloud:customersDir``: where the customer files are (default: ``customers/`` at the root);
* ``erpcloud:activationKey`` (secret): the activation key, when the customer file says
  ``pulumi-config:activationKey`` (S1);
* ``erpcloud:imageOwner``: the account owning the product images (default: this account);
* ``aws:*``: passed to both explicit providers (endpoints of a local emulator, S10).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any, Final

import pulumi
import pulumi_aws as aws

from erpcloud import policy
from erpcloud.fleet import load_one
from erpcloud.model import Customer, SecretRef, SecretSource
from erpcloud.render import HostLayout, secret_name
from images.lookup import latest_product_image
from stacks.blocks.providers import ProviderSettings, region_providers
from stacks.blocks.secrets import SECRET_FIELDS, SecretValues
from stacks.customer_instance import CustomerInstance, CustomerInstanceArgs
from stacks.spec import PRODUCT_DATABASE, PRODUCT_DATABASE_USER
from stacks.test_env import TestEnvironment, TestEnvironmentArgs

CONFIG_NAMESPACE: Final = "erpcloud"
REPOSITORY_ROOT: Final = Path(__file__).resolve().parent.parent
#: The Route 53 zone every customer URL lives in (S3), created once, outside customer stacks.
HOSTED_ZONE: Final = f"cloud.{policy.SERVICE_DOMAIN}"


@dataclass(frozen=True)
class StackInputs:
    """What a stack needs besides the customer: secret values and where the images are."""

    secret_values: SecretValues
    image_owner: str = "self"
    #: The day the program runs (S18: from a cancelled customer's termination date its
    #: instances are stopped). Fixed by tests; today in a real run.
    today: date = field(default_factory=date.today)
    provider_settings: ProviderSettings | None = None


def _secret_from_config(ref: SecretRef, config: pulumi.Config) -> pulumi.Output[str] | None:
    if ref.source is SecretSource.PULUMI_CONFIG:
        return config.require_secret(ref.name)
    if ref.source is SecretSource.ENV:
        value = os.environ.get(ref.name)
        if value is None:
            raise ValueError(f"environment variable {ref.name} is not set (secret reference {ref})")
        return pulumi.Output.secret(value)
    return None  # generated here, or an existing Secrets Manager secret


def inputs_from_config(customer: Customer) -> StackInputs:
    config = pulumi.Config(CONFIG_NAMESPACE)
    values = {
        which: _secret_from_config(getattr(customer.secrets, which), config)
        for which in SECRET_FIELDS
    }
    return StackInputs(
        secret_values=SecretValues(**values),
        image_owner=config.get("imageOwner") or "self",
        provider_settings=ProviderSettings.from_config(),
    )


@dataclass(frozen=True)
class CustomerStack:
    production: CustomerInstance
    test: TestEnvironment
    inventory: dict[str, Any]


def inventory(
    customer: Customer, production: CustomerInstance, test: TestEnvironment
) -> dict[str, Any]:
    """P4: the instance inventory, as the stack's outputs. Secret *names*, never values."""
    layout = HostLayout()
    users = [u.name for u in customer.ssh.users]
    primary, copy = production.backup_buckets
    return {
        "customer": customer.id,
        "lifecycle_state": customer.lifecycle.state.value,
        "url": production.url,
        "ssh_host": production.ssh_host,
        "ssh_port": policy.SSH_PORT,
        "ssh_users": users,
        "sftp_host": production.ssh_host,
        "sftp_users": users,
        "database_host": production.ssh_host,
        "database_port": layout.pg_port,
        "database_name": PRODUCT_DATABASE,
        "database_user": PRODUCT_DATABASE_USER,
        "database_access": "SSH tunnel to the instance (PostgreSQL listens on localhost only)",
        "database_password_secret": secret_name(customer, "database_password"),
        "backup_buckets": {
            "primary": {"name": primary.name, "region": primary.region},
            "copy": {"name": copy.name, "region": copy.region},
        },
        "test_url": test.url,
        "test_ssh_host": test.ssh_host,
        "production_instance_id": production.instance_id,
        "test_instance_id": test.instance_id,
        "ops_topic_arn": production.ops_topic_arn,
    }


def deploy(customer: Customer, inputs: StackInputs) -> CustomerStack:
    """Declare one customer's production and test environments and export the inventory."""
    providers = region_providers(customer, inputs.provider_settings)
    invoke = pulumi.InvokeOutputOptions(provider=providers.primary)
    image = latest_product_image(customer.version.release, invoke, owner=inputs.image_owner)
    zone = aws.route53.get_zone_output(name=HOSTED_ZONE, private_zone=False, opts=invoke)
    account = aws.get_caller_identity_output(opts=invoke)
    production_args = CustomerInstanceArgs(
        customer=customer,
        providers=providers,
        image_id=image.id,
        zone_id=zone.zone_id,
        account_id=account.account_id,
        secret_values=inputs.secret_values,
        today=inputs.today,
    )
    production = CustomerInstance(customer.id, production_args)
    test = TestEnvironment(
        f"{customer.id}-test", TestEnvironmentArgs.derived_from(production, production_args)
    )
    exported = inventory(customer, production, test)
    for key, value in exported.items():
        pulumi.export(key, value)
    return CustomerStack(production=production, test=test, inventory=exported)


def customers_dir(config: pulumi.Config) -> Path:
    configured = config.get("customersDir")
    return Path(configured) if configured else REPOSITORY_ROOT / "customers"


def main() -> None:
    """The entry point ``pulumi up`` runs: the customer named by the stack's config."""
    config = pulumi.Config(CONFIG_NAMESPACE)
    customer_id = config.get("customer") or pulumi.get_stack()
    customer = load_one(customer_id, customers_dir(config))
    deploy(customer, inputs_from_config(customer))

"""S1: the activation key and the database password in Secrets Manager, read at boot.

Values reach this module only as Pulumi secrets (stack secret config, an environment variable
read at deployment, or generated here); they go into a ``SecretVersion`` and nowhere else. A
secret the customer file names as ``secrets-manager:NAME`` already exists and is only looked up.
"""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_aws as aws
import pulumi_random as random

from erpcloud.model import Customer, SecretSource
from erpcloud.render import secret_name
from stacks.blocks import child, lookup
from stacks.spec import EnvironmentSpec

#: The two secrets an instance reads, as named in the customer file's ``secrets`` section.
SECRET_FIELDS = ("activation_key", "database_password")
#: Length of a generated database password (letters and digits: safe in any quoting).
GENERATED_PASSWORD_LENGTH = 40


class SecretSourceError(ValueError):
    """A secret reference this stack cannot satisfy."""


@dataclass(frozen=True)
class SecretValues:
    """Secret values supplied to the stack (never plain strings: ``Output`` marked secret).

    ``None`` for a field means the stack does not supply it: generated here, or an existing
    Secrets Manager secret.
    """

    activation_key: pulumi.Output[str] | None = None
    database_password: pulumi.Output[str] | None = None

    def get(self, which: str) -> pulumi.Output[str] | None:
        value: pulumi.Output[str] | None = getattr(self, which)
        return value


@dataclass(frozen=True)
class CustomerSecrets:
    """Where each secret lives: its name and ARN, and what must exist before an instance boots."""

    names: dict[str, str]
    arns: dict[str, pulumi.Output[str]]
    versions: list[aws.secretsmanager.SecretVersion]

    @property
    def arn_list(self) -> list[pulumi.Output[str]]:
        return [self.arns[which] for which in SECRET_FIELDS]


def _generated(owner: pulumi.Resource, name: str, which: str) -> pulumi.Output[str]:
    password = random.RandomPassword(
        f"{name}-{which.replace('_', '-')}-value",
        length=GENERATED_PASSWORD_LENGTH,
        special=False,
        opts=pulumi.ResourceOptions(parent=owner),
    )
    return pulumi.Output.secret(password.result)


def _test_value(
    owner: pulumi.Resource,
    name: str,
    customer: Customer,
    which: str,
    values: SecretValues,
    provider: aws.Provider,
) -> pulumi.Output[str]:
    """The test environment's own copy (issue 13): a password of its own; the vendor's
    activation key copied in (read from production's existing secret by the deployer, when the
    customer file names one), so its role never needs production's secrets."""
    if which == "database_password":
        return _generated(owner, name, which)
    ref = customer.secrets.activation_key
    if ref.source is SecretSource.SECRETS_MANAGER:
        existing = aws.secretsmanager.get_secret_version_output(
            secret_id=ref.name, opts=lookup(owner, provider)
        )
        return pulumi.Output.secret(existing.secret_string)
    return _stack_value(owner, name, customer, which, values)


def _stack_value(
    owner: pulumi.Resource, name: str, customer: Customer, which: str, values: SecretValues
) -> pulumi.Output[str]:
    ref = getattr(customer.secrets, which)
    supplied = values.get(which)
    if ref.source is SecretSource.GENERATED:
        if which == "activation_key":
            raise SecretSourceError(
                f"{customer.id}: secrets.activation_key cannot be 'generated': the product's "
                "activation key comes from the vendor (S1)"
            )
        return _generated(owner, name, which)
    if supplied is None:
        raise SecretSourceError(
            f"{customer.id}: secrets.{which} is {ref}, but the stack was given no value for it "
            "(S1: set it with `pulumi config set --secret` or the environment variable)"
        )
    return pulumi.Output.secret(supplied)


def customer_secrets(
    owner: pulumi.Resource,
    name: str,
    spec: EnvironmentSpec,
    provider: aws.Provider,
    *,
    key_arn: pulumi.Input[str],
    values: SecretValues,
) -> CustomerSecrets:
    customer = spec.customer
    names: dict[str, str] = {}
    arns: dict[str, pulumi.Output[str]] = {}
    versions: list[aws.secretsmanager.SecretVersion] = []
    for which in SECRET_FIELDS:
        role = which.replace("_", "-")
        names[which] = secret_name(customer, which, spec.environment)
        ref = getattr(customer.secrets, which)
        if spec.is_production and ref.source is SecretSource.SECRETS_MANAGER:
            existing = aws.secretsmanager.get_secret_output(
                name=names[which], opts=lookup(owner, provider)
            )
            arns[which] = existing.arn
            continue
        secret = aws.secretsmanager.Secret(
            f"{name}-{role}",
            name=names[which],
            description=f"{customer.id}: {which.replace('_', ' ')}, read at boot (S1)",
            kms_key_id=key_arn,
            tags=spec.tags("S1"),
            opts=child(owner, provider, protect=spec.is_production),
        )
        versions.append(
            aws.secretsmanager.SecretVersion(
                f"{name}-{role}-version",
                secret_id=secret.id,
                secret_string=(
                    _stack_value(owner, name, customer, which, values)
                    if spec.is_production
                    else _test_value(owner, name, customer, which, values, provider)
                ),
                opts=child(owner, provider),
            )
        )
        arns[which] = secret.arn
    return CustomerSecrets(names=names, arns=arns, versions=versions)

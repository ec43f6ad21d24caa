"""The values of a customer's secrets in the local AWS stand-in (S1): never printed, never in a
rendered file; the machines read them from the stand-in's Secrets Manager at boot."""

from __future__ import annotations

import os
import secrets

from erpcloud.model import Customer, Environment, SecretSource
from erpcloud.render import secret_name

SECRET_FIELDS = ("activation_key", "database_password")


def _random() -> str:
    return f"local-{secrets.token_urlsafe(24)}"


def local_secret_values(customer: Customer) -> dict[str, str]:
    """Every secret of both environments, by Secrets Manager name.

    A value given in the environment (``env:VAR`` references, or ``ERPCLOUD_ACTIVATION_KEY``
    for the stack's activation key) is used, otherwise a random local one. The test environment
    has its own (issue 13): the same vendor activation key, a database password of its own.
    """
    values = {}
    for which in SECRET_FIELDS:
        ref = getattr(customer.secrets, which)
        given = None
        if ref.source is SecretSource.ENV:
            given = os.environ.get(ref.name)
        elif which == "activation_key":
            given = os.environ.get("ERPCLOUD_ACTIVATION_KEY")
        value = given or _random()
        values[secret_name(customer, which)] = value
        test_value = value if which == "activation_key" else _random()
        values[secret_name(customer, which, Environment.TEST)] = test_value
    return values


def referenced_secrets(customer: Customer) -> dict[str, str]:
    """Secrets the customer file names as existing (``secrets-manager:NAME``), by region: on AWS
    they exist before the stack; locally they are created first, from the same values."""
    return {
        secret_name(customer, which): customer.region
        for which in SECRET_FIELDS
        if getattr(customer.secrets, which).source is SecretSource.SECRETS_MANAGER
    }

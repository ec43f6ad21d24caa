"""S10: one explicit AWS provider for the customer's region, one for the backup copy region (S6).

Explicit providers do not read the stack's ``aws:*`` configuration the way the default provider
does, so :class:`ProviderSettings` carries the settings a local emulator needs (``aws:endpoints``,
``aws:skipCredentialsValidation``, ...) from the stack configuration to both providers.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pulumi
import pulumi_aws as aws

from erpcloud import policy
from erpcloud.model import Customer

#: The ``aws:*`` keys passed on to the explicit providers, with their provider argument names.
PASSED_AWS_SETTINGS = {
    "skipCredentialsValidation": "skip_credentials_validation",
    "skipRequestingAccountId": "skip_requesting_account_id",
    "skipMetadataApiCheck": "skip_metadata_api_check",
    "skipRegionValidation": "skip_region_validation",
    "s3UsePathStyle": "s3_use_path_style",
    "profile": "profile",
}


@dataclass(frozen=True)
class ProviderSettings:
    """Provider settings from the stack's ``aws:*`` configuration (empty against real AWS)."""

    options: dict[str, Any] = field(default_factory=dict)
    endpoints: list[dict[str, str]] = field(default_factory=list)
    access_key: pulumi.Output[str] | None = None
    secret_key: pulumi.Output[str] | None = None

    @classmethod
    def from_config(cls) -> ProviderSettings:
        config = pulumi.Config("aws")
        options: dict[str, Any] = {}
        for key, argument in PASSED_AWS_SETTINGS.items():
            if key == "profile":
                value: Any = config.get(key)
            else:
                value = config.get_bool(key)
            if value is not None:
                options[argument] = value
        endpoints = config.get_object("endpoints") or []
        if not isinstance(endpoints, list) or not all(isinstance(e, dict) for e in endpoints):
            raise ValueError("aws:endpoints must be a list of {service: url} objects")
        return cls(
            options=options,
            endpoints=[{str(k): str(v) for k, v in e.items()} for e in endpoints],
            access_key=config.get_secret("accessKey"),
            secret_key=config.get_secret("secretKey"),
        )

    def arguments(self) -> dict[str, Any]:
        arguments: dict[str, Any] = dict(self.options)
        if self.endpoints:
            arguments["endpoints"] = self.endpoints
        if self.access_key is not None:
            arguments["access_key"] = self.access_key
        if self.secret_key is not None:
            arguments["secret_key"] = self.secret_key
        return arguments


@dataclass(frozen=True)
class RegionProviders:
    """The customer's two regions and their providers (S6, S10)."""

    primary: aws.Provider
    copy: aws.Provider
    primary_region: str
    copy_region: str


def region_providers(
    customer: Customer, settings: ProviderSettings | None = None
) -> RegionProviders:
    """S10: the primary region (a default one, or with its exception); S6: the copy region."""
    if customer.region not in policy.DEFAULT_REGIONS and not customer.region_exception:
        raise ValueError(f"{customer.id}: region {customer.region} needs region_exception (S10)")
    copy_region = customer.backup_copy_region
    if copy_region == customer.region:
        raise ValueError(f"{customer.id}: the backup copy must be in another region (S6)")
    arguments = (settings or ProviderSettings()).arguments()
    return RegionProviders(
        primary=aws.Provider(f"{customer.id}-primary", region=customer.region, **arguments),
        copy=aws.Provider(f"{customer.id}-copy", region=copy_region, **arguments),
        primary_region=customer.region,
        copy_region=copy_region,
    )

"""Building blocks both environments are made of (network, firewall, keys, secrets, server,
endpoint) and the production-only ones (monitoring, backups, elasticity).

Each block is a plain function ``block(owner, name, spec, provider, ...)`` that creates its
resources as children of ``owner`` (a component), named ``f"{name}-<role>"``, through the
explicit ``provider`` (S10), tagged with :meth:`stacks.spec.EnvironmentSpec.tags`.
"""

from __future__ import annotations

from collections.abc import Sequence

import pulumi


def child(
    owner: pulumi.Resource,
    provider: pulumi.ProviderResource | None,
    *,
    protect: bool = False,
    ignore_changes: Sequence[str] = (),
    depends_on: Sequence[pulumi.Resource] = (),
) -> pulumi.ResourceOptions:
    """Options for a child of ``owner`` managed through ``provider``."""
    return pulumi.ResourceOptions(
        parent=owner,
        provider=provider,
        protect=protect,
        ignore_changes=list(ignore_changes) or None,
        depends_on=list(depends_on) or None,
    )


def lookup(owner: pulumi.Resource, provider: pulumi.ProviderResource) -> pulumi.InvokeOutputOptions:
    """Options for an invoke made on behalf of ``owner`` through ``provider``."""
    return pulumi.InvokeOutputOptions(parent=owner, provider=provider)

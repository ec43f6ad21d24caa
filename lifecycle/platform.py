"""What the platform under a customer does at the end of its life (S18), one implementation per
platform, chosen once (issue 12 item 5: no ``if local`` in the lifecycle's steps).

* :class:`LocalPlatform`: the customer's local machines (a registered
  :class:`erpcloud.sites.LocalSite`): it powers them off and destroys them for real.
* :class:`AwsPlatform`: the fleet on AWS. There is no AWS account and no Pulumi CLI here, so it
  returns what an operator runs (the stack's ``pulumi up`` / ``destroy``), labelled as not run.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final, Protocol

from erpcloud.model import Customer
from erpcloud.sites import LocalSite, local_customer
from lifecycle.purge import aws_purge_plan, destroy_local
from stacks.plan import Plan

NOT_RUN_LABEL: Final = (
    "PLANNED, NOT RUN: there is no AWS account here; an operator runs these commands"
)
Progress = Callable[[str], None]


@dataclass(frozen=True)
class PlatformAction:
    """What a platform did (``ran``), or what an operator must run (``commands``)."""

    ran: bool
    #: What was done, for the record (machines stopped, buckets emptied...).
    done: dict[str, Any] = field(default_factory=dict)
    commands: list[str] = field(default_factory=list)
    #: When not run: the plan an operator reviews first (``pulumi destroy``'s).
    plan: dict[str, Any] = field(default_factory=dict)

    @property
    def label(self) -> str | None:
        return None if self.ran else NOT_RUN_LABEL


class Platform(Protocol):
    @property
    def mode(self) -> str:
        """For reports and the audit log: ``local`` (done) or ``aws-plan`` (not run)."""
        ...

    def stop_instances(self, customer: Customer, progress: Progress) -> PlatformAction:
        """Stop the service (S18): both instances off; disks, backups and secrets stay."""
        ...

    def destroy(self, customer: Customer, plan: Plan, progress: Progress) -> PlatformAction:
        """Destroy the customer's data (S18 purge). Callers check the rules first."""
        ...


@dataclass(frozen=True)
class LocalPlatform:
    site: LocalSite
    mode: str = "local"

    def stop_instances(self, customer: Customer, progress: Progress) -> PlatformAction:
        progress("powering off the local machines (production last: its last WAL is archived)")
        return PlatformAction(True, {"stopped": self.site.stop_instances(customer.id)})

    def destroy(self, customer: Customer, plan: Plan, progress: Progress) -> PlatformAction:
        return PlatformAction(True, destroy_local(self.site, customer.id, plan, progress))


@dataclass(frozen=True)
class AwsPlatform:
    mode: str = "aws-plan"

    def stop_instances(self, customer: Customer, progress: Progress) -> PlatformAction:
        stack = f"--stack {customer.id}"
        progress("the stack stops the instances: commands for an operator, not run here")
        return PlatformAction(
            False,
            commands=[
                f"pulumi up --yes {stack}",
                f"aws ec2 wait instance-stopped --region {customer.region} --instance-ids "
                f'"$(pulumi stack output production_instance_id {stack})" '
                f'"$(pulumi stack output test_instance_id {stack})"',
            ],
        )

    def destroy(self, customer: Customer, plan: Plan, progress: Progress) -> PlatformAction:
        progress("the plan of `pulumi destroy`, not run here")
        planned = aws_purge_plan(customer, plan)
        return PlatformAction(False, commands=planned["commands"], plan=planned)


def platform_for(customer_id: str) -> Platform:
    """The customer's local machines when the registered local site holds them; else AWS."""
    found = local_customer(customer_id)
    return LocalPlatform(found[0]) if found is not None else AwsPlatform()

"""The promise checks of :mod:`stacks.checks` as a Pulumi CrossGuard policy pack (issue 13 item 9).

One stack validation policy per check, so ``pulumi preview --policy-pack policypack`` and
``pulumi up --policy-pack policypack`` refuse a stack that breaks a promise, with the same rules
and messages CI applies to the offline plan. The engine's resources are turned into the plan's
records (:func:`plan_from_policy_resources`); the customer is the stack's, read from its file.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Final

from pulumi_policy import (
    EnforcementLevel,
    PolicyResource,
    ReportViolation,
    StackValidationArgs,
    StackValidationPolicy,
)

from erpcloud.documents import DocumentError
from erpcloud.fleet import load_customer
from stacks.checks import CHECKS, Check
from stacks.plan import PROVIDER_PREFIX, Plan, PlannedResource

COMPONENT_PREFIX: Final = "erpcloud:index:"
STACK_TYPE: Final = "pulumi:pulumi:Stack"
#: Where the pack finds the customer files (pack config ``customersDir`` overrides it).
DEFAULT_CUSTOMERS_DIR: Final = Path(__file__).resolve().parent.parent / "customers"


def stack_of(urn: str) -> str:
    """``urn:pulumi:<stack>::<project>::<type>::<name>`` → ``<stack>``."""
    return urn.split("::", 1)[0].removeprefix("urn:pulumi:")


def _component(resource: PolicyResource | None) -> PolicyResource | None:
    parent = resource.parent if resource is not None else None
    while parent is not None and not parent.resource_type.startswith(COMPONENT_PREFIX):
        parent = parent.parent
    return parent


def _plain(value: Any) -> Any:
    """The engine's numbers are doubles: ports and sizes back to integers, as in the plan."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def planned(resource: PolicyResource) -> PlannedResource:
    """One engine resource as the offline plan records it."""
    component = _component(resource)
    provider = resource.provider
    region = provider.props.get("region") if provider is not None else None
    if resource.resource_type.startswith(PROVIDER_PREFIX):
        region = resource.props.get("region")
    kind = resource.resource_type
    return PlannedResource(
        type=kind,
        name=resource.name,
        urn=resource.urn,
        component=component.name if component else None,
        component_type=component.resource_type if component else None,
        parent=resource.parent.name if resource.parent else None,
        provider=provider.name if provider else None,
        region=str(region) if region else None,
        custom=not kind.startswith(COMPONENT_PREFIX) and kind != STACK_TYPE,
        inputs=_plain(dict(resource.props)),
        secret_inputs=(),
        outputs=_plain(dict(resource.props)),
        protect=bool(resource.opts.protect),
        ignore_changes=tuple(resource.opts.ignore_changes or ()),
    )


def plan_from_policy_resources(resources: Sequence[PolicyResource]) -> Plan:
    stacks = {stack_of(r.urn) for r in resources}
    if len(stacks) != 1:
        raise ValueError(f"resources of {len(stacks)} stacks: {sorted(stacks)}")
    (stack,) = stacks
    records = tuple(planned(r) for r in resources if r.resource_type != STACK_TYPE)
    return Plan(customer=stack, stack=stack, preview=True, resources=records, outputs={},
                invokes=(), label="the engine's resources (pulumi preview/up)")  # fmt: skip


def _validate(check: Check) -> Callable[[StackValidationArgs, ReportViolation], None]:
    def validate(args: StackValidationArgs, report_violation: ReportViolation) -> None:
        plan = plan_from_policy_resources(args.resources)
        config: dict[str, Any] = dict(args.get_config())
        directory = Path(config.get("customersDir") or DEFAULT_CUSTOMERS_DIR)
        try:
            customer = load_customer(directory / f"{plan.stack}.yaml")
        except DocumentError as exc:
            report_violation(f"stack {plan.stack}: no valid customer file ({exc})", None)
            return
        urns = {r.name: r.urn for r in plan.resources}
        for violation in check(plan, customer):
            name = violation.split(":", 1)[0].split(" ")[0]
            report_violation(violation, urns.get(name))

    return validate


def policies() -> list[StackValidationPolicy]:
    """Every promise check, mandatory: a violation stops ``pulumi up``."""
    return [
        StackValidationPolicy(
            name=check.__name__.removeprefix("check_").replace("_", "-"),
            description=(check.__doc__ or check.__name__).strip().splitlines()[0],
            validate=_validate(check),
            enforcement_level=EnforcementLevel.MANDATORY,
        )
        for check in CHECKS
    ]

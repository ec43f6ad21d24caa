"""The policy pack (issue 13 item 9): the promise checks as CrossGuard stack validations.

There is no Pulumi CLI here, so no engine calls the pack. These tests hand its policies what an
engine would: the program's recorded registrations (the SDK's mocks) as ``PolicyResource``
objects with their parents and providers, and check that the same rules fire as on the offline
plan. That is the pack's own logic under test, not a ``pulumi preview``.
"""

from __future__ import annotations

from typing import Any

import pulumi
import pulumi_aws as aws
from pulumi_policy import (
    PolicyCustomTimeouts,
    PolicyProviderResource,
    PolicyResource,
    PolicyResourceOptions,
    StackValidationArgs,
)

from erpcloud.model import Customer
from stacks.checks import CHECKS, run_checks
from stacks.plan import plan_from_recording
from stacks.policypack import plan_from_policy_resources, policies
from stacks.program import deploy
from stacks.recording import Recording, run_program

from .test_stacks import sentinel_inputs


def engine_resources(recording: Recording) -> list[PolicyResource]:
    """The registrations as the engine hands them to a policy pack."""
    by_urn = recording.by_urn()
    made: dict[str, PolicyResource] = {}

    def make(urn: str) -> PolicyResource:
        if urn in made:
            return made[urn]
        reg = by_urn[urn]
        parent = make(reg.parent_urn) if reg.parent_urn in by_urn else None
        provider_reg = by_urn.get(reg.provider_urn)
        provider = (
            PolicyProviderResource(
                provider_reg.type, dict(provider_reg.inputs), provider_reg.urn, provider_reg.name
            )
            if provider_reg is not None
            else None
        )
        options = PolicyResourceOptions(
            reg.protect, list(reg.ignore_changes), None, [], PolicyCustomTimeouts(0, 0, 0), []
        )
        props: dict[str, Any] = {**reg.outputs, **reg.inputs}
        made[urn] = PolicyResource(
            reg.type, props, urn, reg.name, options, provider, parent, [], {}
        )
        return made[urn]

    return [make(r.urn) for r in recording.resources]


def violations(recording: Recording) -> dict[str, list[tuple[str, str | None]]]:
    found: dict[str, list[tuple[str, str | None]]] = {}
    args = StackValidationArgs(engine_resources(recording))
    for policy in policies():
        reported: list[tuple[str, str | None]] = []

        def report(message: str, urn: str | None = None, out: list[Any] = reported) -> None:
            out.append((message, urn))

        policy.validate(args, report)
        found[policy.name] = reported
    return found


def test_every_check_is_a_mandatory_policy_of_the_pack():
    names = [p.name for p in policies()]
    assert names == [c.__name__.removeprefix("check_").replace("_", "-") for c in CHECKS]
    assert all(str(p.enforcement_level).endswith("MANDATORY") for p in policies())


def test_the_engines_view_gives_the_same_verdicts_as_the_offline_plan(
    sample_fleet: dict[str, Customer],
):
    customer = sample_fleet["acme-retail"]

    def with_port_80() -> None:
        stack = deploy(customer, sentinel_inputs(customer))
        aws.vpc.SecurityGroupIngressRule(
            f"{customer.id}-http", security_group_id="sg-0123", ip_protocol="tcp",
            from_port=80, to_port=80, cidr_ipv4="0.0.0.0/0",
            opts=pulumi.ResourceOptions(parent=stack.production),
        )  # fmt: skip

    real = run_program(lambda: deploy(customer, sentinel_inputs(customer)), stack=customer.id)
    assert all(v == [] for v in violations(real).values()), violations(real)
    assert plan_from_policy_resources(engine_resources(real)).stack == customer.id

    broken = run_program(with_port_80, stack=customer.id)
    found = violations(broken)
    offline = run_checks(plan_from_recording(customer.id, broken), customer)
    assert sorted(m for reported in found.values() for m, _urn in reported) == sorted(offline)
    (port,) = found["forbidden-ports"]
    assert port[0] == f"{customer.id}-http: opens 80 (S3)"
    assert port[1] is not None and port[1].endswith(f"::{customer.id}-http")


def test_a_stack_without_a_customer_file_is_a_violation(sample_fleet: dict[str, Customer]):
    customer = sample_fleet["acme-retail"]
    real = run_program(lambda: deploy(customer, sentinel_inputs(customer)), stack="nobody-here")
    found = violations(real)
    assert all(
        len(reported) == 1 and "no valid customer file" in reported[0][0]
        for reported in found.values()
    )

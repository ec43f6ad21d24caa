"""``erpcloud plan CUSTOMER``: review a customer's stack without cloud credentials.

Registered in :mod:`frontdoor.cli` (helpers from :mod:`erpcloud.cli_common`). The Pulumi
modules are imported inside the command (they take seconds to load), so ``erpcloud --help``
stays fast.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Final

import typer
from rich.table import Table

from erpcloud.cli_common import CustomersDir, JsonFlag, load_valid_customer
from erpcloud.fleet import CUSTOMERS_DIR
from erpcloud.output import EXIT_FAILED, console, emit, fail

if TYPE_CHECKING:
    from stacks.plan import Plan, PlannedResource

#: The inputs a reviewer looks at first, per resource type (others are in --json).
KEY_INPUTS: Final[dict[str, tuple[str, ...]]] = {
    "pulumi:providers:aws": ("region",),
    "aws:ec2/instance:Instance": (
        "instanceType",
        "metadataOptions.httpTokens",
        "rootBlockDevice.encrypted",
        "rootBlockDevice.volumeSize",
        "monitoring",
    ),
    "aws:ebs/volume:Volume": ("size", "type", "encrypted"),
    "aws:ec2transitgateway/instanceState:InstanceState": ("state",),
    "aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule": (
        "fromPort",
        "toPort",
        "cidrIpv4",
        "cidrIpv6",
        "referencedSecurityGroupId",
    ),
    "aws:vpc/securityGroupEgressRule:SecurityGroupEgressRule": (
        "fromPort",
        "toPort",
        "cidrIpv4",
        "referencedSecurityGroupId",
    ),
    "aws:lb/listener:Listener": ("port", "protocol", "sslPolicy"),
    "aws:lb/targetGroup:TargetGroup": ("port", "protocol"),
    "aws:acm/certificate:Certificate": ("domainName", "validationMethod"),
    "aws:route53/record:Record": ("name", "type"),
    "aws:kms/key:Key": ("enableKeyRotation",),
    "aws:kms/alias:Alias": ("name",),
    "aws:s3/bucket:Bucket": ("bucket",),
    "aws:s3/bucketServerSideEncryptionConfiguration:BucketServerSideEncryptionConfiguration": (
        "rules[0].applyServerSideEncryptionByDefault.sseAlgorithm",
    ),
    "aws:s3/bucketVersioning:BucketVersioning": ("versioningConfiguration.status",),
    "aws:s3/bucketLifecycleConfiguration:BucketLifecycleConfiguration": (
        "rules[0].noncurrentVersionExpiration.noncurrentDays",
    ),
    "aws:secretsmanager/secret:Secret": ("name",),
    "aws:secretsmanager/secretVersion:SecretVersion": ("secretString",),
    "aws:cloudwatch/metricAlarm:MetricAlarm": ("metricName", "threshold", "period"),
    "aws:cloudwatch/logGroup:LogGroup": ("name", "retentionInDays"),
    "aws:ssm/document:Document": ("name", "documentType"),
}


def key_inputs(resource: PlannedResource) -> str:
    from stacks.plan import iter_inputs

    wanted = KEY_INPUTS.get(resource.type, ("name",))
    values = dict(iter_inputs(resource))
    shown = [f"{key}={values[key]}" for key in wanted if key in values]
    if resource.protect:
        shown.append("protect")
    return ", ".join(shown)


def render_plan(plan: Plan) -> None:
    console.print(f"[bold yellow]{plan.label}[/]")
    for component, resources in plan.components().items():
        kinds = {r.component_type for r in resources if r.component_type}
        title = f"{component} ({', '.join(sorted(kinds))})" if kinds else component
        table = Table(title=title, title_justify="left")
        for column in ("resource", "name", "region", "key inputs"):
            table.add_column(column, overflow="fold")
        for resource in sorted(resources, key=lambda r: (r.type, r.name)):
            table.add_row(
                resource.short_type, resource.name, resource.region or "", key_inputs(resource)
            )
        console.print(table)
    console.print(
        f"{len(plan.resources)} resources for stack {plan.stack}; outputs (P4): "
        + ", ".join(sorted(plan.outputs))
    )
    console.print(f"[bold yellow]OFFLINE[/]: {plan.label.split(': ', 1)[1]}")


def plan_command(
    customer_id: Annotated[str, typer.Argument(help="The customer whose stack to plan.")],
    directory: CustomersDir = CUSTOMERS_DIR,
    preview: Annotated[
        bool, typer.Option("--preview-mode", help="Run as a preview would (unknowns stay unknown).")
    ] = False,
    as_json: JsonFlag = False,
) -> None:
    """OFFLINE plan: the resources the customer's Pulumi program would register (no credentials)."""
    customer = load_valid_customer(customer_id, Path(directory), as_json)
    started = time.perf_counter()
    from stacks.checks import CHECKS, run_checks
    from stacks.plan import plan_customer

    try:
        plan = plan_customer(customer, preview=preview)
    except ValueError as exc:
        fail(f"{customer_id}: the program refused the customer: {exc}", as_json)
    violations = run_checks(plan, customer)
    elapsed = time.perf_counter() - started
    document: dict[str, Any] = {
        "ok": not violations,
        **plan.to_json(),
        "checks": {"ok": not violations, "violations": violations},
        "seconds": round(elapsed, 2),
    }

    def human() -> None:
        render_plan(plan)
        if violations:
            console.print(f"[bold red]{len(violations)} promise check(s) failed:[/]")
            for violation in violations:
                console.print(f"  {violation}", markup=False)
        else:
            names = ", ".join(check.__name__.removeprefix("check_") for check in CHECKS)
            console.print(f"[green]promise checks passed[/] ({names})")

    emit(document, as_json, human)
    if violations:
        raise SystemExit(EXIT_FAILED)


def plan_json_text(plan: Plan) -> str:
    """The plan as the ``--json`` text (for files and diffs)."""
    return json.dumps(plan.to_json(), indent=2, sort_keys=True) + "\n"

"""The offline plan: what the customer's program would register, without cloud or credentials.

:func:`plan_customer` runs the real program (:func:`stacks.program.deploy`) under the recording
engine (:mod:`stacks.recording`) and returns a :class:`Plan` of typed records, one per resource:

* ``type`` the Pulumi type token (``aws:s3/bucket:Bucket``), ``name`` the logical name;
* ``component`` / ``component_type`` the component it belongs to (``acme-retail`` /
  ``erpcloud:index:CustomerInstance``), ``parent`` the parent's logical name;
* ``provider`` the explicit provider's logical name and ``region`` where it is managed;
* ``inputs`` every input as it would be sent to the engine (camelCase keys), with secret values
  replaced by ``"[secret]"`` (their paths in ``secret_inputs``) and values unknown before
  deployment by ``"[unknown]"``; ids and ARNs of other resources are the engine's invented ones;
* ``protect`` and ``ignore_changes`` as the program set them.

Another tool can use it as data, e.g. to create a customer's buckets, keys and secret names
in an emulator "from the offline plan of the real program"::

    plan = plan_customer(customer)
    for bucket in plan.of_type(BUCKET_TYPE):
        s3(bucket.region).create_bucket(Bucket=bucket.inputs["bucket"], ...)

This is not a Pulumi preview: no provider is asked anything, so a value AWS would refuse is
only caught by the assertions in the tests, never here.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import date
from typing import Any, Final

import pulumi
from pulumi.output import Unknown
from pulumi.runtime import rpc

from erpcloud.model import Customer, SecretSource
from stacks.blocks.secrets import SECRET_FIELDS, SecretValues
from stacks.program import StackInputs, deploy
from stacks.recording import (
    PROVIDER_PREFIX,
    REDACTED_MARK,
    UNKNOWN_MARK,
    Recording,
    Registration,
    run_program,
)

#: Type tokens readers of a plan most often want.
BUCKET_TYPE: Final = "aws:s3/bucket:Bucket"
KMS_KEY_TYPE: Final = "aws:kms/key:Key"
SECRET_TYPE: Final = "aws:secretsmanager/secret:Secret"  # noqa: S105 - a type token
INSTANCE_TYPE: Final = "aws:ec2/instance:Instance"
#: Stands for a secret the stack reads from its config or environment (offline only).
OFFLINE_PLACEHOLDER: Final = "offline-plan-placeholder"
#: How a plan says what it is, in every output.
OFFLINE_LABEL: Final = (
    "OFFLINE PLAN: the real program run in-process under the recording engine (Pulumi SDK "
    "mocks). No cloud credentials were used and nothing was asked of AWS; this is not a "
    "`pulumi preview`."
)


@dataclass(frozen=True)
class PlannedResource:
    """One resource the program would register."""

    type: str
    name: str
    urn: str
    component: str | None
    component_type: str | None
    parent: str | None
    provider: str | None
    region: str | None
    custom: bool
    inputs: dict[str, Any]
    secret_inputs: tuple[str, ...]
    #: The outputs the recording engine invented (ids, ARNs), secrets redacted: how other
    #: resources' inputs refer to this one.
    outputs: dict[str, Any]
    protect: bool
    ignore_changes: tuple[str, ...]

    @property
    def is_provider(self) -> bool:
        return self.type.startswith(PROVIDER_PREFIX)

    @property
    def aws_region(self) -> str:
        """The region, for an AWS resource (raises for one that has none, e.g. a password)."""
        if self.region is None:
            raise ValueError(f"{self.name} ({self.type}) is managed in no region")
        return self.region

    @property
    def short_type(self) -> str:
        """``aws:s3/bucket:Bucket`` → ``s3.Bucket``."""
        package, module, kind = [*self.type.split(":"), "", ""][:3]
        if package == "pulumi":
            return f"{module}.{kind}"
        return f"{module.split('/')[0]}.{kind}" if kind else self.type


@dataclass(frozen=True)
class Plan:
    """Everything one customer's program would register and export (see module docs)."""

    customer: str
    stack: str
    preview: bool
    resources: tuple[PlannedResource, ...]
    outputs: dict[str, Any]
    invokes: tuple[str, ...]
    label: str = OFFLINE_LABEL

    def of_type(self, token: str) -> list[PlannedResource]:
        return [r for r in self.resources if r.type == token]

    def named(self, name: str) -> PlannedResource:
        found = [r for r in self.resources if r.name == name]
        if len(found) != 1:
            raise KeyError(f"{len(found)} planned resources named {name!r}")
        return found[0]

    def components(self) -> dict[str, list[PlannedResource]]:
        """Resources grouped by component name ('(stack)' for providers and components)."""
        groups: dict[str, list[PlannedResource]] = {}
        for resource in self.resources:
            groups.setdefault(resource.component or "(stack)", []).append(resource)
        return groups

    def to_json(self) -> dict[str, Any]:
        return {
            "offline": True,
            "label": self.label,
            "customer": self.customer,
            "stack": self.stack,
            "resource_count": len(self.resources),
            "components": {
                name: [
                    {
                        "type": r.type,
                        "name": r.name,
                        "component_type": r.component_type,
                        "parent": r.parent,
                        "provider": r.provider,
                        "region": r.region,
                        "protect": r.protect,
                        "ignore_changes": list(r.ignore_changes),
                        "secret_inputs": list(r.secret_inputs),
                        "inputs": r.inputs,
                    }
                    for r in resources
                ]
                for name, resources in self.components().items()
            },
            "outputs": self.outputs,
            "invokes": list(self.invokes),
        }


# --- turning raw registrations into plan records --------------------------------------------
def _clean(value: Any, path: str, secrets: list[str]) -> Any:
    if rpc.is_rpc_secret(value):
        secrets.append(path)
        return REDACTED_MARK
    if isinstance(value, Unknown) or value == rpc.UNKNOWN:
        return UNKNOWN_MARK
    if isinstance(value, dict):
        return {k: _clean(v, f"{path}.{k}" if path else k, secrets) for k, v in value.items()}
    if isinstance(value, list):
        return [_clean(v, f"{path}[{i}]", secrets) for i, v in enumerate(value)]
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        return int(value)  # the wire has only doubles; ports and sizes read better as integers
    if isinstance(value, pulumi.Resource):
        return "[resource]"
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    return repr(value)


def _component_of(resource: Registration, by_urn: dict[str, Registration]) -> Registration | None:
    parent = by_urn.get(resource.parent_urn)
    while parent is not None and (parent.custom or parent.is_provider):
        parent = by_urn.get(parent.parent_urn)
    return parent


def plan_from_recording(customer_id: str, recording: Recording) -> Plan:
    """The typed, redacted view of one recorded run."""
    by_urn = recording.by_urn()
    planned = []
    for resource in recording.resources:
        secrets: list[str] = []
        inputs = _clean(resource.inputs, "", secrets)
        component = _component_of(resource, by_urn)
        parent = by_urn.get(resource.parent_urn)
        provider = by_urn.get(resource.provider_urn)
        planned.append(
            PlannedResource(
                type=resource.type,
                name=resource.name,
                urn=resource.urn,
                component=component.name if component else None,
                component_type=component.type if component else None,
                parent=parent.name if parent else None,
                provider=provider.name if provider else None,
                region=recording.region_of(resource),
                custom=resource.custom,
                inputs=inputs,
                secret_inputs=tuple(secrets),
                outputs=_clean(resource.outputs, "", []),
                protect=resource.protect,
                ignore_changes=resource.ignore_changes,
            )
        )
    outputs = {
        key: REDACTED_MARK if key in recording.secret_outputs else _clean(value, key, [])
        for key, value in recording.outputs.items()
    }
    return Plan(
        customer=customer_id,
        stack=recording.stack,
        preview=recording.preview,
        resources=tuple(planned),
        outputs=outputs,
        invokes=tuple(i.token for i in recording.invokes),
    )


def offline_inputs(customer: Customer, today: date | None = None) -> StackInputs:
    """Placeholders, marked secret, for the secrets a real stack reads from config or env."""
    supplied = {
        which: pulumi.Output.secret(OFFLINE_PLACEHOLDER)
        for which in SECRET_FIELDS
        if getattr(customer.secrets, which).source in (SecretSource.PULUMI_CONFIG, SecretSource.ENV)
    }
    return StackInputs(secret_values=SecretValues(**supplied), today=today or date.today())


def record_customer(
    customer: Customer,
    preview: bool = False,
    inputs: Callable[[], StackInputs] | None = None,
    today: date | None = None,
) -> Recording:
    """The raw recording of the customer's program (secrets still wrapped; for tests).

    ``inputs`` builds the stack inputs inside the run (``Output`` values belong to one run);
    by default, offline placeholders.
    """
    make_inputs = inputs or (lambda: offline_inputs(customer, today))
    return run_program(lambda: deploy(customer, make_inputs()), stack=customer.id, preview=preview)


def plan_customer(customer: Customer, preview: bool = False, today: date | None = None) -> Plan:
    """Run the customer's program offline and return what it would register (module docs).

    ``today`` is the day the program is taken to run on (default: today), which decides
    whether a cancelled customer's instances still run (S18)."""
    return plan_from_recording(customer.id, record_customer(customer, preview, today=today))


def iter_inputs(resource: PlannedResource) -> Iterator[tuple[str, Any]]:
    """Every leaf input as (dotted path, value), for scanning a plan."""

    def walk(value: Any, path: str) -> Iterator[tuple[str, Any]]:
        if isinstance(value, dict):
            for key, item in value.items():
                yield from walk(item, f"{path}.{key}" if path else key)
        elif isinstance(value, list):
            for index, item in enumerate(value):
                yield from walk(item, f"{path}[{index}]")
        else:
            yield path, value

    yield from walk(resource.inputs, "")

"""The recording engine: the Pulumi program run in-process against the SDK's mocks.

No cloud, no credentials, no Pulumi CLI. :class:`RecordingMonitor` (a ``MockMonitor``) records
every resource the program registers, with its parent, provider, options and inputs exactly as
they would be sent to the engine (camelCase keys, secrets still wrapped as secrets);
:class:`RecordingMocks` invents the computed outputs the program reads (ids, ARNs, DNS names)
and answers only the invokes the program is known to make: any other invoke raises
:class:`UnexpectedInvoke`, so a new lookup cannot slip through with an empty answer.

:func:`run_program` runs one program in a fresh ``contextvars`` context (its own root stack,
config and settings), so runs never share state. This is what tests, ``erpcloud plan`` and the
benchmark use. It is *not* a Pulumi preview: nothing here asks AWS anything.
"""

from __future__ import annotations

import asyncio
import contextvars
import hashlib
import logging
import re
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

import pulumi
from pulumi.output import Unknown
from pulumi.runtime import rpc
from pulumi.runtime.mocks import MockCallArgs, MockMonitor, MockResourceArgs
from pulumi.runtime.settings import SETTINGS

# The SDK's own test decorator (pulumi.runtime.test) drives a program with these two.
from pulumi.runtime.stack import run_pulumi_func
from pulumi.runtime.sync_await import _sync_await

#: The AWS account the invented ARNs name (the documentation account).
ACCOUNT_ID: Final = "123456789012"
#: What a plan shows instead of a secret's value.
REDACTED_MARK: Final = "[secret]"
#: What a plan shows for a value not known before deployment.
UNKNOWN_MARK: Final = "[unknown]"
PROVIDER_PREFIX: Final = "pulumi:providers:"
#: The region invented ARNs name when a resource has no region (the default provider).
OFFLINE_REGION: Final = "offline"


class UnexpectedInvoke(RuntimeError):
    """The program made an invoke the recording engine does not answer."""


class DuplicateUrn(RuntimeError):
    """Two resources with the same URN: the real engine would refuse the program."""


@dataclass
class Registration:
    """One resource as the program registered it (inputs raw: secrets still wrapped)."""

    urn: str
    type: str
    name: str
    parent_urn: str
    provider_ref: str
    custom: bool
    inputs: dict[str, Any]
    protect: bool
    ignore_changes: tuple[str, ...]
    dependencies: tuple[str, ...]
    id: str = ""
    outputs: dict[str, Any] = field(default_factory=dict)

    @property
    def provider_urn(self) -> str:
        """The provider's URN (a provider reference is ``URN::ID``)."""
        return self.provider_ref.rsplit("::", 1)[0] if self.provider_ref else ""

    @property
    def is_provider(self) -> bool:
        return self.type.startswith(PROVIDER_PREFIX)


@dataclass
class InvokeRecord:
    token: str
    args: dict[str, Any]
    provider_ref: str


@dataclass
class Recording:
    """Everything one run registered, invoked and exported."""

    project: str
    stack: str
    preview: bool
    resources: list[Registration]
    invokes: list[InvokeRecord]
    outputs: dict[str, Any]
    secret_outputs: frozenset[str]

    def by_urn(self) -> dict[str, Registration]:
        return {r.urn: r for r in self.resources}

    def of_type(self, token: str) -> list[Registration]:
        return [r for r in self.resources if r.type == token]

    def named(self, name: str) -> Registration:
        found = [r for r in self.resources if r.name == name]
        if len(found) != 1:
            raise KeyError(f"{len(found)} resources named {name!r}")
        return found[0]

    def region_of(self, resource: Registration) -> str | None:
        """The region a resource is managed in: its own ``region`` input, else its provider's."""
        own = resource.inputs.get("region")
        if isinstance(own, str):
            return own
        provider = self.by_urn().get(resource.provider_urn)
        if provider is None:
            return None
        region = provider.inputs.get("region")
        return region if isinstance(region, str) else None


# --- invented outputs --------------------------------------------------------------------------
def _digest(text: str, length: int = 17) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:length]


def _known(value: Any) -> bool:
    return value is not None and not isinstance(value, Unknown)


def _plain(value: Any) -> Any:
    """Unwrap a secret (the mocks invent outputs from the value, as AWS would)."""
    return rpc.unwrap_rpc_secret(value)


def _to_wire(value: Any) -> Any:
    """Unknown values back into the wire form, so returned state re-serializes."""
    if isinstance(value, Unknown):
        return rpc.UNKNOWN
    if isinstance(value, dict):
        return {k: _to_wire(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_to_wire(v) for v in value]
    return value


def _service(kind: str) -> str:
    module = kind.split(":")[1].split("/")[0]
    return {
        "lb": "elasticloadbalancing",
        "cloudwatch": "cloudwatch",
        "ebs": "ec2",
        "vpc": "ec2",
    }.get(module, module)


class RecordingMocks(pulumi.runtime.Mocks):
    """Invents what AWS would compute, and answers the program's known invokes."""

    def __init__(self, engine: RecordingEngine) -> None:
        self.engine = engine

    # -- resources --
    def new_resource(self, args: MockResourceArgs) -> tuple[str | None, dict[str, Any]]:
        region = self.engine.region_for(args.provider or "", args.inputs) or OFFLINE_REGION
        inputs = args.inputs
        kind = args.typ
        tag = _digest(f"{kind}::{args.name}")
        arn = f"arn:aws:{_service(kind)}:{region}:{ACCOUNT_ID}:{args.name}"
        resource_id = f"{args.name}-{tag[:8]}"
        extra: dict[str, Any] = {"arn": arn}
        name_input = _plain(inputs.get("name"))
        name = name_input if _known(name_input) else f"{args.name}-{tag[:7]}"
        if kind.startswith(PROVIDER_PREFIX):
            return f"provider-{tag}", dict(inputs)
        if kind == "aws:s3/bucket:Bucket":
            bucket = _plain(inputs.get("bucket"))
            bucket = bucket if _known(bucket) else f"{args.name}-{tag[:7]}"
            resource_id = bucket
            extra = {
                "arn": f"arn:aws:s3:::{bucket}",
                "bucket": bucket,
                "bucketDomainName": f"{bucket}.s3.amazonaws.com",
                "bucketRegionalDomainName": f"{bucket}.s3.{region}.amazonaws.com",
                "region": region,
            }
        elif kind == "aws:kms/key:Key":
            key_id = f"{tag[:8]}-{tag[8:12]}-4{tag[12:15]}-8{tag[15:17]}0-{_digest(tag, 12)}"
            resource_id = key_id
            extra = {"arn": f"arn:aws:kms:{region}:{ACCOUNT_ID}:key/{key_id}", "keyId": key_id}
        elif kind == "aws:secretsmanager/secret:Secret":
            secret_arn = f"arn:aws:secretsmanager:{region}:{ACCOUNT_ID}:secret:{name}-{tag[:6]}"
            resource_id = secret_arn
            extra = {"arn": secret_arn, "name": name}
        elif kind in ("aws:iam/role:Role", "aws:iam/instanceProfile:InstanceProfile"):
            kind = "role" if kind.endswith("Role") else "instance-profile"
            resource_id = name
            extra = {"arn": f"arn:aws:iam::{ACCOUNT_ID}:{kind}/{name}", "name": name}
        elif kind == "aws:iam/rolePolicy:RolePolicy":
            resource_id = f"{_plain(inputs.get('role'))}:{name}"
            extra = {"name": name}
        elif kind == "aws:ec2/instance:Instance":
            resource_id = f"i-{tag}"
            octet = int(tag[:2], 16) % 250 + 4
            extra = {
                "arn": f"arn:aws:ec2:{region}:{ACCOUNT_ID}:instance/{resource_id}",
                "privateIp": f"10.0.0.{octet}",
                "availabilityZone": f"{region}a",
                "primaryNetworkInterfaceId": f"eni-{tag}",
            }
        elif kind == "aws:ebs/volume:Volume":
            resource_id = f"vol-{tag}"
            extra = {"arn": f"arn:aws:ec2:{region}:{ACCOUNT_ID}:volume/{resource_id}"}
        elif kind == "aws:ec2/eip:Eip":
            resource_id = f"eipalloc-{tag}"
            octet = int(tag[:2], 16) % 250 + 4
            extra = {
                "publicIp": f"203.0.113.{octet}",
                "publicDns": f"ec2-203-0-113-{octet}.compute-1.amazonaws.com",
                "allocationId": resource_id,
            }
        elif kind == "aws:ec2/vpc:Vpc":
            resource_id = f"vpc-{tag}"
            extra = {"arn": f"arn:aws:ec2:{region}:{ACCOUNT_ID}:vpc/{resource_id}"}
        elif kind == "aws:ec2/subnet:Subnet":
            resource_id = f"subnet-{tag}"
        elif kind in (
            "aws:ec2/securityGroup:SecurityGroup",
            "aws:ec2/defaultSecurityGroup:DefaultSecurityGroup",
        ):
            resource_id = f"sg-{tag}"
            extra = {"arn": f"arn:aws:ec2:{region}:{ACCOUNT_ID}:security-group/{resource_id}"}
        elif kind == "aws:lb/loadBalancer:LoadBalancer":
            suffix = f"app/{args.name[:20]}/{tag[:16]}"
            resource_id = (
                f"arn:aws:elasticloadbalancing:{region}:{ACCOUNT_ID}:loadbalancer/{suffix}"
            )
            extra = {
                "arn": resource_id,
                "arnSuffix": suffix,
                "dnsName": f"{args.name[:20]}-{tag[:9]}.{region}.elb.amazonaws.com",
                "zoneId": "Z35SXDOTRQ7X7K",
            }
        elif kind == "aws:lb/targetGroup:TargetGroup":
            suffix = f"targetgroup/{args.name[:20]}/{tag[:16]}"
            resource_id = f"arn:aws:elasticloadbalancing:{region}:{ACCOUNT_ID}:{suffix}"
            extra = {"arn": resource_id, "arnSuffix": suffix}
        elif kind == "aws:acm/certificate:Certificate":
            domain = _plain(inputs.get("domainName"))
            resource_id = f"arn:aws:acm:{region}:{ACCOUNT_ID}:certificate/{tag}"
            extra = {
                "arn": resource_id,
                "domainValidationOptions": [
                    {
                        "domainName": domain,
                        "resourceRecordName": f"_{tag[:12]}.{domain}.",
                        "resourceRecordType": "CNAME",
                        "resourceRecordValue": f"_{tag[5:17]}.acm-validations.aws.",
                    }
                ],
            }
        elif kind == "aws:acm/certificateValidation:CertificateValidation":
            extra = {"certificateArn": _plain(inputs.get("certificateArn"))}
        elif kind == "aws:ssm/document:Document":
            extra = {"arn": f"arn:aws:ssm:{region}:{ACCOUNT_ID}:document/{name}", "name": name}
            resource_id = name
        elif kind == "aws:sns/topic:Topic":
            extra = {"arn": f"arn:aws:sns:{region}:{ACCOUNT_ID}:{name}", "name": name}
            resource_id = extra["arn"]
        elif kind == "aws:cloudwatch/logGroup:LogGroup":
            extra = {"arn": f"arn:aws:logs:{region}:{ACCOUNT_ID}:log-group:{name}", "name": name}
            resource_id = name
        elif kind == "aws:cloudwatch/metricAlarm:MetricAlarm":
            extra = {"arn": f"arn:aws:cloudwatch:{region}:{ACCOUNT_ID}:alarm:{name}", "name": name}
            resource_id = name
        elif kind == "aws:cloudwatch/eventRule:EventRule":
            extra = {"arn": f"arn:aws:events:{region}:{ACCOUNT_ID}:rule/{name}", "name": name}
            resource_id = name
        elif kind == "aws:route53/record:Record":
            record_name = _plain(inputs.get("name"))
            extra = {"fqdn": str(record_name).rstrip(".") if _known(record_name) else None}
            resource_id = f"{tag[:14].upper()}_{record_name}_{_plain(inputs.get('type'))}"
        elif kind == "random:index/randomPassword:RandomPassword":
            # Stands for the generated value; the SDK marks `result` secret on its own.
            extra = {"result": f"offline-{_digest(args.name + 'pw', 32)}"}
        elif kind.startswith("aws:imagebuilder/"):
            kind = re.sub(r"(?<!^)(?=[A-Z])", "-", kind.split(":")[-1]).lower()
            extra = {"arn": f"arn:aws:imagebuilder:{region}:{ACCOUNT_ID}:{kind}/{name}/1.0.0"}
            resource_id = extra["arn"]
        state = _to_wire({**inputs, **extra})
        return resource_id, state

    # -- invokes --
    def call(self, args: MockCallArgs) -> tuple[dict[str, Any], list[tuple[str, str]]]:
        self.engine.record_invoke(args)
        answer = self.engine.answers.get(args.token)
        if answer is None:
            known = ", ".join(sorted(self.engine.answers)) or "none"
            raise UnexpectedInvoke(
                f"the program invoked {args.token} with {args.args}; the recording engine "
                f"answers only: {known}"
            )
        region = self.engine.region_for(args.provider or "", args.args) or OFFLINE_REGION
        return answer(args.args, region), []


# --- the answers to the invokes the program makes -----------------------------------------------
InvokeAnswer = Callable[[dict[str, Any], str], dict[str, Any]]


def _availability_zones(_args: dict[str, Any], region: str) -> dict[str, Any]:
    names = [f"{region}{letter}" for letter in "abc"]
    return {"id": region, "names": names, "zoneIds": [f"use1-az{i}" for i in (1, 2, 4)]}


def _product_ami(args: dict[str, Any], region: str) -> dict[str, Any]:
    filters = {f["name"]: f["values"] for f in args.get("filters", [])}
    tags = {k.removeprefix("tag:"): v[0] for k, v in filters.items() if k.startswith("tag:")}
    image_id = f"ami-{_digest(region + str(sorted(tags.items())))}"
    return {
        "id": image_id,
        "imageId": image_id,
        "name": f"{tags.get('erpcloud:image', 'image')}-{_digest(image_id, 6)}",
        "architecture": "x86_64",
        "rootDeviceName": "/dev/sda1",
        "state": "available",
        "tags": tags,
        "ownerId": ACCOUNT_ID,
    }


def _hosted_zone(args: dict[str, Any], _region: str) -> dict[str, Any]:
    name = str(args.get("name", "")).rstrip(".")
    return {"id": "Z0ERPCLOUD00000001", "zoneId": "Z0ERPCLOUD00000001", "name": f"{name}."}


def _existing_secret(args: dict[str, Any], region: str) -> dict[str, Any]:
    name = str(args.get("name", ""))
    arn = f"arn:aws:secretsmanager:{region}:{ACCOUNT_ID}:secret:{name}-{_digest(name, 6)}"
    return {"id": arn, "arn": arn, "name": name}


def _existing_secret_version(args: dict[str, Any], region: str) -> dict[str, Any]:
    """An existing secret's value, as the deployer reads it: a recognisable placeholder (the
    recording never holds a real secret)."""
    answer = _existing_secret({"name": args.get("secretId", "")}, region)
    return {**answer, "secretId": args.get("secretId"), "secretString": "EXISTING-SECRET-VALUE"}


def _caller_identity(_args: dict[str, Any], _region: str) -> dict[str, Any]:
    return {
        "id": ACCOUNT_ID,
        "accountId": ACCOUNT_ID,
        "arn": f"arn:aws:iam::{ACCOUNT_ID}:user/erpcloud-deployer",
        "userId": "AIDAERPCLOUDOFFLINE",
    }


def _load_balancer_account(_args: dict[str, Any], region: str) -> dict[str, Any]:
    """The region's Elastic Load Balancing account (a placeholder, as every ARN here)."""
    account = str(int(_digest(f"elb:{region}", 10), 16) % 10**12).zfill(12)
    return {"id": account, "arn": f"arn:aws:iam::{account}:root", "region": region}


#: Exactly the invokes the customer program and the image program make (and nothing else).
PROGRAM_INVOKES: Final[Mapping[str, InvokeAnswer]] = {
    "aws:index/getAvailabilityZones:getAvailabilityZones": _availability_zones,
    "aws:ec2/getAmi:getAmi": _product_ami,
    "aws:route53/getZone:getZone": _hosted_zone,
    "aws:secretsmanager/getSecret:getSecret": _existing_secret,
    "aws:secretsmanager/getSecretVersion:getSecretVersion": _existing_secret_version,
    "aws:index/getCallerIdentity:getCallerIdentity": _caller_identity,
    "aws:elb/getServiceAccount:getServiceAccount": _load_balancer_account,
}


# --- the monitor --------------------------------------------------------------------------------
class RecordingMonitor(MockMonitor):
    """The SDK's mock monitor, keeping what it is told about each resource."""

    def __init__(self, engine: RecordingEngine) -> None:
        super().__init__(engine.mocks)
        self.engine = engine

    def RegisterResource(self, request: Any) -> Any:
        urn = self.make_urn(request.parent, request.type, request.name)
        if request.type == "pulumi:pulumi:Stack":
            return super().RegisterResource(request)
        inputs = rpc.deserialize_properties(request.object)
        registration = Registration(
            urn=urn,
            type=request.type,
            name=request.name,
            parent_urn=request.parent,
            provider_ref=request.provider,
            custom=bool(request.custom),
            inputs=inputs,
            protect=bool(request.protect),
            ignore_changes=tuple(request.ignoreChanges),
            dependencies=tuple(request.dependencies),
        )
        self.engine.add(registration)
        response = super().RegisterResource(request)
        registration.id = response.id
        registration.outputs = rpc.deserialize_properties(response.object)
        return response


class RecordingEngine:
    """One run's mocks, monitor and records."""

    def __init__(self, answers: Mapping[str, InvokeAnswer] = PROGRAM_INVOKES) -> None:
        self.answers = dict(answers)
        self.mocks = RecordingMocks(self)
        self.monitor = RecordingMonitor(self)
        self._lock = threading.Lock()
        self._resources: dict[str, Registration] = {}
        self._order: list[str] = []
        self.invokes: list[InvokeRecord] = []

    def add(self, registration: Registration) -> None:
        with self._lock:
            if registration.urn in self._resources:
                raise DuplicateUrn(f"two resources share the URN {registration.urn}")
            self._resources[registration.urn] = registration
            self._order.append(registration.urn)

    def record_invoke(self, args: MockCallArgs) -> None:
        with self._lock:
            self.invokes.append(InvokeRecord(args.token, dict(args.args), args.provider or ""))

    @property
    def resources(self) -> list[Registration]:
        with self._lock:
            return [self._resources[u] for u in self._order]

    def region_for(self, provider_ref: str, inputs: Mapping[str, Any]) -> str | None:
        own = inputs.get("region")
        if isinstance(own, str):
            return own
        provider = self._resources.get(provider_ref.rsplit("::", 1)[0]) if provider_ref else None
        if provider is None:
            return None
        region = provider.inputs.get("region")
        return region if isinstance(region, str) else None


def _discard(program: Callable[[], object]) -> None:
    program()  # what a program returns is not an awaitable the SDK should wait for


def _event_loop_running() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


def _quiet_unretrieved(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
    """Loop exception handler: a failed run's orphaned futures are dropped without a traceback.

    The real engine ends the process after a failed program. In-process, a future whose
    exception was never retrieved is reported when collected, and on Python 3.11 formatting
    that traceback (it parses source for its carets) from a collection that happens inside
    another ``ast.parse`` corrupts the ``ast`` module's state for the whole process.
    """
    if "never retrieved" in str(context.get("message", "")):
        logging.getLogger(__name__).debug("dropped: %s", context.get("exception"))
        return
    loop.default_exception_handler(context)


def _cancel_leftovers() -> None:
    """After a failed run: settle every RPC, output and task it left on the shared loop."""
    loop = asyncio.get_event_loop()
    leftovers: list[Any] = list(SETTINGS.rpc_manager.rpcs)
    leftovers += list(SETTINGS.outputs)
    leftovers += [task for task in asyncio.all_tasks(loop) if not task.done()]
    SETTINGS.rpc_manager.rpcs.clear()
    SETTINGS.outputs.clear()
    futures = [asyncio.ensure_future(item, loop=loop) for item in leftovers]
    for future in futures:
        if not future.done():
            future.cancel()
    if futures:
        loop.run_until_complete(asyncio.gather(*futures, return_exceptions=True))


async def _resolve(value: Any) -> tuple[Any, bool]:
    output = pulumi.Output.from_input(value)
    return await output.future(with_unknowns=True), bool(await output.is_secret())


def run_program(
    program: Callable[[], object],
    *,
    stack: str,
    project: str = "erpcloud",
    preview: bool = False,
    config: Mapping[str, str] | None = None,
    secret_keys: tuple[str, ...] = (),
    answers: Mapping[str, InvokeAnswer] = PROGRAM_INVOKES,
) -> Recording:
    """Run ``program`` under the recording engine and return what it registered and exported.

    ``preview=True`` runs it as a preview would (outputs the mocks do not supply are unknown and
    ``apply`` callbacks on them are skipped). Exceptions from the program, from an ``apply``
    callback or from an unexpected invoke propagate.
    """
    if _event_loop_running():
        raise RuntimeError(
            "run_program drives its own event loop; call it from synchronous code only"
        )
    engine = RecordingEngine(answers)
    asyncio.get_event_loop().set_exception_handler(_quiet_unretrieved)

    def body() -> tuple[dict[str, Any], frozenset[str]]:
        # A fresh context has no root stack yet; give it its own output set and lock as well.
        SETTINGS.outputs = set()
        SETTINGS.lock = threading.Lock()
        pulumi.runtime.set_all_config(dict(config or {}), list(secret_keys))
        pulumi.runtime.set_mocks(
            engine.mocks, project=project, stack=stack, preview=preview, monitor=engine.monitor
        )
        try:
            _sync_await(run_pulumi_func(lambda: _discard(program)))
        except BaseException:
            _cancel_leftovers()  # a failed run leaves registrations pending on the shared loop
            raise
        root = pulumi.runtime.get_root_resource()
        exported: dict[str, Any] = dict(getattr(root, "outputs", {}) or {})
        values: dict[str, Any] = {}
        secrets: set[str] = set()
        for key, value in exported.items():
            resolved, is_secret = _sync_await(_resolve(value))
            values[key] = resolved
            if is_secret:
                secrets.add(key)
        return values, frozenset(secrets)

    outputs, secret_outputs = contextvars.Context().run(body)
    return Recording(
        project=project,
        stack=stack,
        preview=preview,
        resources=engine.resources,
        invokes=list(engine.invokes),
        outputs=outputs,
        secret_outputs=secret_outputs,
    )

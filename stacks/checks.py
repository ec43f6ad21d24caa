"""Promise checks over an offline plan: what would be sent to AWS, checked before it is.

Each check returns the violations it finds (empty: none), naming the resource and the promise.
The tests run them on every sample customer; ``erpcloud plan`` prints them and fails on any.
"""

from __future__ import annotations

import importlib
import inspect
import json
from collections.abc import Callable, Iterator
from functools import cache
from typing import Any, Final

from erpcloud import policy
from erpcloud.model import Customer, source_address_counts
from stacks.blocks.access_logs import ACCESS_LOG_ENCRYPTION
from stacks.blocks.iam import RESOURCELESS_ACTIONS
from stacks.plan import Plan, PlannedResource, iter_inputs
from stacks.spec import REQUIRED_TAGS

PRODUCTION_TYPE: Final = "erpcloud:index:CustomerInstance"
TEST_TYPE: Final = "erpcloud:index:TestEnvironment"
#: Resource types the test environment must not have (S9: no monitoring, backups or alarms).
MONITORING_OR_BACKUP_TYPES: Final = frozenset(
    {
        "aws:cloudwatch/metricAlarm:MetricAlarm",
        "aws:cloudwatch/logGroup:LogGroup",
        "aws:cloudwatch/eventRule:EventRule",
        "aws:cloudwatch/eventTarget:EventTarget",
        "aws:sns/topic:Topic",
        "aws:ssm/document:Document",
        "aws:s3/bucket:Bucket",
        "aws:s3/bucketPolicy:BucketPolicy",
    }
)
#: Where policy documents are in a resource's inputs.
POLICY_INPUTS: Final = {
    "aws:iam/rolePolicy:RolePolicy": "policy",
    "aws:iam/policy:Policy": "policy",
    "aws:s3/bucketPolicy:BucketPolicy": "policy",
}

Check = Callable[[Plan, Customer], list[str]]


def _port_range(value: dict[str, Any]) -> tuple[int, int] | None:
    low, high = value.get("fromPort"), value.get("toPort")
    if isinstance(low, int) and isinstance(high, int):
        if value.get("ipProtocol", value.get("protocol")) in ("-1", "all", -1):
            return (0, 65535)
        return (low, high)
    if value.get("ipProtocol") in ("-1", -1):
        return (0, 65535)
    return None


def _port_ranges(resource: PlannedResource) -> Iterator[tuple[str, tuple[int, int]]]:
    inputs = resource.inputs
    own = _port_range(inputs)
    if own:
        yield "", own
    for direction in ("ingress", "egress"):
        for index, rule in enumerate(inputs.get(direction) or []):
            found = _port_range(rule) if isinstance(rule, dict) else None
            if found:
                yield f"{direction}[{index}]", found
    port = inputs.get("port")
    if isinstance(port, int):
        yield "port", (port, port)


def check_forbidden_ports(plan: Plan, _customer: Customer) -> list[str]:
    """S3: no listener, rule or security-group rule on a forbidden port (80), anywhere."""
    found = []
    for resource in plan.resources:
        for where, (low, high) in _port_ranges(resource):
            for port in policy.FORBIDDEN_PORTS:
                if low <= port <= high:
                    found.append(
                        f"{resource.name}{'.' + where if where else ''}: opens {port} (S3)"
                    )
    for listener in plan.of_type("aws:lb/listener:Listener"):
        if listener.inputs.get("protocol") != "HTTPS" or listener.inputs.get("port") != 443:
            found.append(f"{listener.name}: a listener other than HTTPS 443 (S3)")
        if listener.inputs.get("sslPolicy") != policy.ALB_TLS_POLICY:
            found.append(f"{listener.name}: TLS policy is not {policy.ALB_TLS_POLICY} (S3)")
    for group in plan.of_type("aws:ec2/securityGroup:SecurityGroup"):
        if group.inputs.get("ingress"):
            found.append(f"{group.name}: inline ingress rules (rules must be reviewed one by one)")
    return found


def check_ssh_sources(plan: Plan, customer: Customer) -> list[str]:
    """S4: the union of the sources each security group admits to SSH stays within the
    customer's allowance, the same rule as the model's (:func:`source_address_counts`): rules
    that are each narrow but together cover half the Internet count as what they add up to."""
    sources: dict[str, list[str]] = {}
    for rule in plan.of_type("aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule"):
        ports = _port_range(rule.inputs)
        if ports is None or not ports[0] <= policy.SSH_PORT <= ports[1]:
            continue
        group = str(rule.inputs.get("securityGroupId"))
        for key in ("cidrIpv4", "cidrIpv6"):
            if isinstance(rule.inputs.get(key), str):
                sources.setdefault(group, []).append(rule.inputs[key])
    if customer.ssh.allow_any_source:
        return []
    found = []
    for group, cidrs in sources.items():
        for version, covered in source_address_counts(cidrs).items():
            if covered > policy.MAX_SSH_SOURCE_ADDRESSES[version]:
                found.append(
                    f"security group {group}: SSH open to {covered} IPv{version} addresses "
                    f"({', '.join(cidrs)}), more than S4 allows without allow_any_source"
                )
    return found


#: What every bucket of a stack has beside its encryption (the promise each serves).
BUCKET_SETTINGS: Final = (
    ("aws:s3/bucketPublicAccessBlock:BucketPublicAccessBlock", "public access block"),
    ("aws:s3/bucketPolicy:BucketPolicy", "TLS-only policy"),
    ("aws:s3/bucketLifecycleConfiguration:BucketLifecycleConfiguration", "lifecycle"),
)
BUCKET_VERSIONING: Final = ("aws:s3/bucketVersioning:BucketVersioning", "versioning")


def _bucket_encryption_rules(plan: Plan, bucket: str) -> list[dict[str, Any]]:
    return [
        rule.get("applyServerSideEncryptionByDefault") or {}
        for r in plan.of_type(
            "aws:s3/bucketServerSideEncryptionConfiguration:BucketServerSideEncryptionConfiguration"
        )
        if r.inputs.get("bucket") == bucket
        for rule in r.inputs.get("rules", [])
    ]


def check_buckets(plan: Plan, customer: Customer) -> list[str]:
    """S6: backup buckets SSE-KMS with a customer key and versioned; S5: the access-log bucket
    SSE-S3, the only encryption load balancers write to; every bucket private, TLS only, with a
    lifecycle."""
    found = []
    settings_by_bucket: dict[str, set[str]] = {}
    for resource in plan.resources:
        if resource.type.startswith("aws:s3/bucket") and resource.type != "aws:s3/bucket:Bucket":
            settings_by_bucket.setdefault(str(resource.inputs.get("bucket")), set()).add(
                resource.type
            )
    for bucket in plan.of_type("aws:s3/bucket:Bucket"):
        name = str(bucket.inputs.get("bucket"))
        rules = _bucket_encryption_rules(plan, name)
        needed = list(BUCKET_SETTINGS)
        if name == customer.access_log_bucket_name:
            if not rules or any(r.get("sseAlgorithm") != ACCESS_LOG_ENCRYPTION for r in rules):
                found.append(f"bucket {name}: access logs not SSE-S3, ELB writes no other (S5)")
            promise = "S5"
        else:
            if not rules or any(
                r.get("sseAlgorithm") != "aws:kms" or not r.get("kmsMasterKeyId") for r in rules
            ):
                found.append(f"bucket {name}: not SSE-KMS with a customer key (S6)")
            needed.append(BUCKET_VERSIONING)
            promise = "S6"
        settings = settings_by_bucket.get(name, set())
        found += [
            f"bucket {name}: no {what} ({promise})" for kind, what in needed if kind not in settings
        ]
    return found


def check_encryption(plan: Plan, _customer: Customer) -> list[str]:
    """S1/S5: every volume encrypted with a customer KMS key, logs and topics encrypted,
    explicit key policies (buckets: :func:`check_buckets`)."""
    found = []
    keys = {r.name for r in plan.of_type("aws:kms/key:Key")}
    for volume in plan.of_type("aws:ebs/volume:Volume"):
        if volume.inputs.get("encrypted") is not True or not volume.inputs.get("kmsKeyId"):
            found.append(f"{volume.name}: data volume not encrypted with a customer key (S1)")
    for instance in plan.of_type("aws:ec2/instance:Instance"):
        root = instance.inputs.get("rootBlockDevice") or {}
        if root.get("encrypted") is not True or not root.get("kmsKeyId"):
            found.append(f"{instance.name}: root volume not encrypted with a customer key (S1)")
        if instance.inputs.get("ebsBlockDevices"):
            found.append(f"{instance.name}: inline EBS devices escape the checks")
    if not keys and (plan.of_type("aws:ebs/volume:Volume") or plan.of_type("aws:s3/bucket:Bucket")):
        found.append("no customer KMS key (S1)")
    for group in plan.of_type("aws:cloudwatch/logGroup:LogGroup"):
        if not group.inputs.get("kmsKeyId"):
            found.append(f"{group.name}: log group not encrypted with a customer key (S5)")
    for topic in plan.of_type("aws:sns/topic:Topic"):
        if not topic.inputs.get("kmsMasterKeyId"):
            found.append(f"{topic.name}: topic not encrypted with a customer key (S5)")
    for key in plan.of_type("aws:kms/key:Key"):
        found += [f"{key.name}: {problem}" for problem in key_policy_problems(key)]
    return found


def key_policy_problems(key: PlannedResource) -> list[str]:
    """An explicit key policy (not AWS's default), and no principal ``*`` in it (issue 13)."""
    text = key.inputs.get("policy")
    if not isinstance(text, str):
        return ["no explicit key policy (S1)"]
    problems = []
    for statement in _statements(json.loads(text)):
        principal = statement.get("Principal")
        values = principal.values() if isinstance(principal, dict) else [principal]
        if any(v == "*" or (isinstance(v, list) and "*" in v) for v in values):
            problems.append(f"key policy {statement.get('Sid')}: principal * (S1)")
    return problems


def _statements(document: dict[str, Any]) -> list[dict[str, Any]]:
    statements = document.get("Statement", [])
    return statements if isinstance(statements, list) else [statements]


def _as_list(value: Any) -> list[str]:
    return [value] if isinstance(value, str) else list(value or [])


def policy_documents(plan: Plan) -> Iterator[tuple[PlannedResource, dict[str, Any]]]:
    for resource in plan.resources:
        key = POLICY_INPUTS.get(resource.type)
        text = resource.inputs.get(key) if key else None
        if isinstance(text, str):
            yield resource, json.loads(text)


def check_least_privilege(plan: Plan, _customer: Customer) -> list[str]:
    """S1/S6: no wildcard action (no ``s3:*``); ``Resource: *`` only where AWS allows no other."""
    found = []
    for resource, document in policy_documents(plan):
        for statement in _statements(document):
            if statement.get("Effect") != "Allow":
                continue
            actions = _as_list(statement.get("Action"))
            resources = _as_list(statement.get("Resource"))
            sid = statement.get("Sid", "?")
            for action in actions:
                if action == "*" or action.endswith(":*"):
                    found.append(f"{resource.name} {sid}: wildcard action {action}")
            if "*" in resources or any(r.endswith(":*:*") for r in resources):
                extra = set(actions) - RESOURCELESS_ACTIONS
                if extra:
                    found.append(f"{resource.name} {sid}: Resource * for {sorted(extra)}")
                if "cloudwatch:PutMetricData" in actions and not statement.get("Condition"):
                    found.append(f"{resource.name} {sid}: PutMetricData without a namespace")
            if "NotAction" in statement or "NotResource" in statement:
                found.append(f"{resource.name} {sid}: NotAction/NotResource in an Allow")
    return found


@cache
def _takes_tags(token: str) -> bool:
    package, module, kind = token.split(":")
    if package != "aws":
        return False
    python_module = (
        "pulumi_aws" if module.startswith("index/") else f"pulumi_aws.{module.split('/')[0]}"
    )
    cls = getattr(importlib.import_module(python_module), kind, None)
    if cls is None:
        raise LookupError(f"no pulumi_aws class for {token}")
    return "tags" in inspect.signature(cls._internal_init).parameters


def check_tags(plan: Plan, customer: Customer) -> list[str]:
    """Tags on everything: customer, environment, partner, promise (and right values)."""
    found = []
    for resource in plan.resources:
        if not resource.custom or resource.is_provider or not _takes_tags(resource.type):
            continue
        tags = resource.inputs.get("tags") or {}
        missing = [t for t in REQUIRED_TAGS if not tags.get(t)]
        if missing:
            found.append(f"{resource.name}: missing tags {missing}")
            continue
        environment = "test" if resource.component_type == TEST_TYPE else "production"
        if (
            tags["erpcloud:customer"] != customer.id
            or tags["erpcloud:partner"] != customer.partner.id
            or tags["erpcloud:environment"] != environment
        ):
            found.append(f"{resource.name}: tags name another customer/partner/environment")
    return found


def check_structure(plan: Plan, customer: Customer) -> list[str]:
    """Children parented to their component and named after it; explicit providers (S10)."""
    found = []
    providers = {r.name: r for r in plan.resources if r.is_provider}
    regions = {r.region for r in providers.values()}
    if regions != {customer.region, customer.backup_copy_region}:
        found.append(f"provider regions {sorted(map(str, regions))} (S10)")
    for resource in plan.resources:
        if resource.is_provider or not resource.custom:
            continue
        if resource.component is None or resource.parent != resource.component:
            found.append(f"{resource.name}: not a direct child of a component")
        elif not resource.name.startswith(f"{resource.component}-"):
            found.append(f"{resource.name}: not named after its component {resource.component}")
        if resource.type.startswith("aws:") and resource.provider not in providers:
            found.append(f"{resource.name}: not managed through an explicit provider (S10)")
    return found


def check_test_environment(plan: Plan, _customer: Customer) -> list[str]:
    """S9: the test environment is at most half of production, without monitoring or backups."""
    found = []
    test = [r for r in plan.resources if r.component_type == TEST_TYPE]
    prod = [r for r in plan.resources if r.component_type == PRODUCTION_TYPE]
    for resource in test:
        if resource.type in MONITORING_OR_BACKUP_TYPES:
            found.append(f"{resource.name}: the test environment has no {resource.type} (S9)")
    test_instances = [r for r in test if r.type == "aws:ec2/instance:Instance"]
    prod_instances = [r for r in prod if r.type == "aws:ec2/instance:Instance"]
    test_volumes = [r for r in test if r.type == "aws:ebs/volume:Volume"]
    prod_volumes = [r for r in prod if r.type == "aws:ebs/volume:Volume"]
    if len(test_instances) != 1 or len(prod_instances) != 1:
        return [*found, "expected one production and one test instance"]
    small = policy.INSTANCE_TYPES[test_instances[0].inputs["instanceType"]]
    big = policy.INSTANCE_TYPES[prod_instances[0].inputs["instanceType"]]
    ratio = policy.TEST_ENV_MAX_RATIO
    if small.vcpu > big.vcpu * ratio or small.memory_gib > big.memory_gib * ratio:
        found.append(f"test instance {small.name} is more than {ratio:.0%} of {big.name} (S9)")
    if test_instances[0].inputs.get("monitoring"):
        found.append("the test instance has detailed monitoring (S9)")
    if sum(v.inputs["size"] for v in test_volumes) > ratio * sum(
        v.inputs["size"] for v in prod_volumes
    ):
        found.append(f"test volumes are more than {ratio:.0%} of production's (S9)")
    return found


CHECKS: Final[tuple[Check, ...]] = (
    check_forbidden_ports,
    check_ssh_sources,
    check_encryption,
    check_buckets,
    check_least_privilege,
    check_tags,
    check_structure,
    check_test_environment,
)


def run_checks(plan: Plan, customer: Customer) -> list[str]:
    """Every violation every check finds in ``plan`` (empty when the plan keeps the promises)."""
    return [violation for check in CHECKS for violation in check(plan, customer)]


def leaf_inputs(plan: Plan) -> Iterator[tuple[PlannedResource, str, Any]]:
    for resource in plan.resources:
        for path, value in iter_inputs(resource):
            yield resource, path, value

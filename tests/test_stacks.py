"""The customer program (issue 4) under the recording engine: what would be sent to AWS.

Every sample customer runs as a deployment (``preview=False``) and as a preview
(``preview=True``, where outputs the mocks do not supply stay unknown and ``apply`` callbacks
on them are skipped). Assertions read the recorded inputs, never values computed inside an
``apply``. This is the SDK's mock engine: no cloud, and not a Pulumi preview.
"""

from __future__ import annotations

import importlib.util
import json
import re
import runpy
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pulumi
import pulumi_aws as aws
import pytest
import yaml

from backups.gapcheck import GapCheckResult, Outcome, metric_data
from erpcloud import policy
from erpcloud.fleet import parse_customer
from erpcloud.model import Customer, Environment, SecretSource
from erpcloud.render import (
    METRICS_NAMESPACE,
    HostLayout,
    host_files,
    render_cloudwatch_agent_config,
    render_user_data,
    secret_name,
)
from localtarget.s3 import LocalAws
from stacks.blocks.elasticity import grow_document
from stacks.blocks.iam import BACKUP_BUCKET_ACTIONS, BACKUP_OBJECT_ACTIONS
from stacks.blocks.secrets import SecretSourceError, SecretValues
from stacks.checks import (
    PRODUCTION_TYPE,
    TEST_TYPE,
    check_buckets,
    check_encryption,
    check_forbidden_ports,
    check_least_privilege,
    check_ssh_sources,
    run_checks,
)
from stacks.plan import Plan, plan_from_recording, record_customer
from stacks.program import StackInputs, deploy
from stacks.recording import (
    ACCOUNT_ID,
    DuplicateUrn,
    Recording,
    Registration,
    UnexpectedInvoke,
    run_program,
)
from stacks.spec import REQUIRED_TAGS, decompress_user_data, next_size_up

from .conftest import CUSTOMERS, REPO_ROOT

SENTINEL = "ACTIVATION-KEY-SENTINEL-7f3e"
PREVIEW_MODES = [False, True]
SAMPLE_IDS = sorted(p.stem for p in CUSTOMERS.glob("*.yaml"))
CASES = [(c, preview) for c in SAMPLE_IDS for preview in PREVIEW_MODES]
CASE_IDS = [f"{c}-{'preview' if p else 'up'}" for c, p in CASES]
ENVIRONMENTS = [(PRODUCTION_TYPE, Environment.PRODUCTION), (TEST_TYPE, Environment.TEST)]


def sentinel_inputs(customer: Customer) -> StackInputs:
    """What a real stack reads from its secret config, with a recognisable activation key."""
    supplied = customer.secrets.activation_key.source in (
        SecretSource.PULUMI_CONFIG,
        SecretSource.ENV,
    )
    key = pulumi.Output.secret(SENTINEL) if supplied else None
    return StackInputs(secret_values=SecretValues(activation_key=key))


def record(customer: Customer, preview: bool = False) -> Recording:
    return record_customer(customer, preview, inputs=lambda: sentinel_inputs(customer))


@pytest.fixture(scope="module")
def runs(sample_fleet: dict[str, Customer]) -> dict[tuple[str, bool], Recording]:
    """The fleet test: every sample customer, deployed and previewed."""
    assert sorted(sample_fleet) == SAMPLE_IDS
    return {(c, p): record(sample_fleet[c], p) for c, p in CASES}


@pytest.fixture(scope="module")
def plans(runs: dict[tuple[str, bool], Recording]) -> dict[tuple[str, bool], Plan]:
    return {key: plan_from_recording(key[0], recording) for key, recording in runs.items()}


def in_component(recording: Recording, token: str, component_type: str) -> list[Registration]:
    by_urn = recording.by_urn()
    return [
        r
        for r in recording.of_type(token)
        if r.parent_urn in by_urn and by_urn[r.parent_urn].type == component_type
    ]


def one(recording: Recording, token: str, component_type: str) -> Registration:
    found = in_component(recording, token, component_type)
    assert len(found) == 1, f"{len(found)} {token} in {component_type}"
    return found[0]


def statements(resource: Registration) -> dict[str, dict[str, Any]]:
    document = json.loads(resource.inputs["policy"])
    return {s["Sid"]: s for s in document["Statement"]}


def as_list(value: str | list[str]) -> list[str]:
    return [value] if isinstance(value, str) else value


def strings_outside_secrets(value: Any, path: str = "") -> Iterator[tuple[str, str]]:
    """Every plain string in a raw input tree, skipping what is wrapped as a Pulumi secret."""
    if pulumi.runtime.rpc.is_rpc_secret(value):
        return
    if isinstance(value, dict):
        for key, item in value.items():
            yield from strings_outside_secrets(item, f"{path}.{key}")
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from strings_outside_secrets(item, f"{path}[{index}]")
    elif isinstance(value, str):
        yield path, value


# --- the fleet ----------------------------------------------------------------------------------
@pytest.mark.parametrize(("customer_id", "preview"), CASES, ids=CASE_IDS)
def test_every_sample_customer_passes_every_promise_check(
    customer_id: str, preview: bool, plans: dict[tuple[str, bool], Plan], sample_fleet
):
    plan = plans[(customer_id, preview)]
    assert run_checks(plan, sample_fleet[customer_id]) == []
    kinds = {r.component_type for r in plan.resources if r.component_type}
    assert kinds == {PRODUCTION_TYPE, TEST_TYPE}


@pytest.mark.parametrize(("customer_id", "preview"), CASES, ids=CASE_IDS)
def test_children_are_parented_to_their_component_and_named_after_it(
    customer_id: str, preview: bool, runs: dict[tuple[str, bool], Recording]
):
    recording = runs[(customer_id, preview)]
    by_urn = recording.by_urn()
    components = {r.name: r for r in recording.resources if not r.custom}
    assert components[customer_id].type == PRODUCTION_TYPE
    assert components[f"{customer_id}-test"].type == TEST_TYPE
    assert len(components) == 2
    for component in components.values():
        assert component.parent_urn.endswith(f"::erpcloud-{customer_id}")  # the stack itself
    children = [r for r in recording.resources if r.custom and not r.is_provider]
    assert len(children) > 80
    for resource in children:
        parent = by_urn[resource.parent_urn]
        assert not parent.custom, f"{resource.name} is parented to {parent.name}"
        assert resource.name.startswith(f"{parent.name}-")


@pytest.mark.parametrize(("customer_id", "preview"), CASES, ids=CASE_IDS)
def test_explicit_providers_for_the_primary_and_the_copy_region(
    customer_id: str, preview: bool, runs, sample_fleet
):
    """S10: every AWS resource goes through one of the two explicit providers; S6: the copy
    region is another region."""
    recording = runs[(customer_id, preview)]
    customer = sample_fleet[customer_id]
    providers = {r.urn: r for r in recording.resources if r.is_provider}
    regions = {p.name: p.inputs["region"] for p in providers.values()}
    assert regions == {
        f"{customer_id}-primary": customer.region,
        f"{customer_id}-copy": customer.backup_copy_region,
    }
    assert customer.backup_copy_region != customer.region
    for resource in recording.resources:
        if resource.type.startswith("aws:"):
            assert resource.provider_urn in providers, resource.name
    copy_provider = next(u for u, p in providers.items() if p.name.endswith("-copy"))
    in_copy = {r.name for r in recording.resources if r.provider_urn == copy_provider}
    assert in_copy == {
        f"{customer_id}-copy-key",
        f"{customer_id}-copy-key-alias",
        f"{customer_id}-backup-copy",
        *(
            f"{customer_id}-backup-copy-{part}"
            for part in ("versioning", "encryption", "public-access", "tls-only", "lifecycle")
        ),
    }


# --- S3: HTTPS only ------------------------------------------------------------------------------
@pytest.mark.parametrize(("customer_id", "preview"), CASES, ids=CASE_IDS)
def test_no_port_80_anywhere_and_https_only_endpoints(
    customer_id: str, preview: bool, runs, sample_fleet
):
    recording = runs[(customer_id, preview)]
    customer = sample_fleet[customer_id]
    for resource in recording.resources:
        for key in ("port", "fromPort", "toPort"):
            assert resource.inputs.get(key) != 80, resource.name
    assert recording.of_type("aws:lb/listenerRule:ListenerRule") == []
    for component_type, _environment in ENVIRONMENTS:
        listener = one(recording, "aws:lb/listener:Listener", component_type)
        assert (listener.inputs["port"], listener.inputs["protocol"]) == (443, "HTTPS")
        assert listener.inputs["sslPolicy"] == policy.ALB_TLS_POLICY
        group = one(recording, "aws:lb/targetGroup:TargetGroup", component_type)
        assert (group.inputs["port"], group.inputs["protocol"]) == (policy.APP_PORT, "HTTPS")
        groups = {
            g.name.rsplit("-", 2)[-2]: g
            for g in in_component(recording, "aws:ec2/securityGroup:SecurityGroup", component_type)
        }
        assert set(groups) == {"alb", "instance"}
        assert all("ingress" not in g.inputs and "egress" not in g.inputs for g in groups.values())
        ingress = in_component(
            recording, "aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule", component_type
        )
        rules = {
            (
                "alb" if r.inputs["securityGroupId"] == groups["alb"].id else "instance",
                r.inputs["fromPort"],
                r.inputs["toPort"],
                r.inputs.get("cidrIpv4") or r.inputs.get("cidrIpv6"),
                r.inputs.get("referencedSecurityGroupId"),
            )
            for r in ingress
        }
        assert rules == {
            ("alb", 443, 443, "0.0.0.0/0", None),
            ("instance", policy.APP_PORT, policy.APP_PORT, None, groups["alb"].id),
        } | {("instance", 22, 22, cidr, None) for cidr in customer.ssh.allowed_cidrs}
    defaults = recording.of_type("aws:ec2/defaultSecurityGroup:DefaultSecurityGroup")
    assert [(d.inputs["ingress"], d.inputs["egress"]) for d in defaults] == [([], [])]


@pytest.mark.must_fail
def test_a_program_that_opens_port_80_is_caught(sample_fleet):
    """The checks are real: the real program plus one port-80 rule is reported, and fails."""
    customer = sample_fleet["acme-retail"]

    def violating_program() -> None:
        stack = deploy(customer, sentinel_inputs(customer))
        aws.vpc.SecurityGroupIngressRule(
            f"{customer.id}-http",
            security_group_id="sg-0123",
            ip_protocol="tcp",
            from_port=80,
            to_port=80,
            cidr_ipv4="0.0.0.0/0",
            opts=pulumi.ResourceOptions(parent=stack.production),
        )

    plan = plan_from_recording(customer.id, run_program(violating_program, stack=customer.id))
    assert check_forbidden_ports(plan, customer) == [f"{customer.id}-http: opens 80 (S3)"]
    violations = run_checks(plan, customer)
    assert f"{customer.id}-http: opens 80 (S3)" in violations
    # and the other checks noticed the stray rule too: no provider, no tags
    assert any("explicit provider" in v for v in violations)
    assert any("missing tags" in v for v in violations)


def test_ssh_rules_that_add_up_to_the_internet_are_caught(sample_fleet):
    """S4, issue 13: each rule is a half, together they are everything; the plan's check
    counts the union, for IPv4 and IPv6, as the model does for a customer file."""
    customer = sample_fleet["acme-retail"]
    halves = ("0.0.0.0/1", "128.0.0.0/1", "::/1", "8000::/1")

    def program_with_halves() -> None:
        stack = deploy(customer, sentinel_inputs(customer))
        for index, cidr in enumerate(halves):
            family = "cidr_ipv6" if ":" in cidr else "cidr_ipv4"
            aws.vpc.SecurityGroupIngressRule(
                f"{customer.id}-half-{index}",
                security_group_id="sg-0123",
                ip_protocol="tcp",
                from_port=22,
                to_port=22,
                opts=pulumi.ResourceOptions(parent=stack.production),
                **{family: cidr},
            )

    plan = plan_from_recording(customer.id, run_program(program_with_halves, stack=customer.id))
    found = check_ssh_sources(plan, customer)
    assert len(found) == 2, found
    assert "SSH open to 4294967296 IPv4 addresses" in found[0]
    assert f"SSH open to {2**128} IPv6 addresses" in found[1]
    # The real program, customer networks only: nothing to report.
    real = plan_from_recording(
        customer.id,
        run_program(lambda: deploy(customer, sentinel_inputs(customer)), stack=customer.id),
    )
    assert check_ssh_sources(real, customer) == []


def test_keys_have_explicit_policies_and_logs_and_topics_are_encrypted(sample_fleet):
    """Issue 13 item 5: the real program passes; an open key policy, a plain topic and a plain
    log group added to it are each caught."""
    customer = sample_fleet["acme-retail"]
    real = plan_from_recording(
        customer.id,
        run_program(lambda: deploy(customer, sentinel_inputs(customer)), stack=customer.id),
    )
    assert check_encryption(real, customer) == []
    (key, _copy) = real.of_type("aws:kms/key:Key")
    logs_statement = next(
        s for s in json.loads(key.inputs["policy"])["Statement"] if "logs." in str(s["Principal"])
    )
    assert logs_statement["Condition"]["ArnEquals"]["kms:EncryptionContext:aws:logs:arn"].endswith(
        f":log-group:/erpcloud/{customer.id}"
    )

    def weakened() -> None:
        stack = deploy(customer, sentinel_inputs(customer))
        opts = pulumi.ResourceOptions(parent=stack.production)
        aws.sns.Topic(f"{customer.id}-plain-topic", opts=opts)
        aws.cloudwatch.LogGroup(f"{customer.id}-plain-logs", opts=opts)
        open_policy = {
            "Version": "2012-10-17",
            "Statement": [{"Sid": "Open", "Effect": "Allow", "Principal": "*",
                           "Action": "kms:*", "Resource": "*"}],
        }  # fmt: skip
        aws.kms.Key(f"{customer.id}-open-key", policy=json.dumps(open_policy), opts=opts)

    plan = plan_from_recording(customer.id, run_program(weakened, stack=customer.id))
    assert sorted(check_encryption(plan, customer)) == [
        f"{customer.id}-open-key: key policy Open: principal * (S1)",
        f"{customer.id}-plain-logs: log group not encrypted with a customer key (S5)",
        f"{customer.id}-plain-topic: topic not encrypted with a customer key (S5)",
    ]


@pytest.mark.parametrize("preview", PREVIEW_MODES)
def test_dns_alias_to_the_load_balancer_and_a_dns_validated_certificate(
    preview: bool, runs, sample_fleet
):
    customer = sample_fleet["acme-retail"]
    recording = runs[(customer.id, preview)]
    for component_type, host in (
        (PRODUCTION_TYPE, customer.url_host),
        (TEST_TYPE, customer.test_url_host),
    ):
        certificate = one(recording, "aws:acm/certificate:Certificate", component_type)
        assert certificate.inputs["domainName"] == host
        assert certificate.inputs["validationMethod"] == "DNS"
        records = {
            r.inputs["type"]: r
            for r in in_component(recording, "aws:route53/record:Record", component_type)
        }
        challenge = certificate.outputs["domainValidationOptions"][0]
        assert records["CNAME"].inputs["name"] == challenge["resourceRecordName"]
        assert records["CNAME"].inputs["records"] == [challenge["resourceRecordValue"]]
        validation = one(
            recording, "aws:acm/certificateValidation:CertificateValidation", component_type
        )
        assert validation.inputs["certificateArn"] == certificate.id
        assert validation.inputs["validationRecordFqdns"] == [records["CNAME"].outputs["fqdn"]]
        balancer = one(recording, "aws:lb/loadBalancer:LoadBalancer", component_type)
        assert records["A"].inputs["name"] == host
        assert records["A"].inputs["aliases"] == [
            {
                "name": balancer.outputs["dnsName"],
                "zoneId": balancer.outputs["zoneId"],
                "evaluateTargetHealth": True,
            }
        ]
        assert balancer.inputs["internal"] is False
        assert balancer.inputs["dropInvalidHeaderFields"] is True
        listener = one(recording, "aws:lb/listener:Listener", component_type)
        assert listener.inputs["certificateArn"] == certificate.id  # taken from the validation


# --- S1: the instance -----------------------------------------------------------------------------
@pytest.mark.parametrize(("customer_id", "preview"), CASES, ids=CASE_IDS)
def test_instances_imdsv2_encrypted_volumes_and_rendered_user_data(
    customer_id: str, preview: bool, runs, sample_fleet
):
    recording = runs[(customer_id, preview)]
    customer = sample_fleet[customer_id]
    keys = {r.name: r for r in recording.of_type("aws:kms/key:Key")}
    primary_key = keys[f"{customer_id}-key"]
    assert {k.inputs["enableKeyRotation"] for k in keys.values()} == {True}
    amis = {i.args["owners"][0] for i in recording.invokes if i.token == "aws:ec2/getAmi:getAmi"}
    assert amis == {"self"}
    sizing = {Environment.PRODUCTION: customer.production, Environment.TEST: customer.test_sizing}
    for component_type, environment in ENVIRONMENTS:
        instance = one(recording, "aws:ec2/instance:Instance", component_type)
        inputs = instance.inputs
        assert inputs["metadataOptions"]["httpTokens"] == "required"
        assert inputs["metadataOptions"]["httpEndpoint"] == "enabled"
        root = inputs["rootBlockDevice"]
        assert root["encrypted"] is True
        assert root["kmsKeyId"] == primary_key.outputs["arn"]
        assert root["volumeSize"] == policy.ROOT_VOLUME_GIB
        assert inputs["instanceType"] == sizing[environment].instance_type
        assert inputs["ami"].startswith("ami-")
        user_data = decompress_user_data(inputs["userDataBase64"])
        assert user_data == render_user_data(customer, environment)
        assert SENTINEL not in user_data
        assert "user_data" not in inputs and "userData" not in inputs
        volume = one(recording, "aws:ebs/volume:Volume", component_type)
        assert volume.inputs["encrypted"] is True
        assert volume.inputs["kmsKeyId"] == primary_key.outputs["arn"]
        assert volume.inputs["size"] == sizing[environment].data_volume_gib
        attachment = one(recording, "aws:ec2/volumeAttachment:VolumeAttachment", component_type)
        assert attachment.inputs["volumeId"] == volume.id
        assert attachment.inputs["instanceId"] == instance.id
    production_volume = one(recording, "aws:ebs/volume:Volume", PRODUCTION_TYPE)
    assert production_volume.protect and production_volume.ignore_changes == ("size",)
    assert primary_key.protect


@pytest.mark.parametrize(("customer_id", "preview"), CASES, ids=CASE_IDS)
def test_test_environment_is_derived_at_most_half_without_monitoring_or_backups(
    customer_id: str, preview: bool, runs, sample_fleet
):
    """S9, on what would be sent to AWS (not on the model's arithmetic)."""
    recording = runs[(customer_id, preview)]
    customer = sample_fleet[customer_id]
    prod = one(recording, "aws:ec2/instance:Instance", PRODUCTION_TYPE).inputs
    test = one(recording, "aws:ec2/instance:Instance", TEST_TYPE).inputs
    big, small = (
        policy.INSTANCE_TYPES[prod["instanceType"]],
        policy.INSTANCE_TYPES[test["instanceType"]],
    )
    assert small.vcpu <= big.vcpu * policy.TEST_ENV_MAX_RATIO
    assert small.memory_gib <= big.memory_gib * policy.TEST_ENV_MAX_RATIO
    assert test["instanceType"] == customer.test_sizing.instance_type
    prod_size = one(recording, "aws:ebs/volume:Volume", PRODUCTION_TYPE).inputs["size"]
    test_size = one(recording, "aws:ebs/volume:Volume", TEST_TYPE).inputs["size"]
    assert test_size <= prod_size * policy.TEST_ENV_MAX_RATIO
    assert (prod["monitoring"], test["monitoring"]) == (True, False)
    test_types = {
        r.type for r in recording.resources if r.parent_urn.endswith(f"::{customer_id}-test")
    }
    assert not test_types & {
        "aws:cloudwatch/metricAlarm:MetricAlarm",
        "aws:sns/topic:Topic",
        "aws:s3/bucket:Bucket",
        "aws:cloudwatch/logGroup:LogGroup",
        "aws:cloudwatch/eventRule:EventRule",
        "aws:ssm/document:Document",
    }
    grants = statements(one(recording, "aws:iam/rolePolicy:RolePolicy", TEST_TYPE))
    actions = {a for s in grants.values() for a in as_list(s["Action"])}
    assert actions == {
        "secretsmanager:GetSecretValue",
        "secretsmanager:DescribeSecret",
        "kms:Decrypt",
    }


# --- S5: access logs -----------------------------------------------------------------------------
@pytest.mark.parametrize(("customer_id", "preview"), CASES, ids=CASE_IDS)
def test_both_load_balancers_log_access_to_a_private_sse_s3_bucket(
    customer_id: str, preview: bool, runs, sample_fleet
):
    """Issue 13 item 5: each endpoint logs under its environment's prefix; ELB delivers only
    there; SSE-S3 (the only encryption ELB writes to), private, TLS only, kept 90 days."""
    recording = runs[(customer_id, preview)]
    customer = sample_fleet[customer_id]
    name = customer.access_log_bucket_name
    (bucket,) = [b for b in recording.of_type("aws:s3/bucket:Bucket") if b.inputs["bucket"] == name]
    assert recording.region_of(bucket) == customer.region

    def setting(token: str) -> Registration:
        (found,) = [r for r in recording.of_type(token) if r.inputs["bucket"] == name]
        return found

    by_component = {
        environment: one(recording, "aws:lb/loadBalancer:LoadBalancer", component)
        for component, environment in ENVIRONMENTS
    }
    bucket_policy = setting("aws:s3/bucketPolicy:BucketPolicy")
    for environment, balancer in by_component.items():
        assert balancer.inputs["accessLogs"] == {
            "bucket": name,
            "prefix": environment.value,
            "enabled": True,
        }
        assert bucket_policy.urn in balancer.dependencies  # the policy first, or ELB refuses
    (elb_account,) = [i for i in recording.invokes if i.token.endswith("getServiceAccount")]
    provider = recording.by_urn()[elb_account.provider_ref.rsplit("::", 1)[0]]
    assert provider.inputs["region"] == customer.region
    delivery = statements(bucket_policy)["LoadBalancerLogDelivery"]
    # The region's Elastic Load Balancing account (placeholder digits offline), not ours.
    principal = delivery["Principal"]["AWS"]
    assert re.fullmatch(r"arn:aws:iam::\d{12}:root", principal) and ACCOUNT_ID not in principal
    assert delivery["Action"] == ["s3:PutObject"]
    assert sorted(delivery["Resource"]) == [
        f"{bucket.outputs['arn']}/{environment.value}/AWSLogs/{ACCOUNT_ID}/*"
        for environment in sorted(Environment, key=lambda e: e.value)
    ]
    assert statements(bucket_policy)["DenyInsecureTransport"]["Effect"] == "Deny"
    sse = setting(
        "aws:s3/bucketServerSideEncryptionConfiguration:BucketServerSideEncryptionConfiguration"
    )
    assert sse.inputs["rules"] == [
        {"applyServerSideEncryptionByDefault": {"sseAlgorithm": "AES256"}}
    ]
    ownership = setting("aws:s3/bucketOwnershipControls:BucketOwnershipControls")
    assert ownership.inputs["rule"] == {"objectOwnership": "BucketOwnerEnforced"}
    block = setting("aws:s3/bucketPublicAccessBlock:BucketPublicAccessBlock").inputs
    assert all(block[k] is True for k in ("blockPublicAcls", "blockPublicPolicy"))
    (rule,) = setting("aws:s3/bucketLifecycleConfiguration:BucketLifecycleConfiguration").inputs[
        "rules"
    ]
    assert rule["expiration"] == {"days": policy.ACCESS_LOG_RETENTION_DAYS}


def test_a_bucket_without_its_settings_is_caught(sample_fleet):
    """check_buckets: a stray bucket with nothing set, and a KMS-encrypted access-log bucket."""
    customer = sample_fleet["acme-retail"]

    def weakened() -> None:
        stack = deploy(customer, sentinel_inputs(customer))
        opts = pulumi.ResourceOptions(parent=stack.production)
        aws.s3.Bucket(f"{customer.id}-stray", bucket="erpcloud-stray", opts=opts)

    plan = plan_from_recording(customer.id, run_program(weakened, stack=customer.id))
    assert sorted(check_buckets(plan, customer)) == [
        "bucket erpcloud-stray: no TLS-only policy (S6)",
        "bucket erpcloud-stray: no lifecycle (S6)",
        "bucket erpcloud-stray: no public access block (S6)",
        "bucket erpcloud-stray: no versioning (S6)",
        "bucket erpcloud-stray: not SSE-KMS with a customer key (S6)",
    ]
    logs = customer.access_log_bucket_name
    for resource in plan.resources:
        if resource.inputs.get("bucket") == logs and "Encryption" in resource.type:
            resource.inputs["rules"] = [
                {"applyServerSideEncryptionByDefault": {"sseAlgorithm": "aws:kms"}}
            ]
    assert f"bucket {logs}: access logs not SSE-S3, ELB writes no other (S5)" in check_buckets(
        plan, customer
    )


# --- S6/S7: backups -------------------------------------------------------------------------------
@pytest.mark.parametrize(("customer_id", "preview"), CASES, ids=CASE_IDS)
def test_backup_buckets_in_two_regions_encrypted_versioned_private_tls_only(
    customer_id: str, preview: bool, runs, sample_fleet
):
    recording = runs[(customer_id, preview)]
    customer = sample_fleet[customer_id]
    buckets = {b.inputs["bucket"]: b for b in recording.of_type("aws:s3/bucket:Bucket")}
    primary_name, copy_name = customer.backup_bucket_names
    assert set(buckets) == {primary_name, copy_name, customer.access_log_bucket_name}
    del buckets[customer.access_log_bucket_name]  # S5, below
    assert recording.region_of(buckets[primary_name]) == customer.region
    assert recording.region_of(buckets[copy_name]) == customer.backup_copy_region
    keys_by_region = {
        recording.region_of(k): k.outputs["arn"] for k in recording.of_type("aws:kms/key:Key")
    }
    for name, bucket in buckets.items():
        assert bucket.protect and bucket.inputs["forceDestroy"] is False
        region = recording.region_of(bucket)

        def setting(
            token: str, bucket_name: str = name, where: str | None = region
        ) -> Registration:
            found = [r for r in recording.of_type(token) if r.inputs["bucket"] == bucket_name]
            assert len(found) == 1, token
            assert recording.region_of(found[0]) == where
            return found[0]

        sse = setting(
            "aws:s3/bucketServerSideEncryptionConfiguration:BucketServerSideEncryptionConfiguration"
        ).inputs["rules"]
        assert sse == [
            {
                "applyServerSideEncryptionByDefault": {
                    "sseAlgorithm": "aws:kms",
                    "kmsMasterKeyId": keys_by_region[region],
                },
                "bucketKeyEnabled": True,
            }
        ]
        versioning = setting("aws:s3/bucketVersioning:BucketVersioning").inputs
        assert versioning["versioningConfiguration"]["status"] == "Enabled"
        block = setting("aws:s3/bucketPublicAccessBlock:BucketPublicAccessBlock").inputs
        assert all(
            block[k] is True
            for k in (
                "blockPublicAcls",
                "blockPublicPolicy",
                "ignorePublicAcls",
                "restrictPublicBuckets",
            )
        )
        document = statements(setting("aws:s3/bucketPolicy:BucketPolicy"))
        insecure = document["DenyInsecureTransport"]
        assert insecure["Effect"] == "Deny" and insecure["Principal"] == {"AWS": "*"}
        assert insecure["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}
        assert sorted(insecure["Resource"]) == [bucket.outputs["arn"], f"{bucket.outputs['arn']}/*"]
        assert document["DenyOldTls"]["Condition"] == {"NumericLessThan": {"s3:TlsVersion": "1.2"}}
        (rule,) = setting(
            "aws:s3/bucketLifecycleConfiguration:BucketLifecycleConfiguration"
        ).inputs["rules"]
        noncurrent = rule["noncurrentVersionExpiration"]["noncurrentDays"]
        assert noncurrent > policy.BACKUP_RETENTION_DAYS  # a safety net beyond, never inside
        assert "days" not in rule.get("expiration", {})  # current backups: pgBackRest's call
        assert rule["abortIncompleteMultipartUpload"]["daysAfterInitiation"] > 0


# --- IAM ------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("customer_id", "preview"), CASES, ids=CASE_IDS)
def test_instance_role_is_least_privilege(
    customer_id: str, preview: bool, runs, plans, sample_fleet
):
    recording = runs[(customer_id, preview)]
    customer = sample_fleet[customer_id]
    assert check_least_privilege(plans[(customer_id, preview)], customer) == []
    role = recording.named(f"{customer_id}-role")
    trust = json.loads(role.inputs["assumeRolePolicy"])["Statement"]
    assert [s["Principal"] for s in trust] == [{"Service": "ec2.amazonaws.com"}]
    grants = statements(recording.named(f"{customer_id}-role-policy"))
    bucket_arns = sorted(
        b.outputs["arn"]
        for b in recording.of_type("aws:s3/bucket:Bucket")
        if b.inputs["bucket"] in customer.backup_bucket_names  # not the access logs (ELB's)
    )
    assert sorted(as_list(grants["ListOwnBackupBuckets"]["Action"])) == sorted(
        BACKUP_BUCKET_ACTIONS
    )
    assert sorted(as_list(grants["ListOwnBackupBuckets"]["Resource"])) == bucket_arns
    assert sorted(as_list(grants["ReadWriteOwnBackups"]["Action"])) == sorted(BACKUP_OBJECT_ACTIONS)
    assert sorted(as_list(grants["ReadWriteOwnBackups"]["Resource"])) == [
        f"{a}/*" for a in bucket_arns
    ]
    s3_actions = {a for s in grants.values() for a in as_list(s["Action"]) if a.startswith("s3:")}
    assert s3_actions == set(BACKUP_BUCKET_ACTIONS) | set(BACKUP_OBJECT_ACTIONS)
    created = {
        r.inputs["name"]: r.outputs["arn"]
        for r in recording.of_type("aws:secretsmanager/secret:Secret")
    }
    test_arns = {arn for name, arn in created.items() if f"/{customer_id}/test/" in name}
    production_arns = set(created.values()) - test_arns
    if customer.secrets.activation_key.source is SecretSource.SECRETS_MANAGER:
        (lookup,) = [i for i in recording.invokes if i.token.endswith("getSecret")]
        assert lookup.args["name"] == customer.secrets.activation_key.name
        assert len(production_arns) == 1
    else:
        assert len(production_arns) == 2
    readable = set(as_list(grants["ReadOwnSecrets"]["Resource"]))
    assert production_arns <= readable and len(readable) == 2
    # Issue 13: the test environment reads its own two secrets, and nothing of production's.
    test_grants = statements(recording.named(f"{customer_id}-test-role-policy"))
    test_readable = set(as_list(test_grants["ReadOwnSecrets"]["Resource"]))
    assert test_readable == test_arns and len(test_arns) == 2
    assert not test_readable & readable
    metrics = grants["PublishOwnMetrics"]
    assert metrics["Resource"] == "*" and metrics["Action"] == ["cloudwatch:PutMetricData"]
    assert metrics["Condition"] == {"StringEquals": {"cloudwatch:namespace": METRICS_NAMESPACE}}
    for statement in grants.values():
        if statement["Resource"] != "*":
            assert all(arn.startswith("arn:aws:") for arn in as_list(statement["Resource"]))


def test_the_privilege_check_fails_on_a_wide_policy(sample_fleet):
    customer = sample_fleet["lakeside-outfitters"]

    def wide_program() -> None:
        stack = deploy(customer, sentinel_inputs(customer))
        aws.iam.RolePolicy(
            f"{customer.id}-too-wide",
            role="some-role",
            policy=json.dumps(
                {
                    "Version": "2012-10-17",
                    "Statement": [
                        {"Sid": "All", "Effect": "Allow", "Action": "s3:*", "Resource": "*"}
                    ],
                }
            ),
            opts=pulumi.ResourceOptions(parent=stack.production),
        )

    plan = plan_from_recording(customer.id, run_program(wide_program, stack=customer.id))
    assert check_least_privilege(plan, customer) == [
        f"{customer.id}-too-wide All: wildcard action s3:*",
        f"{customer.id}-too-wide All: Resource * for ['s3:*']",
    ]


# --- S1: secrets ----------------------------------------------------------------------------------
@pytest.mark.parametrize(("customer_id", "preview"), CASES, ids=CASE_IDS)
def test_secrets_reach_aws_only_as_pulumi_secrets(
    customer_id: str, preview: bool, runs, plans, sample_fleet
):
    recording = runs[(customer_id, preview)]
    customer = sample_fleet[customer_id]
    passwords = {
        r.name: r.outputs["result"]
        for r in recording.of_type("random:index/randomPassword:RandomPassword")
    }
    # Production's and the test environment's own (issue 13), different.
    assert len(passwords) == 2 and len(set(passwords.values())) == 2
    for resource in recording.resources:
        for path, text in strings_outside_secrets(resource.inputs):
            assert SENTINEL not in text, f"{resource.name}{path} carries the activation key"
            for password in passwords.values():
                assert password not in text, f"{resource.name}{path} carries a password"
    versions = {
        r.name.removeprefix(f"{customer_id}-").removesuffix("-version"): r.inputs["secretString"]
        for r in recording.of_type("aws:secretsmanager/secretVersion:SecretVersion")
    }
    assert all(pulumi.runtime.rpc.is_rpc_secret(v) for v in versions.values())
    assert (
        versions["database-password"]["value"]
        == passwords[f"{customer_id}-database-password-value"]
    )
    assert (
        versions["test-database-password"]["value"]
        == passwords[f"{customer_id}-test-database-password-value"]
    )
    if customer.secrets.activation_key.source is SecretSource.PULUMI_CONFIG:
        assert versions["activation-key"]["value"] == SENTINEL
        assert versions["test-activation-key"]["value"] == SENTINEL  # the same vendor key
    names = {r.inputs["name"] for r in recording.of_type("aws:secretsmanager/secret:Secret")}
    assert secret_name(customer, "database_password") in names
    assert secret_name(customer, "database_password", Environment.TEST) in names
    dumped = json.dumps(plans[(customer_id, preview)].to_json())
    assert SENTINEL not in dumped and not any(p in dumped for p in passwords.values())
    assert SENTINEL not in json.dumps(recording.outputs, default=str)


def test_an_activation_key_cannot_be_generated(acme_document):
    acme_document["secrets"]["activation_key"] = "generated"
    customer = parse_customer(acme_document, "acme-retail.yaml")
    with pytest.raises(SecretSourceError, match="activation key comes from the vendor"):
        record(customer)


# --- tags -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("preview", PREVIEW_MODES)
def test_tags_name_customer_environment_partner_and_promise(preview: bool, runs, sample_fleet):
    customer = sample_fleet["northwind-trading"]
    recording = runs[(customer.id, preview)]
    tagged = [r for r in recording.resources if "tags" in r.inputs]
    assert len(tagged) > 50
    for resource in tagged:
        tags = resource.inputs["tags"]
        assert set(REQUIRED_TAGS) <= set(tags), resource.name
        assert tags["erpcloud:customer"] == customer.id
        assert tags["erpcloud:partner"] == customer.partner.id
        environment = (
            "test" if resource.parent_urn.endswith(f"::{customer.id}-test") else "production"
        )
        assert tags["erpcloud:environment"] == environment, resource.name
        assert tags["erpcloud:promise"].startswith("S")
    bucket = recording.named(f"{customer.id}-backup-primary")
    assert bucket.inputs["tags"]["erpcloud:promise"] == "S6"


# --- S5: monitoring -------------------------------------------------------------------------------
@pytest.mark.parametrize("preview", PREVIEW_MODES)
def test_alarms_watch_what_the_instance_publishes_and_go_to_one_ops_topic(
    preview: bool, runs, sample_fleet
):
    customer = sample_fleet["acme-retail"]
    recording = runs[(customer.id, preview)]
    topics = {t.name: t.outputs["arn"] for t in recording.of_type("aws:sns/topic:Topic")}
    ops = topics[f"{customer.id}-ops-alerts"]
    instance_id = one(recording, "aws:ec2/instance:Instance", PRODUCTION_TYPE).id
    alarms = {
        a.name.removeprefix(f"{customer.id}-alarm-"): a.inputs
        for a in recording.of_type("aws:cloudwatch/metricAlarm:MetricAlarm")
    }
    s5 = {k: v for k, v in alarms.items() if k not in ("disk-grow", "sustained-load")}
    assert set(s5) == {
        "cpu",
        "status-check",
        "memory",
        "disk-root",
        "disk-data",
        "db-connections",
        "wal-archive-age",
        "wal-archive-failures",
        "wal-gap-check",
        "wal-gap-failure",
        "response-time",
        "http-5xx",
    }
    for alarm in s5.values():
        assert alarm["alarmActions"] == [ops] and alarm["okActions"] == [ops]
    assert s5["cpu"]["threshold"] == policy.CPU_ALARM_PERCENT
    assert s5["memory"]["threshold"] == policy.MEMORY_ALARM_PERCENT
    assert s5["db-connections"]["threshold"] == policy.DB_CONNECTIONS_ALARM
    assert s5["wal-archive-age"]["threshold"] == policy.WAL_ARCHIVE_AGE_ALARM.total_seconds()
    assert s5["wal-archive-age"]["treatMissingData"] == "breaching"
    assert s5["response-time"]["threshold"] == policy.TARGET_RESPONSE_TIME_ALARM_SECONDS
    assert s5["http-5xx"]["metricName"] == "HTTPCode_Target_5XX_Count"
    balancer = one(recording, "aws:lb/loadBalancer:LoadBalancer", PRODUCTION_TYPE)
    assert s5["response-time"]["dimensions"]["LoadBalancer"] == balancer.outputs["arnSuffix"]
    failures = {q["id"]: q for q in s5["wal-archive-failures"]["metricQueries"]}
    assert failures["growth"]["expression"] == "DIFF(failed)"
    assert failures["failed"]["metric"]["metricName"] == "WalArchiveFailedCount"

    # The agent metrics are named and dimensioned as the rendered agent config publishes them.
    agent = json.loads(render_cloudwatch_agent_config(customer, HostLayout()))
    assert agent["metrics"]["namespace"] == METRICS_NAMESPACE
    assert agent["metrics"]["append_dimensions"] == {"InstanceId": "${aws:InstanceId}"}
    collected = agent["metrics"]["metrics_collected"]
    assert "used_percent" in collected["mem"]["measurement"]
    assert "used_percent" in collected["disk"]["measurement"]
    for name in ("memory", "disk-root", "disk-data"):
        assert s5[name]["namespace"] == METRICS_NAMESPACE
        assert s5[name]["dimensions"]["InstanceId"] == instance_id
    assert {s5["disk-root"]["dimensions"]["path"], s5["disk-data"]["dimensions"]["path"]} == set(
        collected["disk"]["resources"]
    )
    # The database indicators are published by db-metrics with the Customer dimension.
    script = next(
        f.content
        for f in host_files(customer, Environment.PRODUCTION, HostLayout())
        if f.path.endswith("db-metrics")
    )
    assert f"Customer={customer.id}" in script
    for name in ("db-connections", "wal-archive-age"):
        assert s5[name]["dimensions"] == {"Customer": customer.id}
        assert f"MetricName={s5[name]['metricName']}," in script
    assert "MetricName=WalArchiveFailedCount," in script

    # The gap check's alarms watch exactly what `erpcloud backup verify --publish` puts.
    published = metric_data(GapCheckResult(customer.id, datetime.now(UTC), Outcome.FAILURE, []))
    status = next(m for m in published if m["MetricName"] == "WalGapCheckStatus")
    interval = policy.WAL_GAP_CHECK_INTERVAL.total_seconds()
    for name, threshold in (("wal-gap-check", 1), ("wal-gap-failure", 2)):
        alarm = s5[name]
        assert alarm["metricName"] == status["MetricName"]
        assert alarm["namespace"] == METRICS_NAMESPACE
        assert alarm["dimensions"] == {d["Name"]: d["Value"] for d in status["Dimensions"]}
        assert alarm["threshold"] == threshold and alarm["period"] == interval
        assert alarm["comparisonOperator"] == "GreaterThanOrEqualToThreshold"
    assert status["Value"] >= s5["wal-gap-failure"]["threshold"]  # a FAILURE pages
    assert s5["wal-gap-check"]["treatMissingData"] == "breaching"  # a silent check alarms
    assert s5["wal-gap-check"]["evaluationPeriods"] == 2


# --- S2: elasticity -------------------------------------------------------------------------------
@pytest.mark.parametrize("preview", PREVIEW_MODES)
def test_disk_alarm_starts_the_volume_growth_automation(preview: bool, runs, sample_fleet):
    customer = sample_fleet["acme-retail"]  # has max_data_volume_gib
    recording = runs[(customer.id, preview)]
    alarm = recording.named(f"{customer.id}-alarm-disk-grow")
    assert alarm.inputs["threshold"] == policy.DISK_GROW_THRESHOLD_PERCENT
    assert alarm.inputs["dimensions"]["path"] == HostLayout().data_mount
    rule = recording.named(f"{customer.id}-grow-trigger")
    pattern = json.loads(rule.inputs["eventPattern"])
    assert pattern["resources"] == [alarm.outputs["arn"]]
    assert pattern["detail"] == {"state": {"value": ["ALARM"]}}
    document = recording.named(f"{customer.id}-grow-data-volume")
    assert document.inputs["documentType"] == "Automation"
    assert yaml.safe_load(document.inputs["content"]) == grow_document()
    target = recording.named(f"{customer.id}-grow-trigger-target")
    assert target.inputs["arn"] == (
        f"arn:aws:ssm:{customer.region}:123456789012:automation-definition/"
        f"{document.inputs['name']}"
    )
    volume = one(recording, "aws:ebs/volume:Volume", PRODUCTION_TYPE)
    automation_role = recording.named(f"{customer.id}-grow-role")
    assert json.loads(target.inputs["input"]) == {
        "VolumeId": [volume.id],
        "MaxSizeGiB": [str(customer.production.max_data_volume_gib)],
        "GrowthRatio": [str(policy.DISK_GROW_STEP_RATIO)],
        "AutomationAssumeRole": [automation_role.outputs["arn"]],
    }
    grow = statements(recording.named(f"{customer.id}-grow-role-policy"))
    assert grow["GrowOwnDataVolume"]["Resource"] == volume.outputs["arn"]
    assert grow["GrowOwnDataVolume"]["Action"] == ["ec2:ModifyVolume"]
    trigger = statements(recording.named(f"{customer.id}-grow-trigger-role-policy"))
    assert trigger["PassAutomationRole"]["Resource"] == automation_role.outputs["arn"]
    assert trigger["StartOwnAutomation"]["Resource"] == target.inputs["arn"] + ":*"


@pytest.mark.parametrize(("customer_id", "preview"), CASES, ids=CASE_IDS)
def test_sustained_load_opens_a_resize_request_and_growth_needs_a_ceiling(
    customer_id: str, preview: bool, runs, sample_fleet
):
    customer = sample_fleet[customer_id]
    recording = runs[(customer_id, preview)]
    load = recording.named(f"{customer_id}-alarm-sustained-load").inputs
    assert load["threshold"] == policy.SUSTAINED_CPU_PERCENT
    assert (
        load["period"] * load["evaluationPeriods"] >= policy.SUSTAINED_LOAD_PERIOD.total_seconds()
    )
    assert load["datapointsToAlarm"] == load["evaluationPeriods"]
    resize_topic = recording.named(f"{customer_id}-resize-requests").outputs["arn"]
    assert load["alarmActions"] == [
        resize_topic,
        f"arn:aws:ssm:{customer.region}:123456789012:opsitem:3#CATEGORY=Performance",
    ]
    bigger = next_size_up(customer.production.instance_type)
    assert bigger is not None and bigger in load["alarmDescription"]
    ceiling = customer.production.max_data_volume_gib
    grows = ceiling is not None and ceiling > customer.production.data_volume_gib
    assert bool(recording.of_type("aws:ssm/document:Document")) == grows
    assert bool(recording.of_type("aws:cloudwatch/eventRule:EventRule")) == grows


def test_next_size_up_stays_in_the_family():
    assert next_size_up("m6i.xlarge") == "m6i.2xlarge"
    assert next_size_up("r6i.2xlarge") == "r6i.4xlarge"
    assert next_size_up("c6i.2xlarge") is None


@pytest.mark.services
def test_the_growth_automation_script_grows_a_volume_on_the_emulator(
    local_aws: LocalAws, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The automation's own script, run against moto: +25 %, capped, refusing at the ceiling."""
    step = grow_document()["mainSteps"][0]
    namespace: dict[str, Any] = {}
    exec(compile(step["inputs"]["Script"], "grow-data-volume", "exec"), namespace)  # noqa: S102
    region = "ap-south-1"  # any region: the emulator does not care
    monkeypatch.setenv("AWS_ENDPOINT_URL", local_aws.endpoint_url)
    monkeypatch.setenv("AWS_DEFAULT_REGION", region)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    ec2 = local_aws.client("ec2", region)

    def volume(size: int) -> str:
        return ec2.create_volume(AvailabilityZone=f"{region}a", Size=size, VolumeType="gp3")[
            "VolumeId"
        ]

    def grow(volume_id: str, ceiling: int) -> dict[str, Any]:
        handler = namespace[step["inputs"]["Handler"]]
        events = {"VolumeId": volume_id, "MaxSizeGiB": str(ceiling), "GrowthRatio": "0.25"}
        return dict(handler(events, None))

    def size(volume_id: str) -> int:
        return int(ec2.describe_volumes(VolumeIds=[volume_id])["Volumes"][0]["Size"])

    first = volume(200)
    assert grow(first, 800) == {"VolumeId": first, "FromGiB": 200, "ToGiB": 250}
    assert size(first) == 250
    near = volume(700)
    assert grow(near, 800)["ToGiB"] == 800  # capped at the ceiling
    with pytest.raises(RuntimeError, match="at its ceiling of 800 GiB"):
        grow(near, 800)
    assert size(near) == 800


# --- lifecycle (issue 8) --------------------------------------------------------------------------
@pytest.mark.parametrize("preview", PREVIEW_MODES)
def test_a_suspended_customer_is_stopped_and_keeps_its_data(preview: bool, acme_document, runs):
    acme_document["lifecycle"] = {"state": "suspended"}
    customer = parse_customer(acme_document, "acme-retail.yaml")
    recording = record(customer, preview)
    states = {
        r.name: r.inputs["state"]
        for r in recording.of_type("aws:ec2transitgateway/instanceState:InstanceState")
    }
    assert states == {f"{customer.id}-power": "stopped", f"{customer.id}-test-power": "stopped"}
    active = runs[(customer.id, preview)]
    assert {
        r.inputs["state"]
        for r in active.of_type("aws:ec2transitgateway/instanceState:InstanceState")
    } == {"running"}
    kept = {r.name for r in recording.resources if r.protect}
    assert {
        f"{customer.id}-data",
        f"{customer.id}-backup-primary",
        f"{customer.id}-backup-copy",
    } <= kept
    assert len(recording.resources) == len(active.resources)  # nothing removed, only stopped


# --- P4: outputs ----------------------------------------------------------------------------------
@pytest.mark.parametrize(("customer_id", "preview"), CASES, ids=CASE_IDS)
def test_stack_outputs_are_the_instance_inventory(
    customer_id: str, preview: bool, runs, sample_fleet
):
    recording = runs[(customer_id, preview)]
    customer = sample_fleet[customer_id]
    outputs = recording.outputs
    production_ip = one(recording, "aws:ec2/eip:Eip", PRODUCTION_TYPE).outputs["publicIp"]
    test_ip = one(recording, "aws:ec2/eip:Eip", TEST_TYPE).outputs["publicIp"]
    assert outputs["url"] == f"https://{customer.url_host}"
    assert outputs["test_url"] == f"https://{customer.test_url_host}"
    assert outputs["ssh_host"] == outputs["sftp_host"] == outputs["database_host"] == production_ip
    assert outputs["test_ssh_host"] == test_ip
    assert outputs["ssh_users"] == [u.name for u in customer.ssh.users]
    assert (outputs["ssh_port"], outputs["database_port"]) == (22, HostLayout().pg_port)
    assert outputs["database_name"] == "erp"
    assert outputs["database_password_secret"] == secret_name(customer, "database_password")
    primary, copy = customer.backup_bucket_names
    assert outputs["backup_buckets"] == {
        "primary": {"name": primary, "region": customer.region},
        "copy": {"name": copy, "region": customer.backup_copy_region},
    }
    assert recording.secret_outputs == frozenset()


# --- the program as `pulumi up` runs it -----------------------------------------------------------
def run_main(
    config: dict[str, str], stack: str = "acme-retail", secret: tuple[str, ...] = ()
) -> Recording:
    main = str(REPO_ROOT / "stacks" / "__main__.py")
    return run_program(
        lambda: runpy.run_path(main, run_name="__main__"),
        stack=stack,
        config=config,
        secret_keys=secret,
    )


def test_main_reads_the_customer_and_the_secret_activation_key_from_stack_config():
    recording = run_main({"erpcloud:activationKey": SENTINEL}, secret=("erpcloud:activationKey",))
    assert recording.outputs["url"] == "https://acme.cloud.erp-cloud.example.net"
    version = recording.named("acme-retail-activation-key-version")
    assert version.inputs["secretString"]["value"] == SENTINEL
    assert pulumi.runtime.rpc.is_rpc_secret(version.inputs["secretString"])
    named = run_main(
        {"erpcloud:customer": "lakeside-outfitters", "erpcloud:activationKey": SENTINEL},
        stack="lakeside",
    )
    assert named.outputs["customer"] == "lakeside-outfitters"


def test_main_without_the_activation_key_names_the_missing_config():
    with pytest.raises(pulumi.ConfigMissingError, match="erpcloud:activationKey"):
        run_main({})


def test_emulator_settings_in_aws_config_reach_both_explicit_providers():
    endpoints = [{"s3": "http://127.0.0.1:5000", "ec2": "http://127.0.0.1:5000"}]
    recording = run_main(
        {
            "erpcloud:activationKey": SENTINEL,
            "aws:endpoints": json.dumps(endpoints),
            "aws:skipCredentialsValidation": "true",
            "aws:skipRequestingAccountId": "true",
            "aws:s3UsePathStyle": "true",
        }
    )
    providers = [r for r in recording.resources if r.is_provider]
    assert len(providers) == 2
    for provider in providers:
        assert json.loads(provider.inputs["endpoints"]) == endpoints
        assert provider.inputs["skipCredentialsValidation"] == "true"
        assert provider.inputs["skipRequestingAccountId"] == "true"
        assert provider.inputs["s3UsePathStyle"] == "true"


# --- the recording engine itself ------------------------------------------------------------------
def test_the_engine_refuses_an_invoke_the_program_does_not_make():
    def program() -> None:
        aws.ec2.get_vpc_output(default=True)

    with pytest.raises(UnexpectedInvoke, match="aws:ec2/getVpc:getVpc"):
        run_program(program, stack="unexpected")


def test_the_engine_refuses_two_resources_with_one_urn(sample_fleet):
    customer = sample_fleet["lakeside-outfitters"]

    def twice() -> None:
        deploy(customer, sentinel_inputs(customer))
        deploy(customer, sentinel_inputs(customer))

    with pytest.raises(DuplicateUrn, match="lakeside-outfitters"):
        run_program(twice, stack=customer.id)


def test_an_error_inside_apply_is_not_swallowed():
    def program() -> None:
        pulumi.export("broken", pulumi.Output.from_input(1).apply(lambda v: v / 0))

    with pytest.raises(ZeroDivisionError):
        run_program(program, stack="apply-error", preview=False)


@pytest.mark.parametrize(
    "module",
    [
        "stacks.program",
        "stacks.customer_instance",
        "stacks.test_env",
        "stacks.blocks.server",
        "stacks.blocks.endpoint",
        "stacks.plan",
        "images.pipeline",
        "images.program",
    ],
)
def test_nothing_is_created_at_import_time(module: str):
    """Executing the module's code afresh under the engine registers and invokes nothing."""
    origin = importlib.util.find_spec(module).origin  # type: ignore[union-attr]
    fresh_name = f"_import_check_{module.replace('.', '_')}"
    spec = importlib.util.spec_from_file_location(fresh_name, origin)
    assert spec is not None and spec.loader is not None
    fresh = importlib.util.module_from_spec(spec)

    def execute() -> None:
        sys.modules[fresh_name] = fresh  # dataclasses look their module up while defining
        try:
            spec.loader.exec_module(fresh)  # type: ignore[union-attr]
        finally:
            del sys.modules[fresh_name]

    recording = run_program(execute, stack="import")
    assert recording.resources == [] and recording.invokes == []
    assert hasattr(fresh, "__file__")


def test_the_pulumi_projects_point_at_their_programs():
    project = yaml.safe_load((REPO_ROOT / "Pulumi.yaml").read_text())
    assert project["runtime"]["name"] == "python"
    assert (REPO_ROOT / project["main"] / "__main__.py").is_file()
    # Declared keys have defaults: a stack needs only what its customer file refers to.
    assert all("default" in entry for entry in project["config"].values())
    images = yaml.safe_load((REPO_ROOT / "images" / "Pulumi.yaml").read_text())
    assert (REPO_ROOT / "images" / images["main"]).is_file()
    assert images["runtime"]["options"]["virtualenv"] == "../.venv"

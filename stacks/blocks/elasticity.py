"""S2: production grows with its use, driven by monitoring.

* Disk: when the data volume passes ``DISK_GROW_THRESHOLD_PERCENT``, its alarm's change to ALARM
  is matched by an EventBridge rule that starts the ``grow-data-volume`` SSM Automation
  (``stacks/documents/grow-data-volume.yaml``): ``ec2:ModifyVolume`` by
  ``DISK_GROW_STEP_RATIO`` of the current size, capped at ``max_data_volume_gib``. The
  instance's ``erpcloud-growfs`` timer (from the image) grows the XFS file system online.
  Without a ceiling in the customer file there is no online growth (only the S5 alarm).
* Load: average CPU above ``SUSTAINED_CPU_PERCENT`` for ``SUSTAINED_LOAD_PERIOD`` opens a resize
  request: an OpsCenter OpsItem (category Performance) and a message on the resize-requests
  topic, naming the next size up. Operations apply it in the next maintenance window (S11);
  an instance type change needs a stop/start, so it never happens on its own.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any, Final

import pulumi
import pulumi_aws as aws
import yaml

from erpcloud import policy
from erpcloud.render import METRICS_NAMESPACE
from stacks.blocks import child
from stacks.blocks.iam import (
    as_json,
    assume_role_policy,
    grow_volume_policy,
    start_automation_policy,
)
from stacks.blocks.server import Server
from stacks.spec import DATA_FILESYSTEM, EnvironmentSpec, next_size_up

GROW_DOCUMENT: Final = "documents/grow-data-volume.yaml"
DISK_PERIOD_SECONDS: Final = int(policy.ALARM_PERIOD.total_seconds())
LOAD_PERIOD_SECONDS: Final = 3600
LOAD_PERIODS: Final = math.ceil(policy.SUSTAINED_LOAD_PERIOD.total_seconds() / LOAD_PERIOD_SECONDS)
#: OpsCenter severity of a resize request (1 critical .. 4 low): it waits for the window.
RESIZE_SEVERITY: Final = 3


def grow_document() -> dict[str, Any]:
    """The automation document, parsed and checked for the parameters this stack passes."""
    document = yaml.safe_load(grow_document_text())
    expected = {"VolumeId", "MaxSizeGiB", "GrowthRatio", "AutomationAssumeRole"}
    if document.get("schemaVersion") != "0.3" or set(document.get("parameters", {})) != expected:
        raise ValueError(f"stacks/{GROW_DOCUMENT}: not the automation this stack starts")
    return dict(document)


@cache
def grow_document_text() -> str:
    """The document as SSM gets it (read once per process: every customer sends the same)."""
    return resources.files("stacks").joinpath(GROW_DOCUMENT).read_text(encoding="utf-8")


@cache
def _checked_grow_document_text() -> str:
    grow_document()
    return grow_document_text()


@dataclass(frozen=True)
class Elasticity:
    grow_alarm: aws.cloudwatch.MetricAlarm | None
    load_alarm: aws.cloudwatch.MetricAlarm
    resize_topic: aws.sns.Topic


def grows_online(spec: EnvironmentSpec) -> bool:
    """S2: online growth needs a ceiling above the current size in the customer file."""
    ceiling = spec.sizing.max_data_volume_gib
    return ceiling is not None and ceiling > spec.sizing.data_volume_gib


def elasticity(
    owner: pulumi.Resource,
    name: str,
    spec: EnvironmentSpec,
    provider: aws.Provider,
    *,
    server: Server,
    region: str,
    account_id: pulumi.Input[str],
    key_arn: pulumi.Input[str],
) -> Elasticity:
    if not spec.is_production:
        raise ValueError("S2: only production is elastic")
    opts = child(owner, provider)
    grow_alarm = _volume_growth(owner, name, spec, provider, server, region, account_id)
    resize_topic = aws.sns.Topic(
        f"{name}-resize-requests",
        display_name=f"erpcloud {spec.customer.id}: resize requests for the next window (S2)",
        kms_master_key_id=key_arn,
        tags=spec.tags("S2"),
        opts=opts,
    )
    bigger = next_size_up(spec.sizing.instance_type) or "a larger family (no bigger size sold)"
    ops_item = pulumi.Output.concat(
        "arn:aws:ssm:",
        region,
        ":",
        account_id,
        f":opsitem:{RESIZE_SEVERITY}#CATEGORY=Performance",
    )
    load_alarm = aws.cloudwatch.MetricAlarm(
        f"{name}-alarm-sustained-load",
        name=f"erpcloud-{spec.customer.id}-sustained-load",
        alarm_description=(
            f"S2: CPU at or above {policy.SUSTAINED_CPU_PERCENT} % for "
            f"{policy.SUSTAINED_LOAD_PERIOD} on {spec.sizing.instance_type}: resize to {bigger} "
            "in the next maintenance window (S11)"
        ),
        namespace="AWS/EC2",
        metric_name="CPUUtilization",
        statistic="Average",
        dimensions={"InstanceId": server.instance.id},
        period=LOAD_PERIOD_SECONDS,
        evaluation_periods=LOAD_PERIODS,
        datapoints_to_alarm=LOAD_PERIODS,
        threshold=policy.SUSTAINED_CPU_PERCENT,
        comparison_operator="GreaterThanOrEqualToThreshold",
        treat_missing_data="notBreaching",
        alarm_actions=[resize_topic.arn, ops_item],
        tags=spec.tags("S2"),
        opts=opts,
    )
    return Elasticity(grow_alarm=grow_alarm, load_alarm=load_alarm, resize_topic=resize_topic)


def _volume_growth(
    owner: pulumi.Resource,
    name: str,
    spec: EnvironmentSpec,
    provider: aws.Provider,
    server: Server,
    region: str,
    account_id: pulumi.Input[str],
) -> aws.cloudwatch.MetricAlarm | None:
    if not grows_online(spec):
        return None
    opts = child(owner, provider)
    document = aws.ssm.Document(
        f"{name}-grow-data-volume",
        name=f"erpcloud-{spec.customer.id}-grow-data-volume",
        document_type="Automation",
        document_format="YAML",
        content=_checked_grow_document_text(),
        tags=spec.tags("S2"),
        opts=opts,
    )
    definition_arn = pulumi.Output.concat(
        "arn:aws:ssm:", region, ":", account_id, ":automation-definition/", document.name
    )
    automation_role = aws.iam.Role(
        f"{name}-grow-role",
        description=f"{spec.host}: grow the data volume, nothing else (S2)",
        assume_role_policy=assume_role_policy("ssm.amazonaws.com"),
        tags=spec.tags("S2"),
        opts=opts,
    )
    aws.iam.RolePolicy(
        f"{name}-grow-role-policy",
        role=automation_role.id,
        policy=as_json(grow_volume_policy, volume_arn=server.data_volume.arn),
        opts=opts,
    )
    events_role = aws.iam.Role(
        f"{name}-grow-trigger-role",
        description=f"{spec.host}: start the growth automation (S2)",
        assume_role_policy=assume_role_policy("events.amazonaws.com"),
        tags=spec.tags("S2"),
        opts=opts,
    )
    aws.iam.RolePolicy(
        f"{name}-grow-trigger-role-policy",
        role=events_role.id,
        policy=as_json(
            start_automation_policy,
            automation_definition_arn=definition_arn,
            automation_role_arn=automation_role.arn,
        ),
        opts=opts,
    )
    alarm = aws.cloudwatch.MetricAlarm(
        f"{name}-alarm-disk-grow",
        name=f"erpcloud-{spec.customer.id}-disk-grow",
        alarm_description=(
            f"S2: database volume above {policy.DISK_GROW_THRESHOLD_PERCENT} %: grow it by "
            f"{policy.DISK_GROW_STEP_RATIO:.0%} online, up to {spec.sizing.max_data_volume_gib} GiB"
        ),
        namespace=METRICS_NAMESPACE,
        metric_name="disk_used_percent",
        statistic="Maximum",
        dimensions={
            "InstanceId": server.instance.id,
            "path": spec.layout.data_mount,
            "fstype": DATA_FILESYSTEM,
        },
        period=DISK_PERIOD_SECONDS,
        evaluation_periods=policy.ALARM_EVALUATION_PERIODS,
        threshold=policy.DISK_GROW_THRESHOLD_PERCENT,
        comparison_operator="GreaterThanThreshold",
        treat_missing_data="missing",
        tags=spec.tags("S2"),
        opts=opts,
    )
    rule = aws.cloudwatch.EventRule(
        f"{name}-grow-trigger",
        description=f"S2: {spec.customer.id}'s disk-grow alarm went to ALARM",
        event_pattern=alarm.arn.apply(
            lambda arn: json.dumps(
                {
                    "source": ["aws.cloudwatch"],
                    "detail-type": ["CloudWatch Alarm State Change"],
                    "resources": [arn],
                    "detail": {"state": {"value": ["ALARM"]}},
                }
            )
        ),
        tags=spec.tags("S2"),
        opts=opts,
    )
    aws.cloudwatch.EventTarget(
        f"{name}-grow-trigger-target",
        rule=rule.name,
        arn=definition_arn,
        role_arn=events_role.arn,
        input=pulumi.Output.json_dumps(
            {
                "VolumeId": [server.data_volume.id],
                "MaxSizeGiB": [str(spec.sizing.max_data_volume_gib)],
                "GrowthRatio": [str(policy.DISK_GROW_STEP_RATIO)],
                "AutomationAssumeRole": [automation_role.arn],
            }
        ),
        opts=opts,
    )
    return alarm

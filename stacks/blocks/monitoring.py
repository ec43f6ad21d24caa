"""S5: production's alarms, all to one SNS topic for operations (the test environment has none,
S9). The instance publishes CPU, memory, disk and network through the CloudWatch agent and the
database indicators through ``db-metrics`` (both rendered by :mod:`erpcloud.render`) into
:data:`erpcloud.render.METRICS_NAMESPACE`; the load balancer's figures come from AWS itself.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pulumi
import pulumi_aws as aws

from erpcloud import policy
from erpcloud.render import METRICS_NAMESPACE
from stacks.blocks import child
from stacks.blocks.endpoint import Endpoint
from stacks.blocks.server import Server
from stacks.spec import DATA_FILESYSTEM, ROOT_FILESYSTEM, EnvironmentSpec

PERIOD_SECONDS = int(policy.ALARM_PERIOD.total_seconds())


@dataclass(frozen=True)
class AlarmSpec:
    """One threshold alarm (S5): what is watched, the threshold, and why."""

    role: str
    description: str
    namespace: str
    metric: str
    statistic: str
    threshold: float
    dimensions: dict[str, Any] = field(default_factory=dict)
    comparison: str = "GreaterThanThreshold"
    missing: str = "missing"
    period_seconds: int = PERIOD_SECONDS
    evaluation_periods: int = policy.ALARM_EVALUATION_PERIODS


def alarm_specs(spec: EnvironmentSpec, server: Server, endpoint: Endpoint) -> list[AlarmSpec]:
    """The S5 alarms of one production environment."""
    instance = {"InstanceId": server.instance.id}
    data_mount = spec.layout.data_mount
    customer = {"Customer": spec.customer.id}
    gap_check_seconds = int(policy.WAL_GAP_CHECK_INTERVAL.total_seconds())
    gap_check_minutes = gap_check_seconds // 60
    balancer = {
        "LoadBalancer": endpoint.load_balancer.arn_suffix,
        "TargetGroup": endpoint.target_group.arn_suffix,
    }
    return [
        AlarmSpec(
            "cpu",
            f"S5: CPU above {policy.CPU_ALARM_PERCENT} %",
            "AWS/EC2",
            "CPUUtilization",
            "Average",
            policy.CPU_ALARM_PERCENT,
            instance,
        ),
        AlarmSpec(
            "status-check",
            "S5: the instance or its host fails its status checks",
            "AWS/EC2",
            "StatusCheckFailed",
            "Maximum",
            0,
            instance,
        ),
        AlarmSpec(
            "memory",
            f"S5: memory use above {policy.MEMORY_ALARM_PERCENT} %",
            METRICS_NAMESPACE,
            "mem_used_percent",
            "Average",
            policy.MEMORY_ALARM_PERCENT,
            instance,
        ),
        AlarmSpec(
            "disk-root",
            f"S5: root file system above {policy.DISK_ALARM_PERCENT} %",
            METRICS_NAMESPACE,
            "disk_used_percent",
            "Maximum",
            policy.DISK_ALARM_PERCENT,
            {**instance, "path": "/", "fstype": ROOT_FILESYSTEM},
        ),
        AlarmSpec(
            "disk-data",
            f"S5: database volume above {policy.DISK_ALARM_PERCENT} % (S2 grows it earlier)",
            METRICS_NAMESPACE,
            "disk_used_percent",
            "Maximum",
            policy.DISK_ALARM_PERCENT,
            {**instance, "path": data_mount, "fstype": DATA_FILESYSTEM},
        ),
        AlarmSpec(
            "db-connections",
            f"S5: more than {policy.DB_CONNECTIONS_ALARM} database connections",
            METRICS_NAMESPACE,
            "DatabaseConnections",
            "Maximum",
            policy.DB_CONNECTIONS_ALARM,
            customer,
        ),
        AlarmSpec(
            "wal-archive-age",
            "S5/S7: the newest archived WAL segment is older than "
            f"{int(policy.WAL_ARCHIVE_AGE_ALARM.total_seconds())} s (or no figure arrives)",
            METRICS_NAMESPACE,
            "WalArchiveAgeSeconds",
            "Maximum",
            policy.WAL_ARCHIVE_AGE_ALARM.total_seconds(),
            customer,
            missing="breaching",
        ),
        # S5/S7: what the operations side's gap check publishes (backups.gapcheck.metric_data):
        # 0 OK, 1 WARNING, 2 FAILURE. A warning, or a check that stopped reporting, alarms
        # after two intervals; a missing segment (FAILURE) at once.
        AlarmSpec(
            "wal-gap-check",
            "S5/S7: the WAL gap check warned or failed, or did not report for "
            f"{2 * gap_check_minutes} min",
            METRICS_NAMESPACE,
            "WalGapCheckStatus",
            "Maximum",
            1,
            customer,
            comparison="GreaterThanOrEqualToThreshold",
            missing="breaching",
            period_seconds=gap_check_seconds,
            evaluation_periods=2,
        ),
        AlarmSpec(
            "wal-gap-failure",
            "S6/S7: a WAL segment or backup is missing from a repository (gap check FAILURE)",
            METRICS_NAMESPACE,
            "WalGapCheckStatus",
            "Maximum",
            2,
            customer,
            comparison="GreaterThanOrEqualToThreshold",
            missing="notBreaching",
            period_seconds=gap_check_seconds,
            evaluation_periods=1,
        ),
        AlarmSpec(
            "response-time",
            f"S5: target response time above {policy.TARGET_RESPONSE_TIME_ALARM_SECONDS} s",
            "AWS/ApplicationELB",
            "TargetResponseTime",
            "Average",
            policy.TARGET_RESPONSE_TIME_ALARM_SECONDS,
            balancer,
        ),
        AlarmSpec(
            "http-5xx",
            f"S5: more than {policy.HTTP_5XX_ALARM_COUNT} HTTP 5xx answers from the product",
            "AWS/ApplicationELB",
            "HTTPCode_Target_5XX_Count",
            "Sum",
            policy.HTTP_5XX_ALARM_COUNT,
            balancer,
            missing="notBreaching",
        ),
    ]


def monitoring(
    owner: pulumi.Resource,
    name: str,
    spec: EnvironmentSpec,
    provider: aws.Provider,
    *,
    server: Server,
    endpoint: Endpoint,
    key_arn: pulumi.Input[str],
) -> aws.sns.Topic:
    """The operations topic and every S5 alarm on it; returns the topic."""
    if not spec.environment.has_monitoring:
        raise ValueError(f"{spec.environment.value} has no monitoring (S9)")
    opts = child(owner, provider)
    topic = aws.sns.Topic(
        f"{name}-ops-alerts",
        display_name=f"erpcloud {spec.customer.id}: production alarms (S5)",
        kms_master_key_id=key_arn,
        tags=spec.tags("S5"),
        opts=opts,
    )
    for alarm in alarm_specs(spec, server, endpoint):
        aws.cloudwatch.MetricAlarm(
            f"{name}-alarm-{alarm.role}",
            name=f"erpcloud-{spec.customer.id}-{alarm.role}",
            alarm_description=alarm.description,
            namespace=alarm.namespace,
            metric_name=alarm.metric,
            statistic=alarm.statistic,
            dimensions=alarm.dimensions,
            period=alarm.period_seconds,
            evaluation_periods=alarm.evaluation_periods,
            threshold=alarm.threshold,
            comparison_operator=alarm.comparison,
            treat_missing_data=alarm.missing,
            alarm_actions=[topic.arn],
            ok_actions=[topic.arn],
            tags=spec.tags("S5"),
            opts=opts,
        )
    # S5/S7: pg_stat_archiver's failed_count only grows; any growth in a period is an alarm.
    aws.cloudwatch.MetricAlarm(
        f"{name}-alarm-wal-archive-failures",
        name=f"erpcloud-{spec.customer.id}-wal-archive-failures",
        alarm_description="S5/S7: WAL archiving failed (pg_stat_archiver.failed_count grew)",
        metric_queries=[
            {
                "id": "failed",
                "metric": {
                    "namespace": METRICS_NAMESPACE,
                    "metric_name": "WalArchiveFailedCount",
                    "dimensions": {"Customer": spec.customer.id},
                    "period": PERIOD_SECONDS,
                    "stat": "Maximum",
                },
                "return_data": False,
            },
            {
                "id": "growth",
                "expression": "DIFF(failed)",
                "label": "new WAL archive failures",
                "return_data": True,
            },
        ],
        evaluation_periods=1,
        threshold=0,
        comparison_operator="GreaterThanThreshold",
        treat_missing_data="notBreaching",
        alarm_actions=[topic.arn],
        ok_actions=[topic.arn],
        tags=spec.tags("S5"),
        opts=opts,
    )
    return topic

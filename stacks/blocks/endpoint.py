"""S3: ``<prefix>.cloud.<domain>`` → an Application Load Balancer, HTTPS 443 only, modern TLS,
a certificate validated through DNS; the instance behind it on the application port (HTTPS).
"""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_aws as aws

from erpcloud import policy
from stacks.blocks import child
from stacks.blocks.access_logs import AccessLogs
from stacks.blocks.firewall import Firewall
from stacks.blocks.network import Network
from stacks.spec import EnvironmentSpec

VALIDATION_RECORD_TTL = 300


@dataclass(frozen=True)
class Endpoint:
    load_balancer: aws.lb.LoadBalancer
    target_group: aws.lb.TargetGroup
    listener: aws.lb.Listener


def endpoint(
    owner: pulumi.Resource,
    name: str,
    spec: EnvironmentSpec,
    provider: aws.Provider,
    *,
    network: Network,
    firewall: Firewall,
    zone_id: pulumi.Input[str],
    instance_id: pulumi.Input[str],
    access_logs: AccessLogs,
) -> Endpoint:
    opts = child(owner, provider)
    certificate = aws.acm.Certificate(
        f"{name}-certificate",
        domain_name=spec.host,
        validation_method="DNS",
        tags=spec.tags("S3"),
        opts=opts,
    )
    challenge = certificate.domain_validation_options.apply(lambda options: options[0])
    validation_record = aws.route53.Record(
        f"{name}-certificate-record",
        zone_id=zone_id,
        name=challenge.resource_record_name,
        type=challenge.resource_record_type,
        records=[challenge.resource_record_value],
        ttl=VALIDATION_RECORD_TTL,
        opts=opts,
    )
    validation = aws.acm.CertificateValidation(
        f"{name}-certificate-validation",
        certificate_arn=certificate.arn,
        validation_record_fqdns=[validation_record.fqdn],
        opts=opts,
    )
    load_balancer = aws.lb.LoadBalancer(
        f"{name}-alb",
        load_balancer_type="application",
        internal=False,
        security_groups=[firewall.load_balancer_group.id],
        subnets=network.subnet_ids,
        drop_invalid_header_fields=True,
        access_logs=access_logs.settings(spec.environment.value),
        tags=spec.tags("S3"),
        opts=child(owner, provider, depends_on=[access_logs.policy]),
    )
    target_group = aws.lb.TargetGroup(
        f"{name}-targets",
        port=policy.APP_PORT,
        protocol="HTTPS",
        target_type="instance",
        vpc_id=network.vpc_id,
        health_check={
            "protocol": "HTTPS",
            "port": "traffic-port",
            "path": "/",
            "matcher": "200-399",
        },
        tags=spec.tags("S3"),
        opts=opts,
    )
    aws.lb.TargetGroupAttachment(
        f"{name}-target",
        target_group_arn=target_group.arn,
        target_id=instance_id,
        port=policy.APP_PORT,
        opts=opts,
    )
    listener = aws.lb.Listener(
        f"{name}-https",
        load_balancer_arn=load_balancer.arn,
        port=policy.HTTPS_PORT,
        protocol="HTTPS",
        ssl_policy=policy.ALB_TLS_POLICY,
        certificate_arn=validation.certificate_arn,
        default_actions=[{"type": "forward", "target_group_arn": target_group.arn}],
        tags=spec.tags("S3"),
        opts=opts,
    )
    aws.route53.Record(
        f"{name}-dns",
        zone_id=zone_id,
        name=spec.host,
        type="A",
        aliases=[
            {
                "name": load_balancer.dns_name,
                "zone_id": load_balancer.zone_id,
                "evaluate_target_health": True,
            }
        ],
        opts=opts,
    )
    return Endpoint(load_balancer=load_balancer, target_group=target_group, listener=listener)

"""S3/S4: the only ways in. HTTPS 443 to the load balancer; the application port only from the
load balancer's security group; SSH 22 only from the customer's networks. Nothing on port 80.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

import pulumi
import pulumi_aws as aws

from erpcloud import policy
from stacks.blocks import child
from stacks.blocks.network import ANYWHERE_IPV4
from stacks.spec import EnvironmentSpec


@dataclass(frozen=True)
class Firewall:
    load_balancer_group: aws.ec2.SecurityGroup
    instance_group: aws.ec2.SecurityGroup


def _cidr_argument(cidr: str) -> dict[str, str]:
    network = ipaddress.ip_network(cidr)
    return {"cidr_ipv6": cidr} if network.version == 6 else {"cidr_ipv4": cidr}


def firewall(
    owner: pulumi.Resource,
    name: str,
    spec: EnvironmentSpec,
    provider: aws.Provider,
    vpc_id: pulumi.Input[str],
) -> Firewall:
    opts = child(owner, provider)
    alb_sg = aws.ec2.SecurityGroup(
        f"{name}-alb-sg",
        vpc_id=vpc_id,
        description=f"{spec.host}: HTTPS {policy.HTTPS_PORT} only (S3)",
        tags=spec.tags("S3", Name=f"{spec.customer.id}-{spec.environment.value}-alb"),
        opts=opts,
    )
    instance_sg = aws.ec2.SecurityGroup(
        f"{name}-instance-sg",
        vpc_id=vpc_id,
        description=f"{spec.host}: app from the load balancer (S3), SSH from the customer (S4)",
        tags=spec.tags("S3", Name=f"{spec.customer.id}-{spec.environment.value}-instance"),
        opts=opts,
    )
    aws.vpc.SecurityGroupIngressRule(
        f"{name}-alb-in-https",
        security_group_id=alb_sg.id,
        description="S3: HTTPS from anywhere (port 80 is never opened)",
        ip_protocol="tcp",
        from_port=policy.HTTPS_PORT,
        to_port=policy.HTTPS_PORT,
        cidr_ipv4=ANYWHERE_IPV4,
        tags=spec.tags("S3"),
        opts=opts,
    )
    aws.vpc.SecurityGroupEgressRule(
        f"{name}-alb-out-app",
        security_group_id=alb_sg.id,
        description="S3: to the application port of this environment's instance only",
        ip_protocol="tcp",
        from_port=policy.APP_PORT,
        to_port=policy.APP_PORT,
        referenced_security_group_id=instance_sg.id,
        tags=spec.tags("S3"),
        opts=opts,
    )
    aws.vpc.SecurityGroupIngressRule(
        f"{name}-instance-in-app",
        security_group_id=instance_sg.id,
        description="S3: HTTPS to the application, from the load balancer only",
        ip_protocol="tcp",
        from_port=policy.APP_PORT,
        to_port=policy.APP_PORT,
        referenced_security_group_id=alb_sg.id,
        tags=spec.tags("S3"),
        opts=opts,
    )
    for index, cidr in enumerate(spec.customer.ssh.allowed_cidrs):
        aws.vpc.SecurityGroupIngressRule(
            f"{name}-instance-in-ssh-{index}",
            security_group_id=instance_sg.id,
            description=f"S4: SSH/SFTP from the customer's network {cidr}",
            ip_protocol="tcp",
            from_port=policy.SSH_PORT,
            to_port=policy.SSH_PORT,
            tags=spec.tags("S4"),
            opts=opts,
            **_cidr_argument(cidr),
        )
    aws.vpc.SecurityGroupEgressRule(
        f"{name}-instance-out-https",
        security_group_id=instance_sg.id,
        description="S1/S5/S6: HTTPS to AWS APIs (Secrets Manager, S3, CloudWatch)",
        ip_protocol="tcp",
        from_port=policy.HTTPS_PORT,
        to_port=policy.HTTPS_PORT,
        cidr_ipv4=ANYWHERE_IPV4,
        tags=spec.tags("S1"),
        opts=opts,
    )
    return Firewall(load_balancer_group=alb_sg, instance_group=instance_sg)

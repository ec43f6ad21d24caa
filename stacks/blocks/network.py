"""The customer's own VPC: two public subnets in two zones (the load balancer needs two).

Production creates it; the test environment is placed in it too, kept apart by security groups
(S9). The VPC's default security group is adopted and emptied, so no rule exists anywhere that
the program did not write (S3: no port 80).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

import pulumi
import pulumi_aws as aws

from stacks.blocks import child, lookup
from stacks.spec import EnvironmentSpec

VPC_CIDR: Final = "10.20.0.0/16"
SUBNET_CIDRS: Final = ("10.20.0.0/24", "10.20.1.0/24")
ANYWHERE_IPV4: Final = "0.0.0.0/0"


@dataclass(frozen=True)
class Network:
    vpc_id: pulumi.Output[str]
    subnet_ids: list[pulumi.Output[str]]
    availability_zones: list[pulumi.Output[str]]


def network(
    owner: pulumi.Resource, name: str, spec: EnvironmentSpec, provider: aws.Provider
) -> Network:
    zones = aws.get_availability_zones_output(state="available", opts=lookup(owner, provider))
    vpc = aws.ec2.Vpc(
        f"{name}-vpc",
        cidr_block=VPC_CIDR,
        enable_dns_support=True,
        enable_dns_hostnames=True,
        tags=spec.tags("S1", Name=f"{spec.customer.id}-vpc"),
        opts=child(owner, provider),
    )
    aws.ec2.DefaultSecurityGroup(
        f"{name}-default-sg",
        vpc_id=vpc.id,
        ingress=[],
        egress=[],
        tags=spec.tags("S3", Name=f"{spec.customer.id}-default-sg-unused"),
        opts=child(owner, provider),
    )
    gateway = aws.ec2.InternetGateway(
        f"{name}-igw", vpc_id=vpc.id, tags=spec.tags("S3"), opts=child(owner, provider)
    )
    routes = aws.ec2.RouteTable(
        f"{name}-public-routes", vpc_id=vpc.id, tags=spec.tags("S3"), opts=child(owner, provider)
    )
    aws.ec2.Route(
        f"{name}-internet-route",
        route_table_id=routes.id,
        destination_cidr_block=ANYWHERE_IPV4,
        gateway_id=gateway.id,
        opts=child(owner, provider),
    )
    subnet_ids: list[pulumi.Output[str]] = []
    zone_names: list[pulumi.Output[str]] = []
    for index, cidr in enumerate(SUBNET_CIDRS):
        zone = zones.names[index]
        subnet = aws.ec2.Subnet(
            f"{name}-public-{index}",
            vpc_id=vpc.id,
            cidr_block=cidr,
            availability_zone=zone,
            map_public_ip_on_launch=False,
            tags=spec.tags("S3", Name=f"{spec.customer.id}-public-{index}"),
            opts=child(owner, provider),
        )
        aws.ec2.RouteTableAssociation(
            f"{name}-public-{index}-routes",
            subnet_id=subnet.id,
            route_table_id=routes.id,
            opts=child(owner, provider),
        )
        subnet_ids.append(subnet.id)
        zone_names.append(zone)
    return Network(vpc_id=vpc.id, subnet_ids=subnet_ids, availability_zones=zone_names)

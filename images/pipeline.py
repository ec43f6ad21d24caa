"""``ProductImagePipeline``: the EC2 Image Builder pipeline of the product image, per release (S1).

Component (:mod:`images.component`) → recipe (Debian 13 parent, AWS-managed update, CLI and
CloudWatch agent components, ours last; encrypted root volume) → infrastructure configuration
(IMDSv2 build instances, terminated on failure) → distribution into every region customers run
in, each AMI tagged as :mod:`images.lookup` finds it → pipeline on a monthly schedule ahead of
the maintenance window (S11), with image tests on.

Image Builder components and recipes are immutable per version, so their versions are derived
from their content: a changed document is a new version, never an in-place edit.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

import pulumi
import pulumi_aws as aws

from erpcloud import policy
from images.component import PRODUCT_PREFIX, product_component
from images.lookup import IMAGE_NAME, image_tags, pipeline_name

COMPONENT_TYPE: Final = "erpcloud:index:ProductImagePipeline"
#: The parent image: Debian 13 "trixie", the newest official AMI of the Debian cloud team, read
#: from the public SSM parameter Debian publishes in every region (Image Builder resolves an
#: ``ssm:`` parent at build time). The local build (localtarget/image.py) starts from the same
#: release, so what boots locally is what boots on AWS.
PARENT_IMAGE: Final = "ssm:/aws/service/debian/release/13/latest/amd64"
#: AWS-managed components, in build order, before ours.
MANAGED_COMPONENTS: Final = (
    "update-linux",
    "aws-cli-version-2-linux",
    "amazon-cloudwatch-agent-linux",
)
BUILD_INSTANCE_TYPES: Final = ("m6i.large",)
IMAGE_TEST_TIMEOUT_MINUTES: Final = 90
MANAGED_POLICIES: Final = (
    "arn:aws:iam::aws:policy/EC2InstanceProfileForImageBuilder",
    "arn:aws:iam::aws:policy/AmazonSSMManagedInstanceCore",
)


def content_version(text: str) -> str:
    """A semantic version that changes with ``text`` (patch below Image Builder's 2^30 limit)."""
    return f"1.0.{int(hashlib.sha256(text.encode()).hexdigest()[:7], 16)}"


@dataclass(frozen=True)
class ProductImageArgs:
    release: str
    build_region: str
    distribution_regions: Sequence[str]
    artifact_bucket: str

    def tags(self, promise: str = "S1") -> dict[str, str]:
        return {
            "erpcloud:image": IMAGE_NAME,
            "erpcloud:product-release": self.release,
            "erpcloud:promise": promise,
        }


class ProductImagePipeline(pulumi.ComponentResource):
    """The pipeline building the product image of one release (children ``{name}-*``)."""

    pipeline_arn: pulumi.Output[str]
    component_document: str

    def __init__(
        self, name: str, args: ProductImageArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__(COMPONENT_TYPE, name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        tags = args.tags()
        document = product_component(args.release, args.artifact_bucket)
        self.component_document = document.to_yaml()
        component = aws.imagebuilder.Component(
            f"{name}-component",
            name=document.name,
            platform="Linux",
            version=content_version(self.component_document),
            data=self.component_document,
            description=document.description,
            tags=tags,
            opts=child,
        )
        managed = [
            f"arn:aws:imagebuilder:{args.build_region}:aws:component/{c}/x.x.x"
            for c in MANAGED_COMPONENTS
        ]
        recipe_components: list[pulumi.Input[str]] = [*managed, component.arn]
        recipe = aws.imagebuilder.ImageRecipe(
            f"{name}-recipe",
            name=pipeline_name(args.release),
            parent_image=PARENT_IMAGE,
            version=content_version(json.dumps([*managed, document.digest])),
            components=[
                aws.imagebuilder.ImageRecipeComponentArgs(component_arn=arn)
                for arn in recipe_components
            ],
            block_device_mappings=[
                {
                    "device_name": "/dev/sda1",
                    "ebs": {
                        "volume_size": policy.ROOT_VOLUME_GIB,
                        "volume_type": "gp3",
                        "encrypted": "true",
                        "delete_on_termination": "true",
                    },
                }
            ],
            tags=tags,
            opts=child,
        )
        role = aws.iam.Role(
            f"{name}-build-role",
            description=f"Image Builder instances of {pipeline_name(args.release)} (S1)",
            assume_role_policy=json.dumps(
                {
                    "Version": "2012-10-17",
                    "Statement": [
                        {
                            "Effect": "Allow",
                            "Principal": {"Service": "ec2.amazonaws.com"},
                            "Action": "sts:AssumeRole",
                        }
                    ],
                }
            ),
            tags=tags,
            opts=child,
        )
        for index, arn in enumerate(MANAGED_POLICIES):
            aws.iam.RolePolicyAttachment(
                f"{name}-build-role-managed-{index}", role=role.name, policy_arn=arn, opts=child
            )
        aws.iam.RolePolicy(
            f"{name}-build-role-artifacts",
            role=role.id,
            policy=json.dumps(
                {
                    "Version": "2012-10-17",
                    "Statement": [
                        {
                            "Sid": "ReadProductArchive",
                            "Effect": "Allow",
                            "Action": ["s3:GetObject"],
                            "Resource": (
                                f"arn:aws:s3:::{args.artifact_bucket}/{PRODUCT_PREFIX}/"
                                f"{args.release}/*"
                            ),
                        }
                    ],
                }
            ),
            opts=child,
        )
        profile = aws.iam.InstanceProfile(
            f"{name}-build-profile", role=role.name, tags=tags, opts=child
        )
        infrastructure = aws.imagebuilder.InfrastructureConfiguration(
            f"{name}-infrastructure",
            name=pipeline_name(args.release),
            instance_profile_name=profile.name,
            instance_types=list(BUILD_INSTANCE_TYPES),
            terminate_instance_on_failure=True,
            instance_metadata_options={"http_tokens": "required", "http_put_response_hop_limit": 1},
            resource_tags=tags,
            tags=tags,
            opts=child,
        )
        distribution = aws.imagebuilder.DistributionConfiguration(
            f"{name}-distribution",
            name=pipeline_name(args.release),
            distributions=[
                {
                    "region": region,
                    "ami_distribution_configuration": {
                        "name": f"{pipeline_name(args.release)}-{{{{ imagebuilder:buildDate }}}}",
                        "ami_tags": image_tags(args.release),
                    },
                }
                for region in sorted(set(args.distribution_regions))
            ],
            tags=tags,
            opts=child,
        )
        pipeline = aws.imagebuilder.ImagePipeline(
            f"{name}-pipeline",
            name=pipeline_name(args.release),
            description=f"The product image {args.release} (S1), rebuilt before each window (S11)",
            image_recipe_arn=recipe.arn,
            infrastructure_configuration_arn=infrastructure.arn,
            distribution_configuration_arn=distribution.arn,
            schedule={
                "schedule_expression": policy.IMAGE_BUILD_SCHEDULE,
                "pipeline_execution_start_condition": "EXPRESSION_MATCH_ONLY",
            },
            image_tests_configuration={
                "image_tests_enabled": True,
                "timeout_minutes": IMAGE_TEST_TIMEOUT_MINUTES,
            },
            enhanced_image_metadata_enabled=True,
            status="ENABLED",
            tags=tags,
            opts=child,
        )
        self.pipeline_arn = pipeline.arn
        self.register_outputs({"pipelineArn": pipeline.arn, "release": args.release})

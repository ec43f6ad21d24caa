"""How a customer stack finds the product image (S1): the newest available AMI the image
pipeline distributed for the customer's product release, in the customer's region.

The pipeline (:mod:`images.pipeline`) tags every AMI it distributes with these tags; the lookup
is one ``aws.ec2.get_ami`` invoke (answered by the recording engine in tests).
"""

from __future__ import annotations

from typing import Final

import pulumi
import pulumi_aws as aws

IMAGE_NAME: Final = "erpcloud-product"
TAG_IMAGE: Final = "erpcloud:image"
TAG_RELEASE: Final = "erpcloud:product-release"
TAG_PIPELINE: Final = "erpcloud:pipeline"


def image_tags(release: str) -> dict[str, str]:
    """The tags the pipeline puts on each AMI of ``release`` (and the lookup filters on)."""
    return {TAG_IMAGE: IMAGE_NAME, TAG_RELEASE: release, TAG_PIPELINE: pipeline_name(release)}


def pipeline_name(release: str) -> str:
    return f"{IMAGE_NAME}-{release.lower()}"


def image_filters(release: str) -> list[dict[str, object]]:
    filters: list[dict[str, object]] = [
        {"name": f"tag:{key}", "values": [value]} for key, value in image_tags(release).items()
    ]
    filters.append({"name": "state", "values": ["available"]})
    return filters


def latest_product_image(
    release: str,
    opts: pulumi.InvokeOutputOptions,
    owner: str = "self",
) -> pulumi.Output[aws.ec2.GetAmiResult]:
    """The newest AMI of ``release`` built by the pipeline, owned by ``owner`` (S1)."""
    return aws.ec2.get_ami_output(
        most_recent=True,
        owners=[owner],
        filters=image_filters(release),  # type: ignore[arg-type]
        opts=opts,
    )

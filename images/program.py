"""The image stack (``images/Pulumi.yaml``): one pipeline per product release the fleet runs.

Stack config: ``erpcloud-images:region`` (where the pipelines build), ``erpcloud-images:
artifactBucket`` (the product archives), optional ``erpcloud-images:customersDir``. The
releases and the distribution regions come from the customer files, so a new customer in a new
region or on a new release gets its image from the next ``pulumi up`` of this stack.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Final

import pulumi
import pulumi_aws as aws

from erpcloud.fleet import load_fleet
from erpcloud.model import Customer
from images.pipeline import ProductImageArgs, ProductImagePipeline

CONFIG_NAMESPACE: Final = "erpcloud-images"
REPOSITORY_ROOT: Final = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class ImageStackSettings:
    build_region: str
    artifact_bucket: str


def releases_and_regions(customers: list[Customer]) -> dict[str, list[str]]:
    """Each product release in use and the regions its customers run in (S1, S10)."""
    wanted: dict[str, set[str]] = {}
    for customer in customers:
        wanted.setdefault(customer.version.release, set()).add(customer.region)
    return {release: sorted(regions) for release, regions in sorted(wanted.items())}


def deploy_images(
    customers: list[Customer], settings: ImageStackSettings
) -> dict[str, ProductImagePipeline]:
    provider = aws.Provider("images-build-region", region=settings.build_region)
    pipelines = {}
    for release, regions in releases_and_regions(customers).items():
        pipelines[release] = ProductImagePipeline(
            f"product-{release.lower()}",
            ProductImageArgs(
                release=release,
                build_region=settings.build_region,
                distribution_regions=regions,
                artifact_bucket=settings.artifact_bucket,
            ),
            opts=pulumi.ResourceOptions(providers=[provider]),
        )
    pulumi.export("pipelines", {r: p.pipeline_arn for r, p in pipelines.items()})
    return pipelines


def main() -> None:
    config = pulumi.Config(CONFIG_NAMESPACE)
    directory = Path(config.get("customersDir") or REPOSITORY_ROOT / "customers")
    fleet = load_fleet(directory)
    if fleet.errors:
        raise ValueError("customer files are invalid:\n" + "\n".join(map(str, fleet.errors)))
    settings = ImageStackSettings(
        build_region=config.require("region"), artifact_bucket=config.require("artifactBucket")
    )
    deploy_images(list(fleet.customers.values()), settings)

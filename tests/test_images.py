"""The product image (S1): the component document, the pipeline, and the join with the stacks."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError

from erpcloud import policy
from erpcloud.model import Customer
from images.component import (
    Action,
    ComponentDocument,
    PhaseName,
    image_file,
    product_component,
)
from images.lookup import image_tags
from images.pipeline import MANAGED_COMPONENTS, content_version
from images.program import ImageStackSettings, deploy_images, releases_and_regions
from stacks.plan import record_customer
from stacks.recording import Recording, run_program

BUILD_REGION = "ap-southeast-2"  # any region; the pipeline builds where its stack says
ARTIFACTS = "erpcloud-artifacts-test"


@pytest.fixture(scope="module")
def document() -> ComponentDocument:
    return product_component("25Q4", ARTIFACTS)


@pytest.fixture(scope="module")
def images_run(sample_fleet: dict[str, Customer]) -> Recording:
    customers = list(sample_fleet.values())
    return run_program(
        lambda: deploy_images(customers, ImageStackSettings(BUILD_REGION, ARTIFACTS)),
        stack="images",
        project="erpcloud-images",
    )


def bash_syntax(script: str) -> subprocess.CompletedProcess[str]:
    bash = shutil.which("bash")
    assert bash is not None
    return subprocess.run([bash, "-n"], input=script, capture_output=True, text=True, check=False)


def test_the_component_document_round_trips_through_its_schema(document):
    text = document.to_yaml()
    data = yaml.safe_load(text)
    assert data["schemaVersion"] == "1.0"
    assert [p["name"] for p in data["phases"]] == ["build", "validate", "test"]
    assert all(s["action"] in {a.value for a in Action} for p in data["phases"] for s in p["steps"])
    assert ComponentDocument.from_yaml(text) == document


def test_every_build_step_is_valid_bash(document):
    scripts = ["\n".join(step.commands) for _, step in document.steps() if step.commands]
    scripts += [
        f.content
        for _, step in document.steps()
        for f in step.files
        if f.content.startswith("#!/bin/bash")
    ]
    assert len(scripts) >= 6
    for script in scripts:
        result = bash_syntax(script)
        assert result.returncode == 0, result.stderr


def test_a_broken_script_is_refused_by_the_bash_check():
    assert bash_syntax("if true; then echo unfinished\n").returncode != 0


def test_the_image_installs_what_s1_promises(document):
    build = "\n".join(
        c for phase, s in document.steps() if phase is PhaseName.BUILD for c in s.commands
    )
    assert "postgresql-17" in build and "pgbackrest" in build and "xfsprogs" in build
    assert "apt.postgresql.org" not in build  # Debian 13's own archive carries both (S1)
    assert f"s3://{ARTIFACTS}/product/25Q4/erp-25Q4.tar.gz" in build
    assert "sha256sum --check" in build
    files = {f.path: f for _, s in document.steps() for f in s.files}
    assert files["/usr/local/lib/erpcloud/prepare-data-volume"].permissions == "0755"
    assert files["/usr/local/lib/erpcloud/growfs"].content == image_file("growfs.sh")
    assert "xfs_growfs" in image_file("growfs.sh")
    unit = files["/etc/systemd/system/erpcloud-data-volume.service"].content
    assert "Before=postgresql.service" in unit


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda d: d["phases"][0].update(name="deploy"), "phases"),
        (
            lambda d: d["phases"][0]["steps"].append(dict(d["phases"][0]["steps"][0])),
            "duplicate step",
        ),
        (lambda d: d["phases"][0]["steps"][0].update(inputs={"commands": []}), "non-empty"),
        (lambda d: d["phases"][0]["steps"][0].update(name="1-bad name"), "step name"),
        (lambda d: d["phases"][0]["steps"][0].update(action="RunPowerShell"), "action"),
        (lambda d: d.update(schemaVersion="2.0"), "schemaVersion"),
        (lambda d: d["phases"][0]["steps"][0].update(onFailure="Retry"), "onFailure"),
    ],
    ids=["phase", "duplicate", "empty-commands", "step-name", "action", "schema", "on-failure"],
)
def test_the_schema_refuses_a_wrong_document(document, change, message):
    data = yaml.safe_load(document.to_yaml())
    change(data)
    with pytest.raises(ValidationError, match=message):
        ComponentDocument.model_validate(data)


def test_the_pipeline_resources(images_run: Recording, document, sample_fleet):
    wanted = releases_and_regions(list(sample_fleet.values()))
    pipelines = images_run.of_type("aws:imagebuilder/imagePipeline:ImagePipeline")
    assert len(pipelines) == len(wanted)
    for pipeline in pipelines:
        assert pipeline.inputs["schedule"]["scheduleExpression"] == policy.IMAGE_BUILD_SCHEDULE
        assert pipeline.inputs["imageTestsConfiguration"]["imageTestsEnabled"] is True
    component = images_run.named("product-25q4-component")
    assert component.inputs["data"] == document.to_yaml()
    assert component.inputs["version"] == content_version(document.to_yaml())
    assert component.inputs["platform"] == "Linux"
    recipe = images_run.named("product-25q4-recipe").inputs
    arns = [c["componentArn"] for c in recipe["components"]]
    assert [a.split("/")[1] for a in arns[:-1]] == list(MANAGED_COMPONENTS)
    assert arns[-1] == component.outputs["arn"]  # ours last, after the CloudWatch agent
    assert recipe["parentImage"] == "ssm:/aws/service/debian/release/13/latest/amd64"
    assert recipe["blockDeviceMappings"][0]["ebs"]["encrypted"] == "true"
    infrastructure = images_run.named("product-25q4-infrastructure").inputs
    assert infrastructure["instanceMetadataOptions"]["httpTokens"] == "required"
    assert infrastructure["terminateInstanceOnFailure"] is True
    artifacts = json.loads(images_run.named("product-25q4-build-role-artifacts").inputs["policy"])
    assert artifacts["Statement"][0]["Resource"] == f"arn:aws:s3:::{ARTIFACTS}/product/25Q4/*"
    assert {images_run.region_of(r) for r in images_run.resources if r.custom} == {BUILD_REGION}


def test_a_changed_document_is_a_new_component_version(document):
    other = product_component("26Q1", ARTIFACTS)
    assert content_version(document.to_yaml()) != content_version(other.to_yaml())
    assert content_version(document.to_yaml()) == content_version(document.to_yaml())
    patch = int(content_version(document.to_yaml()).split(".")[2])
    assert patch < 2**30


def test_every_customer_finds_the_image_its_release_pipeline_distributes(
    images_run: Recording, sample_fleet: dict[str, Customer]
):
    """The join between images/ and stacks/: the customer's AMI lookup filters on exactly the
    tags the pipeline of its release puts on the AMIs it distributes to the customer's region."""
    distributions = {
        r.name.removeprefix("product-").removesuffix("-distribution"): r.inputs["distributions"]
        for r in images_run.of_type(
            "aws:imagebuilder/distributionConfiguration:DistributionConfiguration"
        )
    }
    for customer in sample_fleet.values():
        release = customer.version.release
        by_region = {d["region"]: d for d in distributions[release.lower()]}
        distributed = by_region[customer.region]["amiDistributionConfiguration"]["amiTags"]
        recording = record_customer(customer)
        (lookup,) = [i for i in recording.invokes if i.token == "aws:ec2/getAmi:getAmi"]
        filters = {f["name"]: f["values"] for f in lookup.args["filters"]}
        assert filters.pop("state") == ["available"]
        assert {k.removeprefix("tag:"): v[0] for k, v in filters.items()} == distributed
        assert distributed == image_tags(release)
        assert lookup.args["mostRecent"] is True
        provider = recording.by_urn()[lookup.provider_ref.rsplit("::", 1)[0]]
        assert provider.inputs["region"] == customer.region


def test_image_files_are_shipped_with_the_package():
    folder = Path(__file__).resolve().parent.parent / "images" / "files"
    assert {p.name for p in folder.iterdir()} >= {
        "prepare-data-volume.sh",
        "growfs.sh",
        "erpcloud-data-volume.service",
        "erpcloud-growfs.service",
        "erpcloud-growfs.timer",
    }

"""The product image's build steps as an EC2 Image Builder (AWSTOE) component document (S1).

The document is a typed model (:class:`ComponentDocument`), rendered to YAML and read back
through the same model, so a wrong phase name, a duplicate step, an unknown action or a step
without its inputs fails here, not in the pipeline. Scripts the image installs live in
``images/files/`` (checked with ``bash -n`` by the tests).

What the image carries (S1): Debian 13 "trixie" (the parent image), PostgreSQL 17 and
pgBackRest 2.55 from Debian's own archive, the product of one release, the CloudWatch agent and
the AWS CLI (AWS-managed components in the recipe), and the units that mount the data volume and
grow its file system (S2). The same document is built twice: by EC2 Image Builder on AWS, and
on this machine by ``localtarget/image.py`` (a debootstrapped Debian 13 root).
"""

from __future__ import annotations

import hashlib
import re
from enum import StrEnum
from importlib import resources
from typing import Annotated, Any, Final, Literal, Self

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from erpcloud.render import HostLayout

_STEP_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_-]{0,127}$")
#: Where the product archives are: ``s3://<bucket>/product/<release>/erp-<release>.tar.gz``
#: with a ``.sha256`` file beside it.
PRODUCT_PREFIX: Final = "product"


class PhaseName(StrEnum):
    BUILD = "build"
    VALIDATE = "validate"
    TEST = "test"


class Action(StrEnum):
    EXECUTE_BASH = "ExecuteBash"
    CREATE_FILE = "CreateFile"
    UPDATE_OS = "UpdateOS"
    REBOOT = "Reboot"


class OnFailure(StrEnum):
    ABORT = "Abort"
    CONTINUE = "Continue"
    IGNORE = "Ignore"


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class FileToCreate(_Model):
    """One ``CreateFile`` entry."""

    path: Annotated[str, Field(pattern=r"^/")]
    content: str
    permissions: Annotated[str, Field(pattern=r"^[0-7]{3,4}$")] = "0644"
    owner: str = "root"
    group: str = "root"


class Step(_Model):
    name: str
    action: Action
    inputs: dict[str, Any] | list[FileToCreate] | None = None
    on_failure: OnFailure = Field(default=OnFailure.ABORT, alias="onFailure")
    timeout_seconds: Annotated[int, Field(ge=1, le=43200)] | None = Field(
        default=None, alias="timeoutSeconds"
    )

    @field_validator("name")
    @classmethod
    def _name_shape(cls, value: str) -> str:
        if not _STEP_NAME.match(value):
            raise ValueError(f"step name {value!r}: letters, digits, '_' or '-', a letter first")
        return value

    @model_validator(mode="after")
    def _inputs_fit_action(self) -> Self:
        if self.action is Action.EXECUTE_BASH:
            commands = self.inputs.get("commands") if isinstance(self.inputs, dict) else None
            if not commands or not all(isinstance(c, str) and c.strip() for c in commands):
                raise ValueError(f"step {self.name}: ExecuteBash needs non-empty 'commands'")
            if set(self.inputs or {}) != {"commands"}:
                raise ValueError(f"step {self.name}: ExecuteBash takes only 'commands'")
        elif self.action is Action.CREATE_FILE:
            if not isinstance(self.inputs, list) or not self.inputs:
                raise ValueError(f"step {self.name}: CreateFile needs a list of files")
        elif isinstance(self.inputs, list):
            raise ValueError(f"step {self.name}: {self.action.value} takes a mapping")
        elif self.action is Action.REBOOT and set(self.inputs or {}) - {"delaySeconds"}:
            raise ValueError(f"step {self.name}: Reboot takes only 'delaySeconds'")
        return self

    @property
    def commands(self) -> list[str]:
        if self.action is not Action.EXECUTE_BASH or not isinstance(self.inputs, dict):
            return []
        return [str(c) for c in self.inputs["commands"]]

    @property
    def files(self) -> list[FileToCreate]:
        return list(self.inputs) if isinstance(self.inputs, list) else []


class Phase(_Model):
    name: PhaseName
    steps: Annotated[list[Step], Field(min_length=1)]

    @model_validator(mode="after")
    def _unique_steps(self) -> Self:
        names = [s.name for s in self.steps]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"phase {self.name.value}: duplicate step names {duplicates}")
        return self


class ComponentDocument(_Model):
    """An AWSTOE component document, schema version 1.0."""

    name: Annotated[str, Field(min_length=1, max_length=126)]
    description: str
    schema_version: Literal["1.0"] = Field(default="1.0", alias="schemaVersion")
    phases: Annotated[list[Phase], Field(min_length=1)]

    @model_validator(mode="after")
    def _unique_phases(self) -> Self:
        names = [p.name for p in self.phases]
        if len(set(names)) != len(names):
            raise ValueError("phase names must be unique within a document")
        if PhaseName.BUILD not in names:
            raise ValueError("a component must have a build phase")
        return self

    def to_yaml(self) -> str:
        data = self.model_dump(mode="json", by_alias=True, exclude_none=True)
        return yaml.dump(data, Dumper=_BlockDumper, sort_keys=False, width=100)

    @classmethod
    def from_yaml(cls, text: str) -> ComponentDocument:
        return cls.model_validate(yaml.safe_load(text))

    def steps(self) -> list[tuple[PhaseName, Step]]:
        return [(phase.name, step) for phase in self.phases for step in phase.steps]

    @property
    def digest(self) -> str:
        return hashlib.sha256(self.to_yaml().encode()).hexdigest()


class _BlockDumper(yaml.SafeDumper):
    """Multi-line strings (scripts, unit files) as readable ``|`` blocks."""


def _represent_str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_BlockDumper.add_representer(str, _represent_str)


def image_file(name: str) -> str:
    return resources.files("images").joinpath(f"files/{name}").read_text(encoding="utf-8")


#: Where the build fetches the product archive (and its ``.sha256``) for the install step. On
#: AWS the ``FetchProductArchive`` step downloads it from the artifact bucket; the local build
#: (``localtarget/image.py``) puts the stand-in product's archive there instead, and runs every
#: other step as written.
PRODUCT_ARCHIVE_DIR: Final = "/var/tmp/erp-product"  # noqa: S108 - made 0700 by root first
FETCH_PRODUCT_STEP: Final = "FetchProductArchive"
#: Debian 13's own archive carries both (S1): no third-party repository in the image.
IMAGE_PACKAGES: Final = ("pgbackrest", "xfsprogs", "lz4", "openssl")


def product_component(release: str, artifact_bucket: str) -> ComponentDocument:
    """The build, validate and test steps of the product image for one release (S1, S2)."""
    layout = HostLayout()
    pg = layout.pg_version
    archive = f"s3://{artifact_bucket}/{PRODUCT_PREFIX}/{release}/erp-{release}.tar.gz"
    staged = f"{PRODUCT_ARCHIVE_DIR}/erp.tar.gz"
    bash = Action.EXECUTE_BASH
    build = Phase(
        name=PhaseName.BUILD,
        steps=[
            Step(
                name="InstallPostgreSQL",
                action=bash,
                inputs={
                    "commands": [
                        "set -euo pipefail",
                        "apt-get update -q",
                        "DEBIAN_FRONTEND=noninteractive apt-get install -y -q "
                        "--no-install-recommends "
                        f"postgresql-{pg} postgresql-client-{pg} {' '.join(IMAGE_PACKAGES)}",
                        "systemctl enable postgresql",
                    ]
                },
                timeout_seconds=1800,
            ),
            Step(
                name=FETCH_PRODUCT_STEP,
                action=bash,
                inputs={
                    "commands": [
                        "set -euo pipefail",
                        f"install -d -m 0700 {PRODUCT_ARCHIVE_DIR}",
                        f'aws s3 cp "{archive}" {staged}',
                        f'aws s3 cp "{archive}.sha256" {staged}.sha256',
                    ]
                },
                timeout_seconds=1800,
            ),
            Step(
                name="InstallProduct",
                action=bash,
                inputs={
                    "commands": [
                        "set -euo pipefail",
                        "id -u erp >/dev/null 2>&1 || useradd --system --home /opt/erp "
                        "--shell /usr/sbin/nologin erp",
                        f'echo "$(cut -d" " -f1 {staged}.sha256)  {staged}"'
                        " | sha256sum --check --strict",
                        "install -d -o erp -g erp -m 0750 /opt/erp",
                        f"tar -xzf {staged} -C /opt/erp --no-same-owner",
                        "chown -R erp:erp /opt/erp",
                        f"rm -rf {PRODUCT_ARCHIVE_DIR}",
                    ]
                },
                timeout_seconds=600,
            ),
            Step(
                name="InstallDataVolumeUnits",
                action=Action.CREATE_FILE,
                inputs=[
                    FileToCreate(
                        path="/usr/local/lib/erpcloud/prepare-data-volume",
                        content=image_file("prepare-data-volume.sh"),
                        permissions="0755",
                    ),
                    FileToCreate(
                        path="/usr/local/lib/erpcloud/growfs",
                        content=image_file("growfs.sh"),
                        permissions="0755",
                    ),
                    FileToCreate(
                        path="/usr/local/lib/erpcloud/product-database",
                        content=image_file("product-database.sh"),
                        permissions="0755",
                    ),
                    FileToCreate(
                        path="/etc/systemd/system/erpcloud-data-volume.service",
                        content=image_file("erpcloud-data-volume.service"),
                    ),
                    FileToCreate(
                        path="/etc/systemd/system/erpcloud-growfs.service",
                        content=image_file("erpcloud-growfs.service"),
                    ),
                    FileToCreate(
                        path="/etc/systemd/system/erpcloud-growfs.timer",
                        content=image_file("erpcloud-growfs.timer"),
                    ),
                ],
            ),
            Step(
                name="EnableDataVolumeUnits",
                action=bash,
                inputs={
                    "commands": [
                        "set -euo pipefail",
                        # enable reloads a running manager itself, and works offline too (the
                        # local build runs the steps in a root that is not booted).
                        "systemctl enable erpcloud-data-volume.service erpcloud-growfs.timer",
                    ]
                },
            ),
        ],
    )
    validate = Phase(
        name=PhaseName.VALIDATE,
        steps=[
            Step(
                name="CheckInstalled",
                action=bash,
                inputs={
                    "commands": [
                        "set -euo pipefail",
                        "test -x /opt/erp/bin/erp-server",
                        f"test -d /usr/lib/postgresql/{pg}/bin",
                        "pgbackrest version",
                        "test -x /opt/aws/amazon-cloudwatch-agent/bin/amazon-cloudwatch-agent-ctl",
                        "aws --version",
                        "systemctl is-enabled erpcloud-data-volume.service erpcloud-growfs.timer",
                    ]
                },
            )
        ],
    )
    test = Phase(
        name=PhaseName.TEST,
        steps=[
            Step(
                name="CheckServices",
                action=bash,
                inputs={
                    "commands": [
                        "set -euo pipefail",
                        f"pg_lsclusters | grep -q '^{pg} '",
                        "systemctl is-active --quiet erpcloud-growfs.timer",
                    ]
                },
            )
        ],
    )
    return ComponentDocument(
        name=f"erpcloud-product-{release.lower()}",
        description=(
            f"erpcloud product image {release}: Debian 13, PostgreSQL {pg}, pgBackRest, "
            "the product, data volume units (S1, S2)"
        ),
        phases=[build, validate, test],
    )

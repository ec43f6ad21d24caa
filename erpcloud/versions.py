"""Product versions and the release list (S15 supported versions, S19 move-in minimum).

A version is a quarterly release with an optional maintenance pack: ``25Q2`` or ``25Q2.3``.
Releases before 2020 carried an edition prefix: ``RR15Q2`` (Commerce) and ``PR15Q2`` (Business);
the prefix is kept for display and ignored for ordering.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date
from enum import StrEnum
from functools import cache, total_ordering
from importlib import resources

import yaml

from erpcloud import policy

_VERSION = re.compile(
    r"^(?P<prefix>RR|PR)?(?P<year>\d{2})Q(?P<quarter>[1-4])(?:\.(?P<mp>\d{1,3}))?$"
)


@total_ordering
@dataclass(frozen=True)
class ProductVersion:
    year: int
    quarter: int
    maintenance_pack: int = 0
    prefix: str = ""

    @classmethod
    def parse(cls, text: str) -> ProductVersion:
        match = _VERSION.match(text.strip())
        if match is None:
            raise ValueError(
                f"{text!r} is not a product version: expected YYQn or YYQn.MP "
                "(e.g. '25Q2' or '25Q2.1'; before 2020 'RR15Q2' or 'PR15Q2')"
            )
        return cls(
            year=int(match["year"]),
            quarter=int(match["quarter"]),
            maintenance_pack=int(match["mp"] or 0),
            prefix=match["prefix"] or "",
        )

    @property
    def release(self) -> str:
        """The quarterly release this version belongs to, without prefix or pack: ``25Q2``."""
        return f"{self.year:02d}Q{self.quarter}"

    def _key(self) -> tuple[int, int, int]:
        return (self.year, self.quarter, self.maintenance_pack)

    def __lt__(self, other: object) -> bool:
        if not isinstance(other, ProductVersion):
            return NotImplemented
        return self._key() < other._key()

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ProductVersion):
            return NotImplemented
        return self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    def __str__(self) -> str:
        mp = f".{self.maintenance_pack}" if self.maintenance_pack else ""
        return f"{self.prefix}{self.release}{mp}"


class ReleaseStatus(StrEnum):
    PRE_RELEASE = "pre-release"
    QAA = "qaa"
    CONFIRMED_STABLE = "confirmed-stable"


@dataclass(frozen=True)
class Release:
    version: ProductVersion
    released: date
    status: ReleaseStatus


@cache
def releases() -> tuple[Release, ...]:
    """The release list shipped in ``erpcloud/data/releases.yaml``, oldest first."""
    text = resources.files("erpcloud").joinpath("data/releases.yaml").read_text()
    raw = yaml.safe_load(text)["releases"]
    parsed = tuple(
        Release(ProductVersion.parse(r["name"]), r["date"], ReleaseStatus(r["status"])) for r in raw
    )
    if list(parsed) != sorted(parsed, key=lambda r: r.version):
        raise ValueError("erpcloud/data/releases.yaml: releases must be listed oldest first")
    return parsed


def oldest_supported() -> ProductVersion:
    """The oldest of the latest N "Confirmed Stable" releases (S15)."""
    stable = [r.version for r in releases() if r.status is ReleaseStatus.CONFIRMED_STABLE]
    return stable[-policy.SUPPORTED_CONFIRMED_STABLE]


def check_supported(version: ProductVersion) -> None:
    """Raise unless ``version`` is one of the latest confirmed-stable releases or newer (S15)."""
    known = {r.version.release for r in releases()}
    if version.release not in known:
        raise ValueError(f"release {version.release} is not in the release list (S15)")
    minimum = oldest_supported()
    if version < minimum:
        raise ValueError(
            f"{version} is not supported: S15 requires one of the "
            f"{policy.SUPPORTED_CONFIRMED_STABLE} latest Confirmed Stable releases or newer "
            f"(oldest supported: {minimum})"
        )


def check_move_in(version: ProductVersion, edition: policy.Edition) -> None:
    """Raise unless an on-premises installation may move to the cloud (S19, then S15)."""
    minimum = ProductVersion.parse(policy.MOVE_IN_MINIMUM_VERSION[edition])
    if version < minimum:
        raise ValueError(
            f"{version} is below the minimum version to move in for {edition.value} "
            f"({minimum}, S19)"
        )
    check_supported(version)

"""Policies live in one place: the service's numbers appear only in erpcloud/policy.py."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from erpcloud import policy

from .conftest import REPO_ROOT

CODE_DIRS = (
    "erpcloud",
    "stacks",
    "images",
    "backups",
    "maintenance",
    "dr",
    "lifecycle",
    "localtarget",
)
# Literals that encode a promise (S6, S8, S10, S12-S14, S18): writing one outside the policy
# module means a second source of truth. A line marked `aws-fact` states how AWS behaves, not
# what we promise (S3's legacy region, say), and is exempt.
PROMISE_LITERALS = [
    re.compile(r"""["']eu-west-1["']"""),
    re.compile(r"""["']us-east-1["']"""),
    re.compile(r"""["']eu-central-1["']"""),
    re.compile(r"""["']us-east-2["']"""),
    re.compile(r"timedelta\((days|hours)=(1|12|24|30|60|365)\)"),
    re.compile(r"retention[_-]?(full|days)\s*=\s*\d"),
]


def code_files() -> list[Path]:
    files: list[Path] = []
    for directory in CODE_DIRS:
        files.extend((REPO_ROOT / directory).rglob("*.py"))
    return [f for f in files if f.name != "policy.py"]


@pytest.mark.parametrize("pattern", PROMISE_LITERALS, ids=lambda p: p.pattern)
def test_no_module_repeats_a_policy_literal(pattern: re.Pattern[str]):
    offenders = [
        f"{path.relative_to(REPO_ROOT)}:{number}"
        for path in code_files()
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if pattern.search(line) and "aws-fact" not in line
    ]
    assert offenders == []


def test_policy_values_are_consistent():
    assert policy.ARCHIVE_TIMEOUT < policy.RPO_TARGET < policy.RPO  # the timeout bounds the RPO
    assert policy.ARCHIVE_LATE_AFTER < policy.RPO
    assert set(policy.COPY_REGIONS) == policy.DEFAULT_REGIONS
    assert all(policy.COPY_REGIONS[r] != r for r in policy.COPY_REGIONS)
    regions = set(policy.COPY_REGIONS) | set(policy.COPY_REGIONS.values())
    assert regions <= set(policy.REGION_TIMEZONES)
    assert policy.MAINTENANCE_WINDOW <= policy.MAJOR_CHANGE_MAX_DOWNTIME
    assert 1 <= policy.MAINTENANCE_MONDAY_OF_MONTH <= 4  # every month has four Mondays
    assert policy.TEST_ENV_MAX_RATIO == 0.5
    assert not (policy.FORBIDDEN_PORTS & {policy.HTTPS_PORT, policy.APP_PORT})

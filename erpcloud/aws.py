"""Rules of the AWS APIs themselves (not service policy), shared by whoever calls them, and the
local AWS stand-in's published test keys (an inventory may say a host needs them)."""

from __future__ import annotations

from typing import Final

#: S3's original region takes no LocationConstraint.
S3_LEGACY_REGION: Final = "us-east-1"  # aws-fact: an S3 API rule, not a service policy


def bucket_location(region: str) -> dict[str, dict[str, str]]:
    """``create_bucket`` arguments placing a bucket in ``region``."""
    if region == S3_LEGACY_REGION:
        return {}
    return {"CreateBucketConfiguration": {"LocationConstraint": region}}


#: moto's documented test keys: the local AWS stand-in's, no secret. Only the host-process
#: stand-in hands them to pgBackRest; machines sign with their instance role, as on AWS.
EMULATOR_ACCESS_KEY: Final = "testing"
EMULATOR_SECRET_KEY: Final = "testing"  # noqa: S105 - emulator-only value, documented by moto


def emulator_pgbackrest_env(repos: int = 2) -> dict[str, str]:
    """pgBackRest's S3 keys for the emulator (the environment, never a config file)."""
    env = {}
    for index in range(1, repos + 1):
        env[f"PGBACKREST_REPO{index}_S3_KEY"] = EMULATOR_ACCESS_KEY
        env[f"PGBACKREST_REPO{index}_S3_KEY_SECRET"] = EMULATOR_SECRET_KEY
    return env

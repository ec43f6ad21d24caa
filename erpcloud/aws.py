"""Rules of the AWS APIs themselves (not service policy), shared by whoever calls them."""

from __future__ import annotations

from typing import Final

#: S3's original region takes no LocationConstraint.
S3_LEGACY_REGION: Final = "us-east-1"  # aws-fact: an S3 API rule, not a service policy


def bucket_location(region: str) -> dict[str, dict[str, str]]:
    """``create_bucket`` arguments placing a bucket in ``region``."""
    if region == S3_LEGACY_REGION:
        return {}
    return {"CreateBucketConfiguration": {"LocationConstraint": region}}

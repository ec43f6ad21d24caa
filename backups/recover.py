"""Bring a customer's backup repositories back after a mass delete (issue 13, S6).

The backup buckets are versioned and the instance role may only ``DeleteObject``, which on a
versioned bucket writes a *delete marker* over the object and keeps every version; it may not
delete versions, nor change the bucket's policy, lifecycle or versioning. So a compromised
instance that deletes its whole repository leaves delete markers on top. Recovering removes the
delete markers written since the time given (``--since``: when the damage started), with the
operations role: each object's newest real version is current again, byte for byte. Markers
older than that are left alone: they are pgBackRest's own expiry (S6), not damage.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final

#: S3 deletes at most this many versions per request.
DELETE_BATCH: Final = 1000  # aws-fact


@dataclass
class BucketRecovery:
    bucket: str
    region: str
    #: Keys whose newest entry is a delete marker written since ``since``: brought back.
    restored: list[str] = field(default_factory=list)
    #: Keys deleted before ``since`` (expiry): left deleted.
    left_deleted: int = 0
    ran: bool = False


def _latest_delete_markers(s3: Any, bucket: str) -> Iterator[dict[str, Any]]:
    for page in s3.get_paginator("list_object_versions").paginate(Bucket=bucket):
        for marker in page.get("DeleteMarkers", []):
            if marker.get("IsLatest"):
                yield marker


def recover_bucket(
    s3: Any, bucket: str, region: str, since: datetime, dry_run: bool = False
) -> BucketRecovery:
    """Remove the delete markers on top of objects written since ``since``."""
    result = BucketRecovery(bucket, region)
    markers = []
    # Listings may give whole seconds: a marker in the same second as ``since`` counts.
    from_second = since.replace(microsecond=0)
    for marker in _latest_delete_markers(s3, bucket):
        if marker["LastModified"] >= from_second:
            markers.append({"Key": marker["Key"], "VersionId": marker["VersionId"]})
        else:
            result.left_deleted += 1
    result.restored = sorted(m["Key"] for m in markers)
    if dry_run:
        return result
    for start in range(0, len(markers), DELETE_BATCH):
        batch = markers[start : start + DELETE_BATCH]
        answer = s3.delete_objects(Bucket=bucket, Delete={"Objects": batch, "Quiet": True})
        if answer.get("Errors"):
            first = answer["Errors"][0]
            raise RuntimeError(f"s3://{bucket}/{first['Key']}: {first['Message']}")
    result.ran = True
    return result

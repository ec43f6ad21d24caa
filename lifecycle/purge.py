"""Purge (S18): destroy a cancelled customer's data, only after the 60 days of retention.

Refused, naming the rule, unless: ``--confirm`` repeats the customer id; the customer is
cancelled and today is on or after ``purge_allowed_from``; and it is not running in CI (``CI``
set), unless explicitly allowed. Every purge is written to the audit log before anything is
destroyed, and again with what was destroyed.

What it destroys:

* on the local machines: both backup buckets in the AWS stand-in (every object version and
  delete marker, then the bucket), the customer's secrets and KMS keys there (keys scheduled for
  deletion, as AWS does), then the machines with their disks and data volumes
  (:meth:`erpcloud.sites.LocalSite.remove`);
* on AWS: ``pulumi destroy`` of the customer's stack, after unprotecting it. There is no AWS
  account and no Pulumi CLI here, so that path returns the plan of what would be destroyed (from
  the offline plan of the real program) and the commands, labelled as not run.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from botocore.exceptions import ClientError

from erpcloud import policy
from erpcloud.audit import audit
from erpcloud.model import Customer, LifecycleState
from erpcloud.sites import LocalSite
from lifecycle.records import PURGED, append_event
from stacks.plan import BUCKET_TYPE, KMS_KEY_TYPE, SECRET_TYPE, Plan

if TYPE_CHECKING:  # the platform calls this module's destroy steps: no import back at run time
    from lifecycle.platform import Platform

#: Resource types that hold the customer's data or protect it: listed first in an AWS plan.
DATA_TYPES: Final = (
    BUCKET_TYPE,
    "aws:ebs/volume:Volume",
    KMS_KEY_TYPE,
    SECRET_TYPE,
    "aws:cloudwatch/logGroup:LogGroup",
)
KMS_ALIAS_TYPE: Final = "aws:kms/alias:Alias"
#: S3 deletes at most this many objects per request.
DELETE_BATCH: Final = 1000  # aws-fact


class PurgeRefused(ValueError):
    """The purge breaks a rule; the message names it (and the date it becomes allowed)."""


@dataclass
class PurgeReport:
    customer: str
    mode: str  # "local" (done) or "aws-plan" (not run)
    ran: bool
    label: str | None = None
    destroyed: dict[str, Any] = field(default_factory=dict)
    plan: dict[str, Any] = field(default_factory=dict)


def check_purge(
    customer: Customer, confirm: str | None, today: date, in_ci: bool, allow_ci: bool
) -> None:
    """Every precondition of a purge, in the order an operator fixes them."""
    if not confirm:
        raise PurgeRefused(
            f"--confirm: required; repeat the customer id ({customer.id}) to destroy its data "
            "for good (S18)"
        )
    if confirm != customer.id:
        raise PurgeRefused(f"--confirm: {confirm!r} is not the customer id {customer.id!r}")
    if in_ci and not allow_ci:
        raise PurgeRefused(
            "CI is set: a purge does not run from CI; an operator runs it (or, deliberately, "
            "--allow-ci)"
        )
    lifecycle = customer.lifecycle
    if lifecycle.state is not LifecycleState.CANCELLED:
        raise PurgeRefused(
            f"lifecycle.state: is {lifecycle.state.value}; only a cancelled customer's data is "
            "purged, 60 days after termination (S18)"
        )
    allowed, end = lifecycle.purge_allowed_from, lifecycle.termination_date
    assert allowed is not None and end is not None
    if today < allowed:
        raise PurgeRefused(
            f"purge is allowed from {allowed}: production data stays available "
            f"{policy.RETENTION_AFTER_TERMINATION.days} days after termination on {end} (S18); "
            f"today ({today}) is day {(today - end).days}"
        )


# --- the local machines ---------------------------------------------------------------------------
def empty_and_delete_bucket(s3: Any, bucket: str) -> int:
    """Delete every object version and delete marker, then the bucket; how many were deleted."""
    deleted = 0
    while True:
        page = s3.list_object_versions(Bucket=bucket, MaxKeys=DELETE_BATCH)
        objects = [
            {"Key": v["Key"], "VersionId": v["VersionId"]}
            for v in page.get("Versions", []) + page.get("DeleteMarkers", [])
        ]
        if not objects:
            break
        answer = s3.delete_objects(Bucket=bucket, Delete={"Objects": objects, "Quiet": True})
        if answer.get("Errors"):
            first = answer["Errors"][0]
            raise RuntimeError(f"s3://{bucket}/{first['Key']}: {first['Message']}")
        deleted += len(objects)
    s3.delete_bucket(Bucket=bucket)
    return deleted


def bucket_exists(s3: Any, bucket: str) -> bool:
    try:
        s3.head_bucket(Bucket=bucket)
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchBucket"):
            return False
        raise
    return True


def destroy_local(
    local: LocalSite, customer_id: str, plan: Plan, progress: Callable[[str], None]
) -> dict[str, Any]:
    """Destroy what the local site holds of the customer (module docs); checked afterwards."""
    destroyed: dict[str, Any] = {"stopped": local.stop_instances(customer_id)}
    emulator_up = local.aws_client(customer_id, "s3", policy.DR_REPORTS_REGION) is not None
    buckets: dict[str, int] = {}
    if emulator_up:

        def client(service: str, region: str) -> Any:
            return local.aws_client(customer_id, service, region)

        for bucket in plan.of_type(BUCKET_TYPE):
            name = bucket.inputs["bucket"]
            progress(f"destroying s3://{name} ({bucket.aws_region}): every version")
            s3 = client("s3", bucket.aws_region)
            if bucket_exists(s3, name):
                buckets[name] = empty_and_delete_bucket(s3, name)
            if bucket_exists(s3, name):
                raise RuntimeError(f"s3://{name} still exists after the purge")
        destroyed["secrets"] = _delete_secrets(client, plan)
        destroyed["kms_keys_scheduled"] = _schedule_key_deletion(client, plan)
    destroyed["buckets"] = buckets
    destroyed["emulator"] = "running" if emulator_up else "stopped (its in-memory data is gone)"
    progress("removing the machines, their disks and data volumes")
    destroyed["removed"] = local.remove(customer_id)
    if local.find(customer_id) is not None:
        raise RuntimeError(f"the local machines of {customer_id} are still there after the purge")
    return destroyed


def _delete_secrets(client_for: Callable[[str, str], Any], plan: Plan) -> list[str]:
    deleted = []
    for secret in plan.of_type(SECRET_TYPE):
        client = client_for("secretsmanager", secret.aws_region)
        try:
            client.delete_secret(SecretId=secret.inputs["name"], ForceDeleteWithoutRecovery=True)
        except client.exceptions.ResourceNotFoundException:
            continue
        deleted.append(secret.inputs["name"])
    return deleted


def _schedule_key_deletion(client_for: Callable[[str, str], Any], plan: Plan) -> list[str]:
    scheduled = []
    for alias in plan.of_type(KMS_ALIAS_TYPE):
        kms = client_for("kms", alias.aws_region)
        try:
            key_id = kms.describe_key(KeyId=alias.inputs["name"])["KeyMetadata"]["KeyId"]
        except kms.exceptions.NotFoundException:
            continue
        kms.schedule_key_deletion(KeyId=key_id, PendingWindowInDays=policy.KMS_DELETION_WINDOW_DAYS)
        kms.delete_alias(AliasName=alias.inputs["name"])
        scheduled.append(alias.inputs["name"])
    return scheduled


# --- AWS: the plan of `pulumi destroy` ------------------------------------------------------------
def aws_purge_plan(customer: Customer, plan: Plan) -> dict[str, Any]:
    """What ``pulumi destroy`` of the customer's stack removes, and the commands, not run."""
    resources = [r for r in plan.resources if r.custom and not r.is_provider]
    data = [r for r in resources if r.type in DATA_TYPES]
    stack = f"--stack {customer.id}"
    buckets = [(r.inputs["bucket"], r.aws_region) for r in plan.of_type(BUCKET_TYPE)]
    commands = [
        f"pulumi stack select {customer.id}   # in the repository root (Pulumi.yaml)",
        f"pulumi state unprotect --all --yes {stack}",
        # Termination protection (disable_api_termination) would stop the destroy.
        f"aws ec2 modify-instance-attribute --region {customer.region} --instance-id "
        f'"$(pulumi stack output production_instance_id {stack})" --no-disable-api-termination',
        *[
            f"# empty s3://{name} ({region}) of every object version and delete marker first: "
            "the bucket is versioned and force_destroy is off (aws s3api list-object-versions, "
            "then delete-objects, 1000 at a time)"
            for name, region in buckets
        ],
        f"pulumi stack export {stack} > {customer.id}-final-state.json   # volume ids, kept "
        "with the audit record",
        f"pulumi destroy --yes {stack}",
        f"# delete the data volume's final snapshot (final_snapshot=true): aws ec2 "
        f"describe-snapshots --region {customer.region} --owner-ids self --filters "
        "Name=volume-id,Values=<data volume id from the exported state>, then "
        "aws ec2 delete-snapshot",
        f"pulumi stack rm --yes {customer.id}",
    ]
    return {
        "stack": plan.stack,
        "offline_plan": plan.label,
        "destroys": len(resources),
        "protected": sorted(r.name for r in resources if r.protect),
        "data": [
            {"type": r.short_type, "name": r.name, "region": r.region, "protect": r.protect}
            for r in data
        ],
        "commands": commands,
    }


def purge(
    customer: Customer,
    platform: Platform,
    plan: Plan,
    records_dir: Path,
    progress: Callable[[str], None] = lambda _: None,
) -> PurgeReport:
    """Destroy (the local machines) or plan (AWS) the customer's data, as ``platform`` does;
    audited before and after.

    Call :func:`check_purge` first: this function destroys without asking."""
    mode = platform.mode
    audit({"action": "lifecycle.purge.start", "customer": customer.id, "mode": mode})
    action = platform.destroy(customer, plan, progress)
    report = PurgeReport(
        customer.id, mode, ran=action.ran, label=action.label, destroyed=action.done,
        plan=action.plan,
    )  # fmt: skip
    details = {"mode": mode, "ran": report.ran, "destroyed": report.destroyed, "plan": report.plan}
    audit({"action": "lifecycle.purge", "customer": customer.id, **details})
    if report.ran:
        append_event(records_dir, customer.id, PURGED, details)
    return report

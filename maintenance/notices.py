"""Customer notices and partner digests for a change, and the check that they exist before it runs.

One notice per affected customer (its window in its data centre's time and in UTC, the expected
interruption, the reason; plain text and HTML) and one digest per partner, rendered with the
templates in ``erpcloud/templates/notices``. The folder ``<notices>/<change-id>/`` is written
whole or not at all, with a ``manifest.json`` saying which version of the change it announces.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from erpcloud.files import replace_tree
from erpcloud.model import Customer, Environment
from erpcloud.render import DigestItem, NoticeWindow, render_notice, render_partner_digest
from maintenance.change import ChangeKind
from maintenance.rules import ChangeCheck

#: Default home of rendered notices, relative to the working directory.
NOTICES_DIR = Path("build/maintenance/notices")
MANIFEST = "manifest.json"


def needs_notice(check: ChangeCheck) -> bool:
    """Which changes must be announced before they run.

    Every change that reaches production is announced (S11 standard windows, S13 major changes,
    S14 migrations), except emergency work that does not interrupt service: S12 asks notice only
    "whenever service is interrupted". A test environment has no service levels (S9).
    """
    if Environment.PRODUCTION not in check.loaded.change.targets.environments:
        return False
    if check.loaded.change.kind is ChangeKind.EMERGENCY and not check.loaded.interrupts_service:
        return False
    return bool(check.customers)


def notice_window(check: ChangeCheck, customer: Customer) -> NoticeWindow:
    change = check.loaded.change
    window = check.window_for(customer)
    if window is None:
        raise ValueError(f"{change.id} has no window in {customer.region}; fix the change first")
    return NoticeWindow(
        change_id=change.id,
        kind=change.kind.value,
        reason=change.reason,
        summary=change.summary,
        starts_at=window.starts_at,
        duration=window.ends_at - window.starts_at,
        expected_downtime=change.expected_downtime,
        timezone=customer.timezone.key,
        reason_category=change.reason if change.kind is ChangeKind.EMERGENCY else "",
    )


@dataclass(frozen=True)
class RenderedNotices:
    directory: Path
    customers: list[str]
    partners: list[str]
    files: list[str]


def render_notices(
    check: ChangeCheck, out_dir: Path = NOTICES_DIR, now: datetime | None = None
) -> RenderedNotices:
    """Render every notice of a change into ``out_dir/<change-id>/``: all of it or none of it."""
    change = check.loaded.change
    files: dict[str, tuple[str, int]] = {}
    by_partner: dict[str, list[DigestItem]] = {}
    for customer in check.customers:
        window = notice_window(check, customer)
        rendered = render_notice(customer, window)
        files[f"customers/{customer.id}.txt"] = (rendered.text, 0o644)
        files[f"customers/{customer.id}.html"] = (rendered.html, 0o644)
        by_partner.setdefault(customer.partner.id, []).append(DigestItem(customer, window))
    for partner_id, items in sorted(by_partner.items()):
        digest = render_partner_digest(partner_id, items[0].notice, items)
        files[f"partners/{partner_id}.txt"] = (digest.text, 0o644)
        files[f"partners/{partner_id}.html"] = (digest.html, 0o644)
    manifest = {
        "change_id": change.id,
        "kind": change.kind.value,
        "notice_digest": check.loaded.notice_digest,
        "announced_at": change.announced_at.isoformat(),
        "rendered_at": (now or datetime.now(UTC)).isoformat(),
        "customers": [c.id for c in check.customers],
        "partners": sorted(by_partner),
    }
    files[MANIFEST] = (json.dumps(manifest, indent=2) + "\n", 0o644)
    directory = out_dir / change.id
    replace_tree(directory, files)
    return RenderedNotices(
        directory, [c.id for c in check.customers], sorted(by_partner), sorted(files)
    )


def notice_problems(check: ChangeCheck, notices_dir: Path = NOTICES_DIR) -> list[str]:
    """Why the change may not run yet for want of notices; empty when it may (or needs none)."""
    if not needs_notice(check):
        return []
    change_id = check.loaded.change.id
    hint = f"render them with `erpcloud maintenance notices {change_id}` and send them"
    manifest_path = notices_dir / change_id / MANIFEST
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return [f"no notices rendered for {change_id} in {notices_dir}/: {hint}"]
    problems = []
    if manifest.get("notice_digest") != check.loaded.notice_digest:
        problems.append(
            f"the notices in {manifest_path.parent}/ announce an earlier version of {change_id} "
            f"(window, downtime, reason or targets changed since): {hint}"
        )
    missing = sorted({c.id for c in check.customers} - set(manifest.get("customers", [])))
    if missing:
        problems.append(f"no notice for {', '.join(missing)}: {hint}")
    return problems

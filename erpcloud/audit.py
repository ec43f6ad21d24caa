"""The audit log: who did what destructive or privileged thing, when (expiry below policy,
purges, terminations, support grants and revocations, repository recovery). One JSON object per
line, synced to disk before the action's result is reported."""

from __future__ import annotations

import getpass
import json
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

AUDIT_LOG_ENV: Final = "ERPCLOUD_AUDIT_LOG"
DEFAULT_AUDIT_LOG: Final = Path("/var/log/erpcloud/audit.jsonl")


def audit_log_path() -> Path:
    return Path(os.environ.get(AUDIT_LOG_ENV) or DEFAULT_AUDIT_LOG)


def audit(event: dict[str, Any], path: Path | None = None) -> Path:
    """Append one event (with time and user) to the audit log, synced to disk before returning."""
    target = path or audit_log_path()
    target.parent.mkdir(parents=True, exist_ok=True)
    record = {"at": datetime.now(UTC).isoformat(), "user": getpass.getuser(), **event}
    with target.open("a", encoding="utf-8") as handle:
        handle.write(json.dumps(record, default=str) + "\n")
        handle.flush()
        os.fsync(handle.fileno())
    return target

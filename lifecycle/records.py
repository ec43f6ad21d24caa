"""What the lifecycle operations did to each customer: one JSON file per customer.

The daily step reads them so that a termination is done once (S18), and a purge is never
repeated. They live in ``build/lifecycle/records/`` (``--records``, or ``ERPCLOUD_LIFECYCLE_DIR``
for the folder); CI keeps that folder in durable storage, as it does the maintenance run records.
Destructive actions are also appended to the audit log (:func:`backups.retention.audit`).
"""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

from pydantic import BaseModel, Field

from erpcloud.files import write_atomic

#: The events of a customer's end (S18), as the record names them.
TERMINATED: Final = "terminated"
PURGED: Final = "purged"

LIFECYCLE_DIR_ENV: Final = "ERPCLOUD_LIFECYCLE_DIR"


def lifecycle_dir() -> Path:
    return Path(os.environ.get(LIFECYCLE_DIR_ENV) or "build/lifecycle")


class Event(BaseModel):
    at: datetime
    action: str
    details: dict[str, Any] = Field(default_factory=dict)


class CustomerRecord(BaseModel):
    customer: str
    events: list[Event] = Field(default_factory=list)

    def last(self, action: str) -> Event | None:
        found = [e for e in self.events if e.action == action]
        return found[-1] if found else None


def _path(directory: Path, customer_id: str) -> Path:
    return directory / "records" / f"{customer_id}.json"


def load_record(directory: Path, customer_id: str) -> CustomerRecord:
    path = _path(directory, customer_id)
    if not path.exists():
        return CustomerRecord(customer=customer_id)
    return CustomerRecord.model_validate_json(path.read_text())


def append_event(
    directory: Path, customer_id: str, action: str, details: dict[str, Any]
) -> CustomerRecord:
    """Add an event and rewrite the record atomically."""
    record = load_record(directory, customer_id)
    record.events.append(Event(at=datetime.now(UTC), action=action, details=details))
    write_atomic(_path(directory, customer_id), record.model_dump_json(indent=2) + "\n")
    return record

"""What the platform knows of the product's database: shared by provisioning, move-in, drills and
the local stand-in product (the real product creates the same table)."""

from __future__ import annotations

from typing import Final

#: One row: the product's edition and version (the move-in reads it from a dump, S14).
SYSTEM_INFO_TABLE: Final = "erp_system_info"
#: The product's health query: what its health endpoint answers from (drills check it, S7).
HEALTH_QUERY: Final = f"SELECT version FROM {SYSTEM_INFO_TABLE} WHERE id = 1"  # noqa: S608

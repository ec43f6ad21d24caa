"""Where the product keeps what a customer owns on a host (S18: everything is exportable).

One place for these paths: the export and the move-in read them from here. Production hosts use
them as they are (``host_root`` ``/``), the local machines too; the host-process stand-in's hosts
put them below their own state folder, their ``host_root`` in the inventory
(:mod:`erpcloud.inventory`).
"""

from __future__ import annotations

import posixpath
from dataclasses import dataclass
from typing import Final

#: The product's installation: its source and customer modules (S16, S18), from the image.
PRODUCT_DIR: Final = "/opt/erp"
#: Files the product's users attach to documents (S18).
ATTACHMENTS_DIR: Final = "/var/lib/erp/attachments"
#: Work space for dumps and archives on the way in or out: on the data volume (S1), which has
#: room for a copy of the database; the root volume may not.
STAGING_DIR: Final = "/var/lib/postgresql/erpcloud-lifecycle"


@dataclass(frozen=True)
class HostPaths:
    """The product's paths on one host, below its ``host_root``."""

    host_root: str = "/"

    def on_host(self, path: str) -> str:
        return posixpath.normpath(posixpath.join(self.host_root, path.lstrip("/")))

    @property
    def product(self) -> str:
        return self.on_host(PRODUCT_DIR)

    @property
    def attachments(self) -> str:
        return self.on_host(ATTACHMENTS_DIR)

    @property
    def staging(self) -> str:
        return self.on_host(STAGING_DIR)

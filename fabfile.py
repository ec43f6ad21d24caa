"""The Fabric entry point: ``fab --list`` shows every operations namespace.

Each capability keeps its tasks in its own package and adds one line here.
"""

from __future__ import annotations

from invoke import Collection

from dr import tasks as dr_tasks
from lifecycle import tasks as lifecycle_tasks
from maintenance import tasks as maintenance_tasks

ns = Collection()
ns.add_collection(
    Collection.from_module(maintenance_tasks, name="maintenance", config=maintenance_tasks.CONFIG)
)
ns.add_collection(Collection.from_module(dr_tasks, name="dr", config=dr_tasks.CONFIG))
ns.add_collection(
    Collection.from_module(lifecycle_tasks, name="lifecycle", config=lifecycle_tasks.CONFIG)
)

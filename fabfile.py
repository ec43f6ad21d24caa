"""The Fabric entry point: ``fab --list`` shows every operations namespace.

Each capability keeps its tasks in its own package and adds one line here.
"""

from __future__ import annotations

from invoke import Collection

from dr import tasks as dr_tasks
from erpcloud.sites import register_local
from lifecycle import tasks as lifecycle_tasks
from localtarget import drillsite
from localtarget.site import MachinesSite
from maintenance import tasks as maintenance_tasks

# Tasks that find a customer's hosts look at the local machines first (erpcloud.sites).
register_local(MachinesSite())
drillsite.register()  # `fab dr.drill --site machines` (the default)

ns = Collection()
ns.add_collection(
    Collection.from_module(maintenance_tasks, name="maintenance", config=maintenance_tasks.CONFIG)
)
ns.add_collection(Collection.from_module(dr_tasks, name="dr", config=dr_tasks.CONFIG))
ns.add_collection(
    Collection.from_module(lifecycle_tasks, name="lifecycle", config=lifecycle_tasks.CONFIG)
)

"""The local drill site (:class:`dr.site.DrillSite`), registered by the front doors
(:func:`register`): ``machines``, the customer's real machines, with a drill machine booted
from its image per drill (:mod:`localtarget.drillmachine`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from dr.host import IMAGE_PG_VERSION, DrillHost, DrillHostSpec
from dr.plan import DrillRefused
from dr.site import DrillSite, Progress, production_from_inventory, register_drill_site
from erpcloud import policy
from erpcloud.model import Customer
from localtarget import machine, machines
from localtarget.drillmachine import boot_drill_machine, teardown_directory
from localtarget.processes import ServiceError


def machines_site(
    customer: Customer, work_dir: Path, drill_host: DrillHostSpec | None = None
) -> DrillSite:
    """The customer's real machines (raises if they are not up): the repositories on the
    emulator's TLS front on their bridge, signed by the drill host's instance role; production
    through the machines' inventory; a drill machine from the customer's image per drill."""
    state = machines.load_state(customer.id)
    if not state.inventory:
        raise RuntimeError(f"the machines of {customer.id} have no inventory (not up yet?)")
    network = machine.Network(state.network_index)
    production = production_from_inventory(
        Path(state.inventory),
        customer,
        work_dir / "production_known_hosts",
        pg_version=IMAGE_PG_VERSION,
    )

    def reports_client() -> Any:
        return state.aws_client("s3", policy.DR_REPORTS_REGION)

    def drill_machine(drill_id: str, progress: Progress) -> DrillHost:
        try:
            spec, booted = boot_drill_machine(state, customer, drill_id, progress)
        except (machine.MachineError, ServiceError) as exc:  # removed again by the boot
            raise DrillRefused("drill host", f"the drill machine did not boot: {exc}") from None
        return DrillHost(
            spec,
            drill_id,
            IMAGE_PG_VERSION,
            on_teardown=booted.teardown,
            machine_dir=str(booted.directory),
        )

    return DrillSite(
        customer=customer,
        name="machines",
        repos=machines.machine_repos(customer, network.host_address, state.aws_tls_port),
        production=production,
        reports_client=reports_client,
        create_reports_bucket=True,
        drill_host=drill_host,
        pg_version=IMAGE_PG_VERSION,
        new_drill_host=drill_machine,
    )


def register() -> None:
    """Make ``--site machines`` known to the drills, and how a kept drill machine goes."""
    register_drill_site("machines", machines_site, made_host_teardown=teardown_directory)

"""The local drill sites (:class:`dr.site.DrillSite`), registered by the front doors
(:func:`register`): ``machines``, the customer's real machines with a drill machine booted from
its image per drill; ``local``, the host-process stand-in with a fresh sshd host per drill."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from dr.host import DrillHost, DrillHostSpec, create_local_drill_host
from dr.plan import DrillRefused
from dr.site import (
    STAND_IN_PG_VERSION,
    DrillHostFactory,
    DrillSite,
    Progress,
    production_from_inventory,
    register_drill_site,
)
from erpcloud import policy
from erpcloud.model import Customer
from erpcloud.render import HostLayout
from localtarget import machine, machines
from localtarget.drillmachine import boot_drill_machine
from localtarget.instance import local_repos
from localtarget.processes import ServiceError
from localtarget.target import attach


def _fresh_local_drill_host(pg_version: int) -> DrillHostFactory:
    def make(drill_id: str, progress: Progress) -> DrillHost:
        progress("a fresh local sshd drill host")
        spec, host = create_local_drill_host(drill_id)
        return DrillHost(spec, drill_id, pg_version, local_host=host)

    return make


def local_site(
    customer: Customer, work_dir: Path, drill_host: DrillHostSpec | None = None
) -> DrillSite:
    """The customer's running local target (raises if it is not up)."""
    running = attach(customer)
    production = production_from_inventory(
        Path(running.state.inventory),
        customer,
        work_dir / "production_known_hosts",
        pg_version=STAND_IN_PG_VERSION,
    )
    return DrillSite(
        customer=customer,
        name="local",
        repos=local_repos(customer, running.aws),
        s3_env=running.aws.pgbackrest_env(),
        production=production,
        reports_client=lambda: running.aws.client("s3", policy.DR_REPORTS_REGION),
        create_reports_bucket=True,
        drill_host=drill_host,
        pg_version=STAND_IN_PG_VERSION,
        new_drill_host=_fresh_local_drill_host(STAND_IN_PG_VERSION),
    )


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
    pg_version = HostLayout().pg_version
    production = production_from_inventory(
        Path(state.inventory),
        customer,
        work_dir / "production_known_hosts",
        pg_version=pg_version,
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
            pg_version,
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
        pg_version=pg_version,
        new_drill_host=drill_machine,
    )


def register() -> None:
    """Make ``--site machines`` and ``--site local`` known to the drills."""
    register_drill_site("machines", machines_site)
    register_drill_site("local", local_site)

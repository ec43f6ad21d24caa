"""Which hosts a change reaches, and in what order: canary waves, then production waves.

Test environments go first, as canaries (S9: no service levels, and the same software as
production); then production in waves of a fixed size or a share of the production hosts.
Within a wave up to ``concurrency`` hosts run at once; ``max_errors`` failed hosts are tolerated
before the runner starts no new host. Plain data in, plain data out: no SSH here.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from erpcloud import policy
from erpcloud.inventory import Inventory, InventoryHost
from erpcloud.model import Customer, Environment


class PlanError(ValueError):
    """Wave settings that make no sense (the message names the option)."""


@dataclass(frozen=True)
class Wave:
    index: int  # 1-based
    label: str  # "canary" or "production"
    hosts: tuple[str, ...]


@dataclass(frozen=True)
class Plan:
    waves: tuple[Wave, ...]
    wave_size: int
    concurrency: int
    max_errors: int

    @property
    def order(self) -> list[str]:
        return [name for wave in self.waves for name in wave.hosts]

    @property
    def host_count(self) -> int:
        return sum(len(w.hosts) for w in self.waves)

    def summary(self) -> dict[str, object]:
        return {
            "hosts": self.host_count,
            "wave_size": self.wave_size,
            "concurrency": self.concurrency,
            "max_errors": self.max_errors,
            "waves": [
                {"index": w.index, "label": w.label, "hosts": list(w.hosts)} for w in self.waves
            ],
        }


def select_hosts(
    inventory: Inventory,
    customers: Iterable[Customer],
    environments: Iterable[Environment] = tuple(Environment),
) -> list[InventoryHost]:
    """The inventory's hosts of these customers' chosen environments."""
    wanted = {c.id for c in customers}
    chosen_envs = set(environments)
    return [h for h in inventory.hosts if h.customer in wanted and h.environment in chosen_envs]


def resolve_wave_size(
    production_hosts: int, wave_size: int | None, wave_percent: float | None
) -> int:
    if wave_size is not None and wave_percent is not None:
        raise PlanError("give --wave-size or --wave-percent, not both")
    if wave_percent is not None:
        if not 0 < wave_percent <= 100:
            raise PlanError(f"--wave-percent must be above 0 and at most 100, not {wave_percent}")
        return max(1, math.ceil(production_hosts * wave_percent / 100))
    size = policy.MAINTENANCE_WAVE_SIZE if wave_size is None else wave_size
    if size < 1:
        raise PlanError(f"--wave-size must be at least 1, not {size}")
    return size


def _chunks(names: list[str], size: int) -> list[tuple[str, ...]]:
    return [tuple(names[i : i + size]) for i in range(0, len(names), size)]


def plan_waves(
    hosts: Iterable[InventoryHost],
    customers: Mapping[str, Customer],
    wave_size: int | None = None,
    wave_percent: float | None = None,
    concurrency: int | None = None,
    max_errors: int | None = None,
) -> Plan:
    """Canary waves of test environments first, then production waves; stable order inside."""
    chosen_concurrency = policy.MAINTENANCE_CONCURRENCY if concurrency is None else concurrency
    chosen_max_errors = policy.MAINTENANCE_MAX_ERRORS if max_errors is None else max_errors
    if chosen_concurrency < 1:
        raise PlanError(f"--concurrency must be at least 1, not {chosen_concurrency}")
    if chosen_max_errors < 0:
        raise PlanError(f"--max-errors must be 0 or more, not {chosen_max_errors}")

    def order(host: InventoryHost) -> tuple[str, str, str]:
        return (customers[host.customer].region, host.customer, host.name)

    listed = sorted(hosts, key=order)
    canaries = [h.name for h in listed if h.environment is Environment.TEST]
    production = [h.name for h in listed if h.environment is Environment.PRODUCTION]
    size = resolve_wave_size(len(production), wave_size, wave_percent)
    waves: list[Wave] = []
    for label, names in (("canary", canaries), ("production", production)):
        for chunk in _chunks(names, size):
            waves.append(Wave(len(waves) + 1, label, chunk))
    return Plan(tuple(waves), size, chosen_concurrency, chosen_max_errors)

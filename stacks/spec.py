"""What one environment of a customer is, as plain typed data derived from the ``Customer``.

The components turn an :class:`EnvironmentSpec` into resources; everything here is computed from
the validated model and :mod:`erpcloud.policy`, never read from anywhere else. The test
environment's spec is *derived* from production's by the model (``customer.test_sizing``, S9).
"""

from __future__ import annotations

import base64
import gzip
from dataclasses import dataclass, field
from datetime import date
from typing import Final

from erpcloud import policy
from erpcloud.model import Customer, Environment, Sizing
from erpcloud.render import PRODUCT_DATABASE, PRODUCT_DATABASE_USER, HostLayout, render_user_data

__all__ = ["PRODUCT_DATABASE", "PRODUCT_DATABASE_USER"]  # re-exported for the components
#: The data volume's device and file system (the image formats and mounts it, images/).
DATA_DEVICE: Final = "/dev/sdf"
DATA_FILESYSTEM: Final = "xfs"
ROOT_FILESYSTEM: Final = "ext4"
#: EC2 refuses user data above 16 KiB (before base64); ours is gzip-compressed (cloud-init
#: reads gzip natively) and checked against this.
USER_DATA_LIMIT_BYTES: Final = 16 * 1024

TAG_CUSTOMER: Final = "erpcloud:customer"
TAG_ENVIRONMENT: Final = "erpcloud:environment"
TAG_PARTNER: Final = "erpcloud:partner"
TAG_PROMISE: Final = "erpcloud:promise"
#: Every taggable resource carries these keys (tests check it on what would be sent to AWS).
REQUIRED_TAGS: Final = (TAG_CUSTOMER, TAG_ENVIRONMENT, TAG_PARTNER, TAG_PROMISE)


class UserDataTooLarge(ValueError):
    """The compressed user data is above EC2's limit."""


def compress_user_data(text: str) -> str:
    """gzip (deterministic: no timestamp) then base64, for ``user_data_base64``."""
    packed = gzip.compress(text.encode("utf-8"), mtime=0)
    if len(packed) > USER_DATA_LIMIT_BYTES:
        raise UserDataTooLarge(
            f"user data is {len(packed)} bytes compressed, above EC2's "
            f"{USER_DATA_LIMIT_BYTES}-byte limit (S1): fewer SSH keys or users"
        )
    return base64.b64encode(packed).decode("ascii")


def decompress_user_data(encoded: str) -> str:
    """The inverse of :func:`compress_user_data` (for reviews and tests)."""
    return gzip.decompress(base64.b64decode(encoded)).decode("utf-8")


def instance_state_for(customer: Customer, today: date) -> str:
    """``stopped`` while suspended (P3) or from a cancelled customer's termination date (S18),
    else ``running``. Data is kept either way."""
    return "running" if customer.lifecycle.in_service(today) else "stopped"


@dataclass(frozen=True)
class EnvironmentSpec:
    """One environment of one customer: sizing, name, what it gets (S1, S9)."""

    customer: Customer
    environment: Environment
    sizing: Sizing
    host: str

    #: The day the program runs: whether the instances are in service depends on it (S18).
    today: date = field(default_factory=date.today)

    @classmethod
    def production(cls, customer: Customer, today: date) -> EnvironmentSpec:
        return cls(customer, Environment.PRODUCTION, customer.production, customer.url_host, today)

    @classmethod
    def test(cls, customer: Customer, today: date) -> EnvironmentSpec:
        """S9: sizing derived from production by the model (at most 50 %, lowered by overrides)."""
        return cls(customer, Environment.TEST, customer.test_sizing, customer.test_url_host, today)

    @property
    def is_production(self) -> bool:
        return self.environment is Environment.PRODUCTION

    @property
    def url(self) -> str:
        return f"https://{self.host}"

    @property
    def instance_state(self) -> str:
        return instance_state_for(self.customer, self.today)

    @property
    def layout(self) -> HostLayout:
        return HostLayout()

    def user_data(self) -> str:
        """The rendered cloud-init (S1, S4; S5-S7 production only): names of secrets, no values."""
        return render_user_data(self.customer, self.environment, self.layout)

    def user_data_base64(self) -> str:
        return compress_user_data(self.user_data())

    def tags(self, promise: str, **extra: str) -> dict[str, str]:
        """Tags on everything: customer, environment, partner and the promise served."""
        return {
            TAG_CUSTOMER: self.customer.id,
            TAG_ENVIRONMENT: self.environment.value,
            TAG_PARTNER: self.customer.partner.id,
            TAG_PROMISE: promise,
            "Name": extra.pop("Name", f"{self.customer.id}-{self.environment.value}"),
            **extra,
        }


def next_size_up(instance_type: str) -> str | None:
    """S2: the smallest sold production type above ``instance_type`` in the same family."""
    current = policy.INSTANCE_TYPES[instance_type]
    bigger = [
        t
        for t in policy.INSTANCE_TYPES.values()
        if t.family == current.family
        and t.production
        and (t.vcpu, t.memory_gib) > (current.vcpu, current.memory_gib)
    ]
    return min(bigger, key=lambda t: (t.vcpu, t.memory_gib)).name if bigger else None

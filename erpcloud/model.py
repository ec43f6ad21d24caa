"""The customer model: everything a customer's stack is made from, validated once, at the edge.

One ``Customer`` per file ``customers/<id>.yaml``. Every rule cites the promise it enforces
(``shared/SERVICE.md``); every number comes from :mod:`erpcloud.policy`. Downstream code takes
these typed objects and trusts them. Secrets are never fields: only references to where a
secret lives (:class:`SecretRef`).
"""

from __future__ import annotations

import ipaddress
import re
import unicodedata
from datetime import date, datetime, time, timedelta
from enum import StrEnum
from typing import Annotated, Any, Self
from zoneinfo import ZoneInfo

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    EmailStr,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)

from erpcloud import policy
from erpcloud.documents import first_unprintable
from erpcloud.policy import Edition, Zone
from erpcloud.sshkeys import SshPublicKey, parse_public_key
from erpcloud.versions import ProductVersion, check_supported

_DNS_LABEL = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$")
#: A customer id: it names the file, the stack, the buckets and local state folders.
CUSTOMER_ID = re.compile(r"^[a-z][a-z0-9-]{1,38}[a-z0-9]$")
_POSIX_USER = re.compile(r"^[a-z_][a-z0-9_-]{0,31}$")
_AWS_REGION = re.compile(r"^[a-z]{2}(?:-[a-z]+)+-\d$")


class Strict(BaseModel):
    """Unknown keys are typos (or secrets pasted in the wrong place): refuse them."""

    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)


# --- field rules -------------------------------------------------------------------------------
def check_dns_label(value: str) -> str:
    """S3: the prefix is a valid DNS label and not reserved."""
    if not _DNS_LABEL.match(value):
        raise ValueError(
            "must be a valid DNS label (RFC 1123: 1-63 characters of a-z, 0-9 and '-', "
            "lowercase, not starting or ending with '-') (S3)"
        )
    if value[2:4] == "--":
        raise ValueError("must not have '--' in positions 3-4 (reserved for IDNA 'xn--') (S3)")
    if value in policy.RESERVED_PREFIXES:
        raise ValueError(f"{value!r} is a reserved name and cannot be a customer prefix (S3)")
    return value


def check_posix_user(value: str) -> str:
    """S4: a non-root, POSIX-portable user name."""
    if not _POSIX_USER.match(value):
        raise ValueError(
            "must be a POSIX user name (lowercase letter or '_' first, then a-z, 0-9, '_' or "
            "'-', at most 32 characters) (S4)"
        )
    if value in policy.RESERVED_USERNAMES:
        raise ValueError(f"{value!r} is root or a system account; SSH users are non-root (S4)")
    return value


def check_region_name(value: str) -> str:
    if not _AWS_REGION.match(value):
        example = min(policy.DEFAULT_REGIONS)
        raise ValueError(f"must be an AWS region name such as {example!r} (S10)")
    if value not in policy.REGION_TIMEZONES:
        raise ValueError(
            f"{value!r} is not a region this platform knows the data-centre time zone of (S10, S11)"
        )
    return value


def check_public_key(value: str) -> str:
    """S4: an ed25519, ECDSA or RSA (>= 3072 bits) key that a real key parser accepts, kept in
    canonical form (one line, no options, a printable comment)."""
    return parse_public_key(value).openssh()


def check_free_text(value: str) -> str:
    """S20: free text (a company name, a reason) is one line of printable characters: it lands
    in unit files, notices and e-mail headers, where a control character changes the meaning."""
    bad = first_unprintable(value)
    if bad is not None:
        raise ValueError(
            f"contains U+{ord(bad):04X} ({unicodedata.name(bad, 'a control character')}); "
            "free text is one line of printable characters (S20)"
        )
    if "\\" in value:
        raise ValueError("contains a backslash, which escapes in the files it lands in (S20)")
    if len(value) > policy.MAX_FREE_TEXT:
        raise ValueError(f"is {len(value)} characters long; at most {policy.MAX_FREE_TEXT}")
    return value


DnsLabel = Annotated[str, AfterValidator(check_dns_label)]
PublicKeyLine = Annotated[str, AfterValidator(check_public_key)]
PosixUser = Annotated[str, AfterValidator(check_posix_user)]
RegionName = Annotated[str, AfterValidator(check_region_name)]
FreeText = Annotated[str, AfterValidator(check_free_text)]


# --- secrets -----------------------------------------------------------------------------------
class SecretSource(StrEnum):
    PULUMI_CONFIG = "pulumi-config"  # a stack secret: `pulumi config set --secret KEY`
    SECRETS_MANAGER = "secrets-manager"  # an existing AWS Secrets Manager secret, by name
    ENV = "env"  # an environment variable (the local target and tests)
    GENERATED = "generated"  # the stack generates it and keeps it in Secrets Manager


_SECRET_REF = re.compile(r"^(?P<source>[a-z-]+)(?::(?P<name>[A-Za-z0-9_./+=@-]{1,256}))?$")


class SecretRef(Strict):
    """Where a secret lives. Written in a customer file as ``source:name`` (or ``generated``)."""

    source: SecretSource
    name: str = ""

    @model_validator(mode="before")
    @classmethod
    def _from_string(cls, value: Any) -> Any:
        if not isinstance(value, str):
            return value
        match = _SECRET_REF.match(value)
        sources = ", ".join(s.value for s in SecretSource)
        if match is None or match["source"] not in {s.value for s in SecretSource}:
            raise ValueError(
                "must be a secret reference 'SOURCE:NAME' with SOURCE one of "
                f"{sources}; secret values never go in customer files"
            )
        return {"source": match["source"], "name": match["name"] or ""}

    @model_validator(mode="after")
    def _name_matches_source(self) -> Self:
        if self.source is SecretSource.GENERATED and self.name:
            raise ValueError("'generated' takes no name")
        if self.source is not SecretSource.GENERATED and not self.name:
            raise ValueError(f"'{self.source.value}' needs a name: '{self.source.value}:NAME'")
        return self

    def __str__(self) -> str:
        return f"{self.source.value}:{self.name}" if self.name else self.source.value


class Secrets(Strict):
    """References to the customer's secrets (S1: activation key; database credentials)."""

    activation_key: SecretRef = Field(
        default_factory=lambda: SecretRef(source=SecretSource.PULUMI_CONFIG, name="activationKey")
    )
    database_password: SecretRef = Field(
        default_factory=lambda: SecretRef(source=SecretSource.GENERATED)
    )


# --- parts of a customer -----------------------------------------------------------------------
class Partner(Strict):
    """The partner that sold the instance (P1)."""

    id: Annotated[str, Field(pattern=r"^[a-z][a-z0-9-]{1,39}$")]
    zone: Zone


class Sizing(Strict):
    """What an environment runs on (S1, S2)."""

    instance_type: str
    data_volume_gib: Annotated[
        int, Field(ge=policy.MIN_DATA_VOLUME_GIB, le=policy.MAX_DATA_VOLUME_GIB)
    ]
    #: S2: the ceiling the data volume may grow to online; None means no online growth.
    max_data_volume_gib: Annotated[int, Field(le=policy.MAX_DATA_VOLUME_GIB)] | None = None

    @field_validator("instance_type")
    @classmethod
    def _known_type(cls, value: str) -> str:
        if value not in policy.INSTANCE_TYPES:
            known = ", ".join(sorted(policy.INSTANCE_TYPES))
            raise ValueError(f"{value!r} is not an instance type we sell (one of: {known})")
        return value

    @field_validator("max_data_volume_gib")
    @classmethod
    def _max_above_size(cls, value: int | None, info: ValidationInfo) -> int | None:
        size = info.data.get("data_volume_gib")
        if value is not None and size is not None and value < size:
            raise ValueError(f"must be at least data_volume_gib ({size}) (S2)")
        return value

    @property
    def type(self) -> policy.InstanceType:
        return policy.INSTANCE_TYPES[self.instance_type]


class ProductionSizing(Sizing):
    @field_validator("data_volume_gib")
    @classmethod
    def _room_for_half(cls, value: int) -> int:
        floor = int(policy.MIN_DATA_VOLUME_GIB / policy.TEST_ENV_MAX_RATIO)
        if value < floor:
            raise ValueError(
                f"must be at least {floor} GiB, so the test environment's half still meets the "
                f"{policy.MIN_DATA_VOLUME_GIB} GiB minimum (S9)"
            )
        return value

    @field_validator("instance_type")
    @classmethod
    def _production_type(cls, value: str) -> str:
        if not policy.INSTANCE_TYPES[value].production:
            allowed = ", ".join(sorted(n for n, t in policy.INSTANCE_TYPES.items() if t.production))
            raise ValueError(
                f"{value!r} is too small for production (S1; production types: {allowed})"
            )
        return value


class TestEnvironmentOverride(Strict):
    """Optional downward overrides of the derived test sizing (S9)."""

    instance_type: str | None = None
    data_volume_gib: Annotated[int, Field(ge=policy.MIN_DATA_VOLUME_GIB)] | None = None

    @field_validator("instance_type")
    @classmethod
    def _known_type(cls, value: str | None) -> str | None:
        if value is not None and value not in policy.INSTANCE_TYPES:
            raise ValueError(f"{value!r} is not an instance type we sell")
        return value


class SshUser(Strict):
    """A named, non-root SSH/SFTP user with its public keys (S4, S20)."""

    name: PosixUser
    keys: Annotated[list[PublicKeyLine], Field(min_length=1)]
    #: Full sudo: only the provider's operations user has it; a customer file asking for it is
    #: refused (S4, S16; :class:`SshAccess`).
    sudo: bool = False

    @property
    def public_keys(self) -> list[SshPublicKey]:
        return [parse_public_key(line) for line in self.keys]


def source_address_counts(cidrs: list[str]) -> dict[int, int]:
    """How many addresses of each IP version the union of ``cidrs`` covers (overlaps counted
    once), so that halves or quarters of the Internet add up to what they are (S4)."""
    networks = [ipaddress.ip_network(c, strict=False) for c in cidrs]
    ipv4 = [n for n in networks if isinstance(n, ipaddress.IPv4Network)]
    ipv6 = [n for n in networks if isinstance(n, ipaddress.IPv6Network)]
    return {
        4: sum(n.num_addresses for n in ipaddress.collapse_addresses(ipv4)),
        6: sum(n.num_addresses for n in ipaddress.collapse_addresses(ipv6)),
    }


class SshAccess(Strict):
    """Who may log in over SSH/SFTP, and from where (S4, S20)."""

    allowed_cidrs: Annotated[list[str], Field(min_length=1)]
    #: S4: opening SSH to the whole Internet needs this explicit flag.
    allow_any_source: bool = False
    users: Annotated[list[SshUser], Field(min_length=1)]

    @field_validator("allowed_cidrs")
    @classmethod
    def _valid_cidrs(cls, cidrs: list[str]) -> list[str]:
        for cidr in cidrs:
            try:
                network = ipaddress.ip_network(cidr, strict=True)
            except ValueError as exc:
                raise ValueError(f"{cidr!r} is not a network in CIDR form ({exc})") from None
            if network.is_loopback or network.is_multicast or network.is_link_local:
                raise ValueError(f"{cidr!r} is not a routable source network")
        return cidrs

    @model_validator(mode="after")
    def _any_source_needs_flag(self) -> Self:
        if not self.allow_any_source:
            for version, covered in source_address_counts(self.allowed_cidrs).items():
                ceiling = policy.MAX_SSH_SOURCE_ADDRESSES[version]
                if covered > ceiling:
                    widest = (32 if version == 4 else 128) - (ceiling.bit_length() - 1)
                    raise ValueError(
                        f"allowed_cidrs together open SSH to {covered} IPv{version} addresses, "
                        f"more than a /{widest} ({ceiling}), the most a customer's networks may "
                        "span; set allow_any_source: true to mean it (S4)"
                    )
        rooted = [u.name for u in self.users if u.sudo]
        if rooted:
            raise ValueError(
                f"users {rooted} ask for sudo: customer and partner users are never root (S4: "
                "non-root access; S16: nothing is installed on the server). They may restart "
                "the product and read its journal; the provider's operations user does the rest"
            )
        names = [u.name for u in self.users]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"users: duplicate user names {duplicates}")
        return self


class Licence(Strict):
    """The subscription (S17)."""

    concurrent_users: Annotated[int, Field(ge=1)]
    pos_terminals: Annotated[int, Field(ge=0)] = 0
    #: S17: the subscription starts at the invoice date.
    invoice_date: date
    term_months: int = policy.MIN_TERM_MONTHS

    @field_validator("term_months")
    @classmethod
    def _minimum_term(cls, value: int) -> int:
        if value < policy.MIN_TERM_MONTHS:
            raise ValueError(f"the minimum term is {policy.MIN_TERM_MONTHS} months (S17)")
        return value

    @property
    def term_start(self) -> date:
        return self.invoice_date


class LifecycleState(StrEnum):
    ACTIVE = "active"
    SUSPENDED = "suspended"
    CANCELLED = "cancelled"


class Lifecycle(Strict):
    """Where the customer is in its life (P3, S18)."""

    state: LifecycleState = LifecycleState.ACTIVE
    #: S18: the date written notice of cancellation was received.
    notice_date: date | None = None

    @model_validator(mode="after")
    def _notice_iff_cancelled(self) -> Self:
        if self.state is LifecycleState.CANCELLED and self.notice_date is None:
            raise ValueError("a cancelled customer needs notice_date (S18: 30 days' notice)")
        if self.state is not LifecycleState.CANCELLED and self.notice_date is not None:
            raise ValueError("notice_date is only for state: cancelled (S18)")
        return self

    @property
    def termination_date(self) -> date | None:
        """S18: service ends 30 days after the written notice."""
        if self.notice_date is None:
            return None
        return self.notice_date + policy.CANCELLATION_NOTICE

    def in_service(self, on: date) -> bool:
        """Whether the instances run on ``on``: not while suspended (P3), not from the
        termination date of a cancelled customer (S18: the data is kept, the service stops)."""
        if self.state is LifecycleState.SUSPENDED:
            return False
        end = self.termination_date
        return end is None or on < end

    @property
    def purge_allowed_from(self) -> date | None:
        """S18: data may be destroyed 60 days after termination, not before."""
        end = self.termination_date
        return None if end is None else end + policy.RETENTION_AFTER_TERMINATION


class BackupSettings(Strict):
    """The customer's backup schedule within the policy's bounds (S6, S7, S8)."""

    retention_days: int = policy.BACKUP_RETENTION_DAYS
    archive_timeout_seconds: int = int(policy.ARCHIVE_TIMEOUT.total_seconds())
    #: Nightly start in the data centre's local time (S6: low-traffic hours).
    nightly_local_time: time = policy.BACKUP_LOCAL_TIME

    @field_validator("retention_days")
    @classmethod
    def _retention_floor(cls, value: int) -> int:
        if value < policy.BACKUP_RETENTION_DAYS:
            raise ValueError(
                f"must be at least {policy.BACKUP_RETENTION_DAYS} days (S6: backups kept at "
                "least 30 days)"
            )
        return value

    @field_validator("archive_timeout_seconds")
    @classmethod
    def _archive_timeout_bound(cls, value: int) -> int:
        ceiling = int(policy.ARCHIVE_TIMEOUT.total_seconds())
        if not 1 <= value <= ceiling:
            raise ValueError(
                f"must be between 1 and {ceiling} seconds: the archive timeout bounds the "
                f"recovery point (our RPO target {int(policy.RPO_TARGET.total_seconds())} s, "
                f"S8 promises "
                f"{int(policy.RPO.total_seconds() // 60)} min)"
            )
        return value

    @property
    def archive_timeout(self) -> timedelta:
        return timedelta(seconds=self.archive_timeout_seconds)


# --- the customer ------------------------------------------------------------------------------
class Customer(Strict):
    """One customer's dedicated instance: the single source every stack and file derives from."""

    #: The stack name and the file's stem: ``customers/<id>.yaml``.
    id: str
    company: Annotated[FreeText, Field(min_length=2)]
    contact_email: EmailStr
    partner: Partner
    edition: Edition
    product_version: str
    prefix: DnsLabel
    #: S10: why a region outside the defaults was granted (required for such a region).
    region_exception: Annotated[FreeText, Field(min_length=10)] | None = None
    region: RegionName
    #: S6: where the second copy of the backups lives; derived for the default regions.
    copy_region: RegionName | None = Field(default=None, validate_default=True)
    production: ProductionSizing
    test_environment: TestEnvironmentOverride = Field(default_factory=TestEnvironmentOverride)
    ssh: SshAccess
    licence: Licence
    lifecycle: Lifecycle = Field(default_factory=Lifecycle)
    backup: BackupSettings = Field(default_factory=BackupSettings)
    secrets: Secrets = Field(default_factory=Secrets)

    @field_validator("id")
    @classmethod
    def _id_shape(cls, value: str) -> str:
        if not CUSTOMER_ID.match(value):
            raise ValueError(
                "must be 3-40 characters of a-z, 0-9 and '-', starting with a letter "
                "(it names the Pulumi stack and the file)"
            )
        return value

    @field_validator("product_version")
    @classmethod
    def _supported_version(cls, value: str) -> str:
        check_supported(ProductVersion.parse(value))
        return value

    @field_validator("region")
    @classmethod
    def _region_allowed(cls, value: str, info: ValidationInfo) -> str:
        exception = info.data.get("region_exception")
        if value not in policy.DEFAULT_REGIONS and not exception:
            defaults = " or ".join(sorted(policy.DEFAULT_REGIONS))
            raise ValueError(
                f"{value!r} is not a default region ({defaults}); another region needs "
                "region_exception with the reason (S10)"
            )
        partner = info.data.get("partner")
        if isinstance(partner, Partner):
            prefixes = policy.ZONE_REGION_PREFIXES[partner.zone]
            if not value.startswith(prefixes):
                raise ValueError(
                    f"{value!r} is outside partner {partner.id}'s zone {partner.zone.value} "
                    "(P1, S10)"
                )
        return value

    @field_validator("copy_region")
    @classmethod
    def _copy_region_differs(cls, value: str | None, info: ValidationInfo) -> str | None:
        region = info.data.get("region")
        if region is None:
            return value
        if value is None and region not in policy.COPY_REGIONS:
            raise ValueError(
                f"is required: region {region!r} has no standard copy region, so the second "
                "backup location must be named (S6)"
            )
        if value is not None and value == region:
            raise ValueError("must differ from region: the second copy is elsewhere (S6)")
        return value

    @field_validator("licence")
    @classmethod
    def _licence_minimums(cls, licence: Licence, info: ValidationInfo) -> Licence:
        edition = info.data.get("edition")
        if not isinstance(edition, Edition):
            return licence
        minimum = policy.LICENCE_MINIMUMS[edition]
        problems = []
        if licence.concurrent_users < minimum.concurrent_users:
            problems.append(f"at least {minimum.concurrent_users} concurrent users")
        if licence.pos_terminals < minimum.pos_terminals:
            problems.append(f"at least {minimum.pos_terminals} POS terminals")
        if problems:
            raise ValueError(f"{edition.value} requires {' and '.join(problems)} (S17)")
        return licence

    @field_validator("test_environment")
    @classmethod
    def _test_only_downwards(
        cls, override: TestEnvironmentOverride, info: ValidationInfo
    ) -> TestEnvironmentOverride:
        production = info.data.get("production")
        if not isinstance(production, ProductionSizing):
            return override
        derived = derive_test_sizing(production)
        if override.instance_type is not None:
            wanted = policy.INSTANCE_TYPES[override.instance_type]
            if wanted.vcpu > derived.type.vcpu or wanted.memory_gib > derived.type.memory_gib:
                raise ValueError(
                    f"instance_type {wanted.name} ({wanted.vcpu} vCPU, {wanted.memory_gib} GiB) "
                    f"is above the derived {derived.instance_type}: the test environment may "
                    f"only be made smaller (S9: at most {policy.TEST_ENV_MAX_RATIO:.0%} of "
                    "production)"
                )
        if override.data_volume_gib is not None and (
            override.data_volume_gib > derived.data_volume_gib
        ):
            raise ValueError(
                f"data_volume_gib {override.data_volume_gib} is above the derived "
                f"{derived.data_volume_gib}: only smaller is allowed (S9)"
            )
        return override

    # --- derived values: computed, never stored -------------------------------------------------
    @property
    def url_host(self) -> str:
        """S3: ``<prefix>.cloud.<domain>``."""
        return f"{self.prefix}.cloud.{policy.SERVICE_DOMAIN}"

    @property
    def test_url_host(self) -> str:
        """S9: the test environment's own name under the same domain."""
        return f"{self.prefix}-{policy.TEST_ENV_PREFIX_SUFFIX}.cloud.{policy.SERVICE_DOMAIN}"

    @property
    def backup_copy_region(self) -> str:
        """S6: the second location, never the primary region."""
        return self.copy_region or policy.COPY_REGIONS[self.region]

    @property
    def timezone(self) -> ZoneInfo:
        """The data centre's local time (S11)."""
        return ZoneInfo(policy.REGION_TIMEZONES[self.region])

    @property
    def version(self) -> ProductVersion:
        return ProductVersion.parse(self.product_version)

    @property
    def test_sizing(self) -> Sizing:
        """S9: derived from production, then lowered by the overrides, never raised."""
        derived = derive_test_sizing(self.production)
        return Sizing(
            instance_type=self.test_environment.instance_type or derived.instance_type,
            data_volume_gib=self.test_environment.data_volume_gib or derived.data_volume_gib,
        )

    @property
    def backup_bucket_names(self) -> tuple[str, str]:
        """S6: the primary-region and copy-region bucket names (globally unique by design)."""
        return (
            f"erpcloud-{self.id}-backup-{self.region}",
            f"erpcloud-{self.id}-backup-{self.backup_copy_region}",
        )

    @property
    def access_log_bucket_name(self) -> str:
        """S5: the load balancers' access logs, in the primary region (both environments)."""
        return f"erpcloud-{self.id}-alb-logs-{self.region}"

    @property
    def stanza(self) -> str:
        """The pgBackRest stanza: one per customer (S6, S7)."""
        return self.id

    def local_time(self, moment: datetime) -> datetime:
        return moment.astimezone(self.timezone)


def derive_test_sizing(production: Sizing) -> Sizing:
    """S9: the largest sold type with at most half of production's vCPU and memory.

    The same family is preferred, so the test environment behaves like production; the volume
    is half of production's, but never under the platform minimum.
    """
    prod = production.type
    ratio = policy.TEST_ENV_MAX_RATIO
    fits = [
        t
        for t in policy.INSTANCE_TYPES.values()
        if t.vcpu <= prod.vcpu * ratio and t.memory_gib <= prod.memory_gib * ratio
    ]
    if not fits:
        raise ValueError(f"no instance type is at most {ratio:.0%} of {prod.name} (S9)")
    same_family = [t for t in fits if t.family == prod.family]
    best = max(same_family or fits, key=lambda t: (t.vcpu, t.memory_gib))
    volume = int(production.data_volume_gib * ratio)
    return Sizing(instance_type=best.name, data_volume_gib=volume)


class Environment(StrEnum):
    """A customer's two environments: production (S1) and the derived test environment (S9)."""

    PRODUCTION = "production"
    TEST = "test"

    @property
    def has_backups(self) -> bool:
        """S9: no backups for the test environment."""
        return self is Environment.PRODUCTION

    @property
    def has_monitoring(self) -> bool:
        """S9: no monitoring for the test environment."""
        return self is Environment.PRODUCTION

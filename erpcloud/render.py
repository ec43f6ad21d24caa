"""Jinja2 renderers for everything that lands on the machines, and for customer notices.

Templates live in ``erpcloud/templates``; undefined variables are errors (StrictUndefined).
Renderers take typed objects and never receive a secret value: only the names of the secrets
(S1: the instance reads them from Secrets Manager at boot). Files reach disk only through
:func:`render_customer`, which writes a whole tree atomically.
"""

from __future__ import annotations

import calendar
import functools
import ipaddress
import json
import shlex
import shutil
import subprocess
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from importlib import resources
from pathlib import Path
from typing import Any, Final
from zoneinfo import ZoneInfo

import jinja2
import yaml

from erpcloud import policy
from erpcloud.documents import is_control
from erpcloud.files import replace_tree
from erpcloud.model import Customer, Environment, SecretSource, SshUser
from erpcloud.sshkeys import parse_public_key

#: The product's database and role on every instance (S1; P4 lists them in the inventory).
PRODUCT_DATABASE: Final = "erp"
PRODUCT_DATABASE_USER: Final = "erp"

#: CloudWatch namespace of the platform's custom metrics (S5).
METRICS_NAMESPACE: Final = "ERPCloud"

#: cloud-init 22.4 accepts unknown top-level keys, so we check them ourselves: these are the
#: only keys our user-data may use.
CLOUD_CONFIG_KEYS: Final[frozenset[str]] = frozenset(
    {
        "hostname",
        "fqdn",
        "timezone",
        "manage_etc_hosts",
        "disable_root",
        "ssh_pwauth",
        "users",
        "write_files",
        "runcmd",
        "final_message",
    }
)


def _pg_quote(value: str) -> str:
    """A postgresql.conf string literal."""
    return "'" + value.replace("\\", "\\\\").replace("'", "''") + "'"


class UnsafeValue(ValueError):
    """A value cannot be written into a file of this format without changing its meaning."""


def _one_line(value: object, what: str) -> str:
    text = str(value)
    bad = next((c for c in text if c != "\t" and is_control(c)), None)
    if bad is not None:
        raise UnsafeValue(
            f"{text!r} cannot go into {what}: U+{ord(bad):04X} is a control character there"
        )
    return text


def _systemd_text(value: object) -> str:
    """A plain unit file value (``Description=``, ``User=``...): one line with its ``%``
    specifiers escaped (systemd.unit(5)). Such values take backslashes literally, except one at
    the end, which would continue the line into the next setting (systemd.syntax(7))."""
    text = _one_line(value, "a unit file")
    if text.endswith("\\"):
        raise UnsafeValue(f"{text!r} cannot end a unit file line: the backslash continues it")
    return text.replace("%", "%%")


def _systemd_quoted(text: str) -> str:
    """A double-quoted word of a unit file: C-style ``\\`` and ``\"``, and ``%`` specifiers
    escaped (systemd.syntax(7), systemd.unit(5))."""
    escaped = text.replace("\\", "\\\\").replace('"', '\\"').replace("%", "%%")
    return f'"{escaped}"'


def _systemd_environment(value: object, name: str) -> str:
    """One ``Environment=`` assignment, double-quoted (systemd.exec(5)): ``"NAME=value"``."""
    return _systemd_quoted(f"{name}={_one_line(value, 'a unit file')}")


def _systemd_exec_word(value: object) -> str:
    """One word of an ``ExecStart=`` command line: quoted, with ``$`` and ``%`` escaped."""
    return _systemd_quoted(_one_line(value, "a unit file").replace("$", "$$"))


def _ini_value(value: object) -> str:
    """A pgbackrest.conf value: one line (the file has no quoting; a newline would add an
    option of its own)."""
    return _one_line(value, "pgbackrest.conf")


def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("erpcloud", "templates"),
        undefined=jinja2.StrictUndefined,
        autoescape=jinja2.select_autoescape(enabled_extensions=("html.j2",), default=False),
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    env.filters["pg_quote"] = _pg_quote
    env.filters["shell_quote"] = lambda value: shlex.quote(_one_line(value, "a shell script"))
    env.filters["systemd_text"] = _systemd_text
    env.filters["systemd_env"] = _systemd_environment
    env.filters["systemd_word"] = _systemd_exec_word
    env.filters["ini"] = _ini_value
    return env


_ENV: Final = _environment()


def render_template(name: str, **context: Any) -> str:
    return _ENV.get_template(name).render(**context)


# --- where things are on a host ---------------------------------------------------------------
@dataclass(frozen=True)
class HostLayout:
    """Paths and ports on a database host. Production's are Debian 13's defaults (the image,
    S1); the host-process stand-in still uses its own private directories."""

    pg_version: int = 17
    pg_data: str = "/var/lib/postgresql/17/main"
    pg_port: int = 5432
    pg_socket_dir: str = ""  # empty: the distribution default
    listen_addresses: str = "localhost"  # the product runs on the same host
    pgbackrest_config: str = "/etc/pgbackrest/pgbackrest.conf"
    spool_path: str = "/var/spool/pgbackrest"
    log_path: str = "/var/log/pgbackrest"
    lock_path: str = "/tmp/pgbackrest"  # noqa: S108 - pgBackRest's own default
    data_mount: str = "/var/lib/postgresql"
    conf_d: str = "/etc/postgresql/17/main/conf.d"
    #: Bundled repositories with block-level incremental backups (pgBackRest ≥ 2.46, the
    #: image's 2.55): an incremental copies the changed blocks of a file, not the file (S6).
    block_incremental: bool = True


@dataclass(frozen=True)
class S3Repo:
    """One pgBackRest S3 repository (S6: repo1 primary region, repo2 copy region)."""

    index: int
    bucket: str
    region: str
    endpoint: str
    port: int | None = None
    verify_tls: bool = True
    uri_style: str = "host"
    #: ``auto``: the instance role (IMDSv2); ``shared``: keys from the environment (local target).
    key_type: str = "auto"
    path: str = "/pgbackrest"


def aws_repos(customer: Customer) -> tuple[S3Repo, S3Repo]:
    """The two repositories on AWS: the buckets the customer's stack creates (S6)."""
    primary, copy = customer.backup_bucket_names
    return (
        S3Repo(1, primary, customer.region, f"s3.{customer.region}.amazonaws.com"),
        S3Repo(
            2,
            copy,
            customer.backup_copy_region,
            f"s3.{customer.backup_copy_region}.amazonaws.com",
        ),
    )


def archive_command(customer: Customer, layout: HostLayout) -> str:
    """S7: one archive-push sends each WAL segment to both repositories."""
    return (
        f"pgbackrest --config={layout.pgbackrest_config} --stanza={customer.stanza} archive-push %p"
    )


# --- individual files -------------------------------------------------------------------------
def render_postgresql_conf(
    customer: Customer, layout: HostLayout, environment: Environment = Environment.PRODUCTION
) -> str:
    """The ``conf.d`` fragment: WAL level, archiving (production only, S7/S9), timeouts."""
    return render_template(
        "postgresql/erpcloud.conf.j2",
        customer=customer,
        layout=layout,
        environment=environment.value,
        archiving=environment.has_backups,
        archive_command=archive_command(customer, layout),
    )


def render_pgbackrest_conf(
    customer: Customer, layout: HostLayout, repos: tuple[S3Repo, ...] | None = None
) -> str:
    """``pgbackrest.conf``: the customer's stanza with its two S3 repositories (S6, S7)."""
    chosen = repos if repos is not None else aws_repos(customer)
    shared = any(r.key_type == "shared" for r in chosen)
    note = (
        "S3 keys come from the environment (PGBACKREST_REPOn_S3_KEY/_SECRET)"
        if shared
        else "S3 credentials come from the instance role (IMDSv2)"
    )
    return render_template(
        "pgbackrest/pgbackrest.conf.j2",
        customer=customer,
        layout=layout,
        repos=chosen,
        credentials_note=note,
    )


_WEEKDAYS: Final = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")


#: Years scanned for the nights a local time does not exist (fixed, so rendering is repeatable).
_DST_SCAN_YEARS: Final = range(2025, 2051)


@functools.lru_cache(maxsize=64)
def dst_gap_calendars(zone_name: str, at: time) -> tuple[tuple[int, str], ...]:
    """``(ISO weekday, OnCalendar spec)`` for the nights ``at`` does not exist in ``zone_name``.

    systemd skips a timer whose local time falls in a clock-forward gap (01:30 in Dublin on the
    last Sunday of March), which would leave that day without a backup (S6). Each such night
    gets its own calendar entry at the wall time the clocks jumped to, as a rule (``Sun
    *-03-25..31``) when the nights follow one, else as dates.
    """
    zone = ZoneInfo(zone_name)
    gaps: dict[tuple[int, int, str], list[date]] = {}
    first = date(_DST_SCAN_YEARS.start, 1, 1).toordinal()
    for ordinal in range(first, date(_DST_SCAN_YEARS.stop, 1, 1).toordinal()):
        day = date.fromordinal(ordinal)
        local = datetime.combine(day, at, tzinfo=zone)
        jumped = local.astimezone(UTC).astimezone(zone)
        if jumped.replace(tzinfo=None) != local.replace(tzinfo=None):
            key = (day.month, day.isoweekday(), jumped.strftime("%H:%M:%S"))
            gaps.setdefault(key, []).append(day)
    specs: list[tuple[int, str]] = []
    for (month, weekday, wall), days in sorted(gaps.items()):
        # One weekday in a 7-day span of a month is one date a year: a rule systemd can keep.
        month_end = calendar.monthrange(2001, month)[1]  # 28 for February: a shorter span
        low = min(min(d.day for d in days), month_end - 6)
        if max(d.day for d in days) <= low + 6:
            name = _WEEKDAYS[weekday - 1]
            specs.append((weekday, f"{name} *-{month:02d}-{low:02d}..{low + 6:02d} {wall}"))
        else:
            specs.extend((weekday, f"{d.isoformat()} {wall}") for d in days)
    return tuple((weekday, f"{spec} {zone_name}") for weekday, spec in specs)


def render_backup_units(customer: Customer, layout: HostLayout) -> dict[str, str]:
    """S6: systemd units for the weekly full and the nightly differential backups."""
    full_day = _WEEKDAYS[policy.FULL_BACKUP_ISO_WEEKDAY - 1]
    other_days = ",".join(d for d in _WEEKDAYS if d != full_day)
    timezone = policy.REGION_TIMEZONES[customer.region]
    gaps = dst_gap_calendars(timezone, customer.backup.nightly_local_time)
    context = {
        "customer": customer,
        "layout": layout,
        "timezone": timezone,
        "start": customer.backup.nightly_local_time.strftime("%H:%M:%S"),
        "full_weekday": full_day,
        "diff_weekdays": other_days,
        "full_gap_calendars": [s for d, s in gaps if d == policy.FULL_BACKUP_ISO_WEEKDAY],
        "diff_gap_calendars": [s for d, s in gaps if d != policy.FULL_BACKUP_ISO_WEEKDAY],
    }
    return {
        "pgbackrest-backup@.service": render_template(
            "systemd/pgbackrest-backup@.service.j2", **context
        ),
        "pgbackrest-full.timer": render_template("systemd/pgbackrest-full.timer.j2", **context),
        "pgbackrest-diff.timer": render_template("systemd/pgbackrest-diff.timer.j2", **context),
    }


def render_gap_check_units(
    erpcloud: str,
    inventory: str,
    customers_dir: str,
    working_dir: str,
    user: str = "erpcloud-ops",
) -> dict[str, str]:
    """S5-S7: the operations host's timer running the fleet's WAL gap check every
    ``WAL_GAP_CHECK_INTERVAL`` (no secret: the host's role signs for CloudWatch)."""
    seconds = int(policy.WAL_GAP_CHECK_INTERVAL.total_seconds())
    context = {
        "erpcloud": erpcloud,
        "inventory": inventory,
        "customers_dir": customers_dir,
        "working_dir": working_dir,
        "user": user,
        "interval_seconds": seconds,
        "interval_minutes": seconds // 60,
    }
    return {
        "erpcloud-gap-check.service": render_template(
            "ops/erpcloud-gap-check.service.j2", **context
        ),
        "erpcloud-gap-check.timer": render_template("ops/erpcloud-gap-check.timer.j2", **context),
    }


def render_cloudwatch_agent_config(customer: Customer, layout: HostLayout) -> str:
    """S5: CPU, memory, disk use, disk activity and network, plus the database logs."""
    text = render_template(
        "monitoring/amazon-cloudwatch-agent.json.j2",
        namespace=METRICS_NAMESPACE,
        data_mount=layout.data_mount,
        log_group=f"/erpcloud/{customer.id}",
    )
    json.loads(text)  # a template slip must fail here, not on the instance
    return text


def secret_name(
    customer: Customer, which: str, environment: Environment = Environment.PRODUCTION
) -> str:
    """The Secrets Manager name an environment's instance reads a secret from (S1). The test
    environment has secrets of its own (issue 13): its role can read nothing of production's."""
    ref = getattr(customer.secrets, which)
    if environment is Environment.TEST:
        return f"erpcloud/{customer.id}/test/{which.replace('_', '-')}"
    if ref.source is SecretSource.SECRETS_MANAGER:
        return str(ref.name)
    return f"erpcloud/{customer.id}/{which.replace('_', '-')}"


def sshd_allow_users(customer: Customer) -> list[str]:
    """``AllowUsers`` patterns (S4, S20): each customer user only from the customer's networks
    (what the security group admits, checked again by sshd); the provider's operations and
    support users from wherever the security group lets them in (they hold no password and
    log in by key or certificate only)."""
    networks = [str(ipaddress.ip_network(c, strict=False)) for c in customer.ssh.allowed_cidrs]
    if customer.ssh.allow_any_source:
        patterns = [u.name for u in customer.ssh.users]
    else:
        patterns = [f"{u.name}@{net}" for u in customer.ssh.users for net in networks]
    return [*patterns, policy.OPERATIONS_USER, policy.SUPPORT_USER]


def render_sshd_drop_in(customer: Customer, users: list[str]) -> str:
    """S4: key-only SSH and SFTP for named non-root users, with the policy's algorithms; it
    loads beside the image's stock ``sshd_config`` (which sets the sftp subsystem)."""
    return render_template(
        "ssh/50-erpcloud.conf.j2",
        customer=customer,
        users=users,
        kex=policy.SSH_KEX_ALGORITHMS,
        ciphers=policy.SSH_CIPHERS,
        macs=policy.SSH_MACS,
        host_key_algorithms=policy.SSH_HOST_KEY_ALGORITHMS,
        pubkey_algorithms=policy.SSH_PUBKEY_ALGORITHMS,
        max_auth_tries=policy.SSH_MAX_AUTH_TRIES,
        login_grace_seconds=policy.SSH_LOGIN_GRACE_SECONDS,
    )


@dataclass(frozen=True)
class HostFile:
    """A file the instance gets through cloud-init's ``write_files``."""

    path: str
    content: str
    mode: str = "0644"
    owner: str = "root:root"


def host_files(
    customer: Customer,
    environment: Environment,
    layout: HostLayout,
    repos: tuple[S3Repo, ...] | None = None,
    support_ca: str | None = None,
) -> list[HostFile]:
    """Every file cloud-init writes on one environment's instance (``repos``: where the backups
    go, when not the customer's AWS buckets; ``support_ca``: the support CA's public key, when
    not the provider's)."""
    host = customer.url_host if environment is Environment.PRODUCTION else customer.test_url_host
    files = [
        *support_access_files(customer, support_ca or support_ca_key()),
        HostFile(
            "/etc/ssh/sshd_config.d/50-erpcloud.conf",
            render_sshd_drop_in(customer, sshd_allow_users(customer)),
        ),
        HostFile(
            "/etc/sudoers.d/erpcloud-customers",
            render_template(
                "ssh/erpcloud-customers.sudoers.j2",
                customer=customer,
                users=[u.name for u in customer.ssh.users],
            ),
            mode="0440",
        ),
        HostFile(
            f"{layout.conf_d}/erpcloud.conf",
            render_postgresql_conf(customer, layout, environment),
            owner="postgres:postgres",
        ),
        HostFile(
            "/etc/systemd/system/erp-product.service",
            render_template(
                "product/erp-product.service.j2",
                customer=customer,
                app_port=policy.APP_PORT,
                host=host,
            ),
        ),
        HostFile(
            "/etc/systemd/system/erpcloud-secrets.service",
            render_template("product/erpcloud-secrets.service.j2", customer=customer),
        ),
        HostFile(
            "/usr/local/lib/erpcloud/fetch-secrets",
            render_template(
                "product/fetch-secrets.sh.j2",
                customer=customer,
                region=customer.region,
                activation_key_secret=secret_name(customer, "activation_key", environment),
                database_password_secret=secret_name(customer, "database_password", environment),
            ),
            mode="0750",
        ),
    ]
    if environment.has_backups:
        files.append(
            HostFile(
                layout.pgbackrest_config,
                render_pgbackrest_conf(customer, layout, repos),
                mode="0640",
                owner="postgres:postgres",
            )
        )
        files.extend(
            HostFile(f"/etc/systemd/system/{name}", text)
            for name, text in render_backup_units(customer, layout).items()
        )
    if environment.has_monitoring:
        files.extend(
            [
                HostFile(CLOUDWATCH_CONFIG_PATH, render_cloudwatch_agent_config(customer, layout)),
                HostFile(
                    "/usr/local/lib/erpcloud/db-metrics",
                    render_template(
                        "monitoring/db-metrics.sh.j2",
                        customer=customer,
                        layout=layout,
                        region=customer.region,
                        namespace=METRICS_NAMESPACE,
                    ),
                    mode="0755",
                ),
                HostFile(
                    "/etc/systemd/system/erpcloud-db-metrics.service",
                    render_template("systemd/erpcloud-db-metrics.service.j2", customer=customer),
                ),
                HostFile(
                    "/etc/systemd/system/erpcloud-db-metrics.timer",
                    render_template("systemd/erpcloud-db-metrics.timer.j2", customer=customer),
                ),
            ]
        )
    return files


CLOUDWATCH_CONFIG_PATH: Final = "/opt/aws/amazon-cloudwatch-agent/etc/amazon-cloudwatch-agent.json"


def _data_keys(name: str) -> tuple[str, ...]:
    """The public keys in ``erpcloud/data/<name>`` (comments skipped), each parsed: a bad key
    there must fail the render, not the boot."""
    text = resources.files("erpcloud").joinpath(f"data/{name}").read_text()
    keys = tuple(
        line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")
    )
    for key in keys:
        parse_public_key(key)
    return keys


def support_ca_key() -> str:
    """The provider's support CA public key (``erpcloud/data/support-ca.pub``), parsed (P5)."""
    keys = _data_keys("support-ca.pub")
    if len(keys) != 1:
        raise ValueError("erpcloud/data/support-ca.pub must hold exactly one key")
    return parse_public_key(keys[0]).openssh()


def support_access_files(customer: Customer, ca_public_key: str) -> list[HostFile]:
    """P5: sshd trusts the support CA for one principal, ``support-<id>``, as the support user
    only; certificates of revoked keys are refused (``erpcloud support revoke`` adds to it)."""
    return [
        HostFile(
            "/etc/ssh/erpcloud-support-ca.pub", parse_public_key(ca_public_key).openssh() + "\n"
        ),
        HostFile(
            f"/etc/ssh/erpcloud-principals/{policy.SUPPORT_USER}",
            policy.support_principal(customer.id) + "\n",
        ),
        HostFile(
            "/etc/ssh/erpcloud-revoked-keys",
            "# Public keys whose support certificates are refused (erpcloud support revoke).\n",
        ),
    ]


def operations_keys() -> tuple[str, ...]:
    """The operations team's public keys (``erpcloud/data/operations-keys.pub``), each parsed."""
    keys = _data_keys("operations-keys.pub")
    if not keys:
        raise ValueError("erpcloud/data/operations-keys.pub holds no key")
    return keys


def login_users(customer: Customer, ops_keys: tuple[str, ...] | None = None) -> list[SshUser]:
    """The customer's users (S4) and the provider's operations user (maintenance, drills)."""
    operations = SshUser(
        name=policy.OPERATIONS_USER,
        keys=list(ops_keys if ops_keys is not None else operations_keys()),
        sudo=True,
    )
    return [*customer.ssh.users, operations]


def render_user_data(
    customer: Customer,
    environment: Environment = Environment.PRODUCTION,
    layout: HostLayout | None = None,
    ops_keys: tuple[str, ...] | None = None,
    repos: tuple[S3Repo, ...] | None = None,
    support_ca: str | None = None,
) -> str:
    """The cloud-init user-data of one environment's instance (S1, S4; S5-S7 production only).

    ``ops_keys`` replaces the operations team's keys, ``repos`` the backup repositories and
    ``support_ca`` the support CA (the local machines use their own keys and the S3 emulator).
    """
    chosen = layout or HostLayout()
    host = customer.url_host if environment is Environment.PRODUCTION else customer.test_url_host
    text = render_template(
        "cloud-init/user-data.yaml.j2",
        customer=customer,
        environment=environment.value,
        layout=chosen,
        hostname=host.split(".")[0],
        fqdn=host,
        timezone=policy.REGION_TIMEZONES[customer.region],
        users=login_users(customer, ops_keys),
        files=host_files(customer, environment, chosen, repos, support_ca),
        support_user=policy.SUPPORT_USER,
        backups=environment.has_backups,
        monitoring=environment.has_monitoring,
        cloudwatch_config_path=CLOUDWATCH_CONFIG_PATH,
    )
    check_cloud_config_keys(text)
    return text


# --- checking rendered user-data --------------------------------------------------------------
class UserDataError(ValueError):
    """Rendered user-data that cloud-init (or our own key check) refuses."""


def check_cloud_config_keys(text: str) -> None:
    """The checks ``cloud-init schema`` 22.4 does not make: header and top-level keys."""
    if not text.startswith("#cloud-config\n"):
        raise UserDataError("user-data must begin with '#cloud-config'")
    data = yaml.safe_load(text)
    if not isinstance(data, dict):
        raise UserDataError("user-data must be a YAML mapping")
    unknown = sorted(set(data) - CLOUD_CONFIG_KEYS)
    if unknown:
        raise UserDataError(f"unknown top-level cloud-config keys: {', '.join(unknown)}")


def cloud_init_schema(path: Path) -> subprocess.CompletedProcess[str]:
    """Run Debian's real ``cloud-init schema -c FILE`` (exit 0 valid, 1 invalid)."""
    binary = shutil.which("cloud-init")
    if binary is None:
        raise FileNotFoundError("cloud-init is not installed (make setup installs it)")
    return subprocess.run(
        [binary, "schema", "-c", str(path)], capture_output=True, text=True, check=False
    )


def validate_user_data_file(path: Path) -> None:
    """Raise :class:`UserDataError` unless cloud-init and our own key check accept ``path``."""
    check_cloud_config_keys(path.read_text(encoding="utf-8"))
    result = cloud_init_schema(path)
    if result.returncode != 0:
        detail = (result.stderr or result.stdout).strip()
        raise UserDataError(f"{path}: cloud-init schema refused it: {detail}")


# --- notices ----------------------------------------------------------------------------------
NOTICE_KINDS: Final = ("standard", "emergency", "major")


@dataclass(frozen=True)
class NoticeWindow:
    """What a customer notice says about one maintenance (S11-S13)."""

    change_id: str
    kind: str
    reason: str
    summary: str
    starts_at: datetime  # timezone-aware
    duration: timedelta
    expected_downtime: timedelta
    timezone: str
    reason_category: str = ""

    def _local(self, moment: datetime) -> datetime:
        return moment.astimezone(ZoneInfo(self.timezone))

    @property
    def starts_local(self) -> str:
        return self._local(self.starts_at).strftime("%A %d %B %Y %H:%M %Z")

    @property
    def starts_local_date(self) -> str:
        return self._local(self.starts_at).strftime("%A %d %B %Y")

    @property
    def ends_local(self) -> str:
        return self._local(self.starts_at + self.duration).strftime("%H:%M %Z")

    @property
    def starts_utc(self) -> str:
        return self._utc(self.starts_at).strftime("%Y-%m-%d %H:%M UTC")

    @property
    def ends_utc(self) -> str:
        return self._utc(self.starts_at + self.duration).strftime("%Y-%m-%d %H:%M UTC")

    @staticmethod
    def _utc(moment: datetime) -> datetime:
        return moment.astimezone(UTC)

    @property
    def downtime_text(self) -> str:
        minutes = int(self.expected_downtime.total_seconds() // 60)
        if minutes == 0:
            return "none expected"
        hours, rest = divmod(minutes, 60)
        return f"up to {hours} h {rest:02d} min" if hours else f"up to {minutes} minutes"


@dataclass(frozen=True)
class RenderedNotice:
    subject: str
    text: str
    html: str


def render_notice(customer: Customer, notice: NoticeWindow) -> RenderedNotice:
    """One customer's notice of a maintenance, as plain text and HTML."""
    if notice.kind not in NOTICE_KINDS:
        raise ValueError(f"notice kind must be one of {NOTICE_KINDS}, not {notice.kind!r}")
    text = render_template(f"notices/{notice.kind}.txt.j2", customer=customer, notice=notice)
    html = render_template(f"notices/{notice.kind}.html.j2", customer=customer, notice=notice)
    subject = text.splitlines()[0].strip()
    return RenderedNotice(subject=subject, text=text, html=html)


@dataclass(frozen=True)
class DigestItem:
    customer: Customer
    notice: NoticeWindow


def render_partner_digest(
    partner_id: str, notice: NoticeWindow, items: list[DigestItem]
) -> RenderedNotice:
    """One partner's digest of a maintenance over all its affected customers."""
    context = {"partner_id": partner_id, "notice": notice, "items": items}
    text = render_template("notices/partner-digest.txt.j2", **context)
    html = render_template("notices/partner-digest.html.j2", **context)
    return RenderedNotice(subject=text.splitlines()[0].strip(), text=text, html=html)


# --- a customer's whole build folder ----------------------------------------------------------
@dataclass
class RenderedCustomer:
    customer_id: str
    directory: Path
    files: dict[str, tuple[str, int]] = field(default_factory=dict)


def customer_files(
    customer: Customer, layout: HostLayout | None = None
) -> dict[str, tuple[str, int]]:
    """Everything rendered for one customer, by relative path, in memory."""
    chosen = layout or HostLayout()
    files: dict[str, tuple[str, int]] = {}
    for environment in Environment:
        files[f"{environment.value}/user-data.yaml"] = (
            render_user_data(customer, environment, chosen),
            0o644,
        )
        for host_file in host_files(customer, environment, chosen):
            relative = f"{environment.value}/files{host_file.path}"
            files[relative] = (host_file.content, int(host_file.mode, 8))
    return files


def render_customer(customer: Customer, build_dir: Path) -> RenderedCustomer:
    """Render everything for ``customer`` into ``build_dir/<id>/``: all of it or none of it."""
    files = customer_files(customer)  # any template error is raised before a byte is written
    directory = build_dir / customer.id
    replace_tree(directory, files)
    return RenderedCustomer(customer.id, directory, files)

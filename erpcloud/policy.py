"""Every number the service promises, in one place, each citing its requirement.

The numbered requirements (S1-S20, P1-P8) are listed in ``shared/SERVICE.md``; the seed
documents behind them are the source of truth. No other module repeats these literals: import
them from here. Values that are our own operating choices (not promised to customers) say so.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import time, timedelta
from enum import StrEnum
from typing import Final


class Zone(StrEnum):
    """A partner's account zone (P1)."""

    EU = "EU"
    US = "US"


class Edition(StrEnum):
    """The product sold with the cloud service (S17)."""

    COMMERCE = "commerce"
    BUSINESS = "business"


# --- S3: the endpoint ------------------------------------------------------------------------
#: The provider's domain; customers choose only the prefix (S3), never the domain (S16).
SERVICE_DOMAIN: Final = "erp-cloud.example.net"
#: Labels no customer may take as `<prefix>` (S3: "within restrictions").
RESERVED_PREFIXES: Final[frozenset[str]] = frozenset(
    {
        "www",
        "api",
        "admin",
        "mail",
        "status",
        "cloud",
        "smtp",
        "imap",
        "pop",
        "ftp",
        "sftp",
        "ssh",
        "vpn",
        "ns",
        "ns1",
        "ns2",
        "dns",
        "mx",
        "autodiscover",
        "autoconfig",
        "support",
        "help",
        "docs",
        "blog",
        "portal",
        "login",
        "auth",
        "sso",
        "id",
        "account",
        "accounts",
        "billing",
        "signup",
        "partner",
        "partners",
        "static",
        "cdn",
        "assets",
        "monitoring",
        "grafana",
        "metrics",
        "backup",
        "backups",
        "console",
        "dashboard",
        "root",
        "localhost",
        "test",
        "staging",
        "demo",
        "dev",
        "internal",
        "ops",
        "security",
    }
)
#: The test environment's URL is `<prefix>-<suffix>.cloud.<domain>` (S9).
TEST_ENV_PREFIX_SUFFIX: Final = "test"
#: The application port behind the load balancer; only the ALB reaches it (S3).
APP_PORT: Final = 8443
#: TLS policy of the HTTPS listener (S3: modern TLS only, 1.2 minimum, 1.3 preferred).
ALB_TLS_POLICY: Final = "ELBSecurityPolicy-TLS13-1-2-2021-06"
#: The only port the public endpoint listens on (S3: plain HTTP is not possible).
HTTPS_PORT: Final = 443
#: Ports no listener, rule or ingress may ever open (S3).
FORBIDDEN_PORTS: Final[frozenset[int]] = frozenset({80})


# --- S4 / S20: SSH ---------------------------------------------------------------------------
SSH_PORT: Final = 22
#: Minimum RSA modulus for an SSH key (S4; NIST SP 800-57 for use beyond 2030).
MIN_RSA_BITS: Final = 3072
#: Key types accepted (S4: public-key authentication only). No DSA (OpenSSH dropped it).
ALLOWED_SSH_KEY_TYPES: Final[frozenset[str]] = frozenset(
    {
        "ssh-ed25519",
        "ssh-rsa",
        "ecdsa-sha2-nistp256",
        "ecdsa-sha2-nistp384",
        "ecdsa-sha2-nistp521",
    }
)
#: sshd's algorithms (S4, issue 13): post-quantum hybrid and curve25519 key exchange,
#: authenticated encryption or CTR with encrypt-then-MAC, no SHA-1, no NIST-curve host keys;
#: what ``ssh-audit`` accepts with no failure, and what paramiko (our runner) speaks.
SSH_KEX_ALGORITHMS: Final = (
    "mlkem768x25519-sha256",
    "sntrup761x25519-sha512",
    "sntrup761x25519-sha512@openssh.com",
    "curve25519-sha256",
    "curve25519-sha256@libssh.org",
    "diffie-hellman-group16-sha512",
    "diffie-hellman-group18-sha512",
)
SSH_CIPHERS: Final = (
    "chacha20-poly1305@openssh.com",
    "aes256-gcm@openssh.com",
    "aes128-gcm@openssh.com",
    "aes256-ctr",
    "aes192-ctr",
    "aes128-ctr",
)
SSH_MACS: Final = (
    "hmac-sha2-256-etm@openssh.com",
    "hmac-sha2-512-etm@openssh.com",
    "umac-128-etm@openssh.com",
)
SSH_HOST_KEY_ALGORITHMS: Final = ("ssh-ed25519", "rsa-sha2-512", "rsa-sha2-256")
#: Client keys: what :data:`ALLOWED_SSH_KEY_TYPES` admits, with SHA-2 signatures for RSA, and
#: their certificates (P5: support logs in with one).
SSH_PUBKEY_ALGORITHMS: Final = (
    "ssh-ed25519-cert-v01@openssh.com",
    "ecdsa-sha2-nistp256-cert-v01@openssh.com",
    "ecdsa-sha2-nistp384-cert-v01@openssh.com",
    "ecdsa-sha2-nistp521-cert-v01@openssh.com",
    "rsa-sha2-512-cert-v01@openssh.com",
    "rsa-sha2-256-cert-v01@openssh.com",
    "ssh-ed25519",
    "ecdsa-sha2-nistp256",
    "ecdsa-sha2-nistp384",
    "ecdsa-sha2-nistp521",
    "rsa-sha2-512",
    "rsa-sha2-256",
)
#: Failed logins per connection, and seconds to log in, before sshd hangs up (S4).
SSH_MAX_AUTH_TRIES: Final = 3
SSH_LOGIN_GRACE_SECONDS: Final = 30
#: A key's comment lands in ``authorized_keys``: printable characters, this long at most (S4).
MAX_SSH_KEY_COMMENT: Final = 100
#: The widest SSH source a customer file may open without ``allow_any_source`` (S4, S20),
#: counted over the union of its networks per family, so halves or quarters of the Internet do
#: not add up to an open door: an IPv4 /8 and an IPv6 /32 (a whole provider's allocation) are
#: far wider than any office or VPN a customer reaches us from.
MAX_SSH_SOURCE_ADDRESSES: Final[dict[int, int]] = {4: 2**24, 6: 2**96}
#: The provider's own maintenance login on every instance (S11-S13 maintenance, S8 drills):
#: key-only like every user, with sudo; its public keys are erpcloud/data/operations-keys.pub.
OPERATIONS_USER: Final = "erpcloud-ops"
#: System accounts a customer user may never be named after (S4: non-root).
RESERVED_USERNAMES: Final[frozenset[str]] = frozenset(
    {
        "root",
        "daemon",
        "bin",
        "sys",
        "sync",
        "games",
        "man",
        "lp",
        "mail",
        "news",
        "uucp",
        "proxy",
        "www-data",
        "backup",
        "list",
        "irc",
        "gnats",
        "nobody",
        "systemd-network",
        "systemd-resolve",
        "messagebus",
        "sshd",
        "postgres",
        "ubuntu",
        "admin",
        "erp",
        "cwagent",
        "syslog",
        "_apt",
        "pgbackrest",
    }
)


# --- S10: regions ----------------------------------------------------------------------------
#: Regions served without an exception (S10).
DEFAULT_REGIONS: Final[frozenset[str]] = frozenset({"eu-west-1", "us-east-1"})
#: Where each default region's second copy of the backups lives (S6: "a second location").
COPY_REGIONS: Final[dict[str, str]] = {
    "eu-west-1": "eu-central-1",
    "us-east-1": "us-east-2",
}
#: Which regions a partner zone may sell (P1, S10).
ZONE_REGION_PREFIXES: Final[dict[Zone, tuple[str, ...]]] = {
    Zone.EU: ("eu-", "me-", "il-", "af-"),
    Zone.US: ("us-", "ca-", "sa-", "mx-"),
}
#: The data centre's local time zone per AWS region (S11: "heure du centre de données").
REGION_TIMEZONES: Final[dict[str, str]] = {
    "eu-west-1": "Europe/Dublin",
    "eu-west-2": "Europe/London",
    "eu-west-3": "Europe/Paris",
    "eu-central-1": "Europe/Berlin",
    "eu-central-2": "Europe/Zurich",
    "eu-north-1": "Europe/Stockholm",
    "eu-south-1": "Europe/Rome",
    "eu-south-2": "Europe/Madrid",
    "me-central-1": "Asia/Dubai",
    "me-south-1": "Asia/Bahrain",
    "il-central-1": "Asia/Jerusalem",
    "af-south-1": "Africa/Johannesburg",
    "us-east-1": "America/New_York",
    "us-east-2": "America/New_York",
    "us-west-1": "America/Los_Angeles",
    "us-west-2": "America/Los_Angeles",
    "ca-central-1": "America/Toronto",
    "ca-west-1": "America/Edmonton",
    "sa-east-1": "America/Sao_Paulo",
    "mx-central-1": "America/Mexico_City",
}


# --- S1 / S2 / S9: sizing --------------------------------------------------------------------
@dataclass(frozen=True)
class InstanceType:
    """One EC2 instance type we sell, with the figures S9's 50 % rule is computed from."""

    name: str
    family: str
    vcpu: int
    memory_gib: int
    production: bool  # may production run on it (S1), or only a test environment (S9)


INSTANCE_TYPES: Final[dict[str, InstanceType]] = {
    t.name: t
    for t in (
        InstanceType("t3.medium", "t3", 2, 4, production=False),
        InstanceType("t3.large", "t3", 2, 8, production=False),
        InstanceType("m6i.large", "m6i", 2, 8, production=False),
        InstanceType("m6i.xlarge", "m6i", 4, 16, production=True),
        InstanceType("m6i.2xlarge", "m6i", 8, 32, production=True),
        InstanceType("m6i.4xlarge", "m6i", 16, 64, production=True),
        InstanceType("r6i.large", "r6i", 2, 16, production=False),
        InstanceType("r6i.xlarge", "r6i", 4, 32, production=True),
        InstanceType("r6i.2xlarge", "r6i", 8, 64, production=True),
        InstanceType("r6i.4xlarge", "r6i", 16, 128, production=True),
        InstanceType("c6i.large", "c6i", 2, 4, production=False),
        InstanceType("c6i.xlarge", "c6i", 4, 8, production=True),
        InstanceType("c6i.2xlarge", "c6i", 8, 16, production=True),
    )
}
#: The test environment gets at most this share of production's resources (S9).
TEST_ENV_MAX_RATIO: Final = 0.5
#: Smallest data volume for any environment (our choice: room for the OS image's database).
MIN_DATA_VOLUME_GIB: Final = 20
#: Largest data volume a customer file may ask for (our choice: EBS gp3 limit is 16 TiB).
MAX_DATA_VOLUME_GIB: Final = 16384
#: The root volume of every instance (S1).
ROOT_VOLUME_GIB: Final = 30
#: S2: disk use (percent) at which the data volume is grown online.
DISK_GROW_THRESHOLD_PERCENT: Final = 80
#: S2: each online growth adds this share of the current size (EBS allows one change per 6 h).
DISK_GROW_STEP_RATIO: Final = 0.25
#: S2: average CPU (percent) that, sustained, opens a resize request for the next window.
SUSTAINED_CPU_PERCENT: Final = 75
#: S2: how long the load must be sustained.
SUSTAINED_LOAD_PERIOD: Final = timedelta(hours=6)


# --- S5: monitoring thresholds (alarms go to operations) --------------------------------------
CPU_ALARM_PERCENT: Final = 90
MEMORY_ALARM_PERCENT: Final = 90
DISK_ALARM_PERCENT: Final = 90
DB_CONNECTIONS_ALARM: Final = 180
#: Alarm when the newest archived WAL segment is older than this (S5 feeding S7).
WAL_ARCHIVE_AGE_ALARM: Final = timedelta(minutes=5)
TARGET_RESPONSE_TIME_ALARM_SECONDS: Final = 2.0
HTTP_5XX_ALARM_COUNT: Final = 10


# --- S6 / S7 / S8: backups and recovery -------------------------------------------------------
#: Nightly backups are kept at least this long, one a day (S6).
BACKUP_RETENTION_DAYS: Final = 30
#: Recovery time objective from declaration (S8).
RTO: Final = timedelta(hours=12)
#: Recovery point objective from the event (S8).
RPO: Final = timedelta(hours=1)
#: Our recovery-point target for an instance loss: far inside S8's hour. What the backup
#: benchmark measures (the age of the newest archived WAL segment under load).
RPO_TARGET: Final = timedelta(seconds=60)
#: WAL is switched at least this often (S7), and a customer file may only lower it: it leaves
#: 15 s for archive-push to reach both regions within the RPO target.
ARCHIVE_TIMEOUT: Final = timedelta(seconds=45)
#: The gap check warns when the newest archived segment is older than this (S7).
ARCHIVE_LATE_AFTER: Final = timedelta(minutes=5)
#: Nightly backup start in the data centre's local time (S6: low-traffic hours).
BACKUP_LOCAL_TIME: Final = time(1, 30)
#: Full backup on this ISO weekday (7 = Sunday); differential the other nights (S6: every day
#: still has its own restorable backup set).
FULL_BACKUP_ISO_WEEKDAY: Final = 7
#: A drill or risky maintenance step wants a good backup at most this old (S6).
RECENT_BACKUP_MAX_AGE: Final = timedelta(hours=26)
#: The restore plan is tested at least this often (S8: "testé tous les ans").
DR_DRILL_MAX_INTERVAL: Final = timedelta(days=365)
#: Our goal: every customer drilled monthly, in rotation.
DR_DRILL_ROTATION: Final = timedelta(days=30)


# --- S11-S14: maintenance ---------------------------------------------------------------------
#: The standard window: which Monday of the month (S11: "une fois par mois un lundi").
MAINTENANCE_MONDAY_OF_MONTH: Final = 3
#: Window start in the data centre's local time (S11: "vers 22 h 00").
MAINTENANCE_START_LOCAL: Final = time(22, 0)
#: Window length (S11: "généralement moins d'une heure").
MAINTENANCE_WINDOW: Final = timedelta(hours=1)
#: A change to the standard calendar is announced this far ahead (S11: "à l'avance"; our value).
CALENDAR_CHANGE_NOTICE: Final = timedelta(days=14)
#: Emergency maintenance may only be for these reasons (S12).
EMERGENCY_REASONS: Final[frozenset[str]] = frozenset(
    {"security", "performance", "availability", "stability"}
)
#: Emergency work that interrupts service is announced this far ahead (S12).
EMERGENCY_NOTICE: Final = timedelta(hours=24)
#: Major changes per calendar year (S13).
MAJOR_CHANGES_PER_YEAR: Final = 2
#: Major change notice (S13).
MAJOR_CHANGE_NOTICE: Final = timedelta(days=60)
#: Major change downtime (S13).
MAJOR_CHANGE_MAX_DOWNTIME: Final = timedelta(hours=24)
#: Migration outside the region's own data centres is announced this far ahead (S14).
MIGRATION_NOTICE: Final = timedelta(days=30)


# --- S15 / S19: product versions --------------------------------------------------------------
#: The customer must run one of this many latest "Confirmed Stable" releases, or newer (S15).
SUPPORTED_CONFIRMED_STABLE: Final = 4
#: Minimum version to move in from on-premises (S19).
MOVE_IN_MINIMUM_VERSION: Final[dict[Edition, str]] = {
    Edition.COMMERCE: "RR15Q2",
    Edition.BUSINESS: "PR15Q2",
}


# --- S17: licensing ---------------------------------------------------------------------------
@dataclass(frozen=True)
class LicenceMinimum:
    concurrent_users: int
    pos_terminals: int


LICENCE_MINIMUMS: Final[dict[Edition, LicenceMinimum]] = {
    Edition.COMMERCE: LicenceMinimum(concurrent_users=10, pos_terminals=20),
    Edition.BUSINESS: LicenceMinimum(concurrent_users=20, pos_terminals=0),
}
#: One-year minimum term, billed in advance (S17).
MIN_TERM_MONTHS: Final = 12


# --- S18: cancellation and retention ----------------------------------------------------------
#: Written notice before termination (S18).
CANCELLATION_NOTICE: Final = timedelta(days=30)
#: Production data stays available this long after termination, then may be destroyed (S18).
RETENTION_AFTER_TERMINATION: Final = timedelta(days=60)


# --- P5: support tokens -----------------------------------------------------------------------
ONE_TIME_TOKEN_TTL: Final = timedelta(days=1)
#: P5: support logs in with an OpenSSH certificate that expires by itself, at most this long.
SUPPORT_MAX_VALIDITY: Final = timedelta(hours=24)
#: The user support engineers log in as (no sudo: the product's journal and restart only).
SUPPORT_USER: Final = "erpcloud-support"


def support_principal(customer_id: str) -> str:
    """The one principal a customer's machines accept support certificates for (P5)."""
    return f"support-{customer_id}"


# --- S11-S14: the maintenance runner (issue 6; our operating choices, not customer promises) ---
#: Production hosts per wave after the test-environment canaries (S9 first, then S11's window).
MAINTENANCE_WAVE_SIZE: Final = 10
#: Hosts worked on at once within a wave: 200 hosts fit one S11 window (bench/maintenance_fleet.py).
MAINTENANCE_CONCURRENCY: Final = 5
#: Failed production hosts tolerated before the runner starts no new host (S11: stay in the window).
MAINTENANCE_MAX_ERRORS: Final = 0
#: Longest a single step may run on one host before it counts as failed (S11: under one hour).
MAINTENANCE_STEP_TIMEOUT: Final = timedelta(minutes=15)


# --- S1-S10: the Pulumi stacks and the product image (issue 4; our operating choices) ---------
#: S5: alarms look at this period and fire after this many periods in a row (our choice).
ALARM_PERIOD: Final = timedelta(minutes=5)
ALARM_EVALUATION_PERIODS: Final = 3
#: S5/S7: the WAL gap check (``erpcloud backup verify --publish``) reports per customer this
#: often; its alarms look at periods this long, and two periods without a report alarm too.
WAL_GAP_CHECK_INTERVAL: Final = timedelta(minutes=15)
#: S5: the instance's logs (PostgreSQL, pgBackRest) stay this long in CloudWatch Logs (our choice).
LOG_RETENTION_DAYS: Final = 90
#: S5: the load balancers' access logs (who called the endpoint) stay as long as those logs.
ACCESS_LOG_RETENTION_DAYS: Final = LOG_RETENTION_DAYS
#: S6: a backup file pgBackRest expired (a noncurrent S3 version) stays recoverable this long,
#: a safety net beyond the 30-day retention, never inside it (our choice).
BACKUP_NONCURRENT_VERSION_DAYS: Final = BACKUP_RETENTION_DAYS + 14
#: S6: unfinished multipart uploads of an interrupted backup are removed after this many days.
BACKUP_INCOMPLETE_UPLOAD_DAYS: Final = 7
#: S1/S18: a scheduled KMS key deletion can be cancelled for this long (the AWS maximum).
KMS_DELETION_WINDOW_DAYS: Final = 30
#: S1/S11: the product image is rebuilt at 03:00 UTC on the Monday a week before the standard
#: window's Monday (S11), so the window rolls out an image that is a week old and tested.
IMAGE_BUILD_SCHEDULE: Final = f"cron(0 3 ? * MON#{MAINTENANCE_MONDAY_OF_MONTH - 1} *)"


# --- S6 / S7: backups and the WAL gap check (issue 5, backups/) -------------------------------
#: S7: the copy region may trail the primary by this long before the gap check warns. Both
#: repositories get each segment from the same archive-push, seconds apart; our value.
ARCHIVE_COPY_LAG_GRACE: Final = timedelta(minutes=2)


# --- S8: restore drills (issue 7, dr/; our operating choices within S8's RTO and RPO) ---------
#: S8: every drill report goes to this platform bucket (not a customer's): JSON and Markdown
#: under ``drills/<drill id>/``. On AWS it is platform infrastructure, versioned, outside any
#: customer stack; the local target creates it in the emulator.
DR_REPORTS_BUCKET: Final = "erpcloud-platform-dr-reports"
DR_REPORTS_REGION: Final = "eu-central-1"
#: S8: a drill host needs this much free space per byte of the backup's database size (room for
#: the WAL replayed on top and the end-of-recovery checkpoint); below it the drill stops first.
DR_FREE_SPACE_RATIO: Final = 1.5
#: S8: production writers wait at most this long behind the drill's snapshot lock (the lock is
#: held for milliseconds; if it cannot be had this fast, the drill fails, production goes on).
DR_SNAPSHOT_LOCK_TIMEOUT: Final = timedelta(seconds=5)


# --- Documents at the edge (customer, change, calendar and inventory files) -------------------
#: A document larger than this is refused before it is parsed (a customer file is ~2 KB).
MAX_DOCUMENT_BYTES: Final = 1024 * 1024
#: Free text (a company name, a reason) is one line of this many characters at most (S20).
MAX_FREE_TEXT: Final = 200

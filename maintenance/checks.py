"""Pre-checks and post-checks of one host: the scripts that gather facts, and their verdicts.

Before the steps: the host answers and presents its pinned key (the connection proves both),
``sudo -n`` works, the host root exists, disk use is under the alarm threshold (S5), PostgreSQL
is up where the host has one, and a recent good backup exists where the host has backups (S6;
a test environment has none, S9) — or, before a risky step, one is taken. After the steps: the
host still answers, PostgreSQL is up, and the HTTPS endpoint answers where there is one (S3).
"""

from __future__ import annotations

import base64
import json
import shlex
import ssl
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from erpcloud import policy
from erpcloud.aws import emulator_pgbackrest_env
from erpcloud.inventory import Database, InventoryHost
from erpcloud.model import Environment
from maintenance.records import CheckRecord, CheckStatus
from maintenance.steps import Step

q = shlex.quote


def _pg_ready(db: Database) -> str:
    host = f"-h {q(db.socket_dir)} " if db.socket_dir else ""
    return f"if pg_isready -q {host}-p {db.port}; then echo pg=ok; else echo pg=down; fi"


def _pgbackrest(db: Database, command: str) -> str:
    assert db.stanza is not None
    env = emulator_pgbackrest_env() if db.s3_emulator_keys else {}
    prefix = f"env {' '.join(f'{k}={q(v)}' for k, v in sorted(env.items()))} " if env else ""
    # No parentheses: inside "$(...)" they would read as arithmetic "$((".
    return (
        f"cd / && runuser -u postgres -- {prefix}pgbackrest "
        f"--config={q(db.pgbackrest_config)} --stanza={q(db.stanza)} {command}"
    )


def precheck_script(host: InventoryHost) -> str:
    """One root chain printing ``key=value`` facts; it fails only if sudo or bash does."""
    lines = [
        f"ROOT={q(host.host_root)}",
        'if [ -d "$ROOT" ]; then echo root=ok; else echo root=missing; fi',
        'echo "disk_used=$(df -P "$ROOT" 2>/dev/null | awk \'NR==2 {sub("%","",$5); print $5}\')"',
    ]
    if host.db is not None:
        lines.append(_pg_ready(host.db))
        if host.has_backups:
            info = _pgbackrest(host.db, "--output=json info")
            lines.append(
                f"if info=$({info} 2>&1); then "
                'echo "backup_info=$(printf %s "$info" | base64 -w0)"; else '
                'echo "backup_error=$(printf %s "$info" | base64 -w0)"; fi'
            )
    return "; ".join(lines)


def backup_script(host: InventoryHost) -> str:
    """Take a backup now (S6: before a risky step). pgBackRest makes it full if none exists."""
    assert host.db is not None
    return _pgbackrest(host.db, "--type=incr backup")


def postcheck_script(host: InventoryHost) -> str:
    lines = ["echo alive=ok"]
    if host.db is not None:
        lines.append(_pg_ready(host.db))
    return "; ".join(lines)


def parse_facts(stdout: str) -> dict[str, str]:
    facts = {}
    for line in stdout.splitlines():
        key, sep, value = line.partition("=")
        if sep and key.isidentifier():
            facts[key] = value.strip()
    return facts


def _decode(value: str) -> str:
    try:
        return base64.b64decode(value).decode(errors="replace")
    except ValueError:
        return value


def latest_good_backup(info_text: str, stanza: str) -> tuple[datetime | None, str]:
    """The stop time of the newest backup without errors in ``pgbackrest info`` JSON."""
    try:
        stanzas = json.loads(info_text)
    except ValueError:
        return None, f"pgbackrest info printed no JSON: {info_text.strip()[:200]}"
    entry = next((s for s in stanzas if s.get("name") == stanza), None)
    if entry is None:
        return None, f"stanza {stanza!r} is not in the repository"
    good = [b for b in entry.get("backup", []) if not b.get("error", False)]
    if not good:
        status = entry.get("status", {}).get("message", "")
        return None, f"no good backup in stanza {stanza!r} ({status})"
    newest = max(good, key=lambda b: b["timestamp"]["stop"])
    stop = datetime.fromtimestamp(newest["timestamp"]["stop"], UTC)
    return stop, f"{newest['label']} ({newest['type']}) finished {stop:%Y-%m-%d %H:%M} UTC"


@dataclass
class PrecheckVerdict:
    checks: list[CheckRecord] = field(default_factory=list)
    #: No recent good backup, and a risky step follows: take one before the steps.
    backup_needed: bool = False

    @property
    def failed(self) -> list[CheckRecord]:
        return [c for c in self.checks if c.status is CheckStatus.FAILED]


def evaluate_prechecks(
    host: InventoryHost,
    facts: dict[str, str],
    steps: list[Step],
    now: datetime,
) -> PrecheckVerdict:
    """The verdict of each pre-check from the facts the host reported."""
    verdict = PrecheckVerdict()
    add = verdict.checks.append
    if facts.get("root") == "ok":
        add(CheckRecord(name="host_root", status=CheckStatus.OK, detail=host.host_root))
    else:
        add(
            CheckRecord(
                name="host_root",
                status=CheckStatus.FAILED,
                detail=f"{host.host_root} does not exist on the host",
            )
        )
    used = facts.get("disk_used", "")
    if used.isdigit() and int(used) < policy.DISK_ALARM_PERCENT:
        add(CheckRecord(name="disk", status=CheckStatus.OK, detail=f"{used}% used"))
    else:
        shown = f"{used}% used" if used else "disk use unknown"
        add(
            CheckRecord(
                name="disk",
                status=CheckStatus.FAILED,
                detail=f"{shown}; work starts only under the {policy.DISK_ALARM_PERCENT}% "
                "alarm threshold (S5)",
            )
        )
    db_steps = [s for s in steps if s.op.needs_db]
    if host.db is None:
        add(CheckRecord(name="postgresql", status=CheckStatus.NOT_APPLICABLE, detail="no database"))
        if db_steps:
            add(
                CheckRecord(
                    name="steps",
                    status=CheckStatus.FAILED,
                    detail=f"step {db_steps[0].index} ({db_steps[0].name}) needs the host's "
                    "database, and the inventory lists none for this host",
                )
            )
    elif facts.get("pg") == "ok":
        add(CheckRecord(name="postgresql", status=CheckStatus.OK, detail=f"port {host.db.port}"))
    else:
        add(
            CheckRecord(
                name="postgresql",
                status=CheckStatus.FAILED,
                detail=f"PostgreSQL does not accept connections on port {host.db.port}",
            )
        )
    add(_backup_check(host, facts, steps, now, verdict))
    return verdict


def _backup_check(
    host: InventoryHost,
    facts: dict[str, str],
    steps: list[Step],
    now: datetime,
    verdict: PrecheckVerdict,
) -> CheckRecord:
    if host.environment is Environment.TEST:
        return CheckRecord(
            name="backup",
            status=CheckStatus.NOT_APPLICABLE,
            detail="test environment: no backups (S9)",
        )
    if not host.has_backups or host.db is None or host.db.stanza is None:
        return CheckRecord(
            name="backup",
            status=CheckStatus.NOT_APPLICABLE,
            detail="no pgBackRest stanza for this host in the inventory",
        )
    risky = [s for s in steps if s.op.risky]
    if "backup_info" in facts:
        stop, detail = latest_good_backup(_decode(facts["backup_info"]), host.db.stanza)
    else:
        stop, detail = None, f"pgbackrest info failed: {_decode(facts.get('backup_error', ''))}"
    limit = policy.RECENT_BACKUP_MAX_AGE
    if stop is not None and now - stop <= limit:
        return CheckRecord(
            name="backup", status=CheckStatus.OK, detail=f"{detail}; {_age(now - stop)} old"
        )
    if stop is not None:
        detail = f"{detail}; {_age(now - stop)} old, more than {_age(limit)} (S6)"
    if risky:
        verdict.backup_needed = True
        return CheckRecord(
            name="backup",
            status=CheckStatus.WARNING,
            detail=f"{detail}; step {risky[0].index} ({risky[0].name}) is risky: taking one",
        )
    return CheckRecord(name="backup", status=CheckStatus.WARNING, detail=detail)


def _age(delta: timedelta) -> str:
    hours = delta.total_seconds() / 3600
    return f"{hours:.1f} h" if hours < 48 else f"{hours / 24:.1f} days"


def evaluate_postchecks(host: InventoryHost, facts: dict[str, str]) -> list[CheckRecord]:
    checks = []
    if facts.get("alive") == "ok":
        checks.append(CheckRecord(name="host", status=CheckStatus.OK, detail="answers"))
    else:
        checks.append(CheckRecord(name="host", status=CheckStatus.FAILED, detail="no answer"))
    if host.db is not None:
        ok = facts.get("pg") == "ok"
        checks.append(
            CheckRecord(
                name="postgresql",
                status=CheckStatus.OK if ok else CheckStatus.FAILED,
                detail=f"port {host.db.port}" if ok else "PostgreSQL is not accepting connections",
            )
        )
    return checks


def https_check(url: str, ca_file: Path | None, timeout: float = 10.0) -> CheckRecord:
    """S3: the endpoint answers over HTTPS with a certificate the runner trusts."""
    context = ssl.create_default_context(cafile=str(ca_file) if ca_file else None)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    request = urllib.request.Request(url, method="GET")  # noqa: S310 - https only (inventory rule)
    try:
        with urllib.request.urlopen(request, timeout=timeout, context=context) as response:  # noqa: S310
            status = int(response.status)
    except urllib.error.HTTPError as exc:
        status = exc.code
    except (urllib.error.URLError, OSError, ssl.SSLError) as exc:
        reason = getattr(exc, "reason", exc)
        return CheckRecord(name="https", status=CheckStatus.FAILED, detail=f"{url}: {reason}")
    ok = 200 <= status < 400
    return CheckRecord(
        name="https",
        status=CheckStatus.OK if ok else CheckStatus.FAILED,
        detail=f"{url} answered {status}",
    )

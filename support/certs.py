"""Support certificates (P5, issue 13 item 7): an OpenSSH user certificate signed by the support
CA for the one principal a customer's machines accept (``support-<id>``), as the support user,
valid at most :data:`erpcloud.policy.SUPPORT_MAX_VALIDITY`. It expires by itself; ``revoke``
refuses it earlier by adding the engineer's key to the machines' ``RevokedKeys`` file.
"""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Final

from cryptography.hazmat.primitives.serialization import (
    Encoding,
    PublicFormat,
    SSHCertificate,
    load_ssh_public_identity,
)

from erpcloud import policy
from erpcloud.sshkeys import parse_public_key

#: An engineer's name goes into the certificate's key id and the audit log.
ENGINEER_NAME: Final = re.compile(r"^[a-z][a-z0-9._-]{1,31}$")
REVOKED_KEYS_FILE: Final = "/etc/ssh/erpcloud-revoked-keys"


class SupportRefused(ValueError):
    """A grant or revocation breaks a rule; the message names it."""


@dataclass(frozen=True)
class Grant:
    customer: str
    engineer: str
    principal: str
    key_id: str
    serial: int
    valid_from: datetime
    valid_until: datetime
    certificate: Path
    reason: str


def check_request(engineer: str, valid_for: timedelta) -> None:
    if not ENGINEER_NAME.match(engineer):
        raise SupportRefused(
            f"engineer {engineer!r}: 2-32 characters of a-z, 0-9, '.', '_' and '-', a letter first"
        )
    if not timedelta(0) < valid_for <= policy.SUPPORT_MAX_VALIDITY:
        hours = int(policy.SUPPORT_MAX_VALIDITY.total_seconds() // 3600)
        raise SupportRefused(f"a support certificate is valid for at most {hours} h (P5)")


def grant(
    customer_id: str,
    engineer: str,
    public_key_file: Path,
    ca_key: Path,
    reason: str,
    valid_for: timedelta,
    out: Path | None = None,
) -> Grant:
    """Sign the engineer's public key; the certificate lands beside it (``-cert.pub``)."""
    check_request(engineer, valid_for)
    try:
        key = parse_public_key(public_key_file.read_text())
    except (OSError, UnicodeDecodeError) as exc:
        raise SupportRefused(f"{public_key_file}: cannot be read ({exc})") from None
    except ValueError as exc:
        raise SupportRefused(f"{public_key_file}: {exc}") from None
    if not ca_key.is_file():
        raise SupportRefused(f"{ca_key}: no support CA key there")
    now = datetime.now(UTC).replace(microsecond=0)
    until = now + valid_for
    serial = time.time_ns() // 1000
    key_id = f"support:{customer_id}:{engineer}:{now:%Y%m%dT%H%M%SZ}"
    principal = policy.support_principal(customer_id)
    work = (out or public_key_file.with_name(public_key_file.stem + "-cert.pub")).resolve()
    # A minute back: clocks of the machines may lag the signer's a little.
    validity = f"{(now - timedelta(minutes=1)):%Y%m%d%H%M%S}Z:{until:%Y%m%d%H%M%S}Z"
    with tempfile.TemporaryDirectory(prefix="erpcloud-support-") as folder:
        request = Path(folder) / "engineer.pub"
        request.write_text(key.openssh() + "\n")
        # No forwarding, no ~/.ssh/rc: a terminal only.
        signed = subprocess.run(
            ["ssh-keygen", "-q", "-s", str(ca_key), "-I", key_id, "-n", principal,
             "-V", validity, "-z", str(serial), "-O", "clear", "-O", "permit-pty",
             str(request)],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        produced = Path(folder) / "engineer-cert.pub"
        if signed.returncode != 0 or not produced.is_file():
            raise SupportRefused(f"ssh-keygen could not sign: {signed.stderr.strip()}")
        work.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(produced, work)
    return Grant(customer_id, engineer, principal, key_id, serial, now, until, work, reason)


def revoked_key_line(certificate_or_key: Path) -> str:
    """The plain public key of a certificate (or a key file): what ``RevokedKeys`` lists."""
    try:
        identity = load_ssh_public_identity(certificate_or_key.read_bytes().strip())
    except (OSError, ValueError) as exc:
        raise SupportRefused(
            f"{certificate_or_key}: not a certificate or public key ({exc})"
        ) from None
    key = identity.public_key() if isinstance(identity, SSHCertificate) else identity
    return key.public_bytes(Encoding.OpenSSH, PublicFormat.OpenSSH).decode()


def revoke_script(key_line: str) -> str:
    """Root's shell step on a machine: add the key to the revoked list once (sshd reads the
    file at each login: no reload)."""
    quoted, target = shlex.quote(key_line), shlex.quote(REVOKED_KEYS_FILE)
    return f"grep -qxF -- {quoted} {target} || printf '%s\\n' {quoted} >> {target}"

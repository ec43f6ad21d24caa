"""SSH public keys, parsed with a real key parser (S4: public-key authentication only)."""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    PublicFormat,
    load_ssh_public_key,
)

from erpcloud import policy
from erpcloud.documents import first_unprintable


@dataclass(frozen=True)
class SshPublicKey:
    """One authorized key: type, base64 body, optional comment, as OpenSSH writes it."""

    key_type: str
    body: str
    comment: str
    bits: int

    @property
    def fingerprint(self) -> str:
        """``SHA256:...`` as ``ssh-keygen -l`` prints it."""
        digest = hashlib.sha256(base64.b64decode(self.body)).digest()
        return "SHA256:" + base64.b64encode(digest).decode().rstrip("=")

    def openssh(self) -> str:
        """The line for ``authorized_keys``."""
        return " ".join(part for part in (self.key_type, self.body, self.comment) if part)


def parse_public_key(line: str) -> SshPublicKey:
    """Parse one OpenSSH public key line; raise ``ValueError`` naming the rule it breaks.

    What comes back is canonical: the body re-encoded from the parsed key, and a comment of
    printable characters, so the ``authorized_keys`` line written from it is exactly one key with no
    options (issue 13: a newline in a comment must not add a second key).
    """
    stripped = line.strip()  # surrounding whitespace, a file's last newline: harmless
    bad = first_unprintable(stripped)
    if bad is not None:
        raise ValueError(
            f"contains U+{ord(bad):04X}; a key is one line '<type> <base64> [comment]' of "
            "printable characters (S4)"
        )
    parts = stripped.split(None, 2)
    if len(parts) < 2:
        raise ValueError("is not an OpenSSH public key line ('<type> <base64> [comment]')")
    key_type, body = parts[0], parts[1]
    comment = parts[2].strip() if len(parts) == 3 else ""
    if key_type not in policy.ALLOWED_SSH_KEY_TYPES:
        allowed = ", ".join(sorted(policy.ALLOWED_SSH_KEY_TYPES))
        if any(t in stripped.split() for t in policy.ALLOWED_SSH_KEY_TYPES):
            raise ValueError(
                "starts with options (such as command= or from=); a key is accepted without "
                "options only (S4)"
            )
        raise ValueError(f"key type {key_type!r} is not accepted (S4: one of {allowed})")
    if len(comment) > policy.MAX_SSH_KEY_COMMENT:
        raise ValueError(
            f"comment is {len(comment)} characters; at most {policy.MAX_SSH_KEY_COMMENT} (S4)"
        )
    try:
        key = load_ssh_public_key(f"{key_type} {body}".encode())
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise ValueError(f"is not a valid {key_type} public key ({exc})") from None
    if isinstance(key, rsa.RSAPublicKey):
        if key.key_size < policy.MIN_RSA_BITS:
            raise ValueError(
                f"RSA key has {key.key_size} bits; S4 requires at least {policy.MIN_RSA_BITS}"
            )
        bits = key.key_size
    elif isinstance(key, ed25519.Ed25519PublicKey):
        bits = 256
    elif isinstance(key, ec.EllipticCurvePublicKey):
        bits = key.curve.key_size
    else:  # pragma: no cover - the type prefix check above already limits this
        raise ValueError(f"key type {key_type!r} is not accepted (S4)")
    canonical = key.public_bytes(Encoding.OpenSSH, PublicFormat.OpenSSH).decode().split()
    if canonical[0] != key_type:
        raise ValueError(f"the key inside is {canonical[0]}, not {key_type} (S4)")
    return SshPublicKey(key_type=key_type, body=canonical[1], comment=comment, bits=bits)

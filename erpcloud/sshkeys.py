"""SSH public keys, parsed with a real key parser (S4: public-key authentication only)."""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass

from cryptography.hazmat.primitives.asymmetric import ed25519, rsa
from cryptography.hazmat.primitives.serialization import load_ssh_public_key

from erpcloud import policy


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
    """Parse one OpenSSH public key line; raise ``ValueError`` naming the rule it breaks."""
    parts = line.strip().split(None, 2)
    if len(parts) < 2:
        raise ValueError("is not an OpenSSH public key line ('<type> <base64> [comment]')")
    key_type, body = parts[0], parts[1]
    comment = parts[2] if len(parts) == 3 else ""
    if key_type not in policy.ALLOWED_SSH_KEY_TYPES:
        allowed = ", ".join(sorted(policy.ALLOWED_SSH_KEY_TYPES))
        raise ValueError(f"key type {key_type!r} is not accepted (S4: one of {allowed})")
    try:
        key = load_ssh_public_key(f"{key_type} {body}".encode())
    except (ValueError, TypeError) as exc:
        raise ValueError(f"is not a valid {key_type} public key ({exc})") from None
    if isinstance(key, rsa.RSAPublicKey):
        if key.key_size < policy.MIN_RSA_BITS:
            raise ValueError(
                f"RSA key has {key.key_size} bits; S4 requires at least {policy.MIN_RSA_BITS}"
            )
        bits = key.key_size
    elif isinstance(key, ed25519.Ed25519PublicKey):
        bits = 256
    else:  # pragma: no cover - the type prefix check above already limits this
        raise ValueError(f"key type {key_type!r} is not accepted (S4)")
    return SshPublicKey(key_type=key_type, body=body, comment=comment, bits=bits)

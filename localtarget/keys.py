"""Key pairs the local site makes for itself: the operations key of a target or a fleet, the
local support CA (P5). Private halves stay in the target's state folder (0600)."""

from __future__ import annotations

import subprocess
from pathlib import Path


def generate_keypair(path: Path, comment: str) -> str:
    """An ed25519 key pair at ``path`` (private, 0600) and ``path.pub``; returns the public line.
    An existing pair there is replaced (ssh-keygen would otherwise ask)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.unlink(missing_ok=True)
    Path(f"{path}.pub").unlink(missing_ok=True)
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)],
        check=True,
        capture_output=True,
    )
    path.chmod(0o600)
    return Path(f"{path}.pub").read_text().strip()

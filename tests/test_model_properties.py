"""Property tests: the DNS-label and SSH-key rules against generated inputs."""

from __future__ import annotations

import re
import string

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from erpcloud import policy
from erpcloud.model import check_dns_label
from erpcloud.sshkeys import parse_public_key

# RFC 1123 label, written independently of the implementation: letters/digits at both ends.
LABEL_CHARS = string.ascii_lowercase + string.digits + "-"


def rfc1123_ok(label: str) -> bool:
    return (
        1 <= len(label) <= 63
        and all(c in LABEL_CHARS for c in label)
        and label[0] != "-"
        and label[-1] != "-"
    )


@given(st.text(alphabet=LABEL_CHARS + "A_.Z é", min_size=0, max_size=70))
def test_dns_label_rule_matches_rfc1123(label: str):
    expected = rfc1123_ok(label) and label[2:4] != "--" and label not in policy.RESERVED_PREFIXES
    try:
        check_dns_label(label)
        accepted = True
    except ValueError:
        accepted = False
    assert accepted == expected


@given(st.from_regex(re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?", re.ASCII), fullmatch=True))
def test_every_valid_unreserved_label_is_accepted(label: str):
    if label in policy.RESERVED_PREFIXES or label[2:4] == "--":
        return
    assert check_dns_label(label) == label


def openssh_line(key: ed25519.Ed25519PublicKey | rsa.RSAPublicKey) -> str:
    return key.public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
    ).decode()


@settings(max_examples=25, deadline=None)
@given(st.binary(min_size=32, max_size=32))
def test_any_ed25519_key_is_accepted(seed: bytes):
    key = ed25519.Ed25519PrivateKey.from_private_bytes(seed).public_key()
    parsed = parse_public_key(openssh_line(key) + " someone@example")
    assert (parsed.key_type, parsed.comment) == ("ssh-ed25519", "someone@example")
    assert parsed.fingerprint.startswith("SHA256:")


@pytest.mark.parametrize("bits", [1024, 2048, 3064, 3072, 4096])  # 3064: just below the line
def test_rsa_key_size_boundary(bits: int):
    key = rsa.generate_private_key(public_exponent=65537, key_size=bits).public_key()
    line = openssh_line(key)
    if bits >= policy.MIN_RSA_BITS:
        assert parse_public_key(line).bits == bits
    else:
        with pytest.raises(ValueError, match="at least 3072"):
            parse_public_key(line)


@settings(max_examples=60, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(min_size=1, max_size=80))
def test_garbage_key_bodies_are_refused(body: bytes):
    import base64

    line = "ssh-ed25519 " + base64.b64encode(body).decode()
    with pytest.raises(ValueError):
        parse_public_key(line)

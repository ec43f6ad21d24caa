"""Hostile input (issue 13, S4, S20): no customer file that passes ``customer check`` changes what
a rendered file means beyond its own fields, and any bytes get a clear error, never a traceback.

Generated values (control characters, newlines, quotes, ``{{ }}``, ``%``, unicode) go into the
free-text fields and key comments; each rendered file is parsed back and must have the same
structure as the sample's: the same unit settings, the same ``authorized_keys`` lines, the same
YAML keys. What systemd itself makes of such a unit is checked on a booted machine
(``tests/test_machines.py``).
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError
from typer.testing import CliRunner

from erpcloud.documents import DocumentError, read_yaml_document
from erpcloud.fleet import load_customer, load_fleet
from erpcloud.model import Customer, Environment, source_address_counts
from erpcloud.render import HostLayout, host_files, render_user_data
from frontdoor.cli import app

from .conftest import CUSTOMERS

#: Everything the issue names, and then some: control characters, line and paragraph
#: separators, quotes, template and specifier syntax, shell syntax, unicode.
PIECES = [
    *"\n\r\t\x00\x1b\x7f\x85\u2028\u2029\u200b\ufeff\"'`$%{}\\;|&<>#=[]",
    *("{{ x }}", "{% if %}", "%n", "$(id)", "ü", "名", "☃", " ", "a", "Z", "-", "."),
]
NASTY = st.lists(st.sampled_from(PIECES), min_size=2, max_size=20).map("".join)


def acme(**changes: Any) -> dict[str, Any]:
    document = yaml.safe_load((CUSTOMERS / "acme-retail.yaml").read_text())
    document.update(changes)
    return document


def unit_settings(text: str) -> list[tuple[str, str]]:
    """A unit file as systemd reads it (systemd.syntax(7)): sections and ``Key=value`` lines,
    a trailing backslash continuing the line, comments skipped."""
    settings: list[tuple[str, str]] = []
    section = ""
    pending = ""
    for raw in text.splitlines():
        line = pending + raw
        if line.endswith("\\"):
            pending = line[:-1] + " "
            continue
        pending = ""
        stripped = line.strip()
        if not stripped or stripped[0] in "#;":
            continue
        if stripped.startswith("["):
            section = stripped
            continue
        key, _, value = stripped.partition("=")
        settings.append((f"{section}{key.strip()}", value.strip()))
    return settings


def product_unit(customer: Customer) -> str:
    files = host_files(customer, Environment.PRODUCTION, HostLayout())
    return next(f.content for f in files if f.path.endswith("erp-product.service"))


def baseline() -> Customer:
    return Customer.model_validate(acme())


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(company=NASTY)
def test_a_company_name_is_refused_or_stays_one_description(company: str):
    try:
        customer = Customer.model_validate(acme(company=company))
    except ValidationError as exc:
        fields = {".".join(map(str, e["loc"])) for e in exc.errors()}
        assert fields == {"company"}
        return
    assert not re.search(r"[\x00-\x1f\x7f\x85\u2028\u2029\\]", customer.company)
    expected = [k for k, _ in unit_settings(product_unit(baseline()))]
    settings_now = unit_settings(product_unit(customer))
    assert [k for k, _ in settings_now] == expected
    description = dict(settings_now)["[Unit]Description"]
    # systemd turns %% back into %; nothing else in a Description is interpreted.
    assert description.replace("%%", "%") == (
        f"ERP {customer.edition} {customer.product_version} for {customer.company}".strip()
    )
    user_data = yaml.safe_load(render_user_data(customer))
    assert set(user_data) == set(yaml.safe_load(render_user_data(baseline())))


def openssh(key: ed25519.Ed25519PublicKey | ec.EllipticCurvePublicKey) -> str:
    return key.public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
    ).decode()


ED25519 = openssh(ed25519.Ed25519PrivateKey.generate().public_key())


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(comment=NASTY)
def test_a_key_comment_is_refused_or_stays_one_authorized_keys_line(comment: str):
    document = acme()
    document["ssh"]["users"][0]["keys"] = [f"{ED25519} {comment}"]
    try:
        customer = Customer.model_validate(document)
    except ValidationError as exc:
        assert [e["loc"] for e in exc.errors()] == [("ssh", "users", 0, "keys", 0)]
        return
    user_data = yaml.safe_load(render_user_data(customer, ops_keys=(ED25519,)))
    user = next(u for u in user_data["users"] if u["name"] == customer.ssh.users[0].name)
    (line,) = user["ssh_authorized_keys"]
    assert "\n" not in line and "\r" not in line
    key_type, body, *rest = line.split(" ", 2)
    assert f"{key_type} {body}" == ED25519  # the key itself, nothing else, nothing before it
    assert all(not re.search(r"[\x00-\x1f\x7f\x85\u2028\u2029]", part) for part in rest)


def test_an_extra_key_through_a_newline_and_options_are_refused_naming_the_key():
    document = acme()
    other = openssh(ed25519.Ed25519PrivateKey.generate().public_key())
    document["ssh"]["users"][0]["keys"] = [f"{ED25519} me@laptop\n{other} attacker"]
    with pytest.raises(ValidationError, match="U\\+000A"):
        Customer.model_validate(document)
    document["ssh"]["users"][0]["keys"] = [f'command="/bin/sh",no-pty {ED25519}']
    with pytest.raises(ValidationError, match="options"):
        Customer.model_validate(document)


def test_ecdsa_keys_are_accepted_and_written_back_canonical():
    key = openssh(ec.generate_private_key(ec.SECP384R1()).public_key())
    document = acme()
    document["ssh"]["users"][0]["keys"] = [f"  {key}   ops   laptop  "]
    customer = Customer.model_validate(document)
    assert customer.ssh.users[0].keys == [f"{key} ops   laptop"]
    assert customer.ssh.users[0].public_keys[0].bits == 384


@pytest.mark.parametrize(
    ("cidrs", "refused"),
    [
        (["0.0.0.0/1", "128.0.0.0/1"], "4294967296 IPv4 addresses"),
        (["::/1", "8000::/1"], f"{2**128} IPv6 addresses"),
        ([f"{n}.0.0.0/8" for n in (11, 12)], "33554432 IPv4 addresses"),
        (["10.0.0.0/8", "10.128.0.0/9"], None),  # overlapping: the union is one /8
        (["203.0.113.0/24", "2001:db8::/32"], None),
        (["2001:db8::/31"], "IPv6 addresses"),
    ],
)
def test_ssh_sources_are_counted_as_a_union(cidrs: list[str], refused: str | None):
    document = acme()
    document["ssh"]["allowed_cidrs"] = cidrs
    if refused is None:
        Customer.model_validate(document)
    else:
        with pytest.raises(ValidationError, match=refused):
            Customer.model_validate(document)
        document["ssh"]["allow_any_source"] = True
        assert Customer.model_validate(document).ssh.allow_any_source


def test_source_address_counts_per_family():
    assert source_address_counts(["10.0.0.0/8", "10.0.0.0/9", "::/127"]) == {4: 2**24, 6: 2}


# --- any bytes in, a clear error out ----------------------------------------------------------
def write(directory: Path, name: str, data: bytes) -> Path:
    path = directory / name
    path.write_bytes(data)
    return path


@settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.binary(max_size=400) | st.text(max_size=200).map(str.encode))
def test_any_bytes_give_a_document_error_or_a_customer(tmp_path: Path, data: bytes):
    path = write(tmp_path, "acme-retail.yaml", data)
    try:
        load_customer(path)
    except DocumentError as exc:
        assert exc.errors and all(e.file == str(path) for e in exc.errors)


SAMPLE = (CUSTOMERS / "acme-retail.yaml").read_bytes()
BAD_FILES = {
    "binary": (b"\x7fELF\x02\x01\x01\x00" + bytes(range(256)), "not UTF-8"),
    "latin-1": (SAMPLE.replace(b"Acme Retail", "Açme Retail".encode("latin-1")), "not UTF-8"),
    "escape": (SAMPLE.replace(b"Acme Retail", b"Acme\x1b[2J Retail"), "U+001B"),
    "duplicate": (SAMPLE + b"\nprefix: other\n", "'prefix' appears more than once"),
    "bomb": (b"a: &a [x, x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a]\n", "aliases"),
    "deep": (b"[" * 20000 + b"]" * 20000, "nests too deeply"),
    "huge": (b"# " + b"x" * (2 * 1024 * 1024) + b"\n", "larger than"),
}


@pytest.mark.parametrize("kind", sorted(BAD_FILES))
def test_bad_files_exit_2_naming_the_file_and_rule(tmp_path: Path, kind: str):
    data, rule = BAD_FILES[kind]
    write(tmp_path, "acme-retail.yaml", data)
    result = CliRunner().invoke(app, ["customer", "check", str(tmp_path), "--json"])
    assert result.exit_code == 2, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    report = json.dumps(json.loads(result.output))
    assert "acme-retail.yaml" in report and rule in report


def test_a_fifo_or_a_folder_is_not_read(tmp_path: Path):
    fifo = tmp_path / "fifo.yaml"
    os.mkfifo(fifo)
    with pytest.raises(DocumentError, match="not a regular file"):
        read_yaml_document(fifo)  # a FIFO would block a plain open() for ever
    (tmp_path / "dir.yaml").mkdir()
    with pytest.raises(DocumentError, match="not a regular file"):
        read_yaml_document(tmp_path / "dir.yaml")


def fleet_dir(tmp_path: Path) -> Path:
    for path in CUSTOMERS.glob("*.yaml"):
        write(tmp_path, path.name, path.read_bytes())
    write(tmp_path, "zz-broken.yaml", b"\xff\xfe binary")
    return tmp_path


def test_one_bad_file_stops_no_other_customer(tmp_path: Path):
    directory = fleet_dir(tmp_path)
    fleet = load_fleet(directory)
    assert len(fleet.errors) == 1 and "zz-broken.yaml" in str(fleet.errors[0])
    assert "acme-retail" in fleet.customers
    # A command about one customer is not stopped by another customer's file...
    runner = CliRunner()
    show = runner.invoke(app, ["customer", "show", "acme-retail", "--customers", str(directory)])
    assert show.exit_code == 0, show.output
    # ...rendering the fleet is all or nothing...
    render = runner.invoke(
        app, ["render", "--customers", str(directory), "--out", str(tmp_path / "out"), "--json"]
    )
    assert render.exit_code == 2 and not (tmp_path / "out").exists()
    # ...and the daily run goes on for everyone else, then says which file was left out.
    due = runner.invoke(
        app,
        ["customer", "due", "--customers", str(directory), "--records", str(tmp_path / "rec"),
         "--today", "2026-12-01", "--json"],
    )  # fmt: skip
    assert due.exit_code == 2, due.output
    report = json.loads(due.output)
    assert {c["customer"] for c in report["customers"]} >= {"acme-retail"}
    assert any("zz-broken.yaml" in e for e in report["invalid_customer_files"])


@pytest.mark.parametrize("bad_id", ["../../etc", "acme/../x", "ACME", "a", "-x-", "acme\nx"])
def test_ids_are_checked_before_anything_is_read(bad_id: str, tmp_path: Path):
    for command in ("down", "status"):
        result = CliRunner().invoke(app, ["local", command, "--json", "--", bad_id])
        assert result.exit_code == 2, result.output
        assert "customer id" in json.loads(result.output)["error"]


def test_a_customer_file_asking_for_root_is_refused_naming_s4_and_s16():
    document = acme()
    document["ssh"]["users"][1]["sudo"] = True
    with pytest.raises(ValidationError) as refused:
        Customer.model_validate(document)
    (error,) = refused.value.errors()
    assert error["loc"] == ("ssh",)
    assert "S4" in error["msg"] and "S16" in error["msg"] and "iberia-ops" in error["msg"]


def test_customer_users_may_restart_the_product_and_nothing_else_as_root():
    customer = baseline()
    files = {f.path: f for f in host_files(customer, Environment.PRODUCTION, HostLayout())}
    sudoers = files["/etc/sudoers.d/erpcloud-customers"]
    assert sudoers.mode == "0440"
    rules = [line for line in sudoers.content.splitlines() if line and not line.startswith("#")]
    assert rules == [
        "Cmnd_Alias ERP_PRODUCT_RESTART = /usr/bin/systemctl restart erp-product.service",
        "marta, iberia-ops ALL=(root) NOPASSWD: ERP_PRODUCT_RESTART",
    ]
    users = yaml.safe_load(render_user_data(customer))["users"]
    customers_users = [u for u in users if u["name"] in {"marta", "iberia-ops"}]
    assert all("sudo" not in u and u["groups"] == ["systemd-journal"] for u in customers_users)

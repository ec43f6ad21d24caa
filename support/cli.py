"""`erpcloud support grant|revoke` (P5): support access that expires by itself, audited."""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Annotated

import paramiko
import typer

from erpcloud.audit import audit
from erpcloud.cli_common import CustomersDir, JsonFlag, load_valid_customer
from erpcloud.documents import DocumentError
from erpcloud.fleet import CUSTOMERS_DIR
from erpcloud.inventory import load_inventory, write_known_hosts
from erpcloud.model import check_free_text
from erpcloud.output import EXIT_BAD_INPUT, EXIT_FAILED, console, emit, fail
from erpcloud.sites import LocalCustomer, local_customer
from erpcloud.ssh import HostKeyError, connect, run_as_root
from support.certs import SupportRefused, grant, revoke_script, revoked_key_line

support_app = typer.Typer(
    help="P5: support access by OpenSSH certificate, at most 24 h, audited.",
    no_args_is_help=True,
)
CustomerArg = Annotated[str, typer.Argument(help="Customer id (the file's stem).")]


def _local_or(
    given: Path | None,
    customer_id: str,
    option: str,
    local_path: Callable[[LocalCustomer], Path],
    as_json: bool,
) -> Path:
    """What the option gives, else the customer's local machines' own (a CA, an inventory)."""
    if given is not None:
        return given
    found = local_customer(customer_id)
    if found is None:
        fail(f"{customer_id}: no local machines; give {option}", as_json, EXIT_BAD_INPUT)
    return local_path(found[1])


@support_app.command("grant")
def grant_command(
    customer_id: CustomerArg,
    engineer: Annotated[str, typer.Option("--engineer", help="Who gets access (a-z name).")],
    hours: Annotated[int, typer.Option("--hours", min=1, max=24, help="Validity, at most 24.")],
    reason: Annotated[str, typer.Option("--reason", help="Why (the ticket); audited.")],
    key_file: Annotated[
        Path, typer.Option("--key-file", help="The engineer's OpenSSH public key.")
    ],
    ca_key: Annotated[
        Path | None,
        typer.Option(
            "--ca-key",
            envvar="ERPCLOUD_SUPPORT_CA",
            help="The support CA's private key (default: the local machines' own).",
        ),
    ] = None,
    out: Annotated[
        Path | None, typer.Option("--out", help="Where the certificate goes (KEY-cert.pub).")
    ] = None,
    directory: CustomersDir = CUSTOMERS_DIR,
    as_json: JsonFlag = False,
) -> None:
    """Sign a certificate for `erpcloud-support` on this customer's machines only, valid for
    --hours; it expires by itself (P5)."""
    customer = load_valid_customer(customer_id, directory, as_json)
    try:
        check_free_text(reason)
    except ValueError as exc:
        fail(f"--reason {exc}", as_json, EXIT_BAD_INPUT)
    ca = _local_or(ca_key, customer.id, "--ca-key", lambda m: Path(m.support_ca_key), as_json)
    try:
        granted = grant(customer.id, engineer, key_file, ca, reason, timedelta(hours=hours), out)
    except SupportRefused as exc:
        fail(str(exc), as_json, EXIT_BAD_INPUT)
    audit({"action": "support.grant", **granted.__dict__})

    def human() -> None:
        console.print(
            f"[green]granted[/] {granted.engineer} on {customer.id} until "
            f"{granted.valid_until:%Y-%m-%d %H:%M} UTC: {granted.certificate}"
        )
        console.print(
            f"  ssh -i {key_file.with_suffix('')} -o CertificateFile={granted.certificate} "
            "erpcloud-support@<host>",
            markup=False,
        )

    emit({"ok": True, **granted.__dict__}, as_json, human)


@support_app.command("revoke")
def revoke_command(
    customer_id: CustomerArg,
    certificate: Annotated[
        Path, typer.Option("--cert", help="The certificate (or the engineer's public key).")
    ],
    reason: Annotated[str, typer.Option("--reason", help="Why; audited.")],
    inventory: Annotated[
        Path | None,
        typer.Option(
            "--inventory",
            envvar="ERPCLOUD_INVENTORY",
            help="The hosts (default: the customer's local machines).",
        ),
    ] = None,
    directory: CustomersDir = CUSTOMERS_DIR,
    as_json: JsonFlag = False,
) -> None:
    """Refuse the certificate's key on every machine of the customer now (before it expires)."""
    customer = load_valid_customer(customer_id, directory, as_json)
    try:
        check_free_text(reason)
        line = revoked_key_line(certificate)
    except (ValueError, SupportRefused) as exc:
        fail(str(exc), as_json, EXIT_BAD_INPUT)
    path = _local_or(inventory, customer.id, "--inventory", lambda m: m.inventory, as_json)
    try:
        hosts_file = load_inventory(path, {customer.id: customer})
    except DocumentError as exc:
        fail(f"{path}: invalid inventory", as_json, EXIT_BAD_INPUT, map(str, exc.errors))
    hosts = [h for h in hosts_file.hosts if h.customer == customer.id]
    done: dict[str, str] = {}
    with tempfile.TemporaryDirectory(prefix="erpcloud-support-") as folder:
        known_hosts = write_known_hosts(hosts_file, Path(folder) / "known_hosts")
        for host in hosts:
            try:
                connection = connect(hosts_file.target(host, known_hosts))
                try:
                    result = run_as_root(connection, revoke_script(line), timeout=60)
                finally:
                    connection.close()
                done[host.name] = "revoked" if result.return_code == 0 else result.stderr.strip()
            except (HostKeyError, paramiko.SSHException, OSError) as exc:
                done[host.name] = f"unreachable: {exc}"
    ok = bool(hosts) and all(v == "revoked" for v in done.values())
    audit({"action": "support.revoke", "customer": customer.id, "key": line,
           "reason": reason, "hosts": done})  # fmt: skip

    def human() -> None:
        for name, state in done.items():
            console.print(f"{name}: {state}", markup=False)

    emit({"ok": ok, "customer": customer.id, "key": line, "hosts": done}, as_json, human)
    if not ok:
        raise SystemExit(EXIT_FAILED)

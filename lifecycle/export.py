"""Export (S18: everything exportable at any time): the database, the attachments and the
product's source/modules, with a manifest of sizes and SHA-256 checksums.

On the host, one root chain writes ``database.dump`` (``pg_dump`` custom format, as
``postgres``), ``attachments.tar.gz`` and ``source.tar.gz`` into a staging folder and prints
their checksums; the dump's rows per table are counted there too, by the host's own
``pg_restore`` (the server's major reads what its ``pg_dump`` wrote). Each file is copied here
over SFTP under a temporary ``.part`` name, checked against the host's checksum, and only then
renamed. Everything lands in a hidden ``.<name>.partial`` folder; the manifest is written last,
and the folder takes its final name only when complete. An interrupted export therefore never
looks complete: there is no folder under the export's name and no manifest.
"""

from __future__ import annotations

import json
import os
import posixpath
import shlex
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

from erpcloud.files import write_atomic
from erpcloud.output import to_jsonable
from erpcloud.render import PRODUCT_DATABASE
from erpcloud.ssh import connect
from lifecycle.dump import read_dump
from lifecycle.paths import ATTACHMENTS_DIR, PRODUCT_DIR
from lifecycle.remote import (
    Progress,
    RemoteError,
    host_shell,
    parse_sha256sum,
    pg_shell_functions,
    reporting,
    root,
    sha256_file,
)
from lifecycle.site import Site

q = shlex.quote
MANIFEST: Final = "manifest.json"
MANIFEST_FORMAT: Final = "erpcloud-export/1"
DATABASE_FILE: Final = "database.dump"
ATTACHMENTS_FILE: Final = "attachments.tar.gz"
SOURCE_FILE: Final = "source.tar.gz"


class ExportFailed(RuntimeError):
    """The export stopped; nothing under the export's name was left behind."""


@dataclass(frozen=True)
class ExportedFile:
    name: str
    kind: str
    format: str
    bytes: int
    sha256: str
    #: Where it came from on the host (a database name or a path as the host sees it).
    source: str
    #: Rows per table, for the database.
    tables: dict[str, int] | None = None


@dataclass(frozen=True)
class ExportReport:
    customer: str
    directory: Path
    manifest: Path
    product_version: str | None
    files: list[ExportedFile]


def export_script(site: Site, stage: str) -> str:
    """Dump, archive and checksum on the host (one root chain); fails if the product's folder is
    missing: an export without the source would not be everything (S18)."""
    paths = site.paths
    return "; ".join(
        [
            pg_shell_functions(site.db),
            f"test -d {q(paths.product)} || "
            f"{{ echo 'no product folder {PRODUCT_DIR} on the host' >&2; exit 1; }}",
            f"install -d -m 0700 -o postgres {q(stage)}",
            f"pgtool pg_dump --format=custom -d {PRODUCT_DATABASE} -f {q(stage)}/{DATABASE_FILE}",
            # No attachments yet is an empty archive, not an error.
            f"if [ -d {q(paths.attachments)} ]; then "
            f"tar -C {q(posixpath.dirname(paths.attachments))} -czf {q(stage)}/{ATTACHMENTS_FILE} "
            f"{q(posixpath.basename(paths.attachments))}; else "
            f"install -d {q(stage)}/empty/attachments; "
            f"tar -C {q(stage)}/empty -czf {q(stage)}/{ATTACHMENTS_FILE} attachments; "
            f"rm -rf {q(stage)}/empty; fi",
            f"tar -C {q(posixpath.dirname(paths.product))} -czf {q(stage)}/{SOURCE_FILE} "
            f"{q(posixpath.basename(paths.product))}",
            f'chown -R "$SUDO_USER" {q(stage)}',
            f"cd {q(stage)} && sha256sum {DATABASE_FILE} {ATTACHMENTS_FILE} {SOURCE_FILE}",
        ]
    )


def _export_name(customer_id: str, now: datetime) -> str:
    return f"{customer_id}-{now.astimezone(UTC):%Y%m%dT%H%M%SZ}"


def export_customer(
    site: Site,
    out: Path,
    progress: Callable[[str], None] = lambda _: None,
    transfer: Progress = lambda *_: None,
    now: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> ExportReport:
    """Export the site's customer into ``out/<customer>-<UTC time>/`` (module docs)."""
    customer = site.customer
    started = now()
    name = _export_name(customer.id, started)
    final = out / name
    partial = out / f".{name}.partial"
    if final.exists():
        raise ExportFailed(f"{final} exists already")
    stage = posixpath.join(site.paths.staging, f"export-{started.astimezone(UTC):%Y%m%d%H%M%S}")
    partial.mkdir(parents=True)
    connection = connect(site.ssh)
    try:
        progress(f"dumping the database and archiving the files on {site.host.name}")
        sums = parse_sha256sum(root(connection, site.ssh, "the export", export_script(site, stage)))
        progress("reading the dump on the host: rows per table and product version")
        contents = read_dump(f"{stage}/{DATABASE_FILE}", host_shell(connection, site.ssh))
        sftp = connection.sftp()
        files = []
        for file_name, kind, file_format, source in (
            (DATABASE_FILE, "database", "pg_dump custom", PRODUCT_DATABASE),
            (ATTACHMENTS_FILE, "attachments", "tar.gz", ATTACHMENTS_DIR),
            (SOURCE_FILE, "source", "tar.gz", PRODUCT_DIR),
        ):
            progress(f"copying {file_name} (SFTP)")
            part = partial / f"{file_name}.part"
            sftp.get(
                f"{stage}/{file_name}",
                str(part),
                callback=reporting(transfer, file_name),
            )
            digest = sha256_file(part)
            if digest != sums.get(file_name):
                raise ExportFailed(f"{file_name}: the copy's checksum differs from the host's")
            part.rename(partial / file_name)
            files.append(
                ExportedFile(
                    name=file_name,
                    kind=kind,
                    format=file_format,
                    bytes=(partial / file_name).stat().st_size,
                    sha256=digest,
                    source=source,
                )
            )
        files[0] = ExportedFile(**{**files[0].__dict__, "tables": contents.rows})
        version = contents.system_info.version if contents.system_info else None
        manifest = {
            "format": MANIFEST_FORMAT,
            "customer": customer.id,
            "company": customer.company,
            "edition": customer.edition.value,
            "product_version": version,
            "created_at": started,
            "host": site.host.name,
            "promise": "S18: the database, the attachments and the source code, exportable at "
            "any time",
            "files": files,
        }
        write_atomic(partial / MANIFEST, json.dumps(to_jsonable(manifest), indent=2) + "\n")
        _sync_directory(partial)
        partial.rename(final)
        _sync_directory(out)
    except RemoteError as exc:
        shutil.rmtree(partial, ignore_errors=True)
        raise ExportFailed(str(exc)) from None
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    finally:
        try:
            root(connection, site.ssh, "removing the staging folder", f"rm -rf {q(stage)}")
        except RemoteError as exc:
            progress(f"warning: {exc}")
        finally:
            connection.close()
    return ExportReport(customer.id, final, final / MANIFEST, version, files)


def _sync_directory(directory: Path) -> None:
    """Make the renames inside ``directory`` durable before the export is called complete."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def verify_export(directory: Path) -> list[str]:
    """What does not match the manifest (sizes, checksums, missing files); empty if all does."""
    manifest_path = directory / MANIFEST
    if not manifest_path.is_file():
        return [f"{directory}: no {MANIFEST}: the export is not complete"]
    manifest: dict[str, Any] = json.loads(manifest_path.read_text())
    problems = []
    for entry in manifest["files"]:
        path = directory / entry["name"]
        if not path.is_file():
            problems.append(f"{entry['name']}: missing")
        elif path.stat().st_size != entry["bytes"]:
            problems.append(
                f"{entry['name']}: {path.stat().st_size} bytes, manifest {entry['bytes']}"
            )
        elif sha256_file(path) != entry["sha256"]:
            problems.append(f"{entry['name']}: SHA-256 differs from the manifest")
    return problems

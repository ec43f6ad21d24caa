"""The stand-in product archive: what the local machine image installs in ``/opt/erp``.

The real ERP product archive cannot be downloaded here, so local machine images get
``erp-<release>.tar.gz`` built from ``localtarget/product/erp-server`` (a small, clearly named
stand-in; see its docstring) and a ``STAND-IN.txt`` saying what it is. The image's build step
checks the archive against ``erp-<release>.tar.gz.sha256`` and extracts it into ``/opt/erp``,
exactly as it does with the real product.

The archive is deterministic: the same release and script give the same bytes (fixed times,
owners and order; gzip without a name or time), so its digest can be part of a cache key.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import re
import tarfile
from importlib import resources
from pathlib import Path
from typing import Final

#: The stand-in's files inside this package (shipped with it: hatch includes every file below a
#: listed package folder).
SCRIPT_RESOURCE: Final = "product/erp-server"
#: Where the image runs it from, relative to ``/opt/erp``.
SCRIPT_MEMBER: Final = "bin/erp-server"
NOTE_MEMBER: Final = "STAND-IN.txt"
#: Bumped when the archive's layout changes without the script changing.
ARCHIVE_LAYOUT: Final = "1"

_RELEASE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")

_NOTE = """\
erp-{release}: the erpcloud STAND-IN for the ERP product. Local machines only.

This archive is NOT the ERP product. The real product archive cannot be downloaded where
erpcloud is developed and tested, so local machine images install this stand-in exactly where
the real product goes (/opt/erp), and the rendered systemd unit runs bin/erp-server as user erp.

bin/erp-server (Python 3, standard library only) reads the product's environment, makes a
self-signed certificate for the host of ERP_PUBLIC_URL, creates the table erp_system_info in
database erp, and serves HTTPS on ERP_HTTPS_PORT: GET /health answers 200 with the version the
database holds, or 503 with the reason. It has no ERP functions.

Built by erpcloud (localtarget/product.py); never ship it to a customer.
"""


def server_script() -> bytes:
    """The stand-in's ``erp-server`` script, as shipped in this package."""
    return resources.files("localtarget").joinpath(SCRIPT_RESOURCE).read_bytes()


def stand_in_note(release: str) -> bytes:
    return _NOTE.format(release=release).encode("utf-8")


def product_source_digest() -> str:
    """SHA-256 over everything the archive is built from (script, note template, layout).

    Part of a local image's cache key: it changes whenever the archive's content would.
    """
    digest = hashlib.sha256()
    for part in (ARCHIVE_LAYOUT.encode(), server_script(), _NOTE.encode("utf-8")):
        digest.update(len(part).to_bytes(8, "big"))
        digest.update(part)
    return digest.hexdigest()


def _member(name: str, mode: int, data: bytes | None = None) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.mode = mode
    info.mtime = 0
    info.uid = info.gid = 0
    info.uname = info.gname = "root"
    if data is None:
        info.type = tarfile.DIRTYPE
    else:
        info.size = len(data)
    return info


def archive_bytes(release: str) -> bytes:
    """The ``erp-<release>.tar.gz`` content (deterministic)."""
    _check_release(release)
    entries: dict[str, tuple[int, bytes | None]] = {
        "bin": (0o755, None),
        SCRIPT_MEMBER: (0o755, server_script()),
        NOTE_MEMBER: (0o644, stand_in_note(release)),
    }
    raw = io.BytesIO()
    with (
        gzip.GzipFile(filename="", mode="wb", fileobj=raw, compresslevel=9, mtime=0) as gz,
        tarfile.open(fileobj=gz, mode="w", format=tarfile.USTAR_FORMAT) as tar,
    ):
        for name in sorted(entries):
            mode, data = entries[name]
            info = _member(name, mode, data)
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return raw.getvalue()


def archive_name(release: str) -> str:
    _check_release(release)
    return f"erp-{release}.tar.gz"


def build_product_archive(release: str, out_dir: Path) -> tuple[Path, str]:
    """Write ``erp-<release>.tar.gz`` and its ``.sha256`` into ``out_dir``; (path, hex digest).

    The ``.sha256`` file is in ``sha256sum`` format (``<hex>  erp-<release>.tar.gz``), which is
    what the image's build step checks the archive against.
    """
    data = archive_bytes(release)
    digest = hashlib.sha256(data).hexdigest()
    out_dir.mkdir(parents=True, exist_ok=True)
    archive = out_dir / archive_name(release)
    checksum = out_dir / f"{archive.name}.sha256"
    _write_atomic(archive, data)
    _write_atomic(checksum, f"{digest}  {archive.name}\n".encode("ascii"))
    return archive, digest


def _write_atomic(path: Path, data: bytes) -> None:
    partial = path.with_name(f".{path.name}.partial")
    partial.write_bytes(data)
    partial.chmod(0o644)
    partial.replace(path)


def _check_release(release: str) -> None:
    if not _RELEASE.match(release):
        raise ValueError(
            f"release {release!r}: letters, digits, '.', '_' and '-' only, "
            "starting with a letter or digit (it names the archive file)"
        )

"""The product image built on this machine from the same build steps as on AWS (S1).

Two layers, each cached under ``IMAGE_CACHE`` by a content hash and built atomically (in a
temporary folder, renamed into place when complete):

1. **The parent image**: Debian 13 "trixie" from this machine's apt mirror with ``debootstrap``,
   configured as Debian's official cloud image is (cloud-init, OpenSSH, systemd-networkd, the
   en_US.UTF-8 locale, the archive's updates and security suites), with cloud-init's NoCloud
   data source, and the local stand-ins of the two AWS-managed components the recipe adds on AWS:
   Debian's AWS CLI v2 and a CloudWatch agent stand-in (``localtarget/files/``).
2. **The product image**: a copy of the parent on which every ``build`` and ``validate`` step of
   :func:`images.component.product_component` runs as written, inside the root with
   ``systemd-nspawn``, except ``FetchProductArchive`` (a download from the artifact bucket),
   which is replaced by staging the stand-in product's archive (``localtarget/product.py``) where
   that step would have put it. The ``test`` phase needs a booted instance: the machine tests
   are its local counterpart.

A changed build step, stand-in or package list gives a new hash and so a new image; old ones are
left for ``erpcloud local image --prune``.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Final

from images.component import (
    FETCH_PRODUCT_STEP,
    PRODUCT_ARCHIVE_DIR,
    Action,
    ComponentDocument,
    PhaseName,
    Step,
    product_component,
)
from localtarget.product import build_product_archive, product_source_digest

IMAGE_CACHE: Final = Path(os.environ.get("ERPCLOUD_IMAGE_CACHE", "/var/cache/erpcloud/images"))
SUITE: Final = "trixie"
#: dpkg's build-time setting (:func:`_unsafe_dpkg_io`): 119 s → 99 s for debootstrap here.
BUILD_DPKG_CONFIG: Final = "etc/dpkg/dpkg.cfg.d/zz-erpcloud-build-unsafe-io"
#: What Debian's cloud image has that debootstrap's minimal base lacks, plus Debian's AWS CLI
#: (on AWS the recipe's ``aws-cli-version-2-linux`` component installs it).
PARENT_PACKAGES: Final = (
    "systemd",
    "systemd-sysv",
    "dbus",
    "openssh-server",
    "cloud-init",
    "python3-cffi-backend",
    "sudo",
    "locales",
    "iproute2",
    "ca-certificates",
    "curl",
    "less",
    "awscli",
)
#: The artifact bucket is not read locally (the archive is staged), but the document names one.
LOCAL_ARTIFACT_BUCKET: Final = "erpcloud-local-artifacts"
DEFAULT_MIRROR: Final = "http://deb.debian.org/debian"
#: Bump when the local build procedure itself changes in a way the hashes do not see.
BUILD_RECIPE_VERSION: Final = "1"

Progress = Callable[[str], None]


class ImageBuildError(RuntimeError):
    """A build step failed; the message names the step and shows its output's tail."""


@dataclass(frozen=True)
class ImageInfo:
    """A built image: its root folder and what it was built from."""

    release: str
    root: Path
    key: str
    parent_key: str
    built_now: bool
    seconds: float

    def as_dict(self) -> dict[str, object]:
        return {
            "release": self.release,
            "root": str(self.root),
            "key": self.key,
            "parent_key": self.parent_key,
            "built_now": self.built_now,
            "seconds": round(self.seconds, 1),
        }


# --- where packages come from -----------------------------------------------------------------
_DEB_LINE = re.compile(r"^\s*deb\s+(?:\[[^\]]*\]\s+)?(\S+)\s+\S+")


def host_mirror(apt_dir: Path = Path("/etc/apt")) -> str:
    """The Debian archive this machine's apt uses (the only registry it reaches)."""
    candidates: list[str] = []
    for sources in sorted((apt_dir / "sources.list.d").glob("*.sources")):
        for line in sources.read_text(encoding="utf-8", errors="replace").splitlines():
            if line.startswith("URIs:"):
                candidates.extend(line.split()[1:])
    for listing in [apt_dir / "sources.list", *sorted((apt_dir / "sources.list.d").glob("*.list"))]:
        if listing.is_file():
            for line in listing.read_text(encoding="utf-8", errors="replace").splitlines():
                match = _DEB_LINE.match(line)
                if match:
                    candidates.append(match.group(1))
    for uri in candidates:
        if uri.rstrip("/").endswith("/debian"):
            return uri.rstrip("/")
    return DEFAULT_MIRROR


def sources_list(mirror: str) -> str:
    """The image's apt sources: the release, its updates and its security suite."""
    security = mirror[: -len("/debian")] + "/debian-security"
    return (
        f"deb {mirror} {SUITE} main\n"
        f"deb {mirror} {SUITE}-updates main\n"
        f"deb {security} {SUITE}-security main\n"
    )


# --- running things inside a root -------------------------------------------------------------
def run_in_root(
    root: Path, script: str, *, timeout: float = 1800, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run a bash script inside ``root`` as root (its own /proc, /dev and /sys; host network)."""
    argv = ["systemd-nspawn", "--quiet", f"--directory={root}", "--register=no", "--keep-unit"]
    argv += [f"--setenv={k}={v}" for k, v in (env or {}).items()]
    argv += ["--pipe", "/bin/bash", "-c", script]
    return subprocess.run(
        argv, capture_output=True, text=True, timeout=timeout, check=False, stdin=subprocess.DEVNULL
    )


#: nspawn's own remark when a non-booted run ends; not about the command it ran.
_NSPAWN_NOISE: Final = "Attempted to remove disk file system"


def output_of(result: subprocess.CompletedProcess[str]) -> str:
    """A command's output without nspawn's own closing remark."""
    lines = (result.stdout + result.stderr).strip().splitlines()
    return "\n".join(line for line in lines if _NSPAWN_NOISE not in line).strip()


def _check(result: subprocess.CompletedProcess[str], what: str) -> None:
    if result.returncode != 0:
        tail = "\n".join(output_of(result).splitlines()[-25:])
        raise ImageBuildError(f"{what} failed (exit {result.returncode}):\n{tail}")


def _local_file(name: str) -> str:
    return resources.files("localtarget").joinpath(f"files/{name}").read_text(encoding="utf-8")


# --- cache bookkeeping ------------------------------------------------------------------------
def _digest(*parts: str) -> str:
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:16]


def parent_key() -> str:
    stand_ins = [_local_file(n) for n in sorted(PARENT_FILES)]
    return _digest(BUILD_RECIPE_VERSION, SUITE, *PARENT_PACKAGES, *PARENT_FILES, *stand_ins)


def product_key(document: ComponentDocument) -> str:
    return _digest(parent_key(), document.digest, product_source_digest())


@contextlib.contextmanager
def _cache_lock(cache: Path) -> Iterator[None]:
    """One build at a time per cache (two test runs must not build the same layer twice)."""
    cache.mkdir(parents=True, exist_ok=True)
    with (cache / ".lock").open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@contextlib.contextmanager
def _building(cache: Path, final: Path) -> Iterator[Path]:
    """A scratch folder that becomes ``final`` only if the body completes."""
    scratch = Path(tempfile.mkdtemp(prefix=f".build-{final.name}-", dir=cache))
    try:
        yield scratch
        (scratch / "complete.json").write_text(json.dumps({"built_at": time.time()}))
        scratch.rename(final)
    finally:
        if scratch.exists():
            shutil.rmtree(scratch, ignore_errors=True)


# --- layer 1: the parent image ----------------------------------------------------------------
#: Files of the parent layer, from ``localtarget/files/``, by their path in the image.
PARENT_FILES: Final = {
    "90-erpcloud-local.cfg": ("/etc/cloud/cloud.cfg.d/90-erpcloud-local.cfg", 0o644),
    "amazon-cloudwatch-agent-ctl": (
        "/opt/aws/amazon-cloudwatch-agent/bin/amazon-cloudwatch-agent-ctl",
        0o755,
    ),
}


def _place(root: Path, path: str, content: str, mode: int) -> None:
    target = root / path.lstrip("/")
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(content, encoding="utf-8")
    target.chmod(mode)


@contextlib.contextmanager
def _unsafe_dpkg_io(root: Path) -> Iterator[None]:
    """While an image is built, dpkg skips its fsyncs (a build that fails is thrown away
    anyway); the setting goes before the image is sealed, so no machine runs with it."""
    path = root / BUILD_DPKG_CONFIG
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("force-unsafe-io\n", encoding="utf-8")
    try:
        yield
    finally:
        path.unlink(missing_ok=True)


def _build_parent(root: Path, mirror: str, progress: Progress) -> None:
    with _unsafe_dpkg_io(root):  # debootstrap accepts a root holding only this file
        _debootstrap_and_configure(root, mirror, progress)


def _debootstrap_and_configure(root: Path, mirror: str, progress: Progress) -> None:
    progress(f"debootstrap {SUITE} from {mirror}")
    result = subprocess.run(
        [
            "debootstrap",
            "--variant=minbase",
            f"--include={','.join(PARENT_PACKAGES)}",
            SUITE,
            str(root),
            mirror,
        ],
        capture_output=True,
        text=True,
        check=False,
        stdin=subprocess.DEVNULL,
        timeout=1800,
    )
    _check(result, "debootstrap")
    (root / "etc/apt/sources.list").write_text(sources_list(mirror), encoding="utf-8")
    for name, (path, mode) in PARENT_FILES.items():
        _place(root, path, _local_file(name), mode)
    progress("configuring the parent image")
    _check(
        run_in_root(
            root,
            "set -euo pipefail\n"
            "sed -i 's/^# *en_US.UTF-8/en_US.UTF-8/' /etc/locale.gen\n"
            "locale-gen >/dev/null\n"
            "update-locale LANG=en_US.UTF-8\n"
            "systemctl enable systemd-networkd >/dev/null 2>&1\n"
            "apt-get update -q >/dev/null\n",
        ),
        "configuring the parent image",
    )


# --- layer 2: the product image ---------------------------------------------------------------
def _run_step(root: Path, step: Step, staged_archive: tuple[Path, str] | None) -> None:
    if step.name == FETCH_PRODUCT_STEP:
        if staged_archive is None:
            raise ImageBuildError(f"{step.name}: no product archive to stage")
        archive, digest = staged_archive
        folder = root / PRODUCT_ARCHIVE_DIR.lstrip("/")
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        shutil.copyfile(archive, folder / "erp.tar.gz")
        (folder / "erp.tar.gz.sha256").write_text(f"{digest}  erp.tar.gz\n")
        return
    if step.action is Action.CREATE_FILE:
        for entry in step.files:
            _place(root, entry.path, entry.content, int(entry.permissions, 8))
        return
    if step.action is Action.EXECUTE_BASH:
        script = "\n".join(step.commands) + "\n"
        result = run_in_root(
            root,
            script,
            timeout=float(step.timeout_seconds or 7200),
            env={"DEBIAN_FRONTEND": "noninteractive"},
        )
        _check(result, f"build step {step.name}")
        return
    raise ImageBuildError(f"step {step.name}: {step.action.value} has no local equivalent")


def _seal(root: Path) -> None:
    """What every image leaves out: host keys, machine id, caches, the builder's hostname."""
    _check(
        run_in_root(
            root,
            "set -euo pipefail\n"
            "apt-get clean\n"
            "rm -f /etc/ssh/ssh_host_*\n"
            "cloud-init clean --logs >/dev/null\n"
            "rm -rf /var/lib/apt/lists/* /tmp/* /var/tmp/*\n",
        ),
        "sealing the image",
    )
    (root / "etc/machine-id").write_text("")
    (root / "etc/hostname").write_text("localhost\n")


def _copy_tree(source: Path, destination: Path) -> None:
    subprocess.run(
        ["cp", "-a", "--reflink=auto", f"{source}/.", str(destination)],
        check=True,
        capture_output=True,
    )


def _phases(document: ComponentDocument, wanted: Sequence[PhaseName]) -> list[Step]:
    return [step for phase, step in document.steps() if phase in wanted]


def build_image(
    release: str,
    *,
    cache: Path | None = None,
    progress: Progress | None = None,
    mirror: str | None = None,
) -> ImageInfo:
    """The product image of ``release``, built now or taken from the cache."""
    started = time.monotonic()
    say = progress or (lambda _message: None)
    where = cache or IMAGE_CACHE
    document = product_component(release, LOCAL_ARTIFACT_BUCKET)
    base_key, key = parent_key(), product_key(document)
    parent_dir = where / f"parent-{SUITE}-{base_key}"
    product_dir = where / f"product-{release.lower()}-{key}"
    built_now = False
    with _cache_lock(where):
        if not (product_dir / "complete.json").is_file():
            built_now = True
            if not (parent_dir / "complete.json").is_file():
                with _building(where, parent_dir) as scratch:
                    (scratch / "root").mkdir()
                    _build_parent(scratch / "root", mirror or host_mirror(), say)
            with _building(where, product_dir) as scratch:
                root = scratch / "root"
                root.mkdir()
                say("copying the parent image")
                _copy_tree(parent_dir / "root", root)
                staged = build_product_archive(release, scratch / "artifacts")
                with _unsafe_dpkg_io(root):
                    for step in _phases(document, (PhaseName.BUILD, PhaseName.VALIDATE)):
                        say(f"image step {step.name}")
                        _run_step(root, step, staged)
                _seal(root)
                (scratch / "component.yaml").write_text(document.to_yaml(), encoding="utf-8")
    return ImageInfo(
        release=release,
        root=product_dir / "root",
        key=key,
        parent_key=base_key,
        built_now=built_now,
        seconds=time.monotonic() - started,
    )


def cached_images(cache: Path | None = None) -> list[Path]:
    where = cache or IMAGE_CACHE
    if not where.is_dir():
        return []
    return sorted(p for p in where.iterdir() if (p / "complete.json").is_file())


def prune(keep: Sequence[Path], cache: Path | None = None) -> list[Path]:
    """Remove every cached layer except ``keep`` (and the parents they were built from)."""
    removed = []
    kept = {p.resolve() for p in keep}
    with _cache_lock(cache or IMAGE_CACHE):
        for layer in cached_images(cache):
            if layer.resolve() not in kept:
                shutil.rmtree(layer)
                removed.append(layer)
    return removed


# --- the image's own cloud-init as the schema check -------------------------------------------
def cloud_init_schema_in_image(
    image_root: Path, user_data: str
) -> subprocess.CompletedProcess[str]:
    """``cloud-init schema`` of the image's own cloud-init (25.x on Debian 13, stricter than the
    host's) on ``user_data``; the image is not changed (a volatile overlay)."""
    with tempfile.TemporaryDirectory(prefix="erpcloud-schema-") as folder:
        path = Path(folder) / "user-data"
        path.write_text(user_data, encoding="utf-8")
        Path(folder).chmod(0o755)
        argv = [
            "systemd-nspawn",
            "--quiet",
            f"--directory={image_root}",
            "--register=no",
            "--keep-unit",
            "--volatile=overlay",
            f"--bind-ro={folder}:/run/erpcloud-schema",
            "--pipe",
            "cloud-init",
            "schema",
            "-c",
            "/run/erpcloud-schema/user-data",
        ]
        return subprocess.run(
            argv, capture_output=True, text=True, check=False, stdin=subprocess.DEVNULL
        )

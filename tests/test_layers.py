"""Layers that run one way (issue 12, item 5): capabilities never import the local stand-in.

A ratchet: the capability modules that still import ``localtarget`` are listed here, each
waiting for the host-process stand-in to go. A new import fails this test; a module that stops
importing it must leave the list (the test says which), so the list only shrinks.
"""

from __future__ import annotations

import ast
from pathlib import Path

from .conftest import REPO_ROOT

CAPABILITIES = ("backups", "dr", "lifecycle", "maintenance", "stacks")
#: Still importing ``localtarget`` (the host-process stand-in serves their tests and
#: ``--site local`` drills); to be emptied, not extended.
STILL_IMPORTING = {
    "backups/pgbackrest.py",
    "dr/host.py",
    "maintenance/localfleet.py",
}


def imported_modules(path: Path) -> set[str]:
    """Every module a file imports, at any depth (imports inside functions count too)."""
    modules: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            modules.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            modules.add(node.module)
    return modules


def importing(package_prefix: str) -> set[str]:
    found = set()
    for package in CAPABILITIES:
        for path in sorted((REPO_ROOT / package).rglob("*.py")):
            if any(m.split(".")[0] == package_prefix for m in imported_modules(path)):
                found.add(path.relative_to(REPO_ROOT).as_posix())
    return found


def test_capabilities_import_the_local_stand_in_only_where_still_listed():
    found = importing("localtarget")
    assert not found - STILL_IMPORTING, f"new imports of localtarget: {found - STILL_IMPORTING}"
    assert not STILL_IMPORTING - found, (
        f"no longer importing, drop from the list: {STILL_IMPORTING - found}"
    )


def test_lifecycle_reaches_the_local_machines_through_the_site_protocol():
    lifecycle = {p for p in importing("localtarget") if p.startswith("lifecycle/")}
    assert lifecycle == set()
    site = imported_modules(REPO_ROOT / "lifecycle" / "site.py")
    assert "erpcloud.sites" in site


def test_the_base_package_imports_the_local_site_only_in_its_front_door():
    base = {
        path.relative_to(REPO_ROOT).as_posix()
        for path in (REPO_ROOT / "erpcloud").rglob("*.py")
        if any(m.split(".")[0] == "localtarget" for m in imported_modules(path))
    }
    assert base == {"erpcloud/cli.py"}  # the CLI hub: it moves out of the base package (issue 15)

"""Layers that run one way (issue 12, item 5): capabilities never import the local site.

Capabilities reach the local machines through the protocols of the base package
(:mod:`erpcloud.sites`, :mod:`dr.site`'s registry), which the front doors fill in; an import of
``localtarget`` from a capability, even inside a function, fails here.
"""

from __future__ import annotations

import ast
from pathlib import Path

from .conftest import REPO_ROOT

CAPABILITIES = ("backups", "dr", "lifecycle", "maintenance", "stacks", "support")


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


def test_no_capability_imports_the_local_site():
    assert importing("localtarget") == set()


def test_lifecycle_reaches_the_local_machines_through_the_site_protocol():
    lifecycle = {p for p in importing("localtarget") if p.startswith("lifecycle/")}
    assert lifecycle == set()
    site = imported_modules(REPO_ROOT / "lifecycle" / "site.py")
    assert "erpcloud.sites" in site


def test_the_base_package_imports_no_local_site_and_no_capability():
    base = {
        path.relative_to(REPO_ROOT).as_posix()
        for path in (REPO_ROOT / "erpcloud").rglob("*.py")
        if {m.split(".")[0] for m in imported_modules(path)} & {"localtarget", *CAPABILITIES}
    }
    assert base == set()  # the CLI hub is a front door on top: frontdoor/cli.py

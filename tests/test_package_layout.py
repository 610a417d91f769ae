"""The folders of the generator package say where their code runs; these
tests keep what each folder may import (docs/design.md: the pipeline).

- description/: the YAML description in, a validated model out (anywhere).
- render/: the model in, the manifest of artifacts out (anywhere).
- dom0/: what runs in dom0 against a live system (audit, probe, apply helpers).
- qubesd/: imported by qubesd itself, on its Python (3.11 on R4.2, 3.13 on R4.3).
- payload/: goes into VMs and initramfs images: standard library or POSIX sh.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest
from conftest import ROOT

PACKAGE = ROOT / "generator" / "qubes_ephemeral"
NAME = "qubes_ephemeral"
STDLIB = set(sys.stdlib_module_names)

# For each folder: the third-party top-level modules and the folders of our
# own package it may import ("" is the package itself: only __version__).
ALLOWED: dict[str, tuple[set[str], set[str]]] = {
    "description": ({"yaml"}, {"description"}),
    "render": ({"jinja2"}, {"", "description", "render", "qubesd", "payload"}),
    "dom0": (set(), {"description", "render", "dom0", "qubesd", "payload"}),
    "qubesd": ({"qubes"}, {"", "qubesd", "payload"}),
    "payload": (set(), set()),
}
# What the generator may use of the qubesd folder: the feature names and the
# stamp reader, never the extension (which imports qubes).
QUBESD_SHARED = {f"{NAME}.qubesd.feature"}


def imports(path: Path) -> list[tuple[int, str]]:
    """Every module a file imports, absolute, with its line."""
    found: list[tuple[int, str]] = []
    package = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts[:-1])
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parts, base] if base else parts)
            if node.module is None or node.level:
                # from . import a, b: each name may be a module.
                found += [(node.lineno, f"{base}.{alias.name}") for alias in node.names]
            else:
                found.append((node.lineno, base))
    return found


def folders() -> list[str]:
    return sorted(p.name for p in PACKAGE.iterdir() if p.is_dir() and (p / "__init__.py").exists())


def test_every_folder_has_a_rule() -> None:
    assert folders() == sorted(ALLOWED)


def test_no_module_outside_the_folders_but_the_entry_points() -> None:
    top = sorted(p.name for p in PACKAGE.glob("*.py"))
    assert top == ["__init__.py", "__main__.py", "api.py", "cli.py"]
    assert imports(PACKAGE / "__init__.py") == [], "qubesd imports the package: it must stay empty of imports"


@pytest.mark.parametrize("folder", sorted(ALLOWED))
def test_imports_follow_the_folder_rule(folder: str) -> None:
    third_party, ours = ALLOWED[folder]
    wrong = []
    for path in sorted((PACKAGE / folder).rglob("*.py")):
        for line, module in imports(path):
            top = module.split(".")[0]
            if top == "__future__" or (top in STDLIB and top != NAME):
                continue
            where = f"{path.relative_to(ROOT)}:{line} imports {module}"
            if top == NAME:
                inner = module.split(".")[1] if module.count(".") else ""
                if inner == "__version__":
                    inner = ""
                if inner not in ours:
                    wrong.append(where)
                elif inner == "qubesd" and folder != "qubesd" and module not in QUBESD_SHARED:
                    wrong.append(where + " (only the feature module is shared)")
            elif top not in third_party:
                wrong.append(where)
    assert wrong == []


def test_the_rule_catches_a_forbidden_import(tmp_path: Path) -> None:
    # The check above can fail: a payload module importing the generator is seen.
    probe = PACKAGE / "payload" / "_probe_import_rule.py"
    probe.write_text("import yaml\nfrom qubes_ephemeral.render import naming\nfrom . import vm_initramfs\n")
    try:
        found = [module for _, module in imports(probe)]
        with pytest.raises(AssertionError):
            test_imports_follow_the_folder_rule("payload")
    finally:
        probe.unlink()
    assert found == ["yaml", "qubes_ephemeral.render", "qubes_ephemeral.payload.vm_initramfs"]


def test_payload_shell_is_posix_sh() -> None:
    for path in sorted((PACKAGE / "payload").rglob("*.sh")):
        first = path.read_text().splitlines()[0]
        assert first in ("#!/bin/sh", "#!/bin/bash") or not first.startswith("#!"), path
        assert "bash" not in first or path.parent.name == "dracut", f"{path}: only dracut's module-setup runs in bash"

"""Lay out the files of the dom0 package, relative to /, in a folder.

One tree for both the RPM and the tarball (packaging/build), so they hold
the same files:

  usr/share/qubes-ephemeral/lib/       the generator (qubes_ephemeral) and its
                                       dist-info, from a wheel of this project
  usr/lib/python3.11/site-packages/    links to it, for dom0's Python on R4.2
  usr/lib/python3.13/site-packages/    ... and on R4.3 (the dist-info carries the
                                       qubes.ext entry point of the qubesd extension)
  usr/bin/qubes-ephemeral              the command
  srv/formulas/base/ephemeral-formula/ the Salt formula; its ephemeral/lib links
                                       to the generator above
  etc/salt/minion.d/formula-ephemeral.conf   puts the formula on Salt's file_roots
  usr/share/doc/qubes-ephemeral/       README.md, pillar.example

Usage: stage.py WHEEL TREE
"""

from __future__ import annotations

import os
import shutil
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PYTHONS = ("3.11", "3.13")  # dom0: R4.2 (Fedora 37), R4.3 (Fedora 41)
LIB = Path("usr/share/qubes-ephemeral/lib")
FORMULA = Path("srv/formulas/base/ephemeral-formula")
MINION_CONF = """\
# qubes-ephemeral: the Salt formula `ephemeral` (qubesctl state.apply ephemeral).
file_roots:
  base:
    - /srv/formulas/base/ephemeral-formula
"""
COMMAND = """\
#!/usr/bin/python3
# qubes-ephemeral: validate, render, diff and audit descriptions (see README).
import sys

from qubes_ephemeral.cli import run

sys.exit(run())
"""


def relative_link(link: Path, target: Path) -> None:
    """A symlink that stays right wherever the tree is unpacked."""
    link.parent.mkdir(parents=True, exist_ok=True)
    link.symlink_to(os.path.relpath(target, link.parent))


def stage(wheel: Path, tree: Path) -> None:
    if tree.exists():
        shutil.rmtree(tree)
    lib = tree / LIB
    with zipfile.ZipFile(wheel) as archive:
        archive.extractall(lib)
    names = sorted(path.name for path in lib.iterdir())
    if "qubes_ephemeral" not in names or not any(name.endswith(".dist-info") for name in names):
        raise SystemExit(f"stage.py: unexpected wheel content: {names}")
    for python in PYTHONS:
        site = tree / f"usr/lib/python{python}/site-packages"
        for name in names:
            relative_link(site / name, lib / name)
    command = tree / "usr/bin/qubes-ephemeral"
    command.parent.mkdir(parents=True)
    command.write_text(COMMAND)
    command.chmod(0o755)
    formula = tree / FORMULA
    shutil.copytree(ROOT / "ephemeral-formula", formula, symlinks=True,
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))  # fmt: skip
    bundled = formula / "ephemeral/lib/qubes_ephemeral"
    bundled.unlink()  # in the repository, a link to generator/: here, to the installed generator
    relative_link(bundled, lib / "qubes_ephemeral")
    conf = tree / "etc/salt/minion.d/formula-ephemeral.conf"
    conf.parent.mkdir(parents=True)
    conf.write_text(MINION_CONF)
    docs = tree / "usr/share/doc/qubes-ephemeral"
    docs.mkdir(parents=True)
    for name in ("README.md", "pillar.example"):
        shutil.copy(ROOT / name, docs / name)
    for path in tree.rglob("*"):
        if not path.is_symlink():
            path.chmod(0o755 if path.is_dir() or os.access(path, os.X_OK) else 0o644)


if __name__ == "__main__":
    stage(Path(sys.argv[1]), Path(sys.argv[2]))

"""The formula's state module for our lines in shared files and for the
applied record (_states/ephemeral_files.py), without a minion: loaded with
importlib, the loader's dunders set by hand (see test_salt_modules.py)."""

from __future__ import annotations

import json
import os
import types
from pathlib import Path
from typing import Any

import pytest
from conftest import PILLAR_EXAMPLE
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from qubes_ephemeral.api import describe
from qubes_ephemeral.dom0 import textedit
from qubes_ephemeral.payload import vm_initramfs
from qubes_ephemeral.render.artifacts import Block, CommentOut
from qubes_ephemeral.render.manifest import render
from test_salt_modules import FORMULA, load

MANIFEST = render(describe(PILLAR_EXAMPLE.read_bytes()))
BLOCK = next(a for a in MANIFEST.artifacts if isinstance(a, Block) and a.target == "/etc/fstab")
TAKEOVER = next(a for a in MANIFEST.artifacts if isinstance(a, CommentOut))
FSTAB = "/dev/mapper/qubes_dom0-root / ext4 defaults 1 1\n/dev/mapper/qubes_dom0-swap none swap defaults 0 0\ntmpfs /t"


def files_module(test: bool = False) -> types.ModuleType:
    module = load(FORMULA / "_states" / "ephemeral_files.py", "ephemeral_files_under_test")
    module.__salt__ = {"ephemeral.generator": lambda: "generator"}
    module.__opts__ = {"test": test}
    return module


def as_target(artifact: Block | CommentOut, path: Path) -> dict[str, Any]:
    data = artifact.as_dict()
    data["target"] = str(path)
    return data


def test_virtual_needs_the_execution_module() -> None:
    module = files_module()
    assert module.__virtual__() == "ephemeral_files"
    module.__salt__ = {}
    loaded, why = module.__virtual__()
    assert loaded is False and "ephemeral execution module" in why


def test_block_in_and_out_byte_for_byte_keeping_mode_and_symlink(tmp_path: Path) -> None:
    real = tmp_path / "real-fstab"
    real.write_bytes(FSTAB.encode() + b"\xff odd byte\n")
    real.chmod(0o640)
    link = tmp_path / "fstab"
    link.symlink_to(real.name)
    module = files_module()
    first = module.block("fstab block", as_target(BLOCK, link))
    assert first["result"] is True and first["changes"]
    assert link.is_symlink(), "a symlinked fstab stays a symlink"
    assert (real.stat().st_mode & 0o777) == 0o640
    assert real.read_bytes().startswith(BLOCK.marker_start.encode())
    assert module.block("fstab block", as_target(BLOCK, link))["changes"] == {}, "idempotent"
    gone = module.block("fstab block", as_target(BLOCK, link), present=False)
    assert gone["changes"] and real.read_bytes() == FSTAB.encode() + b"\xff odd byte\n"
    assert not [p for p in tmp_path.iterdir() if ".qubes-ephemeral." in p.name], "no temporary left"


def test_test_mode_reports_and_writes_nothing(tmp_path: Path) -> None:
    fstab = tmp_path / "fstab"
    fstab.write_text(FSTAB)
    result = files_module(test=True).block("fstab block", as_target(BLOCK, fstab))
    assert result["result"] is None and "+" + BLOCK.marker_start in result["changes"]["diff"]
    assert fstab.read_text() == FSTAB


def test_damaged_markers_change_nothing(tmp_path: Path) -> None:
    fstab = tmp_path / "fstab"
    fstab.write_text(FSTAB + "\n" + BLOCK.marker_end + "\n")
    result = files_module().block("fstab block", as_target(BLOCK, fstab))
    assert result["result"] is False and "damaged" in result["comment"]
    assert fstab.read_text() == FSTAB + "\n" + BLOCK.marker_end + "\n"


def test_a_missing_file_is_made_for_a_block_but_not_for_a_takeover(tmp_path: Path) -> None:
    module = files_module()
    assert module.commented("takeover", as_target(TAKEOVER, tmp_path / "none"))["changes"] == {}
    assert not (tmp_path / "none").exists()
    made = module.block("block", as_target(BLOCK, tmp_path / "new"))
    assert made["changes"] and (tmp_path / "new").stat().st_mode & 0o777 == 0o644


def test_takeover_and_give_back(tmp_path: Path) -> None:
    fstab = tmp_path / "fstab"
    fstab.write_text(FSTAB)
    module = files_module()
    assert module.commented("takeover", as_target(TAKEOVER, fstab))["changes"]
    assert f"\n{TAKEOVER.prefix}/dev/mapper/qubes_dom0-swap none swap" in fstab.read_text()
    assert module.commented("takeover", as_target(TAKEOVER, fstab), present=False)["changes"]
    assert fstab.read_text() == FSTAB


def test_an_unwritable_folder_fails_cleanly(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fstab = tmp_path / "fstab"
    fstab.write_text(FSTAB)
    module = files_module()

    def refuse(*_: object, **__: object) -> None:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(vm_initramfs.tempfile, "mkstemp", refuse)
    result = module.block("fstab block", as_target(BLOCK, fstab))
    assert result["result"] is False and "cannot write" in result["comment"] and result["changes"] == {}
    assert fstab.read_text() == FSTAB


def test_the_record_per_section(tmp_path: Path) -> None:
    record = tmp_path / "etc" / "applied.json"
    module = files_module()
    entry = MANIFEST.applied_entry("swap")
    assert module.recorded("swap", str(record), entry)["changes"]
    assert set(json.loads(record.read_text())["sections"]) == {"swap"}
    assert module.recorded("swap", str(record), entry)["changes"] == {}, "idempotent"
    assert module.recorded("scratch", str(record), MANIFEST.applied_entry("scratch"))["changes"]
    assert module.recorded("swap", str(record))["changes"]
    assert set(json.loads(record.read_text())["sections"]) == {"scratch"}
    assert module.recorded("scratch", str(record))["changes"] and not record.exists()
    record.write_text("{damaged")
    failed = module.recorded("swap", str(record), entry)
    assert failed["result"] is False and record.read_text() == "{damaged"


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(lines=st.lists(st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=30), max_size=8),
       final_newline=st.booleans())  # fmt: skip
def test_any_file_comes_back_exactly(tmp_path: Path, lines: list[str], final_newline: bool) -> None:
    text = "\n".join(line.replace("\n", " ") for line in lines) + ("\n" if final_newline and lines else "")
    path = tmp_path / "crypttab"
    path.write_bytes(text.encode("utf-8", "surrogateescape"))
    module = files_module()
    try:
        textedit.find_block(text, BLOCK)
    except ValueError:
        return  # a file that looks like our markers is refused, tested above
    module.block("b", as_target(BLOCK, path))
    module.block("b", as_target(BLOCK, path), present=False)
    assert path.read_bytes() == text.encode("utf-8", "surrogateescape")
    os.remove(path)

"""Golden files: rendering is deterministic and byte-stable.

Each case folder holds the input and `expected/`, the exact output of
`qubes-ephemeral render`. After an intended change, regenerate with
`UPDATE_GOLDEN=1 python -m pytest tests/test_golden.py` and review the diff.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from conftest import PILLAR_EXAMPLE, run_cli

GOLDEN = Path(__file__).parent / "golden"
CASES = {
    "pillar-example": PILLAR_EXAMPLE,
    "minimal": GOLDEN / "minimal" / "input.yaml",
    "rich": GOLDEN / "rich" / "input.yaml",
    # Every section stands alone.
    "swap-only": GOLDEN / "swap-only" / "input.yaml",
    "qubes-only": GOLDEN / "qubes-only" / "input.yaml",
    "traces-only": GOLDEN / "traces-only" / "input.yaml",
}


def tree(folder: Path) -> dict[str, tuple[bytes, int]]:
    return {
        str(path.relative_to(folder)): (path.read_bytes(), path.stat().st_mode & 0o777)
        for path in sorted(folder.rglob("*"))
        if path.is_file()
    }


@pytest.mark.parametrize("case", sorted(CASES))
def test_render_matches_golden(case: str, tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = run_cli("render", str(CASES[case]), "--out", str(out))
    assert result.status == 0, result.stderr
    expected = GOLDEN / case / "expected"
    if os.environ.get("UPDATE_GOLDEN"):
        shutil.rmtree(expected, ignore_errors=True)
        shutil.copytree(out, expected)
    assert tree(out) == tree(expected)


@pytest.mark.parametrize("case", sorted(CASES))
def test_render_is_byte_stable(case: str, tmp_path: Path) -> None:
    first, second = tmp_path / "a", tmp_path / "b"
    assert run_cli("render", str(CASES[case]), "--out", str(first)).status == 0
    assert run_cli("render", str(CASES[case]), "--out", str(second)).status == 0
    assert tree(first) == tree(second)

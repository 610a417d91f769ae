"""The documentation cannot drift from the schema."""

from __future__ import annotations

import re
from pathlib import Path

from conftest import PILLAR_EXAMPLE, ROOT, run_cli
from qubes_ephemeral.description import schema
from qubes_ephemeral.description.source import load_text

# Keys whose default is empty: pillar.example shows a use instead (its comment names the default).
EXAMPLES_NOT_DEFAULTS = {"ephemeral.qubes.disposable_templates"}


def test_pillar_example_lists_every_key_with_its_default() -> None:
    source = load_text(PILLAR_EXAMPLE.read_text())
    data = source.data["ephemeral"]  # type: ignore[index]
    for path, setting in schema.all_keys():
        node = data
        for part in path.split(".")[1:]:
            assert isinstance(node, dict) and part in node, f"pillar.example does not document {path}"
            node = node[part]
        if path in EXAMPLES_NOT_DEFAULTS:
            assert setting.parse(node), f"pillar.example shows an example for {path}"
        elif not setting.required:
            value = tuple(node) if isinstance(node, list) else node
            assert value == setting.default, (
                f"pillar.example shows {path}: {node!r}, the default is {setting.default!r}"
            )


def test_every_scratch_key_has_a_comment_above() -> None:
    lines = PILLAR_EXAMPLE.read_text().splitlines()
    source = load_text(PILLAR_EXAMPLE.read_text())
    for path, _ in schema.all_keys():
        if not path.startswith(
            ("ephemeral.scratch.", "ephemeral.activate", "ephemeral.qubes.", "ephemeral.traces.", "ephemeral.patches.")
        ):
            continue
        line = source.line(tuple(path.split(".")))
        assert line is not None
        assert lines[line - 2].strip().startswith("#"), f"{path} (line {line}) has no comment above it"


def test_readme_names_every_cli_command() -> None:
    readme = (ROOT / "README.md").read_text()
    for command in ("validate", "render", "diff", "schema"):
        assert re.search(rf"qubes-ephemeral {command}\b", readme), command


def test_readme_shows_what_the_audit_prints_for_its_recording(tmp_path: Path) -> None:
    readme = (ROOT / "README.md").read_text()
    shown = readme.split("$ sudo qubes-ephemeral audit\n", 1)[1].split("$ echo $?", 1)[0]
    pillar = tmp_path / "ephemeral.sls"
    # The VM suite's pillar: pillar.example with the journal in memory only.
    pillar.write_text(PILLAR_EXAMPLE.read_text().replace("journald: unchanged", "journald: volatile"))
    recording = ROOT / "tests" / "audit_recordings" / "after-reboot.json"
    result = run_cli("audit", str(pillar), "--replay", str(recording))
    assert result.status == 0
    assert result.stdout == shown

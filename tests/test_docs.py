"""The documentation cannot drift from the schema, the command or itself."""

from __future__ import annotations

import argparse
import dataclasses
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import PILLAR_EXAMPLE, ROOT, run_cli
from qubes_ephemeral import cli
from qubes_ephemeral.description import reference, schema
from qubes_ephemeral.description.source import load_text

DOCS = ROOT / "docs"

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


def test_dom0_guide_names_every_cli_command() -> None:
    guide = (DOCS / "dom0-guide.md").read_text()
    subparsers = [a for a in cli.parser()._actions if isinstance(a, argparse._SubParsersAction)]
    commands = list(subparsers[0].choices)
    assert set(commands) >= {"validate", "render", "diff", "audit", "schema", "reference", "applied"}
    for command in commands:
        assert re.search(rf"qubes-ephemeral {command}\b", guide), f"docs/dom0-guide.md does not name {command}"


def test_dom0_guide_shows_what_the_audit_prints_for_its_recording(tmp_path: Path) -> None:
    guide = (DOCS / "dom0-guide.md").read_text()
    shown = guide.split("$ sudo qubes-ephemeral audit\n", 1)[1].split("$ echo $?", 1)[0]
    pillar = tmp_path / "ephemeral.sls"
    # The VM suite's pillar: pillar.example with the journal in memory only.
    pillar.write_text(PILLAR_EXAMPLE.read_text().replace("journald: unchanged", "journald: volatile"))
    recording = ROOT / "tests" / "audit_recordings" / "after-reboot.json"
    result = run_cli("audit", str(pillar), "--replay", str(recording))
    assert result.status == 0
    assert result.stdout == shown


def test_configuration_reference_is_what_the_schema_gives() -> None:
    written = (DOCS / "configuration.md").read_text()
    assert written == reference.markdown(), (
        "docs/configuration.md differs from the schema; write it again: "
        "PYTHONPATH=generator python -m qubes_ephemeral reference > docs/configuration.md "
        f"(installed: {reference.COMMAND})"
    )


def test_reference_has_every_key_once() -> None:
    headings = re.findall(r"^### `([^`]+)`$", reference.markdown(), re.MULTILINE)
    assert headings == [path for path, _ in schema.all_keys()]


def test_reference_changes_with_the_schema() -> None:
    # The check above can fail: a schema with a changed default, meaning and
    # requirement, and one more section, gives another page that shows them.
    scratch = next(section for section in schema.SECTIONS if section.setting("name") is not None)
    name = scratch.setting("name")
    assert name is not None
    changed = dataclasses.replace(name, default="other-name", help="A changed meaning.")
    settings = tuple(changed if s is name else s for s in scratch.settings)
    extra = dataclasses.replace(
        scratch, key="extra", help="A section for the test.", settings=(dataclasses.replace(name, key="probe"),)
    )
    sections = (
        dataclasses.replace(scratch, settings=settings, required=not scratch.required),
        *schema.SECTIONS[1:],
        extra,
    )
    modified = reference.markdown(sections)
    assert modified != reference.markdown()
    assert "default `other-name`" in modified and "A changed meaning." in modified
    assert "### `ephemeral.extra.probe`" in modified
    assert ("Optional section." if scratch.required else "Required section.") in modified


def test_reference_is_what_the_command_prints() -> None:
    result = run_cli("reference")
    assert result.status == 0 and result.stderr == ""
    assert result.stdout == reference.markdown()


def test_readme_stays_short() -> None:
    lines = (ROOT / "README.md").read_text().splitlines()
    assert len(lines) < 200, f"README.md has {len(lines)} lines: move the detail into docs/"


def _relative_links(text: str) -> list[str]:
    # Inline links and images, outside code blocks and code spans.
    text = re.sub(r"^```.*?^```", "", text, flags=re.MULTILINE | re.DOTALL)
    text = re.sub(r"`[^`\n]*`", "", text)
    targets = re.findall(r"\]\(([^)\s]+)\)", text)
    return [t for t in targets if not re.match(r"[a-z][a-z0-9+.-]*:", t) and not t.startswith("#")]


def test_relative_links_point_at_files() -> None:
    pages = [ROOT / "README.md", ROOT / "CONTRIBUTING.md", ROOT / "CHANGELOG.md", *sorted(DOCS.glob("*.md"))]
    broken = []
    for page in pages:
        for target in _relative_links(page.read_text()):
            path = (page.parent / target.split("#", 1)[0]).resolve()
            if not path.exists() or not path.is_relative_to(ROOT):
                broken.append(f"{page.relative_to(ROOT)}: {target}")
    assert broken == []
    assert _relative_links("[a](docs/a.md) [b](https://x.org) [c](#here) `[d](no.md)` ![e](../e.png)") == [
        "docs/a.md",
        "../e.png",
    ]


def test_benchmark_writes_between_the_markers_of_its_page(tmp_path: Path) -> None:
    # bench/run.py writes its tables into docs/benchmarks.md (a full run): the
    # markers are there, and what it writes links the chart from that page.
    page = tmp_path / "benchmarks.md"
    page.write_text((DOCS / "benchmarks.md").read_text())
    code = "import sys; from pathlib import Path; import run; run.update_doc('TABLES', Path(sys.argv[1]))"
    env = {**os.environ, "PYTHONPATH": str(ROOT / "bench")}
    subprocess.run([sys.executable, "-c", code, str(page)], check=True, env=env, cwd=tmp_path)
    before, after = (DOCS / "benchmarks.md").read_text(), page.read_text()
    start, end = "<!-- BEGIN bench (written by scripts/bench; do not edit) -->", "<!-- END bench -->"
    assert before.count(start) == before.count(end) == 1
    assert after.split(start)[0] == before.split(start)[0] and after.split(end)[1] == before.split(end)[1]
    block = after.split(start)[1].split(end)[0]
    assert block.startswith("\nTABLES\n")
    chart = re.findall(r"!\[Benchmark chart\]\(([^)]+)\)", block)
    assert chart and (DOCS / chart[0]).resolve() == ROOT / "bench" / "results" / "latest.png"


@pytest.mark.parametrize(("page", "at_least"), [("dom0-guide.md", 20), ("design.md", 35), ("dom0-traces.md", 5)])
def test_every_test_the_docs_name_exists(page: str, at_least: int) -> None:
    """Each guarantee (dom0 guide) and safety rule (design) names the test that
    proves it: a renamed or removed test breaks this."""
    text = (ROOT / "docs" / page).read_text()
    named = set(re.findall(r"`((?:vm/)?test_[a-z0-9_]+\.py)::(test_[a-z0-9_]+)`", text))
    assert len(named) >= at_least
    for file, name in sorted(named):
        source = (ROOT / "tests" / file).read_text()
        assert re.search(rf"^def {name}\(", source, re.M), f"{file}::{name} is named in docs/{page} but missing"


def test_every_case_the_safety_rules_name_exists() -> None:
    """The validator's rules name cases of its parametrized test by id (or id prefix, ending in *)."""
    from test_validation import CASES

    section = (ROOT / "docs/design.md").read_text().split("| Rule | Enforced | Test |", 1)[1].split("\n\n", 1)[0]
    ids = [case[0] for case in CASES]
    for cases in re.findall(r"\(cases ([^)]*)\)", section):
        for named in re.findall(r"`([^`]+)`", cases):
            prefix = named.removesuffix("*")
            assert any(i == named or (named.endswith("*") and i.startswith(prefix)) for i in ids), named


def test_the_inventory_reports_exactly_the_audits_remnants() -> None:
    """docs/dom0-traces.md: each "reported" place names a kind the audit finds and clears, and
    every kind the audit has is in the inventory."""
    from qubes_ephemeral.dom0 import remnants

    text = (ROOT / "docs/dom0-traces.md").read_text()
    named = set(re.findall(r"reported(?:, [^:|]+)?: `([a-z-]+)`", text))
    assert named == set(remnants.BY_ID)
    readme = (ROOT / "README.md").read_text()
    assert "docs/dom0-traces.md" in readme and "--clear" in readme

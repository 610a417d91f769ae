"""The applied record: what an apply prunes and what a clean removes, per
section, whatever the pillar and the record say (dom0/applied.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import PILLAR_EXAMPLE
from hypothesis import given, settings
from hypothesis import strategies as st
from qubes_ephemeral.api import describe
from qubes_ephemeral.dom0 import applied
from qubes_ephemeral.render.artifacts import SECTIONS, Manifest
from qubes_ephemeral.render.manifest import render

FULL = render(describe(PILLAR_EXAMPLE.read_bytes()))


def record_of(manifest: Manifest, sections: list[str]) -> str | None:
    text = None
    for section in sections:
        text = applied.recorded(text, section, manifest.applied_entry(section))
    return text


def test_a_fresh_apply_prunes_nothing_and_cleans_what_it_names() -> None:
    data = FULL.as_dict()
    for section in FULL.sections:
        plan = applied.plan(data, None, section)
        assert plan["wanted"] and not plan["recorded"] and plan["prune"] == []
        # Undone in the reverse order of the apply.
        assert [a["id"] for a in plan["remove"]] == [a.id for a in FULL.artifacts if a.section == section][::-1]


def test_a_dropped_setting_is_pruned() -> None:
    without_journal = render(
        describe(PILLAR_EXAMPLE.read_bytes().replace(b"journald: unchanged", b"journald: volatile"))
    )
    record = record_of(without_journal, list(without_journal.sections))
    plan = applied.plan(FULL.as_dict(), record, "traces")
    assert [a["id"] for a in plan["prune"]] == ["journald-volatile"]
    assert plan["reload_on_apply"] is True


@settings(max_examples=60, deadline=None)
@given(applied_sections=st.lists(st.sampled_from(FULL.sections), unique=True, min_size=1),
       data=st.data())  # fmt: skip
def test_cleaning_every_recorded_section_leaves_nothing_and_a_partial_clean_keeps_what_others_use(
    applied_sections: list[str], data: st.DataObject
) -> None:
    record = record_of(FULL, applied_sections)
    cleaning = data.draw(st.lists(st.sampled_from(applied_sections), unique=True, min_size=1))
    removed = set()
    for section in cleaning:
        removed |= {a["target"] for a in applied.plan(FULL.as_dict(), record, section, cleaning)["remove"]}
    kept_sections = [s for s in applied_sections if s not in cleaning]
    still_recorded = {a.target for a in FULL.artifacts if a.section in kept_sections}
    for artifact in FULL.artifacts:
        if artifact.section in cleaning:
            whole = artifact.kind not in ("block", "comment-out")
            if whole and artifact.target in still_recorded:
                assert artifact.target not in removed, f"{artifact.target} is still used"
            else:
                assert artifact.target in removed, f"{artifact.target} left behind"


def test_the_record_round_trips_and_empties() -> None:
    record = record_of(FULL, list(FULL.sections))
    assert record is not None and set(applied.load(record)) == set(FULL.sections)
    for section in FULL.sections:
        record = applied.recorded(record, section, None)
    assert record is None


def test_a_format_1_record_is_the_legacy_section() -> None:
    old = {
        "format": 1,
        "artifacts": [{"kind": "file", "id": "guard-script", "target": "/usr/local/libexec/qubes-ephemeral/refuse-data",
                       "purpose": "", "mode": "0755"},
                      {"kind": "file", "id": "unit-format", "target": "/etc/systemd/system/qubes-ephemeral-format.service",
                       "purpose": "", "mode": "0644"}],
        "activation": {"scratch": {"mapping": "/dev/mapper/ephemeral"}},
    }  # fmt: skip
    plan = applied.plan(FULL.as_dict(), json.dumps(old), "legacy")
    # The format unit is still wanted (the scratch section writes it again); the old guard path is not.
    assert [a["id"] for a in plan["prune"]] == ["guard-script"]
    assert plan["prune"][0]["daemon_reload"] is False and plan["remove"][0]["daemon_reload"] is True
    assert applied.plan(FULL.as_dict(), json.dumps(old), "scratch")["activation"] == FULL.activation["scratch"]


@pytest.mark.parametrize("text", ["{", "[]", '{"format": 9}', '{"format": 2, "sections": {"swap": 3}}'])
def test_a_damaged_record_is_an_error_not_a_guess(text: str) -> None:
    with pytest.raises(applied.RecordError):
        applied.plan(FULL.as_dict(), text, "swap")


def test_sections_are_applied_in_one_order() -> None:
    assert FULL.sections == tuple(s for s in SECTIONS if s in FULL.sections)


def forged(target: str, kind: str = "file") -> str:
    artifact = {"kind": kind, "id": "x", "target": target, "purpose": "", "section": "swap"}
    return json.dumps({"format": 2, "sections": {"swap": {"artifacts": [artifact], "activation": None}}})


@pytest.mark.parametrize(("target", "kind"), [("/etc/passwd", "file"), ("/etc", "directory"),
                                              ("/etc/shadow", "block"), ("/etc/systemd/system/sshd.service", "file"),
                                              ("/usr/local/libexec/qubes-ephemeral/../../bin/x", "file"),
                                              ("/etc/crypttab", "unknown")])  # fmt: skip
def test_a_record_naming_what_is_not_ours_is_refused(target: str, kind: str) -> None:
    with pytest.raises(applied.RecordError):
        applied.plan(FULL.as_dict(), forged(target, kind), "swap")


def test_every_path_the_generator_uses_counts_as_ours() -> None:
    from qubes_ephemeral.render.manifest import render as render_

    rich = render_(describe((Path(__file__).parent / "golden/rich/input.yaml").read_bytes()))
    for artifact in [*FULL.artifacts, *rich.artifacts]:
        assert applied.ours(artifact.kind, artifact.target), artifact.target


def test_an_unknown_section_is_refused() -> None:
    with pytest.raises(applied.RecordError, match="unknown sections"):
        applied.load('{"format": 2, "sections": {"foo": {"artifacts": []}}}')


def test_clean_stops_the_recorded_units_and_apply_starts_the_pillars() -> None:
    renamed = render(describe(PILLAR_EXAMPLE.read_bytes().replace(b"    name: ephemeral\n", b"    name: other\n", 1)))
    record = record_of(FULL, ["scratch"])
    plan = applied.plan(renamed.as_dict(), record, "scratch")
    assert plan["clean_activation"] == FULL.activation["scratch"]
    assert plan["activation"] == renamed.activation["scratch"]


def test_a_takeover_of_another_device_is_a_change_not_the_same_lines() -> None:
    other = render(describe(PILLAR_EXAMPLE.read_bytes().replace(b"/dev/mapper/qubes_dom0-swap", b"/dev/vg/other")))
    plan = applied.plan(other.as_dict(), record_of(FULL, ["swap"]), "swap")
    assert [a["kind"] for a in plan["prune"] if a["kind"] == "comment-out"] == ["comment-out"]


def test_record_first_names_everything_an_apply_may_put_in_place() -> None:
    without_journal = render(
        describe(PILLAR_EXAMPLE.read_bytes().replace(b"journald: unchanged", b"journald: volatile"))
    )
    plan = applied.plan(FULL.as_dict(), record_of(without_journal, ["traces"]), "traces")
    first = {a["id"] for a in plan["record_first"]["artifacts"]}  # type: ignore[index]
    assert "journald-volatile" in first and {a.id for a in FULL.artifacts if a.section == "traces"} <= first


def test_scratch_alone_is_blocked_while_the_pool_on_it_is_applied() -> None:
    pool = render(describe(PILLAR_EXAMPLE.read_bytes().replace(b"    pool: null", b"    pool: ephemeral")))
    record = record_of(pool, ["scratch", "qubes"])
    assert "clean it first" in str(applied.plan(pool.as_dict(), record, "scratch", ["scratch"])["blocked"])
    assert applied.plan(pool.as_dict(), record, "scratch")["blocked"] is None, "applying it is fine"
    assert applied.plan(pool.as_dict(), record, "scratch", ["scratch", "qubes"])["blocked"] is None

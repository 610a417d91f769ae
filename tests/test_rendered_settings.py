"""What the rendered systemd files ask of systemd, read as systemd reads them: a
setting, not a byte (the golden renders compare bytes and would fail on any change;
these fail only when a protection is asked for no longer). The VM suite shows the
same settings at work across reboots."""

from __future__ import annotations

import configparser

from conftest import PILLAR_EXAMPLE
from qubes_ephemeral.api import describe
from qubes_ephemeral.render import naming
from qubes_ephemeral.render.artifacts import File, guard_path
from qubes_ephemeral.render.layout import JOURNALD_DROPIN
from qubes_ephemeral.render.manifest import render


def settings(text: str) -> configparser.RawConfigParser:
    parser = configparser.RawConfigParser(strict=False, interpolation=None, comment_prefixes=("#", ";"))
    parser.optionxform = str  # type: ignore[assignment,method-assign]  # systemd's keys are case-sensitive
    parser.read_string(text)
    return parser


def files(pillar: str) -> dict[str, str]:
    return {a.target: a.content for a in render(describe(pillar.encode())).artifacts if isinstance(a, File)}


def test_each_keying_unit_runs_its_guard_first_and_stops_when_it_refuses() -> None:
    """ExecStartPre= without a "-" prefix: a guard that refuses fails the keying unit,
    so the device is not keyed (systemd.service(5))."""
    rendered = files(PILLAR_EXAMPLE.read_text())
    for section, mapping in (("scratch", "ephemeral"), ("swap", "ephemeral-swap")):
        unit = naming.cryptsetup_unit(mapping)
        [dropin] = [text for target, text in rendered.items() if f"/{unit}.d/" in target and "ExecStartPre" in text]
        command = settings(dropin)["Service"]["ExecStartPre"].split()
        assert command[0] == guard_path(section), command
        assert guard_path(section) in rendered, "the guard itself is installed"


def test_the_journal_is_asked_to_stay_in_memory() -> None:
    rendered = files(PILLAR_EXAMPLE.read_text().replace("journald: unchanged", "journald: volatile"))
    assert settings(rendered[JOURNALD_DROPIN])["Journal"]["Storage"] == "volatile"
    unchanged = files(PILLAR_EXAMPLE.read_text())
    assert JOURNALD_DROPIN not in unchanged, "journald: unchanged leaves the journal as dom0 has it"

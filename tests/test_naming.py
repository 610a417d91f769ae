"""Unit names are escaped exactly as systemd-escape does it."""

from __future__ import annotations

import shutil
import subprocess

from conftest import require
from hypothesis import given, settings
from hypothesis import strategies as st
from qubes_ephemeral.description import values
from qubes_ephemeral.description.problems import Invalid
from qubes_ephemeral.render import naming

paths = st.lists(st.text(st.sampled_from("abz09-_.:@+=/x"), min_size=1, max_size=8), min_size=1, max_size=4)


def test_known_names() -> None:
    assert naming.mount_unit("/var/lib/qubes-ephemeral") == "var-lib-qubes\\x2dephemeral.mount"
    assert naming.cryptsetup_unit("ephemeral-swap") == "systemd-cryptsetup@ephemeral\\x2dswap.service"
    assert naming.swap_unit("/dev/mapper/ephemeral-swap") == "dev-mapper-ephemeral\\x2dswap.swap"
    assert naming.escape_path("/") == "-"


@settings(max_examples=60, deadline=None)
@given(paths)
def test_matches_systemd_escape(parts: list[str]) -> None:
    require("systemd-escape")
    escape = shutil.which("systemd-escape") or ""
    # Normalised paths only, as the validator guarantees for mount points.
    path = "/" + "/".join(part for p in parts for part in p.split("/") if part not in ("", ".", "..")) or "/x"
    expected = subprocess.run([escape, "--path", path], capture_output=True, text=True, check=True).stdout.strip()
    assert naming.escape_path(path) == expected
    name = parts[0].replace("/", "")
    if name and name not in (".", ".."):
        expected = subprocess.run([escape, "--", name], capture_output=True, text=True, check=True).stdout.strip()
        assert naming.escape(name) == expected


@given(st.from_regex(values.DM_NAME, fullmatch=True), st.from_regex(r"/mnt/[a-z-]{1,57}", fullmatch=True))
def test_every_accepted_name_makes_unit_names_systemd_takes(name: str, mountpoint: str) -> None:
    """systemd refuses a unit name over 255 characters: nothing we accept makes one."""
    try:
        values.mountpoint(mountpoint)
    except Invalid:
        return
    units = [naming.cryptsetup_unit(name), naming.swap_unit(naming.mapping(name)),
             naming.device_unit(naming.mapping(name)), naming.mount_unit(mountpoint)]  # fmt: skip
    assert max(map(len, units)) <= 255, units

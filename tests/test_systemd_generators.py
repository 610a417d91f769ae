"""What systemd makes of our crypttab and fstab lines at boot, by its own generators.

systemd-cryptsetup-generator and systemd-fstab-generator read the lines the
generator renders (SYSTEMD_CRYPTTAB, SYSTEMD_FSTAB point them at ours) and
write the units the boot runs. That each mapping is opened at every boot with
a fresh key from the kernel RNG, and the filesystem and swap brought up on it,
is read here from those units, not from our own reading of crypttab(5).
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from conftest import PILLAR_EXAMPLE
from qubes_ephemeral.api import describe
from qubes_ephemeral.render import naming
from qubes_ephemeral.render.manifest import crypttab_line, scratch_fstab_line

GENERATORS = Path("/lib/systemd/system-generators")
DESCRIPTION = describe(PILLAR_EXAMPLE.read_bytes())


def generate(tmp_path: Path, name: str, variable: str, text: str) -> Path:
    generator = GENERATORS / name
    if not generator.exists():
        (pytest.fail if os.environ.get("STRICT_TOOLS") == "1" else pytest.skip)(f"{generator} is missing (systemd)")
    table = tmp_path / f"{name}.table"
    table.write_text(text)
    out = tmp_path / name
    dirs = [out / "normal", out / "early", out / "late"]
    for folder in dirs:
        folder.mkdir(parents=True)
    env = {**os.environ, variable: str(table)}
    subprocess.run([str(generator), *map(str, dirs)], env=env, check=True, capture_output=True)
    return dirs[0]


def crypttab_units(tmp_path: Path, text: str) -> Path:
    return generate(tmp_path, "systemd-cryptsetup-generator", "SYSTEMD_CRYPTTAB", text)


def test_each_mapping_is_opened_at_every_boot_with_a_fresh_key_of_the_asked_size(tmp_path: Path) -> None:
    crypts = [DESCRIPTION.scratch, DESCRIPTION.swap]
    units = crypttab_units(tmp_path, "".join(crypttab_line(crypt) for crypt in crypts if crypt))
    for crypt in crypts:
        assert crypt is not None
        unit = naming.cryptsetup_unit(crypt.name)
        assert (units / "cryptsetup.target.wants" / unit).is_symlink(), f"{unit} is not started at boot"
        start = next(line for line in (units / unit).read_text().splitlines() if line.startswith("ExecStart="))
        assert f"'{crypt.name}' '{crypt.device.path}' '/dev/urandom' 'plain," in start, start
        assert f",size={crypt.key_size}," in start and crypt.key_size == 512, start


def test_a_line_systemd_does_not_open_at_boot_is_seen_as_such(tmp_path: Path) -> None:
    """The anti-test: the same check tells a line that is not opened at boot."""
    scratch = DESCRIPTION.scratch
    assert scratch is not None
    line = crypttab_line(scratch).replace(" plain,", " plain,noauto,")
    units = crypttab_units(tmp_path, line)
    assert not (units / "cryptsetup.target.wants" / naming.cryptsetup_unit(scratch.name)).exists()


def test_the_filesystem_is_mounted_from_the_mapping_at_boot(tmp_path: Path) -> None:
    # (The swap line: this machine's fstab generator writes no swap unit for it, outside a boot;
    # the VM suite shows the swap up on the mapping after a reboot.)
    scratch = DESCRIPTION.scratch
    assert scratch is not None
    units = generate(tmp_path, "systemd-fstab-generator", "SYSTEMD_FSTAB", scratch_fstab_line(scratch))
    mount = naming.mount_unit(scratch.mountpoint)
    assert (units / "local-fs.target.wants" / mount).is_symlink()
    assert f"What={naming.mapping(scratch.name)}" in (units / mount).read_text()

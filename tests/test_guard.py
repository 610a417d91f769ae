"""The boot-time guard refuses to key a device that holds data.

The rendered refuse-data script runs for real against image files: blkid
probes a regular file the same way as a block device.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from conftest import PILLAR_EXAMPLE, require
from qubes_ephemeral.api import describe
from qubes_ephemeral.render.artifacts import File, guard_path
from qubes_ephemeral.render.manifest import render


@pytest.fixture(autouse=True)
def tools() -> None:
    require("blkid", "mkfs.ext4", "mkswap", "sfdisk", "cryptsetup", "mkfs.xfs")


MiB = 1024 * 1024


@pytest.fixture
def guard(tmp_path: Path) -> Path:
    manifest = render(describe(PILLAR_EXAMPLE.read_bytes()))
    script = next(a for a in manifest.artifacts if isinstance(a, File) and a.target == guard_path("scratch"))
    path = tmp_path / "refuse-data"
    path.write_text(script.content)
    path.chmod(0o755)
    return path


def image(tmp_path: Path, name: str, *command: str, size: int = 512 * MiB) -> Path:
    """A sparse image that starts with noise, as a device we manage does."""
    path = tmp_path / name
    with path.open("wb") as handle:
        handle.write(os.urandom(4 * MiB))
        handle.truncate(size)
    if command:
        subprocess.run([*command, str(path)], check=True, capture_output=True)
    return path


def run(guard: Path, device: Path, *allow: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(guard), str(device), *allow], capture_output=True, text=True, check=False)


def test_noise_is_accepted(guard: Path, tmp_path: Path) -> None:
    assert run(guard, image(tmp_path, "noise")).returncode == 0


@pytest.mark.parametrize(
    ("name", "command"),
    [
        ("ext4", ["mkfs.ext4", "-q", "-F"]),
        ("xfs", ["mkfs.xfs", "-q", "-f"]),
        ("swap", ["mkswap"]),
        ("luks", ["cryptsetup", "luksFormat", "--batch-mode", "--type", "luks2", "--pbkdf", "pbkdf2",
                  "--pbkdf-force-iterations", "1000", "--key-file", "/etc/hostname"]),
    ],
)  # fmt: skip
def test_signatures_are_refused(guard: Path, tmp_path: Path, name: str, command: list[str]) -> None:
    result = run(guard, image(tmp_path, name, *command))
    assert result.returncode == 1
    assert "refusing to key" in result.stderr and "wipe_existing" in result.stderr


def test_partition_table_is_refused(guard: Path, tmp_path: Path) -> None:
    disk = image(tmp_path, "disk")
    subprocess.run(
        ["sfdisk", "--quiet", str(disk)], input="label: gpt\n,\n", text=True, check=True, capture_output=True
    )
    result = run(guard, disk)
    assert result.returncode == 1
    assert "PTTYPE" in result.stderr


def test_swap_takeover_accepts_only_swap(guard: Path, tmp_path: Path) -> None:
    assert run(guard, image(tmp_path, "swap", "mkswap"), "swap").returncode == 0
    assert run(guard, image(tmp_path, "ext4", "mkfs.ext4", "-q", "-F"), "swap").returncode == 1


def test_unreadable_device_is_refused(guard: Path, tmp_path: Path) -> None:
    result = run(guard, tmp_path / "missing")
    assert result.returncode == 1
    assert "cannot read" in result.stderr

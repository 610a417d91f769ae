"""The boot-time guard refuses to key a device that is someone's now or holds data.

The rendered refuse-data script runs for real against loop devices (images
attached with losetup): real major:minor numbers, real /sys holders and
partitions, real mounts and swaps. The names device-mapper gives a device
(an LVM layer, a qube's volume...) need device-mapper, which the VM suite
has: tests/vm/test_vm.py::test_the_boot_guard_refuses_what_is_someones_by_its_device_whatever_its_name.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from conftest import PILLAR_EXAMPLE, require
from qubes_ephemeral.api import describe
from qubes_ephemeral.render.artifacts import File, guard_path
from qubes_ephemeral.render.manifest import render


@pytest.fixture(autouse=True)
def tools() -> None:
    require("blkid", "mkfs.ext4", "mkswap", "sfdisk", "cryptsetup", "mkfs.xfs", "losetup")


@pytest.fixture
def attach() -> Iterator[Callable[..., Path]]:
    """Attaches an image as a loop device (``partitions``: scanned, losetup -P); detached after the test."""
    attached: list[str] = []

    def attach_(path: Path, partitions: bool = False) -> Path:
        result = subprocess.run(["losetup", "-f", "--show", *(["-P"] if partitions else []), str(path)],
                                capture_output=True, text=True, check=False)  # fmt: skip
        if result.returncode != 0:
            if os.environ.get("STRICT_TOOLS") == "1":
                pytest.fail(f"losetup: {result.stderr.strip()}")
            pytest.skip(f"no loop device here: {result.stderr.strip()}")
        attached.append(result.stdout.strip())
        return Path(attached[-1])

    yield attach_
    for device in reversed(attached):
        subprocess.run(["umount", device], capture_output=True, check=False)
        subprocess.run(["swapoff", device], capture_output=True, check=False)
        subprocess.run(["losetup", "-d", device], capture_output=True, check=False)


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


def test_noise_is_accepted(guard: Path, tmp_path: Path, attach) -> None:
    assert run(guard, attach(image(tmp_path, "noise"))).returncode == 0


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
def test_signatures_are_refused(guard: Path, tmp_path: Path, name: str, command: list[str], attach) -> None:
    device = attach(image(tmp_path, name, *command))
    result = run(guard, device)
    assert result.returncode == 1
    assert "refusing to key" in result.stderr and "wipe_existing" in result.stderr
    # wipe_existing lets what it holds pass: the data is destroyed on purpose.
    assert run(guard, device, "data").returncode == 0


def test_partition_table_is_refused(guard: Path, tmp_path: Path, attach) -> None:
    disk = image(tmp_path, "disk")
    subprocess.run(
        ["sfdisk", "--quiet", str(disk)], input="label: gpt\n,\n", text=True, check=True, capture_output=True
    )
    result = run(guard, attach(disk))
    assert result.returncode == 1
    assert "PTTYPE" in result.stderr


def test_a_disk_whose_partitions_the_kernel_sees_is_refused_whatever_is_allowed(
    guard: Path, tmp_path: Path, attach
) -> None:
    disk = image(tmp_path, "disk")
    subprocess.run(
        ["sfdisk", "--quiet", str(disk)], input="label: gpt\n,\n", text=True, check=True, capture_output=True
    )
    scanned = attach(disk, partitions=True)
    if not list(Path(f"/sys/class/block/{scanned.name}").glob("*/partition")):
        pytest.skip("this kernel shows no partitions of a loop device (the VM suite: a volume with a holder)")
    for allowed in ((), ("data",), ("swap,data",)):
        result = run(guard, scanned, *allowed)
        assert result.returncode == 1 and "something is built on it" in result.stderr, result.stderr


def test_a_device_something_is_built_on_is_refused_whatever_is_allowed(guard: Path, tmp_path: Path, attach) -> None:
    """A holder (an LVM volume, an encrypted mapping, an array built on the device), as the kernel
    lists it in /sys. device-mapper cannot run here: a private mount namespace shows one in the
    device's holders folder, and only there (the VM suite has real ones)."""
    require("unshare")
    device = attach(image(tmp_path, "held"))
    number = f"{os.major(device.stat().st_rdev)}:{os.minor(device.stat().st_rdev)}"
    holders = f"/sys/dev/block/{number}/holders"
    for allowed in ("", "data", "swap,data"):
        with_holder = f"mount -t tmpfs tmpfs {holders} && mkdir {holders}/dm-99 && exec {guard} {device} {allowed}"
        result = subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c", with_holder],
                                capture_output=True, text=True, check=False)  # fmt: skip
        assert result.returncode == 1 and "something is built on it" in result.stderr, result.stderr
        assert "holders/dm-99" in result.stderr
    # The anti-test: the same device, with no holder, passes.
    assert run(guard, device, "data").returncode == 0


def test_swap_takeover_accepts_only_swap(guard: Path, tmp_path: Path, attach) -> None:
    assert run(guard, attach(image(tmp_path, "swap", "mkswap")), "swap").returncode == 0
    assert run(guard, attach(image(tmp_path, "ext4", "mkfs.ext4", "-q", "-F")), "swap").returncode == 1


@pytest.mark.parametrize("name", ["missing", "a-file"])
def test_what_is_not_a_block_device_is_refused(guard: Path, tmp_path: Path, name: str) -> None:
    if name == "a-file":
        image(tmp_path, name)  # noise, but a file: keying it would attach a loop device to someone's file
    result = run(guard, tmp_path / name, "data")
    assert result.returncode == 1
    assert "not a block device" in result.stderr


def test_a_mounted_device_is_refused_whatever_is_allowed(guard: Path, tmp_path: Path, attach) -> None:
    device = attach(image(tmp_path, "ext4", "mkfs.ext4", "-q", "-F"))
    (tmp_path / "mnt").mkdir()
    subprocess.run(["mount", str(device), str(tmp_path / "mnt")], check=True)
    # By major:minor: another name of the same device (as /dev/block/MAJ:MIN or a by-* link) is refused alike.
    other_name = tmp_path / "other-name"
    rdev = device.stat().st_rdev
    subprocess.run(["mknod", str(other_name), "b", str(os.major(rdev)), str(os.minor(rdev))], check=True)
    for name in (device, other_name):
        for allowed in ((), ("data",), ("swap,data",)):
            result = run(guard, name, *allowed)
            assert result.returncode == 1 and "is mounted" in result.stderr, (name, allowed, result.stderr)


def test_an_active_swap_is_refused_but_the_one_taken_over(guard: Path, tmp_path: Path, attach) -> None:
    device = attach(image(tmp_path, "swap", "mkswap"))
    if subprocess.run(["swapon", str(device)], capture_output=True, check=False).returncode != 0:
        pytest.skip("cannot switch a swap on here")
    for allowed in ((), ("data",)):
        result = run(guard, device, *allowed)
        assert result.returncode == 1 and "is an active swap" in result.stderr, result.stderr
    # The persistent swap the description takes over: the apply switches it off next.
    assert run(guard, device, "swap").returncode == 0


def test_a_device_a_loop_device_reads_is_refused_whatever_is_allowed(guard: Path, tmp_path: Path, attach) -> None:
    """A loop device over it holds no claim the kernel shows as a holder: the guard asks the loop devices."""
    device = attach(image(tmp_path, "noise"))
    assert run(guard, device).returncode == 0
    attach(device)
    for allowed in ((), ("data",), ("swap,data",)):
        result = run(guard, device, *allowed)
        assert result.returncode == 1 and "backs a loop device" in result.stderr, result.stderr

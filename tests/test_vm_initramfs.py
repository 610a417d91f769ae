"""The dom0 tool that adds the /rw copy-on-write to VM kernels' initramfs.

Initramfs images are made here with GNU cpio and the real compressors, and
what the tool appends is read back with GNU cpio too, so the archive format
is checked by a tool other than ours. That a real kernel unpacks the
appended archive and runs the patched /init is proven in the VM suite.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest
from initramfs_fixtures import QUBES_LIKE_INIT, extract_with_gnu_cpio, make_initramfs
from qubes_ephemeral.payload import vm_initramfs


@pytest.mark.parametrize(("compress", "early"), [("gzip", False), ("zstd", False), ("xz", False), ("none", False),
                                                 ("gzip", True), ("zstd", True)])  # fmt: skip
def test_apply_appends_a_patched_init_and_keeps_every_original_byte(tmp_path: Path, compress: str, early: bool) -> None:
    original = make_initramfs(compress=compress, early=early, tmp=tmp_path)
    path = tmp_path / "initramfs"
    path.write_bytes(original)
    path.chmod(0o644)
    assert vm_initramfs.status(path) == "unpatched"
    assert vm_initramfs.apply(path, b"# the hook\n") is True
    data = path.read_bytes()
    assert data[: len(original)] == original, "the original bytes stay untouched at the start"
    assert len(data) % 512 == 0 and (path.stat().st_mode & 0o777) == 0o644
    start = (len(original) + 3) & ~3  # the kernel reads an uncompressed archive at a 4-byte boundary
    assert not any(data[len(original) : start])
    files = extract_with_gnu_cpio(data[start:], tmp_path / "appended")
    assert files["qubes-ephemeral-private-cow.sh"] == b"# the hook\n"
    init = files["init"].decode()
    lines = init.splitlines()
    anchor = lines.index("    mount /dev/mapper/dmroot /sysroot -o rw")
    assert "qe_private_cow_setup" in lines[anchor - 1] and lines[anchor - 1].startswith("    ")
    assert "qe_private_cow_fstab /sysroot" in lines[anchor + 1]
    assert init.replace(lines[anchor - 1] + "\n", "").replace(lines[anchor + 1] + "\n", "") == QUBES_LIKE_INIT
    marker = files["qubes-ephemeral-patch.json"].decode()
    assert hashlib.sha256(original).hexdigest() in marker and f'"original_size": {len(original)}' in marker
    # Read back through the tool: the last /init wins, as in the kernel.
    assert vm_initramfs.read_file(data, "init").data.decode() == init  # type: ignore[union-attr]
    assert vm_initramfs.status(path) == "patched"


def test_apply_twice_changes_nothing_and_revert_restores_the_exact_bytes(tmp_path: Path) -> None:
    original = make_initramfs(tmp=tmp_path)
    path = tmp_path / "initramfs"
    path.write_bytes(original)
    vm_initramfs.apply(path, b"# hook\n")
    once = path.read_bytes()
    assert vm_initramfs.apply(path, b"# hook\n") is False
    assert path.read_bytes() == once
    assert vm_initramfs.revert(path) is True
    assert path.read_bytes() == original
    assert vm_initramfs.revert(path) is False
    assert vm_initramfs.status(path) == "unpatched"


def test_a_kernel_package_update_that_replaces_the_file_is_patched_again(tmp_path: Path) -> None:
    path = tmp_path / "initramfs"
    path.write_bytes(make_initramfs(tmp=tmp_path))
    vm_initramfs.apply(path, b"# hook\n")
    replaced = make_initramfs(init=QUBES_LIKE_INIT + "# release 2\n", tmp=tmp_path)
    path.write_bytes(replaced)  # as rpm does: a new, unpatched file
    assert vm_initramfs.status(path) == "unpatched"
    assert vm_initramfs.apply(path, b"# hook\n") is True
    assert path.read_bytes()[: len(replaced)] == replaced


def test_an_init_without_the_anchor_is_refused_and_left_alone(tmp_path: Path) -> None:
    path = tmp_path / "initramfs"
    other = QUBES_LIKE_INIT.replace(
        "mount /dev/mapper/dmroot /sysroot -o rw", "mount -o rw /dev/mapper/dmroot /sysroot"
    )
    path.write_bytes(make_initramfs(init=other, tmp=tmp_path))
    before = path.read_bytes()
    with pytest.raises(vm_initramfs.PatchError, match="0 lines 'mount /dev/mapper/dmroot /sysroot -o rw'"):
        vm_initramfs.apply(path, b"# hook\n")
    assert path.read_bytes() == before
    assert list(tmp_path.glob(".initramfs.*")) == [], "no temporary file left behind"


def test_an_initramfs_that_is_not_a_qubes_vm_one_is_skipped(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    kernels = tmp_path / "vm-kernels"
    (kernels / "pvgrub2").mkdir(parents=True)
    (kernels / "pvgrub2" / "initramfs").write_bytes(make_initramfs(init="#!/bin/sh\nexec /sbin/init\n", tmp=tmp_path))
    (kernels / "6.6.1").mkdir()
    (kernels / "6.6.1" / "initramfs").write_bytes(make_initramfs(tmp=tmp_path))
    (kernels / "6.7.0").mkdir()  # a kernel package still being installed: no initramfs yet
    hook = tmp_path / "hook.sh"
    hook.write_text("# hook\n")
    pvgrub = (kernels / "pvgrub2" / "initramfs").read_bytes()
    assert vm_initramfs.main(["status", "--kernels-dir", str(kernels), "-q"]) == 1
    assert vm_initramfs.main(["apply", "--kernels-dir", str(kernels), "--hook", str(hook)]) == 0
    assert vm_initramfs.status(kernels / "6.6.1" / "initramfs") == "patched"
    assert (kernels / "pvgrub2" / "initramfs").read_bytes() == pvgrub
    assert vm_initramfs.main(["status", "--kernels-dir", str(kernels), "-q"]) == 0
    # What clean asks before it reverts: is any kernel still patched?
    assert vm_initramfs.main(["status", "--kernels-dir", str(kernels), "-q", "--want", "unpatched"]) == 1
    # Again (as at every boot): nothing to do, nothing written, nothing said.
    patched = (kernels / "6.6.1" / "initramfs").stat()
    capsys.readouterr()
    assert vm_initramfs.main(["apply", "--kernels-dir", str(kernels), "--hook", str(hook)]) == 0
    assert capsys.readouterr() == ("", "")
    again = (kernels / "6.6.1" / "initramfs").stat()
    assert (again.st_ino, again.st_mtime_ns) == (patched.st_ino, patched.st_mtime_ns)
    assert vm_initramfs.main(["revert", "--kernels-dir", str(kernels)]) == 0
    assert vm_initramfs.status(kernels / "6.6.1" / "initramfs") == "unpatched"
    assert vm_initramfs.main(["status", "--kernels-dir", str(kernels), "-q", "--want", "unpatched"]) == 0


def test_a_marker_over_changed_bytes_is_an_error_not_a_patch(tmp_path: Path) -> None:
    path = tmp_path / "initramfs"
    path.write_bytes(make_initramfs(tmp=tmp_path))
    vm_initramfs.apply(path, b"# hook\n")
    data = bytearray(path.read_bytes())
    data[20] ^= 0xFF
    path.write_bytes(bytes(data))
    assert vm_initramfs.status(path).startswith("error: ")
    with pytest.raises(vm_initramfs.PatchError, match="original part was changed"):
        vm_initramfs.revert(path)
    assert path.read_bytes() == bytes(data)


# --- replace_atomically: every write of ours (VM initramfs, crypttab, fstab, the record) ---


def test_a_replace_keeps_mode_owner_and_label(tmp_path: Path) -> None:
    target = tmp_path / "fstab"
    target.write_bytes(b"old\r\n")
    os.chmod(target, 0o640)
    os.chown(target, 12, 34)
    try:
        os.setxattr(target, vm_initramfs.SELINUX_LABEL, b"system_u:object_r:etc_t:s0\0")
    except OSError:
        labelled = False  # no security.* xattrs here
    else:
        labelled = True
    vm_initramfs.replace_atomically(target, b"new")
    assert target.read_bytes() == b"new"
    info = target.stat()
    assert (info.st_mode & 0o7777, info.st_uid, info.st_gid) == (0o640, 12, 34)
    if labelled:
        assert os.getxattr(target, vm_initramfs.SELINUX_LABEL) == b"system_u:object_r:etc_t:s0\0"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fstab"], "no temporary file left"


def test_a_missing_file_is_made_only_when_asked(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        vm_initramfs.replace_atomically(tmp_path / "crypttab", b"x")
    vm_initramfs.replace_atomically(tmp_path / "crypttab", b"x", mode_if_new=0o644)
    assert (tmp_path / "crypttab").stat().st_mode & 0o7777 == 0o644


def test_what_a_killed_write_left_goes_with_the_next_write_and_nothing_else(tmp_path: Path) -> None:
    target = tmp_path / "fstab"
    target.write_bytes(b"old")
    killed = tmp_path / ".fstab.qubes-ephemeral.ab_12xyz"  # mkstemp's name, as a kill before the rename leaves it
    killed.write_bytes(b"half")
    others = [tmp_path / ".fstab.qubes-ephemeral.toolongname", tmp_path / ".crypttab.qubes-ephemeral.ab_12xyz",
              tmp_path / "fstab.qubes-ephemeral.ab_12xyz"]  # fmt: skip
    for other in others:
        other.write_bytes(b"not ours to remove")
    assert vm_initramfs.temporaries(target) == [killed]
    vm_initramfs.replace_atomically(target, b"new")
    assert not killed.exists() and all(other.exists() for other in others)

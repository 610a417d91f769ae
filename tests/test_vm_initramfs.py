"""The dom0 tool that adds the /rw copy-on-write to VM kernels' initramfs.

Initramfs images are made here with GNU cpio and the real compressors, and
what the tool appends is read back with GNU cpio too, so the archive format
is checked by a tool other than ours. That a real kernel unpacks the
appended archive and runs the patched /init is proven in the VM suite.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest
from initramfs_fixtures import QUBES_LIKE_INIT, extract_with_gnu_cpio, make_initramfs
from qubes_ephemeral.payload import vm_initramfs


@pytest.fixture(autouse=True)
def record_in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """main() records what it found; never into the real /run."""
    record = tmp_path / "run" / "vm-kernels.json"
    monkeypatch.setattr(vm_initramfs, "STATUS_RECORD", record)
    return record


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


# --- the record main() writes for the qubesd extension ---


def kernels_folder(tmp_path: Path) -> tuple[Path, Path]:
    """A kernels folder: a Qubes VM kernel, pvgrub2 (not a Qubes VM one) and a kernel
    still being installed (no initramfs); and the hook."""
    kernels = tmp_path / "vm-kernels"
    for name in ("6.6.1", "pvgrub2", "6.7.0"):
        (kernels / name).mkdir(parents=True)
    (kernels / "6.6.1" / "initramfs").write_bytes(make_initramfs(tmp=tmp_path))
    (kernels / "pvgrub2" / "initramfs").write_bytes(make_initramfs(init="#!/bin/sh\nexec /sbin/init\n", tmp=tmp_path))
    hook = tmp_path / "hook.sh"
    hook.write_text("# hook\n")
    return kernels, hook


def recorded(record: Path) -> dict[str, dict[str, object]]:
    entries: dict[str, dict[str, object]] = json.loads(record.read_text())
    return entries


def entry(path: Path) -> dict[str, object]:
    """What the record must say of ``path``: its key now and its state."""
    return {"key": list(vm_initramfs.file_key(path.stat())), "state": vm_initramfs.status(path)}


def test_main_records_each_file_it_read_with_the_key_of_the_bytes_it_read(tmp_path: Path) -> None:
    kernels, hook = kernels_folder(tmp_path)
    record = tmp_path / "run" / "qubes-ephemeral" / "vm-kernels.json"
    qubes, pvgrub = kernels / "6.6.1" / "initramfs", kernels / "pvgrub2" / "initramfs"
    options = ["--kernels-dir", str(kernels), "--record", str(record)]
    assert vm_initramfs.main(["status", "-q", *options]) == 1
    assert recorded(record) == {str(qubes): entry(qubes), str(pvgrub): entry(pvgrub)}, "no entry without a file"
    assert recorded(record)[str(qubes)]["state"] == "unpatched"
    assert record.stat().st_mode & 0o7777 == 0o644 and record.parent.stat().st_mode & 0o7777 == 0o755
    before = qubes.stat().st_ino
    assert vm_initramfs.main(["apply", "--hook", str(hook), *options]) == 0
    assert qubes.stat().st_ino != before, "a new file: the key recorded must be its own"
    assert recorded(record) == {str(qubes): entry(qubes), str(pvgrub): entry(pvgrub)}
    assert recorded(record)[str(qubes)]["state"] == "patched"
    assert vm_initramfs.main(["revert", *options]) == 0
    assert recorded(record) == {str(qubes): entry(qubes), str(pvgrub): entry(pvgrub)}
    assert recorded(record)[str(qubes)]["state"] == "unpatched"
    assert sorted(p.name for p in record.parent.iterdir()) == ["vm-kernels.json"], "no temporary file left"


def test_the_record_keeps_other_files_still_there_and_forgets_those_gone(tmp_path: Path) -> None:
    kernels, hook = kernels_folder(tmp_path)
    record = tmp_path / "vm-kernels.json"
    qubes, pvgrub = kernels / "6.6.1" / "initramfs", kernels / "pvgrub2" / "initramfs"
    gone = tmp_path / "gone" / "initramfs"
    record.write_text(json.dumps({str(gone): {"key": [1, 2, 3, 4, 5], "state": "patched"}}))
    assert vm_initramfs.main(["apply", str(qubes), "--hook", str(hook), "--record", str(record)]) == 0
    assert vm_initramfs.main(["status", str(pvgrub), "--record", str(record)]) == 0
    assert recorded(record) == {str(qubes): entry(qubes), str(pvgrub): entry(pvgrub)}
    qubes.unlink()  # a file main handles, now missing: its entry goes
    assert vm_initramfs.main(["status", str(qubes), "--record", str(record)]) == 0
    assert recorded(record) == {str(pvgrub): entry(pvgrub)}
    record.write_text("not json")  # one it cannot read is written anew
    assert vm_initramfs.main(["status", str(pvgrub), "--record", str(record), "-q"]) == 0
    assert recorded(record) == {str(pvgrub): entry(pvgrub)}


def test_a_file_that_changed_while_it_was_read_is_left_out_of_the_record(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    kernels, _ = kernels_folder(tmp_path)
    qubes = kernels / "6.6.1" / "initramfs"
    real_fstat = os.fstat
    calls = []

    def fstat_then_write(fd: int) -> os.stat_result:
        calls.append(fd)
        info = real_fstat(fd)
        if len(calls) == 1:  # between the first fstat and the read: a writer appends
            with qubes.open("ab") as out:
                out.write(b"\0" * 512)
        return info

    monkeypatch.setattr(vm_initramfs.os, "fstat", fstat_then_write)
    reading = vm_initramfs.read_keyed(qubes)
    assert reading.key is None and len(reading.data) == qubes.stat().st_size
    calls.clear()
    record = tmp_path / "vm-kernels.json"
    assert vm_initramfs.main(["status", str(qubes), "--record", str(record)]) == 1
    assert recorded(record) == {}, "its state may be of torn bytes: no key is recorded for it"
    calls.clear()
    with pytest.raises(vm_initramfs.PatchError, match="changed while it was read"):
        vm_initramfs.apply(qubes, b"# hook\n")  # torn bytes never become the original part


def test_a_record_that_cannot_be_written_is_said_once_and_changes_no_exit_status(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    kernels, hook = kernels_folder(tmp_path)
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    options = ["--kernels-dir", str(kernels), "--record", str(blocker / "vm-kernels.json")]
    assert vm_initramfs.main(["apply", "--hook", str(hook), *options]) == 0
    assert vm_initramfs.status(kernels / "6.6.1" / "initramfs") == "patched"
    assert vm_initramfs.main(["status", "-q", *options]) == 0
    err = capsys.readouterr().err
    assert err.count("\n") == 2 and err.startswith("vm-initramfs: cannot write the record ")


def test_the_default_record_is_where_qubesd_looks(record_in_tmp: Path, tmp_path: Path) -> None:
    kernels, _ = kernels_folder(tmp_path)
    assert vm_initramfs.main(["status", "-q", "--kernels-dir", str(kernels)]) == 1
    assert len(recorded(record_in_tmp)) == 2


def test_a_record_we_did_not_write_gives_no_entry() -> None:
    good = {"key": [1, 2, 3, 4, 5], "state": "patched"}
    odd = [None, [], "x", {"key": [1, 2, 3, 4], "state": "patched"}, {"key": [1, 2, 3, 4, True], "state": "patched"},
           {"key": [1, 2, 3, 4, 5.0], "state": "patched"}, {"key": [1, 2, 3, 4, 5], "state": 1},
           {"key": "12345", "state": ""}, {"state": "patched"}, {"key": [1, 2, 3, 4, 5, 6], "state": "patched"}]  # fmt: skip
    assert vm_initramfs.parse_record(json.dumps({"/a": good, **{f"/{n}": e for n, e in enumerate(odd)}})) == {
        "/a": ((1, 2, 3, 4, 5), "patched")
    }
    for text in ("", "not json", "[]", "5", "null", '"x"', "[" * 100_000, b"\xff\xfe"):
        assert vm_initramfs.parse_record(text) == {}


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


def test_a_damaged_kernel_is_an_error_state_and_the_others_are_still_recorded(
    tmp_path: Path, record_in_tmp: Path
) -> None:
    """A marker that is no JSON object (AttributeError deep in find_patch) ends neither the run nor the record."""
    kernels, _ = kernels_folder(tmp_path)
    damaged = kernels / "6.7.0" / "initramfs"
    marker = vm_initramfs.Entry(vm_initramfs.MARKER_NAME, vm_initramfs.S_IFREG | 0o644, b"[]")
    damaged.write_bytes(vm_initramfs.append_archive(make_initramfs(tmp=tmp_path), [marker]))
    assert vm_initramfs.status(damaged).startswith("error: AttributeError")
    assert vm_initramfs.main(["status", "-q", "--kernels-dir", str(kernels)]) == 2
    assert recorded(record_in_tmp) == {str(p): entry(p) for p in (kernels / "6.6.1" / "initramfs", damaged,
                                                                   kernels / "pvgrub2" / "initramfs")}  # fmt: skip


def test_a_status_run_by_a_user_writes_no_record(
    tmp_path: Path, record_in_tmp: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    kernels, _ = kernels_folder(tmp_path)
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    assert vm_initramfs.main(["status", "-q", "--kernels-dir", str(kernels)]) == 1
    assert not record_in_tmp.exists() and capsys.readouterr().err == ""
    monkeypatch.setattr(os, "geteuid", lambda: 0)  # the anti-test: root's run records
    assert vm_initramfs.main(["status", "-q", "--kernels-dir", str(kernels)]) == 1
    assert len(recorded(record_in_tmp)) == 2

"""The formula against dom0 files as they are found in the wild, and against
what stands in the way, in the Salt sandbox (real salt-call, real formula).

Each case either converges (apply, re-apply with zero changes, clean gives
every byte back) or is refused by the preflight (qubes_ephemeral.dom0.preflight)
before anything changed: the files byte-identical, no record, no unit touched.
"""

from __future__ import annotations

import base64
import os
from pathlib import Path

import pytest
import yaml
from conftest import PILLAR_EXAMPLE
from qubes_ephemeral.render.artifacts import REPLACED_PREFIX, marker_end, marker_start
from salt_sandbox import Sandbox, available
from test_formula import DOM0_CRYPTTAB, DOM0_FSTAB, changed, failed

pytestmark = pytest.mark.salt

RECORD = "/etc/qubes-ephemeral/applied.json"
SWAP_LINE = "/dev/mapper/qubes_dom0-swap none                    swap    defaults,x-systemd.device-timeout=0 0 0\n"


def files_pillar() -> str:
    """pillar.example's scratch, swap (taking over the persistent swap line) and traces."""
    data = yaml.safe_load(PILLAR_EXAMPLE.read_text())
    for section in ("qubes", "patches"):
        data["ephemeral"].pop(section)
    return yaml.safe_dump(data)


@pytest.fixture
def box(tmp_path: Path) -> Sandbox:
    why = available()
    if why:
        if os.environ.get("STRICT_TOOLS") == "1":
            pytest.fail(why)
        pytest.skip(why)
    return Sandbox(tmp_path / "sandbox", files_pillar())


def raw(box: Sandbox, path: str) -> bytes | None:
    """The file's bytes (the sandbox's text reads would fold line endings)."""
    result = box.shell(f"base64 -w0 < '{path}'")
    return base64.b64decode(result.stdout) if result.returncode == 0 else None


def put_bytes(box: Sandbox, path: str, data: bytes) -> None:
    staged = box.folder / "staged.bin"
    staged.write_bytes(data)
    result = box.shell(f"mkdir -p \"$(dirname '{path}')\" && cp '{staged}' '{path}'")
    assert result.returncode == 0, result.stderr


def converges(box: Sandbox, originals: dict[str, bytes | None]) -> None:
    """Apply, apply again (zero changes), clean: every original byte back."""
    status, first = box.apply()
    assert status == 0, failed(first)
    status, again = box.apply()
    assert status == 0 and changed(again) == {}, changed(again)
    status, clean = box.apply("ephemeral.clean")
    assert status == 0, failed(clean)
    for path, data in originals.items():
        assert raw(box, path) == data, path
    assert not box.exists(RECORD)


def refused(box: Sandbox, originals: dict[str, bytes | None], *reasons: str, before: str = "") -> None:
    """Refused by the preflight, for every reason given, and nothing changed."""
    for test in (True, False):  # test=True predicts the refusal
        status, states = box.apply(test=test, before=before)
        assert status != 0
        message = "\n".join(failed(states))
        assert "nothing was changed" in message, message
        for reason in reasons:
            assert reason in message, message
        assert changed(states) == {}, changed(states)
    for path, data in originals.items():
        assert raw(box, path) == data, path
    assert not box.exists(RECORD) and box.systemctl_calls() == []


@pytest.mark.parametrize("shape", ["crlf", "no-final-newline", "tabs-and-lookalike-comments"])
def test_odd_line_shapes_converge_byte_for_byte(box: Sandbox, shape: str) -> None:
    crypttab, fstab = DOM0_CRYPTTAB.encode(), DOM0_FSTAB.encode()
    if shape == "crlf":
        crypttab, fstab = crypttab.replace(b"\n", b"\r\n"), fstab.replace(b"\n", b"\r\n") + b"\r\n"
    elif shape == "no-final-newline":
        crypttab = crypttab.rstrip(b"\n")
    else:
        lookalike = b"# BEGIN qubes-ephemeral is a tool I might try\n#\tEND qubes-ephemeral\n"
        crypttab = lookalike + crypttab.replace(b" ", b"\t")
        fstab = lookalike + fstab.replace(b"    ", b"\t")
    put_bytes(box, "/etc/crypttab", crypttab)
    put_bytes(box, "/etc/fstab", fstab)
    status, states = box.apply()
    assert status == 0, failed(states)
    # The persistent swap line is taken over whatever its line ending: never two claims.
    taken = raw(box, "/etc/fstab") or b""
    assert (REPLACED_PREFIX + "/dev/mapper/qubes_dom0-swap none").encode() in taken
    converges(box, {"/etc/crypttab": crypttab, "/etc/fstab": fstab})


def test_a_symlinked_crypttab_is_edited_through_the_link(box: Sandbox) -> None:
    box.put("/etc/crypttab.real", DOM0_CRYPTTAB)
    assert box.shell("ln -s crypttab.real /etc/crypttab").returncode == 0
    box.put("/etc/fstab", DOM0_FSTAB)
    status, states = box.apply()
    assert status == 0, failed(states)
    assert box.shell("readlink /etc/crypttab").stdout.strip() == "crypttab.real"
    assert "BEGIN qubes-ephemeral" in (box.read("/etc/crypttab.real") or "")
    box.apply("ephemeral.clean")
    converges(box, {"/etc/crypttab.real": DOM0_CRYPTTAB.encode(), "/etc/fstab": DOM0_FSTAB.encode()})
    assert box.shell("readlink /etc/crypttab").stdout.strip() == "crypttab.real"


def test_a_crypttab_we_made_goes_with_the_clean(box: Sandbox) -> None:
    box.shell("rm -f /etc/crypttab")
    box.put("/etc/fstab", DOM0_FSTAB)
    status, states = box.apply()
    assert status == 0, failed(states)
    assert "BEGIN qubes-ephemeral" in (box.read("/etc/crypttab") or "")
    # One section cleaned first, the other last: the last clean removes the file.
    status, states = box.apply("ephemeral.scratch.clean")
    assert status == 0, failed(states)
    assert box.exists("/etc/crypttab")
    status, states = box.apply("ephemeral.clean")
    assert status == 0, failed(states)
    assert not box.exists("/etc/crypttab"), "clean left an empty crypttab that was not there before"
    assert raw(box, "/etc/fstab") == DOM0_FSTAB.encode()


def test_an_empty_crypttab_stays_empty(box: Sandbox) -> None:
    box.put("/etc/crypttab", "")
    box.put("/etc/fstab", DOM0_FSTAB)
    converges(box, {"/etc/crypttab": b"", "/etc/fstab": DOM0_FSTAB.encode()})


def test_a_block_between_our_markers_that_no_apply_recorded_is_left_alone(box: Sandbox) -> None:
    foreign = f"{marker_start('scratch')}\nsomeone-elses /dev/sdz none luks\n{marker_end('scratch')}\n" + DOM0_CRYPTTAB
    box.put("/etc/crypttab", foreign)
    box.put("/etc/fstab", DOM0_FSTAB)
    refused(box, {"/etc/crypttab": foreign.encode(), "/etc/fstab": DOM0_FSTAB.encode()},
            "no apply of qubes-ephemeral recorded")  # fmt: skip


def test_a_lone_marker_is_refused_before_any_change(box: Sandbox) -> None:
    damaged = DOM0_FSTAB + "\n" + marker_start("swap") + "\n"
    box.put("/etc/crypttab", DOM0_CRYPTTAB)
    box.put("/etc/fstab", damaged)
    refused(box, {"/etc/crypttab": DOM0_CRYPTTAB.encode(), "/etc/fstab": damaged.encode()}, "markers", "damaged")


@pytest.mark.parametrize("how", ["read-only", "immutable"])
def test_a_file_that_cannot_be_written_is_refused_before_any_change(box: Sandbox, how: str) -> None:
    box.put("/etc/crypttab", DOM0_CRYPTTAB)
    box.put("/etc/fstab", DOM0_FSTAB)
    if how == "read-only":
        lock, reason = "mount --bind /etc/fstab /etc/fstab && mount -o remount,bind,ro /etc/fstab", "read-only"
    else:
        if box.shell("chattr +i /etc/fstab && chattr -i /etc/fstab").returncode != 0:
            pytest.skip("this filesystem has no immutable flag")
        box.shell("chattr +i /etc/fstab")
        lock, reason = "true", "immutable"
    refused(box, {"/etc/crypttab": DOM0_CRYPTTAB.encode(), "/etc/fstab": DOM0_FSTAB.encode()},
            f"cannot change /etc/fstab: /etc/fstab is {reason}" if how == "immutable" else reason, before=lock)  # fmt: skip
    box.shell("chattr -i /etc/fstab")


# The persistent swap on /dev/mapper/qubes_dom0-swap, named as fstab allows.
# The device is a real block device node here (a loop device's major:minor).
ALIASES = {
    "UUID": ("UUID=2f1c0e7a-0b1d-4c55-9a7e-1d2a3b4c5d6e", "/dev/disk/by-uuid/2f1c0e7a-0b1d-4c55-9a7e-1d2a3b4c5d6e"),
    "LABEL": ("LABEL=dom0swap", "/dev/disk/by-label/dom0swap"),
    "PARTUUID": ("PARTUUID=0c3a-02", "/dev/disk/by-partuuid/0c3a-02"),
    "dm-N": ("/dev/dm-7", None),
}


def test_a_swap_named_by_a_name_of_its_volume_is_taken_over(box: Sandbox) -> None:
    """udev's names of an LVM volume are the description's aliases: one claim."""
    line = "/dev/disk/by-id/dm-name-qubes_dom0-swap\tnone swap defaults 0 0\n"
    fstab = DOM0_FSTAB.replace(SWAP_LINE, line)
    box.put("/etc/crypttab", DOM0_CRYPTTAB)
    box.put("/etc/fstab", fstab)
    status, states = box.apply()
    assert status == 0, failed(states)
    assert REPLACED_PREFIX + line in (box.read("/etc/fstab") or "")
    converges(box, {"/etc/crypttab": DOM0_CRYPTTAB.encode(), "/etc/fstab": fstab.encode()})


@pytest.mark.parametrize("name", sorted(ALIASES))
def test_a_swap_named_another_way_is_refused_not_claimed_twice(box: Sandbox, name: str) -> None:
    spec, link = ALIASES[name]
    made = ["mkdir -p /dev/mapper /dev/disk/by-uuid /dev/disk/by-label /dev/disk/by-partuuid /dev/disk/by-id",
            "rm -f /dev/mapper/qubes_dom0-swap /dev/dm-7", "mknod /dev/dm-7 b 7 200",
            "ln -s ../dm-7 /dev/mapper/qubes_dom0-swap"]  # fmt: skip
    if link:
        made.append(f"ln -sf ../../dm-7 {link}")
    assert box.shell(" && ".join(made)).returncode == 0
    fstab = DOM0_FSTAB.replace(SWAP_LINE, f"{spec} none swap defaults 0 0\n")
    box.put("/etc/crypttab", DOM0_CRYPTTAB)
    box.put("/etc/fstab", fstab)
    refused(box, {"/etc/crypttab": DOM0_CRYPTTAB.encode(), "/etc/fstab": fstab.encode()},
            f"the line '{spec} none swap defaults 0 0' names /dev/mapper/qubes_dom0-swap", "two claims")  # fmt: skip


def test_our_mount_point_or_mapping_in_a_foreign_line_is_refused(box: Sandbox) -> None:
    fstab = DOM0_FSTAB + "\n/dev/sdz1 /var/lib/qubes-ephemeral ext4 defaults 0 0\n"
    crypttab = DOM0_CRYPTTAB + "ephemeral /dev/sdz2 none luks\n"
    box.put("/etc/crypttab", crypttab)
    box.put("/etc/fstab", fstab)
    refused(box, {"/etc/crypttab": crypttab.encode(), "/etc/fstab": fstab.encode()},
            "already uses /var/lib/qubes-ephemeral", "already opens a mapping named ephemeral")  # fmt: skip


@pytest.mark.parametrize("shape", ["holds-files", "symlink"])
def test_a_mount_point_in_the_way_is_refused(box: Sandbox, shape: str) -> None:
    box.put("/etc/crypttab", DOM0_CRYPTTAB)
    box.put("/etc/fstab", DOM0_FSTAB)
    if shape == "holds-files":
        box.put("/var/lib/qubes-ephemeral/notes.txt", "mine\n")
        reason = "already holds files"
    else:
        assert box.shell("mkdir -p /var/lib/elsewhere && ln -s elsewhere /var/lib/qubes-ephemeral").returncode == 0
        reason = "is a symlink"
    refused(box, {"/etc/crypttab": DOM0_CRYPTTAB.encode(), "/etc/fstab": DOM0_FSTAB.encode()}, reason)
    if shape == "holds-files":
        assert box.read("/var/lib/qubes-ephemeral/notes.txt") == "mine\n"
        assert "i" not in box.shell("lsattr -d /var/lib/qubes-ephemeral").stdout.split()[0]


def test_a_second_run_while_one_holds_the_lock_changes_nothing(box: Sandbox) -> None:
    box.put("/etc/crypttab", DOM0_CRYPTTAB)
    box.put("/etc/fstab", DOM0_FSTAB)
    hold = "mkdir -p /run/qubes-ephemeral && exec 9>/run/qubes-ephemeral/apply.lock && flock -n 9"
    status, states = box.apply(before=hold)
    assert status != 0
    assert "another run of the ephemeral formula holds" in "\n".join(failed(states))
    assert raw(box, "/etc/fstab") == DOM0_FSTAB.encode() and not box.exists(RECORD)
    # Once it is free, the run goes ahead.
    status, states = box.apply()
    assert status == 0, failed(states)


def test_a_refused_takeover_toggle_changes_nothing_in_a_whole_apply(box: Sandbox) -> None:
    """replace: true -> false (its swap may be in use) plus another change: the
    refusal comes before the first state, so the other change waits too."""
    box.put("/etc/crypttab", DOM0_CRYPTTAB)
    box.put("/etc/fstab", DOM0_FSTAB)
    status, states = box.apply()
    assert status == 0, failed(states)
    crypttab, record = box.read("/etc/crypttab"), box.read("/etc/qubes-ephemeral/applied.json")
    data = yaml.safe_load(files_pillar())
    data["ephemeral"]["swap"]["replace"] = False
    data["ephemeral"]["scratch"]["name"] = "ephemeral2"
    box.set_pillar(yaml.safe_dump(data))
    status, states = box.apply()
    assert status != 0 and "nothing was changed" in "\n".join(failed(states))
    assert box.read("/etc/crypttab") == crypttab
    assert box.read("/etc/qubes-ephemeral/applied.json") == record


def test_a_device_that_is_mounted_now_is_refused_whatever_the_description_calls_it(box: Sandbox) -> None:
    """The scratch device's name resolves to the block device of the sandbox's
    root filesystem: mounted, so the preflight (major:minor against
    /proc/self/mountinfo) refuses it before anything changes."""
    found = box.shell("awk '$5 == \"/\" {print $3}' /proc/self/mountinfo").stdout.split()
    if not found or found[-1].startswith("0:"):
        pytest.skip("the root filesystem here is not on a block device")
    major, minor = found[-1].split(":")
    made = ["mkdir -p /dev/qubes_dom0", "rm -f /dev/qubes_dom0/ephemeral /dev/dm-4", f"mknod /dev/dm-4 b {major} {minor}",
            "ln -s ../dm-4 /dev/qubes_dom0/ephemeral"]  # fmt: skip
    assert box.shell(" && ".join(made)).returncode == 0
    box.put("/etc/crypttab", DOM0_CRYPTTAB)
    box.put("/etc/fstab", DOM0_FSTAB)
    refused(box, {"/etc/crypttab": DOM0_CRYPTTAB.encode(), "/etc/fstab": DOM0_FSTAB.encode()},
            f"/dev/qubes_dom0/ephemeral ({major}:{minor}), or a device on it, is mounted")  # fmt: skip

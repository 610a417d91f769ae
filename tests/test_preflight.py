"""The preflight's checks on a dom0-like tree in a test folder (the Salt
sandbox runs the same checks through the formula: tests/test_formula_shapes.py)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml
from conftest import PILLAR_EXAMPLE
from hypothesis import given, settings
from hypothesis import strategies as st
from qubes_ephemeral.api import describe
from qubes_ephemeral.dom0 import applied, textedit
from qubes_ephemeral.dom0.preflight import Files, problems
from qubes_ephemeral.render.artifacts import REPLACED_PREFIX, Block, from_dict, marker_end, marker_start
from qubes_ephemeral.render.manifest import render

MANIFEST = render(describe(PILLAR_EXAMPLE.read_bytes())).as_dict()
RECORD = render(describe(PILLAR_EXAMPLE.read_bytes())).applied_record()
FSTAB = "/dev/mapper/qubes_dom0-root / ext4 defaults 1 1\n/dev/mapper/qubes_dom0-swap none swap defaults 0 0\n"
CRYPTTAB = "luks-1 UUID=1 none discard\n"


@pytest.fixture
def root(tmp_path: Path) -> Path:
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc/fstab").write_text(FSTAB)
    (tmp_path / "etc/crypttab").write_text(CRYPTTAB)
    # The volumes, as files the /dev names resolve to (the Salt sandbox uses real device nodes).
    for name in ("dm-3", "dm-4"):
        (tmp_path / "dev").mkdir(exist_ok=True)
        (tmp_path / "dev" / name).write_text("")
    for link, to in (("dev/mapper/qubes_dom0-swap", "../dm-3"), ("dev/qubes_dom0/ephemeral", "../dm-4"),
                     ("dev/disk/by-uuid/5wap", "../../dm-3"), ("dev/disk/by-label/scratch", "../../dm-4")):  # fmt: skip
        (tmp_path / link).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / link).symlink_to(to)
    return tmp_path


def check(root: Path, section: str, record: str | None = None, cleaning: bool = False) -> list[str]:
    plan = applied.plan(MANIFEST, record, section, [section] if cleaning else None)
    return problems(plan, Files(str(root)), cleaning)


def test_dom0_as_found_has_nothing_in_the_way(root: Path) -> None:
    for section in MANIFEST["sections"]:
        assert check(root, section) == [], section


@pytest.mark.parametrize(("line", "section"), [
    ("UUID=5wap none swap defaults 0 0", "swap"),
    ("/dev/dm-3\tnone\tswap\tsw\t0 0", "swap"),
    ("LABEL=scratch /srv ext4 defaults 0 0", "scratch"),
    ('/dev/disk/by-label/scratch /srv ext4 defaults 0 0', "scratch"),
])  # fmt: skip
def test_a_foreign_line_naming_our_device_any_way_is_refused(root: Path, line: str, section: str) -> None:
    (root / "etc/fstab").write_text(FSTAB.replace("/dev/mapper/qubes_dom0-swap none swap defaults 0 0\n", "")
                                    + line + "\n")  # fmt: skip
    found = check(root, section)
    assert len(found) == 1 and "one device, two claims" in found[0], found


def test_a_crypttab_line_keying_our_device_under_another_name_is_refused(root: Path) -> None:
    (root / "etc/crypttab").write_text(CRYPTTAB + "old-swap UUID=5wap /dev/urandom swap\n")
    assert any("two claims" in problem for problem in check(root, "swap"))


def test_the_line_the_takeover_comments_out_is_no_second_claim(root: Path) -> None:
    assert check(root, "swap") == []
    # The same line without the takeover (replace: false) is one.
    plan = applied.plan(MANIFEST, None, "swap")
    plan["artifacts"] = [a for a in plan["artifacts"] if a["kind"] != "comment-out"]
    assert any("two claims" in problem for problem in problems(plan, Files(str(root))))


def test_our_own_blocks_are_no_claim_and_a_recorded_block_is_ours(root: Path) -> None:
    record = render(describe(PILLAR_EXAMPLE.read_bytes())).applied_record()
    for data in (a for a in MANIFEST["artifacts"] if a["kind"] in ("block", "comment-out")):
        artifact, path = from_dict(data), root / str(data["target"]).lstrip("/")
        edit = textedit.apply_block if isinstance(artifact, Block) else textedit.comment_out
        path.write_text(edit(path.read_text(), artifact))  # type: ignore[arg-type]
    for section in ("scratch", "swap"):
        assert check(root, section, record) == [], section
        assert check(root, section, record, cleaning=True) == [], section


def test_a_foreign_block_between_our_markers_is_refused_unless_it_is_exactly_ours(root: Path) -> None:
    crypttab_block = next(a for a in MANIFEST["artifacts"] if a["id"] == "crypttab-scratch")
    (root / "etc/crypttab").write_text(
        f"{marker_start('scratch')}\nx /dev/sdz none\n{marker_end('scratch')}\n" + CRYPTTAB
    )
    assert any("no apply of qubes-ephemeral recorded" in p for p in check(root, "scratch"))
    assert any("no apply of qubes-ephemeral recorded" in p for p in check(root, "scratch", cleaning=True))
    # Exactly our lines (a record lost): taken as ours.
    (root / "etc/crypttab").write_text(
        f"{marker_start('scratch')}\n{crypttab_block['content']}{marker_end('scratch')}\n" + CRYPTTAB
    )
    assert check(root, "scratch") == []


def test_damaged_markers_and_lines_with_our_prefix_are_refused(root: Path) -> None:
    (root / "etc/fstab").write_text(FSTAB + marker_end("swap") + "\n")
    assert any("damaged" in p for p in check(root, "swap"))
    (root / "etc/fstab").write_text(FSTAB + REPLACED_PREFIX + "/dev/sdz1 none swap sw 0 0\n")
    assert any(f"start with {REPLACED_PREFIX!r}" in p for p in check(root, "swap"))


def test_our_mapping_name_and_mount_point_in_foreign_lines_are_refused(root: Path) -> None:
    (root / "etc/crypttab").write_text(CRYPTTAB + "ephemeral /dev/sdz none luks\n")
    (root / "etc/fstab").write_text(FSTAB + "/dev/sdz1 /var/lib/qubes-ephemeral ext4 defaults 0 0\n")
    found = check(root, "scratch")
    assert any("already opens a mapping named ephemeral" in p for p in found)
    assert any("already uses /var/lib/qubes-ephemeral" in p for p in found)


def test_a_mount_point_that_holds_files_or_is_a_symlink_is_refused(root: Path) -> None:
    mountpoint = root / "var/lib/qubes-ephemeral"
    mountpoint.mkdir(parents=True)
    assert check(root, "scratch") == []  # empty: fine
    (mountpoint / "notes").write_text("mine")
    assert any("already holds files" in p for p in check(root, "scratch"))
    (mountpoint / "notes").unlink()
    mountpoint.rmdir()
    (root / "var/lib/elsewhere").mkdir()
    mountpoint.symlink_to("elsewhere")
    assert any("is a symlink" in p for p in check(root, "scratch"))
    mountpoint.unlink()
    (root / "var/lib").rename(root / "var/lib-real")
    (root / "var/lib").symlink_to("lib-real")
    assert any("/var/lib, on the way to the mount point" in p for p in check(root, "scratch"))


def test_an_immutable_file_is_refused_for_apply_and_clean(root: Path) -> None:
    fstab = root / "etc/fstab"
    if subprocess.run(["chattr", "+i", str(fstab)], capture_output=True, check=False).returncode != 0:
        pytest.skip("no immutable flag on this filesystem (or no chattr)")
    try:
        assert any("/etc/fstab is immutable" in p for p in check(root, "swap"))
        assert any("/etc/fstab is immutable" in p for p in check(root, "swap", cleaning=True))
    finally:
        subprocess.run(["chattr", "-i", str(fstab)], check=True)


@settings(max_examples=60, deadline=None)
@given(
    st.sampled_from(["UUID", "LABEL", "PARTUUID", "PARTLABEL", "ID"]),
    st.text("abcXYZ09-_.", min_size=1, max_size=12).filter(lambda v: v not in (".", "..")),
)
def test_every_fstab_tag_resolves_through_its_udev_link(tmp_path_factory: pytest.TempPathFactory, tag: str,
                                                        value: str) -> None:  # fmt: skip
    root = tmp_path_factory.mktemp("dev")
    folder = {"UUID": "by-uuid", "LABEL": "by-label", "PARTUUID": "by-partuuid", "PARTLABEL": "by-partlabel",
              "ID": "by-id"}[tag]  # fmt: skip
    (root / "dev/disk" / folder).mkdir(parents=True)
    (root / "dev/dm-9").write_text("")
    (root / "dev/disk" / folder / value).symlink_to("../../dm-9")
    files = Files(str(root))
    assert files.device(f"{tag}={value}") == files.device("/dev/dm-9") is not None
    assert files.device(f'{tag}="{value}"') == files.device("/dev/dm-9")
    assert files.device(f"{tag}={value}x") is None


# Found by a red-team pass over the preflight.


def renamed() -> dict[str, object]:
    data = yaml.safe_load(PILLAR_EXAMPLE.read_text())
    data["ephemeral"]["scratch"]["name"] = "ephemeral2"
    return render(describe(yaml.safe_dump(data).encode())).as_dict()


def test_clean_after_a_rename_removes_the_installed_guard_only_after_the_crypttab_block() -> None:
    # The installed guard is systemd-cryptsetup@ephemeral's; the crypttab block keys "ephemeral".
    remove = applied.plan(renamed(), RECORD, "scratch", ["scratch"])["remove"]
    order = [(a["kind"], a["target"]) for a in remove]
    old_guard = next(i for i, (k, t) in enumerate(order) if "cryptsetup@ephemeral.service.d" in t)
    crypttab = order.index(("block", "/etc/crypttab"))
    assert crypttab < old_guard, order


def test_a_target_that_is_a_folder_is_refused_before_the_first_change(root: Path) -> None:
    plan = applied.plan(MANIFEST, None, "scratch")
    guard = next(a for a in plan["artifacts"] if a["id"] == "guard-scratch")["target"]
    (root / guard.lstrip("/")).mkdir(parents=True)  # file.managed fails here, after record-first
    assert problems(plan, Files(str(root))) != []


def test_our_mount_point_with_a_trailing_slash_is_a_second_claim(root: Path) -> None:
    (root / "etc/fstab").write_text(
        (root / "etc/fstab").read_text() + "/dev/sdz1 /var/lib/qubes-ephemeral/ ext4 defaults 0 0\n"
    )
    assert any("already uses" in p for p in problems(applied.plan(MANIFEST, None, "scratch"), Files(str(root))))


def test_a_label_with_a_space_resolves_through_udevs_escaped_link(root: Path) -> None:
    (root / "dev/disk/by-label/scratch\\x20disk").symlink_to("../../dm-4")
    (root / "etc/fstab").write_text(
        (root / "etc/fstab").read_text() + "LABEL=scratch\\040disk /srv ext4 defaults 0 0\n"
    )
    assert any("two claims" in p for p in problems(applied.plan(MANIFEST, None, "scratch"), Files(str(root))))


def test_a_foreign_crypttab_line_on_our_mapping_or_using_our_device_as_key_is_refused(root: Path) -> None:
    (root / "etc/crypttab").write_text((root / "etc/crypttab").read_text()
                                       + "kf UUID=zz /dev/qubes_dom0/ephemeral luks\n")  # fmt: skip
    assert problems(applied.plan(MANIFEST, None, "scratch"), Files(str(root))) != []


def test_a_clean_with_our_exact_block_and_no_record_is_not_refused(root: Path) -> None:
    from qubes_ephemeral.dom0 import textedit
    from qubes_ephemeral.render.artifacts import Block, from_dict

    for data in MANIFEST["artifacts"]:
        if data["kind"] == "block" and data["section"] == "scratch":
            block, path = from_dict(data), root / str(data["target"]).lstrip("/")
            assert isinstance(block, Block)
            path.write_text(textedit.apply_block(path.read_text(), block))
    assert problems(applied.plan(MANIFEST, None, "scratch"), Files(str(root))) == []  # the apply takes it as ours
    assert problems(applied.plan(MANIFEST, None, "scratch", ["scratch"]), Files(str(root)), True) == []


def test_a_line_on_a_partition_of_our_device_or_on_what_is_built_on_it_is_a_claim(root: Path) -> None:
    """A whole disk named as the device: keying it destroys its partitions and what they hold."""
    plan = applied.plan(MANIFEST, None, "scratch")
    disk = root / "dev/qubes_dom0/ephemeral"
    disk.unlink()
    if subprocess.run(["mknod", str(disk), "b", "259", "0"], capture_output=True, check=False).returncode != 0:
        pytest.skip("cannot make a device node here")
    for name, number in (("p3", "259:3"), ("dm-0", "253:0")):
        subprocess.run(["mknod", str(root / "dev" / name), "b", *number.split(":")], check=True)
        (root / f"sys/class/block/{name}").mkdir(parents=True)
        (root / f"sys/class/block/{name}/dev").write_text(number + "\n")
    (root / "sys/dev/block/259:0/p3").mkdir(parents=True)  # a partition of the disk
    (root / "sys/dev/block/259:0/p3/partition").write_text("3\n")
    (root / "sys/dev/block/259:3/holders/dm-0").mkdir(parents=True)  # LUKS opened on the partition
    (root / "dev/disk/by-uuid").mkdir(parents=True, exist_ok=True)
    (root / "dev/disk/by-uuid/1uks").symlink_to("../../p3")
    (root / "etc/crypttab").write_text("luks-1 UUID=1uks none discard\n")
    assert any("or a part of it" in p for p in problems(plan, Files(str(root))))
    (root / "etc/crypttab").write_text(CRYPTTAB)
    (root / "etc/fstab").write_text(FSTAB + "/dev/dm-0 /srv ext4 defaults 0 0\n")
    assert any("or a part of it" in p for p in problems(plan, Files(str(root))))


# --- the device as dom0 sees it now (major:minor, /proc and /sys) --------------------------------------------------

LVM_ID = "LVM-" + "a" * 32 + "b" * 32  # a volume group's id, then the volume's


@pytest.fixture
def nodes(root: Path) -> Path:
    """dm-3 (the swap LV) and dm-4 (the scratch LV) as real block device nodes, named by dm as LVM names them."""
    for name, minor in (("dm-3", 3), ("dm-4", 4)):
        (root / "dev" / name).unlink()
        if subprocess.run(["mknod", str(root / "dev" / name), "b", "253", str(minor)], capture_output=True,
                          check=False).returncode != 0:  # fmt: skip
            pytest.skip("cannot make a device node here")
    dm_device(root, 3, "qubes_dom0-swap", LVM_ID)
    dm_device(root, 4, "qubes_dom0-ephemeral", LVM_ID.replace("b", "c"))
    (root / "proc/self").mkdir(parents=True)
    (root / "proc/self/mountinfo").write_text("22 1 253:0 / / rw,relatime - ext4 /dev/mapper/qubes_dom0-root rw\n")
    (root / "proc/swaps").write_text("Filename\tType\tSize\tUsed\tPriority\n")
    return root


def dm_device(root: Path, minor: int, name: str, uuid: str) -> None:
    (root / f"sys/dev/block/253:{minor}/dm").mkdir(parents=True, exist_ok=True)
    (root / f"sys/dev/block/253:{minor}/dm/name").write_text(name + "\n")
    (root / f"sys/dev/block/253:{minor}/dm/uuid").write_text(uuid + "\n")


def node(root: Path, path: str, minor: int) -> None:
    """A block device node 253:minor at ``path``, listed in /sys/class/block as dm-minor."""
    (root / path.lstrip("/")).parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mknod", str(root / path.lstrip("/")), "b", "253", str(minor)], check=True)
    (root / f"sys/class/block/dm-{minor}").mkdir(parents=True, exist_ok=True)
    (root / f"sys/class/block/dm-{minor}/dev").write_text(f"253:{minor}\n")


def test_dom0_as_found_with_real_device_nodes_has_nothing_in_the_way(nodes: Path) -> None:
    for section in MANIFEST["sections"]:
        assert check(nodes, section) == [], section


def test_a_mounted_device_or_one_with_a_mounted_device_on_it_is_refused(nodes: Path) -> None:
    (nodes / "proc/self/mountinfo").write_text("30 1 253:4 / /srv rw - ext4 /dev/dm-4 rw\n")
    assert any("is mounted" in p for p in check(nodes, "scratch"))
    # A device stacked on it (a LUKS mapping, say) is mounted.
    node(nodes, "/dev/dm-9", 9)
    (nodes / "sys/dev/block/253:4/holders/dm-9").mkdir(parents=True)
    (nodes / "proc/self/mountinfo").write_text("30 1 253:9 / /srv rw - ext4 /dev/dm-9 rw\n")
    found = check(nodes, "scratch")
    assert any("is mounted" in p for p in found) and any("carries other devices (253:9" in p for p in found), found


def test_an_active_swap_is_refused_unless_the_section_takes_it_over(nodes: Path) -> None:
    (nodes / "proc/swaps").write_text("Filename\tType\tSize\tUsed\tPriority\n/dev/dm-3 partition 1048572 0 -2\n")
    assert check(nodes, "swap") == []  # the takeover switches it off before it is keyed
    plan = applied.plan(MANIFEST, None, "swap")
    plan["artifacts"] = [a for a in plan["artifacts"] if a["kind"] != "comment-out"]  # replace: false
    assert any("active swap" in p for p in problems(plan, Files(str(nodes))))
    (nodes / "proc/swaps").write_text("Filename\tType\tSize\tUsed\tPriority\n/dev/dm-4 partition 1048572 0 -2\n")
    assert any("active swap" in p for p in check(nodes, "scratch"))


def test_our_own_open_mapping_on_the_device_is_not_in_the_way(nodes: Path) -> None:
    """A second apply after activate: now: our mapping holds the device and is mounted."""
    node(nodes, "/dev/mapper/ephemeral", 10)
    (nodes / "sys/dev/block/253:4/holders/dm-10").mkdir(parents=True)
    (nodes / "proc/self/mountinfo").write_text("30 1 253:10 / /var/lib/qubes-ephemeral rw - ext4 /dev/dm-10 rw\n")
    assert check(nodes, "scratch") == []
    # Someone else's mapping on it is in the way.
    (nodes / "dev/mapper/ephemeral").unlink()
    assert any("carries other devices (253:10" in p for p in check(nodes, "scratch"))


@pytest.mark.parametrize(("name", "uuid", "words"), [
    ("qubes_dom0-vm--work--private", LVM_ID, "a qube's volume"),
    ("vg1-vm--work--volatile", LVM_ID, "a qube's volume"),
    ("qubes_dom0-pool00", LVM_ID + "-pool", "a layer LVM stacks"),
    ("qubes_dom0-pool00-tpool", LVM_ID + "-tpool", "a layer LVM stacks"),
    ("qubes_dom0-pool00_tdata", LVM_ID, "internal LVM sub-volume"),
    ("qubes_dom0-root", LVM_ID, "dom0's own volume"),
    ("vg1-data_rimage_0", LVM_ID, "internal LVM sub-volume"),
    ("luks-0b5e", "CRYPT-LUKS2-0b5e-luks-0b5e", "open encrypted mapping"),
    ("ephemeral-swap", "CRYPT-PLAIN-ephemeral-swap", "open encrypted mapping"),
    ("vg-", LVM_ID, "cannot be read"),
])  # fmt: skip
def test_what_device_mapper_says_the_device_is_refuses_it_whatever_its_name_in_the_description(
    nodes: Path, name: str, uuid: str, words: str
) -> None:
    """The description names /dev/qubes_dom0/ephemeral; the node it resolves to is, to dm, something else."""
    dm_device(nodes, 4, name, uuid)
    found = check(nodes, "scratch")
    assert any(words in p for p in found), found


@pytest.mark.parametrize("name", ["qubes_dom0-ephemeral", "vg--data-eph--lv", "qubes_dom0-swap"])
def test_a_plain_volume_of_ones_own_is_not_refused_by_its_dm_names(nodes: Path, name: str) -> None:
    dm_device(nodes, 4, name, LVM_ID)
    found = check(nodes, "scratch")
    # dom0's swap LV is for swap: only a scratch use of it is refused.
    assert found == [] if name != "qubes_dom0-swap" else any("dom0's swap" in p for p in found), found


def test_two_sections_on_one_device_under_two_names_are_refused_both_ways(nodes: Path) -> None:
    (nodes / "dev/qubes_dom0/ephemeral").unlink()
    (nodes / "dev/qubes_dom0/ephemeral").symlink_to("../dm-3")  # the scratch LV is the swap LV
    assert any("device of section swap" in p for p in check(nodes, "scratch"))
    assert any("device of section scratch" in p for p in check(nodes, "swap"))


def test_a_partition_of_the_other_sections_device_is_refused(nodes: Path) -> None:
    node(nodes, "/dev/dm-11", 11)
    (nodes / "sys/dev/block/253:3/dm-11").mkdir(parents=True)
    (nodes / "sys/dev/block/253:3/dm-11/partition").write_text("1\n")
    (nodes / "dev/qubes_dom0/ephemeral").unlink()
    (nodes / "dev/qubes_dom0/ephemeral").symlink_to("../dm-11")
    dm_device(nodes, 11, "qubes_dom0-ephemeral", LVM_ID)
    assert any("device of section swap" in p for p in check(nodes, "scratch"))


def test_a_device_a_loop_device_reads_or_a_running_qube_uses_is_refused(nodes: Path) -> None:
    """No holder shows these uses: the loop's backing file and Xen's block backend name the device."""
    (nodes / "sys/block/loop3/loop").mkdir(parents=True)
    (nodes / "sys/block/loop3/loop/backing_file").write_text("/dev/dm-4\n")
    assert any("backs a loop device (loop3)" in p for p in check(nodes, "scratch"))
    (nodes / "sys/block/loop3/loop/backing_file").write_text("/var/lib/qubes/appvms/x/private.img\n")
    assert check(nodes, "scratch") == []
    (nodes / "sys/bus/xen-backend/devices/vbd-12-51712").mkdir(parents=True)
    (nodes / "sys/bus/xen-backend/devices/vbd-12-51712/physical_device").write_text("fd:4\n")  # 253:4 in hex
    assert any("a disk of a running qube (Xen backend vbd-12-51712)" in p for p in check(nodes, "scratch"))


def test_a_device_built_on_a_qubes_volume_is_refused(nodes: Path) -> None:
    """A partition mapping (kpartx) of a qube's volume: its own dm uuid is part1-LVM-..., its lower is vm-*."""
    dm_device(nodes, 4, "qubes_dom0-vm--work--private1", "part1-" + LVM_ID)
    node(nodes, "/dev/dm-12", 12)
    dm_device(nodes, 12, "qubes_dom0-vm--work--private", LVM_ID)
    (nodes / "sys/dev/block/253:4/slaves/dm-12").mkdir(parents=True)
    found = check(nodes, "scratch")
    assert any("built on a qube's volume (qubes_dom0/vm-work-private)" in p for p in found), found
    # The same stack on a volume of one's own is fine.
    dm_device(nodes, 12, "vg--data-lv", LVM_ID)
    assert check(nodes, "scratch") == []

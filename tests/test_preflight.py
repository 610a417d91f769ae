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

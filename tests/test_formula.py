"""The Salt formula, applied with salt-call to dom0-like files in a sandbox.

Proves: our blocks land and foreign lines stay byte-identical; a second apply
changes nothing; test=True reports exactly what a real run changes; clean
restores crypttab and fstab byte for byte; invalid pillars and devices that
hold data are refused before anything changes.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
import yaml
from conftest import PILLAR_EXAMPLE
from qubes_ephemeral.api import describe
from qubes_ephemeral.render.artifacts import Block, CommentOut, Directory, File, Symlink
from qubes_ephemeral.render.manifest import render
from qubesd_process import STAMP, loaded_by
from salt_sandbox import Sandbox, available

pytestmark = pytest.mark.salt

DOM0_CRYPTTAB = (
    "# /etc/crypttab: mappings for encrypted partitions.\n"
    "luks-0b5e3c9a-1111-2222-3333-444455556666 UUID=0b5e3c9a-1111-2222-3333-444455556666 none discard\n"
)
DOM0_FSTAB = (
    "\n#\n# /etc/fstab\n# Created by anaconda on Mon Jan  1 00:00:00 2024\n#\n"
    "/dev/mapper/qubes_dom0-root /                       ext4    defaults,discard,x-systemd.device-timeout=0 1 1\n"
    "UUID=1d3a0c77-6a1b-4b0e-9f39-0d7f3a6b2c11 /boot                   ext4    defaults        1 2\n"
    "/dev/mapper/qubes_dom0-swap none                    swap    defaults,x-systemd.device-timeout=0 0 0\n"
    "tmpfs /tmp tmpfs\tdefaults,size=1G 0 0"  # no final newline: must survive too
)
MANIFEST = render(describe(PILLAR_EXAMPLE.read_bytes()))


@pytest.fixture
def sandbox(tmp_path: Path, qubesd: subprocess.Popen[bytes]) -> Sandbox:
    """dom0 as the package leaves it: crypttab and fstab of its own, and qubesd running with the extension."""
    why = available()
    if why:
        if os.environ.get("STRICT_TOOLS") == "1":
            pytest.fail(why)
        pytest.skip(why)
    box = Sandbox(tmp_path / "sandbox", PILLAR_EXAMPLE.read_text())
    box.put("/etc/crypttab", DOM0_CRYPTTAB)
    box.put("/etc/fstab", DOM0_FSTAB)
    box.put(STAMP, loaded_by(qubesd))
    return box


def changed(states: dict[str, dict[str, object]]) -> dict[str, object]:
    return {key.split("_|-")[1]: state["changes"] for key, state in states.items() if state["changes"]}


def failed(states: dict[str, dict[str, object]]) -> list[str]:
    return [f"{key}: {state['comment']}" for key, state in states.items() if state["result"] is False]


def test_apply_test_mode_reapply_and_clean(sandbox: Sandbox) -> None:
    # Dry run first: it changes nothing and announces every change.
    status, dry = sandbox.apply(test=True)
    assert status == 0, failed(dry)
    assert sandbox.read("/etc/fstab") == DOM0_FSTAB and sandbox.read("/etc/crypttab") == DOM0_CRYPTTAB
    pending = {key.split("_|-")[1] for key, state in dry.items() if state["result"] is None}
    assert sandbox.systemctl_calls() == []

    status, first = sandbox.apply()
    assert status == 0, failed(first)
    assert set(changed(first)) == pending, "test=True must announce exactly what the real run changes"
    # One daemon-reload per section that changed what systemd reads.
    reloads = {"ephemeral-scratch-daemon-reload", "ephemeral-swap-daemon-reload", "ephemeral-traces-daemon-reload"}
    assert reloads <= pending
    assert sandbox.systemctl_calls() == ["daemon-reload"] * len(reloads)

    # Each section's block is in place, newest on top, and every foreign byte stayed.
    def block_text(target: str) -> str:
        found = [a for a in MANIFEST.artifacts if isinstance(a, Block) and a.target == target]
        assert [a.section for a in found] == ["scratch", "swap"]
        return "".join(f"{a.marker_start}\n{a.content}{a.marker_end}\n" for a in reversed(found))

    crypttab, fstab = sandbox.read("/etc/crypttab"), sandbox.read("/etc/fstab")
    assert crypttab == block_text("/etc/crypttab") + DOM0_CRYPTTAB
    takeover = next(a for a in MANIFEST.artifacts if isinstance(a, CommentOut))
    expected_fstab = DOM0_FSTAB.replace(
        "/dev/mapper/qubes_dom0-swap none", takeover.prefix + "/dev/mapper/qubes_dom0-swap none"
    )
    assert fstab == block_text("/etc/fstab") + expected_fstab
    assert "ephemeral /dev/qubes_dom0/ephemeral /dev/urandom plain,cipher=aes-xts-plain64,size=512" in crypttab
    for artifact in MANIFEST.artifacts:
        if isinstance(artifact, File):
            assert sandbox.read(artifact.target) == artifact.content, artifact.target
            mode = sandbox.shell(f"stat -c %a '{artifact.target}'").stdout.strip()
            assert mode == artifact.mode.lstrip("0"), artifact.target
        elif isinstance(artifact, Symlink):
            assert sandbox.shell(f"readlink '{artifact.target}'").stdout.strip() == artifact.link_to
        elif isinstance(artifact, Directory):
            assert sandbox.shell(f"test -d '{artifact.target}'").returncode == 0
    # The description's mount point, bare, takes no write (the VM suite shows it at boot): immutable.
    mountpoint = yaml.safe_load(PILLAR_EXAMPLE.read_text())["ephemeral"]["scratch"]["mountpoint"]
    attributes = sandbox.shell(f"lsattr -d '{mountpoint}'")
    assert attributes.returncode == 0 and "i" in attributes.stdout.split()[0], attributes

    # Second apply and its dry run: zero changes, no daemon-reload.
    for test in (True, False):
        status, again = sandbox.apply(test=test)
        assert status == 0, failed(again)
        assert changed(again) == {}, f"test={test}: {changed(again)}"
        assert all(state["result"] is True for state in again.values())
    assert sandbox.systemctl_calls() == ["daemon-reload"] * len(reloads)

    # Clean: dry run honest, then byte-identical files and nothing of ours left.
    status, dry_clean = sandbox.apply("ephemeral.clean", test=True)
    assert status == 0, failed(dry_clean)
    pending = {key.split("_|-")[1] for key, state in dry_clean.items() if state["result"] is None}
    status, clean = sandbox.apply("ephemeral.clean")
    assert status == 0, failed(clean)
    assert set(changed(clean)) == pending
    assert sandbox.read("/etc/crypttab") == DOM0_CRYPTTAB
    assert sandbox.read("/etc/fstab") == DOM0_FSTAB
    for artifact in MANIFEST.artifacts:
        if isinstance(artifact, File | Symlink | Directory):
            assert not sandbox.exists(artifact.target), f"{artifact.target} left behind"
    assert sandbox.systemctl_calls()[-1] == "daemon-reload"
    assert not sandbox.exists("/usr/local/libexec/qubes-ephemeral"), "our folder of scripts goes too"

    status, clean_again = sandbox.apply("ephemeral.clean")
    assert status == 0 and changed(clean_again) == {}


def test_invalid_pillar_changes_nothing(sandbox: Sandbox) -> None:
    sandbox.set_pillar(PILLAR_EXAMPLE.read_text().replace("/dev/qubes_dom0/ephemeral", "/dev/sdb"))
    status, states = sandbox.apply()
    assert status != 0
    message = "\n".join(failed(states))
    assert "invalid ephemeral pillar, nothing was changed" in message
    assert "ephemeral.scratch.device" in message and "/dev/sdb" in message
    assert sandbox.read("/etc/fstab") == DOM0_FSTAB and sandbox.read("/etc/crypttab") == DOM0_CRYPTTAB
    assert not sandbox.exists("/etc/systemd/system/qubes-ephemeral-format.service")


def test_activate_now_refuses_a_device_that_holds_data(sandbox: Sandbox) -> None:
    # A scratch device holding an ext4 filesystem (a loop device), at its /dev path.
    made = sandbox.shell("mkdir -p /dev/qetest && truncate -s 64M /var/tmp/qetest.img && mkfs.ext4 -q -F /var/tmp/qetest.img"
                         " && ln -s \"$(losetup -f --show /var/tmp/qetest.img)\" /dev/qetest/data")  # fmt: skip
    if made.returncode != 0 and "losetup" in made.stderr and os.environ.get("STRICT_TOOLS") != "1":
        pytest.skip(f"no loop device here: {made.stderr.strip()}")
    assert made.returncode == 0, made.stderr
    try:
        _refused_now(sandbox)
    finally:
        sandbox.shell('losetup -d "$(readlink /dev/qetest/data)"')


def _refused_now(sandbox: Sandbox) -> None:
    pillar = PILLAR_EXAMPLE.read_text().replace("/dev/qubes_dom0/ephemeral", "/dev/qetest/data")
    sandbox.set_pillar(pillar.replace("activate: boot", "activate: now"))
    status, states = sandbox.apply()
    assert status != 0
    refusal = next(s for k, s in states.items() if "ephemeral-scratch-activate-check" in k)
    assert refusal["result"] is False
    assert "refusing to key /dev/qetest/data: it holds data" in str(refusal["changes"])
    # Nothing after the refusal ran: the device was never opened or mounted.
    mount = next(s for k, s in states.items() if "ephemeral-scratch-activate-mount" in k)
    assert mount["result"] is False and "requisite" in str(mount["comment"]).lower()
    assert not any("start" in call for call in sandbox.systemctl_calls())
    assert sandbox.shell("blkid -p -o value -s TYPE /dev/qetest/data").stdout.strip() == "ext4"


def without(pillar: str, section: str) -> str:
    """The pillar without one optional section (from its comment to the next one)."""
    start = pillar.index(f"  # Optional: {section}")
    end = pillar.index("  # Optional", start + 1) if "  # Optional" in pillar[start + 1 :] else len(pillar)
    return pillar[:start] + pillar[end:]


def test_a_pillar_that_drops_a_section_leaves_nothing_of_it_and_clean_still_reverts_all(sandbox: Sandbox) -> None:
    status, first = sandbox.apply()
    assert status == 0, failed(first)
    traces = [a.target for a in MANIFEST.artifacts if a.section == "traces"]
    assert traces and all(sandbox.exists(target) for target in traces)

    # Without traces: what only they needed goes, announced first by test=True.
    sandbox.set_pillar(without(PILLAR_EXAMPLE.read_text(), "dom0 logs"))
    status, dry = sandbox.apply(test=True)
    pending = {key.split("_|-")[1] for key, state in dry.items() if state["result"] is None}
    cleaned = {name.split("-", 4)[-1] for name in pending if name.startswith("ephemeral-clean-traces-")}
    assert {"traces-script", "unit-traces", "record"} <= cleaned
    status, second = sandbox.apply()
    assert status == 0, failed(second)
    assert set(changed(second)) == pending
    assert not any(sandbox.exists(target) for target in traces)
    assert not sandbox.exists("/etc/systemd/system/libvirtd.service.d"), "our drop-in folder goes with the drop-in"
    assert sandbox.systemctl_calls()[-1] == "daemon-reload"
    status, third = sandbox.apply()
    assert status == 0 and changed(third) == {}

    # Without the swap takeover: refused, nothing changed (its swap may be in use).
    fstab = sandbox.read("/etc/fstab")
    sandbox.set_pillar(without(without(PILLAR_EXAMPLE.read_text(), "dom0 logs"), "swap on a device"))
    status, refused = sandbox.apply()
    assert status != 0
    assert "no longer takes over the swap line" in "\n".join(failed(refused))
    assert sandbox.read("/etc/fstab") == fstab

    # Clean, with that pillar, still reverts what the last apply did: byte for byte.
    status, clean = sandbox.apply("ephemeral.clean")
    assert status == 0, failed(clean)
    assert sandbox.read("/etc/fstab") == DOM0_FSTAB and sandbox.read("/etc/crypttab") == DOM0_CRYPTTAB
    for artifact in MANIFEST.artifacts:
        if isinstance(artifact, File | Symlink | Directory):
            assert not sandbox.exists(artifact.target), f"{artifact.target} left behind"
    assert not sandbox.exists("/etc/qubes-ephemeral")


GOLDEN = Path(__file__).parent / "golden"


@pytest.mark.parametrize("case", ["swap-only", "qubes-only", "traces-only"])
def test_a_section_alone_applies_and_cleans(sandbox: Sandbox, case: str) -> None:
    """A description with one section: what it asks for and nothing else."""
    pillar = (GOLDEN / case / "input.yaml").read_text()
    manifest = render(describe(pillar.encode()))
    sandbox.set_pillar(pillar)
    status, dry = sandbox.apply(test=True)
    assert status == 0, failed(dry)
    pending = {key.split("_|-")[1] for key, state in dry.items() if state["result"] is None}
    status, first = sandbox.apply()
    assert status == 0, failed(first)
    assert set(changed(first)) == pending
    for artifact in manifest.artifacts:
        if isinstance(artifact, File):
            assert sandbox.read(artifact.target) == artifact.content, artifact.target
    sections = {artifact.section for artifact in manifest.artifacts}
    assert sections <= {case.removesuffix("-only")}
    if "swap" not in sections:
        assert sandbox.read("/etc/fstab") == DOM0_FSTAB and sandbox.read("/etc/crypttab") == DOM0_CRYPTTAB
    assert not sandbox.exists("/etc/systemd/system/qubes-ephemeral-format.service"), "no scratch was asked for"
    status, again = sandbox.apply()
    assert status == 0 and changed(again) == {}

    status, clean = sandbox.apply("ephemeral.clean")
    assert status == 0, failed(clean)
    assert sandbox.read("/etc/fstab") == DOM0_FSTAB and sandbox.read("/etc/crypttab") == DOM0_CRYPTTAB
    for artifact in manifest.artifacts:
        if isinstance(artifact, File | Symlink | Directory):
            assert not sandbox.exists(artifact.target), f"{artifact.target} left behind"
    assert not sandbox.exists("/etc/qubes-ephemeral") and not sandbox.exists("/usr/local/libexec/qubes-ephemeral")


def test_one_section_of_a_pillar_applies_and_cleans_alone(sandbox: Sandbox) -> None:
    """ephemeral.swap and ephemeral.swap.clean touch the swap section only."""
    swap = [a for a in MANIFEST.artifacts if a.section == "swap"]
    others = [a for a in MANIFEST.artifacts if a.section != "swap" and isinstance(a, File)]
    status, states = sandbox.apply("ephemeral.swap")
    assert status == 0, failed(states)
    assert all(sandbox.exists(a.target) for a in swap if isinstance(a, File))
    assert not any(sandbox.exists(a.target) for a in others), "only the swap section"
    crypttab = sandbox.read("/etc/crypttab")
    assert crypttab is not None and "ephemeral-swap " in crypttab and "\nephemeral " not in crypttab

    # The whole pillar on top, then the swap section's clean alone: the rest stays.
    status, states = sandbox.apply()
    assert status == 0, failed(states)
    status, states = sandbox.apply("ephemeral.swap.clean")
    assert status == 0, failed(states)
    assert not any(sandbox.exists(a.target) for a in swap if isinstance(a, File))
    assert all(sandbox.exists(a.target) for a in others)
    crypttab = sandbox.read("/etc/crypttab")
    assert crypttab is not None and "ephemeral-swap " not in crypttab and crypttab.endswith(DOM0_CRYPTTAB)
    fstab = sandbox.read("/etc/fstab")
    assert fstab is not None and fstab.endswith(DOM0_FSTAB), "the persistent swap line is given back"

    status, clean = sandbox.apply("ephemeral.clean")
    assert status == 0, failed(clean)
    assert sandbox.read("/etc/fstab") == DOM0_FSTAB and sandbox.read("/etc/crypttab") == DOM0_CRYPTTAB
    assert not sandbox.exists("/etc/qubes-ephemeral")


def test_a_record_of_the_version_before_sections_is_taken_over(sandbox: Sandbox) -> None:
    """An applied.json of format 1 (one block per file, one list): the next
    apply removes its old blocks and files the pillar no longer names, clean
    reverts all."""
    old_block = "# BEGIN qubes-ephemeral (managed block: edit the ephemeral pillar, not these lines)\n"
    old_end = "# END qubes-ephemeral\n"
    line = "ephemeral /dev/qubes_dom0/ephemeral /dev/urandom plain,cipher=aes-xts-plain64,size=512\n"
    sandbox.put("/etc/crypttab", old_block + line + old_end + DOM0_CRYPTTAB)
    sandbox.put("/usr/local/libexec/qubes-ephemeral/refuse-data", "#!/bin/sh\n")
    old_dropin = "/etc/systemd/system/systemd-cryptsetup@ephemeral.service.d/50-qubes-ephemeral.conf"
    sandbox.put(old_dropin, "[Service]\n")
    record = {
        "format": 1,
        "artifacts": [
            {"kind": "block", "id": "crypttab-block", "target": "/etc/crypttab", "purpose": "",
             "marker_start": old_block.strip(), "marker_end": old_end.strip()},
            {"kind": "file", "id": "guard-script", "target": "/usr/local/libexec/qubes-ephemeral/refuse-data",
             "purpose": "", "mode": "0755"},
            {"kind": "file", "id": "guard-scratch", "target": old_dropin, "purpose": "", "mode": "0644"},
        ],
        "activation": {"scratch": {"mapping": "/dev/mapper/ephemeral", "mount_unit": "var-lib-qubes\\x2dephemeral.mount",
                                   "crypt_unit": "systemd-cryptsetup@ephemeral.service", "device": "/dev/x"}},
    }  # fmt: skip
    sandbox.put("/etc/qubes-ephemeral/applied.json", json.dumps(record))
    status, states = sandbox.apply()
    assert status == 0, failed(states)
    crypttab = sandbox.read("/etc/crypttab")
    assert crypttab is not None and old_block not in crypttab and crypttab.endswith(DOM0_CRYPTTAB)
    assert not sandbox.exists("/usr/local/libexec/qubes-ephemeral/refuse-data")
    assert not sandbox.exists(old_dropin), "the old drop-in goes; the scratch section's own takes its place"
    assert sandbox.exists(old_dropin.replace("50-qubes-ephemeral.conf", "50-qubes-ephemeral-scratch.conf"))
    assert json.loads(sandbox.read("/etc/qubes-ephemeral/applied.json") or "{}")["format"] == 2
    status, clean = sandbox.apply("ephemeral.clean")
    assert status == 0, failed(clean)
    assert sandbox.read("/etc/crypttab") == DOM0_CRYPTTAB and not sandbox.exists("/etc/qubes-ephemeral")


RECORD = "/etc/qubes-ephemeral/applied.json"


def test_a_clean_that_fails_keeps_the_section_in_the_record(sandbox: Sandbox) -> None:
    """A failed unmount: nothing after it runs and the record still names the
    section, so the next clean finds it (never a keyed crypttab line forgotten)."""
    status, states = sandbox.apply()
    assert status == 0, failed(states)
    shim = sandbox.folder / "systemctl"
    working = shim.read_text()
    shim.write_text(working.replace('echo "$*"', 'case "$1" in stop) exit 1;; esac; echo "$*"'))
    status, states = sandbox.apply("ephemeral.scratch.clean", before="mknod /dev/mapper/ephemeral b 7 0")
    assert status != 0
    assert "scratch" in json.loads(sandbox.read(RECORD) or "{}")["sections"]
    assert "\nephemeral /dev/qubes_dom0/ephemeral " in "\n" + (sandbox.read("/etc/crypttab") or "")
    shim.write_text(working)
    status, states = sandbox.apply("ephemeral.clean")
    assert status == 0, failed(states)
    assert sandbox.read("/etc/crypttab") == DOM0_CRYPTTAB and not sandbox.exists(RECORD)


def test_clean_stops_what_was_applied_not_what_the_pillar_says_now(sandbox: Sandbox) -> None:
    status, states = sandbox.apply("ephemeral.scratch")
    assert status == 0, failed(states)
    sandbox.set_pillar(PILLAR_EXAMPLE.read_text().replace("    name: ephemeral\n", "    name: renamed\n", 1))
    status, states = sandbox.apply("ephemeral.scratch.clean", before="mknod /dev/mapper/ephemeral b 7 0")
    assert status == 0, failed(states)
    assert "stop var-lib-qubes\\x2dephemeral.mount systemd-cryptsetup@ephemeral.service" in sandbox.systemctl_calls()
    assert sandbox.read("/etc/crypttab") == DOM0_CRYPTTAB


@pytest.mark.parametrize("target", ["/etc/passwd", "/srv/userdata"])
def test_a_record_naming_a_file_that_is_not_ours_changes_nothing(sandbox: Sandbox, target: str) -> None:
    sandbox.put("/srv/userdata/thesis.tex", "precious")
    forged = {"kind": "file", "id": "x", "target": target, "purpose": "", "section": "swap"}
    sandbox.put(RECORD, json.dumps({"format": 2, "sections": {"swap": {"artifacts": [forged], "activation": None}}}))
    passwd = sandbox.read("/etc/passwd")
    status, states = sandbox.apply("ephemeral.clean")
    assert status != 0
    assert "never puts in place" in "\n".join(failed(states))
    assert sandbox.read("/srv/userdata/thesis.tex") == "precious" and sandbox.read("/etc/passwd") == passwd


def test_a_section_alone_waits_for_an_earlier_versions_record_and_scratch_for_the_pool(sandbox: Sandbox) -> None:
    legacy = {"format": 1, "artifacts": [], "activation": {}}
    sandbox.put(RECORD, json.dumps(legacy))
    for sls in ("ephemeral.scratch", "ephemeral.swap.clean"):
        status, states = sandbox.apply(sls)
        assert status != 0 and "earlier version" in "\n".join(failed(states)), sls
        assert sandbox.read("/etc/crypttab") == DOM0_CRYPTTAB
    status, states = sandbox.apply()  # the whole pillar takes the record over
    assert status == 0, failed(states)
    assert "legacy" not in json.loads(sandbox.read(RECORD) or "{}")["sections"]

    sandbox.set_pillar(PILLAR_EXAMPLE.read_text().replace("    pool: null", "    pool: ephemeral"))
    sandbox.apply()  # the pool itself waits for a mounted scratch filesystem; its layout unit is in place
    assert "qubes" in json.loads(sandbox.read(RECORD) or "{}")["sections"]
    status, states = sandbox.apply("ephemeral.scratch.clean")
    assert status != 0 and "clean it first" in "\n".join(failed(states))
    assert sandbox.exists("/etc/systemd/system/qubes-ephemeral-format.service")

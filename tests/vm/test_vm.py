"""Proof in a real VM (Debian, systemd, QEMU/TCG): apply, reboot, and the data is gone.

The machine: a Debian bookworm image with Debian's stock kernel, a second
disk with the volume group qubes_dom0 (root-like, swap, a 32 GiB ephemeral
LV), dom0-like crypttab and fstab, and Salt 3007.16. qubes-ephemeral is
installed from the package tarball (packaging/build) and the formula applied
from pillar.example as in dom0. See conftest.py for the seven boots.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.vm

SCAN = Path(__file__).parent / "guest" / "scan.py"


def changes(states: dict[str, dict[str, object]]) -> list[str]:
    return [key for key, state in states.items() if state["changes"]]


def failures(states: dict[str, dict[str, object]]) -> list[str]:
    return [f"{key}: {state['comment']}" for key, state in states.items() if state["result"] is False]


def test_the_package_tarball_installs_once(scenario) -> None:
    out = scenario.boots["1-provision-apply"].out
    assert "installed qubes-ephemeral" in (out / "install").read_text()
    assert "nothing changed" in (out / "install-again").read_text()


def test_apply_then_reapply_changes_nothing(scenario) -> None:
    boot = scenario.boots["1-provision-apply"]
    first, second, dry = (boot.json(f) for f in ("apply-1.json", "apply-2.json", "apply-3-test.json"))
    assert failures(first["local"]) == [] and changes(first["local"])
    assert failures(second["local"]) == [] and changes(second["local"]) == []
    assert changes(dry["local"]) == [] and all(s["result"] is True for s in dry["local"].values())
    # The Qubes settings, through the emulated admin commands (Qubes cannot run here): the
    # template is marked for the extension; its own volumes are left as they are.
    assert (boot.out / "qubes-features").read_text().split() == ["qubes-ephemeral", "1"]
    assert (boot.out / "qubes-root-rw").read_text().strip() == "True"


def test_after_reboot_scratch_is_plain_dm_crypt_with_the_configured_cipher(scenario) -> None:
    facts = scenario.boots["2-after-apply"].json("booted.json")
    scratch = facts["crypt"]["ephemeral"]
    assert scratch is not None, "the scratch mapping is not open"
    assert scratch["type"] == "PLAIN"
    assert scratch["cipher"] == "aes-xts-plain64"
    assert scratch["keysize"] == "512 bits"
    assert scratch["sector size"] == "4096"
    assert scratch["device"] == "/dev/mapper/qubes_dom0-ephemeral"


def test_after_reboot_scratch_is_mounted_with_the_rendered_options(scenario) -> None:
    mount = scenario.boots["2-after-apply"].json("booted.json")["mount"]
    assert mount["source"] == "/dev/mapper/ephemeral"
    assert mount["fstype"] == "ext4"
    options = mount["options"].split(",")
    for option in ("noatime", "nodev", "nosuid"):
        assert option in options


def test_after_reboot_swap_is_on_the_ephemeral_mapping_only(scenario) -> None:
    facts = scenario.boots["2-after-apply"].json("booted.json")
    assert [s["device"] for s in facts["swaps"]] == ["ephemeral-swap"]
    assert facts["crypt"]["ephemeral-swap"]["type"] == "PLAIN"
    assert facts["crypt"]["ephemeral-swap"]["keysize"] == "512 bits"
    persistent = [line for line in facts["fstab"].splitlines() if "qubes_dom0-swap" in line]
    assert persistent == ["#qubes-ephemeral-replaced# /dev/mapper/qubes_dom0-swap none                    swap    "
                          "defaults,x-systemd.device-timeout=0 0 0"]  # fmt: skip


# Every phase at which a key of ours exists or existed: after each apply, audit, activate,
# clean and reboot (tests/vm/jobs: keyscan PHASE).
KEY_PHASES = ["1-apply", "2-boot", "2-audit", "2-apply-full", "3-reboot", "3-clean",
              "4-swap-only", "4-activate-now", "5-guard-refused"]  # fmt: skip


def keyscans(scenario) -> dict[str, dict]:
    return {path.name.removeprefix("keyscan-").removesuffix(".json"): json.loads(path.read_text())
            for boot in scenario.boots.values() for path in boot.out.glob("keyscan-*.json")}  # fmt: skip


def test_no_key_material_in_the_guests_files_or_journal_at_any_phase(scenario) -> None:
    reports = keyscans(scenario)
    ran = {step.split("-")[0] for step in scenario.boots}
    phases = [phase for phase in KEY_PHASES if phase.split("-")[0] in ran]
    assert sorted(reports) == sorted(phases)
    assert reports["2-boot"]["key_bits"] == {"ephemeral": 512, "ephemeral-swap": 512}
    if "4-activate-now" in reports:
        assert reports["4-activate-now"]["key_bits"] == {"ephemeral": 512, "ephemeral-swap": 512}
    # The last phase searches for every key seen so far: a closed mapping's key must not turn up later.
    seen = {f"{phase}/{name}" for phase, keys in scenario.keys.items() for name in keys}
    assert set(reports[phases[-1]]["keys_searched"]) == seen and len(seen) >= 6
    for phase, report in reports.items():
        assert report["controls"] == {"file_hex": True, "file_raw": True, "journal": True}, (
            f"{phase}: the search must find its planted decoy, or it proves nothing"
        )
        assert report["key_hits"] == [], phase


def test_no_key_material_in_the_raw_disk_images_after_any_boot(scenario) -> None:
    """From the host, after each boot: every block the guest ever wrote (root overlay, data disk)."""
    assert list(scenario.raw_scans) == list(scenario.boots)
    searched = 0
    for step, scan in scenario.raw_scans.items():
        for label, found in scan.items():
            if label.startswith("decoy"):
                assert found["root.qcow2"], f"after {step}: {label} planted on the root disk must be found"
            else:
                searched += 1
                assert not any(found.values()), f"after {step}: {label} is on a disk: {found}"
    assert searched >= 3 * 6  # each key in three forms, at least the two mappings of boots 2 and 3


def test_canaries_are_only_readable_through_the_mappings(scenario) -> None:
    c1, c2, c3, *_ = scenario.markers
    boot = scenario.boots["2-after-apply"]
    before = {path.split("@")[0]: counts for path, counts in boot.json("scan-before.json").items()}
    # In the clear through this boot's mappings: canary 2 really went to swap.
    assert before["/dev/mapper/ephemeral"][c1] > 0
    assert before["/dev/mapper/ephemeral-swap"][c2] > 0, "memory pressure must push the tmpfs canary to swap"
    # Never on the raw volumes underneath; the control on a persistent volume is.
    assert before["/dev/qubes_dom0/ephemeral"][c1] == 0
    assert before["/dev/qubes_dom0/swap"][c2] == 0
    assert before["/dev/qubes_dom0/root"][c3] > 0


def test_memory_pressure_really_pushed_the_canary_through_the_swap_mapping(scenario) -> None:
    """Of the 150 MiB tmpfs canary, at least 100 MiB went to swap: the claim docs/testing.md makes."""
    swaps = scenario.boots["2-after-apply"].json("pressured.json")["swaps"]
    assert [s["device"] for s in swaps] == ["ephemeral-swap"]
    assert swaps[0]["used_kib"] >= 100 * 1024, swaps


def test_after_reboot_the_old_data_is_gone_from_every_raw_volume(scenario) -> None:
    c1, c2, c3, *_ = scenario.markers
    boot = scenario.boots["3-after-reboot"]
    assert boot.json("rebooted.json")["crypt"]["ephemeral"] is not None
    assert "canary.txt" not in (boot.out / "scratch-entries").read_text().split()
    after = boot.json("scan-after.json")
    assert all(counts[c1] == 0 and counts[c2] == 0 for counts in after.values()), after
    # Through the new boot's mapping too, where before the reboot canary 2 was in the clear.
    assert "/dev/mapper/ephemeral-swap" in after
    assert after["/dev/qubes_dom0/root"][c3] > 0


def test_the_whole_virtual_disk_holds_no_canary(scenario) -> None:
    c1, c2, c3, *_ = scenario.markers
    markers = scenario.vm.work / "markers"
    markers.write_text("\n".join(scenario.markers) + "\n")
    scan = subprocess.run([sys.executable, str(SCAN), str(markers), str(scenario.vm.data)],
                          capture_output=True, text=True, check=True)  # fmt: skip
    counts = json.loads(scan.stdout)[str(scenario.vm.data)]
    assert counts[c1] == 0 and counts[c2] == 0
    assert counts[c3] > 0, "the control canary on the persistent volume must be found"


def scan_disk(scenario, disk: Path) -> dict[str, int]:
    markers = scenario.vm.work / "markers"
    markers.write_text("\n".join(scenario.markers) + "\n")
    scan = subprocess.run([sys.executable, str(SCAN), str(markers), str(disk)],
                          capture_output=True, text=True, check=True)  # fmt: skip
    return json.loads(scan.stdout)[str(disk)]


def test_dom0_logs_about_qubes_are_on_the_scratch_filesystem_before_their_writers_start(scenario) -> None:
    facts = scenario.boots["2-after-apply"].json("booted.json")
    for path in ("/var/log/qubes", "/var/log/libvirt/libxl", "/var/log/xen/console"):
        assert facts["traces"][path] == {"source": f"/dev/mapper/ephemeral[/traces{path}]", "fstype": "ext4"}
    seen = (scenario.boots["2-after-apply"].out / "writers-booted").read_text().splitlines()
    assert sorted(line.split()[0] for line in seen) == ["libvirtd", "qubesd", "xenconsoled"]
    for line in seen:
        _, fstype, source = line.split()[:3]
        assert fstype == "ext4" and source.startswith("/dev/mapper/ephemeral[/traces/var/log/"), line


def test_logs_about_qubes_and_the_journal_never_reach_the_persistent_disk(scenario) -> None:
    _, _, _, c4, c5, c6, c7, _ = scenario.markers
    rebooted = scenario.boots["3-after-reboot"].out
    assert "guid.disp1234.log" not in (rebooted / "qubes-logs-after-reboot").read_text().split()
    root = scan_disk(scenario, scenario.vm.root)  # the VM's root filesystem, /var/log included
    assert root[c4] == 0, "a log written under /var/log/qubes reached the root disk"
    assert root[c5] == 0, "the journal (Storage=volatile) reached the root disk"
    assert root[c6] > 0, "control: the journal before Storage=volatile is on the root disk"
    assert root[c7] > 0, "control: a log directory we do not cover is on the root disk"
    data = scan_disk(scenario, scenario.vm.data)
    assert data[c4] == 0 and data[c5] == 0


def test_without_the_scratch_filesystem_the_logs_go_to_memory_not_to_the_disk(scenario) -> None:
    for step, name in (("5-volume-holds-data", "data-volume"), ("6-missing-volume", "missing")):
        facts = scenario.boots[step].json(f"{name}.json")
        assert facts["mount"] is None
        for path, mounted in facts["traces"].items():
            assert mounted == {"source": "qubes-ephemeral-traces", "fstype": "tmpfs"}, (step, path)
        seen = (scenario.boots[step].out / f"writers-{name}").read_text().splitlines()
        assert len(seen) == 3 and all(line.split()[1] == "tmpfs" for line in seen), seen


def test_pool_on_the_scratch_filesystem_is_added_and_remade_at_every_boot(scenario) -> None:
    booted = scenario.boots["2-after-apply"]
    assert failures(booted.json("apply-full-1.json")["local"]) == []
    assert changes(booted.json("apply-full-2.json")["local"]) == []
    assert "dir_path            /var/lib/qubes-ephemeral/pools/ephemeral" in (booted.out / "pool-info").read_text()
    assert (booted.out / "default-pool-volatile").read_text().strip() == "ephemeral"
    assert (booted.out / "pool-entries").read_text().split() == ["appvms", "vm-templates"]
    rebooted = scenario.boots["3-after-reboot"].out
    # A fresh filesystem: the layout unit made the pool's folders again, before qubesd started.
    assert (rebooted / "pool-entries-after-reboot").read_text().split() == ["appvms", "vm-templates"]
    qubesd = next(
        line for line in (rebooted / "writers-rebooted").read_text().splitlines() if line.startswith("qubesd")
    )
    assert qubesd.endswith("/var/lib/qubes-ephemeral/pools/ephemeral/appvms")
    # Clean put the default back and removed the pool (emulated qubes-prefs and qvm-pool).
    assert (rebooted / "default-pool-volatile-after-clean").read_text().strip() == "vm-pool"
    pools = [line.split()[0] for line in (rebooted / "pools-after-clean").read_text().splitlines()[1:]]
    assert "vm-pool" in pools and "ephemeral" not in pools


def test_vm_kernels_are_patched_now_after_an_install_and_at_boot_and_restored_by_clean(scenario) -> None:
    booted = scenario.boots["2-after-apply"].out
    assert (booted / "path-unit").read_text().strip() == "active"
    installed = (booted / "kernels-after-install").read_text().splitlines()
    assert installed == ["/var/lib/qubes/vm-kernels/6.6.1/initramfs: patched",
                         "/var/lib/qubes/vm-kernels/6.7.2/initramfs: patched"]  # fmt: skip
    rebooted = scenario.boots["3-after-reboot"].out
    assert (rebooted / "kernels-after-reboot").read_text().splitlines() == installed
    restored = dict(reversed(line.split()) for line in (rebooted / "kernels-after-clean").read_text().splitlines())
    assert restored == scenario.kernel_digests, "clean gives every kernel its original initramfs, byte for byte"


def test_the_kernel_unpacks_an_appended_archive_and_runs_its_init(scenario) -> None:
    out = scenario.boots["7-vm-initramfs"].out
    assert int((out / "appended-init").read_text()) >= 1, "the appended /init replaced the original"


def test_rw_of_a_forgetful_disposable_goes_to_the_volatile_volume_only(scenario) -> None:
    *_, c8 = scenario.markers
    out = scenario.boots["7-vm-initramfs"].out
    stderr = (out / "cow-init-stderr").read_text()
    assert (out / "cow-rc").read_text().strip() == "0", stderr
    # The patched /init ran with only the tools of dom0's VM initramfs on PATH.
    assert "not found" not in stderr, stderr
    assert "qubes-ephemeral: /rw writes go to a copy-on-write layer" in stderr
    assert int((out / "cow-kmsg").read_text()) >= 1, "and said so in the kernel log"
    assert "patched" in (out / "cow-apply").read_text()
    fstab = (out / "cow-fstab").read_text().split()
    assert fstab[:2] == ["/dev/mapper/dmprivate", "/rw"], "the qube mounts /rw from the copy-on-write"
    tables = (out / "cow-tables").read_text()
    assert "dmprivate: 0 " in tables and " snapshot " in tables.split("dmprivate: ")[1].splitlines()[0]
    assert (out / "cow-keep").read_text() == "precious private data\n", "the private data is there to read"
    assert (out / "cow-readback").read_text().strip() == c8
    # The read-only root and private images are unchanged, byte for byte; the writes are on the volatile one.
    assert (out / "cow-sha-before").read_text() == (out / "cow-sha-after").read_text()
    scan = {Path(path).name: counts[c8] for path, counts in json.loads((out / "cow-scan.json").read_text()).items()}
    assert scan["xvdb.img"] == 0 and scan["xvda.img"] == 0
    assert scan["xvdc.img"] > 0


def test_rw_of_an_ordinary_qube_is_left_alone(scenario) -> None:
    out = scenario.boots["7-vm-initramfs"].out
    stderr = (out / "plain" / "cow-init-stderr").read_text()
    assert (out / "plain-rc").read_text().strip() == "0", stderr
    assert "not found" not in stderr and "qubes-ephemeral" not in stderr, stderr
    assert (out / "plain" / "cow-fstab").read_text().split()[0].startswith("/dev/loop"), "fstab untouched"
    assert "dmprivate" not in (out / "plain" / "cow-tables").read_text()
    # The anti-test of the copy-on-write: the same canary, written to /rw without it, is on the private image.
    *_, c8 = scenario.markers
    scan = {Path(path).name: counts[c8]
            for path, counts in json.loads((out / "plain" / "cow-scan.json").read_text()).items()}  # fmt: skip
    assert scan["xvdb.img"] > 0, "the scan finds a canary written to a writable private volume"


def test_bare_mount_point_refuses_writes(scenario) -> None:
    out = scenario.boots["2-after-apply"].out
    assert (out / "bare-write").read_text().strip() == "refused"
    assert "Operation not permitted" in (out / "write-error").read_text()
    assert (out / "bare-entries").read_text().strip() == ""
    assert "i" in (out / "bare-attrs").read_text()


def test_clean_restores_dom0_swap_and_files(scenario) -> None:
    cleaned = scenario.boots["3-after-reboot"]
    assert failures(cleaned.json("clean-1.json")["local"]) == []
    assert changes(cleaned.json("clean-2.json")["local"]) == []
    first = scenario.boots["1-provision-apply"].out
    after = scenario.boots["4-after-clean"]
    assert (after.out / "fstab.after-clean").read_bytes() == (first / "fstab.pristine").read_bytes()
    assert (after.out / "crypttab.after-clean").read_bytes() == (first / "crypttab.pristine").read_bytes()
    assert (after.out / "qubes-root-rw").read_text().strip() == "True"
    assert (after.out / "qubes-features").read_text().strip() == "", "the mark is gone"
    assert (after.out / "qubes-record").read_text().strip() == "absent"
    facts = after.json("after-clean.json")
    assert [s["device"] for s in facts["swaps"]] == ["qubes_dom0-swap"]
    assert facts["crypt"]["ephemeral"] is None and facts["crypt"]["ephemeral-swap"] is None
    assert facts["failed_units"] == []
    assert all(mounted is None for mounted in facts["traces"].values()), "the log directories are dom0's again"


def test_activate_now_needs_no_reboot(scenario) -> None:
    boot = scenario.boots["4-after-clean"]
    assert failures(boot.json("activate-now.json")["local"]) == []
    facts = boot.json("activated.json")
    assert facts["mount"]["source"] == "/dev/mapper/ephemeral"
    assert [s["device"] for s in facts["swaps"]] == ["ephemeral-swap"]
    # The audit agrees: the bare mount point's protection ran too, not only the mount.
    rows = audit_lines(boot.out, "audit-activated")
    text = (boot.out / "audit-activated.txt").read_text()
    devices = [row for row in rows if row[0] in ("scratch", "swap")]
    assert devices and all(row[1] in ("ok", "gap") for row in devices), text
    assert any(row[1] == "ok" and "protected" in " ".join(row) for row in devices), text
    # Our units, and those systemd makes from our lines; the qubes and traces sections' own
    # units take effect at the next boot.
    units = [
        row
        for row in rows
        if row[0] == "units" and not row[3].startswith(("qubes-ephemeral-traces", "qubes-ephemeral-layout"))
    ]
    assert len(units) >= 5 and all(row[1] == "ok" for row in units), text


def test_a_swap_only_description_applies_now_and_cleans_alone(scenario) -> None:
    boot = scenario.boots["4-after-clean"]
    assert failures(boot.json("swap-only-apply.json")["local"]) == []
    facts = boot.json("swap-only.json")
    assert [s["device"] for s in facts["swaps"]] == ["ephemeral-swap"], "the keyed swap replaced dom0's, now"
    assert facts["crypt"]["ephemeral-swap"] is not None and facts["crypt"]["ephemeral"] is None, "no scratch asked for"
    assert facts["mount"] is None
    crypttab = (boot.out / "crypttab.swap-only").read_text()
    assert "ephemeral-swap /dev/mapper/qubes_dom0-swap /dev/urandom plain," in crypttab
    assert "\nephemeral " not in crypttab
    assert failures(boot.json("swap-only-clean.json")["local"]) == []
    cleaned = boot.json("swap-only-cleaned.json")
    assert cleaned["swaps"] == [] and cleaned["crypt"]["ephemeral-swap"] is None
    first = scenario.boots["1-provision-apply"].out
    assert (boot.out / "fstab.swap-only-cleaned").read_bytes() == (first / "fstab.pristine").read_bytes()
    assert (boot.out / "crypttab.swap-only-cleaned").read_bytes() == (first / "crypttab.pristine").read_bytes()
    assert (boot.out / "swap-only-leftovers").read_text() == "", "nothing of ours is left"


def test_a_volume_holding_data_is_not_keyed_at_boot(scenario) -> None:
    boot = scenario.boots["5-volume-holds-data"]
    facts = boot.json("data-volume.json")
    assert facts["crypt"]["ephemeral"] is None, "the guard must stop the device from being opened"
    assert facts["mount"] is None
    assert facts["multi_user"] == "active" and facts["emergency"] == "inactive"
    assert "refusing to key /dev/qubes_dom0/ephemeral: it holds data" in (boot.out / "guard-journal").read_text()
    assert (boot.out / "data-type").read_text().strip() == "ext4"
    assert (boot.out / "precious").read_text() == "thesis, chapter 3\n"
    assert [s["device"] for s in facts["swaps"]] == ["ephemeral-swap"], "the rest of the boot goes on"


def test_the_boot_guard_refuses_what_is_someones_by_its_device_whatever_its_name(scenario) -> None:
    """The installed guard, run by hand with wipe_existing's "data": each device is refused for what it is."""
    rows = (scenario.boots["5-volume-holds-data"].out / "guard-cases").read_text().splitlines()
    cases = {row.split("\t")[0]: row.split("\t")[1:] for row in rows}
    expected = {
        "/dev/qubes_dom0/root": "is mounted",  # on /mnt/persistent
        "/dev/qubes_dom0/pool00": "dom0's own volume (qubes_dom0/pool00)",
        "/dev/qubes_dom0/vm-work-private": "a qube's volume (qubes_dom0/vm-work-private)",
        "/dev/mapper/qubes_dom0-root-real": "something is built on it",  # the origin and its snapshot
        "/dev/qubes_dom0/vault": "something is built on it",
        "/dev/mapper/vault": "an open encrypted mapping (vault)",
        "/dev/mapper/ephemeral-swap": "is an active swap",
        "/dev/qubes_dom0/looped": "backs a loop device",
        "/dev/mapper/qe-on-qube": "built on a qube's volume (qubes_dom0-vm--other--root)",
    }
    for device, words in expected.items():
        status, message = cases[device]
        assert status == "1" and words in message, (device, status, message)
    root = [row for device, row in cases.items() if device not in expected]
    assert len(root) == 1 and root[0][0] == "1" and "is mounted" in root[0][1], root


def test_the_boot_guard_refuses_a_device_holding_an_lvm_physical_volume(scenario) -> None:
    """dom0's own PV (its volume group in use) even with "data" allowed; a PV no one uses by its label."""
    rows = (scenario.boots["5-volume-holds-data"].out / "guard-pv-cases").read_text().splitlines()
    cases = [row.split("\t") for row in rows]
    assert len(cases) == 3, rows
    (pv_data, rc1, why1), (pv, rc2, why2), (holder, rc3, why3) = cases
    assert pv_data.endswith(" data") and rc1 == "1" and "something is built on it" in why1
    assert pv == pv_data.removesuffix(" data") and rc2 == "1" and "something is built on it" in why2
    assert holder == "/dev/qubes_dom0/pv-holder" and rc3 == "1" and "LVM2_member" in why3, why3


def test_the_audit_says_failed_when_the_guard_stopped_the_keying_unit(scenario) -> None:
    out = scenario.boots["5-volume-holds-data"].out
    assert (out / "audit-guard-refused.rc").read_text().strip() == "1"
    failed = [line for line in (out / "audit-guard-refused.txt").read_text().splitlines() if " failed " in line]
    assert any("systemd-cryptsetup@ephemeral.service" in line for line in failed), failed


def test_missing_scratch_volume_does_not_stop_the_boot(scenario) -> None:
    boot = scenario.boots["6-missing-volume"]
    facts = boot.json("missing.json")
    assert facts["multi_user"] == "active" and facts["emergency"] == "inactive"
    assert facts["mount"] is None
    assert facts["mountpoint_entries"] == []
    assert "i" in facts["mountpoint_attrs"]
    print(f"\nboot with the scratch volume missing reached the test agent at {facts['uptime']:.0f} s of uptime")


def audit_lines(out: Path, name: str) -> list[list[str]]:
    """The audit's table: [area, status, level, what...] per finding."""
    return [line.split() for line in (out / f"{name}.txt").read_text().splitlines()[1:] if line.strip()][:-1]


def test_audit_before_apply_lists_the_gaps(scenario) -> None:
    out = scenario.boots["1-provision-apply"].out
    assert (out / "audit-before-apply.rc").read_text().strip() == "1"
    rows = audit_lines(out, "audit-before-apply")
    assert rows[0][:2] == ["scratch", "missing"], rows[0]
    swap = [row for row in rows if row[0] == "swap" and row[3].startswith("/dev/dm-")]
    assert swap and swap[0][1] == "missing" and "not encrypted" in " ".join(swap[0]), swap


def test_audit_after_apply_and_reboot_reports_full_coverage(scenario) -> None:
    out = scenario.boots["2-after-apply"].out
    text = (out / "audit-after-reboot.txt").read_text()
    assert (out / "audit-after-reboot.rc").read_text().strip() == "0", text
    assert "everything the description asks for is in place" in text
    statuses = {row[1] for row in audit_lines(out, "audit-after-reboot")}
    assert statuses <= {"ok", "gap"}, text
    assert "aes-xts-plain64, 512 bits, 4096-byte sectors" in text
    assert "0000000000" not in text, "no key material, not even dmsetup's zeros"


REMNANTS_PLANTED = {
    "/root/.bash_history",
    "/home/user/.cache/xfce4/notifyd/log",
    "/home/user/.cache/sessions/xfwm4-2a7f.state",
    "/var/lib/systemd/coredump/core.qubes-guid.0.1.2.3",
    "/var/log/libvirt/libxl/disp4242.log",
}


def test_the_audit_names_dom0s_remnants_and_clears_them_alone(scenario) -> None:
    out = scenario.boots["2-after-apply"].out
    before = audit_lines(out, "audit-after-reboot")
    gaps = {row[3] for row in before if row[0] == "remnants" and row[1] == "gap"}
    assert gaps >= REMNANTS_PLANTED, "each planted file named"
    assert all(path.startswith("/var/log/") for path in gaps - REMNANTS_PLANTED), "and no other but a qube's log"
    assert not any(path.startswith("/srv/") or path.startswith("/home/other/") for path in gaps)
    assert (out / "audit-cleared.rc").read_text().strip() == "0", (out / "audit-cleared.stderr").read_text()
    after = audit_lines(out, "audit-cleared")
    assert {row[1] for row in after if row[0] == "remnants"} == {"ok"}, (out / "audit-cleared.txt").read_text()
    cleared = (out / "audit-cleared.stderr").read_text()
    assert all(path in cleared for path in REMNANTS_PLANTED), cleared
    # What was not a disposable's stays, byte for byte: other lines, a look-alike name, other files.
    assert (out / "bash_history.cleared").read_text() == "ls -l /srv\nqvm-run display-test xterm\n"
    assert (out / "remnant-decoys.after").read_text() == (out / "remnant-decoys.before").read_text()
    blocks = sorted((out / "remnants-left").read_text().strip().split("\n\n"))  # ls orders folders its own way
    assert blocks == [
        "/home/user/.cache/sessions:",
        "/home/user/.cache/xfce4/notifyd:\nother",
        "/var/lib/systemd/coredump:",
        "/var/log/libvirt/libxl:\nwork.log",
    ], blocks


def test_audit_as_an_ordinary_user_says_what_it_could_not_check(scenario) -> None:
    out = scenario.boots["2-after-apply"].out
    text = (out / "audit-as-user.txt").read_text()
    assert (out / "audit-as-user.rc").read_text().strip() == "1"
    assert "needs root: run the audit with sudo" in text
    assert "Traceback" not in text


def test_audit_after_the_swap_takeover_is_gone_reports_the_swap_gap(scenario) -> None:
    out = scenario.boots["4-after-clean"].out
    swap = [row for row in audit_lines(out, "audit-swap-gap") if row[0] == "swap"]
    assert swap and swap[0][1] == "gap" and "not encrypted" in " ".join(swap[0]), swap

"""qubes-ephemeral audit, on recorded outputs.

tests/audit_recordings/ holds what the audit read in the VM suite (dmsetup,
blkid, swapon's /proc/swaps, findmnt, lsblk, systemctl, the emulated Qubes
admin commands, sysfs), recorded with `audit --record` on three systems:
before the formula was applied, after the apply and a reboot, and after
clean (dom0's own swap back). The VM suite checks the same audit live; here
the parsing and the verdicts are checked without booting anything, plus the
edge cases a VM cannot easily show: key material in a table, no root,
a description that is not valid.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import pytest
from conftest import PILLAR_EXAMPLE, run_cli
from qubes_ephemeral.api import describe
from qubes_ephemeral.dom0 import audit, audit_report, parsers, probe
from qubes_ephemeral.dom0.probe import Host, Output, RecordedHost
from qubes_ephemeral.render.manifest import render

RECORDINGS = Path(__file__).parent / "audit_recordings"
# The pillar of the VM suite's first boots: pillar.example with journald: volatile.
VM_PILLAR = PILLAR_EXAMPLE.read_text().replace("journald: unchanged", "journald: volatile")
NO_SWAP_PILLAR = (
    VM_PILLAR[: VM_PILLAR.index("  # Optional: swap on a device")]
    + VM_PILLAR[VM_PILLAR.index("  # Optional: Qubes storage") :]
)

# Boot 5's: boot 4 applied pillar.example's description with activate: now, and left it.
ACTIVATE_NOW_PILLAR = VM_PILLAR.replace("  activate: boot", "  activate: now")
# Each recording (scripts/record-audits copies them from the VM suite) and the description it was made with.
RECORDED_WITH = {"before-apply": VM_PILLAR, "after-reboot": VM_PILLAR, "swap-gap": NO_SWAP_PILLAR,
                 "guard-refused": ACTIVATE_NOW_PILLAR}  # fmt: skip


def replay(recording: str, pillar: str, tmp_path: Path, *extra: str):
    path = tmp_path / "pillar.sls"
    path.write_text(pillar)
    return run_cli("audit", str(path), "--replay", str(RECORDINGS / f"{recording}.json"), *extra)


def findings(result) -> list[dict[str, object]]:
    return json.loads(result.stdout)["findings"]


def test_before_apply_everything_is_missing_and_the_persistent_swap_shows(tmp_path: Path) -> None:
    result = replay("before-apply", VM_PILLAR, tmp_path, "--json")
    assert result.status == 1
    found = findings(result)
    scratch = {f["item"]: f["status"] for f in found if f["area"] == "scratch"}
    assert scratch.pop("/dev/qubes_dom0/ephemeral holds no header") == "ok", "a fresh LV holds zeros"
    assert scratch and set(scratch.values()) == {"missing"}
    swap = [f for f in found if f["area"] == "swap" and str(f["item"]).startswith("/dev/dm-")]
    assert len(swap) == 1 and swap[0]["status"] == "missing" and "not encrypted" in str(swap[0]["detail"])
    assert any(f["area"] == "drift" and f["status"] == "missing" for f in found)


def test_after_apply_and_reboot_everything_asked_for_is_in_place(tmp_path: Path) -> None:
    result = replay("after-reboot", VM_PILLAR, tmp_path, "--json")
    assert result.status == 0, result.stdout
    report = json.loads(result.stdout)
    assert report["complete"] is True and report["counts"]["missing"] == 0 and report["counts"]["unknown"] == 0
    by_item = {f["item"]: f for f in report["findings"]}
    assert by_item["/dev/mapper/ephemeral cipher"]["detail"] == "aes-xts-plain64, 512 bits, 4096-byte sectors"
    assert by_item["/dev/mapper/ephemeral-swap cipher"]["status"] == "ok"
    assert by_item["/var/log/qubes"]["detail"].startswith("on the scratch filesystem (/dev/mapper/ephemeral[")
    assert by_item["default-dvm: /rw of its disposables"]["status"] == "gap", "private: persistent leaves /rw"
    assert by_item["qubesd extension loaded"]["status"] == "ok"


def test_a_stamp_from_a_qubesd_that_no_longer_runs_is_not_loaded(tmp_path: Path) -> None:
    # The after-reboot system, but qubesd restarted since and did not load the
    # extension: the PID in the stamp no longer names a process.
    record = json.loads((RECORDINGS / "after-reboot.json").read_text())
    pid = json.loads(record["read"]["/run/qubes-ephemeral/qubesd-extension.json"])["pid"]
    assert "/usr/bin/qubesd" in record["read"].pop(f"/proc/{pid}/cmdline"), "the stand-in runs as qubesd"
    (tmp_path / "restarted.json").write_text(json.dumps(record))
    (tmp_path / "pillar.sls").write_text(VM_PILLAR)
    result = run_cli("audit", str(tmp_path / "pillar.sls"), "--replay", str(tmp_path / "restarted.json"), "--json")
    assert result.status == 1
    extension = next(f for f in findings(result) if f["item"] == "qubesd extension loaded")
    assert extension["status"] == "missing" and f"PID {pid}, which no longer runs" in str(extension["detail"])


@pytest.mark.parametrize("name", sorted(RECORDED_WITH))
def test_a_recording_is_not_older_than_the_audit_that_replays_it(name: str) -> None:
    """What the audit asks today, the VM suite's audit asked when it made the recording.
    A check added since would replay as "command not found" and test nothing real."""
    assert ACTIVATE_NOW_PILLAR != VM_PILLAR
    host = RecordedHost.load(RECORDINGS / f"{name}.json")
    description = describe(RECORDED_WITH[name].encode())
    audit.audit(host, description, render(description))
    assert host.misses == [], (f"tests/audit_recordings/{name}.json is older than the audit: it never saw "
                               f"{host.misses[:3]}; make it again with scripts/record-audits")  # fmt: skip


def test_the_recordings_are_those_the_vm_suite_makes() -> None:
    recorded = sorted(path.stem for path in RECORDINGS.glob("*.json"))
    script = (Path(__file__).parent.parent / "scripts" / "record-audits").read_text()
    listed = sorted(line.split()[0] for line in script.split("<<'LIST'\n")[1].split("\nLIST")[0].splitlines())
    assert recorded == listed == sorted(RECORDED_WITH)


def test_a_recording_missing_what_the_audit_asks_is_told_stale() -> None:
    """The anti-test of the staleness check: take one command out, and it is told."""
    record = json.loads((RECORDINGS / "after-reboot.json").read_text())
    dropped = next(argv for argv in record["run"] if json.loads(argv)[:2] == ["systemctl", "show"])
    del record["run"][dropped]
    host = RecordedHost(record)
    description = describe(VM_PILLAR.encode())
    audit.audit(host, description, render(description))
    assert host.misses == [f"run {dropped}"]


def test_a_protecting_unit_that_failed_is_failed_with_exit_1(tmp_path: Path) -> None:
    """Boot 5 of the VM suite: the guard refused to key a volume that holds someone's data, so
    systemd-cryptsetup@ephemeral.service failed. The audit says "failed", in JSON and in the table."""
    result = replay("guard-refused", ACTIVATE_NOW_PILLAR, tmp_path, "--json")
    assert result.status == 1
    report = json.loads(result.stdout)
    units = {f["item"]: f for f in report["findings"] if f["area"] == "units"}
    crypt = units["systemd-cryptsetup@ephemeral.service"]
    assert crypt["status"] == "failed" and crypt["required"] is True, crypt
    assert report["complete"] is False and report["counts"]["failed"] >= 1
    table = replay("guard-refused", ACTIVATE_NOW_PILLAR, tmp_path)
    assert table.status == 1
    row = next(line for line in table.stdout.splitlines() if "systemd-cryptsetup@ephemeral.service" in line)
    assert row.split()[:2] == ["units", "failed"]
    assert " failed, " in table.stdout.splitlines()[-1] and "NOT everything" in table.stdout


@pytest.mark.parametrize(
    ("show", "status"),
    [
        ("LoadState=loaded\nActiveState=failed\nSubState=failed\nResult=exit-code\n", "failed"),
        ("LoadState=not-found\nActiveState=inactive\nSubState=dead\nResult=success\n", "missing"),
        ("LoadState=bad-setting\nActiveState=inactive\nSubState=dead\nResult=success\n", "failed"),
        ("LoadState=masked\nActiveState=inactive\nSubState=dead\nResult=success\n", "failed"),
        ("LoadState=loaded\nActiveState=inactive\nSubState=dead\nResult=success\n", "missing"),
        ("LoadState=loaded\nActiveState=activating\nSubState=start\nResult=success\n", "unknown"),
        ("LoadState=loaded\nActiveState=active\nSubState=exited\nResult=success\n", "ok"),
        ("garbage", "unknown"),
    ],
)
def test_each_protecting_unit_is_judged_by_what_systemd_says(show: str, status: str) -> None:
    record = json.loads(json.dumps(AFTER_REBOOT))
    for argv in record["run"]:
        if json.loads(argv)[:2] == ["systemctl", "show"]:
            record["run"][argv] = [0, show, ""]
    found = audit.audit(RecordedHost(record), describe(VM_PILLAR.encode()), render(describe(VM_PILLAR.encode())))
    units = [f for f in found if f.area == "units"]
    assert len(units) >= 6 and {f.status for f in units} == {status}, units
    assert audit.exit_code(found) == (0 if status == "ok" else 1)


def test_the_protect_unit_failed_is_failed_not_ok() -> None:
    record = json.loads(json.dumps(AFTER_REBOOT))
    record["run"][json.dumps(["systemctl", "is-active", "qubes-ephemeral-protect.service"])] = [3, "failed\n", ""]
    found = verdicts(RecordedHost(record))
    assert found["bare mount point /var/lib/qubes-ephemeral protected"].status == "failed"


def test_after_clean_the_swap_is_a_gap_again(tmp_path: Path) -> None:
    result = replay("swap-gap", NO_SWAP_PILLAR, tmp_path, "--json")
    swap = [f for f in findings(result) if f["area"] == "swap"]
    assert len(swap) == 1 and swap[0]["status"] == "gap" and swap[0]["required"] is False
    assert "not encrypted" in str(swap[0]["detail"])


def test_table_output_is_plain_text_when_not_on_a_terminal(tmp_path: Path) -> None:
    result = replay("after-reboot", VM_PILLAR, tmp_path)
    assert result.status == 0
    assert "\033[" not in result.stdout
    assert result.stdout.splitlines()[0].split() == ["AREA", "STATUS", "LEVEL", "WHAT", "DETAIL"]
    assert result.stdout.rstrip().endswith("30 ok, 0 failed, 0 missing, 7 gaps, 0 unknown")
    coloured = audit_report.table([audit.Finding("swap", "x", "missing", 1, "d", True)], colour=True)
    assert "\033[31mmissing" in coloured


def test_an_invalid_description_exits_2(tmp_path: Path) -> None:
    result = replay("after-reboot", VM_PILLAR.replace("/dev/qubes_dom0/ephemeral", "/dev/sdb"), tmp_path)
    assert result.status == 2
    assert "ephemeral.scratch.device" in result.stderr


def test_json_schema_is_stable(tmp_path: Path) -> None:
    report = json.loads(replay("after-reboot", VM_PILLAR, tmp_path, "--json").stdout)
    assert set(report) == {"format", "description", "complete", "counts", "findings"}
    assert report["format"] == 2  # 2: the status "failed" (and its count)
    assert set(report["counts"]) == {"ok", "failed", "missing", "gap", "unknown"}
    for finding in report["findings"]:
        assert set(finding) == {"area", "item", "status", "level", "detail", "required"}
        assert finding["status"] in ("ok", "failed", "missing", "gap", "unknown")


# --- recorded by hand: what a VM does not show easily ---

KEY = "6a" * 64  # a 512-bit key, as dmsetup table --showkeys would print it


def host_with(**runs: tuple[int, str, str]) -> RecordedHost:
    record: dict[str, dict[str, object]] = {"run": {}, "read": {}, "listdir": {}, "exists": {}}
    for argv, output in runs.items():
        record["run"][json.dumps(argv.split("|"))] = list(output)
    record["listdir"]["/sys/block"] = ["dm-3"]
    record["read"].update({"/sys/block/dm-3/dm/name": "ephemeral\n", "/sys/block/dm-3/dm/uuid": "CRYPT-PLAIN-ephemeral\n",
                           "/sys/block/dm-3/dev": "253:3\n", "/etc/crypttab": "ephemeral /dev/qubes_dom0/ephemeral "
                           "/dev/urandom plain\n", "/proc/swaps": "Filename Type Size Used Priority\n"})  # fmt: skip
    return RecordedHost(record)


MINIMAL = describe(b"ephemeral:\n  scratch:\n    device: /dev/qubes_dom0/ephemeral\n")


def test_key_material_is_never_printed_even_if_a_table_carries_it() -> None:
    table = f"0 67108864 crypt aes-xts-plain64 {KEY} 0 254:3 0 3 no_read_workqueue no_write_workqueue sector_size:4096"
    host = host_with(**{"dmsetup|table|--|ephemeral": (0, table, "")})
    found = audit.Audit(host, MINIMAL, render(MINIMAL))._table(MINIMAL.scratch, "scratch")
    assert found.status == "ok" and found.detail == "aes-xts-plain64, 512 bits, 4096-byte sectors"
    text = audit_report.table([found], colour=False) + audit_report.as_json([found], "x")
    assert KEY not in text and "6a6a" not in text


def test_without_root_the_audit_says_what_it_could_not_check() -> None:
    denied = (1, "", "/dev/mapper/control: open failed: Permission denied\nFailure to communicate with kernel")
    host = host_with(**{"dmsetup|table|--|ephemeral": denied, "blkid|-p|-o|export|--|/dev/qubes_dom0/ephemeral": (
        2, "", "error: /dev/qubes_dom0/ephemeral: Permission denied\n")})  # fmt: skip
    host.record["exists"]["/dev/qubes_dom0/ephemeral"] = True
    checker = audit.Audit(host, MINIMAL, render(MINIMAL))
    table = checker._table(MINIMAL.scratch, "scratch")
    assert table.status == "unknown" and table.detail == "dmsetup table needs root: run the audit with sudo"
    header = checker._no_header(MINIMAL.scratch, "scratch")
    assert header.status == "unknown" and "needs root" in header.detail
    assert audit.exit_code([table]) == 1, "what could not be checked is not reported as in place"


def test_a_plain_mapping_with_a_stored_key_is_not_keyed_at_boot() -> None:
    host = host_with()
    host.record["read"]["/etc/crypttab"] = "ephemeral /dev/qubes_dom0/ephemeral /etc/ephemeral.key plain\n"
    status, detail = audit.Audit(host, MINIMAL, render(MINIMAL))._keyed_at_boot("ephemeral")
    assert status == "missing" and "/etc/ephemeral.key" in detail


@pytest.mark.parametrize(
    ("table", "bits", "sector", "cipher"),
    [
        ("0 8 crypt aes-xts-plain64 " + "0" * 128 + " 0 254:3 0", 512, 512, "aes-xts-plain64"),
        ("0 8 crypt aes-xts-plain64 :64:logon:cryptsetup:abc 0 254:3 0 1 sector_size:4096", 512, 4096, "aes-xts-plain64"),
        ("0 8 crypt aes-cbc-essiv:sha256 " + "0" * 64 + " 0 8:16 0 1 allow_discards", 256, 512, "aes-cbc-essiv:sha256"),
    ],
)  # fmt: skip
def test_crypt_target_reads_cipher_key_size_and_sector_size(table: str, bits: int, sector: int, cipher: str) -> None:
    target = parsers.crypt_target(table)
    assert target is not None
    assert (target.cipher, target.key_bits, target.sector_size) == (cipher, bits, sector)
    assert parsers.crypt_target("0 8 linear 254:3 0") is None


def test_small_parsers() -> None:
    assert parsers.proc_swaps("Filename\tType\tSize\tUsed\tPriority\n/dev/dm-2  partition 1 0 -2\n") == ["/dev/dm-2"]
    assert parsers.crypttab("# c\nname /dev/x /dev/urandom plain,swap\nbare /dev/y\n") == {
        "name": ("/dev/x", "/dev/urandom", "plain,swap"), "bare": ("/dev/y", "none", "")}  # fmt: skip
    assert parsers.journald_storage("[Journal]\nStorage=auto\n# drop-in\n[Journal]\nStorage=volatile\n") == "volatile"
    chain = parsers.lsblk_chain(json.dumps({"blockdevices": [{"name": "swap", "type": "crypt", "children": [
        {"name": "qubes_dom0-swap", "type": "lvm", "children": [{"name": "vdb", "type": "disk"}]}]}]}))  # fmt: skip
    assert [node["type"] for node in chain] == ["crypt", "lvm", "disk"]


def test_output_knows_a_permission_problem() -> None:
    assert Output(1, "", "open failed: Permission denied").denied
    assert not Output(1, "", "No such device").denied


@pytest.mark.parametrize(
    ("uuid", "key", "status", "how"),
    [
        ("CRYPT-PLAIN-cryptswap", "/dev/urandom", "ok", "keyed at boot (plain dm-crypt cryptswap, key from /dev/urandom)"),
        ("CRYPT-PLAIN-cryptswap", "/etc/swap.key", "gap", "under a persistent key (PLAIN cryptswap)"),
        ("CRYPT-LUKS2-0123-cryptswap", "none", "gap", "under a persistent key (LUKS2 cryptswap)"),
    ],
)  # fmt: skip
def test_a_swap_we_do_not_manage_is_judged_by_its_key(uuid: str, key: str, status: str, how: str) -> None:
    chain = {"blockdevices": [{"name": "cryptswap", "kname": "dm-5", "path": "/dev/mapper/cryptswap", "type": "crypt",
                               "children": [{"name": "sda2", "kname": "sda2", "path": "/dev/sda2", "type": "part"}]}]}  # fmt: skip
    host = host_with(**{"lsblk|-J|-s|-o|NAME,KNAME,PATH,TYPE|--|/dev/dm-5": (0, json.dumps(chain), "")})
    host.record["listdir"]["/sys/block"] = ["dm-3", "dm-5"]
    host.record["read"].update({
        "/sys/block/dm-5/dm/name": "cryptswap\n", "/sys/block/dm-5/dm/uuid": f"{uuid}\n", "/sys/block/dm-5/dev": "253:5\n",
        "/proc/swaps": "Filename Type Size Used Priority\n/dev/dm-5 partition 1 0 -2\n",
        "/etc/crypttab": f"cryptswap /dev/sda2 {key} swap\n",
    })  # fmt: skip
    [found] = audit.Audit(host, MINIMAL, render(MINIMAL)).swaps()
    assert (found.item, found.status, found.required) == ("/dev/dm-5 (cryptswap)", status, False)
    assert found.detail.startswith(how)


COW = describe(
    PILLAR_EXAMPLE.read_bytes()
    .replace(b"default-dvm: {private: persistent}", b"default-dvm: {private: cow}")
    .replace(b"dispvm_private_cow: false", b"dispvm_private_cow: true")
)


@pytest.mark.parametrize(
    ("kernel", "features", "status"),
    [
        ("6.6.48-1.qubes.fc37.x86_64", {}, "ok"),  # dom0-provided: its initramfs is checked under patches
        ("", {}, "missing"),  # its template's own kernel, nothing says the template carries the hook
        ("", {"fedora-41": "dracut"}, "ok"),  # ephemeral.template applied in the template, and said so
        ("", {"default-dvm": "dracut"}, "ok"),
        ("", {"fedora-41": "yes"}, "missing"),
    ],
)
def test_a_cow_template_on_its_own_kernel_needs_the_hook_said_present(kernel: str, features: dict, status: str) -> None:
    runs = {
        "qvm-prefs|--|default-dvm|kernel": (0, f"{kernel}\n", ""),
        "qvm-prefs|--|default-dvm|template": (0, "fedora-41\n", ""),
        "qvm-features|--|default-dvm|qubes-ephemeral": (0, "1\n", ""),
        "qvm-features|--|default-dvm|qubes-ephemeral-private": (0, "cow\n", ""),
        # Not set: qvm-features exits 1, silently.
        "qvm-features|--|default-dvm|qubes-ephemeral-own-initramfs": (1, "", ""),
        "qvm-features|--|fedora-41|qubes-ephemeral-own-initramfs": (1, "", ""),
    }
    for vm, value in features.items():
        runs[f"qvm-features|--|{vm}|qubes-ephemeral-own-initramfs"] = (0, f"{value}\n", "")
    report = audit.Audit(host_with(**runs), COW, render(COW))
    found = {f.item: f for f in report._template("default-dvm", cow=True)}
    own = found["default-dvm: the kernel its disposables boot carries the /rw copy-on-write"]
    assert own.status == status, own.detail


LS = "qvm-ls|--raw-data|--fields|NAME,CLASS,TEMPLATE"


@pytest.mark.parametrize(
    ("listing", "features", "status", "says"),
    [
        # A named disposable of our template carries its copied mark: as it should.
        ((0, "default-dvm|AppVM|fedora-41\nsys-net|DispVM|default-dvm\n", ""), {"sys-net": "qubes-ephemeral  1"},
         "ok", "none"),
        # A start's record not put back (qubesd stopped mid-start).
        ((0, "sys-net|DispVM|default-dvm\n", ""), {"sys-net": 'qubes-ephemeral  1\nqubes-ephemeral-restore  [["root", "rw", true]]'},
         "missing", "not put back yet"),
        # Our mark on a disposable of a template the description no longer names.
        ((0, "old-disp|DispVM|old-dvm\n", ""), {"old-disp": "qubes-ephemeral  1"}, "missing", "from template old-dvm"),
        ((127, "", "qvm-ls: command not found"), {}, "unknown", "qvm-ls"),
    ],
)  # fmt: skip
def test_audit_reports_what_the_extension_or_an_earlier_pillar_left_on_disposables(
    listing: tuple[int, str, str], features: dict[str, str], status: str, says: str
) -> None:
    runs = {LS: listing, **{f"qvm-features|--|{vm}": (0, text + "\n", "") for vm, text in features.items()}}
    report = audit.Audit(host_with(**runs), COW, render(COW))
    found = report._leftovers(["default-dvm"])
    assert found.status == status and says in found.detail, found


# --- tools that are missing, cannot be run, fail or hang ---
#
# The audit's verdicts rest on what its commands print. A command that did not
# answer must never count as an answer: its checks are unknown, with the reason
# in one line, and the audit exits 1.

AFTER_REBOOT = json.loads((RECORDINGS / "after-reboot.json").read_text())
TOOLS = sorted({json.loads(argv)[0] for argv in AFTER_REBOOT["run"]})
# What is in place on that system by its files alone (sysfs, crypttab, /proc/swaps): all
# that may stay ok with no tool at all. (The qubesd extension is looked at only once
# qubes-prefs answered: in dom0.)
OK_WITHOUT_TOOLS = {
    "/dev/qubes_dom0/ephemeral as /dev/mapper/ephemeral",
    "/dev/mapper/qubes_dom0-swap as /dev/mapper/ephemeral-swap",
    # The remnants are found by their files: the kinds none was planted of (the VM suite, boot 2).
    "launcher-history", "notification-apps", "logout-screenshots", "session-errors", "libvirt-definitions",
    "qubes-xml-copies", "lvm-archives",
}  # fmt: skip
BROKEN = {
    "not installed": (127, "", "{tool}: command not found"),
    "not executable": (126, "", "{tool}: Permission denied"),
    "fails": (1, "", "{tool}: error: something went wrong\nsecond line"),
    "fails silently": (3, "", ""),
    "times out": (124, "", "{tool}: stopped after 60 s without an answer"),
    "killed": (-9, "", ""),
    "prints garbage": (0, "\x1b[31mgarbage {{", ""),
}


def broken_recording(tools: list[str], how: str) -> dict[str, dict[str, object]]:
    record = json.loads(json.dumps(AFTER_REBOOT))
    for argv in record["run"]:
        tool = json.loads(argv)[0]
        if tool in tools:
            rc, out, err = BROKEN[how]
            record["run"][argv] = [rc, out.format(tool=tool), err.format(tool=tool)]
    return record


def verdicts(host: Host) -> dict[str, audit.Finding]:
    """The findings by item; drift left out: it compares files with the render and runs no tool."""
    description = describe(VM_PILLAR.encode())
    return {f.item: f for f in audit.audit(host, description, render(description)) if f.area != "drift"}


BASELINE = verdicts(RecordedHost(AFTER_REBOOT))


def assert_only_unknown_where_a_tool_failed(found: dict[str, audit.Finding], tools: list[str],
                                            baseline: dict[str, audit.Finding] = BASELINE) -> None:  # fmt: skip
    """Against the same system with every tool answering: a broken tool turns checks into
    unknown, never into another verdict, and says so in one line."""
    for item, finding in found.items():
        before = baseline.get(item)
        assert finding.status == (before.status if before else "unknown") or finding.status == "unknown", finding
        assert "\n" not in finding.detail and finding.detail.isprintable(), finding
    unknown = [f for f in found.values() if f.status == "unknown"]
    assert unknown, f"breaking {tools} changed nothing"
    assert any(tool in f.detail for f in unknown for tool in tools), unknown
    assert audit.exit_code(list(found.values())) == 1


@pytest.mark.parametrize("how", sorted(BROKEN))
@pytest.mark.parametrize("tool", TOOLS)
def test_a_broken_tool_makes_its_checks_unknown_never_ok(tool: str, how: str) -> None:
    assert {f.status for f in BASELINE.values()} <= {"ok", "gap"}, "everything in place, as recorded"
    found = verdicts(RecordedHost(broken_recording([tool], how)))
    if tool == "lsblk":
        # Used there for the kernel name of the swap /proc/swaps names as /dev/dm-N: that
        # name is its own kernel name, lsblk or not. (Its other use: below.)
        assert found == BASELINE
        return
    if how == "prints garbage" and tool in ("qvm-features", "qubes-prefs", "qvm-pool", "systemctl"):
        # Their answers are plain text: garbage is a value, and not the one asked for.
        assert not [f for f in found.values() if f.status == "ok" and BASELINE[f.item].detail != f.detail]
        assert audit.exit_code(list(found.values())) == 1
        return
    assert_only_unknown_where_a_tool_failed(found, [tool])


@pytest.mark.parametrize("how", sorted(set(BROKEN) - {"prints garbage"}))
def test_without_lsblk_a_swap_we_do_not_manage_is_unknown_not_judged(how: str) -> None:
    """before-apply: dom0's own swap, /dev/dm-N on LVM, not encrypted: lsblk shows what it is built on."""
    record = json.loads((RECORDINGS / "before-apply.json").read_text())
    baseline = verdicts(RecordedHost(record))
    for argv in record["run"]:
        if json.loads(argv)[0] == "lsblk":
            rc, out, err = BROKEN[how]
            record["run"][argv] = [rc, out, err.format(tool="lsblk")]
    found = verdicts(RecordedHost(record))
    assert_only_unknown_where_a_tool_failed(found, ["lsblk"], baseline)
    swap = [f for f in found.values() if f.area == "swap" and f.item.startswith("/dev/dm-")]
    assert len(swap) == 1 and swap[0].status == "unknown" and "lsblk" in swap[0].detail, swap


@pytest.mark.parametrize("how", sorted(set(BROKEN) - {"prints garbage"}))
def test_with_every_tool_broken_only_what_files_show_stays_ok(how: str) -> None:
    found = verdicts(RecordedHost(broken_recording(TOOLS, how)))
    assert_only_unknown_where_a_tool_failed(found, TOOLS)
    assert {item for item, f in found.items() if f.status == "ok"} == OK_WITHOUT_TOOLS
    for item in ("/dev/mapper/ephemeral cipher", "/dev/qubes_dom0/ephemeral holds no header",
                 "mounted on /var/lib/qubes-ephemeral", "bare mount point /var/lib/qubes-ephemeral protected",
                 "/dev/mapper/ephemeral-swap cipher", "/var/log/qubes", "systemd journal"):  # fmt: skip
        assert found[item].status == "unknown", found[item]


class FilesRecordedToolsLive(RecordedHost):
    """The files of the after-reboot recording, and the commands run for real (PATH as set)."""

    def run(self, argv: Sequence[str]) -> Output:
        return Host.run(self, argv)


def tool_stubs(folder: Path, script: str, mode: int) -> Path:
    folder.mkdir()
    for tool in TOOLS:
        (folder / tool).write_text(script)
        (folder / tool).chmod(mode)
    return folder


@pytest.mark.parametrize(
    ("case", "says"),
    [
        ("empty PATH", "is not installed here (not found in PATH)"),
        ("stubs not executable (0644)", "could not be run (Permission denied)"),
        ("stubs without #!", "could not be run (Exec format error)"),
        ("stubs that are folders", "could not be run (Permission denied)"),
        ("stubs that fail", "failed (exit 2): "),
    ],
)
def test_live_tools_missing_or_unrunnable_are_unknown(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, case: str,
                                                      says: str) -> None:  # fmt: skip
    stubs = tmp_path / "bin"
    if case == "empty PATH":
        monkeypatch.setenv("PATH", "")
    else:
        if case == "stubs that are folders":
            stubs.mkdir()
            for tool in TOOLS:
                (stubs / tool).mkdir()
        else:
            script = {"stubs that fail": '#!/bin/sh\necho "$0: broken" >&2\nexit 2\n'}.get(case, "echo x\n")
            tool_stubs(stubs, script, 0o644 if "not executable" in case else 0o755)
        monkeypatch.setenv("PATH", str(stubs))
    found = verdicts(FilesRecordedToolsLive(AFTER_REBOOT))
    assert_only_unknown_where_a_tool_failed(found, TOOLS)
    assert {item for item, f in found.items() if f.status == "ok"} == OK_WITHOUT_TOOLS
    assert any(says in f.detail for f in found.values()), [f.detail for f in found.values()]


def test_a_tool_that_hangs_is_stopped_with_what_it_started(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    sleep = shutil.which("sleep")
    stubs = tool_stubs(tmp_path / "bin", f"#!/bin/sh\n{sleep} 60 &\necho $! >{tmp_path}/child\nwait\n", 0o755)
    monkeypatch.setenv("PATH", str(stubs))
    started = time.monotonic()
    output = Host(time_limit=0.5).run(["findmnt"])
    assert time.monotonic() - started < 10
    assert output.rc == probe.TIMED_OUT and not output.ran
    assert output.err.endswith("stopped after 0.5 s without an answer")
    child = int((tmp_path / "child").read_text())
    for _ in range(50):  # the sleep it started went with it (or is a zombie waiting for init)
        stat = Path(f"/proc/{child}/stat")
        if not stat.exists() or stat.read_text().split(")")[-1].split()[0] == "Z":
            break
        time.sleep(0.1)
    else:
        pytest.fail(f"the command's child {child} still runs")
    assert audit._why(output, "findmnt") == "findmnt timed out (stopped after 0.5 s without an answer)"


def test_a_hanging_tool_in_the_audit_is_unknown(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    stubs = tool_stubs(tmp_path / "bin", f"#!/bin/sh\nexec {shutil.which('sleep')} 60\n", 0o755)
    for tool in TOOLS:
        if tool != "findmnt":
            (stubs / tool).unlink()
    monkeypatch.setenv("PATH", str(stubs))
    host = FilesRecordedToolsLive(AFTER_REBOOT)
    host.time_limit = 0.3
    found = verdicts(host)
    assert found["mounted on /var/lib/qubes-ephemeral"].status == "unknown"
    assert (
        found["mounted on /var/lib/qubes-ephemeral"].detail
        == "findmnt timed out (stopped after 0.3 s without an answer)"
    )
    assert found["/var/log/qubes"].status == "unknown"


def test_the_command_with_unrunnable_tools_exits_1_with_no_traceback(tmp_path: Path) -> None:
    """The installed command, on this machine, with a PATH of stubs that cannot be run."""
    stubs = tool_stubs(tmp_path / "bin", "echo x\n", 0o644)
    result = subprocess.run([sys.executable, "-m", "qubes_ephemeral", "audit", str(PILLAR_EXAMPLE), "--json"],
                            capture_output=True, text=True, env={**os.environ, "PATH": str(stubs)}, check=False)  # fmt: skip
    assert result.returncode == 1 and result.stderr == "", result.stderr
    report = json.loads(result.stdout)
    assert report["complete"] is False and report["counts"]["unknown"] > 0
    for finding in report["findings"]:
        if any(f"{tool} " in finding["detail"] for tool in TOOLS):
            assert finding["status"] == "unknown", finding
    assert not [f for f in report["findings"] if f["status"] == "ok" and f["area"] in ("scratch", "qubes")]


def test_why_is_one_printable_line() -> None:
    assert audit._why(Output(127, "", "x: command not found"), "dmsetup table") == (
        "dmsetup is not installed here (not found in PATH)")  # fmt: skip
    assert audit._why(Output(126, "", "dmsetup: Permission denied"), "dmsetup table") == (
        "dmsetup could not be run (Permission denied)")  # fmt: skip
    assert audit._why(Output(-9, "", ""), "blkid -p") == "blkid -p was killed (signal 9)"
    assert audit._why(Output(5, "", ""), "blkid -p") == "blkid -p failed (exit 5): no message"
    why = audit._why(Output(1, "", "a\x1b[31m\nb\tc" + "x" * 300), "lsblk")
    assert why.startswith("lsblk failed (exit 1): a [31m b c") and why.isprintable() and len(why) < 200
    assert not Output(126, "", "Permission denied").denied, "not executable is not a question of root"


def test_a_recording_that_is_not_one_is_refused_in_one_line(tmp_path: Path) -> None:
    for text in ("[]", '{"run": []}', "{"):
        (tmp_path / "bad.json").write_text(text)
        (tmp_path / "pillar.sls").write_text(VM_PILLAR)
        result = run_cli("audit", str(tmp_path / "pillar.sls"), "--replay", str(tmp_path / "bad.json"))
        assert result.status == 2 and result.stderr.count("\n") == 1 and "not a recording" in result.stderr
    result = run_cli("audit", str(tmp_path / "pillar.sls"), "--replay", str(tmp_path / "missing.json"))
    assert (
        result.status == 2
        and result.stderr == f"qubes-ephemeral: --replay {tmp_path}/missing.json: No such file or directory\n"
    )


def test_the_table_prints_no_escape_sequence_a_tool_printed() -> None:
    found = audit.Finding(
        "qubes", "default-dvm: feature qubes-ephemeral", "missing", 1, "\x1b[2J\x1b]0;x\x07gone\nx", True
    )
    text = audit_report.table([found], colour=False)
    assert "\x1b" not in text and "\x07" not in text and "?[2J?]0;x?gone?x" in text

"""The VM scenario: seven boots of one dom0-like machine, recorded once per run.

Each test in test_vm.py asserts on one part of the record, so a failure
names the claim that broke. Booting takes minutes under TCG; the scenario
runs once per pytest session.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from initramfs_fixtures import QUBES_LIKE_INIT, make_initramfs
from qubes_ephemeral.payload import vm_initramfs
from vmharness import ROOT, SUITE, VM, Boot, find_in_file, package_tarball

JOBS = Path(__file__).parent / "jobs"
GUEST = Path(__file__).parent / "guest"
# Debian bookworm (systemd 252) runs every boot; trixie (systemd 257) the boot and reboot canaries, so
# that R4.2's systemd 251 and R4.3's 256 are bracketed (QE_VM_SUITE, docs/testing.md).
ALL_STEPS = [
    "1-provision-apply",
    "2-after-apply",
    "3-after-reboot",
    "4-after-clean",
    "5-volume-holds-data",
    "6-missing-volume",
    "7-vm-initramfs",
]
STEPS = ALL_STEPS if SUITE == "bookworm" else ALL_STEPS[:3]
# The pillar of boot 1: pillar.example, with the journal in memory only.
PILLAR = (ROOT / "pillar.example").read_text().replace("journald: unchanged", "journald: volatile")
# Boot 2 applies the Qubes side in full: a pool on the scratch filesystem as
# the default for volatile volumes, and the /rw copy-on-write.
COW_PILLAR = (
    PILLAR.replace("    pool: null", "    pool: ephemeral")
    .replace("default_pool_volatile: false", "default_pool_volatile: true")
    .replace("default-dvm: {private: persistent}", "default-dvm: {private: cow}")
    .replace("dispvm_private_cow: false", "dispvm_private_cow: true")
)
# A description without the swap takeover, for the audit after clean.
NO_SWAP_PILLAR = (
    PILLAR[: PILLAR.index("  # Optional: swap on a device")] + PILLAR[PILLAR.index("  # Optional: Qubes storage") :]
)
# Boot 4 applies and cleans a description with only a swap, switched on now.
SWAP_ONLY_PILLAR = (ROOT / "tests/golden/swap-only/input.yaml").read_text() + "  activate: now\n"
APPENDED_MARK = "qubes-ephemeral-test: appended init ran"


def appended_initrd(initrd: Path) -> bytes:
    """The kernel's own initramfs with an archive appended by the tool's
    append_archive: a copy of its /init that says so in the kernel log."""
    data = initrd.read_bytes()
    init = vm_initramfs.read_file(data, "init")
    assert init is not None
    lines = init.data.decode().split("\n")
    # Right after Debian's init mounts /dev/pts: /dev/kmsg is there from then on.
    at = next(i for i, line in enumerate(lines) if line.startswith("mount -t devpts"))
    lines.insert(at + 1, f'echo "{APPENDED_MARK}" >/dev/kmsg')
    return vm_initramfs.append_archive(data, [vm_initramfs.Entry("init", init.mode, "\n".join(lines).encode())])


class Boots(dict[str, Boot]):
    """The boots of this run: a test about a boot this suite does not run is skipped."""

    def __missing__(self, step: str) -> Boot:
        pytest.skip(f"boot {step} is not part of the {SUITE} run")


@dataclass
class Scenario:
    vm: VM
    markers: list[str]
    kernel_digests: dict[str, str]  # path in the guest -> SHA-256 of the VM kernels' original initramfs
    boots: Boots = field(default_factory=lambda: Boots())
    keys: dict[str, dict[str, str]] = field(default_factory=dict)  # phase -> {mapping: key as hex}, all boots
    # After each boot, from the host: the raw disk images searched for every key so far and each phase's decoy.
    raw_scans: dict[str, dict[str, dict[str, bool]]] = field(default_factory=dict)


def raw_scan(vm: VM, keys: dict[str, dict[str, str]], decoys: dict[str, str]) -> dict[str, dict[str, bool]]:
    """{label: {image: found}} for every key (as lower/upper-case hex and raw bytes) and every
    decoy (as the guest planted it: hex in one file, raw bytes in another) in the raw images."""
    needles: dict[str, bytes] = {}
    for phase, found in keys.items():
        for name, key in found.items():
            for form, needle in (("hex", key.lower().encode()), ("HEX", key.upper().encode()),
                                 ("raw", bytes.fromhex(key))):  # fmt: skip
                needles[f"key {phase}/{name} {form}"] = needle
    for phase, decoy in decoys.items():
        needles[f"decoy {phase} hex"] = decoy.encode()
        needles[f"decoy {phase} raw"] = bytes.fromhex(decoy)
    return {label: {image.name: label in hits for image, hits in
                    ((image, find_in_file(image, needles)) for image in (vm.root, vm.data))}
            for label in needles}  # fmt: skip


def _missing() -> str | None:
    if os.geteuid() != 0:
        return "the VM suite needs root (debootstrap, image build)"
    for tool in ("qemu-system-x86_64", "qemu-img", "debootstrap"):
        if shutil.which(tool) is None:
            return f"{tool} is missing (scripts/test installs it)"
    return None


@pytest.fixture(scope="session")
def scenario() -> Scenario:
    why = _missing()
    if why:
        if os.environ.get("STRICT_TOOLS") == "1":
            pytest.fail(why)
        pytest.skip(why)
    # A fixed folder (not pytest's rotating temp dirs), kept after the run for inspection.
    work = ROOT / "build" / ("vm" if SUITE == "bookworm" else f"vm-{SUITE}")
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    vm = VM(work)
    markers = [f"qe-canary-{secrets.token_hex(12)}" for _ in range(8)]
    files: dict[str, Path | str | bytes] = {
        "qubes-ephemeral.tar.gz": package_tarball(work),
        "guest": GUEST,
        "qubes_emulation": ROOT / "tests" / "qubes_emulation",
        "common.sh": (JOBS / "common.sh").read_text(),
        "markers": "\n".join(markers) + "\n",
        "pillar/top.sls": "base:\n  '*':\n    - ephemeral\n",
        "pillar/ephemeral.sls": PILLAR,
        "cow-pillar.sls": COW_PILLAR,
        "no-swap-pillar.sls": NO_SWAP_PILLAR,
        "swap-only-pillar.sls": SWAP_ONLY_PILLAR,
        "qubesd_standin": ROOT / "tests" / "qubesd_standin",
        # Two dom0-provided VM kernels, their initramfs shaped like Qubes' (see test_vm_initramfs.py).
        "kernels/6.6.1/initramfs": make_initramfs(),
        "kernels/6.7.2/initramfs": make_initramfs(init=QUBES_LIKE_INIT + "# 6.7.2\n"),
        # The initramfs of guest/private_cow.sh: a stand-in for Qubes' VM /init.
        "qubes-like-initramfs": make_initramfs(init=(GUEST / "qubes_like_init.sh").read_text()),
    }
    initrd = vm.work / "initrd-appended.img"
    initrd.write_bytes(appended_initrd(vm.initrd))
    digests = {f"/var/lib/qubes/vm-kernels/{name.split('/')[1]}/initramfs": hashlib.sha256(data).hexdigest()
               for name, data in files.items() if name.startswith("kernels/") and isinstance(data, bytes)}  # fmt: skip
    result = Scenario(vm, markers, digests)
    for step in STEPS:
        boot = vm.boot((JOBS / f"{step}.sh").read_text(), files, initrd=initrd if step == "7-vm-initramfs" else None)
        result.boots[step] = boot
        if boot.rc != 0:
            raise AssertionError(f"boot {step}: job exit {boot.rc}\n{boot.stderr[-3000:]}\n{boot.console[-3000:]}")
        if step == "2-after-apply":
            files["canary1-block"] = (boot.out / "canary1-block").read_text()
        # Each boot's out/ is replaced by the next one: keep it.
        shutil.copytree(boot.out, vm.work / f"out-{step}")
        boot.out = vm.work / f"out-{step}"
        reports = [json.loads(path.read_text()) for path in sorted(boot.out.glob("keyscan-*.json"))]
        result.keys.update({report["phase"]: report["keys"] for report in reports})
        files["known-keys.json"] = json.dumps(result.keys)
        decoys = {report["phase"]: report["decoy"] for report in reports}
        result.raw_scans[step] = raw_scan(vm, result.keys, decoys)
    return result

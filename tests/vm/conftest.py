"""The VM scenario: six boots of one dom0-like machine, recorded once per run.

Each test in test_vm.py asserts on one part of the record, so a failure
names the claim that broke. Booting takes minutes under TCG; the scenario
runs once per pytest session.
"""

from __future__ import annotations

import os
import secrets
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from vmharness import ROOT, VM, Boot

JOBS = Path(__file__).parent / "jobs"
GUEST = Path(__file__).parent / "guest"
STEPS = [
    "1-provision-apply",
    "2-after-apply",
    "3-after-reboot",
    "4-after-clean",
    "5-volume-holds-data",
    "6-missing-volume",
]


@dataclass
class Scenario:
    vm: VM
    markers: list[str]
    boots: dict[str, Boot] = field(default_factory=dict)


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
    work = ROOT / "build" / "vm"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    vm = VM(work)
    markers = [f"qe-canary-{secrets.token_hex(12)}" for _ in range(3)]
    files: dict[str, Path | str] = {
        "formula": ROOT / "ephemeral-formula",
        "guest": GUEST,
        "qubes_emulation": ROOT / "tests" / "qubes_emulation",
        "common.sh": (JOBS / "common.sh").read_text(),
        "markers": "\n".join(markers) + "\n",
        "pillar/top.sls": "base:\n  '*':\n    - ephemeral\n",
        "pillar/ephemeral.sls": (ROOT / "pillar.example").read_text(),
    }
    result = Scenario(vm, markers)
    for step in STEPS:
        boot = vm.boot((JOBS / f"{step}.sh").read_text(), files)
        result.boots[step] = boot
        if boot.rc != 0:
            raise AssertionError(f"boot {step}: job exit {boot.rc}\n{boot.stderr[-3000:]}\n{boot.console[-3000:]}")
        if step == "2-after-apply":
            files["canary1-block"] = (boot.out / "canary1-block").read_text()
        # Each boot's out/ is replaced by the next one: keep it.
        shutil.copytree(boot.out, vm.work / f"out-{step}")
        boot.out = vm.work / f"out-{step}"
    return result

"""Mutation check: break the product on purpose, one known-bad change at a time,
and show that the test suite fails for each.

Each mutation replaces one exact piece of a product file (it must be there
once, or the mutation is out of date and the check fails). The suite runs on a
clone of the commit (HEAD) with the mutation applied; the first failing test
is the mutation's killer. The golden renders are left out: they fail on any
change of a rendered byte, so they would hide whether a test that means
something catches it. A mutation no test kills ("survived") fails the check.

Usage: scripts/mutate [--only NAME] [--list]   (a table on stdout; exit 1 if one survived)
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# The default tier without the golden renders, the kill matrix and the fuzz tier (slow, and no
# mutation here is theirs to catch), and the VM suite (minutes per boot: docs/testing.md).
DESELECT = ["tests/test_golden.py", "tests/test_formula_faults.py", "tests/test_fuzz.py", "tests/vm"]


@dataclass(frozen=True)
class Mutation:
    name: str
    path: str
    old: str
    new: str


MUTATIONS = [
    Mutation("a fixed key instead of the kernel RNG", "generator/qubes_ephemeral/render/manifest.py",
             "{crypt.device.path} /dev/urandom {crypt_options(crypt)}",
             "{crypt.device.path} /etc/qubes-ephemeral.key {crypt_options(crypt)}"),
    Mutation("no re-key at boot (the mapping is not opened at boot)", "generator/qubes_ephemeral/render/manifest.py",
             'options += ["nofail", f"x-systemd.device-timeout={crypt.device_timeout}s"]',
             'options += ["nofail", "noauto", f"x-systemd.device-timeout={crypt.device_timeout}s"]'),
    Mutation("a 256-bit key where the description asks 512", "generator/qubes_ephemeral/render/manifest.py",
             'f"size={crypt.key_size}"', 'f"size={min(crypt.key_size, 256)}"'),
    Mutation("the swap left on the persistent device", "generator/qubes_ephemeral/render/manifest.py",
             'pattern = rf"^[ \\t]*(?:{names})[ \\t]+\\S+[ \\t]+swap(?:[ \\t].*)?$"',
             'pattern = rf"^(?!)(?:{names})"'),
    Mutation("the boot guard removed", "generator/qubes_ephemeral/render/templates/guard.conf.j2",
             "ExecStartPre={{ guard_path }}", "ExecStartPre=-/bin/true {{ guard_path }}"),
    Mutation("the boot guard lets data through", "generator/qubes_ephemeral/render/templates/refuse-data.sh.j2",
             'refuse "it holds data ($found).', 'exit 0 "it holds data ($found).'),
    Mutation("the boot guard does not see a device in use", "generator/qubes_ephemeral/render/templates/refuse-data.sh.j2",
             '    [ -e "$held" ] && refuse "something is built on it', '    [ -e "$held" ] && : "something is built on it'),
    Mutation("the copy-on-write writing through to the private volume", "generator/qubes_ephemeral/payload/private-cow.sh",
             'echo "0 $qe_value snapshot $qe_private $qe_cow_private N 16"', 'echo "0 $qe_value linear $qe_private 0"'),
    Mutation("the audit always saying ok", "generator/qubes_ephemeral/dom0/audit.py",
             "        return findings\n", '        return [Finding(f.area, f.item, "ok", f.level, f.detail, f.required) '
             "for f in findings]\n"),
    Mutation("the audit taking a failed unit for ok", "generator/qubes_ephemeral/dom0/audit.py",
             'elif active == "failed":', 'elif active == "failed" and False:'),
    Mutation("the journal left on the persistent disk", "generator/qubes_ephemeral/render/templates/journald.conf.j2",
             "Storage=volatile", "Storage=auto"),
    Mutation("the validator lets a qube's volume through", "generator/qubes_ephemeral/description/devices.py",
             "    return volume.lv.startswith(QUBE_VOLUME_PREFIX)\n", "    return False\n"),
    Mutation("the apply-time check sees no device in use", "generator/qubes_ephemeral/dom0/preflight.py",
             '    """What makes the device, as dom0 sees it now, someone else\'s."""\n',
             '    """What makes the device, as dom0 sees it now, someone else\'s."""\n    return []\n'),
    Mutation("the bare mount point left writable", "generator/qubes_ephemeral/render/manifest.py",
             'Directory("mountpoint", scratch.mountpoint, "bare mount point, immutable while unmounted", immutable=True,',
             'Directory("mountpoint", scratch.mountpoint, "bare mount point, immutable while unmounted", immutable=False,'),
]  # fmt: skip


def first_failure(output: str) -> str:
    for line in output.splitlines():
        if line.startswith(("FAILED ", "ERROR ")):
            return line.split()[1].split(" - ")[0]
    return ""


def run(mutation: Mutation, clone: Path, python: str) -> tuple[str, str, float]:
    """(killed or survived or stale, the killing test, seconds)."""
    target = clone / mutation.path
    original = target.read_text()
    if original.count(mutation.old) != 1:
        return "stale", f"{mutation.path} does not hold the piece to change exactly once", 0.0
    target.write_text(original.replace(mutation.old, mutation.new))
    env = {**os.environ, "PYTHONPATH": str(clone / "generator"), "STRICT_TOOLS": "1"}
    command = [python, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", "-m", "not vm",
               *(f"--ignore={path}" for path in DESELECT)]  # fmt: skip
    started = time.monotonic()
    try:
        result = subprocess.run(command, cwd=clone, env=env, capture_output=True, text=True)
    finally:
        target.write_text(original)
    seconds = time.monotonic() - started
    if result.returncode == 0:
        return "SURVIVED", "", seconds
    return "killed", first_failure(result.stdout) or f"pytest exit {result.returncode}", seconds


def main() -> int:
    parser = argparse.ArgumentParser(prog="scripts/mutate", description=__doc__.splitlines()[0])
    parser.add_argument("--only", help="run the mutations whose name holds this text")
    parser.add_argument("--list", action="store_true", help="list the mutations and exit")
    args = parser.parse_args()
    chosen = [m for m in MUTATIONS if not args.only or args.only in m.name]
    if args.list or not chosen:
        print("\n".join(m.name for m in MUTATIONS))
        return 0 if chosen else 2
    commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True, check=True).stdout.strip()  # fmt: skip
    python = str(ROOT / ".venv" / "bin" / "python") if (ROOT / ".venv").exists() else sys.executable
    rows = []
    with tempfile.TemporaryDirectory(prefix="qubes-ephemeral-mutate-") as work:
        clone = Path(work) / "clone"
        subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True)
        for mutation in chosen:
            verdict, killer, seconds = run(mutation, clone, python)
            rows.append((mutation.name, verdict, killer, seconds))
            print(f"{verdict:8} {seconds:6.0f} s  {mutation.name}: {killer}", file=sys.stderr, flush=True)
    print(f"Mutation check on {commit}: {sum(r[1] == 'killed' for r in rows)} of {len(rows)} killed.\n")
    print("| mutation | result | first test that fails | seconds |")
    print("| --- | --- | --- | --- |")
    for name, verdict, killer, seconds in rows:
        print(f"| {name} | {verdict} | {f'`{killer}`' if killer else '-'} | {seconds:.0f} |")
    return 0 if all(r[1] == "killed" for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())

"""Mutation check: break the product on purpose, one known-bad change at a time,
and show that the test suite fails for each.

Each mutation replaces one exact piece of a product file (it must be there
once, or the mutation is out of date and the check fails), and names the
test files whose tests are about what it breaks. Those run on a clone of the
commit (HEAD) with the mutation applied; every test that fails kills it. The
golden renders are never among them: they fail on any change of a rendered
byte, so they would hide whether a test that means something catches it. A
mutation no test kills ("SURVIVED") fails the check.

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
# The test files each mutation runs against (the VM suite proves the same claims end to end,
# in minutes per boot: docs/testing.md).
FORMULA = "tests/test_formula.py"
GENERATORS = "tests/test_systemd_generators.py"  # what systemd makes of our lines at boot


@dataclass(frozen=True)
class Mutation:
    name: str
    path: str
    old: str
    new: str
    tests: tuple[str, ...]


MUTATIONS = [
    Mutation("a fixed key instead of the kernel RNG", "generator/qubes_ephemeral/render/manifest.py",
             "{crypt.device.path} /dev/urandom {crypt_options(crypt)}",
             "{crypt.device.path} /etc/qubes-ephemeral.key {crypt_options(crypt)}",
             (GENERATORS, FORMULA)),
    Mutation("no re-key at boot (the mapping is not opened at boot)", "generator/qubes_ephemeral/render/manifest.py",
             'options += ["nofail", f"x-systemd.device-timeout={crypt.device_timeout}s"]',
             'options += ["nofail", "noauto", f"x-systemd.device-timeout={crypt.device_timeout}s"]',
             (GENERATORS, FORMULA)),
    Mutation("a 256-bit key where the description asks 512", "generator/qubes_ephemeral/render/manifest.py",
             'f"size={crypt.key_size}"', 'f"size={min(crypt.key_size, 256)}"',
             (GENERATORS, FORMULA)),
    Mutation("the swap left on the persistent device", "generator/qubes_ephemeral/render/manifest.py",
             'pattern = rf"^[ \\t]*(?:{names})[ \\t]+\\S+[ \\t]+swap(?:[ \\t].*)?$"',
             'pattern = rf"^(?!)(?:{names})"',
             ("tests/test_textedit.py", FORMULA)),
    Mutation("the boot guard removed", "generator/qubes_ephemeral/render/templates/guard.conf.j2",
             "ExecStartPre={{ guard_path }}", "ExecStartPre=-/bin/true {{ guard_path }}",
             ("tests/test_guard.py", "tests/test_rendered_settings.py", FORMULA)),
    Mutation("the boot guard lets data through", "generator/qubes_ephemeral/render/templates/refuse-data.sh.j2",
             'refuse "it holds data ($found).', 'exit 0 "it holds data ($found).',
             ("tests/test_guard.py",)),
    Mutation("the boot guard does not see a device in use", "generator/qubes_ephemeral/render/templates/refuse-data.sh.j2",
             '    [ -e "$held" ] && refuse "something is built on it', '    [ -e "$held" ] && : "something is built on it',
             ("tests/test_guard.py",)),
    Mutation("the copy-on-write writing through to the private volume", "generator/qubes_ephemeral/payload/private-cow.sh",
             'echo "0 $qe_value snapshot $qe_private $qe_cow_private N 16"', 'echo "0 $qe_value linear $qe_private 0"',
             ("tests/test_private_cow_tools.py",)),
    Mutation("the audit always saying ok", "generator/qubes_ephemeral/dom0/audit.py",
             "        return findings\n", '        return [Finding(f.area, f.item, "ok", f.level, f.detail, f.required) '
             "for f in findings]\n",
             ("tests/test_audit.py",)),
    Mutation("the audit taking a failed unit for ok", "generator/qubes_ephemeral/dom0/audit.py",
             'yield Finding("units", unit, "failed", 1, f"failed ({result or sub})',
             'yield Finding("units", unit, "ok", 1, f"failed ({result or sub})',
             ("tests/test_audit.py",)),
    Mutation("the journal left on the persistent disk", "generator/qubes_ephemeral/render/templates/journald.conf.j2",
             "Storage=volatile", "Storage=auto",
             ("tests/test_rendered_settings.py", FORMULA, "tests/test_cli.py")),
    Mutation("the validator lets a qube's volume through", "generator/qubes_ephemeral/description/devices.py",
             "    return volume.lv.startswith(QUBE_VOLUME_PREFIX)\n", "    return False\n",
             ("tests/test_validation.py",)),
    Mutation("the apply-time check sees no device in use", "generator/qubes_ephemeral/dom0/preflight.py",
             '    """What makes the device, as dom0 sees it now, someone else\'s."""\n',
             '    """What makes the device, as dom0 sees it now, someone else\'s."""\n    return []\n',
             ("tests/test_preflight.py",)),
    Mutation("the remnants' clear follows symbolic links", "generator/qubes_ephemeral/dom0/remnants.py",
             "                if host.readlink(path) is not None:\n", "                if False:\n",
             ("tests/test_remnants.py",)),
    Mutation("a qube's log taken while the qube exists", "generator/qubes_ephemeral/dom0/remnants.py",
             "                if not owners & living:\n", "                if True:\n", ("tests/test_remnants.py",)),
    Mutation("the remnants' search reads through symbolic links", "generator/qubes_ephemeral/dom0/probe.py",
             "                    fd = os.open(name, flags | os.O_NOFOLLOW, dir_fd=folder)\n",
             "                    fd = os.open(path, flags)\n", ("tests/test_remnants.py",)),
    Mutation("the bare mount point left writable", "generator/qubes_ephemeral/render/manifest.py",
             'Directory("mountpoint", scratch.mountpoint, "bare mount point, immutable while unmounted", immutable=True,',
             'Directory("mountpoint", scratch.mountpoint, "bare mount point, immutable while unmounted", immutable=False,',
             (FORMULA,)),
]  # fmt: skip


def failures(output: str) -> list[str]:
    return [line.split()[1] for line in output.splitlines() if line.startswith(("FAILED ", "ERROR "))]


def environment(clone: Path) -> dict[str, str]:
    # The clone's generator; the project's Salt (scripts/test installs it) for the formula's tests.
    salt = {"SALT_CALL": str(ROOT / ".venv-salt" / "bin" / "salt-call")} if (ROOT / ".venv-salt").exists() else {}
    return {**os.environ, "PYTHONPATH": str(clone / "generator"), "STRICT_TOOLS": "1", **salt}


def baseline(tests: list[str], clone: Path, python: str) -> str:
    """Why the unmutated commit does not pass these tests ("" when it does): a kill is only a kill
    when the same tests pass without the mutation."""
    command = [python, "-m", "pytest", "-q", "-rfE", "-p", "no:cacheprovider", *tests]
    result = subprocess.run(command, cwd=clone, env=environment(clone), capture_output=True, text=True)
    return (
        "" if result.returncode == 0 else f"without any mutation, {failures(result.stdout)[:3] or result.stdout[-300:]}"
    )


def run(mutation: Mutation, clone: Path, python: str) -> tuple[str, str, float]:
    """(killed, SURVIVED or stale; the tests that failed; seconds)."""
    target = clone / mutation.path
    original = target.read_text()
    if original.count(mutation.old) != 1:
        return "stale", f"{mutation.path} does not hold the piece to change exactly once", 0.0
    target.write_text(original.replace(mutation.old, mutation.new))
    env = environment(clone)
    command = [python, "-m", "pytest", "-q", "-rfE", "-p", "no:cacheprovider", *mutation.tests]
    started = time.monotonic()
    try:
        result = subprocess.run(command, cwd=clone, env=env, capture_output=True, text=True)
    finally:
        target.write_text(original)
    seconds = time.monotonic() - started
    if result.returncode == 0:
        return "SURVIVED", "", seconds
    failed = failures(result.stdout)
    if not failed:
        return "broken", f"pytest exit {result.returncode}, no test failed: {result.stdout[-300:]}", seconds
    more = f" and {len(failed) - 1} more" if len(failed) > 1 else ""
    return "killed", f"{failed[0]}{more}", seconds


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
        tests = sorted({test for mutation in chosen for test in mutation.tests})
        why = baseline(tests, clone, python)
        if why:
            print(f"scripts/mutate: the tests fail {why}", file=sys.stderr)
            return 2
        for mutation in chosen:
            verdict, killer, seconds = run(mutation, clone, python)
            rows.append((mutation.name, verdict, killer, seconds))
            print(f"{verdict:8} {seconds:5.0f} s  {mutation.name}: {killer}", file=sys.stderr, flush=True)
    print(f"Mutation check on {commit}: {sum(r[1] == 'killed' for r in rows)} of {len(rows)} killed.\n")
    print("| mutation | result | tests that fail | seconds |")
    print("| --- | --- | --- | --- |")
    for name, verdict, killer, seconds in rows:
        print(f"| {name} | {verdict} | {f'`{killer}`' if killer else '-'} | {seconds:.0f} |")
    return 0 if all(r[1] == "killed" for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())

"""The formula and the audit with many qubes, on the host: salt-call in the
Salt tests' sandbox (tests/salt_sandbox.py: a private mount namespace over
dom0-like files, the Qubes admin commands emulated) with a description of
``templates`` disposable templates, beside the same runs with pillar.example's
one. Each emulated admin command is a process, as qvm-* are in dom0 (where
each also asks qubesd): the figures show how the formula scales with qubes,
not how fast a real dom0 is.

Usage: python bench/salt_scale.py  (prints the JSON run.py keeps)
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "tests"), str(ROOT / "bench")]

import qubes_emulation  # noqa: E402
import qubesd_process  # noqa: E402
import report  # noqa: E402
from salt_sandbox import Sandbox, available  # noqa: E402
from test_formula import DOM0_CRYPTTAB, DOM0_FSTAB  # noqa: E402

PILLAR_EXAMPLE = ROOT / "pillar.example"
TEMPLATES_LINE = "      default-dvm: {private: persistent}\n"


def _names(templates: int) -> list[str]:
    return [f"dvm-{index:03d}" for index in range(templates)]


def pillar(templates: int) -> str:
    """pillar.example with ``templates`` disposable templates in place of its one."""
    text = PILLAR_EXAMPLE.read_text()
    assert TEMPLATES_LINE in text, "pillar.example's disposable template line moved"
    return text.replace(
        TEMPLATES_LINE, "".join(f"      {name}: {{private: persistent}}\n" for name in _names(templates))
    )


def _timed(action: Any) -> float:
    start = time.perf_counter()
    action()
    return time.perf_counter() - start


def measure(folder: Path, templates: int, runs: int, qubesd: Any) -> dict[str, Any]:
    box = Sandbox(folder, pillar(templates))
    box.put("/etc/crypttab", DOM0_CRYPTTAB)
    box.put("/etc/fstab", DOM0_FSTAB)
    box.put(str(qubesd_process.STAMP), qubesd_process.loaded_by(qubesd))
    state = json.loads(box.qubes_state.read_text())
    for name in _names(templates):
        state["vms"].setdefault(
            name, {"prefs": {"template_for_dispvms": True}, "volumes": qubes_emulation.app_volumes()}
        )
    box.qubes_state.write_text(json.dumps(state))

    def apply() -> None:
        status, states = box.apply()
        failed = [key for key, value in states.items() if value["result"] is False]
        assert status == 0 and not failed, f"the apply failed: {failed}"

    box.put("/srv/bench-ephemeral.sls", pillar(templates))
    audit = (f"PYTHONPATH={ROOT / 'generator'} {sys.executable} -m qubes_ephemeral audit --json "
             "/srv/bench-ephemeral.sls >/dev/null")  # fmt: skip

    def audit_once() -> None:
        done = box.shell(audit)
        assert done.returncode in (0, 1), done.stderr[-2000:]  # 1: a gap (no real systemd here), still a full audit

    first = _timed(apply)
    return {
        "templates": templates,
        "first_apply_seconds": first,
        "reapply_seconds": report.stats([_timed(apply) for _ in range(runs)]),
        "audit_seconds": report.stats([_timed(audit_once) for _ in range(runs)]),
    }


def bench_salt_scale(templates: int = 200, runs: int = 5) -> dict[str, Any]:
    """Apply, no-op re-apply and audit with one disposable template and with ``templates``
    (medians of ``runs``, each run kept)."""
    why = available()
    if why:
        raise SystemExit(f"bench: the Salt sandbox cannot run: {why}")
    qubesd = qubesd_process.running()
    process = next(qubesd)
    try:
        with tempfile.TemporaryDirectory(prefix="bench-salt-") as folder:
            return {str(count): measure(Path(folder) / str(count), count, runs, process) for count in (1, templates)}
    finally:
        process.kill()
        process.wait()
        qubesd.close()


if __name__ == "__main__":
    print(json.dumps(bench_salt_scale(), indent=1))

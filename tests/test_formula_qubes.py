"""The formula's Qubes states, run against the emulated admin commands.

Qubes cannot run here: tests/qubes_emulation stands in for qvm-pool,
qvm-volume, qvm-prefs and qubes-prefs with upstream's command lines,
outputs, exit codes and rules. Proves: the settings are made, only what
differs is changed (a re-apply calls nothing that changes state), test=True
announces them, clean puts back the values as they were, and a name that is
not a disposable template is refused before any change.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import PILLAR_EXAMPLE
from salt_sandbox import Sandbox
from test_formula import DOM0_CRYPTTAB, DOM0_FSTAB, changed, failed, sandbox  # noqa: F401 (fixture)

pytestmark = pytest.mark.salt

# What a user reads with the admin commands; every entry is something we may change.
READS = {
    "pool": ("qvm-pool", "info", "vm-pool"),
    "root-rw": ("qvm-volume", "info", "default-dvm:root", "rw"),
    "volatile-ephemeral": ("qvm-volume", "info", "default-dvm:volatile", "ephemeral"),
    "other-dvm-root-rw": ("qvm-volume", "info", "work-dvm:root", "rw"),
    "other-pool": ("qvm-pool", "info", "varlibqubes"),
    "features": ("qvm-features", "default-dvm"),
}


def reads(box: Sandbox) -> dict[str, str]:
    return {name: box.qubes(*argv) for name, argv in READS.items()}


def test_qubes_settings_apply_reapply_and_clean(sandbox: Sandbox) -> None:  # noqa: F811
    before = reads(sandbox)
    assert "ephemeral_volatile  False" in before["pool"]

    status, dry = sandbox.apply(test=True)
    assert status == 0, failed(dry)
    pending = {key.split("_|-")[1] for key, state in dry.items() if state["result"] is None}
    assert {"ephemeral-qubes-pool-vm-pool-ephemeral_volatile", "ephemeral-qubes-volume-default-dvm-root-rw",
            "ephemeral-qubes-volume-default-dvm-volatile-ephemeral"} <= pending  # fmt: skip
    assert sandbox.qubes_calls() == [], "test=True must not change Qubes"

    status, first = sandbox.apply()
    assert status == 0, failed(first)
    assert set(changed(first)) == pending
    assert sandbox.qubes_calls() == [
        ["qvm-features", "--", "default-dvm", "qubes-ephemeral", "1"],
        ["qvm-volume", "config", "default-dvm:root", "rw", "False"],
        ["qvm-volume", "config", "default-dvm:volatile", "ephemeral", "True"],
        ["qvm-pool", "set", "vm-pool", "-o", "ephemeral_volatile=True"],
    ]
    after = reads(sandbox)
    assert after["root-rw"] == "False" and after["volatile-ephemeral"] == "True"
    assert "ephemeral_volatile  True" in after["pool"]
    assert after["features"] == "qubes-ephemeral  1", "switches the qubesd extension on"
    assert after["other-dvm-root-rw"] == before["other-dvm-root-rw"] and after["other-pool"] == before["other-pool"]

    status, again = sandbox.apply()
    assert status == 0 and changed(again) == {}
    assert len(sandbox.qubes_calls()) == 4, "a re-apply must call nothing that changes Qubes"

    status, dry_clean = sandbox.apply("ephemeral.clean", test=True)
    pending = {key.split("_|-")[1] for key, state in dry_clean.items() if state["result"] is None}
    assert len(sandbox.qubes_calls()) == 4
    status, clean = sandbox.apply("ephemeral.clean")
    assert status == 0, failed(clean)
    assert set(changed(clean)) == pending
    assert reads(sandbox) == before
    restoring = sandbox.qubes_calls()[4:]
    assert ["qvm-features", "--unset", "--", "default-dvm", "qubes-ephemeral"] in restoring, "was not set: unset"
    assert ["qvm-pool", "set", "vm-pool", "-o", "ephemeral_volatile=False"] in restoring
    assert len(restoring) == 4
    assert not sandbox.exists("/etc/qubes-ephemeral/qubes-originals.json")
    assert not sandbox.exists("/etc/qubes-ephemeral")
    status, clean_again = sandbox.apply("ephemeral.clean")
    assert status == 0 and changed(clean_again) == {}


def test_a_qube_that_is_not_a_disposable_template_is_refused(sandbox: Sandbox) -> None:  # noqa: F811
    sandbox.set_pillar(PILLAR_EXAMPLE.read_text().replace("default-dvm: {private: persistent}", "work: {}"))
    status, states = sandbox.apply()
    assert status != 0
    message = "\n".join(failed(states))
    assert "work is a disposable template: expected True, found False" in message
    assert "qvm-prefs work template_for_dispvms True" in message
    assert not any(call[:2] == ["qvm-volume", "config"] for call in sandbox.qubes_calls())
    assert sandbox.qubes("qvm-volume", "info", "work:root", "rw") == "True"


def test_explicit_pool_list_and_a_missing_pool(sandbox: Sandbox, tmp_path: Path) -> None:  # noqa: F811
    pillar = PILLAR_EXAMPLE.read_text().replace("ephemeral_volatile_pools: default",
                                                "ephemeral_volatile_pools: [varlibqubes, nosuchpool]")  # fmt: skip
    sandbox.set_pillar(pillar)
    status, states = sandbox.apply()
    assert status != 0
    assert "varlibqubes" in str(changed(states))
    assert any("No such pools: ['nosuchpool']" in line for line in failed(states))
    assert "ephemeral_volatile  False" in sandbox.qubes("qvm-pool", "info", "vm-pool")

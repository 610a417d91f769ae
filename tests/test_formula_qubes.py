"""The formula's Qubes states, run against the emulated admin commands.

Qubes cannot run here: tests/qubes_emulation stands in for qvm-pool,
qvm-volume, qvm-prefs and qubes-prefs with upstream's command lines,
outputs, exit codes and rules. Proves: the settings are made, only what
differs is changed (a re-apply calls nothing that changes state), test=True
announces them, clean puts back the values as they were, and a name that is
not a disposable template is refused before any change.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import qubes_emulation
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
    assert {"ephemeral-qubes-ephemeral-volatile-pools",
            "ephemeral-qubes-feature-default-dvm-qubes-ephemeral"} <= pending  # fmt: skip
    assert sandbox.qubes_calls() == [], "test=True must not change Qubes"

    status, first = sandbox.apply()
    assert status == 0, failed(first)
    assert set(changed(first)) == pending
    assert sandbox.qubes_calls() == [
        ["qvm-features", "--", "default-dvm", "qubes-ephemeral", "1"],
        ["qvm-pool", "set", "vm-pool", "-o", "ephemeral_volatile=True"],
    ]
    after = reads(sandbox)
    # The template's volumes stay as they are: the extension protects each start of its disposables.
    assert after["root-rw"] == before["root-rw"] == "True"
    assert "ephemeral_volatile  True" in after["pool"]
    assert after["features"] == "qubes-ephemeral  1", "switches the qubesd extension on"
    assert after["other-dvm-root-rw"] == before["other-dvm-root-rw"] and after["other-pool"] == before["other-pool"]

    status, again = sandbox.apply()
    assert status == 0 and changed(again) == {}
    assert len(sandbox.qubes_calls()) == 2, "a re-apply must call nothing that changes Qubes"

    # The user creates a named disposable of the marked template (it copies the mark), and
    # one of a template that is not ours, carrying the feature by the user's own hand.
    qubes_emulation.create_disposable(sandbox.qubes_state, "sys-net", "default-dvm")
    qubes_emulation.create_disposable(sandbox.qubes_state, "own-disp", "work-dvm", **{"qubes-ephemeral": "1"})
    assert sandbox.qubes("qvm-features", "sys-net") == "qubes-ephemeral  1"

    status, dry_clean = sandbox.apply("ephemeral.clean", test=True)
    pending = {key.split("_|-")[1] for key, state in dry_clean.items() if state["result"] is None}
    assert len(sandbox.qubes_calls()) == 2
    status, clean = sandbox.apply("ephemeral.clean")
    assert status == 0, failed(clean)
    assert set(changed(clean)) == pending
    assert "ephemeral-clean-qubes-disposables" in pending
    assert reads(sandbox) == before
    restoring = sandbox.qubes_calls()[2:]
    assert ["qvm-features", "--unset", "--", "default-dvm", "qubes-ephemeral"] in restoring, "was not set: unset"
    assert ["qvm-pool", "set", "vm-pool", "-o", "ephemeral_volatile=False"] in restoring
    assert ["qvm-features", "--unset", "--", "sys-net", "qubes-ephemeral"] in restoring, "the copied mark"
    assert len(restoring) == 3
    assert sandbox.qubes("qvm-features", "sys-net") == ""
    assert sandbox.qubes("qvm-features", "own-disp") == "qubes-ephemeral  1", "not ours: left alone"
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


OWN_POOL = "/var/lib/qubes-ephemeral/pools/ephemeral"
# As at boot: the fresh scratch filesystem (a tmpfs here, root 0755 as mkfs makes it), laid out by our script.
BOOTED = "mount -t tmpfs -o mode=0755 scratch /var/lib/qubes-ephemeral && /usr/local/libexec/qubes-ephemeral/layout"


def own_pool_pillar() -> str:
    return (PILLAR_EXAMPLE.read_text().replace("    pool: null", "    pool: ephemeral")
            .replace("default_pool_volatile: false", "default_pool_volatile: true"))  # fmt: skip


def test_own_pool_waits_for_the_scratch_filesystem_then_applies_and_cleans(sandbox: Sandbox) -> None:  # noqa: F811
    sandbox.set_pillar(own_pool_pillar())
    listing_before = sandbox.qubes("qubes-prefs")

    # First apply with activate: boot: the scratch filesystem is not there yet.
    status, first = sandbox.apply()
    assert status != 0
    message = "\n".join(failed(first))
    assert "can only be added while the scratch filesystem is mounted" in message
    assert not any(call[:2] == ["qvm-pool", "add"] for call in sandbox.qubes_calls())
    assert sandbox.qubes("qubes-prefs", "default_pool_volatile") == "vm-pool", "waits for the pool"
    assert "ephemeral_volatile  True" in sandbox.qubes("qvm-pool", "info", "vm-pool"), "the rest is applied"

    # After the reboot: mounted and laid out.
    status, dry = sandbox.apply(test=True, before=BOOTED)
    pending = {key.split("_|-")[1] for key, state in dry.items() if state["result"] is None}
    assert {"ephemeral-qubes-own-pool-ephemeral", "ephemeral-qubes-prefs-default_pool_volatile"} <= pending
    calls = len(sandbox.qubes_calls())
    status, second = sandbox.apply(before=BOOTED)
    assert status == 0, failed(second)
    assert set(changed(second)) == pending
    new_calls = sandbox.qubes_calls()[calls:]
    assert new_calls == [
        ["qvm-pool", "add", "ephemeral", "file", "-o", f"dir_path={OWN_POOL}"],
        ["qubes-prefs", "--", "default_pool_volatile", "ephemeral"],
    ]
    info = sandbox.qubes("qvm-pool", "info", "ephemeral")
    assert f"dir_path            {OWN_POOL}" in info and "driver              file" in info
    assert "default_pool_volatile  -  ephemeral" in sandbox.qubes("qubes-prefs")
    assert "ephemeral_volatile  False" in info, "'default' pools must not pick up our own pool"

    status, again = sandbox.apply(before=BOOTED)
    assert status == 0 and changed(again) == {}
    assert len(sandbox.qubes_calls()) == calls + 2

    status, clean = sandbox.apply("ephemeral.clean")
    assert status == 0, failed(clean)
    undo = sandbox.qubes_calls()[calls + 2 :]
    reset = ["qubes-prefs", "--default", "--", "default_pool_volatile"]
    assert undo.index(reset) < undo.index(["qvm-pool", "remove", "ephemeral"]), "the default goes back first"
    assert sandbox.qubes("qubes-prefs") == listing_before, "default_pool_volatile is a default again"
    assert "ephemeral" not in sandbox.qubes("qvm-pool", "list").split()


def test_own_pool_in_use_keeps_clean_retryable(sandbox: Sandbox) -> None:  # noqa: F811
    sandbox.set_pillar(own_pool_pillar())
    sandbox.apply()  # writes the layout script; the pool waits for the mount
    status, states = sandbox.apply(before=BOOTED)
    assert status == 0, failed(states)
    # A disposable created since has its volatile volume in our pool.
    state = json.loads(sandbox.qubes_state.read_text())
    volatile = qubes_emulation.volume(rw=True, snap_on_start=False, save_on_stop=False, pool="ephemeral")
    state["vms"]["disp1234"] = {"prefs": {}, "volumes": {"volatile": volatile}}
    sandbox.qubes_state.write_text(json.dumps(state))
    status, clean = sandbox.apply("ephemeral.clean")
    assert status != 0
    message = "\n".join(failed(clean))
    assert "Storage pool is in use" in message and "qvm-volume list -p ephemeral" in message
    assert "ephemeral" in sandbox.qubes("qvm-pool", "list").split()
    record = sandbox.read("/etc/qubes-ephemeral/qubes-originals.json") or ""
    assert "pool ephemeral on the scratch filesystem" in record, "kept, so that clean can be run again"
    # Once the qube is gone, clean finishes.
    state = json.loads(sandbox.qubes_state.read_text())
    del state["vms"]["disp1234"]
    sandbox.qubes_state.write_text(json.dumps(state))
    status, clean = sandbox.apply("ephemeral.clean")
    assert status == 0, failed(clean)
    assert "ephemeral" not in sandbox.qubes("qvm-pool", "list").split()


def test_a_foreign_pool_with_our_name_is_left_alone(sandbox: Sandbox) -> None:  # noqa: F811
    sandbox.set_pillar(own_pool_pillar().replace("pool: ephemeral", "pool: varlibqubes"))
    before = sandbox.qubes("qvm-pool", "info", "varlibqubes")
    sandbox.apply()
    status, states = sandbox.apply(before=BOOTED)
    assert status != 0
    assert "a pool named varlibqubes already exists" in "\n".join(failed(states))
    assert sandbox.qubes("qvm-pool", "info", "varlibqubes") == before
    assert sandbox.qubes("qubes-prefs", "default_pool_volatile") == "vm-pool"


@pytest.mark.parametrize("release", ["4.2.39", "4.3.46", "4.3.50"])
def test_what_the_formula_sets_survives_a_qubesd_restart_of_each_release(sandbox: Sandbox, release: str) -> None:  # noqa: F811
    """Nothing it sets is one a release forgets when qubesd saves and loads qubes.xml again:
    a re-apply after the restart finds everything in place and changes nothing."""
    status, first = sandbox.apply()
    assert status == 0, failed(first)
    applied = reads(sandbox)
    qubes_emulation.restart_qubesd(sandbox.qubes_state, release)
    assert reads(sandbox) == applied
    calls = len(sandbox.qubes_calls())
    status, again = sandbox.apply()
    assert status == 0 and changed(again) == {} and len(sandbox.qubes_calls()) == calls
    # qubesd 4.3.48 fails on a lowercase ephemeral_volatile=true (qubes-issues #11045): we write True.
    assert all(
        call[-1] == "ephemeral_volatile=True" for call in sandbox.qubes_calls() if "ephemeral_volatile" in call[-1]
    )

"""patches.dispvm_private_cow through the formula, in the Salt sandbox.

dom0 side: the extension check, the template feature (emulated admin
commands) and the VM kernels' initramfs (made here with GNU cpio, under the
sandbox's /var/lib/qubes/vm-kernels). Template side: the dracut module of
ephemeral.template, with dracut as a recorder. Proves apply, a re-apply
with zero changes, honest test=True, and a clean that restores every
initramfs byte for byte.
"""

from __future__ import annotations

import base64
import hashlib
import json

import pytest
from conftest import PILLAR_EXAMPLE, ROOT
from initramfs_fixtures import make_initramfs
from qubesd_process import STAMP, loaded_by
from salt_sandbox import Sandbox
from test_formula import DOM0_CRYPTTAB, DOM0_FSTAB, changed, failed, sandbox  # noqa: F401 (fixture)

pytestmark = pytest.mark.salt

KERNELS = "/var/lib/qubes/vm-kernels"
PRIVATE = ("qvm-features", "--", "default-dvm", "qubes-ephemeral-private")


def cow_pillar() -> str:
    return (PILLAR_EXAMPLE.read_text().replace("default-dvm: {private: persistent}", "default-dvm: {private: cow}")
            .replace("dispvm_private_cow: false", "dispvm_private_cow: true"))  # fmt: skip


def put_bytes(box: Sandbox, path: str, data: bytes) -> None:
    encoded = base64.b64encode(data).decode()
    result = box.shell(f"mkdir -p \"$(dirname '{path}')\" && echo '{encoded}' | base64 -d > '{path}'")
    assert result.returncode == 0, result.stderr


def digest(box: Sandbox, path: str) -> str:
    return box.shell(f"sha256sum '{path}'").stdout.split()[0]


def test_private_cow_needs_the_extension_then_applies_and_cleans(sandbox: Sandbox, tmp_path, qubesd) -> None:  # noqa: F811
    sandbox.set_pillar(cow_pillar())
    kernel = f"{KERNELS}/6.6.48-1.qubes.fc37.x86_64/initramfs"
    original = make_initramfs(tmp=tmp_path)
    put_bytes(sandbox, kernel, original)
    other = make_initramfs(init="#!/bin/sh\nexec /sbin/init\n", tmp=tmp_path)  # pvgrub-like: not a Qubes VM init
    put_bytes(sandbox, f"{KERNELS}/pvgrub2/initramfs", other)

    # Without the extension loaded: the private feature is refused, the rest applies.
    sandbox.shell(f"rm -f {STAMP}")
    status, first = sandbox.apply()
    assert status != 0
    message = "\n".join(failed(first))
    assert (
        "qubes-ephemeral qubesd extension is not loaded" in message
        and "the disposable templates' protection needs it" in message
    )
    assert not any(call[:4] == list(PRIVATE) for call in sandbox.qubes_calls())
    assert sandbox.qubes("qvm-volume", "info", "default-dvm:root", "rw") == "True", "the template's volumes: never"
    assert digest(sandbox, kernel) != hashlib.sha256(original).hexdigest(), "the kernel is patched anyway"
    patched = sandbox.shell(f"/usr/local/libexec/qubes-ephemeral/vm-initramfs status {kernel}").stdout
    assert patched.strip().endswith(": patched")
    assert digest(sandbox, f"{KERNELS}/pvgrub2/initramfs") == hashlib.sha256(other).hexdigest()

    # A stamp left by a qubesd that no longer runs (PID 1 is not qubesd): still refused.
    sandbox.put(STAMP, json.dumps({"version": "0.1.0", "pid": 1}))
    status, stale = sandbox.apply()
    assert status != 0
    message = "\n".join(failed(stale))
    assert (
        "written by qubesd PID 1, which no longer runs" in message
        and "the disposable templates' protection needs it" in message
    )
    assert not any(call[:4] == list(PRIVATE) for call in sandbox.qubes_calls())

    # The running qubesd loaded the extension (it wrote the stamp): dry run, apply, re-apply.
    sandbox.put(STAMP, loaded_by(qubesd))
    status, dry = sandbox.apply(test=True)
    pending = {key.split("_|-")[1] for key, state in dry.items() if state["result"] is None}
    # Without the extension, the templates were not marked either: both marks wait for it.
    assert pending == {"ephemeral-qubes-feature-default-dvm-qubes-ephemeral-private",
                       "ephemeral-qubes-feature-default-dvm-qubes-ephemeral"}  # fmt: skip
    calls = len(sandbox.qubes_calls())
    status, second = sandbox.apply()
    assert status == 0, failed(second)
    assert set(changed(second)) == pending
    assert sorted(sandbox.qubes_calls()[calls:]) == sorted([[*PRIVATE, "cow"], [*PRIVATE[:3], "qubes-ephemeral", "1"]])
    status, third = sandbox.apply()
    assert status == 0 and changed(third) == {}
    assert len(sandbox.qubes_calls()) == calls + 2

    # Back to private: persistent: the feature goes, the kernels stay patched (the pillar still asks).
    sandbox.set_pillar(cow_pillar().replace("{private: cow}", "{private: persistent}"))
    status, fourth = sandbox.apply()
    assert status == 0, failed(fourth)
    assert sandbox.qubes_calls()[-1] == ["qvm-features", "--unset", "--", "default-dvm", "qubes-ephemeral-private"]

    # Clean: the original initramfs, byte for byte; the feature and our files gone.
    sandbox.set_pillar(cow_pillar())
    sandbox.apply()
    status, clean = sandbox.apply("ephemeral.clean")
    assert status == 0, failed(clean)
    assert digest(sandbox, kernel) == hashlib.sha256(original).hexdigest()
    assert sandbox.shell("qvm-features default-dvm | grep -c qubes-ephemeral").stdout.strip() == "0"
    assert not sandbox.exists("/usr/local/libexec/qubes-ephemeral/vm-initramfs")
    assert not sandbox.exists("/etc/systemd/system/qubes-ephemeral-vm-kernels.path")
    status, again = sandbox.apply("ephemeral.clean")
    assert status == 0 and changed(again) == {}


def test_a_kernel_init_this_version_does_not_know_fails_the_state(sandbox: Sandbox, tmp_path, qubesd) -> None:  # noqa: F811
    sandbox.set_pillar(cow_pillar())
    sandbox.put(STAMP, loaded_by(qubesd))
    unknown = make_initramfs(init="#!/bin/sh\n# dmroot, but mounted differently\nmount -o rw dmroot /sysroot\n",
                             tmp=tmp_path)  # fmt: skip
    put_bytes(sandbox, f"{KERNELS}/7.0.0/initramfs", unknown)
    status, states = sandbox.apply()
    assert status != 0
    patch = next(s for k, s in states.items() if "ephemeral-patches-vm-kernels" in k)
    assert patch["result"] is False and "this Qubes VM init is not one this version knows" in str(patch["changes"])
    assert digest(sandbox, f"{KERNELS}/7.0.0/initramfs") == hashlib.sha256(unknown).hexdigest()
    feature = next(s for k, s in states.items() if "qubes-ephemeral-private" in k)
    assert feature["result"] is False, "no read-only /rw without the initramfs that handles it"


MODULE = "/usr/lib/dracut/modules.d/91qubes-ephemeral-private"
VM_SOURCES = ROOT / "generator" / "qubes_ephemeral" / "payload"


def test_template_state_installs_the_dracut_module_once_and_cleans(sandbox: Sandbox) -> None:  # noqa: F811
    status, refused = sandbox.apply("ephemeral.template")
    assert status != 0 and "not a Qubes VM" in "\n".join(failed(refused)), "refused outside a qube"

    sandbox.put("/usr/share/qubes/marker-vm", "")
    status, first = sandbox.apply("ephemeral.template")
    assert status == 0, failed(first)
    expected = {
        "module-setup.sh": VM_SOURCES / "dracut" / "module-setup.sh",
        "qubes-ephemeral-setup.sh": VM_SOURCES / "dracut" / "qubes-ephemeral-setup.sh",
        "qubes-ephemeral-fstab.sh": VM_SOURCES / "dracut" / "qubes-ephemeral-fstab.sh",
        "private-cow.sh": VM_SOURCES / "private-cow.sh",
    }
    for name, source in expected.items():
        assert sandbox.read(f"{MODULE}/{name}") == source.read_text(), name
    assert sandbox.dracut_calls() == ["--regenerate-all --force"]

    status, again = sandbox.apply("ephemeral.template")
    assert status == 0 and changed(again) == {}
    assert sandbox.dracut_calls() == ["--regenerate-all --force"], "no rebuild when nothing changed"

    status, clean = sandbox.apply("ephemeral.template.clean")
    assert status == 0, failed(clean)
    assert not sandbox.exists(MODULE)
    assert sandbox.dracut_calls() == ["--regenerate-all --force"] * 2


def test_template_state_refuses_a_template_without_dracut(sandbox: Sandbox) -> None:  # noqa: F811
    sandbox.put("/usr/share/qubes/marker-vm", "")
    sandbox.set_pillar(PILLAR_EXAMPLE.read_text())
    (sandbox.folder / "dracut").unlink()
    status, states = sandbox.apply("ephemeral.template")
    assert status != 0
    assert "initramfs-tools" in "\n".join(failed(states))
    assert not sandbox.exists(MODULE)

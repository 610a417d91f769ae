"""The qubesd extension in real qubes-core-admin code (see real_qubesd.py).

Run once per release by scripts/test-upstream (release4.2, release4.3 and
main); skipped without the checkouts. Each test names the finding of issue
14 it guards: a refused start that removed a named disposable (1), settings
that stayed behind in qubes.xml (2), a stand-in instead of qubesd (3: this
whole file), own-kernel templates (5), a qubesd restart (6).
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator
from pathlib import Path

import pytest
from initramfs_fixtures import make_initramfs
from real_qubesd import KERNEL, Dom0, load, release_version, volume_settings

qubes = load()

ORIGINAL = {"root": (True, None), "private": (True, None), "volatile": (True, None), "kernel": (False, None)}


@pytest.fixture
def dom0(tmp_path: Path) -> Iterator[Dom0]:
    machine = Dom0(qubes, tmp_path)
    yield machine
    machine.close()


def patched_initramfs(folder: Path) -> bytes:
    vm_initramfs = importlib.import_module("qubes_ephemeral.payload.vm_initramfs")
    path = folder / "patched-initramfs"
    path.write_bytes(make_initramfs())
    vm_initramfs.apply(path, b"# hook\n")
    return path.read_bytes()


def cow_setup(dom0: Dom0) -> tuple[object, object]:
    """A template on a patched dom0 kernel, and its marked disposable template with private cow."""
    template = dom0.template(kernel=dom0.kernel(KERNEL, patched_initramfs(dom0.folder)))
    dvm = dom0.dvm_template(template, qubes_ephemeral="1")
    dvm.features["qubes-ephemeral-private"] = "cow"
    return template, dvm


def mark_cow_unpatched(dom0: Dom0) -> object:
    """A dvm template marked cow while its kernel was patched; then the kernel is replaced by an unpatched one."""
    kernel = dom0.kernel(KERNEL, patched_initramfs(dom0.folder))
    template = dom0.template(kernel=kernel)
    dvm = dom0.dvm_template(template, qubes_ephemeral="1")
    dvm.features["qubes-ephemeral-private"] = "cow"
    (dom0.kernels / KERNEL / "initramfs").write_bytes(make_initramfs())  # a kernel update, not patched yet
    return dvm


def test_the_tier_runs_the_release_it_names() -> None:
    assert release_version()[:3] in {"4.2", "4.3", "4.4"}, release_version()


def test_qubesd_loads_the_extension_from_its_entry_point(dom0: Dom0) -> None:
    assert type(dom0.ext).__module__ == "qubes_ephemeral.qubesd.extension"
    assert (dom0.folder / "stamp.json").is_file()


# 1. A refused start never removes a qube.


def test_a_start_refused_at_the_admin_api_keeps_the_named_disposable(dom0: Dom0) -> None:
    dvm = mark_cow_unpatched(dom0)
    named = dom0.named_disposable(dvm)
    error = dom0.admin_call("admin.vm.Start", "sys-net")
    assert error is not None and "lacks the /rw copy-on-write" in str(error)
    assert "sys-net" in dom0.app.domains and dom0.connection.created == [], "refused before any start"
    assert Path(named.dir_path).is_dir(), "its volumes are still on disk"
    dom0.restart_qubesd()
    assert "sys-net" in dom0.app.domains, "and still in qubes.xml"


def test_a_named_disposable_started_inside_qubesd_fails_closed_and_is_kept(dom0: Dom0) -> None:
    """A netvm is started by qubesd itself, past the admin API: /rw read-only, never removed."""
    dvm = mark_cow_unpatched(dom0)
    named = dom0.named_disposable(dvm)
    assert dom0.start(named) is None
    assert "sys-net" in dom0.app.domains
    disks = dom0.attached()
    assert disks["xvdb"]["readonly"] is True, "no writable persistent /rw"
    assert disks["xvda"]["readonly"] is True and disks["xvdc"]["encrypted"] is True


@pytest.mark.parametrize("how", ["inside qubesd", "admin API"])
def test_an_unnamed_disposable_that_cannot_be_protected_is_refused_and_not_left_behind(dom0: Dom0, how: str) -> None:
    """As qrexec's @dispvm does it: admin.vm.CreateDisposable, then admin.vm.Start."""
    dvm = mark_cow_unpatched(dom0)
    disposable = dom0.disposable(dvm)
    error = dom0.start(disposable) if how == "inside qubesd" else dom0.admin_call("admin.vm.Start", disposable.name)
    assert error is not None and "lacks the /rw copy-on-write" in str(error)
    assert dom0.connection.created == [], "it never ran"
    assert disposable.name not in dom0.app.domains, "removed, as any disposable whose start failed"


# Refused when the setting is made, through the admin API.


def test_private_cow_is_refused_for_an_unpatched_kernel_when_set(dom0: Dom0) -> None:
    template = dom0.template(kernel=dom0.kernel(KERNEL, make_initramfs()))
    dom0.dvm_template(template, qubes_ephemeral="1")
    error = dom0.admin_call("admin.vm.feature.Set", "default-dvm", "qubes-ephemeral-private", b"cow")
    assert error is not None and "lacks the /rw copy-on-write" in str(error)
    assert "qubes-ephemeral-private" not in dom0.app.domains["default-dvm"].features


def test_a_kernel_without_the_patch_is_refused_for_a_cow_qube(dom0: Dom0) -> None:
    kernel = dom0.kernel(KERNEL, patched_initramfs(dom0.folder))
    template = dom0.template(kernel=kernel)
    dvm = dom0.dvm_template(template, qubes_ephemeral="1", qubes_ephemeral_private="cow")
    dom0.kernel("6.1.0-unpatched", make_initramfs())
    error = dom0.admin_call("admin.vm.property.Set", dvm.name, "kernel", b"6.1.0-unpatched")
    assert error is not None and "6.1.0-unpatched" in str(error)
    assert str(dvm.kernel) == KERNEL


# 5. Own-kernel templates.


def test_private_cow_is_refused_for_a_qube_that_boots_its_own_kernel(dom0: Dom0) -> None:
    template = dom0.template(kernel=dom0.kernel(KERNEL, patched_initramfs(dom0.folder)))
    dvm = dom0.dvm_template(template, qubes_ephemeral="1")
    dvm.kernel = ""
    error = dom0.admin_call("admin.vm.feature.Set", "default-dvm", "qubes-ephemeral-private", b"cow")
    assert error is not None and "its template's own kernel" in str(error)
    template.features["qubes-ephemeral-own-initramfs"] = "dracut"  # ephemeral.template applied there
    assert dom0.admin_call("admin.vm.feature.Set", "default-dvm", "qubes-ephemeral-private", b"cow") is None


# A protected start, as qubesd renders it.


def test_a_protected_start_has_read_only_disks_and_a_keyed_volatile_volume(dom0: Dom0) -> None:
    _template, dvm = cow_setup(dom0)
    named = dom0.named_disposable(dvm)
    assert dom0.admin_call("admin.vm.Start", "sys-net") is None
    disks = dom0.attached()
    assert disks["xvda"] == {"readonly": True, "encrypted": False}
    assert disks["xvdb"] == {"readonly": True, "encrypted": False}
    assert disks["xvdc"] == {"readonly": False, "encrypted": True}
    opened = [args for args in dom0.cryptsetup if "open" in args]
    assert opened and "--key-file=/dev/urandom" in opened[0], dom0.cryptsetup
    assert named.is_running()
    assert volume_settings(dvm) == ORIGINAL, "the disposable template is untouched"


def test_an_unmarked_templates_disposable_is_untouched(dom0: Dom0) -> None:
    template = dom0.template(kernel=dom0.kernel(KERNEL, make_initramfs()))
    dvm = dom0.dvm_template(template)
    dom0.named_disposable(dvm)
    assert dom0.admin_call("admin.vm.Start", "sys-net") is None
    assert not any(disk["readonly"] or disk["encrypted"] for disk in dom0.attached().values())


# 2 and 6. Nothing stays behind, across qubesd restarts.


def test_qubes_xml_never_keeps_our_settings_while_it_runs_or_after(dom0: Dom0) -> None:
    _template, dvm = cow_setup(dom0)
    named = dom0.named_disposable(dvm)
    assert dom0.start(named) is None
    assert volume_settings(named) == ORIGINAL, "put back once the qube is spawned"
    app = dom0.restart_qubesd()  # qubesd restarts while it runs: what qubes.xml kept
    assert volume_settings(app.domains["sys-net"]) == ORIGINAL
    dom0.shutdown(app.domains["sys-net"])
    app = dom0.restart_qubesd()
    assert volume_settings(app.domains["sys-net"]) == ORIGINAL


def test_the_next_start_is_protected_again_after_a_qubesd_restart(dom0: Dom0) -> None:
    _template, dvm = cow_setup(dom0)
    named = dom0.named_disposable(dvm)
    assert dom0.start(named) is None
    dom0.shutdown(named)
    app = dom0.restart_qubesd()
    dom0.connection.xml.clear()
    assert dom0.start(app.domains["sys-net"]) is None
    disks = dom0.attached()
    assert disks["xvda"]["readonly"] and disks["xvdb"]["readonly"] and disks["xvdc"]["encrypted"]


def test_a_failed_start_puts_every_setting_back(dom0: Dom0) -> None:
    _template, dvm = cow_setup(dom0)
    named = dom0.named_disposable(dvm)
    dom0.connection.lookupByUUID(named.uuid.bytes).createWithFlags = _libvirt_fails  # type: ignore[method-assign]
    error = dom0.start(named)
    assert error is not None
    if "sys-net" in dom0.app.domains:  # R4.2 keeps a named disposable whose start failed; R4.3 removes it (upstream)
        settings = volume_settings(named)
        assert {name: settings[name] for name in ("root", "private")} == {"root": (True, None), "private": (True, None)}
        # ephemeral stays until its next load or start: R4.2 stops the storage right after the
        # failure, and closes the volatile volume's mapping only while it says ephemeral.
        app = dom0.restart_qubesd()
        assert volume_settings(app.domains["sys-net"]) == ORIGINAL


def _libvirt_fails(flags: int) -> None:
    import libvirt

    raise libvirt.libvirtError("no memory")


# Found by a red-team pass on real code.


def test_a_damaged_initramfs_never_removes_a_named_disposable(dom0: Dom0) -> None:
    """A corrupt gzip made the check raise zlib.error inside the start: R4.3 removed the qube."""
    dvm = mark_cow_unpatched(dom0)
    (dom0.kernels / KERNEL / "initramfs").write_bytes(b"\x1f\x8b\x08\x00" + b"\x00" * 64)
    named = dom0.named_disposable(dvm)
    assert dom0.start(named) is None
    assert "sys-net" in dom0.app.domains and dom0.attached()["xvdb"]["readonly"] is True, "kept, /rw read-only"
    disposable = dom0.disposable(dvm)
    error = dom0.start(disposable)
    assert error is not None and "lacks the /rw copy-on-write (error: " in str(error)


def test_settings_saved_before_the_spawn_are_put_back_when_qubesd_loads_again(dom0: Dom0) -> None:
    """qubesd saves qubes.xml when it is stopped: stopped in the middle of a start, before the
    spawn, qubes.xml holds the start's settings. The record saved beside them undoes them."""
    _template, dvm = cow_setup(dom0)
    named = dom0.named_disposable(dvm)
    on_disk = Path(dom0.xml_path)
    snapshot: dict[str, bytes] = {}
    storage_start = named.storage.start

    async def saved_then_killed() -> None:
        dom0.app.save()  # qubesd's SIGTERM handler
        snapshot["xml"] = on_disk.read_bytes()  # what is on disk when the process dies
        await storage_start()

    named.storage.start = saved_then_killed
    assert dom0.start(named) is None
    dom0.connection.lookupByUUID(named.uuid.bytes).code = 5  # it never ran: the process died first
    on_disk.write_bytes(snapshot["xml"])
    app = dom0.restart_qubesd()
    assert volume_settings(app.domains["sys-net"]) == ORIGINAL
    assert "qubes-ephemeral-restore" not in app.domains["sys-net"].features
    app = dom0.restart_qubesd()
    assert volume_settings(app.domains["sys-net"]) == ORIGINAL, "and qubes.xml keeps nothing"

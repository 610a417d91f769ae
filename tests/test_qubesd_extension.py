"""The qubesd extension, against a stand-in for the parts of qubesd it uses.

This tier runs everywhere, CI included. The real-code tier
(tests/upstream, release4.2, release4.3 and main of qubes-core-admin) runs
the same extension inside qubesd's own code where the checkouts are given;
what it proves there is the reference, and this stand-in follows it.

tests/qubesd_standin follows qubes-core-admin's names and signatures: the
Extension/handler API (handlers from the class body, on LocalVM by
default), domain-pre-start fired before storage starts and the volumes are
attached, domain-spawn after, a disposable deriving its volumes and
features from its disposable template. Proves: a disposable of a marked
template starts with a read-only root and an ephemeral volatile volume
(and, with private cow, a read-only private volume), and every setting is
put back once it is spawned; the template, and disposables of unmarked
templates, are untouched; an unpatched dom0 kernel refuses an unnamed
disposable's start and starts a named one with /rw read-only; qubesd
loading it leaves a stamp.
"""

from __future__ import annotations

import importlib
import json
import os
import sys
from pathlib import Path
from types import SimpleNamespace

import hypothesis
import pytest
from hypothesis import HealthCheck, given
from hypothesis import strategies as st
from initramfs_fixtures import make_initramfs
from qubes_ephemeral.qubesd.feature import loaded_by_running_qubesd

STANDIN = Path(__file__).parent / "qubesd_standin"
KERNEL = "6.6.48-1.qubes.fc37.x86_64"


@pytest.fixture
def qubes(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    monkeypatch.syspath_prepend(str(STANDIN))
    for name in [m for m in sys.modules if m == "qubes" or m.startswith(("qubes.", "qubes_ephemeral.qubesd"))]:
        monkeypatch.delitem(sys.modules, name)
    vm = importlib.import_module("qubes.vm")
    dispvm = importlib.import_module("qubes.vm.dispvm")
    ext = importlib.import_module("qubes.ext")
    exc = importlib.import_module("qubes.exc")
    monkeypatch.setattr(ext.Extension, "_instances", {})
    extension = importlib.import_module("qubes_ephemeral.qubesd.extension")
    kernels = tmp_path / "vm-kernels"
    (kernels / KERNEL).mkdir(parents=True)
    monkeypatch.setattr(extension.EphemeralDisposables, "stamp", tmp_path / "run" / "qubesd-extension.json")
    monkeypatch.setattr(extension.EphemeralDisposables, "kernels_dir", kernels)
    record = tmp_path / "run" / "vm-kernels.json"
    monkeypatch.setattr(extension.EphemeralDisposables, "status_record", record)
    monkeypatch.setattr(extension.EphemeralDisposables, "record_owner", os.getuid())  # root's in dom0
    extension.EphemeralDisposables()  # what qubesd does for each qubes.ext entry point
    return SimpleNamespace(
        vm=vm, dispvm=dispvm, exc=exc, extension=extension, kernels=kernels, tmp=tmp_path, record=record
    )


def make_template(vm, marked: bool, private: str | None = None):
    pool = vm.Pool("vm-pool", ephemeral_volatile=False)
    fedora = vm.AppVM("fedora-41", pool=pool, kernel=KERNEL)
    template = vm.AppVM("default-dvm", template=fedora, template_for_dispvms=True, pool=pool)
    if marked:
        template.features["qubes-ephemeral"] = True
    if private:
        template.features["qubes-ephemeral-private"] = private
    return template


def test_loading_writes_the_stamp_the_formula_checks(qubes) -> None:
    stamp = json.loads((qubes.tmp / "run" / "qubesd-extension.json").read_text())
    assert stamp["version"] == importlib.import_module("qubes_ephemeral").__version__
    assert stamp["pid"] == os.getpid(), "the PID of the qubesd that loaded it"


# How the formula and the audit read the stamp: loaded only by a qubesd that still runs.
QUBESD = "/usr/bin/python3\0/usr/bin/qubesd\0"


def verdict(stamp: str | None, proc: dict[str, str]) -> tuple[bool | None, str]:
    files = {**proc, "/run/qubes-ephemeral/qubesd-extension.json": stamp}

    def read(path: str) -> str | None:
        if files.get(path) == "<denied>":
            raise PermissionError(path)
        return files.get(path)

    return loaded_by_running_qubesd(read)


def test_a_stamp_from_the_running_qubesd_means_loaded() -> None:
    loaded, detail = verdict('{"version": "0.2.0", "pid": 4242}', {"/proc/4242/cmdline": QUBESD})
    assert loaded is True and detail == "version 0.2.0, in qubesd PID 4242"


@pytest.mark.parametrize(
    ("stamp", "proc", "why"),
    [
        (None, {}, "is missing"),
        ("{}", {}, "is not one the extension writes"),
        ('{"version": "0.2.0"}', {}, "is not one the extension writes"),
        ("not json", {}, "is not one the extension writes"),
        # qubesd restarted and did not load it: the old PID is gone, or now another program's
        ('{"version": "0.2.0", "pid": 4242}', {}, "PID 4242, which no longer runs"),
        ('{"version": "0.2.0", "pid": 4242}', {"/proc/4242/cmdline": "/usr/bin/bash\0"}, "which no longer runs"),
        ('{"version": "0.2.0", "pid": 4242}', {"/proc/4242/cmdline": "/usr/bin/qubesd-query\0"}, "no longer"),
    ],
)
def test_a_missing_odd_or_stale_stamp_is_not_loaded(stamp: str | None, proc: dict[str, str], why: str) -> None:
    loaded, detail = verdict(stamp, proc)
    assert loaded is False and why in detail


def test_an_unreadable_process_cannot_tell() -> None:
    loaded, detail = verdict('{"pid": 4242}', {"/proc/4242/cmdline": "<denied>"})
    assert loaded is None and detail == "/proc/4242/cmdline is not readable"


def test_an_unreadable_stamp_cannot_tell() -> None:
    loaded, detail = verdict("<denied>", {})
    assert loaded is None and detail == "/run/qubes-ephemeral/qubesd-extension.json is not readable"


def settings(vm) -> dict[str, tuple[bool, object]]:
    return {name: (volume.rw, volume._ephemeral) for name, volume in vm.volumes.items()}


def test_disposable_of_a_marked_template_starts_forgetful(qubes) -> None:
    template = make_template(qubes.vm, marked=True)
    disposable = qubes.dispvm.DispVM("disp1234", template)
    assert disposable.volumes["root"].rw is True and disposable.volumes["volatile"].ephemeral is False
    before = settings(disposable)
    disposable.start()
    assert disposable.attached["root"] == {"readonly": True, "ephemeral": False}
    assert disposable.attached["volatile"] == {"readonly": False, "ephemeral": True}
    assert disposable.attached["private"]["readonly"] is False, "/rw only with private: cow"
    assert settings(disposable) == before, "put back once spawned: nothing for qubes.xml to keep"
    disposable.shutdown()
    assert settings(disposable) == before
    # The template itself stays as it was: it must keep working.
    assert template.volumes["root"].rw is True and template.volumes["volatile"].ephemeral is False
    template.start()
    assert template.attached["root"]["readonly"] is False


def test_private_cow_makes_the_private_volume_read_only_too(qubes) -> None:
    (qubes.kernels / KERNEL / "initramfs").write_bytes(patched_initramfs(qubes.tmp))
    template = make_template(qubes.vm, marked=True, private="cow")
    disposable = qubes.dispvm.DispVM("disp77", template)
    disposable.start()
    assert disposable.attached["private"]["readonly"] is True
    assert disposable.attached["root"]["readonly"] is True
    assert disposable.attached["volatile"]["ephemeral"] is True
    assert template.volumes["private"].rw is True, "the disposable template keeps a writable private volume"


def test_private_cow_refuses_an_unnamed_disposable_whose_kernel_lacks_the_patch(qubes) -> None:
    (qubes.kernels / KERNEL / "initramfs").write_bytes(make_initramfs())
    disposable = qubes.dispvm.DispVM("disp78", make_template(qubes.vm, marked=True, private="cow"))
    before = settings(disposable)
    with pytest.raises(qubes.exc.QubesException, match="lacks the /rw copy-on-write"):
        disposable.start()
    assert disposable.attached is None, "the qube did not start"
    assert settings(disposable) == before


def test_private_cow_never_refuses_a_named_disposable_inside_a_start(qubes, caplog) -> None:
    """R4.3 removes any disposable whose start raises: a named one starts with /rw read-only instead."""
    (qubes.kernels / KERNEL / "initramfs").write_bytes(make_initramfs())
    named = qubes.dispvm.DispVM("sys-net", make_template(qubes.vm, marked=True, private="cow"), auto_cleanup=False)
    named.start()
    assert named.attached["private"]["readonly"] is True, "fail closed: no writable persistent /rw"
    assert "lacks the /rw copy-on-write" in caplog.text and "read-only" in caplog.text


def test_private_cow_with_the_qubes_own_kernel_needs_its_template_to_carry_the_hook(qubes) -> None:
    template = make_template(qubes.vm, marked=True, private="cow")
    template.template._kernel = ""  # the template boots its own kernel
    with pytest.raises(qubes.exc.QubesException, match="its template's own kernel"):
        qubes.dispvm.DispVM("disp79", template).start()
    template.template.features["qubes-ephemeral-own-initramfs"] = "dracut"  # ephemeral.template applied there
    disposable = qubes.dispvm.DispVM("disp80", template)
    disposable.start()
    assert disposable.attached["private"]["readonly"] is True


def test_feature_on_the_templates_template_counts(qubes) -> None:
    template = make_template(qubes.vm, marked=False)
    template.template.features["qubes-ephemeral"] = "1"
    disposable = qubes.dispvm.DispVM("disp1", template)
    disposable.start()
    assert disposable.attached["root"]["readonly"] is True


def test_unmarked_templates_disposables_are_untouched(qubes) -> None:
    template = make_template(qubes.vm, marked=False, private="cow")  # private alone switches nothing on
    disposable = qubes.dispvm.DispVM("disp2", template)
    disposable.start()
    assert not any(volume["readonly"] for volume in disposable.attached.values())
    assert disposable.attached["volatile"]["ephemeral"] is False


def test_empty_feature_value_means_off(qubes) -> None:
    template = make_template(qubes.vm, marked=False)
    template.features["qubes-ephemeral"] = False  # stored as '' by Features
    disposable = qubes.dispvm.DispVM("disp3", template)
    disposable.start()
    assert disposable.attached["root"]["readonly"] is False


def test_registered_as_a_qubes_ext_entry_point() -> None:
    from importlib.metadata import entry_points

    names = {ep.name: ep.value for ep in entry_points(group="qubes.ext")}
    assert names.get("qubes_ephemeral") == "qubes_ephemeral.qubesd.extension:EphemeralDisposables"


def patched_initramfs(folder: Path) -> bytes:
    from qubes_ephemeral.payload import vm_initramfs

    path = folder / "initramfs"
    path.write_bytes(make_initramfs())
    vm_initramfs.apply(path, b"# hook\n")
    return path.read_bytes()


@pytest.mark.parametrize("record", ["not json", "5", '[["root"]]', '[["root", ["rw"], true]]', "[1, 2, 3]"])
def test_a_restore_record_we_did_not_write_never_stops_a_start(qubes, record: str) -> None:
    """Inside a start an exception costs R4.3 the named disposable: an odd record is logged, not raised."""
    named = qubes.dispvm.DispVM("sys-net", make_template(qubes.vm, marked=True), auto_cleanup=False)
    named.features["qubes-ephemeral-restore"] = record
    before = settings(named)
    named.start()
    assert named.attached["root"]["readonly"] is True and named.attached["volatile"]["ephemeral"] is True
    assert settings(named) == before


# --- the kernel's state, from the record vm-initramfs writes: no 20 MB read inside a start ---


@pytest.fixture
def status_reads(qubes, monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """Each initramfs the extension reads itself (its _read_status)."""
    extension = qubes.extension.EphemeralDisposables
    reads: list[Path] = []
    real = extension._read_status

    def counted(path: Path) -> tuple[str, object]:
        reads.append(path)
        return real(path)

    monkeypatch.setattr(extension, "_read_status", staticmethod(counted))
    return reads


def record_kernels(qubes, action: str = "status") -> None:
    """What the boot service (apply) and the formula (status) run as root."""
    from qubes_ephemeral.payload import vm_initramfs

    hook = qubes.tmp / "hook.sh"
    hook.write_text("# hook\n")
    options = ["--kernels-dir", str(qubes.kernels), "--record", str(qubes.record), "--hook", str(hook)]
    assert vm_initramfs.main([action, "-q", *options]) in (0, 1)


def vm_initramfs_key(info: os.stat_result) -> tuple[int, ...]:
    from qubes_ephemeral.payload import vm_initramfs

    return vm_initramfs.file_key(info)


def forge_record(qubes, state: str, key: list[int] | None = None, mode: int = 0o644) -> Path:
    """A record saying ``state`` of the kernel's initramfs (by default with its key now)."""
    initramfs = qubes.kernels / KERNEL / "initramfs"
    if key is None:
        info = initramfs.stat()
        key = list(vm_initramfs_key(info))
    new = qubes.record.with_name("forged.json")
    new.write_text(json.dumps({str(initramfs): {"key": key, "state": state}}))
    new.chmod(mode)
    os.replace(new, qubes.record)  # a new file, as vm-initramfs writes it
    return initramfs


def replace_file(path: Path, data: bytes) -> None:
    """As rpm installs a file: a new one renamed over the old."""
    new = path.with_name(path.name + ".new")
    new.write_bytes(data)
    os.replace(new, path)


def start_cow(qubes, name: str) -> None:
    """Start a disposable with private cow; it is refused unless the kernel is patched."""
    disposable = qubes.dispvm.DispVM(name, make_template(qubes.vm, marked=True, private="cow"))
    disposable.start()
    assert disposable.attached["private"]["readonly"] is True


def test_a_start_takes_the_kernels_state_from_the_record_without_reading_it(qubes, status_reads) -> None:
    (qubes.kernels / KERNEL / "initramfs").write_bytes(patched_initramfs(qubes.tmp))
    record_kernels(qubes)
    qubes.extension.EphemeralDisposables()  # qubesd (re)started: the record is loaded
    start_cow(qubes, "disp90")
    named = qubes.dispvm.DispVM("sys-usb", make_template(qubes.vm, marked=True, private="cow"), auto_cleanup=False)
    qubes.extension.EphemeralDisposables().on_admin_start(None, "admin-permission:admin.vm.Start", dest=named)
    assert status_reads == [], "the state came from the record: the initramfs was not read"


def test_a_record_written_after_qubesd_started_is_read_at_the_next_start(qubes, status_reads) -> None:
    (qubes.kernels / KERNEL / "initramfs").write_bytes(patched_initramfs(qubes.tmp))
    record_kernels(qubes)
    start_cow(qubes, "disp91")
    assert status_reads == []


def test_without_a_record_a_start_reads_the_kernel_once(qubes, status_reads) -> None:
    initramfs = qubes.kernels / KERNEL / "initramfs"
    initramfs.write_bytes(patched_initramfs(qubes.tmp))
    start_cow(qubes, "disp92")
    start_cow(qubes, "disp93")
    assert status_reads == [initramfs], "read once, then cached"


def test_a_stale_record_is_not_trusted(qubes, status_reads) -> None:
    """A record of the kernel as it was before an update says nothing of the new file."""
    initramfs = qubes.kernels / KERNEL / "initramfs"
    initramfs.write_bytes(patched_initramfs(qubes.tmp))
    record_kernels(qubes)
    replace_file(initramfs, make_initramfs())  # the kernel package, updated: unpatched
    with pytest.raises(qubes.exc.QubesException, match="lacks the /rw copy-on-write"):
        start_cow(qubes, "disp94")
    assert status_reads == [initramfs]
    now = initramfs.stat()
    key = list(vm_initramfs_key(now))
    for field in range(len(key)):  # a record of another version: any one field differs
        key[field] += 1
        qubes.extension.EphemeralDisposables().status_cache.clear()
        forge_record(qubes, "patched", key)
        key[field] -= 1
        with pytest.raises(qubes.exc.QubesException, match="lacks the /rw copy-on-write"):
            start_cow(qubes, "disp95")
    qubes.extension.EphemeralDisposables().status_cache.clear()
    forge_record(qubes, "patched", key)  # the anti-test: with its key, the record is trusted
    start_cow(qubes, "disp95")


@pytest.mark.parametrize("odd", ["other owner", "symlink", "group-writable", "not json", "a folder", "a list"])
def test_a_record_qubesd_cannot_trust_is_ignored(qubes, status_reads, monkeypatch, odd: str) -> None:
    """Each says "patched" of an unpatched kernel, with its exact key: trusted, it would let the start through."""
    (qubes.kernels / KERNEL / "initramfs").write_bytes(make_initramfs())
    qubes.record.parent.mkdir(exist_ok=True)
    forge_record(qubes, "patched", mode=0o664 if odd == "group-writable" else 0o644)
    extension = qubes.extension.EphemeralDisposables
    if odd == "other owner":
        monkeypatch.setattr(extension, "record_owner", os.getuid() + 1)
    elif odd == "symlink":
        link = qubes.tmp / "link.json"
        link.symlink_to(qubes.record)
        monkeypatch.setattr(extension, "status_record", link)
    elif odd == "not json":
        qubes.record.write_text('{"/var/lib/qubes/vm-kernels": ')
    elif odd == "a folder":
        qubes.record.unlink()
        qubes.record.mkdir()
    elif odd == "a list":
        qubes.record.write_text(f"[{qubes.record.read_text()}]")
    extension()
    with pytest.raises(qubes.exc.QubesException, match=r"lacks the /rw copy-on-write \(unpatched\)"):
        start_cow(qubes, "disp96")
    assert status_reads == [qubes.kernels / KERNEL / "initramfs"], "it fell back to reading the file"


def test_the_record_itself_is_trusted_with_the_same_shape(qubes, status_reads) -> None:
    """The anti-test of the one above: the same forged record, trusted, does let the start through."""
    (qubes.kernels / KERNEL / "initramfs").write_bytes(make_initramfs())
    qubes.record.parent.mkdir(exist_ok=True)
    forge_record(qubes, "patched")
    start_cow(qubes, "disp97")
    assert status_reads == []


def test_a_kernel_changed_after_it_was_seen_is_checked_again(qubes, status_reads) -> None:
    initramfs = qubes.kernels / KERNEL / "initramfs"
    initramfs.write_bytes(patched_initramfs(qubes.tmp))
    record_kernels(qubes)
    start_cow(qubes, "disp98")
    assert status_reads == []
    replace_file(initramfs, make_initramfs())  # updated, and not patched yet
    with pytest.raises(qubes.exc.QubesException, match="lacks the /rw copy-on-write"):
        start_cow(qubes, "disp99")
    assert status_reads == [initramfs]
    record_kernels(qubes, "apply")  # the path unit: patched again, recorded again
    start_cow(qubes, "disp100")
    assert status_reads == [initramfs], "the new record says it: no second read"


@hypothesis.settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(record=st.one_of(st.binary(max_size=300), st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=20), inner, max_size=5),
    max_leaves=20).map(lambda value: json.dumps(value).encode())))  # fmt: skip
def test_no_record_whatever_it_holds_stops_or_fools_a_start(qubes, status_reads, record: bytes) -> None:
    initramfs = qubes.kernels / KERNEL / "initramfs"
    if not initramfs.exists():
        initramfs.write_bytes(make_initramfs())
        qubes.record.parent.mkdir(exist_ok=True)
    new = qubes.record.with_name("new.json")
    new.write_bytes(record)
    os.replace(new, qubes.record)
    extension = qubes.extension.EphemeralDisposables()  # loads it
    extension.status_cache.clear()
    status_reads.clear()
    assert extension._kernel_status(initramfs) == "unpatched"
    assert status_reads == [initramfs]


def test_bytes_that_changed_while_the_extension_read_them_are_not_cached(qubes, monkeypatch) -> None:
    """The fallback caches a state only under the key of the bytes it read."""
    initramfs = qubes.kernels / KERNEL / "initramfs"
    initramfs.write_bytes(patched_initramfs(qubes.tmp))
    extension = qubes.extension.EphemeralDisposables
    reads: list[Path] = []

    def torn(path: Path) -> tuple[str, None]:
        reads.append(path)
        return "patched", None  # as examine() says of bytes whose key moved during the read

    monkeypatch.setattr(extension, "_read_status", staticmethod(torn))
    start_cow(qubes, "disp90")
    start_cow(qubes, "disp91")
    assert reads == [initramfs, initramfs], "nothing cached from a torn read: the next start reads again"

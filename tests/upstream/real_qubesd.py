"""Real qubes-core-admin code in a test: qubesd's app, qubes, storage and extensions.

The checkouts come from the environment (none of their code is in this
project): QUBES_CORE_ADMIN, a work tree of QubesOS/qubes-core-admin on the
release under test, and QUBES_CORE_QREXEC, one of QubesOS/qubes-core-qrexec
(qubes-core-admin imports it). scripts/test-upstream prepares one pair per
release from two clones and runs this tier once per release. Without them
the tier is skipped, saying so.

What runs for real: ``qubes.Qubes`` (qubes.xml written, saved, loaded), the
``qubes.ext`` entry points (ours among upstream's own extensions), the VM
classes and their events, ``DispVM.start()`` and its clean-up, the admin
API's ``admin.vm.Start`` and ``admin.vm.feature.Set`` handlers, the ``file``
and ``linux-kernel`` storage drivers on a temporary folder, and the libvirt
XML qubesd renders for a start. What is replaced, at the edges only:
libvirt (a connection that records the defined XML and plays a domain's
power states), cryptsetup and dd (recorded), qubesdb, qrexec and qmemman.
"""

from __future__ import annotations

import asyncio
import os
import re
import sys
import tempfile
import uuid as uuidlib
import xml.etree.ElementTree as ET
from pathlib import Path
from types import ModuleType
from typing import Any
from unittest import mock

import pytest

ADMIN = os.environ.get("QUBES_CORE_ADMIN", "")
QREXEC = os.environ.get("QUBES_CORE_QREXEC", "")
SKIP_REASON = (
    "real qubes-core-admin tier: set QUBES_CORE_ADMIN and QUBES_CORE_QREXEC to checkouts "
    "(scripts/test-upstream does it for release4.2, release4.3 and main; see docs/testing.md)"
)

# libvirt's values (libvirt-python), for releases whose test-packages lack them.
LIBVIRT_CONSTANTS = {
    "VIR_DOMAIN_START_PAUSED": 1,
    "VIR_DOMAIN_RUNNING": 1,
    "VIR_DOMAIN_BLOCKED": 2,
    "VIR_DOMAIN_PAUSED": 3,
    "VIR_DOMAIN_SHUTDOWN": 4,
    "VIR_DOMAIN_SHUTOFF": 5,
    "VIR_DOMAIN_CRASHED": 6,
    "VIR_DOMAIN_PMSUSPENDED": 7,
    "VIR_ERR_NO_DOMAIN": 42,
    "VIR_ERR_OPERATION_INVALID": 55,
}
KERNEL = "6.6.48-1.qubes.fc37.x86_64"


def load() -> ModuleType:
    """Import the real ``qubes`` package, with its data in a temporary folder."""
    if not (ADMIN and QREXEC):
        pytest.skip(SKIP_REASON, allow_module_level=True)
    for path in (QREXEC, os.path.join(ADMIN, "test-packages"), ADMIN):
        if path not in sys.path:
            sys.path.insert(0, path)
    import qubes.config

    use_base_dir(qubes.config, tempfile.mkdtemp(prefix="qubes-base-"))
    import libvirt  # qubes-core-admin's test-packages stand-in: the edge, given the constants qubesd reads

    for name, value in LIBVIRT_CONSTANTS.items():
        if not hasattr(libvirt, name):
            setattr(libvirt, name, value)
    import qubes.api.admin
    import qubes.storage
    import qubes.utils
    import qubes.vm.appvm
    import qubes.vm.dispvm
    import qubes.vm.templatevm

    assert Path(qubes.__file__).is_relative_to(ADMIN), f"qubes imported from {qubes.__file__}, not {ADMIN}"
    return qubes


def use_base_dir(config: ModuleType, base: str) -> None:
    """qubesd's /var/lib/qubes, here a folder of the test's."""
    config.qubes_base_dir = base
    pools = config.defaults["pool_configs"]
    pools["varlibqubes"]["dir_path"] = base
    pools["linux-kernel"]["dir_path"] = os.path.join(base, "vm-kernels")


def release_version() -> str:
    return Path(ADMIN, "version").read_text().strip()


class FakeDomain:
    """A libvirt domain: its power state, as qubesd asks for it."""

    def __init__(self, connection: FakeConnection, uuid: bytes) -> None:
        self.connection, self.uuid, self.code, self.vm = connection, uuid, 5, None  # 5: VIR_DOMAIN_SHUTOFF
        self.xml = "<domain><devices/></domain>"

    def XMLDesc(self, flags: int = 0) -> str:
        return self.xml

    def isActive(self) -> bool:
        return self.code != 5

    def state(self) -> list[int]:
        return [self.code, 0]

    def createWithFlags(self, flags: int) -> None:
        self.connection.created.append(self.uuid)
        self.code = 3  # paused

    def resume(self) -> None:
        self.code = 1

    def destroy(self) -> None:
        self.code = 5
        if self.vm is not None:
            self.vm.on_libvirt_domain_stopped()  # what libvirt's event does

    def __getattr__(self, name: str) -> Any:
        return mock.MagicMock(name=f"domain.{name}")


class FakeConnection:
    def __init__(self) -> None:
        self.domains: dict[bytes, FakeDomain] = {}
        self.xml: list[str] = []
        self.created: list[bytes] = []

    def getInfo(self) -> list[object]:  # model, memory MiB, cpus, MHz, nodes, sockets, cores, threads
        return ["x86_64", 16384, 4, 2000, 1, 1, 4, 1]

    def lookupByUUID(self, uuid: bytes) -> FakeDomain:
        return self.domains.setdefault(uuid, FakeDomain(self, uuid))

    def lookupByID(self, xid: int) -> FakeDomain:  # dom0: always running
        domain = self.domains.setdefault(b"dom0", FakeDomain(self, b"dom0"))
        domain.code = 1
        return domain

    def defineXML(self, xml: str) -> FakeDomain:
        self.xml.append(xml)
        uuid_text = re.search(r"<uuid>([^<]+)</uuid>", xml)
        domain = self.lookupByUUID(uuidlib.UUID(uuid_text.group(1)).bytes if uuid_text else b"")
        domain.xml = xml
        return domain

    def __getattr__(self, name: str) -> Any:
        return mock.MagicMock(name=f"connection.{name}")


class EmptyQubesDB:
    """A qube's QubesDB that holds nothing (no devices, no entries)."""

    def __init__(self, name: str) -> None:
        self.name = name

    def read(self, key: str) -> None:
        return None

    def list(self, path: str) -> list[str]:
        return []

    def __getattr__(self, name: str) -> Any:
        return lambda *args, **kwargs: None


class Dom0:
    """A dom0 for one test: qubesd's app on a temporary qubes.xml, and the edges."""

    def __init__(self, qubes: ModuleType, folder: Path) -> None:
        self.qubes, self.folder = qubes, folder
        use_base_dir(qubes.config, str(folder / "var-lib-qubes"))
        self.loop = asyncio.new_event_loop()
        asyncio.set_event_loop(self.loop)
        self.kernels = Path(qubes.config.qubes_base_dir) / "vm-kernels"
        self.connection = FakeConnection()
        self.cryptsetup: list[tuple[str, ...]] = []
        self.xml_path = str(folder / "qubes.xml")
        self._patches = self._edges()
        from qubes_ephemeral.qubesd import extension as qubesd_extension

        self._patches.append(mock.patch.object(qubesd_extension.EphemeralDisposables, "stamp", folder / "stamp.json"))
        self._patches[-1].start()
        self.app = qubes.Qubes.create_empty_store(self.xml_path, offline_mode=True)
        self._connect(self.app)
        self.ext = next(e for e in self.app._extensions if type(e).__name__ == "EphemeralDisposables")
        self.ext.kernels_dir = None  # qubesd's own folder, from qubes.config

    def _edges(self) -> list[Any]:
        qubes = self.qubes

        async def cryptsetup(*args: str) -> None:
            self.cryptsetup.append(args)

        async def nothing(*args: object, **kwargs: object) -> None:
            return None

        async def start_qubesdb(vm: Any) -> None:
            vm._qdb_connection = EmptyQubesDB(vm.name)

        import qubesdb

        vm_class = qubes.vm.qubesvm.QubesVM
        patches = [
            mock.patch.object(qubesdb, "QubesDB", EmptyQubesDB),
            mock.patch.object(qubes.utils, "cryptsetup", cryptsetup),
            mock.patch.object(qubes.utils, "run_program", nothing),
            mock.patch.object(qubes.storage, "_am_root", False),
            mock.patch.object(vm_class, "start_qubesdb", start_qubesdb),
            mock.patch.object(vm_class, "start_qrexec_daemon", nothing),
            mock.patch.object(vm_class, "create_qdb_entries", lambda vm: None),
        ]
        for cls in {qubes.vm.BaseVM, getattr(qubes.vm, "LocalVM", qubes.vm.BaseVM), vm_class}:
            if "start_qdb_watch" in cls.__dict__:
                patches.append(mock.patch.object(cls, "start_qdb_watch", lambda vm, *a, **k: None))
        if hasattr(qubes.storage, "VOLUME_STATE_DIR"):  # R4.3: a file per running volume under /run/qubes
            state_dir = self.folder / "run-qubes"
            state_dir.mkdir()
            patches.append(mock.patch.object(qubes.storage, "VOLUME_STATE_DIR", f"{state_dir}/"))
        for name in ("request_mem", "request_memory"):
            if hasattr(vm_class, name):
                patches.append(mock.patch.object(vm_class, name, lambda vm, *a, **k: None))
        for patch in patches:
            patch.start()
        return patches

    def _connect(self, app: Any) -> None:
        import jinja2

        # The libvirt templates a package installs under /usr/share/qubes/templates.
        app.env.loader = jinja2.FileSystemLoader([os.path.join(ADMIN, "templates")])
        app.vmm._offline_mode = False
        app.vmm._libvirt_conn = self.connection

    def close(self) -> None:
        for patch in reversed(self._patches):
            patch.stop()
        self.app.close()
        self.loop.close()

    def run(self, coroutine: Any) -> Any:
        return self.loop.run_until_complete(coroutine)

    # -- kernels -------------------------------------------------------------

    def kernel(self, version: str, initramfs: bytes) -> str:
        folder = self.kernels / version
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "vmlinuz").write_bytes(b"kernel")
        (folder / "initramfs").write_bytes(initramfs)
        return version

    # -- qubes -----------------------------------------------------------------

    def template(self, name: str = "fedora-41", kernel: str | None = None) -> Any:
        qubes = self.qubes
        if kernel is not None:
            self.app.default_kernel = kernel
        vm = self.app.add_new_vm(qubes.vm.templatevm.TemplateVM, name=name, label="black")
        self.run(vm.create_on_disk())
        return vm

    def dvm_template(self, template: Any, name: str = "default-dvm", **features: str) -> Any:
        vm = self.app.add_new_vm(
            self.qubes.vm.appvm.AppVM, name=name, template=template, label="red", template_for_dispvms=True
        )
        self.run(vm.create_on_disk())
        for feature, value in features.items():
            vm.features[feature.replace("_", "-")] = value
        return vm

    def named_disposable(self, dvm: Any, name: str = "sys-net") -> Any:
        vm = self.app.add_new_vm(self.qubes.vm.dispvm.DispVM, name=name, template=dvm, label="red", auto_cleanup=False)
        self.run(vm.create_on_disk())
        self.app.save()
        return vm

    def disposable(self, dvm: Any) -> Any:
        vm = self.run(self.qubes.vm.dispvm.DispVM.from_appvm(dvm))
        self.app.save()
        return vm

    # -- what qubesd does ------------------------------------------------------

    def start(self, vm: Any) -> BaseException | None:
        """DispVM.start() as qubesd runs it; the exception it raised, if any."""
        self.connection.lookupByUUID(vm.uuid.bytes).vm = vm
        try:
            self.run(vm.start(start_guid=False))
        except Exception as error:
            return error
        return None

    def admin_call(self, method: str, dest: str, arg: str = "", payload: bytes = b"") -> BaseException | None:
        """One admin API call from dom0, as qvm-* tools make it through qubesd."""
        qubes = self.qubes
        api = qubes.api.admin.QubesAdminAPI(self.app, b"dom0", method.encode(), dest.encode(), arg.encode())
        try:
            self.run(api.execute(untrusted_payload=payload))
        except Exception as error:
            return error
        return None

    def shutdown(self, vm: Any) -> None:
        """The qube powers off (libvirt's stopped event); qubesd handles it."""
        self.run(asyncio.wait_for(vm.kill(), 10))
        self.run(asyncio.sleep(0))

    def restart_qubesd(self) -> Any:
        """Save qubes.xml, drop the app, load qubes.xml again: a qubesd restart."""
        self.app.save()
        self.app.close()
        self.app = self.qubes.Qubes(self.xml_path, load=False, offline_mode=False)
        self._connect(self.app)  # before it loads: a qube libvirt runs is loaded as running
        self.app.load()
        for vm in self.app.domains:  # libvirt's domains outlive qubesd
            domain = self.connection.domains.get(vm.uuid.bytes)
            if domain is not None:
                domain.vm = vm
        return self.app

    def attached(self) -> dict[str, dict[str, bool]]:
        """The disks of the last libvirt XML qubesd defined: target -> read-only, and
        encrypted (its source is a mapping cryptsetup opened with a key from /dev/urandom)."""
        keyed = {
            f"/dev/mapper/{args[-1]}"
            for args in self.cryptsetup
            if "open" in args and "--key-file=/dev/urandom" in args
        }
        disks = {}
        for disk in ET.fromstring(self.connection.xml[-1]).iter("disk"):
            target = disk.find("target").get("dev")  # type: ignore[union-attr]
            source = disk.find("source")
            path = source.get("dev") or source.get("file") or "" if source is not None else ""
            disks[target] = {"readonly": disk.find("readonly") is not None, "encrypted": path in keyed}
        return disks


def volume_settings(vm: Any) -> dict[str, tuple[bool, object]]:
    """Each volume's rw and raw ephemeral setting: what qubes.xml keeps."""
    return {name: (volume.rw, volume._ephemeral) for name, volume in vm.volumes.items()}

"""qubesd extension: disposables of a marked disposable template forget, at every start.

Loaded by qubesd (qubes-core-admin) through the ``qubes.ext`` entry point;
qubesd must be restarted to load it. When loaded, it writes
/run/qubes-ephemeral/qubesd-extension.json, which the formula checks.

At ``domain-pre-start``, before qubesd starts the storage of a qube and
renders its libvirt configuration, it protects that very start:

- the disposable's root volume is read-only: the qube's initramfs then puts
  a copy-on-write layer for / on the volatile volume;
- its volatile volume is ephemeral: qubesd opens it with a fresh random key;
- with the feature ``qubes-ephemeral-private`` set to ``cow``, its private
  volume is read-only too, and the patched initramfs puts /rw on a second
  copy-on-write layer on the volatile volume.

It acts only on disposables whose own features, or their template chain's,
carry ``qubes-ephemeral``. The template itself is never touched.

Nothing it changes outlives the start. Once qubesd has opened the volumes
and written the libvirt configuration (``domain-spawn``), every setting is
put back (after a failed start, ``rw`` at once and ``ephemeral`` at the
qube's next load or start): the running qube keeps its read-only disks and
its keyed volatile volume, and a record saved beside the settings
(``qubes-ephemeral-restore``) undoes any that a save caught. A named disposable is unchanged when the package goes, and
nothing depends on whether a release saves ``rw False`` across a qubesd
restart.

It never removes a qube. R4.3's ``DispVM.start()`` removes any disposable
whose start raises, named ones included, so a start is refused only where
that costs nothing: at the admin API (``admin.vm.Start``, used by qvm-start
and qrexec), before any start begins, and inside a start only for
disposables that are removed at shutdown anyway. A named disposable started
from inside qubesd (as a netvm, say) that cannot get its /rw copy-on-write
starts with /rw read-only: fail closed, logged in qubesd's journal. Settings
that would need such a refusal are refused when they are made: the
``qubes-ephemeral-private`` feature and a qube's ``kernel``, set through
the admin API (qvm-features, qvm-prefs, the formula). Only there: a
disposable copies its template's features when it is created, and that
copy must never fail.

Whether a dom0-provided kernel's initramfs carries the /rw copy-on-write is
read from the record vm-initramfs writes as root, at every boot and at each
kernel install (/run/qubes-ephemeral/vm-kernels.json: each initramfs's state
with the device, inode, size, mtime and ctime of the bytes it read), and then
cached: a start costs one stat. Only a file the record does not know as it
is now is read here (20 MB and more, inside qubesd's event loop).
"""

from __future__ import annotations

import json
import logging
import os
import stat
from pathlib import Path
from typing import Any

import qubes.config  # only inside qubesd
import qubes.exc
import qubes.ext
import qubes.vm
import qubes.vm.dispvm

from qubes_ephemeral import __version__
from qubes_ephemeral.payload import vm_initramfs
from qubes_ephemeral.qubesd.feature import (
    FEATURE,
    LOADED_STAMP,
    OWN_INITRAMFS_DRACUT,
    OWN_INITRAMFS_FEATURE,
    PRIVATE_COW,
    PRIVATE_FEATURE,
    RESTORE_FEATURE,
)

# What a start changes: (volume, attribute, protected value).
PROTECTIONS = (("root", "rw", False), ("private", "rw", False), ("volatile", "ephemeral", True))
# ephemeral is put back raw: None means "as its pool says", which the public setter cannot express.
RAW = {"rw": "rw", "ephemeral": "_ephemeral"}
PUBLIC = {raw: public for public, raw in RAW.items()}

log = logging.getLogger(__name__)


class EphemeralDisposables(qubes.ext.Extension):
    stamp = Path(LOADED_STAMP)
    kernels_dir: Path | None = None  # None: qubesd's own (/var/lib/qubes/vm-kernels)
    # What vm-initramfs found; trusted only as a regular file of this owner that no one else may write.
    status_record: Path = vm_initramfs.STATUS_RECORD
    record_owner: int = 0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.status_cache: dict[Path, tuple[vm_initramfs.Key, str]] = getattr(self, "status_cache", {})
        self.recorded: dict[str, tuple[vm_initramfs.Key, str]] = {}
        self.record_key: vm_initramfs.Key | None = None  # the record's own, as loaded
        self._load_status_record()
        try:
            self.stamp.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
            self.stamp.write_text(json.dumps({"version": __version__, "pid": os.getpid()}) + "\n")
        except OSError:
            pass  # the formula then reports the extension as not loaded

    # -- the start ---------------------------------------------------------

    @qubes.ext.handler("domain-pre-start")
    def on_domain_pre_start(self, vm: Any, event: str, **kwargs: object) -> None:
        if not self._forgetful(vm):
            return
        private_cow = self._private_cow(vm)
        try:
            problem = self._cow_problem(vm) if private_cow else None
        except Exception as error:  # never raise for a named disposable: R4.3 would remove it
            problem = f"qubes-ephemeral: cannot tell whether {vm.name} gets its /rw copy-on-write: {error!r}"
        if problem and getattr(vm, "auto_cleanup", False):
            # Removed at shutdown anyway: refusing it loses nothing.
            raise qubes.exc.QubesException(problem)
        if problem:
            vm.log.error("%s; it starts with /rw read-only (nothing it writes there is kept)", problem)
        self._restore(vm)  # a record left by an earlier start (qubesd stopped mid-start): put it back first
        wanted = [
            (name, attribute, value)
            for name, attribute, value in PROTECTIONS
            if (name != "private" or private_cow) and getattr(vm.volumes[name], attribute) != value
        ]  # a value already so (an ephemeral_volatile pool, say) is left alone
        if not wanted:
            return
        changes: list[list[object]] = [
            [name, RAW[attribute], getattr(vm.volumes[name], RAW[attribute])] for name, attribute, _ in wanted
        ]
        # The record goes where qubes.xml goes: a save before the spawn (qubesd
        # saves when it is stopped) keeps the record beside the settings.
        self._record(vm, changes)
        for name, attribute, value in wanted:
            setattr(vm.volumes[name], attribute, value)
        vm.log.info(
            "qubes-ephemeral: for this start %s",
            ", ".join(f"{name} {'read-only' if raw == 'rw' else 'ephemeral'}" for name, raw, _ in changes),
        )

    @qubes.ext.handler("domain-spawn")
    def on_domain_spawn(self, vm: Any, event: str, **kwargs: object) -> None:
        """qubesd opened the volumes and wrote the libvirt configuration: put every setting back."""
        self._restore(vm)

    @qubes.ext.handler("domain-start-failed")
    def on_domain_start_failed(self, vm: Any, event: str, **kwargs: object) -> None:
        """The start failed. R4.2 stops the storage right after this event, closing an
        ephemeral volume's mapping only while it says ephemeral: rw now, ephemeral at
        the qube's next load or start."""
        self._restore(vm, only="rw")

    @qubes.ext.handler("domain-stopped")
    def on_domain_stopped(self, vm: Any, event: str, **kwargs: object) -> None:
        """R4.2 closes a volume's dm-crypt mapping only while the volume says ephemeral.

        Runs before qubesd's own handler stops the storage. What it finds is
        what the start opened, so it holds across a qubesd restart too.
        """
        changes = []
        for name, volume in getattr(vm, "volumes", {}).items():
            if not volume.ephemeral and os.path.exists(volume.encrypted_volume_path(vm.name, name)):
                changes.append([name, "_ephemeral", volume._ephemeral])
                volume._ephemeral = True
        if changes:
            self._record(vm, changes)

    @qubes.ext.handler("domain-shutdown")
    def on_domain_shutdown(self, vm: Any, event: str, **kwargs: object) -> None:
        self._restore(vm)

    @qubes.ext.handler("domain-load")
    def on_domain_load(self, vm: Any, event: str, **kwargs: object) -> None:
        """qubesd (re)started: a halted qube's record is put back now; a running one's at its shutdown."""
        if RESTORE_FEATURE not in getattr(vm, "features", {}):
            return
        try:
            halted = vm.get_power_state() == "Halted"
        except Exception:  # libvirt not there yet: the next start or shutdown puts it back
            return
        if halted:
            self._restore(vm)

    @staticmethod
    def _load_record(vm: Any) -> list[list[object]] | None:
        """The record of what to put back: [[volume, attribute, value], ...]; None when it is
        not one we write (it must never raise: inside a start, R4.3 would remove the qube)."""
        try:
            record = json.loads(vm.features.get(RESTORE_FEATURE, "[]") or "[]")
        except ValueError:
            record = None
        if not isinstance(record, list) or not all(isinstance(e, list) and len(e) == 3 for e in record):
            vm.log.error("qubes-ephemeral: %s holds no record we write; left as it is", RESTORE_FEATURE)
            return None
        return record

    def _record(self, vm: Any, changes: list[list[object]]) -> None:
        vm.features[RESTORE_FEATURE] = json.dumps((self._load_record(vm) or []) + changes)

    def _restore(self, vm: Any, only: str | None = None) -> None:
        """Put back what the record says, newest first; forget what was put back."""
        changes = self._load_record(vm)
        if changes is None:
            return
        kept: list[list[object]] = []
        for volume_name, raw, before in reversed(changes):
            if only is not None and raw != only:
                kept.insert(0, [volume_name, raw, before])
            elif isinstance(raw, str) and raw in PUBLIC and isinstance(volume_name, str):
                if volume_name in vm.volumes:
                    setattr(vm.volumes[volume_name], raw, before)
                # What qubes.xml was loaded into: at domain-load, qubesd makes the
                # volumes from it after this handler (they may not exist yet).
                config = getattr(vm, "volume_config", {}).get(volume_name)
                if isinstance(config, dict):
                    if before is None:
                        config.pop(PUBLIC[raw], None)
                    else:
                        config[PUBLIC[raw]] = before
        if kept:
            vm.features[RESTORE_FEATURE] = json.dumps(kept)
        elif RESTORE_FEATURE in vm.features:
            del vm.features[RESTORE_FEATURE]

    # -- refusals that remove nothing --------------------------------------

    @qubes.ext.handler("admin-permission:admin.vm.Start", vm=qubes.vm.BaseVM)
    def on_admin_start(self, subject: Any, event: str, dest: Any = None, **kwargs: object) -> None:
        # A disposable removed at shutdown anyway is refused inside its start, which
        # also removes it; refused here, it would stay behind, halted (qrexec's @dispvm).
        if dest is None or getattr(dest, "auto_cleanup", False):
            return
        if not self._forgetful(dest) or not self._private_cow(dest):
            return
        problem = self._cow_problem(dest)
        if problem:
            raise qubes.exc.QubesException(problem)

    @qubes.ext.handler("admin-permission:admin.vm.feature.Set", vm=qubes.vm.BaseVM)
    def on_admin_feature_set(
        self, subject: Any, event: str, dest: Any = None, arg: str = "", value: object = None, **kwargs: object
    ) -> None:
        if arg != PRIVATE_FEATURE or str(value) != PRIVATE_COW or dest is None:
            return
        problem = self._cow_problem(dest)
        if problem:
            raise qubes.exc.QubesException(f"{PRIVATE_FEATURE}={PRIVATE_COW} refused for {dest.name}: {problem}")

    @qubes.ext.handler("admin-permission:admin.vm.property.Set", vm=qubes.vm.BaseVM)
    def on_admin_property_set(
        self, subject: Any, event: str, dest: Any = None, arg: str = "", newvalue: object = None, **kwargs: object
    ) -> None:
        if arg != "kernel" or dest is None or not self._private_cow(dest):
            return
        problem = self._cow_problem(dest, kernel=newvalue)
        if problem:
            raise qubes.exc.QubesException(f"kernel {newvalue!r} refused for {dest.name}: {problem}")

    # -- what a qube needs -------------------------------------------------

    @staticmethod
    def _forgetful(vm: Any) -> bool:
        return isinstance(vm, qubes.vm.dispvm.DispVM) and bool(vm.features.check_with_template(FEATURE, None))

    @staticmethod
    def _private_cow(vm: Any) -> bool:
        return bool(vm.features.check_with_template(PRIVATE_FEATURE, None) == PRIVATE_COW)

    def _cow_problem(self, vm: Any, kernel: object = ...) -> str | None:
        """Why this qube cannot get its /rw copy-on-write, or None."""
        if kernel is ...:
            kernel = getattr(vm, "kernel", None)
        if not kernel:
            if vm.features.check_with_template(OWN_INITRAMFS_FEATURE, None) == OWN_INITRAMFS_DRACUT:
                return None
            return (
                f"qubes-ephemeral: {vm.name} boots its template's own kernel, whose initramfs has no /rw "
                "copy-on-write: give it a dom0-provided kernel (qvm-prefs QUBE kernel VERSION), or apply "
                f"ephemeral.template in a dracut template and set its feature {OWN_INITRAMFS_FEATURE}={OWN_INITRAMFS_DRACUT}"
            )
        state = self._kernel_status(self._kernels_dir() / str(kernel) / "initramfs")
        if state == "patched":
            return None
        return (
            f"qubes-ephemeral: the initramfs of VM kernel {kernel} lacks the /rw copy-on-write ({state}); "
            f"in dom0 run: systemctl start {vm_initramfs.SERVICE_UNIT}"
        )

    def _kernels_dir(self) -> Path:
        if self.kernels_dir is not None:
            return self.kernels_dir
        return Path(str(qubes.config.qubes_base_dir), str(qubes.config.system_path["qubes_kernels_base_dir"]))

    def _kernel_status(self, initramfs: Path) -> str:
        """vm_initramfs.status, from the cache or vm-initramfs's record while the
        file is as they saw it; read here only when neither knows it."""
        try:
            key = vm_initramfs.file_key(initramfs.stat())
        except OSError:
            return "missing"
        cached = self.status_cache.get(initramfs)
        if cached and cached[0] == key:
            return cached[1]
        self._load_status_record()
        recorded = self.recorded.get(os.path.abspath(initramfs))
        if recorded and recorded[0] == key:
            self.status_cache[initramfs] = recorded
            return recorded[1]
        log.info("qubes-ephemeral: %s holds no state of %s as it is now: reading it", self.status_record, initramfs)
        try:
            state, read_key = self._read_status(initramfs)
        except Exception as error:  # never an exception inside a start
            state, read_key = f"error: {type(error).__name__}: {error}", None
        # Cached under the key of the bytes read (a file replaced since the stat above
        # is not taken for the one read); bytes that changed during the read: not cached.
        if read_key is not None:
            self.status_cache[initramfs] = (read_key, state)
        return state

    @staticmethod
    def _read_status(initramfs: Path) -> tuple[str, vm_initramfs.Key | None]:
        """The initramfs read here, in qubesd's event loop: only when the record lacks it."""
        return vm_initramfs.examine(initramfs)

    def _load_status_record(self) -> None:
        """Read vm-initramfs's record again if it changed (a few hundred bytes). One
        that is not a regular file of ``record_owner``, or not shaped as vm-initramfs
        writes it, holds nothing; never an exception (inside a start R4.3 would
        remove the qube)."""
        try:
            info = os.lstat(self.status_record)
            if not self._trusted(info):
                self.recorded, self.record_key = {}, None
                return
            if vm_initramfs.file_key(info) == self.record_key:
                return
            self.recorded, self.record_key = {}, None
            # O_NOFOLLOW and fstat: what is read is what was checked; O_NONBLOCK: never wait on a FIFO.
            fd = os.open(self.status_record, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
            with open(fd, "rb") as file:
                info = os.fstat(file.fileno())
                if not self._trusted(info):
                    return
                data = file.read(vm_initramfs.RECORD_LIMIT + 1)
        except OSError:
            self.recorded, self.record_key = {}, None
            return
        if len(data) <= vm_initramfs.RECORD_LIMIT:
            self.recorded = vm_initramfs.parse_record(data)
        self.record_key = vm_initramfs.file_key(info)

    def _trusted(self, info: os.stat_result) -> bool:
        return stat.S_ISREG(info.st_mode) and info.st_uid == self.record_owner and not info.st_mode & 0o022

"""qubesd extension: disposables of a marked disposable template forget, at every start.

Loaded by qubesd (qubes-core-admin) through the ``qubes.ext`` entry point;
qubesd must be restarted to load it. When loaded, it writes
/run/qubes-ephemeral/qubesd-extension.json, which the formula checks. It acts
on ``domain-pre-start``, which qubesd fires before it starts the storage of
a qube and renders its libvirt configuration, so what it sets applies to
that very start:

- the disposable's root volume is read-only: the qube's initramfs then puts
  a copy-on-write layer for / on the volatile volume;
- its volatile volume is ephemeral: qubesd opens it with a fresh random key;
- with the feature ``qubes-ephemeral-private`` set to ``cow``, its private
  volume is read-only too, and the patched initramfs puts /rw on a second
  copy-on-write layer on the volatile volume. The start is refused when the
  qube boots a dom0-provided kernel whose initramfs lacks that patch.

It acts only on disposables whose disposable template (or that template's
template) has the feature ``qubes-ephemeral`` set; disposables copy their
template's features when they are created. The template itself is never
touched. Doing this per start, not once on the template, also survives
R4.2's qubesd, which does not save an explicit ``rw False`` across restarts.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import qubes.exc  # only inside qubesd
import qubes.ext
import qubes.vm.dispvm

from . import __version__, vm_initramfs
from .qubesd_extension_feature import FEATURE, LOADED_STAMP, PRIVATE_COW, PRIVATE_FEATURE


class EphemeralDisposables(qubes.ext.Extension):
    stamp = Path(LOADED_STAMP)
    kernels_dir = vm_initramfs.KERNELS_DIR

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        try:
            self.stamp.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
            self.stamp.write_text(json.dumps({"version": __version__, "pid": os.getpid()}) + "\n")
        except OSError:
            pass  # the formula then reports the extension as not loaded

    @qubes.ext.handler("domain-pre-start")
    def on_domain_pre_start(self, vm: Any, event: str, **kwargs: object) -> None:
        if not isinstance(vm, qubes.vm.dispvm.DispVM):
            return
        if not vm.features.check_with_template(FEATURE, None):
            return
        private_cow = vm.features.check_with_template(PRIVATE_FEATURE, None) == PRIVATE_COW
        if private_cow:
            self._check_kernel(vm)
        root, volatile, private = vm.volumes["root"], vm.volumes["volatile"], vm.volumes["private"]
        if root.rw:
            root.rw = False
            vm.log.info("qubes-ephemeral: root volume read-only, its writes go to the volatile volume")
        if private_cow and private.rw:
            private.rw = False
            vm.log.info("qubes-ephemeral: private volume read-only, /rw writes go to the volatile volume")
        if not volatile.ephemeral:
            volatile.ephemeral = True
            vm.log.info("qubes-ephemeral: volatile volume keyed for this start only")

    def _check_kernel(self, vm: Any) -> None:
        """A dom0-provided kernel must carry the /rw copy-on-write in its initramfs."""
        kernel = getattr(vm, "kernel", None)
        if not kernel:
            return  # the qube boots its own kernel: the template's dracut module does it
        initramfs = self.kernels_dir / str(kernel) / "initramfs"
        state = vm_initramfs.status(initramfs)
        if state in ("patched", "not-qubes", "missing"):
            return
        raise qubes.exc.QubesException(
            f"qubes-ephemeral: the initramfs of VM kernel {kernel} lacks the /rw copy-on-write ({state}); "
            "in dom0 run: systemctl start qubes-ephemeral-vm-kernels.service"
        )

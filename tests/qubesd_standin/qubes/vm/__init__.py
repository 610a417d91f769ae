"""Stand-in for the parts of qubes.vm, qubes.features and qubes.storage the extension touches."""

from __future__ import annotations

import fnmatch
import logging


class Volume:
    def __init__(self, name, pool, rw, snap_on_start, save_on_stop, ephemeral=None):
        self.name, self.pool, self.rw = name, pool, rw
        self.snap_on_start, self.save_on_stop = snap_on_start, save_on_stop
        self._ephemeral = ephemeral

    @property
    def ephemeral(self):
        # qubes/storage/__init__.py Volume.ephemeral
        if self._ephemeral is not None:
            return self._ephemeral
        if self.snap_on_start or self.save_on_stop or not self.rw:
            return False
        return self.pool.ephemeral_volatile

    @ephemeral.setter
    def ephemeral(self, value):
        if value and (self.snap_on_start or self.save_on_stop or not self.rw):
            raise ValueError(
                "Cannot enable ephemeral on snap_on_start or save_on_stop or non-dom0 or not writable volume"
            )
        self._ephemeral = bool(value)

    def encrypted_volume_path(self, qube_name, device_name):
        # qubes/storage/__init__.py: the dm-crypt mapping of an ephemeral volume
        return f"/dev/mapper/vm-{qube_name}-{device_name}"

    @property
    def config(self):
        config = {"pool": self.pool, "rw": self.rw}
        if self._ephemeral is not None:
            config["ephemeral"] = self._ephemeral
        return config


class Pool:
    def __init__(self, name, ephemeral_volatile=False):
        self.name, self.ephemeral_volatile = name, ephemeral_volatile


class Features(dict):
    """qubes/features.py: a VM's own features, with template inheritance on request."""

    def __init__(self, vm):
        super().__init__()
        self.vm = vm

    def __setitem__(self, key, value):
        # Features.__setitem__: booleans become '1' or ''.
        super().__setitem__(key, ("1" if value else "") if isinstance(value, bool) else str(value))

    def check_with_template(self, feature, default=KeyError):
        vm = self.vm
        while vm is not None:
            if feature in vm.features:
                return vm.features[feature]
            vm = getattr(vm, "template", None)
        if default is KeyError:
            raise KeyError(feature)
        return default


class BaseVM:
    """qubes/events.py Emitter: handlers are kept per class and found along the MRO."""

    __handlers__: dict[str, list] = {}

    def __init__(self, name, template=None):
        self.name = name
        self.template = template
        self.features = Features(self)
        self.volumes: dict[str, Volume] = {}
        self.log = logging.getLogger(f"vm.{name}")

    @classmethod
    def add_handler(cls, event, func):
        cls.__dict__["__handlers__"].setdefault(event, []).append(func)

    def fire_event(self, event, pre_event=False, **kwargs):
        order = type(self).__mro__ if pre_event else tuple(reversed(type(self).__mro__))
        for cls in order:
            for pattern, funcs in cls.__dict__.get("__handlers__", {}).items():
                if fnmatch.fnmatch(event, pattern):
                    for func in funcs:
                        func(self, event, **kwargs)


class LocalVM(BaseVM):
    """qubes/vm/__init__.py LocalVM: the default class extension handlers attach to."""

    __handlers__: dict[str, list] = {}


class AppVM(LocalVM):
    __handlers__: dict[str, list] = {}

    def __init__(self, name, template=None, template_for_dispvms=False, pool=None, kernel=None):
        super().__init__(name, template)
        self.template_for_dispvms = template_for_dispvms
        # qubes/vm/qubesvm.py kernel: a folder name under /var/lib/qubes/vm-kernels,
        # or '' for a qube that boots its own kernel; by default the template's.
        self._kernel = kernel
        # qubes/vm/appvm.py default_volume_config for a template-based qube.
        self.volumes = {
            "root": Volume("root", pool, rw=True, snap_on_start=True, save_on_stop=False),
            "private": Volume("private", pool, rw=True, snap_on_start=False, save_on_stop=True),
            "volatile": Volume("volatile", pool, rw=True, snap_on_start=False, save_on_stop=False),
        }

    @property
    def kernel(self):
        if self._kernel is not None:
            return self._kernel
        return self.template.kernel if self.template is not None else "6.6.48-1.qubes.fc37.x86_64"

    def start(self):
        # qubes/vm/qubesvm.py start(): domain-pre-start, then storage.start() (an
        # ephemeral volume is opened with a fresh key) and the libvirt XML, where
        # a volume with rw False becomes <readonly/> (templates/libvirt/xen.xml).
        # An exception in a handler stops the start: nothing is attached.
        self.attached = None
        try:
            self.fire_event("domain-pre-start", pre_event=True, start_guid=True, mem_required=None)
        except Exception as exc:
            self.fire_event("domain-start-failed", reason=str(exc))
            raise
        self.attached = {
            name: {"readonly": not volume.rw, "ephemeral": volume.ephemeral} for name, volume in self.volumes.items()
        }
        self.fire_event("domain-spawn", start_guid=True)

    def shutdown(self):
        # on_libvirt_domain_stopped: domain-stopped (storage stops), then domain-shutdown.
        self.fire_event("domain-stopped")
        self.fire_event("domain-shutdown")

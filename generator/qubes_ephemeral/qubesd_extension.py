"""qubesd extension: disposables of a marked disposable template forget, at every start.

Loaded by qubesd (qubes-core-admin) through the ``qubes.ext`` entry point;
qubesd must be restarted to load it. It acts on ``domain-pre-start``, which
qubesd fires before it starts the storage of a qube, so what it sets applies
to that very start:

- the disposable's root volume is read-only: the qube's initramfs then puts
  a copy-on-write layer for / on the volatile volume;
- its volatile volume is ephemeral: qubesd opens it with a fresh random key.

It acts only on disposables whose disposable template (or that template's
template) has the feature ``qubes-ephemeral`` set; disposables copy their
template's features when they are created. The template itself is never
touched. Doing this per start, not once on the template, also survives
R4.2's qubesd, which does not save an explicit ``rw False`` across restarts.
"""

from __future__ import annotations

from typing import Any

import qubes.ext  # only inside qubesd
import qubes.vm.dispvm

from .qubesd_extension_feature import FEATURE


class EphemeralDisposables(qubes.ext.Extension):
    @qubes.ext.handler("domain-pre-start")
    def on_domain_pre_start(self, vm: Any, event: str, **kwargs: object) -> None:
        if not isinstance(vm, qubes.vm.dispvm.DispVM):
            return
        if not vm.features.check_with_template(FEATURE, None):
            return
        root, volatile = vm.volumes["root"], vm.volumes["volatile"]
        if root.rw:
            root.rw = False
            vm.log.info("qubes-ephemeral: root volume read-only, its writes go to the volatile volume")
        if not volatile.ephemeral:
            volatile.ephemeral = True
            vm.log.info("qubes-ephemeral: volatile volume keyed for this start only")

"""Stand-in for qubes-core-admin qubes/vm/dispvm.py: how a disposable derives its volumes."""

from __future__ import annotations

from qubes.vm import AppVM, Volume


class DispVM(AppVM):
    __handlers__: dict[str, list] = {}

    def __init__(self, name, template, auto_cleanup=True):
        super().__init__(name, template=template)
        # False for a named disposable (sys-net, say): kept when it stops.
        self.auto_cleanup = auto_cleanup
        # default_volume_config: root and private are snapshots of the template's.
        defaults = {
            "root": dict(snap_on_start=True, save_on_stop=False),
            "private": dict(snap_on_start=True, save_on_stop=False),
            "volatile": dict(snap_on_start=False, save_on_stop=False),
        }
        self.volumes = {}
        for name_, flags in defaults.items():
            config = template.volumes[name_].config  # copies pool, rw, and an explicit ephemeral
            self.volumes[name_] = Volume(
                name_, config["pool"], config["rw"], ephemeral=config.get("ephemeral"), **flags
            )
        self.features.update(template.features)  # copied once, at creation

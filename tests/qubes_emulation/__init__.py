"""A stand-in for the Qubes dom0 admin commands: see qubes_admin.py."""

from __future__ import annotations

import json
import os
from pathlib import Path

COMMANDS = ("qvm-pool", "qvm-volume", "qvm-prefs", "qubes-prefs", "qvm-features", "qvm-ls")
SCRIPT = Path(__file__).with_name("qubes_admin.py")


def volume(rw: bool, snap_on_start: bool, save_on_stop: bool, pool: str = "vm-pool") -> dict[str, object]:
    # "ephemeral": None is "not set explicitly": the volume follows its pool.
    return {"rw": rw, "snap_on_start": snap_on_start, "save_on_stop": save_on_stop, "ephemeral": None,
            "pool": pool, "revisions_to_keep": 2, "vid": None, "source": None, "size": 0, "usage": 0,
            "is_outdated": False}  # fmt: skip


def app_volumes() -> dict[str, dict[str, object]]:
    # As qubes/vm/appvm.py declares them for a template-based qube.
    return {
        "root": volume(rw=True, snap_on_start=True, save_on_stop=False),
        "private": volume(rw=True, snap_on_start=False, save_on_stop=True),
        "volatile": volume(rw=True, snap_on_start=False, save_on_stop=False),
        "kernel": volume(rw=False, snap_on_start=False, save_on_stop=False, pool="linux-kernel"),
    }


def dom0_like_state() -> dict[str, object]:
    """A fresh R4.2 install: LVM thin pool vm-pool as default, two disposable templates, an AppVM."""
    return {
        # default_pool_volatile not set: it follows default_pool.
        "prefs": {"default_pool": "vm-pool", "default_dispvm": "default-dvm"},
        "pools": {
            "vm-pool": {
                "name": "vm-pool",
                "driver": "lvm_thin",
                "volume_group": "qubes_dom0",
                "thin_pool": "vm-pool",
                "revisions_to_keep": 2,
                "ephemeral_volatile": False,
            },
            "varlibqubes": {
                "name": "varlibqubes",
                "driver": "file-reflink",
                "dir_path": "/var/lib/qubes",
                "revisions_to_keep": 1,
                "ephemeral_volatile": False,
            },
            "linux-kernel": {"name": "linux-kernel", "driver": "linux-kernel", "dir_path": "/var/lib/qubes/vm-kernels"},
            "ephemeral-pool": {
                "name": "ephemeral-pool",
                "driver": "file",
                "dir_path": "/var/lib/qubes-ephemeral/pool",
                "revisions_to_keep": 1,
                "ephemeral_volatile": False,
            },
        },
        "vms": {
            "default-dvm": {"prefs": {"template_for_dispvms": True}, "volumes": app_volumes()},
            "work-dvm": {"prefs": {"template_for_dispvms": True}, "volumes": app_volumes()},
            "work": {"prefs": {"template_for_dispvms": False}, "volumes": app_volumes()},
        },
        "calls": [],
    }


def install(folder: Path, state: dict[str, object]) -> dict[str, str]:
    """Put the commands in folder/bin and the state in folder; return the environment to use."""
    bin_dir = folder / "bin"
    bin_dir.mkdir(parents=True, exist_ok=True)
    for name in COMMANDS:
        (bin_dir / name).symlink_to(SCRIPT)
    SCRIPT.chmod(0o755)
    path = folder / "qubes-state.json"
    path.write_text(json.dumps(state, indent=1, sort_keys=True))
    return {"PATH": f"{bin_dir}:{os.environ['PATH']}", "QUBES_EMULATION_STATE": str(path)}


def create_disposable(state_file: Path, name: str, template: str, **own_features: str) -> None:
    """The user creates a named disposable (qvm-create --class DispVM): as qubes/vm/dispvm.py
    does, it copies its template's features at creation. Not one of the formula's calls."""
    state = json.loads(state_file.read_text())
    features = dict(state["vms"][template].get("features", {}))
    features.update(own_features)
    state["vms"][name] = {"class": "DispVM", "template": template, "prefs": {"template_for_dispvms": False},
                          "volumes": app_volumes(), "features": features}  # fmt: skip
    state_file.write_text(json.dumps(state, indent=1, sort_keys=True))


def restart_qubesd(state_file: Path, release: str) -> None:
    """qubesd saves qubes.xml and loads it again, as the given release does. R4.2, and R4.3
    before 4.3.47, do not write a volume's rw="False" (qubes-core-admin PR #829, #834): the
    volume comes back writable, as its class declares it. Later releases keep it."""
    major, minor, patch = (int(part) for part in release.split("."))
    if (major, minor) == (4, 2) or (major, minor, patch) < (4, 3, 47):
        state = json.loads(state_file.read_text())
        for vm in state["vms"].values():
            for name, config in vm["volumes"].items():
                if name != "kernel" and config["rw"] is False:
                    config["rw"] = True
        state_file.write_text(json.dumps(state, indent=1, sort_keys=True))

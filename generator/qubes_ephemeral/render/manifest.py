"""Pure renderers: a validated Description in, a Manifest of artifacts out."""

from __future__ import annotations

import posixpath
import re

from qubes_ephemeral.description import devices
from qubes_ephemeral.description.model import Crypt, Description, Scratch, Swap
from qubes_ephemeral.render import dropins, layout, naming, private_cow, qubes_plan
from qubes_ephemeral.render.artifacts import (
    CRYPTTAB,
    FSTAB,
    REPLACED_PREFIX,
    SECTIONS,
    UNIT_DIR,
    Artifact,
    Block,
    CommentOut,
    Directory,
    File,
    Manifest,
    Symlink,
    guard_path,
    marker_end,
    marker_start,
)
from qubes_ephemeral.render.templating import render_template as _template

FORMAT_UNIT = "qubes-ephemeral-format.service"
PROTECT_UNIT = "qubes-ephemeral-protect.service"


def crypt_options(crypt: Crypt) -> str:
    options = ["plain", f"cipher={crypt.cipher}", f"size={crypt.key_size}", f"sector-size={crypt.sector_size}"]
    if crypt.discard:
        options.append("discard")
    if crypt.workqueue_bypass:
        options += ["no-read-workqueue", "no-write-workqueue"]
    # nofail: a missing or refused device must not stop the boot.
    options += ["nofail", f"x-systemd.device-timeout={crypt.device_timeout}s"]
    if isinstance(crypt, Swap):
        options.append("swap")  # systemd-cryptsetup runs mkswap on the fresh mapping
    return ",".join(options)


def crypttab_line(crypt: Crypt) -> str:
    # The key file /dev/urandom: a fresh key at every open, never stored.
    return f"{crypt.name} {crypt.device.path} /dev/urandom {crypt_options(crypt)}\n"


def scratch_fstab_line(scratch: Scratch) -> str:
    options = [*scratch.mount_options, "nofail", f"x-systemd.requires={FORMAT_UNIT}",
               f"x-systemd.device-timeout={scratch.device_timeout}s"]  # fmt: skip
    return f"{naming.mapping(scratch.name)} {scratch.mountpoint} {scratch.fs} {','.join(options)} 0 0\n"


def swap_fstab_line(swap: Swap) -> str:
    options = ["defaults", "nofail", f"x-systemd.device-timeout={swap.device_timeout}s"]
    if swap.priority is not None:
        options.append(f"pri={swap.priority}")
    return f"{naming.mapping(swap.name)} none swap {','.join(options)} 0 0\n"


def _blocks(crypt: Crypt, section: str, fstab_line: str) -> list[Artifact]:
    """Its crypttab and fstab lines, between markers of its own section."""
    what = "scratch filesystem" if section == "scratch" else "swap"
    return [
        Block(f"crypttab-{section}", CRYPTTAB, f"the {what} device, plain dm-crypt keyed from /dev/urandom",
              crypttab_line(crypt), marker_start(section), marker_end(section), section=section),
        Block(f"fstab-{section}", FSTAB, f"the {what} on its mapping", fstab_line,
              marker_start(section), marker_end(section), section=section),
    ]  # fmt: skip


def mkfs_command(scratch: Scratch) -> str:
    device = naming.mapping(scratch.name)
    if scratch.fs == "xfs":
        # -K: no discard pass over the whole device at every boot.
        # reflink=1: a file-reflink Qubes pool needs it (the default of recent xfsprogs).
        return f"/usr/sbin/mkfs.xfs -q -f -K -m reflink=1 {device}"
    # No journal to zero, inode tables initialised lazily, no discard pass:
    # the crypttab tmp= option (systemd-makefs) is slow because it does all three.
    features = "has_journal" if scratch.journal else "^has_journal"
    extended = "lazy_itable_init=1,lazy_journal_init=1,nodiscard"
    return f"/usr/sbin/mkfs.ext4 -q -F -b 4096 -m 0 -O {features} -E {extended} {device}"


def _guard_allow(crypt: Crypt) -> str:
    """What the guard lets pass: "swap", the persistent swap the description
    takes over (its signature; active while the apply switches it off);
    "data", any data (wipe_existing). Never a device in use or someone's."""
    allowed = ["swap"] if isinstance(crypt, Swap) and crypt.replace else []
    return ",".join(allowed + (["data"] if crypt.wipe_existing else []))


def _guard_script(section: str) -> str:
    # The description's static rules for LVM names, checked again at boot on the names dm gives the device.
    internal = [f"LVM:*{suffix}" for suffix in devices.LVM_INTERNAL_SUFFIXES]
    internal += [f"LVM:*{infix}*" for infix in devices.LVM_INTERNAL_INFIXES]
    return _template("refuse-data.sh.j2", internal_patterns=internal, dom0_vg=devices.DOM0_VG,
                     dom0_protected=sorted(devices.DOM0_PROTECTED_LVS), dom0_swap=devices.DOM0_SWAP_LV,
                     qube_prefix=devices.QUBE_VOLUME_PREFIX, role=section)  # fmt: skip


def _guard(crypt: Crypt, section: str) -> list[Artifact]:
    """The checks that run before the device is keyed: whether it is someone's
    now and (unless wipe_existing) whether it holds data."""
    unit = naming.cryptsetup_unit(crypt.name)
    script = guard_path(section)
    content = _template("guard.conf.j2", guard_path=script, device=crypt.device.path, allow=_guard_allow(crypt))
    return [
        File(f"guard-script-{section}", script, "probe a device for data before keying it",
             _guard_script(section), mode="0755", section=section),
        File(f"guard-{section}", dropins.dropin(unit, section), f"refuse to key {crypt.device.path} if it is in use or holds data",
             content, dropin=True, section=section),
    ]  # fmt: skip


def scratch_units(scratch: Scratch) -> list[Artifact]:
    mount_unit = naming.mount_unit(scratch.mountpoint)
    context = {
        "scratch": scratch,
        "mapping": naming.mapping(scratch.name),
        "device_unit": naming.device_unit(naming.mapping(scratch.name)),
        "crypt_unit": naming.cryptsetup_unit(scratch.name),
        "mount_unit": mount_unit,
        "mkfs_command": mkfs_command(scratch),
        "parent": posixpath.dirname(scratch.mountpoint),
    }
    section = "scratch"
    return [
        File("unit-format", f"{UNIT_DIR}/{FORMAT_UNIT}", "make a fresh filesystem after each boot's open",
             _template("format.service.j2", **context), section=section),
        File("unit-protect", f"{UNIT_DIR}/{PROTECT_UNIT}", "keep the bare mount point unwritable",
             _template("protect.service.j2", **context), section=section),
        Symlink("enable-protect", f"{UNIT_DIR}/local-fs.target.wants/{PROTECT_UNIT}", "start the protection at boot",
                f"{UNIT_DIR}/{PROTECT_UNIT}", section=section),
        Directory("mountpoint", scratch.mountpoint, "bare mount point, immutable while unmounted", immutable=True,
                  section=section),
        *dropins.waits({unit: (mount_unit,) for unit in scratch.consumers}, section),
    ]  # fmt: skip


def swap_takeover(swap: Swap) -> CommentOut:
    names = "|".join(re.escape(alias) for alias in swap.device.aliases)
    # A live fstab swap line for the raw device: first field one of its
    # names, third field "swap". Lines already commented never match.
    pattern = rf"^[ \t]*(?:{names})[ \t]+\S+[ \t]+swap(?:[ \t].*)?$"
    restore = rf"^{re.escape(REPLACED_PREFIX)}(.*)$"
    return CommentOut("fstab-swap-takeover", FSTAB, f"take over the persistent swap on {swap.device.path}",
                      pattern, restore, section="swap")  # fmt: skip


def _scratch_activation(scratch: Scratch, description: Description) -> dict[str, object]:
    return {
        "guard": guard_path("scratch"),
        "device": scratch.device.path,
        "device_aliases": list(scratch.device.aliases),
        "wipe_existing": scratch.wipe_existing,
        "guard_allows": _guard_allow(scratch) or None,
        "crypt_unit": naming.cryptsetup_unit(scratch.name),
        "mapping": naming.mapping(scratch.name),
        "protect_unit": PROTECT_UNIT,
        "mount_unit": naming.mount_unit(scratch.mountpoint),
        "mountpoint": scratch.mountpoint,
    }


def _swap_activation(swap: Swap) -> dict[str, object]:
    return {
        "guard": guard_path("swap"),
        "device": swap.device.path,
        "device_aliases": list(swap.device.aliases),
        "wipe_existing": swap.wipe_existing,
        "guard_allows": _guard_allow(swap) or None,
        "crypt_unit": naming.cryptsetup_unit(swap.name),
        "mapping": naming.mapping(swap.name),
        "swap_unit": naming.swap_unit(naming.mapping(swap.name)),
    }


def activation(description: Description) -> dict[str, dict[str, object]]:
    plan: dict[str, dict[str, object]] = {}
    if description.scratch:
        plan["scratch"] = _scratch_activation(description.scratch, description)
    if description.swap:
        plan["swap"] = _swap_activation(description.swap)
    return plan


def sections(description: Description) -> tuple[str, ...]:
    return tuple(key for key in SECTIONS if getattr(description, key) is not None)


def render(description: Description) -> Manifest:
    artifacts: list[Artifact] = []
    scratch, swap = description.scratch, description.swap
    # Apply order, and its reverse for clean: a kill between two steps never
    # leaves a device keyed without its guard, nor claimed both by our
    # crypttab line and by the persistent swap line we take over.
    if scratch:
        artifacts += _guard(scratch, "scratch")
        artifacts += scratch_units(scratch)
        artifacts += _blocks(scratch, "scratch", scratch_fstab_line(scratch))
    if swap:
        if swap.replace:
            artifacts.append(swap_takeover(swap))
        artifacts += _guard(swap, "swap")
        artifacts += _blocks(swap, "swap", swap_fstab_line(swap))
    artifacts += layout.artifacts(description)
    artifacts += private_cow.artifacts(description)
    return Manifest(description.activate, tuple(artifacts), activation(description), sections(description),
                    qubes=qubes_plan.plan(description), private_cow=private_cow.plan(description))  # fmt: skip

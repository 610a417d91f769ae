"""Pure renderers: a validated Description in, a Manifest of artifacts out."""

from __future__ import annotations

import posixpath
import re

from qubes_ephemeral.description.model import Crypt, Description, Scratch, Swap
from qubes_ephemeral.render import layout, naming, private_cow, qubes_plan
from qubes_ephemeral.render.artifacts import (
    LIBEXEC,
    REPLACED_PREFIX,
    UNIT_DIR,
    Artifact,
    Block,
    CommentOut,
    Directory,
    File,
    Manifest,
    Symlink,
)
from qubes_ephemeral.render.templating import render_template as _template

GUARD_PATH = f"{LIBEXEC}/refuse-data"
FORMAT_UNIT = "qubes-ephemeral-format.service"
PROTECT_UNIT = "qubes-ephemeral-protect.service"
DROPIN = "50-qubes-ephemeral.conf"


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


def crypttab_block(description: Description) -> str:
    crypts: list[Crypt] = [description.scratch]
    if description.swap:
        crypts.append(description.swap)
    # The key file /dev/urandom: a fresh key at every open, never stored.
    return "".join(f"{c.name} {c.device.path} /dev/urandom {crypt_options(c)}\n" for c in crypts)


def fstab_block(description: Description) -> str:
    scratch = description.scratch
    options = [*scratch.mount_options, "nofail", f"x-systemd.requires={FORMAT_UNIT}",
               f"x-systemd.device-timeout={scratch.device_timeout}s"]  # fmt: skip
    lines = [f"{naming.mapping(scratch.name)} {scratch.mountpoint} {scratch.fs} {','.join(options)} 0 0\n"]
    swap = description.swap
    if swap:
        swap_options = ["defaults", "nofail", f"x-systemd.device-timeout={swap.device_timeout}s"]
        if swap.priority is not None:
            swap_options.append(f"pri={swap.priority}")
        lines.append(f"{naming.mapping(swap.name)} none swap {','.join(swap_options)} 0 0\n")
    return "".join(lines)


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
    return "swap" if isinstance(crypt, Swap) and crypt.replace else ""


def _guard(crypt: Crypt, role: str) -> list[Artifact]:
    if crypt.wipe_existing:
        return []
    unit = naming.cryptsetup_unit(crypt.name)
    content = _template("guard.conf.j2", guard_path=GUARD_PATH, device=crypt.device.path, allow=_guard_allow(crypt))
    return [
        File(
            f"guard-{role}",
            f"{UNIT_DIR}/{unit}.d/{DROPIN}",
            f"refuse to key {crypt.device.path} if it holds data",
            content,
        )
    ]


def scratch_units(description: Description) -> list[Artifact]:
    scratch = description.scratch
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
    artifacts: list[Artifact] = [
        File("unit-format", f"{UNIT_DIR}/{FORMAT_UNIT}", "make a fresh filesystem after each boot's open",
             _template("format.service.j2", **context)),
        File("unit-protect", f"{UNIT_DIR}/{PROTECT_UNIT}", "keep the bare mount point unwritable",
             _template("protect.service.j2", **context)),
        Symlink("enable-protect", f"{UNIT_DIR}/local-fs.target.wants/{PROTECT_UNIT}", "start the protection at boot",
                f"{UNIT_DIR}/{PROTECT_UNIT}"),
        Directory("mountpoint", scratch.mountpoint, "bare mount point, immutable while unmounted", immutable=True),
    ]  # fmt: skip
    for consumer, ready in layout.ready_units(description).items():
        artifacts.append(
            File(f"consumer-{consumer}", f"{UNIT_DIR}/{consumer}.d/{DROPIN}", f"start {consumer} after {', '.join(ready)}",
                 _template("consumer.conf.j2", ready=ready))
        )  # fmt: skip
    return artifacts


def swap_takeover(swap: Swap) -> CommentOut:
    names = "|".join(re.escape(alias) for alias in swap.device.aliases)
    # A live fstab swap line for the raw device: first field one of its
    # names, third field "swap". Lines already commented never match.
    pattern = rf"^[ \t]*(?:{names})[ \t]+\S+[ \t]+swap(?:[ \t].*)?$"
    restore = rf"^{re.escape(REPLACED_PREFIX)}(.*)$"
    return CommentOut("fstab-swap-takeover", "/etc/fstab", f"take over the persistent swap on {swap.device.path}",
                      pattern, restore)  # fmt: skip


def activation(description: Description) -> dict[str, object]:
    scratch = description.scratch
    plan: dict[str, object] = {
        "guard": GUARD_PATH,
        "scratch": {
            "device": scratch.device.path,
            "wipe_existing": scratch.wipe_existing,
            "crypt_unit": naming.cryptsetup_unit(scratch.name),
            "mapping": naming.mapping(scratch.name),
            "mount_unit": naming.mount_unit(scratch.mountpoint),
            "mountpoint": scratch.mountpoint,
            "layout_unit": layout.LAYOUT_UNIT if layout.layout_needed(description) else None,
        },
    }
    if description.swap:
        swap = description.swap
        plan["swap"] = {
            "device": swap.device.path,
            "device_aliases": list(swap.device.aliases),
            "wipe_existing": swap.wipe_existing,
            "allow_signature": _guard_allow(swap) or None,
            "crypt_unit": naming.cryptsetup_unit(swap.name),
            "mapping": naming.mapping(swap.name),
            "swap_unit": naming.swap_unit(naming.mapping(swap.name)),
        }
    return plan


def render(description: Description) -> Manifest:
    artifacts: list[Artifact] = [
        Block("crypttab-block", "/etc/crypttab", "plain dm-crypt devices keyed from /dev/urandom",
              crypttab_block(description)),
        Block("fstab-block", "/etc/fstab", "scratch filesystem and swap on the mappings", fstab_block(description)),
    ]  # fmt: skip
    if description.swap and description.swap.replace:
        artifacts.append(swap_takeover(description.swap))
    guards = _guard(description.scratch, "scratch") + (_guard(description.swap, "swap") if description.swap else [])
    if guards:
        artifacts.append(File("guard-script", GUARD_PATH, "probe a device for data before keying it",
                              _template("refuse-data.sh.j2"), mode="0755"))  # fmt: skip
    artifacts += guards
    artifacts += scratch_units(description)
    artifacts += layout.artifacts(description)
    artifacts += private_cow.artifacts(description)
    return Manifest(description.activate, tuple(artifacts), activation(description),
                    qubes=qubes_plan.plan(description), private_cow=private_cow.plan(description))  # fmt: skip

"""Schema v1 of the description: one table declares every setting.

Validation, defaults, the ``schema`` command and the check that
pillar.example documents every key all read this table, so they cannot
drift apart.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

from qubes_ephemeral.description import devices, qubes_values, values
from qubes_ephemeral.description.values import Parser

REQUIRED = object()


@dataclass(frozen=True)
class Setting:
    key: str
    type: str
    default: object
    help: str
    parse: Parser

    @property
    def required(self) -> bool:
        return self.default is REQUIRED

    def default_text(self) -> str:
        if self.required:
            return "(required)"
        if isinstance(self.default, tuple):
            return "[" + ", ".join(map(str, self.default)) + "]"
        if isinstance(self.default, bool):
            return "true" if self.default else "false"
        return "null" if self.default is None else str(self.default)


@dataclass(frozen=True)
class Section:
    key: str
    required: bool
    help: str
    settings: tuple[Setting, ...]

    def setting(self, key: str) -> Setting | None:
        return next((s for s in self.settings if s.key == key), None)


def _crypt_settings(role: str, name: str) -> tuple[Setting, ...]:
    what = "scratch filesystem" if role == "scratch" else "swap"
    return (
        Setting(
            "device",
            "device path",
            REQUIRED,
            f"Raw block device for the {what}. EVERY BYTE ON IT IS DESTROYED AT EVERY BOOT. Stable names only: "
            "/dev/VG/LV, /dev/mapper/VG-LV, /dev/disk/by-id|by-partuuid|by-partlabel/...",
            partial(devices.parse_device, role=role),
        ),
        Setting(
            "name", "dm name", name, "Device-mapper name: the mapping appears as /dev/mapper/NAME.", values.dm_name
        ),
        Setting(
            "cipher",
            "cipher",
            "aes-xts-plain64",
            "dm-crypt cipher (cryptsetup's own plain default is the weaker aes-cbc-essiv:sha256).",
            values.cipher,
        ),
        Setting(
            "key_size",
            "integer (bits)",
            512,
            "Key size in bits; XTS takes 256 or 512 (AES-128 or AES-256). 512 keeps the margin; 256 is a choice "
            "for speed where the CPU, not the disk, is the limit (10 rounds against 14; docs/benchmarks.md).",
            values.key_size,
        ),
        Setting(
            "sector_size",
            "integer (bytes)",
            4096,
            "Encryption sector size: 512..4096, a power of two.",
            values.sector_size,
        ),
        Setting(
            "discard",
            "boolean",
            False,
            "Pass TRIM through dm-crypt (reveals which blocks are in use; faster on some SSDs).",
            values.boolean,
        ),
        Setting(
            "workqueue_bypass",
            "boolean",
            True,
            "Encrypt inline instead of in kernel workqueues (no-read-workqueue,no-write-workqueue): faster on SSDs.",
            values.boolean,
        ),
        Setting(
            "device_timeout",
            "integer (seconds)",
            30,
            "How long boot waits for the device before going on without it.",
            values.integer(1, 3600),
        ),
        Setting(
            "wipe_existing",
            "boolean",
            False,
            "Key the device even if it shows a filesystem, LUKS header, LVM PV, swap signature or partition "
            "table. Leave false unless you mean to destroy what is on it. A device in use (mounted, an active swap, "
            "something built on it) or one of dom0's, a pool's or a qube's is refused all the same.",
            values.boolean,
        ),
    )


SCRATCH = Section(
    "scratch", False, "The scratch filesystem, re-keyed from the kernel RNG and re-made at every boot (optional; "
    "qubes.pool needs it, traces use a tmpfs without it).",
    _crypt_settings("scratch", "ephemeral") + (
        Setting("mountpoint", "absolute path", "/var/lib/qubes-ephemeral",
                "Where the scratch filesystem is mounted; the bare directory underneath is made immutable. "
                "Allowed: /var/lib/qubes-ephemeral, /var/lib/qubes-ephemeral-NAME, /mnt/NAME or a folder under one, "
                "at most 62 characters, reached through no symlink, empty or not there yet.",
                values.mountpoint),
        Setting("fs", "ext4 or xfs", "ext4", "Filesystem made at every boot.", values.choice("ext4", "xfs")),
        Setting("journal", "boolean", False,
                "ext4 only: keep a journal (useless on a filesystem that is re-made at every boot; xfs always has one).",
                values.boolean),
        Setting("mount_options", "list of options", ("noatime", "nodev", "nosuid"),
                "Mount options of the filesystem, one per item, at most 64. Refused: what changes how systemd or mount "
                "treats the line (x-*, comment=, auto, noauto, nofail, _netdev: qubes-ephemeral sets these) or who "
                "mounts what (user, users, owner, group, bind, rbind, move, remount, loop, offset=, sizelimit=, "
                "helper=, uhelper=).",
                values.mount_options),
        Setting("consumers", "list of unit names", (),
                "systemd units that must start only after the scratch filesystem is mounted: services, sockets, "
                "timers or paths, at most 64, none of qubes-ephemeral's, systemd's or those that set up storage before "
                "local-fs.target (qubes-ephemeral-*, systemd-*, dbus*, lvm2-*, dm-event*, multipathd*, "
                "cryptsetup*, udev*, plymouth*...).", values.units),
    ),
)  # fmt: skip

SWAP = Section(
    "swap", False, "Swap on a device re-keyed at every boot (optional; leave out to keep the swap as it is).",
    _crypt_settings("swap", "ephemeral-swap") + (
        Setting("priority", "integer or null", None, "Swap priority (pri=); null leaves the kernel's default.",
                values.optional(values.integer(-1, 32767))),
        Setting("replace", "boolean", True,
                "Comment out the persistent swap line for this device in fstab (restored by ephemeral.clean); "
                "this also accepts the device's existing swap signature.", values.boolean),
    ),
)  # fmt: skip

QUBES = Section(
    "qubes",
    False,
    "Qubes storage settings, applied with qvm-pool and qvm-volume (optional; leave out to change nothing in Qubes).",
    (
        Setting(
            "ephemeral_volatile_pools",
            "'default' or list of pool names",
            qubes_values.DEFAULT_POOLS,
            "Pools whose volatile volumes qubesd opens with a fresh random key at every qube start "
            "(qvm-pool set POOL -o ephemeral_volatile=True), at most 64. 'default': the pools named by qubes-prefs "
            "default_pool and default_pool_volatile at apply time.",
            qubes_values.pools,
        ),
        Setting(
            "disposable_templates",
            "mapping of disposable template names",
            (),
            "For each disposable template (NAME: {}): the feature qubes-ephemeral on NAME; the qubesd extension "
            "then makes each start of its disposables root read-only (writes to the volatile volume) and keys "
            "that volume for the start. At most 256.",
            qubes_values.disposable_templates,
        ),
        Setting(
            "pool",
            "pool name or null",
            None,
            "A Qubes storage pool of this name on the scratch filesystem (driver file on ext4, file-reflink on "
            "xfs), for volumes that must not outlive the boot; its directory is re-made at every boot before "
            "qubesd starts. null: no pool.",
            values.optional(qubes_values.pool_name),
        ),
        Setting(
            "default_pool_volatile",
            "boolean",
            False,
            "Make that pool the default for the volatile volumes of qubes created from now on "
            "(qubes-prefs default_pool_volatile).",
            values.boolean,
        ),
    ),
)

# dom0's log directories that name qubes (the audit reports them as gaps without traces:).
TRACES_PATHS_DEFAULT = ("/var/log/qubes", "/var/log/libvirt/libxl", "/var/log/xen/console")

TRACES = Section(
    "traces",
    False,
    "dom0 logs about disposables kept on the scratch filesystem, so they are gone after a reboot "
    "(optional; leave out to keep dom0 logs as they are).",
    (
        Setting(
            "paths",
            "list of directories under /var/log",
            TRACES_PATHS_DEFAULT,
            "Log directories bind-mounted from the scratch filesystem at every boot, at most 64.",
            values.trace_paths,
        ),
        Setting(
            "writers",
            "list of unit names",
            ("qubesd.service", "libvirtd.service", "xenconsoled.service"),
            "Services that write those logs; they start only after the bind mounts (the same rules as "
            "scratch.consumers).",
            values.units,
        ),
        Setting(
            "journald",
            "unchanged or volatile",
            "unchanged",
            "volatile: the systemd journal lives in memory only (Storage=volatile) and is lost at shutdown.",
            values.choice("unchanged", "volatile"),
        ),
    ),
)

PATCHES = Section(
    "patches",
    False,
    "Opt-in changes to how Qubes starts disposables (optional).",
    (
        Setting(
            "dispvm_private_cow",
            "boolean",
            False,
            "Disposables of templates with private: cow get a read-only private volume; the VM initramfs puts "
            "/rw on a copy-on-write layer on the ephemeral volatile volume.",
            values.boolean,
        ),
    ),
)

SECTIONS = (SCRATCH, SWAP, QUBES, TRACES, PATCHES)

TOP = (
    Setting("activate", "boot or now", "boot",
            "boot: write configuration, effective at next boot. now: also open, format and mount now.",
            values.choice("boot", "now")),
)  # fmt: skip


def all_keys() -> list[tuple[str, Setting]]:
    """Every setting with its full dotted path."""
    keys = [(f"ephemeral.{s.key}", s) for s in TOP]
    for section in SECTIONS:
        keys += [(f"ephemeral.{section.key}.{s.key}", s) for s in section.settings]
    return keys

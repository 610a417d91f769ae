"""Parsers for single values of a description.

Each parser takes the raw YAML value and returns the checked value or raises
Invalid with a message and a hint. They know nothing of key paths: the
caller attaches those.
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Callable

from qubes_ephemeral.description.problems import Invalid

Parser = Callable[[object], object]


def kind_of(value: object) -> str:
    if value is None:
        return "nothing (null)"
    names = {
        bool: "a boolean",
        int: "an integer",
        float: "a number",
        str: "a string",
        list: "a list",
        dict: "a mapping",
    }
    return names.get(type(value), type(value).__name__)


def boolean(value: object) -> bool:
    if not isinstance(value, bool):
        raise Invalid(f"expected true or false, got {kind_of(value)} {value!r}", "write true or false")
    return value


def integer(low: int, high: int) -> Callable[[object], int]:
    def parse(value: object) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise Invalid(f"expected an integer, got {kind_of(value)} {value!r}", "write a plain number, no units")
        if not low <= value <= high:
            raise Invalid(f"{value} is out of range", f"use a value from {low} to {high}")
        return value

    return parse


# Lists whose items multiply in what is rendered (each writer waits for each
# trace path...) are bounded well below the YAML reader's MAX_ITEMS.
MAX_LIST = 64


def at_most(value: list[object], limit: int, what: str) -> None:
    if len(value) > limit:
        raise Invalid(f"{len(value)} {what}, more than the {limit} a description may name", "name fewer")


def optional(parse: Parser) -> Parser:
    def parse_optional(value: object) -> object:
        return None if value is None else parse(value)

    return parse_optional


def choice(*choices: str) -> Parser:
    def parse(value: object) -> str:
        if value not in choices:
            raise Invalid(f"{value!r} is not one of {', '.join(choices)}", f"use one of: {', '.join(choices)}")
        return str(value)

    return parse


def string(value: object) -> str:
    if not isinstance(value, str):
        raise Invalid(f"expected a string, got {kind_of(value)} {value!r}", "quote the value")
    return value


# At most 57 characters: systemd-cryptsetup@NAME.service, with each "-" of
# the name escaped to 4 characters, stays within systemd's 255 (and so do
# the mapping's device and swap units).
DM_NAME_MAX = (255 - len("systemd-cryptsetup@.service")) // 4
DM_NAME = re.compile(rf"[A-Za-z0-9][A-Za-z0-9_+.-]{{0,{DM_NAME_MAX - 1}}}")


def dm_name(value: object) -> str:
    name = string(value)
    if not DM_NAME.fullmatch(name):
        raise Invalid(
            f"{name!r} is not a valid device-mapper name",
            f"use letters, digits, '_', '+', '.', '-', at most {DM_NAME_MAX} characters, starting with a letter or digit",
        )
    if name == "control" or name.startswith(("luks-", "qubes_dom0-")):
        raise Invalid(f"{name!r} collides with names dom0 already uses", "pick a name of your own, e.g. ephemeral")
    return name


SYSTEM_TREES = ("/boot", "/etc", "/usr", "/bin", "/sbin", "/lib", "/lib64", "/dev", "/proc", "/sys", "/run",
                "/home", "/root", "/var/log", "/var/lib/qubes/appvms", "/var/lib/qubes/vm-templates",
                "/var/lib/qubes/vm-kernels", "/var/lib/qubes/backup")  # fmt: skip
SYSTEM_DIRS = ("/", "/var", "/var/lib", "/var/lib/qubes", "/var/tmp", "/tmp", "/srv", "/opt", "/mnt", "/media")
# Paths end up in crypttab, fstab and unit files: allow only characters that
# cannot split a field, start a comment or expand as a systemd specifier.
SAFE_PATH = re.compile(r"/[A-Za-z0-9/_.:+@=-]*")


def check_path_chars(path: str) -> None:
    if not SAFE_PATH.fullmatch(path):
        raise Invalid(
            f"{path!r} contains a character that is not allowed (whitespace, '#', ',', '%', quotes, control ...)",
            "such characters would corrupt crypttab, fstab and unit files; use letters, digits and / _ . : + @ = -",
        )


# Where a mount point may be (the allow list the dom0 guide shows): a folder
# of ours under /var/lib, or one under /mnt, the place the FHS keeps for
# mounts. Anywhere else it may be, or lie under, a folder that the system or
# a package owns (/var/lib/rpm, /var/lib/qubes with qubes.xml, /srv...) or a
# symlink (/var/run, /var/lock). The preflight checks in dom0 that no part of
# it is a symlink there.
MOUNT_ALLOWED = re.compile(r"/var/lib/qubes-ephemeral(-[A-Za-z0-9_.]+)?(/.*)?|/mnt/[^/]+(/.*)?")
MOUNT_ALLOWED_TEXT = "/var/lib/qubes-ephemeral, /var/lib/qubes-ephemeral-NAME, /mnt/NAME, or a folder under one"
# systemd refuses a unit name longer than 255 characters. A mount unit's
# name is the path escaped, each character at most 4 ("-" is "\x2d") and
# ".mount" added: a path this long or shorter always fits.
MOUNTPOINT_MAX = (255 - len(".mount")) // 4


def mountpoint(value: object) -> str:
    """A mount point in the allow list, whose mount unit systemd can name."""
    path = mountpoint_shape(value)
    if not MOUNT_ALLOWED.fullmatch(path):
        raise Invalid(f"{path!r} is not among the places a mount point may be ({MOUNT_ALLOWED_TEXT})",
                      "use e.g. /var/lib/qubes-ephemeral")  # fmt: skip
    if len(path) > MOUNTPOINT_MAX:
        raise Invalid(f"{path!r} is longer than {MOUNTPOINT_MAX} characters: its mount unit's name could be "
                      "longer than systemd allows", "use a shorter path")  # fmt: skip
    return path


def mountpoint_shape(value: object) -> str:
    """An absolute, normalised path outside the system's folders: what a
    mount point of any version of qubes-ephemeral looked like (a record's)."""
    path = string(value)
    if not path.startswith("/"):
        raise Invalid(f"{path!r} is not an absolute path", "start it with '/', e.g. /var/lib/qubes-ephemeral")
    check_path_chars(path)
    if posixpath.normpath(path) != path or path.startswith("//"):
        raise Invalid(f"{path!r} is not normalised", f"write {posixpath.normpath(path)!r}")
    if path in SYSTEM_DIRS:
        raise Invalid(
            f"{path!r} is a system directory; mounting over it hides its contents",
            "use a directory of its own, e.g. /var/lib/qubes-ephemeral",
        )
    for tree in SYSTEM_TREES:
        if path == tree or path.startswith(tree + "/"):
            raise Invalid(
                f"{path!r} is inside {tree}, a system or user-data tree",
                "use a directory of its own, e.g. /var/lib/qubes-ephemeral",
            )
    return path


# Trace paths are bind-mounted from the scratch filesystem, hiding what the
# directory held; only log trees qualify.
TRACE_TREE = "/var/log"


def trace_paths(value: object) -> tuple[str, ...]:
    if not isinstance(value, list) or not value:
        raise Invalid(f"expected a list of log directories, got {kind_of(value)}", "write e.g. [/var/log/qubes]")
    at_most(value, MAX_LIST, "log directories")
    paths: list[str] = []
    for index, item in enumerate(value):
        path = string(item)
        if not path.startswith(TRACE_TREE + "/"):
            raise Invalid(f"item {index} ({path!r}) is not inside {TRACE_TREE}",
                          "only log directories can be kept on the scratch filesystem")  # fmt: skip
        check_path_chars(path)
        if posixpath.normpath(path) != path:
            raise Invalid(f"item {index} ({path!r}) is not normalised", f"write {posixpath.normpath(path)!r}")
        for other in paths:
            if path == other or path.startswith(other + "/") or other.startswith(path + "/"):
                raise Invalid(f"item {index} ({path!r}) overlaps {other!r}", "list each directory once, no nesting")
        paths.append(path)
    return tuple(paths)


CIPHER = re.compile(r"(?P<block>[a-z0-9]+)-(?P<mode>[a-z0-9]+)-(?P<iv>[a-z0-9:]+)")
BLOCK_CIPHERS = ("aes", "serpent", "twofish")
IV_BY_MODE = {"xts": ("plain64", "plain64be"), "cbc": ("essiv:sha256",)}
KEY_SIZES_BY_MODE = {"xts": (256, 512), "cbc": (128, 192, 256)}
CIPHER_HINT = (
    "use aes-xts-plain64 (the default); also accepted: {aes,serpent,twofish}-xts-plain64 and -cbc-essiv:sha256"
)


def cipher(value: object) -> str:
    text = string(value)
    match = CIPHER.fullmatch(text)
    if match is None:
        raise Invalid(f"{text!r} is not a cipher specification (cipher-mode-iv)", CIPHER_HINT)
    block, mode, iv = match.group("block", "mode", "iv")
    if block not in BLOCK_CIPHERS:
        raise Invalid(f"block cipher {block!r} is not supported", CIPHER_HINT)
    if mode not in IV_BY_MODE:
        weak = " (ECB leaks patterns)" if mode == "ecb" else ""
        raise Invalid(f"mode {mode!r} is not supported{weak}", CIPHER_HINT)
    if iv not in IV_BY_MODE[mode]:
        why = {"plain": ": it repeats after 2 TiB", "plain64": ": CBC with a predictable IV is watermarkable"}.get(
            iv, ""
        )
        raise Invalid(f"IV {iv!r} is weak or unsupported with {mode}{why}", f"use {block}-{mode}-{IV_BY_MODE[mode][0]}")
    return text


def key_size_fits(cipher_spec: str, key_size: int) -> str | None:
    """Why cryptsetup would reject or weaken this cipher/key size, or None."""
    mode = cipher_spec.split("-")[1]
    sizes = KEY_SIZES_BY_MODE[mode]
    if key_size not in sizes:
        return f"{key_size} bits does not fit {cipher_spec} ({mode.upper()} takes {' or '.join(map(str, sizes))})"
    return None


def key_size(value: object) -> int:
    bits = integer(128, 512)(value)
    if bits % 64:
        raise Invalid(f"{bits} is not a key size in bits", "use 512 (the default) or 256 for XTS")
    return bits


def sector_size(value: object) -> int:
    size = integer(512, 4096)(value)
    if size & (size - 1):
        raise Invalid(f"sector size is not a power of two: {size}", "use 512, 1024, 2048 or 4096")
    return size


OPTION = re.compile(r"[A-Za-z0-9_.:=/@+-]+")
# Options that change how systemd's fstab generator or mount(8) treat the
# line (when and whether it is mounted, by whom, what is mounted, with which
# helper program), as prefixes; "=" ends one that takes a value. We set
# nofail and x-systemd.* ourselves; none of these is the user's to set.
MANAGED_OPTIONS = ("x-", "comment=", "nofail", "noauto", "auto", "_netdev")
REFUSED_OPTIONS = ("user", "users", "user=", "owner", "group", "bind", "rbind", "move", "remount", "loop", "loop=",
                   "offset=", "sizelimit=", "encryption=", "helper=", "uhelper=")  # fmt: skip


def _option_in(option: str, listed: tuple[str, ...]) -> bool:
    # systemd's generator reads "noauto=1" as noauto: the name before "=" is what counts.
    option = option.lower()
    name = option.partition("=")[0]
    return any(name in (item, item.rstrip("=")) or (item.endswith("-") and option.startswith(item)) for item in listed)


def mount_options(value: object) -> tuple[str, ...]:
    if not isinstance(value, list):
        raise Invalid(f"expected a list of mount options, got {kind_of(value)}", "write e.g. [noatime, nodev, nosuid]")
    at_most(value, MAX_LIST, "mount options")
    options = []
    for index, item in enumerate(value):
        if not isinstance(item, str) or not OPTION.fullmatch(item):
            raise Invalid(
                f"item {index} ({item!r}) is not one mount option",
                "one option per list item, without commas, spaces or newlines",
            )
        if _option_in(item, MANAGED_OPTIONS):
            raise Invalid(f"item {index} ({item!r}) is set by qubes-ephemeral itself: it decides how systemd "
                          "mounts the scratch filesystem", "remove it")  # fmt: skip
        if _option_in(item, REFUSED_OPTIONS):
            raise Invalid(f"item {index} ({item!r}) changes who mounts what, or how: the scratch filesystem is "
                          "mounted at boot, by systemd, from its own mapping", "remove it")  # fmt: skip
        options.append(item)
    return tuple(options)


UNIT = re.compile(r"[A-Za-z0-9:_.@\\-]+\.(service|socket|mount|target|timer|path|swap)")


# A unit made to wait for our mounts must start after local-fs.target: not
# one of ours (it would wait for itself), not an early-boot unit of systemd's,
# not a unit that groups or mounts others (an ordering cycle at boot).
WAITING_TYPES = (".service", ".socket", ".timer", ".path")
# Units that run before local-fs.target (DefaultDependencies=no, storage set-up):
# made to wait for a mount, they close an ordering cycle and systemd drops a job.
EARLY_UNITS = ("systemd-", "dbus", "init.", "lvm2-", "dm-event", "multipathd", "blk-availability", "plymouth",
               "cryptsetup", "udev", "kmod-", "dracut-", "local-fs", "swap.", "sysinit.")  # fmt: skip


def units(value: object) -> tuple[str, ...]:
    if not isinstance(value, list):
        raise Invalid(f"expected a list of systemd unit names, got {kind_of(value)}", "write e.g. [qubesd.service]")
    at_most(value, MAX_LIST, "units")
    for index, item in enumerate(value):
        if not isinstance(item, str) or not UNIT.fullmatch(item):
            raise Invalid(f"item {index} ({item!r}) is not a systemd unit name", "write e.g. qubesd.service")
        if "qubes-ephemeral" in item or item.startswith(EARLY_UNITS):
            raise Invalid(f"item {index} ({item!r}) is one of qubes-ephemeral's or systemd's own units or sets up storage, which start "
                          "before the mounts it would wait for", "name a service of the system, e.g. qubesd.service")  # fmt: skip
        if not item.endswith(WAITING_TYPES):
            raise Invalid(f"item {index} ({item!r}) is a {item.rsplit('.', 1)[1]} unit: making it wait for our mounts "
                          "can make an ordering cycle at boot", "name a service, e.g. qubesd.service")  # fmt: skip
        if value.index(item) != index:
            raise Invalid(f"item {index} ({item!r}) is named twice", "name each unit once")
    return tuple(value)


# Mount options each filesystem refuses, as (prefix, why). An option ending
# in "=" matches any value.
EXT4_NO_JOURNAL_REFUSES = ("data=", "commit=", "journal_checksum", "journal_async_commit", "data_err=",
                           "journal_ioprio=", "journal_path=", "journal_dev=")  # fmt: skip
XFS_REFUSES = ("data=", "commit=", "journal_checksum", "journal_async_commit", "data_err=", "barrier", "nobarrier",
               "barrier=", "delalloc", "nodelalloc", "auto_da_alloc", "noauto_da_alloc", "init_itable",
               "noinit_itable", "errors=", "journal_ioprio=")  # fmt: skip
EXT4_REFUSES = ("logbufs=", "logbsize=", "allocsize=", "inode64", "inode32", "largeio", "nolargeio", "nouuid",
                "attr2", "noattr2", "ikeep", "noikeep", "swalloc", "pqnoenforce")  # fmt: skip


def option_refused(option: str, refused: tuple[str, ...]) -> bool:
    return any(option == item or (item.endswith("=") and option.startswith(item)) for item in refused)

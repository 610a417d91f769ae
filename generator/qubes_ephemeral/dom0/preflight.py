"""Before a section's apply or clean changes anything: every target can be
written, and nothing of dom0 is in the way.

A step that fails half-way leaves dom0 half-changed, so what can be known
up front is checked up front, all of it at once:

- every file and folder the run writes can be written: not on a read-only
  filesystem, not immutable or append-only (chattr), nor its folder;
- our markers in crypttab and fstab are whole, and a block between them
  is ours: one no apply recorded, with other lines than ours, is someone
  else's (or an older tool's) and is left alone; so is a line that starts
  with our takeover's prefix but that no apply recorded;
- apply only: no line of crypttab or fstab but ours names a device we key,
  under any of its names (UUID=, LABEL=, /dev/mapper/..., /dev/dm-N, a
  /dev/disk/by-* link: whatever resolves to the same block device), nor
  our mapping's name or our mount point; a persistent swap line the takeover
  comments out is the one exception;
- apply only: the device, resolved to its major:minor, is no one else's
  now: not mounted, not an active swap (but the persistent swap the
  takeover switches off), carrying no partition or device but our own
  mapping, not what a loop device reads nor a running qube's disk (Xen
  backend), not a dm-crypt mapping nor an LVM layer, internal volume or
  qube's volume (the names dm gives it, whatever name the description
  used), not built on a qube's volume, and not the device (or a part of
  it) of another section;
- apply only: the mount point is a plain folder, empty or already mounted,
  so mounting never hides files and ``chattr +i`` never freezes someone's.

``Files`` is the door to the live system; the tests give it a root folder.
"""

from __future__ import annotations

import errno
import fcntl
import os
import posixpath
import re
import stat
import struct
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from qubes_ephemeral.description.devices import check_volume, is_qube_volume, split_mapper_name
from qubes_ephemeral.description.problems import Invalid
from qubes_ephemeral.dom0 import textedit
from qubes_ephemeral.render.artifacts import CRYPTTAB, FSTAB, Artifact, Block, CommentOut, from_dict

FS_IOC_GETFLAGS = 0x80086601  # linux/fs.h, as on x86_64
IMMUTABLE, APPEND_ONLY = 0x10, 0x20
# fstab and crypttab name a device by a tag or by a path; each tag is a /dev/disk/by-* link.
TAGS = {"UUID": "by-uuid", "LABEL": "by-label", "PARTUUID": "by-partuuid", "PARTLABEL": "by-partlabel", "ID": "by-id"}

ArtifactData = Mapping[str, object]


@dataclass(frozen=True)
class Files:
    """The live filesystem, seen from ``root`` (``/`` in dom0)."""

    root: str = "/"

    def path(self, path: str) -> str:
        return os.path.join(self.root, path.lstrip("/"))

    def read(self, path: str) -> str | None:
        try:
            with open(self.path(path), "rb") as handle:
                return handle.read().decode("utf-8", "surrogateescape")
        except (FileNotFoundError, NotADirectoryError):
            return None

    def why_unwritable(self, path: str, itself: bool = True) -> str | None:
        """Why ``path`` cannot be written (replaced, created or removed), or
        None. ``itself`` False: only its folder matters (we change its flags)."""
        real = os.path.realpath(self.path(path))
        checks = [real] if itself and os.path.lexists(real) else []
        folder = os.path.dirname(real)
        while not os.path.exists(folder):  # made on the way (makedirs): its first existing parent
            folder = os.path.dirname(folder)
        checks.append(folder)
        for candidate in checks:
            try:
                if os.statvfs(candidate).f_flag & os.ST_RDONLY:
                    return f"{candidate} is on a read-only filesystem"
            except OSError as error:
                return f"{candidate}: {error.strerror}"
            flags = _flags(candidate)
            if flags & IMMUTABLE:
                return f"{candidate} is immutable (chattr +i)"
            if flags & APPEND_ONLY:
                return f"{candidate} is append-only (chattr +a)"
        return None

    def wrong_kind(self, kind: str, target: str) -> str | None:
        """Why what is at ``target`` (or on the way to it) is not what an
        artifact of ``kind`` puts there, or None."""
        full = self.path(target)
        parts = target.strip("/").split("/")
        for depth in range(1, len(parts)):
            folder = self.path("/" + "/".join(parts[:depth]))
            if os.path.lexists(folder) and not os.path.isdir(folder):
                return f"{'/' + '/'.join(parts[:depth])} is not a folder"
        if not os.path.lexists(full) or (kind != "directory" and os.path.islink(full)):
            return None  # a link is replaced (ours) or followed (crypttab, fstab)
        if kind == "symlink":
            return "it is there and is not a symlink" if os.path.isdir(full) else None
        if kind == "directory" and not os.path.isdir(full):
            return "it is there and is not a folder"
        if kind != "directory" and not os.path.isfile(full):
            return "it is there and is not a file"
        return None

    def device(self, spec: str) -> tuple[str, object] | None:
        """What a crypttab or fstab device field names: ("dev", major:minor)
        for a block device, ("path", its real path) otherwise; None when it
        names nothing here (then only its spelling can be compared)."""
        name = _unescape(spec)
        tag, _, value = name.partition("=")
        if tag in TAGS and value:
            name = f"/dev/disk/{TAGS[tag]}/{_udev_encoded(value.strip(chr(34) + chr(39)))}"
        elif not name.startswith("/"):
            return None
        try:
            info = os.stat(self.path(name))
        except OSError:
            return None
        if stat.S_ISBLK(info.st_mode):
            return ("dev", info.st_rdev)
        return ("path", os.path.realpath(self.path(name)))

    def related(self, identity: tuple[str, object] | None) -> set[tuple[str, object]]:
        """A block device, its partitions and every device stacked on them
        (holders: a LUKS mapping, an LVM volume), from /sys; {} for None."""
        if identity is None:
            return set()
        if identity[0] != "dev":
            return {identity}

        def above(folder: str) -> list[str]:
            names = _listdir(os.path.join(folder, "holders"))
            return names + [n for n in _listdir(folder) if os.path.isfile(os.path.join(folder, n, "partition"))]

        rdev = int(identity[1])  # type: ignore[call-overload]
        return {("dev", each) for each in {rdev, *self._reach(rdev, above)}}

    def lowers(self, rdev: int) -> set[int]:
        """Every device ``rdev`` is built on (slaves, all the way down)."""
        return self._reach(rdev, lambda folder: _listdir(os.path.join(folder, "slaves")))

    def _reach(self, rdev: int, neighbours: Callable[[str], list[str]]) -> set[int]:
        """Every device reached from ``rdev``, step by step, through the block
        device names ``neighbours`` finds in a device's /sys folder."""
        found: set[int] = set()
        todo = [rdev]
        while todo:
            current = todo.pop()
            for name in neighbours(self.path(f"/sys/dev/block/{os.major(current)}:{os.minor(current)}")):
                number = _rdev(self.read(f"/sys/class/block/{name}/dev"))
                if number is not None and number not in found and number != rdev:
                    found.add(number)
                    todo.append(number)
        return found

    def mounted(self) -> set[int]:
        """The devices of every mounted filesystem (major:minor, /proc/self/mountinfo)."""
        fields = (line.split() for line in (self.read("/proc/self/mountinfo") or "").splitlines())
        return {number for number in (_rdev(f[2]) for f in fields if len(f) > 2) if number is not None}

    def swaps(self) -> set[tuple[str, object]]:
        """The active swap areas (/proc/swaps), as ``device()`` names them."""
        lines = (self.read("/proc/swaps") or "").splitlines()[1:]
        named = (self.device(line.split()[0]) for line in lines if line.split())
        return {identity for identity in named if identity is not None}

    def backing(self) -> dict[int, str]:
        """Devices used with no holder to show for it: what a loop device reads
        (/sys/block/loop*/loop/backing_file) and what a running qube's disk is
        (Xen's block backends, physical_device in hex major:minor)."""
        found: dict[int, str] = {}
        for loop in _listdir(self.path("/sys/block")):
            backing = (self.read(f"/sys/block/{loop}/loop/backing_file") or "").strip()
            identity = self.device(backing) if backing.startswith("/") else None
            if identity is not None and identity[0] == "dev":
                found[int(identity[1])] = f"it backs a loop device ({loop})"  # type: ignore[call-overload]
        backends = "/sys/bus/xen-backend/devices"
        for vbd in _listdir(self.path(backends)):
            physical = (self.read(f"{backends}/{vbd}/physical_device") or "").strip()
            if re.fullmatch(r"[0-9a-f]+:[0-9a-f]+", physical):
                major, minor = (int(part, 16) for part in physical.split(":"))
                found[os.makedev(major, minor)] = f"it is a disk of a running qube (Xen backend {vbd})"
        return found

    def dm(self, rdev: int) -> tuple[str, str] | None:
        """A device-mapper device's (uuid, name), from /sys; None for another device."""
        folder = f"/sys/dev/block/{os.major(rdev)}:{os.minor(rdev)}/dm"
        name = self.read(f"{folder}/name")
        return None if name is None else ((self.read(f"{folder}/uuid") or "").strip(), name.strip())

    def mountpoint_problem(self, path: str) -> str | None:
        full = self.path(path)
        parts = path.strip("/").split("/")
        for depth in range(1, len(parts) + 1):  # /var/run is a link to /run, for one
            part = "/" + "/".join(parts[:depth])
            if os.path.islink(self.path(part)):
                what = "the mount point" if part == path else f"{part}, on the way to the mount point {path},"
                return f"{what} is a symlink: name a folder that is not reached through a link"
        if not os.path.lexists(full):
            return None
        if not os.path.isdir(full):
            return f"the mount point {path} exists and is not a folder"
        if not os.path.ismount(full) and os.listdir(full):
            return (f"the mount point {path} already holds files: the scratch filesystem would hide them. "
                    "Move them away or choose another mount point")  # fmt: skip
        return None


def _flags(path: str) -> int:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW)
    except OSError:
        return 0
    try:
        # The kernel writes an int, whatever the ioctl's name says.
        return int(struct.unpack("i", fcntl.ioctl(fd, FS_IOC_GETFLAGS, b"\0" * 8)[:4])[0])
    except OSError as error:
        if error.errno in (errno.ENOTTY, errno.EINVAL, errno.EOPNOTSUPP):  # no such flags there
            return 0
        raise
    finally:
        os.close(fd)


def _rdev(number: str | None) -> int | None:
    """A device number written major:minor (as /sys and mountinfo write it)."""
    if number is None or not re.fullmatch(r"\d+:\d+", number.strip()):
        return None
    return os.makedev(*map(int, number.strip().split(":")))


def _listdir(path: str) -> list[str]:
    try:
        return sorted(os.listdir(path))
    except OSError:
        return []


def _udev_encoded(value: str) -> str:
    """A tag's value as udev names its /dev/disk/by-* link (blkid_encode_string)."""
    safe = set("0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz#+-.:=@_")
    return "".join(c if c in safe or ord(c) > 127 else f"\\x{ord(c):02x}" for c in value)


def _unescape(field: str) -> str:
    """fstab and crypttab write a space as \\040 (and so on, in octal)."""
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


def active_fields(text: str) -> Iterable[list[str]]:
    """The fields of each line that is not blank or a comment."""
    for line in textedit.lines_of(text):
        fields = line.split()
        if fields and not fields[0].startswith("#"):
            yield fields


def _outside(text: str, blocks: Iterable[Block]) -> str:
    """The file without our blocks (each as the markers find it)."""
    for block in blocks:
        try:
            text = textedit.remove_block(text, block)
        except ValueError:  # damaged markers: reported on their own
            continue
    return text


def problems(plan: Mapping[str, object], files: Files, cleaning: bool = False) -> list[str]:
    """Every reason the section's apply (or clean) must not start; [] to go.

    ``plan``: the section's plan (qubes_ephemeral.dom0.applied.plan)."""
    items = _items(plan, "remove" if cleaning else "artifacts")
    if not cleaning:
        items += _items(plan, "prune")
    found: list[str] = []
    for item, _ in items:
        found += _writable(item.kind, item.target, files)
    found += _markers(plan, items, files, cleaning)
    if not cleaning:
        for item, _ in _items(plan, "prune"):
            if isinstance(item, CommentOut):  # its swap may be in use: giving the line back is a clean's job
                found.append(f"the pillar no longer takes over the swap line in {item.target} that the last apply "
                             f"took over. Undo that apply first (qubesctl state.apply ephemeral.{plan.get('section')}"
                             ".clean), reboot, then apply again")  # fmt: skip
        found += _claims(plan, files)
        found += _in_use(plan, files)
        for item, _ in items:
            if item.kind == "directory" and (problem := files.mountpoint_problem(item.target)):
                found.append(problem)
    return list(dict.fromkeys(found))


def _items(plan: Mapping[str, object], key: str) -> list[tuple[Artifact, ArtifactData]]:
    raw = plan.get(key)
    return [(from_dict(dict(a)), a) for a in raw if isinstance(a, dict)] if isinstance(raw, list) else []


def _writable(kind: str, target: str, files: Files) -> list[str]:
    # Our mount point is immutable on purpose: the apply and the clean change its flag.
    why = files.why_unwritable(target, itself=kind not in ("directory",)) or files.wrong_kind(kind, target)
    return [f"cannot change {target}: {why}"] if why else []


def _markers(plan: Mapping[str, object], items: list[tuple[Artifact, ArtifactData]], files: Files,
             cleaning: bool) -> list[str]:  # fmt: skip
    recorded = {a.get("marker_start") for a in _recorded(plan) if a.get("kind") == "block"}
    taken = {a.get("pattern") for a in _recorded(plan) if a.get("kind") == "comment-out"}
    found = []
    for item, _ in items:
        text = files.read(item.target) if isinstance(item, Block | CommentOut) else None
        if text is None:
            continue
        if isinstance(item, CommentOut) and item.pattern not in taken and re.search(item.restore_pattern, text, re.M):
            # A clean gives back every line with our prefix: only ours may have it.
            found.append(f"{item.target} has lines that start with {item.prefix!r} that no apply of qubes-ephemeral "
                         "recorded: a clean would uncomment them. Change them by hand, then run again")  # fmt: skip
        if not isinstance(item, Block):
            continue
        try:
            position = textedit.find_block(text, item)
        except ValueError as error:
            found.append(f"{item.target}: {error}; fix them by hand")
            continue
        if position is None or item.marker_start in recorded:
            continue
        start, end = position
        inside = "".join(textedit.lines_of(text)[start + 1 : end])
        if inside != item.content:  # exactly our lines: ours, whatever happened to the record
            found.append(f"{item.target} already has a block between the markers of section {plan.get('section')} "
                         "that no apply of qubes-ephemeral recorded: someone else wrote it, or an older tool left "
                         "it. Remove it (markers included) by hand, then run again")  # fmt: skip
    return found


def _recorded(plan: Mapping[str, object]) -> list[ArtifactData]:
    raw = plan.get("recorded_artifacts")
    return [a for a in raw if isinstance(a, dict)] if isinstance(raw, list) else []


def _device_fields(target: str, fields: list[str]) -> list[str]:
    """The fields of a line that name a block device: crypttab's device, key
    file and header=, fstab's device."""
    if target == FSTAB:
        return fields[:1]
    named = fields[1:3]
    if len(fields) > 3:
        named += [option.partition("=")[2] for option in fields[3].split(",") if option.startswith("header=")]
    return named


def _claims(plan: Mapping[str, object], files: Files) -> list[str]:
    """Lines of crypttab and fstab, ours aside, that name what we key or mount."""
    activation = plan.get("activation")
    if not isinstance(activation, dict):
        return []
    # Ours: the blocks the pillar asks for, and those an apply recorded (an earlier version's too).
    recorded = [from_dict(dict(a)) for a in _recorded(plan)]
    ours = [item for item in [*(item for item, _ in _items(plan, "artifacts")), *recorded] if isinstance(item, Block)]
    takeovers = [item for item, _ in _items(plan, "artifacts") if isinstance(item, CommentOut)]
    device = str(activation.get("device", ""))
    mapping = str(activation.get("mapping", ""))
    mapping_name = os.path.basename(mapping)
    # Everything keying our device destroys: itself, its partitions and what is built on them.
    keyed = files.related(files.device(device))
    names = {device, *map(str, activation.get("device_aliases") or ())}
    mapping_names = {mapping, f"/dev/disk/by-id/dm-name-{mapping_name}"}
    mapping_identity = files.device(mapping)
    mountpoint = activation.get("mountpoint")
    found = []
    for target in (CRYPTTAB, FSTAB):
        text = files.read(target)
        if text is None:
            continue
        text = _outside(text, [b for b in ours if b.target == target])
        for takeover in takeovers:
            if takeover.target == target:
                text = textedit.comment_out(text, takeover)
        for fields in active_fields(text):
            where = f"{target}: the line {' '.join(fields)!r}"
            for named in _device_fields(target, fields):
                path = posixpath.normpath(_unescape(named)) if named.startswith("/") else named
                resolved = files.device(named)
                if path in names or resolved in keyed:
                    found.append(f"{where} names {device}, the device this section keys, or a part of it: one "
                                 "device, two claims. Remove that line, or (a persistent swap) name it as the "
                                 "description does so that replace: true takes it over")  # fmt: skip
                elif path in mapping_names or (mapping_identity is not None and resolved == mapping_identity):
                    found.append(f"{where} uses {mapping}, the mapping this section opens")
            if target == CRYPTTAB and fields[0] == mapping_name:
                found.append(f"{where} already opens a mapping named {mapping_name}: choose another name")
            if (
                target == FSTAB
                and mountpoint
                and len(fields) > 1
                and posixpath.normpath(_unescape(fields[1])) == mountpoint
            ):
                found.append(f"{where} already uses {mountpoint}")
    return found


def _in_use(plan: Mapping[str, object], files: Files) -> list[str]:
    """What makes the device, as dom0 sees it now, someone else's."""
    activation = plan.get("activation")
    if not isinstance(activation, dict):
        return []
    device = str(activation.get("device", ""))
    identity = files.device(device)
    if identity is None or identity[0] != "dev":
        return []  # not there now: the boot guard checks it before it is keyed
    rdev = int(identity[1])  # type: ignore[call-overload]
    where = f"{device} ({os.major(rdev)}:{os.minor(rdev)})"
    ours = files.related(files.device(str(activation.get("mapping", ""))))  # open already: an earlier apply's
    keyed = files.related(identity)
    taken_over = any(isinstance(item, CommentOut) for item, _ in _items(plan, "artifacts"))
    found = []
    carried = sorted(f"{os.major(int(d[1]))}:{os.minor(int(d[1]))}" for d in keyed - {identity} - ours)  # type: ignore[call-overload]
    if carried:
        found.append(f"{where} carries other devices ({', '.join(carried)}: a partition, or an encrypted or LVM "
                     "volume on it): keying it destroys them. Name a device that nothing is built on")  # fmt: skip
    mounted, swaps, backing = files.mounted(), files.swaps(), files.backing()
    for each in sorted(keyed - ours, key=str):
        number = int(each[1])  # type: ignore[call-overload]
        if number in mounted:
            found.append(f"{where}, or a device on it, is mounted: keying it destroys a filesystem in use")
        if each in swaps and not (taken_over and each == identity):
            found.append(f"{where}, or a device on it, is an active swap that this section does not take over")
        if number in backing:
            found.append(f"{where}, or a device on it: {backing[number]}")
    for lower in sorted(files.lowers(rdev)):
        lower_dm = files.dm(lower)
        volume = split_mapper_name(lower_dm[1]) if lower_dm and lower_dm[0].startswith("LVM-") else None
        if volume is not None and is_qube_volume(volume):
            found.append(f"{where} is built on a qube's volume ({volume.vg}/{volume.lv})")
    if (dm := files.dm(rdev)) is not None:
        found += _dm_problem(where, *dm, role=str(plan.get("section")))
    others = plan.get("other_devices")
    for section, other in sorted(others.items()) if isinstance(others, dict) else ():
        if keyed & files.related(files.device(str(other))):
            found.append(f"{where} is the device of section {section} ({other}), or a part of it: one device, "
                         "two sections. Give each its own device")  # fmt: skip
    return found


def _dm_problem(where: str, uuid: str, name: str, role: str) -> list[str]:
    """What device-mapper's own names say the device is."""
    if uuid.startswith("CRYPT-"):
        return [f"{where} is an open encrypted mapping ({name}): name a volume of your own, not someone's "
                "unlocked device"]  # fmt: skip
    if not uuid.startswith("LVM-"):
        return []
    if "-" in uuid[len("LVM-") :]:  # LVM's ids hold none: it suffixes the layers it stacks (-tpool, -real...)
        return [f"{where} is a layer LVM stacks under a volume ({name}, -{uuid.rsplit('-', 1)[1]}): name the "
                "volume itself"]  # fmt: skip
    volume = split_mapper_name(name)
    if volume is None:
        return [f"{where} is an LVM volume whose name ({name}) cannot be read: name it by its LVM path"]
    try:
        check_volume(volume, role)
    except Invalid as error:
        return [f"{where} is {volume.vg}/{volume.lv} to device-mapper, and {error.message}"]
    return []

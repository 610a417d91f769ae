"""What dom0 keeps of its disposables outside the places a description protects.

The inventory of every place dom0 writes a disposable's name or activity is in
docs/dom0-traces.md; each entry there is covered (a ``traces:`` option), out of
scope (with the reason), or reported. The reported ones are here: the audit
names each file found (``find``), and ``qubes-ephemeral audit --clear ID``
clears one kind on request (``clear``), touching nothing else:

- a ``file`` remnant is removed whole (it holds nothing but that record);
- a ``lines`` remnant (a shell history) keeps every line but those that name
  a disposable (``dispN``, the names Qubes gives them), byte for byte.

Files are taken only where no part of their path is a symbolic link (a user's
``~/.cache`` pointing at /etc must not make root remove or edit a file there),
and only regular files. Clearing removes a name from the file system, not from
the disk's freed blocks (docs/dom0-traces.md, out of scope: TRIM).
"""

from __future__ import annotations

import contextlib
import errno
import fnmatch
import os
import re
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import PurePosixPath
from xml.etree import ElementTree

from qubes_ephemeral.dom0.probe import Host, LinkInPath, TooLarge, open_folder, read_at_most

# The names Qubes gives disposables: disp and a number below 10000 (qubes/vm/dispvm.py,
# _get_free_disposable_id). A named disposable's name is the user's choice: not recognised.
# A qube's name may hold dots, so "disp1.example.org" or "disp1.c" is not one.
DISPOSABLE = re.compile(rb"disp[0-9]{1,4}")
# In LVM's metadata a disposable is its volumes: qubes_dom0/vm-disp1234-root (qubes/storage/lvm.py).
DISPOSABLE_VOLUME = re.compile(rb"(?<![A-Za-z0-9_.+-])vm-(disp[0-9]{1,4})-(?:root|private|volatile)")
# A name of its own, or inside the name of one of its files or volumes (a command line that
# reads guid.disp12.log names disp12; one that reads guid.disp12-dev.log does not).
# (A qube's name never ends in "-dm": qubesd refuses it, the name is a device model's.)
DISPOSABLE_NAME = re.compile(
    rb"(?<![A-Za-z0-9_.-])disp[0-9]{1,4}(?:-dm)?(?![A-Za-z0-9_-]|\.[A-Za-z0-9_])"
    rb"|(?<![A-Za-z0-9_.-])disp[0-9]{1,4}\.(?:log|xml|service)(?![A-Za-z0-9_-]|\.[A-Za-z0-9_])"
    rb"|(?<![A-Za-z0-9_.-])(?:guid\.|qrexec\.|qubesdb\.|guest-)disp[0-9]{1,4}(?:-dm)?\.log"
    rb"|" + DISPOSABLE_VOLUME.pattern
)
SEARCH_LIMIT = 8 << 20  # bytes: a file searched line by line (a history is far smaller)
# xfconfd writes one <value> per line; a line that is anything else is never removed (the XML stays whole).
NOTIFYD_SENDER = re.compile(rb'\A[ \t]*<value type="string" value="Qube: disp[0-9]{1,4}"/>[ \t]*\r?\n?\Z')
# The files each folder holds per qube, the qube's name in the group (docs/dom0-traces.md gives
# the writers). "guest-A-dm.log" is qube A's device model (qubesd refuses a name ending in "-dm");
# a file is taken only when none of the qubes it may belong to exists.
QUBE_FILES = {
    "/var/log/qubes": (rb"guid\.(.+)\.log(?:\.old)?", rb"qrexec\.(.+)\.log", rb"qubesdb\.(.+)\.log"),
    "/var/log/xen/console": (rb"guest-(.+)-dm\.log", rb"guest-(.+)\.log"),
    "/var/log/libvirt/libxl": (rb"(.+)\.log",),
    "/etc/libvirt/libxl": (rb"(.+)\.xml",),
}
QUBES_XML = "/var/lib/qubes/qubes.xml"
HOMES = ("/root", "/home/*")
MAX_LISTED = 10  # paths named per remnant; the rest are counted
SELINUX_LABEL = "security.selinux"


@dataclass(frozen=True)
class Remnant:
    id: str  # for --clear
    what: str  # what it holds, in a few words
    patterns: tuple[str, ...]  # absolute, "*" within a part; "~/" is every home (/root, /home/*)
    clear: str  # "file" (remove it) or "lines" (remove the lines that name a disposable)
    by_hand: str  # how to clear it without this tool
    # Which files are taken: "any" of the patterns' files, those whose "content" names a
    # disposable (``names``: the lines that do), or a disposable's own files ("qube", by
    # QUBE_FILES) once it is gone: no longer in qubes.xml (a running disposable's files are its own).
    match: str = "any"
    names: re.Pattern[bytes] = DISPOSABLE_NAME
    level: int = 1


REMNANTS = (
    Remnant("shell-history", "shell history: qvm-run and other qvm-* command lines name the disposable",
            ("~/.bash_history", "~/.zsh_history"), "lines",
            "close every dom0 terminal (a shell writes its history back when it exits), then delete the lines"),
    Remnant("launcher-history", "the Alt+F2 launcher's history: the commands typed into it",
            ("~/.cache/xfce4/appfinder/history", "~/.cache/xfce4/xfce4-appfinder/history"), "lines",
            "Application Finder, Preferences: Clear custom command history"),
    Remnant("notification-log", "the notification daemon's log (when turned on): notifications name the qubes",
            ("~/.cache/xfce4/notifyd/log", "~/.cache/xfce4/notifyd/log.sqlite"), "file",
            "Notifications settings, Log: Clear log"),
    Remnant("notification-apps", "the notification daemon's list of senders: one 'Qube: NAME' per qube that sent one",
            ("~/.config/xfce4/xfconf/xfce-perchannel-xml/xfce4-notifyd.xml",), "lines",
            "logged in: xfconf-query -c xfce4-notifyd -p /applications/known_applications -r; a clear from here "
            "holds once the session that runs xfconfd has ended", names=NOTIFYD_SENDER),
    Remnant("window-sessions", "saved Xfce sessions: the title of every window open at logout ([NAME] title)",
            ("~/.cache/sessions/xfwm4-*.state", "~/.cache/sessions/xfce4-session-*"), "file",
            "log out without saving the session, then delete the files (the next login opens no saved windows)"),
    Remnant("logout-screenshots", "the logout dialog's picture of the whole screen, every window on it",
            ("~/.cache/sessions/thumbs-*/*.png",), "file",
            "delete the files; xfconf-query -c xfce4-session -p /general/ShowScreenshots -n -t bool -s false "
            "stops them"),
    Remnant("session-errors", "the desktop session's error output: Qubes tools print qube names to it",
            ("~/.xsession-errors", "~/.xsession-errors.old"), "file",
            "delete the file after logging out (the next login starts a new one)"),
    Remnant("coredumps", "crash dumps of dom0 programs: a GUI daemon's dump holds a disposable's window contents",
            ("/var/lib/systemd/coredump/core.*", "/var/spool/abrt/*/*"), "file",
            "coredumpctl list shows them; on R4.3 abrt copies them: abrt-cli list, abrt-cli rm DIR (a clear from "
            "here leaves each problem's folder empty)"),
    Remnant("qube-logs", "a disposable's own logs, kept after it is gone: console output, GUI and qrexec messages",
            ("/var/log/qubes/*.log", "/var/log/qubes/*.log.old", "/var/log/xen/console/guest-*.log",
             "/var/log/libvirt/libxl/*.log"), "file",
            "delete the files named after the disposable; traces: keeps them on the scratch filesystem",
            match="qube"),
    Remnant("libvirt-definitions", "libvirt's definition of a disposable that is gone (its disks, kernel command line)",
            ("/etc/libvirt/libxl/*.xml",), "file",
            "virsh -c xen:/// undefine NAME, for a qube qvm-ls does not list", match="qube"),
    Remnant("qubes-xml-copies", "copies of qubes.xml taken at boot that list a disposable (never rotated by Qubes)",
            ("/var/lib/qubes/backup/qubes-*.xml",), "file",
            "delete the copies that name disposables (keep one without them if you want one)", match="content"),
    Remnant("lvm-archives", "LVM's metadata archives: the volumes of every disposable and the commands that made them",
            ("/etc/lvm/archive/*.vg",), "file",
            "delete the archives that name vm-dispN volumes (they only help a manual recovery); backup { archive = 0 } "
            "in lvm.conf stops them", match="content", names=DISPOSABLE_VOLUME),
)  # fmt: skip
BY_ID = {remnant.id: remnant for remnant in REMNANTS}


@dataclass(frozen=True)
class Found:
    remnant: Remnant
    path: str
    why: str  # what shows it is one (e.g. "3 lines name a disposable")
    clearable: bool = True  # False: reported only (too large to search); --clear leaves it


def _expand(host: Host, pattern: str) -> Iterator[str]:
    """The paths that match ``pattern``, none reached through a symbolic link."""
    parts = PurePosixPath(pattern).parts[1:]
    found = ["/"]
    for index, part in enumerate(parts):
        last = index == len(parts) - 1
        following = []
        for folder in found:
            # Listed even for a plain name: a folder the audit may not read (/root, without sudo)
            # is PermissionError (unknown), never "none found".
            listed = host.listdir(folder)
            names = fnmatch.filter(listed, part) if "*" in part else [part] if part in listed else []
            for name in sorted(names):
                path = os.path.join(folder, name)
                if host.readlink(path) is not None:
                    continue  # a symbolic link: never followed, never taken
                if host.is_file(path) if last else host.is_dir(path):  # regular files only
                    following.append(path)
        found = following
    yield from found


def patterns(remnant: Remnant) -> Iterator[str]:
    for pattern in remnant.patterns:
        if pattern.startswith("~/"):
            yield from (f"{home}/{pattern[2:]}" for home in HOMES)
        else:
            yield pattern


class CannotTell(ValueError):
    """Whether a file is a remnant cannot be told (nothing is taken then)."""


def living_qubes(host: Host, root: str = "/") -> set[bytes]:
    """The names of the qubes that exist, from qubes.xml. CannotTell when it is absent or
    not XML: then every qube might exist, and no qube's file is taken."""
    text = host.read(os.path.join(root, QUBES_XML[1:]))
    if text is None:
        raise CannotTell(f"{QUBES_XML} is absent: which qubes exist cannot be told, their files are left")
    try:
        tree = ElementTree.fromstring(text)
    except ElementTree.ParseError as error:
        raise CannotTell(f"{QUBES_XML} is not readable XML ({error}): their files are left") from None
    # Only the shape qubesd writes is believed (qubes/app.py): <qubes> with dom0 at least, each
    # domain with one name. Anything else could hide a living qube: then nothing is taken.
    domains = list(tree.iter("domain")) if tree.tag == "qubes" else []
    names = [[(prop.text or "").strip() for prop in domain.iter("property") if prop.get("name") == "name"]
             for domain in domains]  # fmt: skip
    if not names or any(len(name) != 1 or not name[0] for name in names):
        raise CannotTell(f"{QUBES_XML} is not as qubesd writes it (a <qubes> of domains, each named): "
                         "which qubes exist cannot be told, their files are left")  # fmt: skip
    return {name[0].encode() for name in names}


def qube_owners(path: str) -> set[bytes]:
    """The names of the qubes a per-qube file may belong to (QUBE_FILES)."""
    folder, name = os.path.split(path)
    return {match.group(1) for template in QUBE_FILES.get(folder, ())
            if (match := re.fullmatch(template, name.encode(errors="surrogateescape"), re.DOTALL))}  # fmt: skip


def _plural(count: int, one: str, many: str) -> str:
    return f"{count} {one if count == 1 else many}"


def find(host: Host, remnant: Remnant) -> list[Found]:
    """Every file of this kind on the host, as ``remnant.match`` and ``remnant.clear`` choose.
    CannotTell when a qube's file is found and qubes.xml cannot say whether the qube exists."""
    found = []
    living: set[bytes] | None = None  # read once, when first needed
    for pattern in patterns(remnant):
        for path in _expand(host, pattern):
            if remnant.match == "qube":
                owners = qube_owners(path)
                disposables = sorted(owner for owner in owners if DISPOSABLE.fullmatch(owner))
                if not disposables:
                    continue
                living = living_qubes(host) if living is None else living
                if not owners & living:
                    found.append(Found(remnant, path, f"{disposables[0].decode()} is gone"))
                continue
            if remnant.match == "any" and remnant.clear == "file":
                found.append(Found(remnant, path, "present"))
                continue
            try:
                data = (host.read(path, follow_links=False, limit=SEARCH_LIMIT) or "").encode(errors="replace")
            except TooLarge:
                found.append(Found(remnant, path, f"over {SEARCH_LIMIT >> 20} MiB: not searched, clear it by hand",
                                   clearable=False))  # fmt: skip
                continue
            count = sum(1 for line in _lines(data) if remnant.names.search(line))
            if count:
                found.append(Found(remnant, path, f"{_plural(count, 'line names', 'lines name')} a disposable"))
    return found


# --- clearing, on request: the only part of the audit that changes anything ---


class Refused(Exception):
    """A file the clear will not touch, and why."""


def why_not(error: Exception) -> str:
    """An error of a search or a clear, in a few words (an OSError's file and reason)."""
    if isinstance(error, OSError) and error.strerror:
        return f"{error.filename}: {error.strerror}" if error.filename else error.strerror
    return str(error)


LINE = re.compile(rb"[^\n]*\n|[^\n]+\Z")


def _lines(data: bytes) -> Iterator[bytes]:
    """One line at a time, split on newlines only and keeping them (a CR inside a line is
    part of it): a list of them all would cost dom0 many times the file's size. (Bytes, one at
    a time: textedit.lines_of splits the text of our own small files.)"""
    return (match.group() for match in LINE.finditer(data))


def _without_disposables(data: bytes, names: re.Pattern[bytes] = DISPOSABLE_NAME) -> bytes:
    """Every line but those that name a disposable. A bash timestamp line (#NNN) that
    stood before a removed line goes with it."""
    kept = bytearray()
    stamp = b""  # the line just before, when it was a timestamp (held back until the next is known)
    for line in _lines(data):
        if names.search(line):
            stamp = b""
            continue
        kept += stamp
        stamp = line if re.fullmatch(rb"#[0-9]+\r?\n?", line) else b""
        if not stamp:
            kept += line
    return bytes(kept + stamp)


def _identity(info: os.stat_result) -> tuple[int, int, int, int]:
    return info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns


def _rewrite(folder: int, name: str, source: int, before: os.stat_result, data: bytes) -> None:
    """``name`` in ``folder`` replaced by ``data`` in one rename, with the owner, mode
    (no set-id bits) and SELinux label of ``source``, the file that was read: never
    looked up by name again (it may have been swapped for another meanwhile). Refused when
    the file at ``name`` is no longer as it was ``before`` it was read (``source``'s fstat)."""
    try:
        label: bytes | None = os.getxattr(source, SELINUX_LABEL)
    except OSError as error:
        if error.errno not in (errno.ENODATA, errno.ENOTSUP, errno.EOPNOTSUPP):
            raise
        label = None
    temporary = f".{name}.qubes-ephemeral-clear"
    with contextlib.suppress(FileNotFoundError):
        os.unlink(temporary, dir_fd=folder)
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600, dir_fd=folder)
    try:
        try:
            with os.fdopen(fd, "wb", closefd=False) as out:
                out.write(data)
                out.flush()
            os.fchown(fd, before.st_uid, before.st_gid)
            os.fchmod(fd, stat.S_IMODE(before.st_mode) & 0o777)
            if label is not None:
                os.setxattr(fd, SELINUX_LABEL, label)
            os.fsync(fd)
        finally:
            os.close(fd)
        now = os.stat(name, dir_fd=folder, follow_symlinks=False)
        if _identity(now) != _identity(before):  # a line written meanwhile would be lost
            raise Refused(f"{name}: changed while being cleared: clear it again")
        os.rename(temporary, name, src_dir_fd=folder, dst_dir_fd=folder)
    except BaseException:
        with contextlib.suppress(OSError):  # the first error is the one to tell
            os.unlink(temporary, dir_fd=folder)
        raise
    os.fsync(folder)


_LIVING: dict[str, tuple[tuple[int, int, int, int], set[bytes]]] = {}


def _living_now(root: str) -> set[bytes]:
    """living_qubes as qubes.xml is now, parsed again only when it changed (a clear asks once per file)."""
    path = os.path.join(root, QUBES_XML[1:])
    try:
        key = _identity(os.stat(path))
    except FileNotFoundError:
        return living_qubes(Host(), root)  # says CannotTell, as the search does
    if path not in _LIVING or _LIVING[path][0] != key:
        _LIVING[path] = (key, living_qubes(Host(), root))
    return _LIVING[path][1]


def clear(found: Found, root: str = "/") -> str:
    """Clear one file found; what was done, in a few words. Refused (and nothing changed)
    when the file is no longer a regular file reached without a symbolic link."""
    if not found.clearable:
        raise Refused(f"{found.path}: {found.why}")
    folder_path, name = os.path.split(found.path)
    try:
        folder = open_folder(folder_path, root)
    except LinkInPath as error:
        raise Refused(str(error)) from None
    except FileNotFoundError:
        return "already gone"
    try:
        try:
            info = os.stat(name, dir_fd=folder, follow_symlinks=False)
        except FileNotFoundError:
            return "already gone"
        if not stat.S_ISREG(info.st_mode):
            raise Refused(f"{found.path}: not a regular file")
        if found.remnant.match == "qube":  # asked again: Qubes reuses a gone disposable's number
            try:
                living = _living_now(root)
            except (CannotTell, OSError, TooLarge) as error:
                raise Refused(why_not(error)) from None
            if qube_owners(found.path) & living:
                raise Refused(f"{found.path}: its qube exists again")
        if found.remnant.clear == "file":
            os.unlink(name, dir_fd=folder)
            os.fsync(folder)
            return "removed"
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK, dir_fd=folder)
        try:
            before = os.fstat(fd)
            if not stat.S_ISREG(before.st_mode):
                raise Refused(f"{found.path}: not a regular file")
            try:
                data = read_at_most(fd, found.path, SEARCH_LIMIT)
            except TooLarge:
                raise Refused(f"{found.path}: over {SEARCH_LIMIT >> 20} MiB: clear it by hand") from None
            kept = _without_disposables(data, found.remnant.names)
            if kept == data:
                return "no line names a disposable"
            _rewrite(folder, name, fd, before, kept)
        finally:
            os.close(fd)
        removed = sum(1 for _ in _lines(data)) - sum(1 for _ in _lines(kept))
        return f"{_plural(removed, 'line', 'lines')} removed"
    finally:
        os.close(folder)

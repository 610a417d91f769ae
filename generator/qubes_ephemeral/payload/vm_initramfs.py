#!/usr/bin/python3
"""Patch the initramfs of dom0-provided VM kernels for the /rw copy-on-write.

Qubes builds the initramfs of each VM kernel (kernel-qubes-vm, under
/var/lib/qubes/vm-kernels/VERSION/) with its own small /init, which sets up
the root copy-on-write (dmroot) and mounts the root filesystem. This tool
adds the qubes-ephemeral step to that /init without rebuilding anything:

- it reads /init out of the initramfs (a newc cpio archive, compressed or
  not, possibly several concatenated), and inserts two calls around the
  line that mounts the root filesystem; when that line is not there exactly
  once, it refuses and changes nothing;
- it appends an uncompressed cpio archive holding the patched /init, the
  hook (private-cow.sh) and a marker. The kernel unpacks concatenated
  archives in order, so the appended /init replaces the original.

The original bytes stay untouched at the start of the file and the marker
records their size and SHA-256: ``revert`` truncates back to them exactly,
and a file the kernel package replaced (no marker) is patched again.

Each run also writes what it found into a small record
(/run/qubes-ephemeral/vm-kernels.json): each initramfs's state, keyed on the
(device, inode, size, mtime, ctime) of the very bytes it read. The qubesd
extension trusts an entry while the file still has that key, so a start
reads no 20 MB initramfs inside qubesd's event loop unless the record does
not know it as it is now.

Standard library only: it is installed in dom0 as a script
(/usr/local/libexec/qubes-ephemeral/vm-initramfs) and run at apply time, at
boot and whenever a VM kernel is installed.
"""

from __future__ import annotations

import argparse
import bz2
import errno
import hashlib
import json
import lzma
import os
import re
import shutil
import stat
import subprocess
import sys
import tempfile
import time
import zlib
from dataclasses import dataclass
from pathlib import Path

KERNELS_DIR = Path("/var/lib/qubes/vm-kernels")
DEFAULT_HOOK = Path("/usr/local/share/qubes-ephemeral/private-cow.sh")
MARKER_NAME = "qubes-ephemeral-patch.json"
HOOK_NAME = "qubes-ephemeral-private-cow.sh"
# The dom0 units that run this tool: at every boot, and when a VM kernel is installed.
SERVICE_UNIT = "qubes-ephemeral-vm-kernels.service"
PATH_UNIT = "qubes-ephemeral-vm-kernels.path"
# What main() found, for the qubesd extension: {path: {"key": [dev, ino, size, mtime_ns, ctime_ns], "state": ...}}.
STATUS_RECORD = Path("/run/qubes-ephemeral/vm-kernels.json")
RECORD_LIMIT = 1 << 20  # a few hundred bytes per kernel: anything larger is not ours
PATCH_ID = "dispvm_private_cow"
PATCH_VERSION = 1
# The line of Qubes' VM /init (qubes-linux-utils dracut/simple/init.sh, the
# same in R4.1 to R4.3) that mounts the root filesystem read-write.
ANCHOR = "mount /dev/mapper/dmroot /sysroot -o rw"
TAG = "# qubes-ephemeral"
BEFORE = f"if [ -r /{HOOK_NAME} ]; then . /{HOOK_NAME}; qe_private_cow_setup; fi  {TAG}"
AFTER = f"if command -v qe_private_cow_fstab >/dev/null; then qe_private_cow_fstab /sysroot; fi  {TAG}"
NEWC = (b"070701", b"070702")
S_IFREG = 0o100000
TAIL_SEARCH = 1 << 20  # our archive is a few KiB at the very end


class PatchError(Exception):
    """Something the user must hear about; nothing was changed."""


# --- cpio (newc), as the kernel reads it (Documentation/driver-api/early-userspace) ---


def _align4(value: int) -> int:
    return (value + 3) & ~3


@dataclass
class Entry:
    name: str
    mode: int
    data: bytes


def read_newc(data: bytes, offset: int = 0) -> tuple[list[Entry], int]:
    """The entries of one newc archive at ``offset``, and where it ends."""
    entries: list[Entry] = []
    while True:
        header = data[offset : offset + 110]
        if len(header) < 110 or header[:6] not in NEWC:
            raise PatchError(f"broken cpio archive at byte {offset}")
        fields = [int(header[6 + 8 * i : 14 + 8 * i], 16) for i in range(13)]
        mode, size, name_size = fields[1], fields[6], fields[11]
        name_start = offset + 110
        name = data[name_start : name_start + name_size - 1].decode("utf-8", "replace")
        data_start = _align4(name_start + name_size)
        offset = _align4(data_start + size)
        if name == "TRAILER!!!":
            return entries, offset
        entries.append(Entry(name, mode, data[data_start : data_start + size]))


def write_newc(entries: list[Entry]) -> bytes:
    out = bytearray()
    for number, entry in enumerate([*entries, Entry("TRAILER!!!", 0, b"")], start=1):
        name = entry.name.encode() + b"\0"
        fields = [number if entry.mode else 0, entry.mode, 0, 0, 1 if entry.mode else 0, 0, len(entry.data),
                  0, 0, 0, 0, len(name), 0]  # fmt: skip
        out += b"070701" + b"".join(b"%08X" % field for field in fields) + name
        out += b"\0" * (_align4(len(out)) - len(out))
        out += entry.data
        out += b"\0" * (_align4(len(out)) - len(out))
    return bytes(out)


# --- the archives of an initramfs, in order (compressed ones decompressed) ---


def _decompress(data: bytes, offset: int) -> tuple[bytes, int]:
    """Decompress the stream at ``offset``; return it and where it ends."""
    head = data[offset : offset + 6]
    if head[:2] == b"\x1f\x8b":
        stream = zlib.decompressobj(wbits=31)
        out = stream.decompress(data[offset:])
        return out, len(data) - len(stream.unused_data)
    if head == b"\xfd7zXZ\x00" or head[:3] == b"\x5d\x00\x00":
        lzma_stream = lzma.LZMADecompressor()
        out = lzma_stream.decompress(data[offset:])
        return out, len(data) - len(lzma_stream.unused_data)
    if head[:3] == b"BZh":
        bz2_stream = bz2.BZ2Decompressor()
        out = bz2_stream.decompress(data[offset:])
        return out, len(data) - len(bz2_stream.unused_data)
    if head[:4] == ZSTD_MAGIC:
        tool, end = "zstd", _zstd_end(data, offset)
    elif head[:4] == LZ4_LEGACY_MAGIC:
        tool, end = "lz4", len(data)  # no end marker: it runs to the end of the file
    else:
        raise PatchError(f"unknown archive format at byte {offset} (starts with {head.hex()})")
    if shutil.which(tool) is None:
        raise PatchError(f"this initramfs is compressed with {tool}, and the {tool} command is missing")
    try:
        result = subprocess.run([tool, "-dc"], input=data[offset:end], capture_output=True, timeout=300, check=False)
    except subprocess.TimeoutExpired:
        raise PatchError(f"{tool} did not decompress the initramfs within 300 s") from None
    except OSError as error:
        raise PatchError(f"{tool} could not be run: {error.strerror or error}") from None
    if result.returncode != 0 or not result.stdout:
        raise PatchError(f"{tool} could not decompress the initramfs: {result.stderr.decode(errors='replace').strip()}")
    return result.stdout, end


ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
LZ4_LEGACY_MAGIC = b"\x02\x21\x4c\x18"


def _zstd_end(data: bytes, offset: int) -> int:
    """Where the zstd frames at ``offset`` end, from their headers alone
    (RFC 8878: frame header, then blocks that each state their size)."""
    while data[offset : offset + 4] == ZSTD_MAGIC:
        descriptor = data[offset + 4]
        single_segment = descriptor >> 5 & 1
        size_field = (0, 2, 4, 8)[descriptor >> 6] or single_segment
        position = offset + 5 + (0 if single_segment else 1) + (0, 1, 2, 4)[descriptor & 3] + size_field
        while True:
            header = int.from_bytes(data[position : position + 3], "little")
            if position + 3 > len(data) or header >> 1 & 3 == 3:
                raise PatchError(f"broken zstd frame at byte {offset}")
            block_size = header >> 3
            position += 3 + (1 if header >> 1 & 3 == 1 else block_size)  # an RLE block holds one byte
            if header & 1:
                break
        offset = position + (4 if descriptor >> 2 & 1 else 0)  # the content checksum
    return offset


def archives(data: bytes) -> list[list[Entry]]:
    """Every archive of an initramfs, in the order the kernel unpacks them."""
    found: list[list[Entry]] = []
    offset = 0
    while offset < len(data):
        if data[offset] == 0:  # padding between archives
            offset += 1
            continue
        if data[offset : offset + 6] in NEWC and offset % 4 == 0:
            entries, offset = read_newc(data, offset)
            found.append(entries)
            continue
        stream, offset = _decompress(data, offset)
        inner = 0
        while inner < len(stream):
            if stream[inner] == 0:
                inner += 1
                continue
            entries, inner = read_newc(stream, inner)
            found.append(entries)
    return found


def read_file(data: bytes, name: str) -> Entry | None:
    """The last version of ``name`` in the initramfs: the one the kernel keeps."""
    wanted = name.lstrip("/")
    last = None
    for archive in archives(data):
        for entry in archive:
            if entry.name.lstrip("./") == wanted or entry.name == wanted:
                last = entry
    return last


# --- our patch ---


@dataclass
class Patched:
    original_size: int
    original_sha256: str


def find_patch(data: bytes) -> Patched | None:
    """Our marker, when the file ends with our archive and the bytes before
    it are the original it records; None when it is not patched."""
    needle = MARKER_NAME.encode() + b"\0"
    at = data.rfind(needle, max(0, len(data) - TAIL_SEARCH))
    if at < 110:
        return None
    start = at - 110
    try:
        entries, _ = read_newc(data, start)
        marker = json.loads(entries[0].data)
    except (PatchError, ValueError, IndexError):
        return None
    if marker.get("patch") != PATCH_ID:
        return None
    size, digest = int(marker["original_size"]), str(marker["original_sha256"])
    if size > start or any(data[size:start]) or hashlib.sha256(data[:size]).hexdigest() != digest:
        raise PatchError("the initramfs carries a qubes-ephemeral marker but its original part was changed")
    return Patched(size, digest)


def patch_init(text: str) -> str:
    lines = text.split("\n")
    hits = [index for index, line in enumerate(lines) if line.strip() == ANCHOR]
    if len(hits) != 1:
        raise PatchError(
            f"its /init has {len(hits)} lines '{ANCHOR}' (1 expected): this Qubes VM init is not one this "
            "version knows; not patched, /rw of forgetful disposables stays read-only with this kernel"
        )
    index = hits[0]
    indent = lines[index][: len(lines[index]) - len(lines[index].lstrip())]
    return "\n".join(lines[:index] + [indent + BEFORE, lines[index], indent + AFTER] + lines[index + 1 :])


def is_qubes_vm_init(entry: Entry | None) -> bool:
    return entry is not None and entry.mode & 0o170000 == S_IFREG and b"dmroot" in entry.data


def patched_bytes(original: bytes, hook: bytes) -> bytes:
    init = read_file(original, "init")
    if not is_qubes_vm_init(init):
        raise PatchError("not a Qubes VM initramfs (no /init that sets up dmroot)")
    assert init is not None
    new_init = patch_init(init.data.decode("utf-8", "surrogateescape")).encode("utf-8", "surrogateescape")
    marker = json.dumps({"patch": PATCH_ID, "version": PATCH_VERSION, "original_size": len(original),
                         "original_sha256": hashlib.sha256(original).hexdigest()}, sort_keys=True)  # fmt: skip
    return append_archive(original, [
        Entry(MARKER_NAME, S_IFREG | 0o644, marker.encode()),
        Entry(HOOK_NAME, S_IFREG | 0o644, hook),
        Entry("init", S_IFREG | (init.mode & 0o7777), new_init),
    ])  # fmt: skip


def append_archive(original: bytes, entries: list[Entry]) -> bytes:
    """``original`` followed by an uncompressed archive of ``entries``, which
    the kernel unpacks last: its files replace those of the same name."""
    archive = write_newc(entries)
    # The kernel looks for an uncompressed archive at a 4-byte boundary.
    padding = b"\0" * (_align4(len(original)) - len(original))
    tail = b"\0" * (-(len(original) + len(padding) + len(archive)) % 512)
    return original + padding + archive + tail


# --- files ---


TEMPORARY_TAG = ".qubes-ephemeral."
SELINUX_LABEL = "security.selinux"


def temporaries(path: Path, prefix: str | None = None) -> list[Path]:
    """What writes of ``path`` that were killed before their rename left
    beside it: regular files named ``prefix`` and tempfile's 8 random
    characters. The prefix is ``replace_atomically``'s by default; Salt's
    file.managed uses the file's own name."""
    prefix = f".{path.name}{TEMPORARY_TAG}" if prefix is None else prefix
    try:
        names = os.listdir(path.parent)
    except (FileNotFoundError, NotADirectoryError):
        return []
    found = [path.parent / name for name in sorted(names) if re.fullmatch(re.escape(prefix) + r"[a-z0-9_]{8}", name)]
    return [candidate for candidate in found if stat.S_ISREG(candidate.lstat().st_mode)]


def replace_atomically(path: Path, content: bytes, mode_if_new: int | None = None) -> None:
    """Write ``content`` to ``path`` in one rename (a kill leaves the old or
    the new file, never half of one), keeping its mode, owner and SELinux
    label. A missing file is an error, unless ``mode_if_new`` says how to make
    it. What an earlier write killed midway left beside it goes. The
    formula's edits of crypttab and fstab use it too (_states/ephemeral_files.py)."""
    try:
        info: os.stat_result | None = path.stat()
    except FileNotFoundError:
        if mode_if_new is None:
            raise
        info = None
    stale = temporaries(path)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}{TEMPORARY_TAG}", dir=path.parent)
    try:
        with os.fdopen(handle, "wb") as out:
            out.write(content)
            out.flush()
            os.fsync(out.fileno())
        if info is None:
            os.chmod(temporary, mode_if_new or 0o644)
        else:
            os.chmod(temporary, info.st_mode & 0o7777)
            os.chown(temporary, info.st_uid, info.st_gid)
            _copy_label(path, temporary)
        os.replace(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.unlink(temporary)
        raise
    for leftover in stale:
        leftover.unlink(missing_ok=True)
    folder = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(folder)
    finally:
        os.close(folder)


def _copy_label(source: Path, target: str) -> None:
    """The SELinux label of the file replaced, where there is one."""
    try:
        label = os.getxattr(source, SELINUX_LABEL)
    except OSError as error:
        if error.errno in (errno.ENODATA, errno.ENOTSUP, errno.EOPNOTSUPP):
            return
        raise
    os.setxattr(target, SELINUX_LABEL, label)


Key = tuple[int, int, int, int, int]
KEY_FIELDS = 5


def file_key(info: os.stat_result) -> Key:
    """What tells one version of a file from another: (device, inode, size, mtime,
    ctime). ctime too: mtime can be set (rpm, cp -p, touch -r) and an inode
    number reused, but no one sets the ctime, which every change moves."""
    return (info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns, info.st_ctime_ns)


@dataclass
class Reading:
    data: bytes
    key: Key | None  # None: the file changed while it was read (the bytes may be torn)


def read_keyed(path: Path) -> Reading:
    """The bytes of ``path``, and the key of the version they are: one open, fstat
    before and after the read, so a key is never paired with bytes of another version."""
    with open(path, "rb") as file:
        before = file_key(os.fstat(file.fileno()))
        data = file.read()
        after = file_key(os.fstat(file.fileno()))
    return Reading(data, before if before == after and len(data) == before[2] else None)


def state_of(data: bytes) -> str:
    """patched, unpatched, not-qubes or error: ..., of an initramfs's bytes."""
    try:
        if find_patch(data):
            return "patched"
        return "unpatched" if is_qubes_vm_init(read_file(data, "init")) else "not-qubes"
    except PatchError as error:
        return f"error: {error}"
    except Exception as error:  # a damaged image (zlib, lzma, a marker of another shape): a state, not a crash
        return f"error: {type(error).__name__}: {error}"


def examine(initramfs: Path) -> tuple[str, Key | None]:
    """status, and the key of the bytes it was read from (None when there is none to trust)."""
    if not initramfs.is_file():
        return "missing", None
    try:
        reading = read_keyed(initramfs)
    except OSError as error:
        return f"error: {error}", None
    return state_of(reading.data), reading.key


def status(initramfs: Path) -> str:
    """patched, unpatched, not-qubes (an initramfs this patch is not for), missing, or error: ..."""
    return examine(initramfs)[0]


def _apply(initramfs: Path, hook: bytes) -> tuple[str, Key | None] | None:
    """Patch; the state and key of the file read back, or None when it was patched already."""
    reading = read_keyed(initramfs)
    if find_patch(reading.data):
        return None
    if reading.key is None:  # torn bytes must never become the original part
        raise PatchError("the initramfs changed while it was read; not patched, run again")
    replace_atomically(initramfs, patched_bytes(reading.data, hook))
    back = read_keyed(initramfs)
    state = state_of(back.data)
    if state != "patched":
        raise PatchError("the patch did not read back")
    return state, back.key


def apply(initramfs: Path, hook: bytes) -> bool:
    """Patch; True when the file changed."""
    return _apply(initramfs, hook) is not None


def _revert(initramfs: Path) -> tuple[str, Key | None] | None:
    """Back to the original bytes; their state and key read back, or None when it was not patched."""
    reading = read_keyed(initramfs)
    found = find_patch(reading.data)
    if not found:
        return None
    replace_atomically(initramfs, reading.data[: found.original_size])
    back = read_keyed(initramfs)
    return state_of(back.data), back.key


def revert(initramfs: Path) -> bool:
    """Back to the original bytes; True when the file changed."""
    return _revert(initramfs) is not None


# --- the record of what was found, for the qubesd extension ---


def parse_record(text: str | bytes) -> dict[str, tuple[Key, str]]:
    """The entries of a record, {path: (key, state)}; entries not shaped as we write
    them are left out, and anything else that is not a record gives none."""
    try:
        record = json.loads(text)
    except (ValueError, RecursionError):
        return {}
    if not isinstance(record, dict):
        return {}
    entries: dict[str, tuple[Key, str]] = {}
    for path, entry in record.items():
        if not isinstance(entry, dict):
            continue
        key, state = entry.get("key"), entry.get("state")
        if not isinstance(key, list) or len(key) != KEY_FIELDS or not isinstance(state, str):
            continue
        if all(type(number) is int for number in key):  # not bool, an int to Python but never one we write
            entries[path] = ((key[0], key[1], key[2], key[3], key[4]), state)
    return entries


def write_record(record: Path, found: dict[str, tuple[str, Key | None]]) -> None:
    """Record what this run found (``found``: {path: (state, key)}; key None: the
    file is left out), keeping the entries of other files still there."""
    try:
        kept = parse_record(record.read_bytes()[:RECORD_LIMIT])
    except OSError:
        kept = {}
    entries = {path: entry for path, entry in kept.items() if path not in found and os.path.exists(path)}
    entries.update({path: (key, state) for path, (state, key) in found.items() if key is not None})
    content = json.dumps({path: {"key": list(key), "state": state} for path, (key, state) in sorted(entries.items())},
                         indent=1) + "\n"  # fmt: skip
    if not record.parent.is_dir():
        record.parent.mkdir(parents=True, exist_ok=True)
        os.chmod(record.parent, 0o755)
    replace_atomically(record, content.encode(), mode_if_new=0o644)


def kernel_initramfs(kernels_dir: Path) -> list[Path]:
    if not kernels_dir.is_dir():
        return []
    return [path / "initramfs" for path in sorted(kernels_dir.iterdir()) if path.is_dir()]


def _mtime(path: Path) -> float:
    try:
        return path.lstat().st_mtime
    except OSError:
        return time.time()  # gone meanwhile: something is still changing


def settle(kernels_dir: Path, seconds: float, quiet_for: float = 2.0) -> None:
    """Wait until nothing in the kernels folder changed for ``quiet_for``
    seconds, at most ``seconds``: a kernel package being installed writes
    its files a moment after it makes its folder. At boot it returns at once."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        paths = [kernels_dir, *kernels_dir.glob("*"), *kernels_dir.glob("*/*")] if kernels_dir.is_dir() else []
        newest = max((_mtime(path) for path in paths), default=0.0)
        if time.time() - newest >= quiet_for:
            return
        time.sleep(0.5)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="vm-initramfs", description=__doc__.splitlines()[0])
    parser.add_argument("action", choices=("status", "apply", "revert"))
    parser.add_argument("initramfs", nargs="*", type=Path, help="files (default: every VM kernel's initramfs)")
    parser.add_argument("--kernels-dir", type=Path, default=KERNELS_DIR)
    parser.add_argument("--hook", type=Path, default=DEFAULT_HOOK)
    parser.add_argument("--settle", type=float, default=0, metavar="SECONDS",
                        help="first wait until the kernels folder is quiet, for at most SECONDS")  # fmt: skip
    parser.add_argument("--quiet", "-q", action="store_true", help="status: print nothing, only the exit status")
    parser.add_argument("--want", choices=("patched", "unpatched"), default="patched",
                        help="status: exit 1 when a Qubes VM initramfs is not in this state (default: patched)")  # fmt: skip
    parser.add_argument("--record", type=Path, default=STATUS_RECORD, metavar="PATH",
                        help=f"where to record what was found, for the qubesd extension (default: {STATUS_RECORD})")  # fmt: skip
    args = parser.parse_args(argv)
    if args.settle:
        settle(args.kernels_dir, args.settle)
    files = args.initramfs or kernel_initramfs(args.kernels_dir)
    failed = pending = False
    hook = b""
    if args.action == "apply":
        try:
            hook = args.hook.read_bytes()
        except OSError as error:
            print(f"vm-initramfs: cannot read the hook {args.hook}: {error.strerror}", file=sys.stderr)
            return 2
    found: dict[str, tuple[str, Key | None]] = {}  # for the record: {path: (state, key)}
    for path in files:
        state, key = examine(path)
        found[os.path.abspath(path)] = (state, key)
        if args.action == "status":
            pending |= state == ("unpatched" if args.want == "patched" else "patched")
            failed |= state.startswith("error")
            if not args.quiet:
                print(f"{path}: {state}")
            continue
        # Nothing to do: status read it already (at every boot, for every kernel: read once, not twice).
        done = "patched" if args.action == "apply" else "unpatched"
        if state in ("missing", "not-qubes", done):
            continue
        try:
            result = _apply(path, hook) if args.action == "apply" else _revert(path)
        except (PatchError, OSError) as error:
            print(f"vm-initramfs: {path}: {error}", file=sys.stderr)
            failed = True
            continue
        if result is not None:
            found[os.path.abspath(path)] = result  # the file now there, as it was read back
            print(f"{path}: {'patched' if args.action == 'apply' else 'restored'}")
    try:
        # Only root's record counts (the extension trusts no other): a user's status run writes none.
        if os.geteuid() == 0 or args.record != STATUS_RECORD:
            write_record(args.record, found)
    except OSError as error:  # qubesd then reads the initramfs itself, at the first start
        print(f"vm-initramfs: cannot write the record {args.record}: {error.strerror or error}", file=sys.stderr)
    if failed:
        return 2
    return 1 if pending else 0


if __name__ == "__main__":
    sys.exit(main())

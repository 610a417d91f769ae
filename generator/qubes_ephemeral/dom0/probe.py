"""How the audit looks at a live system: commands and files, read only.

``Host`` is the one door: ``run`` for commands (argv lists, no shell, a
minimal environment, a time limit), ``read``/``listdir``/``mtime`` for files.
``RecordedHost`` plays back what a ``RecordingHost`` saw on a real machine,
so the audit's tests run on recorded outputs.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import signal
import stat
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from qubes_ephemeral.payload import vm_initramfs


@dataclass(frozen=True)
class Output:
    rc: int
    out: str
    err: str

    @property
    def ran(self) -> bool:
        """Whether the command ran to its end (whatever its exit): not when it was not
        found, could not be started, timed out or was killed by a signal."""
        return self.rc >= 0 and self.rc not in (NOT_FOUND, NOT_EXECUTABLE, TIMED_OUT)

    @property
    def denied(self) -> bool:
        text = self.err.lower()
        return (self.ran and self.rc != 0
                and ("permission denied" in text or "must be root" in text or "not permitted" in text))  # fmt: skip


MAX_READ = 64 * 1024 * 1024  # bytes of one file


class TooLarge(ValueError):
    """A file larger than MAX_READ: not read."""


class LinkInPath(ValueError):
    """A part of a path is a symbolic link (or not a folder) where none may be followed."""


def read_at_most(fd: int, path: str, limit: int | None = None) -> bytes:
    """All of an open file, read in steps (a buffer of the limit's size at once would
    ask dom0 for 64 MiB at each read); TooLarge once past ``limit`` (MAX_READ)."""
    limit = MAX_READ if limit is None else limit
    chunks, total = [], 0
    while chunk := os.read(fd, 1 << 20):
        chunks.append(chunk)
        total += len(chunk)
        if total > limit:
            raise TooLarge(path)
    return b"".join(chunks)


def open_folder(folder: str, root: str = "/") -> int:
    """A descriptor of ``folder`` (under ``root``), reached without following any
    symbolic link: a part swapped for a link at any moment is refused (LinkInPath),
    never followed. FileNotFoundError when a part is absent."""
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        for part in PurePosixPath(folder).parts[1:]:
            try:
                following = os.open(part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=fd)
            except OSError as error:
                if error.errno in (errno.ELOOP, errno.ENOTDIR):
                    raise LinkInPath(f"{folder}: {part} is a symbolic link or not a folder") from None
                raise
            os.close(fd)
            fd = following
    except BaseException:
        os.close(fd)
        raise
    return fd


# The exit statuses a shell gives a command it could not find or start, and timeout(1) one it stopped.
NOT_FOUND, NOT_EXECUTABLE, TIMED_OUT = 127, 126, 124
TIME_LIMIT = 60.0  # seconds, for each command


class Host:
    """The live system."""

    def __init__(self, time_limit: float = TIME_LIMIT) -> None:
        self.time_limit = time_limit

    def run(self, argv: Sequence[str]) -> Output:
        """What ``argv`` printed and its exit status. A command that cannot run is an
        Output too, never an exception: NOT_FOUND (not in PATH), NOT_EXECUTABLE (there
        but cannot be started: not executable, a bad interpreter...), TIMED_OUT (killed,
        with whatever it started, after the time limit), each with the reason in ``err``."""
        # The user's environment (the Qubes tools need theirs), with messages in English to parse.
        env = {**os.environ, "LC_ALL": "C"}
        try:
            process = subprocess.Popen(list(argv), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                       stderr=subprocess.PIPE, env=env, start_new_session=True)  # fmt: skip
        except FileNotFoundError:
            return Output(NOT_FOUND, "", f"{argv[0]}: command not found")
        except OSError as error:  # PermissionError (not executable, a folder), ENOEXEC...
            return Output(NOT_EXECUTABLE, "", f"{argv[0]}: {error.strerror or error}")
        try:
            out, err = process.communicate(timeout=self.time_limit)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)  # its own session: the command and what it started
            with contextlib.suppress(subprocess.TimeoutExpired):  # a pipe held by one that left the session
                process.communicate(timeout=5)
            process.wait()
            return Output(TIMED_OUT, "", f"{argv[0]}: stopped after {self.time_limit:g} s without an answer")
        return Output(process.returncode, out.decode(errors="replace"), err.decode(errors="replace"))

    def read(self, path: str, follow_links: bool = True, limit: int | None = None) -> str | None:
        """The text of ``path``; None when absent (or, under /proc, its process
        gone meanwhile) or not a regular file (a FIFO or socket a user named like a
        file the audit reads must not hang or stop it); PermissionError when not
        readable; TooLarge past ``limit`` (MAX_READ: a huge file must not fill dom0's
        memory). Without ``follow_links``, a path with a symbolic link in any part is
        absent: a file in a user's folder, read as root, must not lead anywhere else."""
        flags = os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC
        try:
            if follow_links:
                fd = os.open(path, flags)
            else:
                folder_path, name = os.path.split(path)
                folder = open_folder(folder_path)
                try:
                    fd = os.open(name, flags | os.O_NOFOLLOW, dir_fd=folder)
                finally:
                    os.close(folder)
        except (FileNotFoundError, NotADirectoryError, ProcessLookupError, LinkInPath):
            return None
        except OSError as error:
            if error.errno in (errno.ELOOP, errno.ENXIO):  # a symbolic link (not followed), a socket
                return None
            error.filename = path
            raise
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                return None
            return read_at_most(fd, path, limit).decode(errors="replace")
        finally:
            os.close(fd)

    def listdir(self, path: str) -> list[str]:
        try:
            return sorted(os.listdir(path))
        except (FileNotFoundError, NotADirectoryError):
            return []

    def mtime(self, path: str) -> float | None:
        try:
            return os.stat(path).st_mtime
        except OSError:
            return None

    def readlink(self, path: str) -> str | None:
        try:
            return os.readlink(path)
        except OSError:
            return None

    def is_dir(self, path: str) -> bool:
        return os.path.isdir(path)

    def is_file(self, path: str) -> bool:
        """A regular file (not a FIFO, a socket, a device or a folder)."""
        return os.path.isfile(path)

    def exists(self, path: str) -> bool:
        return os.path.exists(path)

    def initramfs_status(self, path: str) -> str:
        return vm_initramfs.status(Path(path))

    def boot_time(self) -> float:
        uptime = float((self.read("/proc/uptime") or "0").split()[0])
        return time.time() - uptime


class RecordingHost(Host):
    """The live system, writing down everything it was asked (for tests)."""

    def __init__(self, time_limit: float = TIME_LIMIT) -> None:
        super().__init__(time_limit)
        self.record: dict[str, dict[str, object]] = {
            kind: {}
            for kind in ("run", "read", "listdir", "mtime", "readlink", "is_dir", "is_file", "exists", "initramfs")
        }
        self.record["boot_time"] = {"": super().boot_time()}

    def run(self, argv: Sequence[str]) -> Output:
        output = super().run(argv)
        self.record["run"][json.dumps(list(argv))] = [output.rc, output.out, output.err]
        return output

    def read(self, path: str, follow_links: bool = True, limit: int | None = None) -> str | None:
        try:
            text = super().read(path, follow_links, limit)
        except PermissionError:
            self.record["read"][path] = "<denied>"
            raise
        self.record["read"][path] = text
        return text

    def listdir(self, path: str) -> list[str]:
        names = super().listdir(path)
        self.record["listdir"][path] = names
        return names

    def mtime(self, path: str) -> float | None:
        value = super().mtime(path)
        self.record["mtime"][path] = value
        return value

    def readlink(self, path: str) -> str | None:
        self.record["readlink"][path] = value = super().readlink(path)
        return value

    def is_dir(self, path: str) -> bool:
        self.record["is_dir"][path] = value = super().is_dir(path)
        return value

    def is_file(self, path: str) -> bool:
        self.record["is_file"][path] = value = super().is_file(path)
        return value

    def exists(self, path: str) -> bool:
        self.record["exists"][path] = value = super().exists(path)
        return value

    def initramfs_status(self, path: str) -> str:
        self.record["initramfs"][path] = value = super().initramfs_status(path)
        return value

    def boot_time(self) -> float:
        return float(self.record["boot_time"][""])  # type: ignore[arg-type]

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(self.record, indent=1, sort_keys=True) + "\n")


class RecordedHost(Host):
    """Plays back a recording: what was not recorded is absent (a file) or
    not found (a command), as on a machine that does not have it. ``misses``
    lists what was asked and not recorded: a recording made by an older audit
    than the one replaying it (tests: it must be made again)."""

    def __init__(self, record: dict[str, dict[str, object]]) -> None:
        super().__init__()
        if not isinstance(record, dict) or not all(isinstance(part, dict) for part in record.values()):
            raise ValueError("a recording is an object of objects (run, read, listdir...)")
        kinds = ("run", "read", "listdir", "mtime", "readlink", "is_dir", "is_file", "exists", "initramfs", "boot_time")
        self.record = {**{kind: {} for kind in kinds}, **record}
        self.misses: list[str] = []

    @classmethod
    def load(cls, path: Path) -> RecordedHost:
        return cls(json.loads(path.read_text()))

    def _recorded(self, kind: str, key: str) -> object:
        if key not in self.record[kind]:
            self.misses.append(f"{kind} {key}")
            return None
        return self.record[kind][key]

    def run(self, argv: Sequence[str]) -> Output:
        found = self._recorded("run", json.dumps(list(argv)))
        if not isinstance(found, list):
            return Output(NOT_FOUND, "", f"{argv[0]}: command not found")
        return Output(int(found[0]), str(found[1]), str(found[2]))

    def read(self, path: str, follow_links: bool = True, limit: int | None = None) -> str | None:
        text = self._recorded("read", path)
        if text == "<denied>":
            raise PermissionError(path)
        return None if text is None else str(text)

    def listdir(self, path: str) -> list[str]:
        names = self._recorded("listdir", path)
        return [str(name) for name in names] if isinstance(names, list) else []

    def mtime(self, path: str) -> float | None:
        value = self._recorded("mtime", path)
        return None if value is None else float(value)  # type: ignore[arg-type]

    def readlink(self, path: str) -> str | None:
        value = self._recorded("readlink", path)
        return None if value is None else str(value)

    def is_dir(self, path: str) -> bool:
        return bool(self._recorded("is_dir", path))

    def is_file(self, path: str) -> bool:
        return bool(self._recorded("is_file", path))

    def exists(self, path: str) -> bool:
        return bool(self._recorded("exists", path))

    def initramfs_status(self, path: str) -> str:
        value = self._recorded("initramfs", path)
        return "missing" if value is None else str(value)

    def boot_time(self) -> float:
        return float(self.record["boot_time"].get("", 0.0))  # type: ignore[arg-type]

"""Fault injection for tests/test_formula_faults.py: test-only, never shipped.

Put first on the PYTHONPATH of one salt-call process, it counts with an audit
hook (sys.addaudithook) the operations that change dom0, and kills salt-call
just before one of them:

- FAULT_LOG=path: each counted operation is appended there, one line each:
  "<k> <event> <arguments>" (a command's argv, not its environment). A run
  with FAULT_LOG alone is a count: it lists every kill point, N in all;
- FAULT_AT=k as well: SIGKILL before the k-th (logged first; it never happens).

Counted: an ``open`` that may write (write, create, truncate or append
flags), a rename or replace, remove, rmdir, mkdir (of a folder that is not
there yet), symlink, link, chmod, chown, truncate and utime, on a path under
/etc, /usr, /var, /run or /dev (not /dev/null); and the ``subprocess.Popen``
of a command a cmd.run state runs through the shell (chattr, rmdir,
systemctl, mkswap...) but for the checks in CHECKS (the states' onlyif and
unless). Salt's own commands (grains) run without a shell; its cache and
runtime files are under the sandbox's root_dir, outside those folders: none
of them is counted. The hook sees what Python does in salt-call; what a
command does is covered by counting its Popen.

Only salt-call counts: both variables and this folder leave os.environ at
once, so the processes it starts (the emulated Qubes commands are Python
scripts too) never load the hook, and a forked child would not count.
"""

from __future__ import annotations

import os
import shlex
import signal
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
DOM0 = ("/etc/", "/usr/", "/var/", "/run/", "/dev/")
NEVER = ("/dev/null",)
WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND
PATH_EVENTS = {
    "os.rename": 2, "os.remove": 1, "os.rmdir": 1, "os.mkdir": 1, "os.symlink": 2,
    "os.chmod": 1, "os.chown": 1, "os.truncate": 1, "os.utime": 1, "os.link": 2,
}  # fmt: skip
# What a cmd.run state runs through the shell only to look (its onlyif and
# unless): killed before one, dom0 is as at the kill point before the next
# change, so it is no kill point of its own.
CHECKS = {"test", "[", "mountpoint", "lsattr", "ls", "swapon", "blkid", "readlink", "cat", "grep", "true"}
SHELLS = {"sh", "bash", "dash"}


def _dom0(path: object) -> bool:
    if isinstance(path, bytes):
        path = os.fsdecode(path)
    if not isinstance(path, str):
        return False  # a file descriptor: its open was counted
    path = os.path.abspath(path)
    return path.startswith(DOM0) and path not in NEVER


def _shell_command(args: object) -> list[str]:
    """The words of a command run as ``SHELL -c COMMAND``, or [] for anything else."""
    if not isinstance(args, (list, tuple)) or len(args) < 3:
        return []
    words = [os.fsdecode(a) if isinstance(a, bytes) else str(a) for a in args]
    if os.path.basename(words[0]) not in SHELLS or words[1] != "-c":
        return []
    try:
        return shlex.split(words[2])
    except ValueError:
        return words[2].split()


def _counts(event: str, args: tuple[object, ...]) -> bool:
    if event == "open":
        path, _mode, flags = args
        return isinstance(flags, int) and bool(flags & WRITE_FLAGS) and _dom0(path)
    if event == "os.mkdir" and isinstance(args[0], (str, bytes)) and os.path.isdir(args[0]):
        return False  # makedirs(exist_ok=True) on a folder that is there: it changes nothing
    if event in PATH_EVENTS:
        return any(_dom0(arg) for arg in args[: PATH_EVENTS[event]])
    if event == "subprocess.Popen":
        words = _shell_command(args[1])
        return bool(words) and os.path.basename(words[0]) not in CHECKS
    return False


def _install() -> None:
    at = os.environ.pop("FAULT_AT", None)
    log = os.environ.pop("FAULT_LOG", None)
    parts = os.environ.get("PYTHONPATH", "").split(os.pathsep)
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in parts if p and os.path.abspath(p) != HERE)
    if not os.environ["PYTHONPATH"]:
        del os.environ["PYTHONPATH"]
    if log is None:
        return
    target = int(at) if at else None
    pid = os.getpid()
    state = {"count": 0, "busy": False}

    def hook(event: str, args: tuple[object, ...]) -> None:
        if state["busy"] or os.getpid() != pid or not _counts(event, args):
            return
        state["busy"] = True  # our own writes to the log are not counted
        try:
            state["count"] += 1
            with open(log, "a", encoding="utf-8") as out:
                shown = args[1] if event == "subprocess.Popen" else args  # argv, not the environment
                out.write(f"{state['count']} {event} {shown!r}".replace("\n", "\\n") + "\n")
            if state["count"] == target:
                os.kill(pid, signal.SIGKILL)
        finally:
            state["busy"] = False

    sys.addaudithook(hook)


_install()

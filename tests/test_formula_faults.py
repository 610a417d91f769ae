"""The formula killed at every step that changes dom0, then what is left is checked
(issue "dom0 apply and clean that survive kills").

How: tests/faults/sitecustomize.py, first on the PYTHONPATH of salt-call only,
counts with an audit hook every operation of salt-call that changes dom0 (a
file written, renamed, removed, a folder made, a mode set, a cmd.run command
that changes something: see its docstring) and SIGKILLs salt-call before the
k-th (FAULT_AT=k), after logging it (FAULT_LOG). A run with no kill counts them
first: N for an apply, N for a clean, each event listed by test_kill_points
(pytest -rP). The pillar: pillar.example without qubes: and patches: (they add
seconds to every run and nothing to crypttab or fstab) and traces with one
log folder and one writer, so scratch, swap with replace: true (the fstab
swap line taken over) and traces.

Each kill point is a test, named after its event's number, and a failure names
the event and every invariant it broke:

- apply-kNNN: test_formula's dom0 crypttab and fstab, the apply killed before
  event NNN. Then (a) foreign bytes: without our blocks, and with the lines we
  took over given back, both files are the originals; (b) one claim: the swap
  device is not both keyed by a live line of our crypttab block and the
  persistent swap of a live fstab line. A re-apply exits 0, the apply after it
  changes nothing, (c) a temporary file the kill left next to crypttab or
  fstab is gone by then, and a clean exits 0 with both files back byte for
  byte, none of the manifest's files, links, folders nor the record left, and
  nothing else left that a clean with no kill does not leave (the sandboxes'
  upper layers compared);
- clean-kNNN: a dom0 where the apply is complete (the upper layers of one
  apply with no kill, copied), the clean killed before event NNN; (a) and
  (b); the next clean: (c), exit 0, the originals, nothing left;
- changed-kNNN, every third apply kill point, with CRLF files: killed, the
  scratch mount point moved in the pillar, applied (exit 0, (c)), cleaned:
  the originals, nothing of either pillar left.

Which kill points: a kill before event k leaves dom0 as events 1 to k-1 made
it. By default (FAULT_POINTS=all: every counted event instead):

- the first event of each operation, a state boundary: the events on one
  final path up to the rename, symlink or remove that puts it in place or
  takes it away (a temporary file counts as its target, a folder made for it
  as part of it), or one cmd.run command. But event 1: killed before it,
  nothing changed, and the count's runs (an apply, a second apply, a clean:
  asserted) are what follows;
- the middle of an operation, its last kill point (a temporary file written,
  not yet renamed over its target): for the first operation on crypttab, on
  fstab, on the record and on a file Salt writes; the same code writes the
  others, and the kill points around each write (its first event, the next
  operation's) run;
- never a kill before a chmod, chown or utime (dom0 is as at the next kill
  point but for one file's mode, owner or times), before Salt opens the
  temporary file it just made again (only that file's bytes differ), nor
  right after the systemctl recorder (it writes only into the sandbox: the
  kill point before it is the same).

Time: FAULT_JOBS scenarios (default: one more than the CPUs) run at once in threads of
this process: the module's `matrix` fixture starts every selected one when
the first test asks, each test waits for its own. A salt-call takes 2 s less
than in the other Salt tests (2.5 s here on an idle 2-core machine): a
socket where Salt looks for the minion's event bus takes the two events the
formula's saltutil.sync_* fire (EventSink), which salt-call --local otherwise
waits a second each for. The count runs at collection (8 to 13 s), unless -m
leaves the salt tests out. On that machine the default (26 apply, 27 clean,
9 changed-mind kill points: about 190 salt-calls) took 4 min 15 s idle and 9
to 11 min beside a VM test; FAULT_POINTS=all (128, 49 and 43) 36 min beside
it. FAULT_KEEP=1 keeps the sandboxes (qe-faults-* in the temporary folder).
"""

from __future__ import annotations

import ast
import atexit
import base64
import difflib
import hashlib
import os
import re
import shutil
import socket
import stat
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from conftest import PILLAR_EXAMPLE
from qubes_ephemeral.api import describe
from qubes_ephemeral.dom0 import textedit
from qubes_ephemeral.render.artifacts import Block, CommentOut, Directory, File, Manifest, Symlink
from qubes_ephemeral.render.manifest import render
from salt_sandbox import OVERLAID, Sandbox, available
from test_formula import DOM0_CRYPTTAB, DOM0_FSTAB, changed, failed

pytestmark = pytest.mark.salt

FAULTS = Path(__file__).parent / "faults"  # its sitecustomize.py kills salt-call
RECORD = "/etc/qubes-ephemeral/applied.json"
CRYPTTAB, FSTAB = "/etc/crypttab", "/etc/fstab"
METADATA = ("os.chmod", "os.chown", "os.utime")


def _pillar() -> str:
    """pillar.example without qubes: and patches:, traces with one log folder and one writer."""
    text = PILLAR_EXAMPLE.read_text()
    text = (text[: text.index("  # Optional: Qubes storage")]
            + text[text.index("  # Optional: dom0 logs") : text.index("  # Optional, opt-in")])  # fmt: skip
    for old, new in (
        ("paths: [/var/log/qubes, /var/log/libvirt/libxl, /var/log/xen/console]", "paths: [/var/log/qubes]"),
        ("writers: [qubesd.service, libvirtd.service, xenconsoled.service]", "writers: [qubesd.service]"),
    ):
        assert old in text, f"pillar.example changed: {old!r} is gone"
        text = text.replace(old, new)
    assert "  swap:\n" in text and "    replace: true\n" in text, "the swap line takeover is what this matrix is about"
    return text


PILLAR = _pillar()
# A mind changed after a killed apply: the scratch filesystem is mounted elsewhere.
CHANGED_PILLAR = PILLAR.replace("mountpoint: /var/lib/qubes-ephemeral", "mountpoint: /var/lib/qubes-ephemeral-2")
DESCRIPTION = describe(PILLAR.encode())
MANIFEST = render(DESCRIPTION)
CHANGED_MANIFEST = render(describe(CHANGED_PILLAR.encode()))
assert DESCRIPTION.swap is not None
SWAP_ALIASES = frozenset(DESCRIPTION.swap.device.aliases)

# The same dom0 files with CRLF line ends (fstab still without a final newline).
CRLF_CRYPTTAB = DOM0_CRYPTTAB.replace("\n", "\r\n")
CRLF_FSTAB = DOM0_FSTAB.replace("\n", "\r\n")


# --- the sandboxes -----------------------------------------------------------


class EventSink:
    """The minion's event bus, as far as salt-call --local needs one.

    The formula's saltutil.sync_* fire a module_refresh event; with no minion
    running, salt-call waits a second for the bus, twice per run. A socket at
    the bus's address takes the events and drops them (nothing waits for an
    answer): each run is two seconds shorter. Salt puts the bus under its
    root_dir, so the sandbox's folder needs a short path (a socket's path has
    107 bytes at most)."""

    def __init__(self, root_dir: Path) -> None:
        folder = root_dir / "var/run/salt/minion"
        folder.mkdir(parents=True, exist_ok=True)
        path = str(folder / f"minion_event_{hashlib.sha256(b'sandbox').hexdigest()[:10]}_pull.ipc")
        assert len(path) < 108, path
        self.server = socket.socket(socket.AF_UNIX)
        self.server.bind(path)
        self.server.listen(16)
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                connection, _ = self.server.accept()
            except OSError:
                return
            threading.Thread(target=self._drain, args=(connection,), daemon=True).start()

    @staticmethod
    def _drain(connection: socket.socket) -> None:
        with connection:
            while connection.recv(65536):
                pass

    def close(self) -> None:
        self.server.close()


class Boxes:
    """Sandboxes in one folder of their own, with a short path."""

    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="qe-faults-"))
        self.sinks: list[EventSink] = []

    def new(self, name: str, pillar: str = PILLAR, crypttab: str = DOM0_CRYPTTAB, fstab: str = DOM0_FSTAB) -> Sandbox:
        box = Sandbox(self.root / name, pillar)
        # Salt's npm module asks `npm --version` on every run (0.3 to 0.7 s); dom0 has no npm.
        with (box.folder / "conf/minion").open("a") as conf:
            conf.write("disable_modules: [npm]\n")
        self.sinks.append(EventSink(box.folder / "run"))
        box.put(CRYPTTAB, crypttab)
        box.put(FSTAB, fstab)
        return box

    def close(self) -> None:
        for sink in self.sinks:
            sink.close()
        if os.environ.get("FAULT_KEEP") == "1":
            return
        # A kill may leave the bare mount point immutable (chattr +i) in an upper layer.
        subprocess.run(["chattr", "-R", "-f", "-i", str(self.root)], check=False, capture_output=True)
        shutil.rmtree(self.root, ignore_errors=True)


def salt_call(box: Sandbox, sls: str, log: Path, at: int | None = None) -> subprocess.CompletedProcess[str]:
    """state.apply with the audit hook: every counted event goes to ``log``; killed before event ``at``."""
    env = {"PYTHONPATH": os.pathsep.join(p for p in (str(FAULTS), box.env.get("PYTHONPATH")) if p),
           "FAULT_LOG": str(log)}  # fmt: skip
    if at is not None:
        env["FAULT_AT"] = str(at)
    return box.salt_call(sls, extra_env=env)


def read_bytes(box: Sandbox, path: str) -> bytes | None:
    result = box.shell(f"test -f '{path}' && base64 -w0 '{path}'")
    return base64.b64decode(result.stdout) if result.returncode == 0 else None


def present(box: Sandbox, paths: list[str]) -> list[str]:
    """Those of ``paths`` that exist (a dangling symlink too)."""
    script = " ".join(f"'{p}'" for p in paths)
    result = box.shell(f'for p in {script}; do if [ -e "$p" ] || [ -L "$p" ]; then echo "$p"; fi; done')
    return result.stdout.splitlines()


def temp_files(box: Sandbox, before: list[str] | None = None) -> list[str]:
    """Whatever sits next to crypttab and fstab under a name made from theirs (and was not there ``before``)."""
    names = box.shell("ls -A /etc").stdout.split()
    return sorted(
        f"/etc/{n}" for n in names if re.match(r"\.?(crypttab|fstab).", n) and f"/etc/{n}" not in (before or [])
    )


def upper_tree(folder: Path) -> frozenset[str]:
    """What the sandbox's upper layers hold: each path with its kind."""
    entries = set()
    for top in OVERLAID:
        root = folder / ("upper" + top.replace("/", "_"))
        for path in root.rglob("*"):
            info = path.lstat()
            if stat.S_ISCHR(info.st_mode) and info.st_rdev == 0:
                kind = "deleted"  # an overlay whiteout
            elif stat.S_ISDIR(info.st_mode):
                kind = "folder"
            elif stat.S_ISLNK(info.st_mode):
                kind = "symlink"
            else:
                kind = "file"
            entries.add(f"{top}/{path.relative_to(root)} ({kind})")
    return frozenset(entries)


def copy_layers(source: Path, target: Path) -> None:
    for top in OVERLAID:
        name = "upper" + top.replace("/", "_")
        shutil.rmtree(target / name, ignore_errors=True)
        subprocess.run(["cp", "-a", str(source / name), str(target / name)], check=True)


# --- the events --------------------------------------------------------------


@dataclass(frozen=True)
class Event:
    k: int
    name: str
    args: tuple[object, ...]
    line: str

    @property
    def paths(self) -> list[str]:
        if self.name == "subprocess.Popen":
            return []
        count = 2 if self.name in ("os.rename", "os.symlink", "os.link") else 1
        return [a for a in self.args[:count] if isinstance(a, str)]

    @property
    def argv(self) -> list[str]:
        return [str(a) for a in self.args] if self.name == "subprocess.Popen" else []


def events(log: Path) -> list[Event]:
    found = []
    for line in log.read_text().splitlines() if log.exists() else []:
        k, name, args = line.split(" ", 2)
        value = ast.literal_eval(args)
        found.append(Event(int(k), name, tuple(value), line))
    return found


def _key(event: Event, folder: str) -> tuple[object, ...]:
    """What two runs' events have in common: the random end of a temporary name left out."""
    if event.name == "subprocess.Popen":
        return (event.name, tuple(a.replace(folder, "<sandbox>") for a in event.argv))
    return (event.name, tuple((p[:-8], len(p)) for p in event.paths))


@dataclass
class Operation:
    """Consecutive events on one final path (a temporary file's, a folder made for it)."""

    subject: str | None
    events: list[Event] = field(default_factory=list)


def operations(counted: list[Event]) -> list[Operation]:
    """The events grouped: an operation ends with the event that puts its final path in
    place or takes it away (rename, symlink, remove); a folder made first belongs to it."""
    renamed = {str(e.args[0]): str(e.args[1]) for e in counted if e.name == "os.rename"}
    found: list[Operation] = []
    for event in counted:
        if event.name == "subprocess.Popen":
            found.append(Operation(None, [event]))
            continue
        path = event.paths[-1]
        subject = renamed.get(path, path)
        last = found[-1] if found else None
        if (
            last
            and last.subject
            and last.events[-1].name not in ("os.rename", "os.symlink", "os.remove")
            and (
                subject == last.subject
                or (all(e.name == "os.mkdir" for e in last.events) and subject.startswith(last.subject + "/"))
            )
        ):
            last.subject = subject
            last.events.append(event)
        else:
            found.append(Operation(subject, [event]))
    return found


def sample(counted: list[Event], folder: str) -> list[int]:
    """The kill points run by default (see the module's docstring)."""
    opened: set[str] = set()
    inert: set[int] = set()  # not run: dom0 is (all but) as at a neighbouring kill point
    for event in counted:
        if event.name in METADATA:
            inert.add(event.k)
        elif event.name == "open":
            if event.paths[0] in opened:
                inert.add(event.k)
            opened.add(event.paths[0])
        elif event.name == "subprocess.Popen" and any(a.startswith(folder + "/") for a in event.argv):
            inert.add(event.k + 1)  # a recorder of the sandbox (systemctl): nothing in dom0 changed
    chosen: list[int] = []
    shown: set[str] = set()  # writers whose first operation gave its middle kill point
    for operation in operations(counted):
        first, rest = operation.events[0].k, [e.k for e in operation.events[1:] if e.k not in inert]
        if first not in inert and first != 1:  # before event 1 nothing changed: the count's own runs
            chosen.append(first)
        if operation.subject is not None and rest:
            writer = operation.subject if operation.subject in (CRYPTTAB, FSTAB, RECORD) else "salt"
            if writer not in shown:
                shown.add(writer)
                chosen.append(rest[-1])
    return chosen


# --- the invariants ----------------------------------------------------------


def _ours(manifests: list[Manifest], target: str) -> tuple[list[Block], list[CommentOut]]:
    blocks: dict[tuple[str, str], Block] = {}
    takeovers: dict[str, CommentOut] = {}
    for manifest in manifests:
        for artifact in manifest.artifacts:
            if isinstance(artifact, Block) and artifact.target == target:
                blocks[(artifact.marker_start, artifact.marker_end)] = artifact
            elif isinstance(artifact, CommentOut) and artifact.target == target:
                takeovers[artifact.restore_pattern] = artifact
    return list(blocks.values()), list(takeovers.values())


def _diff(want: bytes, got: bytes, path: str) -> str:
    lines = difflib.unified_diff(want.decode(errors="replace").splitlines(True),
                                 got.decode(errors="replace").splitlines(True), "original", path)  # fmt: skip
    return "".join(repr(line)[1:-1] + "\n" for line in lines)


def foreign_bytes(box: Sandbox, manifests: list[Manifest], originals: dict[str, bytes]) -> list[str]:
    """(a) Every byte that is not ours is as it was: without our blocks and
    with the lines we took over given back, each file is the original."""
    problems = []
    for path, original in originals.items():
        current = read_bytes(box, path)
        if current is None:
            problems.append(f"foreign bytes: {path} is gone")
            continue
        text = current.decode("utf-8", "surrogateescape")
        blocks, takeovers = _ours(manifests, path)
        try:
            for block in blocks:
                text = textedit.remove_block(text, block)
        except ValueError as error:
            problems.append(f"foreign bytes: {path}: {error}")
            continue
        for takeover in takeovers:
            text = textedit.restore(text, takeover)
        if text.encode("utf-8", "surrogateescape") != original:
            problems.append(f"foreign bytes: {path} without our blocks is not the original:\n"
                            + _diff(original, text.encode("utf-8", "surrogateescape"), path))  # fmt: skip
    return problems


def _short(line: str) -> str:
    line = " ".join(line.split())
    return repr(line if len(line) <= 60 else line[:57] + "...")


def one_claim(box: Sandbox, manifests: list[Manifest]) -> list[str]:
    """(b) The swap device is never both keyed by a live line of our crypttab
    block and the persistent swap of a live fstab line."""
    crypttab = (read_bytes(box, CRYPTTAB) or b"").decode("utf-8", "surrogateescape")
    fstab = (read_bytes(box, FSTAB) or b"").decode("utf-8", "surrogateescape")
    keyed = []
    for block in _ours(manifests, CRYPTTAB)[0]:
        position = textedit.find_block(crypttab, block)
        if position is None:
            continue
        for line in textedit.lines_of(crypttab)[position[0] + 1 : position[1]]:
            fields = line.split()
            if fields and not fields[0].startswith("#") and len(fields) > 1 and fields[1] in SWAP_ALIASES:
                keyed.append(line.strip())
    persistent = []
    for line in textedit.lines_of(fstab):
        fields = line.split()
        if len(fields) > 2 and not fields[0].startswith("#") and fields[0] in SWAP_ALIASES and fields[2] == "swap":
            persistent.append(line.strip())
    if keyed and persistent:
        return [f"one claim: the swap device is keyed by our crypttab block ({_short(keyed[0])}) "
                f"and still the persistent swap in /etc/fstab ({_short(persistent[0])})"]  # fmt: skip
    return []


def reverted(
    box: Sandbox, manifests: list[Manifest], originals: dict[str, bytes], learnt: Plan, left: list[str]
) -> list[str]:
    """After a clean: the originals byte for byte, nothing of ours left, nothing
    else left that a clean with no kill does not leave (``left``: temporary files
    already reported)."""
    problems = []
    for path, original in originals.items():
        current = read_bytes(box, path)
        if current != original:
            problems.append(f"originals: {path} is not byte-identical after the clean:\n"
                            + _diff(original, current or b"", path))  # fmt: skip
    targets = sorted({a.target for m in manifests for a in m.artifacts if isinstance(a, File | Symlink | Directory)})
    for target in present(box, [*targets, RECORD]):
        problems.append(f"nothing left: {target} is still there after the clean")
    extra = sorted(e for e in upper_tree(box.folder) - learnt.baseline if e.rsplit(" ", 1)[0] not in left)
    if extra:
        problems.append("nothing left: the clean leaves what a clean with no kill does not: " + ", ".join(extra))
    return problems


# --- what is run -------------------------------------------------------------


@dataclass
class Plan:
    """Learnt once, with no kill: every counted event of an apply and of a clean."""

    boxes: Boxes
    folder: str  # the counting sandbox's folder (the recorders' paths in the events)
    apply: list[Event]
    clean: list[Event]
    applied: Path  # the upper layers of a sandbox where the apply is complete
    baseline: frozenset[str]  # the upper layers once apply and clean ran with no kill
    seconds: dict[str, float]


_PLAN: list[Plan] = []


def _checked(result: subprocess.CompletedProcess[str], what: str) -> None:
    assert result.returncode == 0, f"{what} with no kill failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"


def plan() -> Plan:
    if _PLAN:
        return _PLAN[0]
    boxes = Boxes()
    atexit.register(boxes.close)
    box = boxes.new("count")
    seconds = {}
    start = time.monotonic()
    _checked(salt_call(box, "ephemeral", boxes.root / "apply.log"), "the apply")
    seconds["apply"] = time.monotonic() - start
    start = time.monotonic()
    status, again = box.apply()
    seconds["apply again"] = time.monotonic() - start
    assert status == 0 and changed(again) == {}, f"a second apply with no kill changes {changed(again)}"
    applied = boxes.root / "applied"
    applied.mkdir()
    copy_layers(box.folder, applied)
    start = time.monotonic()
    _checked(salt_call(box, "ephemeral.clean", boxes.root / "clean.log"), "the clean")
    seconds["clean"] = time.monotonic() - start
    assert read_bytes(box, CRYPTTAB) == DOM0_CRYPTTAB.encode() and read_bytes(box, FSTAB) == DOM0_FSTAB.encode()
    _PLAN.append(Plan(boxes, str(box.folder), events(boxes.root / "apply.log"), events(boxes.root / "clean.log"),
                      applied, upper_tree(box.folder), seconds))  # fmt: skip
    return _PLAN[0]


def points(kind: str) -> list[int]:
    """The kill points of one matrix: FAULT_POINTS=all for every counted event."""
    counted = plan().clean if kind == "clean" else plan().apply
    every = os.environ.get("FAULT_POINTS") == "all"
    chosen = [e.k for e in counted] if every else sample(counted, plan().folder)
    return chosen[::3] if kind == "changed" else chosen


class NotKilled(AssertionError):
    """salt-call was not killed where it should have been: the matrix itself is wrong."""


def kill(box: Sandbox, sls: str, k: int, counted: list[Event], log: Path) -> Event:
    """Run ``sls`` and SIGKILL salt-call before its k-th counted event."""
    result = salt_call(box, sls, log, at=k)
    seen = events(log)
    if result.returncode not in (-9, 137) or not seen or seen[-1].k != k:
        raise NotKilled(f"salt-call was not killed before event {k} (exit {result.returncode}; last event: "
                     f"{seen[-1].line if seen else None}):\n{result.stdout[-2000:]}\n{result.stderr[-2000:]}")  # fmt: skip
    event = seen[-1]
    if _key(event, str(box.folder)) != _key(counted[k - 1], plan().folder):
        raise NotKilled(f"this run took another path: event {k} is {event.line}, not {counted[k - 1].line}")
    return event


def _originals(crypttab: str, fstab: str) -> dict[str, bytes]:
    return {CRYPTTAB: crypttab.encode(), FSTAB: fstab.encode()}


def _after_kill(box: Sandbox, manifests: list[Manifest], originals: dict[str, bytes]) -> list[str]:
    return foreign_bytes(box, manifests, originals) + one_claim(box, manifests)


def _temps_kept(box: Sandbox, before: list[str], run: str) -> list[str]:
    kept = [path for path in temp_files(box) if path in before]
    return [f"temporary files: {', '.join(kept)} left by the kill, still there after {run}"] if kept else []


def scenario_apply(k: int) -> tuple[Event, list[str]]:
    boxes = Boxes()
    try:
        box = boxes.new(f"apply-{k}")
        originals = _originals(DOM0_CRYPTTAB, DOM0_FSTAB)
        existing = temp_files(box)
        event = kill(box, "ephemeral", k, plan().apply, boxes.root / "fault.log")
        problems = _after_kill(box, [MANIFEST], originals)
        temps = temp_files(box, existing)
        status, states = box.apply()
        if status != 0:
            problems.append(f"re-apply: exit {status}: {failed(states)}")
        else:
            status, states = box.apply()
            if status != 0 or changed(states):
                problems.append(f"apply again: exit {status}, changes {sorted(changed(states))}: {failed(states)}")
        problems += _temps_kept(box, temps, "the re-apply")
        status, states = box.apply("ephemeral.clean")
        if status != 0:
            problems.append(f"clean: exit {status}: {failed(states)}")
        problems += reverted(box, [MANIFEST], originals, plan(), temps)
        return event, problems
    finally:
        boxes.close()


def scenario_clean(k: int) -> tuple[Event, list[str]]:
    boxes = Boxes()
    try:
        box = boxes.new(f"clean-{k}")
        copy_layers(plan().applied, box.folder)
        originals = _originals(DOM0_CRYPTTAB, DOM0_FSTAB)
        existing = temp_files(box)
        event = kill(box, "ephemeral.clean", k, plan().clean, boxes.root / "fault.log")
        problems = _after_kill(box, [MANIFEST], originals)
        temps = temp_files(box, existing)
        status, states = box.apply("ephemeral.clean")
        if status != 0:
            problems.append(f"clean again: exit {status}: {failed(states)}")
        problems += _temps_kept(box, temps, "the next clean")
        problems += reverted(box, [MANIFEST], originals, plan(), temps)
        return event, problems
    finally:
        boxes.close()


def scenario_changed(k: int) -> tuple[Event, list[str]]:
    """Killed, then the pillar changes; with CRLF files."""
    boxes = Boxes()
    try:
        box = boxes.new(f"changed-{k}", crypttab=CRLF_CRYPTTAB, fstab=CRLF_FSTAB)
        originals = _originals(CRLF_CRYPTTAB, CRLF_FSTAB)
        existing = temp_files(box)
        event = kill(box, "ephemeral", k, plan().apply, boxes.root / "fault.log")
        problems = _after_kill(box, [MANIFEST], originals)
        temps = temp_files(box, existing)
        box.set_pillar(CHANGED_PILLAR)
        status, states = box.apply()
        if status != 0:
            problems.append(f"apply of the changed pillar: exit {status}: {failed(states)}")
        problems += _temps_kept(box, temps, "the apply of the changed pillar")
        status, states = box.apply("ephemeral.clean")
        if status != 0:
            problems.append(f"clean: exit {status}: {failed(states)}")
        problems += reverted(box, [MANIFEST, CHANGED_MANIFEST], originals, plan(), temps)
        return event, problems
    finally:
        boxes.close()


SCENARIOS: dict[str, Callable[[int], tuple[Event, list[str]]]] = {
    "apply": scenario_apply, "clean": scenario_clean, "changed": scenario_changed,
}  # fmt: skip


# --- pytest --------------------------------------------------------------------


def _salt_tests_selected(config: pytest.Config) -> bool:
    """False when -m leaves the salt tests out: the kill points are not counted then."""
    expression = config.getoption("markexpr") or ""
    if not expression:
        return True
    try:
        from _pytest.mark.expression import Expression

        def salt(name: str, /, **_: str | int | bool | None) -> bool:
            return name == "salt"

        return Expression.compile(expression).evaluate(salt)
    except Exception:  # pytest's own parser: if it changed, count anyway
        return True


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    for kind in SCENARIOS:
        name = f"{kind}_k"
        if name in metafunc.fixturenames:
            if available() is None and _salt_tests_selected(metafunc.config):
                chosen = points(kind)
                metafunc.parametrize(name, chosen, ids=[f"{kind}-k{k:03d}" for k in chosen])
            else:
                metafunc.parametrize(name, [0], ids=[f"{kind}-not-counted"])


@pytest.fixture(scope="module")
def matrix(request: pytest.FixtureRequest) -> Iterator[dict[tuple[str, int], Future[tuple[Event, list[str]]]]]:
    """Every scenario the session selected, FAULT_JOBS at a time."""
    why = available()
    if why:
        if os.environ.get("STRICT_TOOLS") == "1":
            pytest.fail(why)
        pytest.skip(why)
    wanted = []
    for item in request.session.items:
        params = getattr(getattr(item, "callspec", None), "params", {})
        if getattr(item, "module", None) is request.module:
            wanted += [(kind, params[f"{kind}_k"]) for kind in SCENARIOS if f"{kind}_k" in params]
    # One more than the CPUs: each scenario also waits (mounts, fsync) part of the time.
    pool = ThreadPoolExecutor(int(os.environ.get("FAULT_JOBS") or (os.cpu_count() or 1) + 1))
    futures = {key: pool.submit(SCENARIOS[key[0]], key[1]) for key in wanted}
    yield futures
    pool.shutdown(wait=True, cancel_futures=True)


def _check(matrix: dict[tuple[str, int], Future[tuple[Event, list[str]]]], kind: str, k: int) -> None:
    event, problems = matrix[(kind, k)].result()
    if problems:
        pytest.fail(f"killed before event {event.line}\n" + "\n".join(f"- {p}" for p in problems), pytrace=False)


def test_kill_points(matrix: object) -> None:
    """N for an apply and for a clean, each counted event, and what the matrices run."""
    counted = plan()
    report = [f"apply: N={len(counted.apply)}, run: {points('apply')}",
              f"clean: N={len(counted.clean)}, run: {points('clean')}",
              f"changed mind: run: {points('changed')}",
              f"seconds with no kill: {', '.join(f'{k} {v:.1f}' for k, v in counted.seconds.items())}",
              *(f"apply {e.line}" for e in counted.apply), *(f"clean {e.line}" for e in counted.clean)]  # fmt: skip
    print("\n".join(report))
    assert any(e.name == "os.rename" and e.args[1] == FSTAB for e in counted.apply)
    assert any(e.name == "os.rename" and e.args[1] == CRYPTTAB for e in counted.clean)
    assert not [
        e for e in counted.apply + counted.clean if e.name == "subprocess.Popen" and e.argv[2].startswith("test ")
    ]


def test_apply_killed(matrix: dict[tuple[str, int], Future[tuple[Event, list[str]]]], apply_k: int) -> None:
    """Killed at event k of an apply: foreign bytes and one claim hold; the next
    apply completes, the one after changes nothing, clean gives the originals back."""
    _check(matrix, "apply", apply_k)


def test_clean_killed(matrix: dict[tuple[str, int], Future[tuple[Event, list[str]]]], clean_k: int) -> None:
    """Killed at event k of a clean: foreign bytes and one claim hold; the next
    clean gives the originals back and leaves nothing."""
    _check(matrix, "clean", clean_k)


def test_apply_killed_then_pillar_changed(
    matrix: dict[tuple[str, int], Future[tuple[Event, list[str]]]], changed_k: int
) -> None:
    """Killed at event k of an apply (CRLF files), the scratch mount point
    moved in the pillar, applied, cleaned: the originals, nothing left."""
    _check(matrix, "changed", changed_k)

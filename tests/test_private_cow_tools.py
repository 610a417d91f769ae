"""The /rw hook (vm/private-cow.sh) with only the tools of dom0's VM initramfs.

dom0 builds the initramfs of its VM kernels (kernel-qubes-vm) with dracut and
only the modules ``kernel-modules qubes-vm-simple``; qubes-vm-simple depends on
``dm``. The external commands such an image holds are the ones those modules
install, listed in IMAGE_TOOLS below. The hook must get by with them and the
shell's built-ins, and where something it needs is missing it must say so on
the console and leave /rw on the read-only device (fail closed).

The first tests need no upstream code: they read the hook's commands with a
small shell tokenizer, and run its functions under dash with PATH holding only
IMAGE_TOOLS (dmsetup and modprobe are stand-ins that record their calls, so
nothing touches the host's device-mapper), over a stand-in sysfs.

The last tests build such an image for real, with dracut and qubes-linux-utils'
module for release4.2, release4.3 and main: set QUBES_LINUX_UTILS to a clone
of QubesOS/qubes-linux-utils. They need dracut (Debian: dracut-core) and the
host's installed kernel (/boot/vmlinuz-*); running the hook inside the image
(chroot) also needs root and loop devices.
"""

from __future__ import annotations

import os
import re
import shutil
import stat
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from conftest import ROOT, require
from qubes_ephemeral.payload import vm_initramfs

HOOK = ROOT / "generator/qubes_ephemeral/payload/private-cow.sh"
VM_INITRAMFS = ROOT / "generator/qubes_ephemeral/payload/vm_initramfs.py"
GUEST_COW = ROOT / "tests/vm/guest/private_cow.sh"
GUEST_INIT = ROOT / "tests/vm/guest/qubes_like_init.sh"
MODULE_SETUP = ROOT / "generator/qubes_ephemeral/payload/dracut/module-setup.sh"

# What dom0's VM initramfs holds besides the shell, by where it comes from:
# qubes-linux-utils dracut/simple/module-setup.sh (`inst_multiple`), the same
# list on release4.2, release4.3 and main, which add gptfix (not needed here);
QUBES_VM_SIMPLE = ("readlink", "uname", "grep", "kmod", "modprobe", "ln", "switch_root", "mount", "umount",
                   "mkdir", "rmdir", "sleep", "sfdisk", "mkswap")  # fmt: skip
# dracut's dm module (90dm/module-setup.sh: `inst_multiple dmsetup`), which qubes-vm-simple depends on.
DM = ("dmsetup",)
IMAGE_TOOLS = frozenset(QUBES_VM_SIMPLE + DM)

# Built into dash (Debian's /bin/sh, and the image's: dracut installs the shell /init names) and bash.
BUILTINS = frozenset((
    ".", ":", "[", "alias", "bg", "break", "cd", "command", "continue", "echo", "eval", "exec", "exit", "export",
    "false", "fg", "getopts", "hash", "jobs", "kill", "local", "printf", "pwd", "read", "readonly", "return", "set",
    "shift", "test", "times", "trap", "true", "type", "ulimit", "umask", "unalias", "unset", "wait",
))  # fmt: skip

# Fedora's dracut (dom0 builds its kernels on Fedora) reads its own
# /usr/lib/dracut/dracut.conf.d/01-dist.conf even with `--conf /dev/null
# --confdir ...`; it adds these, if present, "to debug in the rescue shell".
# Qubes' own /init relies on `cat` from there; the hook must not.
FEDORA_DIST_CONF = 'install_optional_items+=" vi /usr/libexec/vi /etc/virc ps grep cat rm chroot "\n'


# --- the commands a shell script runs, read with a small tokenizer ---


class ShellSyntaxError(ValueError):
    """Something the tokenizer does not handle: the test fails rather than miss a command."""


@dataclass
class Script:
    commands: set[str] = field(default_factory=set)  # every command word, as written (a path stays a path)
    functions: set[str] = field(default_factory=set)  # the functions it defines


_OPERATORS = ("&&", "||", ";;", "<<-", "<<", ">>", "<&", ">&", ">|", ";", "&", "|", "(", ")", "<", ">")
_REDIRECTS = {"<<-", "<<", ">>", "<&", ">&", ">|", "<", ">"}
_OPENERS = {"if", "then", "else", "elif", "while", "until", "do", "!", "{"}
_CLOSERS = {"fi", "done", "esac", "}"}
_ASSIGNMENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*=")


def _matching(text: str, start: int, opener: str, closer: str) -> int:
    """Index just past the ``closer`` that matches the ``opener`` before ``start``,
    skipping quotes and nested pairs."""
    depth, i = 1, start
    while i < len(text):
        char = text[i]
        if char == "\\":
            i += 2
            continue
        if char == "'" and opener != "`":
            i = text.index("'", i + 1) + 1
            continue
        if char == '"' and opener != "`":
            i = _end_of_double_quotes(text, i + 1)
            continue
        if opener != "`" and (text.startswith(("$(", "${"), i) or char == "`"):
            i = _skip_expansion(text, i)
            continue
        if text.startswith(opener, i) and opener != closer:
            depth += 1
            i += len(opener)
            continue
        if text.startswith(closer, i):
            depth -= 1
            i += len(closer)
            if depth == 0:
                return i
            continue
        i += 1
    raise ShellSyntaxError(f"no {closer!r} for {opener!r} at {start}")


def _end_of_double_quotes(text: str, i: int) -> int:
    while i < len(text):
        if text[i] == "\\":
            i += 2
        elif text[i] == '"':
            return i + 1
        elif text.startswith("$(", i) or text.startswith("${", i) or text[i] == "`":
            i = _skip_expansion(text, i)
        else:
            i += 1
    raise ShellSyntaxError("unterminated double quotes")


def _skip_expansion(text: str, i: int) -> int:
    if text.startswith("$((", i):
        return _matching(text, i + 3, "((", "))")
    if text.startswith("$(", i):
        return _matching(text, i + 2, "(", ")")
    if text.startswith("${", i):
        return _matching(text, i + 2, "{", "}")
    return _matching(text, i + 1, "`", "`")


def _substitutions(text: str, i: int, end: int) -> Iterator[str]:
    """The command substitutions in text[i:end] (a word or a here-document), outside single quotes."""
    quoted = False
    while i < end:
        char = text[i]
        if char == "\\":
            i += 2
        elif char == '"':
            quoted = not quoted
            i += 1
        elif char == "'" and not quoted:
            i = text.index("'", i + 1) + 1
        elif text.startswith("$((", i):
            inner = _matching(text, i + 3, "((", "))")
            yield from _substitutions(text, i + 3, inner - 2)  # $(( $(cmd) )) runs cmd
            i = inner
        elif text.startswith("$(", i):
            inner = _matching(text, i + 2, "(", ")")
            yield text[i + 2 : inner - 1]
            i = inner
        elif text.startswith("${", i):
            inner = _matching(text, i + 2, "{", "}")
            yield from _substitutions(text, i + 2, inner - 1)
            i = inner
        elif char == "`":
            inner = _matching(text, i + 1, "`", "`")
            yield text[i + 1 : inner - 1].replace("\\`", "`")
            i = inner
        else:
            i += 1


def _unquote(word: str) -> str:
    return re.sub(r"\\(.)", r"\1", word.replace('"', "").replace("'", ""))


def _tokens(text: str, script: Script) -> Iterator[tuple[str, str]]:
    """("word", text), ("op", text) and ("newline", ""); command substitutions are read into ``script``."""
    i, heredocs = 0, []
    while i < len(text):
        char = text[i]
        if text.startswith("\\\n", i):
            i += 2
        elif char in " \t":
            i += 1
        elif char == "\n":
            i += 1
            for delimiter, expands in heredocs:  # the bodies start on the next line
                end = re.compile(rf"^\t*{re.escape(delimiter)}$", re.M).search(text, i)
                if end is None:
                    raise ShellSyntaxError(f"here-document without {delimiter}")
                if expands:
                    for inner in _substitutions(text, i, end.start()):
                        _read(inner, script)
                i = end.end() + 1
            heredocs = []
            yield ("newline", "")
        elif char == "#":
            i = text.find("\n", i) if "\n" in text[i:] else len(text)
        elif (operator := next((op for op in _OPERATORS if text.startswith(op, i)), None)) is not None:
            i += len(operator)
            yield ("op", operator)
            if operator in ("<<", "<<-"):
                while text[i] in " \t":
                    i += 1
                start = i
                while i < len(text) and text[i] not in " \t\n;&|<>()":
                    i += 1
                raw = text[start:i]
                heredocs.append((_unquote(raw), raw == _unquote(raw)))
                yield ("word", raw)
        else:
            start = i
            while i < len(text) and text[i] not in " \t\n;&|<>()":
                if text[i] == "\\":
                    i += 2
                elif text[i] == "'":
                    i = text.index("'", i + 1) + 1
                elif text[i] == '"':
                    i = _end_of_double_quotes(text, i + 1)
                elif text[i] in "$`" and (text.startswith(("$(", "${"), i) or text[i] == "`"):
                    i = _skip_expansion(text, i)
                else:
                    i += 1
            for inner in _substitutions(text, start, i):
                _read(inner, script)
            yield ("word", text[start:i])


def _read(text: str, script: Script) -> None:
    tokens = list(_tokens(text, script))
    expect, case_state, n = True, [], 0  # case_state: a stack of "subject", "in", "pattern", "body"
    while n < len(tokens):
        kind, value = tokens[n]
        n += 1
        if kind == "op" and value in _REDIRECTS:
            n += 1  # its target
            continue
        if case_state and case_state[-1] in ("subject", "in", "pattern"):
            state = case_state[-1]
            if state == "subject" and kind == "word":
                case_state[-1] = "in"
            elif state == "in" and value == "in":
                case_state[-1] = "pattern"
            elif state == "pattern" and value == "esac":
                case_state.pop()
                expect = False
            elif state == "pattern" and value == ")":
                case_state[-1] = "body"
                expect = True
            continue
        if kind == "newline" or (kind == "op" and value in ("&&", "||", ";", "&", "|", "(")):
            expect = True
            continue
        if kind == "op" and value == ";;":
            if not case_state:
                raise ShellSyntaxError(";; outside case")
            case_state[-1] = "pattern"
            continue
        if kind == "op" and value == ")":
            expect = False
            continue
        if not expect:
            if value == "esac" and case_state:
                case_state.pop()
            continue
        word = _unquote(value)
        if value in _OPENERS:
            continue
        if value in _CLOSERS:
            if value == "esac":
                if not case_state:
                    raise ShellSyntaxError("esac outside case")
                case_state.pop()
            expect = False
            continue
        if value == "case":
            case_state.append("subject")
            continue
        if value in ("for", "function", "select", "until") or value.startswith("[["):
            raise ShellSyntaxError(f"{value!r}: not handled by this tokenizer")
        if _ASSIGNMENT.match(value):
            continue
        if value.isdigit() and n < len(tokens) and tokens[n][0] == "op" and tokens[n][1] in _REDIRECTS:
            continue  # a file descriptor: 2>/dev/null
        if n + 1 < len(tokens) and tokens[n] == ("op", "(") and tokens[n + 1] == ("op", ")"):
            script.functions.add(word)
            n += 2
            continue
        if "$" in word or "`" in word:
            raise ShellSyntaxError(f"a command named by an expansion: {value}")
        script.commands.add(word)
        if word == "command" and n < len(tokens) and tokens[n][1] in ("-v", "-V"):
            expect = False  # a look-up, not a run
        elif word in ("exec", "command"):
            expect = True
        else:
            expect = False


def read_script(text: str) -> Script:
    script = Script()
    _read(text, script)
    return script


def external_commands(script: Script) -> set[str]:
    return {name for name in script.commands if name not in BUILTINS and name not in script.functions}


def test_the_tokenizer_finds_commands_in_every_place_they_hide() -> None:
    sample = r"""
f() { x=$(cat "$(basename "$1")")/ro; }
if ! [ -b "$d" ]; then sed -i -e 's|a|b|' "$1" 2>/dev/null || mv a b; fi
y="`uname -r`"; z=${y:-$(head -n1 f)} n=$((1 + $(wc -l <f)))
case $y in (1|2) tr a b ;; *) od -c ;; esac
sfdisk -q /dev/xvdc >/dev/null <<EOF
xvdc1: $(awk 1 g)
EOF
while read -r l; do echo "$l"; done <f | sort
exec /sbin/switch_root / /sbin/init
command -v qe >/dev/null && f
"""
    script = read_script(sample)
    assert script.functions == {"f"}
    expected = {"cat", "basename", "sed", "mv", "uname", "head", "wc", "tr", "od", "sfdisk", "awk", "sort",
                "/sbin/switch_root"}  # fmt: skip
    assert external_commands(script) == expected


def test_the_hook_calls_no_command_the_image_lacks() -> None:
    script = read_script(HOOK.read_text())
    assert {"qe_private_cow_setup", "qe_private_cow_fstab"} <= script.functions
    extra = external_commands(script) - IMAGE_TOOLS
    assert not extra, f"private-cow.sh runs {sorted(extra)}, which dom0's VM initramfs does not hold"


def test_the_lines_added_to_init_call_no_command_the_image_lacks() -> None:
    script = read_script(HOOK.read_text() + "\n" + vm_initramfs.BEFORE + "\n" + vm_initramfs.AFTER + "\n")
    assert not external_commands(script) - IMAGE_TOOLS


def test_the_vm_suite_restricts_the_cow_run_to_the_same_tools() -> None:
    line = next(line for line in GUEST_COW.read_text().splitlines() if line.startswith("IMAGE_TOOLS="))
    assert set(line.split("=", 1)[1].strip('"').split()) == IMAGE_TOOLS
    # The stand-in for Qubes' /init it runs that way gets by with them too.
    assert not external_commands(read_script(GUEST_INIT.read_text())) - IMAGE_TOOLS


def test_the_dracut_module_installs_what_the_hook_runs() -> None:
    """For qubes that boot their own kernel: the module puts the hook's commands in the image."""
    text = MODULE_SETUP.read_text()
    installed = {word for line in re.findall(r"^\s*inst_multiple (.*)$", text, re.M) for word in line.split()}
    assert external_commands(read_script(HOOK.read_text())) <= installed - {"-o"}
    assert "instmods dm_snapshot" in text


# --- the hook, run under dash with only the image's tools ---

STUB_DMSETUP = r"""#!{sh}
# Stands in for dmsetup: records its calls (and the tables it is given) in $STUB_LOG.
echo "dmsetup $*" >>"$STUB_LOG"
case $1 in
    targets)
        [ -n "$STUB_NO_SNAPSHOT" ] || echo "snapshot         v1.16.0"
        echo "linear           v1.4.0" ;;
    table)
        [ -n "$STUB_ROOT_TABLE" ] || exit 1
        echo "$STUB_ROOT_TABLE" ;;
    create)
        [ -z "$STUB_CREATE_FAILS" ] || exit 1
        while IFS= read -r line; do echo "  table $line" >>"$STUB_LOG"; done ;;
    info)
        case "$*" in *qe-cow-root) echo 253:1 ;; *) echo 253:2 ;; esac ;;
esac
"""
STUB_MODPROBE = """#!{sh}
# Stands in for modprobe: records its calls.
echo "modprobe $*" >>"$STUB_LOG"
"""


@dataclass
class Run:
    rc: int
    stderr: str
    calls: list[str]
    kmsg: str


@dataclass
class Sandbox:
    """A stand-in VM: PATH with IMAGE_TOOLS only, a sysfs, a private and a spare device."""

    root: Path
    bin: Path
    private: str
    spare: str
    env: dict[str, str]

    def device(self, path: str, dev: str, size: int, ro: int) -> None:
        name = os.path.basename(os.path.realpath(path))
        folder = self.root / "sys/class/block" / name
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "ro").write_text(f"{ro}\n")
        (folder / "dev").write_text(f"{dev}\n")
        self.sectors(dev, size)

    def sectors(self, dev: str, size: int) -> None:
        (self.root / "sys/dev/block" / dev).mkdir(parents=True, exist_ok=True)
        (self.root / "sys/dev/block" / dev / "size").write_text(f"{size}\n")

    def run(self, call: str, **env: str) -> Run:
        log, kmsg = self.root / "calls", self.root / "kmsg"
        log.write_text("")
        kmsg.write_text("")
        result = subprocess.run([shutil.which("dash") or "dash", "-c", f'. "{HOOK}"; {call}'], cwd=self.root,
                                env={**self.env, **env}, capture_output=True, text=True, timeout=60, check=False)  # fmt: skip
        assert "not found" not in result.stderr, f"a command the image lacks: {result.stderr}"
        return Run(result.returncode, result.stderr, log.read_text().splitlines(), kmsg.read_text())


def _block_devices(folder: Path) -> list[str]:
    """Two block device nodes for `[ -b ]`: made here (as root), else two of the host's /dev
    (only their names are used: the hook reads the stand-in sysfs, never the device)."""
    folder.mkdir()
    try:
        for number, name in enumerate(("xvdb", "xvdc3")):
            os.mknod(folder / name, 0o600 | stat.S_IFBLK, os.makedev(7, 250 + number))
        return [str(folder / "xvdb"), str(folder / "xvdc3")]
    except PermissionError:
        pass
    found = sorted(str(p) for p in Path("/dev").iterdir() if p.is_block_device())[:2]
    if len(found) < 2:
        pytest.skip("needs two block device nodes: not root (mknod) and fewer than two in /dev")
    return found


@pytest.fixture
def sandbox(tmp_path: Path) -> Sandbox:
    require("dash", "readlink", "sleep")
    dash = shutil.which("dash")
    assert dash
    bin_ = tmp_path / "bin"
    bin_.mkdir()
    for tool in sorted(IMAGE_TOOLS - {"dmsetup", "modprobe"}):
        if found := shutil.which(tool):
            (bin_ / tool).symlink_to(found)
    for name, text in (("dmsetup", STUB_DMSETUP), ("modprobe", STUB_MODPROBE)):
        (bin_ / name).write_text(text.replace("{sh}", dash))
        (bin_ / name).chmod(0o755)
    private, spare = _block_devices(tmp_path / "dev")
    (tmp_path / "mapper").mkdir()
    env = {"PATH": str(bin_), "QE_PRIVATE": private, "QE_SPARE": spare, "QE_SYS": str(tmp_path / "sys"),
           "QE_MAPPER": str(tmp_path / "mapper"), "QE_KMSG": str(tmp_path / "kmsg"),
           "STUB_LOG": str(tmp_path / "calls")}  # fmt: skip
    return Sandbox(tmp_path, bin_, private, spare, env)


ROOT_TABLE = "0 20971520 snapshot 202:0 202:34 N 16"


def test_read_only_private_volume_is_found_without_cat_and_gets_a_copy_on_write(sandbox: Sandbox) -> None:
    sandbox.device(sandbox.private, "202:16", 4194304, ro=1)
    sandbox.sectors("202:34", 10000000)
    run = sandbox.run("qe_private_cow_setup", STUB_ROOT_TABLE=ROOT_TABLE)
    assert run.rc == 0, run.stderr
    # Root's copy-on-write (xvdc2, 202:34) split in two, the first half for root, the second for /rw.
    assert run.calls == [
        "modprobe dm_snapshot", "dmsetup targets", "dmsetup table dmroot",
        "dmsetup create qe-cow-root", "  table 0 5000000 linear 202:34 0",
        "dmsetup create qe-cow-private", "  table 0 5000000 linear 202:34 5000000",
        "dmsetup info -c --noheadings -o major,minor --separator : qe-cow-root",
        "dmsetup suspend dmroot", "dmsetup reload dmroot --table 0 20971520 snapshot 202:0 253:1 N 16",
        "dmsetup resume dmroot",
        "dmsetup info -c --noheadings -o major,minor --separator : qe-cow-private",
        "dmsetup create dmprivate", "  table 0 4194304 snapshot 202:16 253:2 N 16",
        "dmsetup mknodes dmprivate",
    ]  # fmt: skip
    assert "/rw writes go to a copy-on-write layer" in run.stderr
    assert "<5>qubes-ephemeral: /rw writes go to a copy-on-write layer" in run.kmsg


def test_with_a_writable_root_the_spare_space_holds_the_copy_on_write(sandbox: Sandbox) -> None:
    sandbox.device(sandbox.private, "202:16", 4194304, ro=1)
    sandbox.device(sandbox.spare, "202:35", 777216, ro=0)
    run = sandbox.run("qe_private_cow_setup")
    assert run.rc == 0, run.stderr
    assert "  table 0 777216 linear 202:35 0" in run.calls
    assert run.calls[-2:] == ["  table 0 4194304 snapshot 202:16 253:2 N 16", "dmsetup mknodes dmprivate"]


def test_a_writable_private_volume_is_left_alone_silently(sandbox: Sandbox) -> None:
    sandbox.device(sandbox.private, "202:16", 4194304, ro=0)
    run = sandbox.run("qe_private_cow_setup", STUB_ROOT_TABLE=ROOT_TABLE)
    assert (run.rc, run.stderr, run.calls, run.kmsg) == (0, "", [], "")


@pytest.mark.parametrize("missing", ["dmsetup", "snapshot target"])
def test_a_missing_tool_fails_closed_and_says_so(sandbox: Sandbox, missing: str) -> None:
    sandbox.device(sandbox.private, "202:16", 4194304, ro=1)
    sandbox.sectors("202:34", 10000000)
    env = {"STUB_ROOT_TABLE": ROOT_TABLE}
    if missing == "dmsetup":
        (sandbox.bin / "dmsetup").unlink()
    else:
        env["STUB_NO_SNAPSHOT"] = "1"
    run = sandbox.run("qe_private_cow_setup", **env)
    assert run.rc != 0
    expected = "dmsetup is missing" if missing == "dmsetup" else "the device-mapper snapshot target (dm_snapshot) is"
    assert f"qubes-ephemeral: {expected}" in run.stderr and "/rw stays read-only" in run.stderr
    assert f"<3>qubes-ephemeral: {expected}" in run.kmsg
    assert not [call for call in run.calls if call.startswith(("dmsetup create", "dmsetup reload"))]


def test_an_unreadable_read_only_flag_is_reported_not_ignored(sandbox: Sandbox) -> None:
    sandbox.device(sandbox.private, "202:16", 4194304, ro=1)
    name = os.path.basename(os.path.realpath(sandbox.private))
    (sandbox.root / "sys/class/block" / name / "ro").unlink()
    run = sandbox.run("qe_private_cow_setup")
    assert run.rc != 0 and "whether" in run.stderr and "is read-only is unknown" in run.stderr
    assert not [call for call in run.calls if call.startswith("dmsetup create")]


def test_a_failed_mapping_fails_closed_and_says_so(sandbox: Sandbox) -> None:
    sandbox.device(sandbox.private, "202:16", 4194304, ro=1)
    sandbox.sectors("202:34", 10000000)
    run = sandbox.run("qe_private_cow_setup", STUB_ROOT_TABLE=ROOT_TABLE, STUB_CREATE_FAILS="1")
    assert run.rc != 0
    assert "cannot split the copy-on-write space; /rw stays read-only" in run.stderr


FSTAB = (
    "/dev/mapper/dmroot / ext4 defaults,discard,noatime 1 1\n"
    "{dev}\t /rw auto noauto,defaults,discard,nosuid,nodev 1 2\n"
    "{dev}x /rw auto noauto 1 2\n"
    "  {dev} /rw auto noauto 1 2\n"
    "{dev} /rwx auto noauto 1 2\n"
    "# a comment with a \\ backslash and  two spaces\n"
    "/dev/xvdi /mnt/removable auto noauto,user,rw 0 0"  # the last line has no newline
)


def test_the_fstab_line_of_rw_is_changed_without_sed(sandbox: Sandbox) -> None:
    (sandbox.root / "mapper/dmprivate").symlink_to(sandbox.private)
    fstab = sandbox.root / "sysroot/etc/fstab"
    fstab.parent.mkdir(parents=True)
    fstab.write_text(FSTAB.format(dev=sandbox.private))
    fstab.chmod(0o640)
    inode = fstab.stat().st_ino
    run = sandbox.run(f'qe_private_cow_fstab "{sandbox.root}/sysroot"')
    assert run.rc == 0, run.stderr
    expected = FSTAB.format(dev=sandbox.private).replace(
        f"\n{sandbox.private}\t /rw ", "\n/dev/mapper/dmprivate\t /rw "
    )
    assert fstab.read_text() == expected
    assert fstab.stat().st_ino == inode and stat.S_IMODE(fstab.stat().st_mode) == 0o640, "changed in place"
    # Again: already done, nothing to change.
    assert sandbox.run(f'qe_private_cow_fstab "{sandbox.root}/sysroot"').rc == 0
    assert fstab.read_text() == expected


def test_the_fstab_is_left_alone_without_the_copy_on_write_or_without_a_rw_line(sandbox: Sandbox) -> None:
    fstab = sandbox.root / "sysroot/etc/fstab"
    fstab.parent.mkdir(parents=True)
    fstab.write_text(FSTAB.format(dev=sandbox.private))
    run = sandbox.run(f'qe_private_cow_fstab "{sandbox.root}/sysroot"')
    assert (run.rc, run.stderr) == (0, "") and fstab.read_text() == FSTAB.format(dev=sandbox.private)
    (sandbox.root / "mapper/dmprivate").symlink_to(sandbox.private)
    other = FSTAB.format(dev="/dev/xvdz")
    fstab.write_text(other)
    run = sandbox.run(f'qe_private_cow_fstab "{sandbox.root}/sysroot"')
    assert run.rc != 0 and "no /rw line for" in run.stderr and "/rw stays read-only" in run.stderr
    assert fstab.read_text() == other


# --- dom0's image, built for real (QUBES_LINUX_UTILS) ---

BRANCHES = ("release4.2", "release4.3", "main")
QUBES_DRIVERS = "xenblk xen-blkfront cdrom ext4 jbd2 crc16 dm_snapshot"  # kernel-qubes-vm's spec passes these with -d
EXECUTABLE_DIRS = ("bin", "sbin", "usr/bin", "usr/sbin")


@dataclass
class Image:
    branch: str
    path: Path
    root: Path  # unpacked
    tools: set[str]
    init: str  # Qubes' /init (dracut/simple/init.sh)


def _qubes_linux_utils() -> Path:
    value = os.environ.get("QUBES_LINUX_UTILS")
    if not value:
        pytest.skip("set QUBES_LINUX_UTILS to a clone of QubesOS/qubes-linux-utils to build dom0's VM initramfs "
                    "with dracut and its qubes-vm-simple module")  # fmt: skip
    return Path(value)


def _installed_kernel() -> str:
    for vmlinuz in sorted(Path("/boot").glob("vmlinuz-*"), reverse=True):
        version = vmlinuz.name.removeprefix("vmlinuz-")
        if (Path("/lib/modules") / version / "modules.dep").exists():
            return version
    pytest.skip("needs an installed kernel (/boot/vmlinuz-VERSION with /lib/modules/VERSION)")


def _module(repo: Path, branch: str, folder: Path) -> None:
    """qubes-linux-utils' dracut/simple of ``branch`` (a clone's remote branch, or a local one) into folder."""
    for ref in (f"origin/{branch}", branch):
        archive = subprocess.run(["git", "-C", str(repo), "archive", ref, "dracut/simple"], capture_output=True,
                                 check=False)  # fmt: skip
        if archive.returncode == 0:
            subprocess.run(["tar", "-x", "-C", str(folder)], input=archive.stdout, check=True)
            return
    pytest.fail(f"QUBES_LINUX_UTILS={repo}: no branch {branch} ({archive.stderr.decode().strip()})")


def _unpack(data: bytes, root: Path) -> None:
    """Every archive of an initramfs, in order, as the kernel unpacks it (the tool's reader)."""
    for archive in vm_initramfs.archives(data):
        for entry in archive:
            path = root / entry.name.lstrip("./")
            kind = entry.mode & 0o170000
            if not entry.name.strip("./"):
                continue
            if kind == stat.S_IFDIR:
                path.mkdir(parents=True, exist_ok=True)
            elif kind == stat.S_IFLNK:
                path.parent.mkdir(parents=True, exist_ok=True)
                if path.is_symlink() or path.exists():
                    path.unlink()
                path.symlink_to(entry.data.decode())
            elif kind == stat.S_IFREG:
                path.parent.mkdir(parents=True, exist_ok=True)
                if path.is_symlink():
                    path.unlink()
                path.write_bytes(entry.data)
                path.chmod(entry.mode & 0o7777)


def _tools(root: Path, extra: Path) -> set[str]:
    names = set()
    for folder in [*EXECUTABLE_DIRS, str(extra).lstrip("/")]:
        path = root / folder
        while path.is_symlink():  # bin -> usr/bin, inside the image
            path = path.parent / os.readlink(path)
        if path.is_dir():
            names |= {p.name for p in path.iterdir() if not p.is_dir()}
    return names


def build(tmp: Path, repo: Path, branch: str, fedora: bool) -> Image:
    """dom0's VM initramfs as kernel-qubes-vm's spec makes it: dracut with only the modules
    kernel-modules and qubes-vm-simple, no configuration; with ``fedora``, plus the options Fedora's
    dracut reads from its own folder."""
    require("dracut", "git", "tar")
    system = Path("/usr/lib/dracut")
    if not (system / "modules.d/90dm").is_dir():
        pytest.skip("needs dracut's modules in /usr/lib/dracut (Debian: dracut-core)")
    kernel = _installed_kernel()
    base = tmp / "dracut"  # dracut's own folder, with qubes-vm-simple added: nothing is installed on the host
    (base / "modules.d").mkdir(parents=True)
    for item in system.iterdir():
        if item.name not in ("modules.d", "dracut.conf.d"):
            (base / item.name).symlink_to(item)
    for module in (system / "modules.d").iterdir():
        (base / "modules.d" / module.name).symlink_to(module)
    source = tmp / "source"
    source.mkdir()
    _module(repo, branch, source)
    shutil.copytree(source / "dracut/simple", base / "modules.d/90qubes-vm-simple")
    if fedora:
        (base / "dracut.conf.d").mkdir()
        (base / "dracut.conf.d/01-dist.conf").write_text(FEDORA_DIST_CONF)
    # gptfix (release4.3 and later) is qubes-utils' own program, not in Debian: a stand-in,
    # which dracut installs at the path it finds it.
    standin = tmp / "gptfix-standin"
    standin.mkdir()
    (standin / "gptfix").write_text("#!/bin/sh\n# stands in for qubes-utils' gptfix\nexit 4\n")
    (standin / "gptfix").chmod(0o755)
    (tmp / "no-conf").mkdir()
    image = tmp / "initramfs"
    result = subprocess.run(
        ["dracut", "--no-hostonly", "--nomdadmconf", "--nolvmconf", "--modules", "kernel-modules qubes-vm-simple",
         "--conf", "/dev/null", "--confdir", str(tmp / "no-conf"), "-d", QUBES_DRIVERS, "--force", str(image), kernel],
        env={**os.environ, "dracutbasedir": str(base), "DRACUT_PATH": f"/usr/sbin /usr/bin /sbin /bin {standin}",
             "TMPDIR": str(tmp)},
        capture_output=True, text=True, check=False, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0 and image.exists(), result.stdout + result.stderr
    assert "ERROR" not in result.stderr and "FAILED" not in result.stderr, result.stderr
    root = tmp / "root"
    _unpack(image.read_bytes(), root)
    init = (root / "init").read_text()
    assert init == (source / "dracut/simple/init.sh").read_text(), "qubes-vm-simple's init.sh is /init"
    return Image(branch, image, root, _tools(root, standin), init)


@pytest.fixture(scope="module", params=BRANCHES)
def image(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Image:
    repo = _qubes_linux_utils()
    return build(tmp_path_factory.mktemp(f"image-{request.param}"), repo, request.param, fedora=False)


def test_dom0_image_holds_every_command_the_hook_and_the_patched_init_lines_need(image: Image) -> None:
    print(f"\n{image.branch}: {' '.join(sorted(image.tools))}")
    needed = external_commands(read_script(HOOK.read_text() + "\n" + vm_initramfs.BEFORE + "\n" + vm_initramfs.AFTER))
    assert needed <= image.tools, f"missing from the {image.branch} image: {sorted(needed - image.tools)}"
    assert image.tools >= IMAGE_TOOLS, f"IMAGE_TOOLS names what the image lacks: {sorted(IMAGE_TOOLS - image.tools)}"
    assert "sh" in image.tools, "the shell /init names"


def test_dom0_image_as_fedora_builds_it_holds_every_command_qubes_init_needs(tmp_path: Path) -> None:
    repo = _qubes_linux_utils()
    for branch in BRANCHES:
        built = build(tmp_path / branch, repo, branch, fedora=True)
        needed = {os.path.basename(name) for name in external_commands(read_script(built.init))}
        assert needed <= built.tools, f"{branch}: Qubes' /init needs {sorted(needed - built.tools)}"
        assert "cat" in needed, "Qubes' /init reads the read-only flag with cat, from Fedora's dracut options"


def test_the_tool_patches_the_dom0_image(image: Image, tmp_path: Path) -> None:
    path = tmp_path / "initramfs"
    shutil.copyfile(image.path, path)
    result = subprocess.run([sys.executable, str(VM_INITRAMFS), "apply", str(path), "--hook", str(HOOK)],
                            capture_output=True, text=True, check=False)  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert vm_initramfs.status(path) == "patched"
    data = path.read_bytes()
    init = vm_initramfs.read_file(data, "init")
    hook = vm_initramfs.read_file(data, vm_initramfs.HOOK_NAME)
    assert init is not None and hook is not None and hook.data == HOOK.read_bytes()
    lines = init.data.decode().splitlines()
    anchor = lines.index(vm_initramfs.ANCHOR)
    assert lines[anchor - 1] == vm_initramfs.BEFORE and lines[anchor + 1] == vm_initramfs.AFTER
    assert init.data.decode().replace(lines[anchor - 1] + "\n", "").replace(lines[anchor + 1] + "\n", "") == image.init


# In a mount namespace of its own: the host's /dev (loop devices) and /sys in the image, then the image's sh.
CHROOT_RUN = r"""set -e
mount --bind /dev "$1/dev"
mount --bind /sys "$1/sys"
exec chroot "$1" /bin/sh -c "$2"
"""


def test_the_hook_runs_inside_the_dom0_image(image: Image, tmp_path: Path) -> None:
    """The patched image's own dash and tools, chrooted, with loop devices for the private volume:
    the read-only check and the fstab edit, for real. Creating the copy-on-write needs the kernel's
    device-mapper: where it is missing the hook must fail closed (the VM suite creates it for real)."""
    if os.geteuid() != 0:
        pytest.skip("chroot and loop devices need root")
    require("losetup", "unshare", "chroot", "mount")
    patched = tmp_path / "initramfs"
    shutil.copyfile(image.path, patched)
    vm_initramfs.apply(patched, HOOK.read_bytes())
    root = tmp_path / "root"
    _unpack(patched.read_bytes(), root)
    assert (root / vm_initramfs.HOOK_NAME).read_bytes() == HOOK.read_bytes()
    devices = []

    def attach(name: str, *options: str) -> str:
        disk = tmp_path / name
        with disk.open("wb") as out:
            out.truncate(8 << 20)
        result = subprocess.run(["losetup", "-f", "--show", *options, str(disk)], capture_output=True, text=True,
                                check=False)  # fmt: skip
        if result.returncode != 0:
            pytest.skip(f"no loop device here: {result.stderr.strip()}")
        devices.append(result.stdout.strip())
        return devices[-1]

    def chroot(script: str, **env: str) -> subprocess.CompletedProcess[str]:
        # Only these variables, and PATH as the kernel's /init gets it from the shell: the image's folders.
        # No mapping of this host is named: a root mapping or spare space that does not exist.
        env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "QE_ROOT_MAP": "qe-test-no-such-mapping",
               "QE_SPARE": "/qe-test-no-such-device", "QE_KMSG": "/qe-test-no-kmsg", **env}  # fmt: skip
        return subprocess.run(["unshare", "-m", "sh", "-c", CHROOT_RUN, "chroot-run", str(root),
                               f". /{vm_initramfs.HOOK_NAME}; {script}"],
                              env=env, capture_output=True, text=True, check=False, timeout=120)  # fmt: skip

    try:
        readonly, writable = attach("private-ro.img", "-r"), attach("private-rw.img")
        run = chroot("qe_private_cow_setup", QE_PRIVATE=readonly)
        assert "not found" not in run.stderr, run.stderr
        assert run.returncode != 0, run.stderr
        dm_works = "dmsetup is missing" not in run.stderr and "not available" not in run.stderr
        # Without a root copy-on-write or spare space here, it cannot go further: every way fails closed.
        assert "/rw stays read-only" in run.stderr, run.stderr
        print(f"\n{image.branch}, read-only: {run.stderr.strip()} (device-mapper usable here: {dm_works})")
        run = chroot("qe_private_cow_setup", QE_PRIVATE=writable)
        assert (run.returncode, run.stderr) == (0, ""), "a writable private volume is left alone"
        # The fstab edit, with the image's shell and tools.
        (root / "qe-mapper").mkdir()
        (root / "qe-mapper/dmprivate").symlink_to(readonly)
        (root / "sysroot/etc").mkdir(parents=True, exist_ok=True)
        fstab = FSTAB.format(dev=readonly)
        (root / "sysroot/etc/fstab").write_text(fstab)
        run = chroot("qe_private_cow_fstab /sysroot", QE_PRIVATE=readonly, QE_MAPPER="/qe-mapper")
        assert (run.returncode, run.stderr) == (0, "")
        assert (root / "sysroot/etc/fstab").read_text() == fstab.replace(f"\n{readonly}\t /rw ",
                                                                          "\n/dev/mapper/dmprivate\t /rw ")  # fmt: skip
    finally:
        for device in devices:
            subprocess.run(["losetup", "-d", device], check=False)

"""What dom0 keeps of its disposables elsewhere (dom0/remnants.py): found through the
audit's read-only host, cleared on request with every other byte kept.

The files live in a folder standing for dom0's root; the VM suite does the same
on a real system (test_the_audit_names_dom0s_remnants_and_clears_them_alone), and
test_cli_clear_in_a_private_mount_namespace drives the real command at /.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import PILLAR_EXAMPLE, ROOT
from hypothesis import given
from hypothesis import strategies as st
from qubes_ephemeral import cli
from qubes_ephemeral.api import describe
from qubes_ephemeral.dom0 import audit, remnants
from qubes_ephemeral.dom0.probe import Host
from qubes_ephemeral.render.manifest import render


class TreeHost(Host):
    """The audit's host, with its files under ``root`` (commands are never run here)."""

    def __init__(self, root: Path) -> None:
        super().__init__()
        self.root = root

    def _at(self, path: str) -> str:
        return str(self.root) + path

    def read(self, path: str, follow_links: bool = True, limit: int | None = None) -> str | None:
        return super().read(self._at(path), follow_links, limit)

    def listdir(self, path: str) -> list[str]:
        return super().listdir(self._at(path))

    def readlink(self, path: str) -> str | None:
        return super().readlink(self._at(path))

    def is_dir(self, path: str) -> bool:
        return super().is_dir(self._at(path))

    def is_file(self, path: str) -> bool:
        return super().is_file(self._at(path))

    def exists(self, path: str) -> bool:
        return super().exists(self._at(path))


HISTORY = b"#1700000000\nqvm-run disp4242 firefox\nls -l /srv\r\nqvm-run display-test xterm\nqvm-run -p disp9 'cat x'"


NOTIFYD_XML = b"""<?xml version="1.0" encoding="UTF-8"?>
<channel name="xfce4-notifyd" version="1.0">
  <property name="applications" type="empty">
    <property name="known_applications" type="array">
      <value type="string" value="Qube: work"/>
      <value type="string" value="Qube: disp4242"/>
    </property>
  </property>
</channel>
"""
QUBES_XML = (
    b'<qubes><domain class="AppVM"><properties><property name="name">work</property></properties></domain>'
    b'<domain class="DispVM"><properties><property name="name">disp7</property></properties></domain></qubes>\n'
)


def plant(root: Path) -> dict[str, bytes]:
    """A dom0 with files of each kind, and what must never be touched; returns the latter."""
    files = {
        "root/.bash_history": HISTORY,
        "home/user/.zsh_history": b": 1700000000:0;qvm-run disp12 xterm\n",
        "home/user/.cache/xfce4/appfinder/history": b"qvm-run disp4242 xterm\nthunar\n",
        "home/user/.cache/xfce4/notifyd/log": b"[2026-12-04T10:00:00]\nsummary=Qube disp4242 has started\n",
        "home/user/.config/xfce4/xfconf/xfce-perchannel-xml/xfce4-notifyd.xml": NOTIFYD_XML,
        "home/user/.cache/sessions/xfwm4-2a7f.state": b"[CLIENT] 2a7f\n  [WM_NAME] [disp4242] Firefox\n",
        "home/user/.cache/sessions/xfce4-session-dom0:0": b"[Session: Default]\nClient0_Command=xfwm4\n",
        "home/user/.cache/sessions/thumbs-dom0:0/Default.png": b"\x89PNG",
        "home/user/.xsession-errors": b"qubes-guid: disp4242 started\n",
        "var/lib/systemd/coredump/core.qubes-guid.0.1.2.3.zst": b"\x28\xb5\x2f\xfd dump",
        "var/spool/abrt/ccpp-2026-12-04-10:00:00-1234/cmdline": b"qubes-guid -N disp4242\n",
        "var/lib/qubes/qubes.xml": QUBES_XML,
        "var/log/qubes/guid.disp4242.log": b"",
        "var/log/qubes/guid.disp4242.log.old": b"",
        "var/log/xen/console/guest-disp4242.log": b"[2026-12-04] Linux version\n",
        "var/log/xen/console/guest-disp4242-dm.log": b"stubdom\n",
        "var/log/libvirt/libxl/disp4242.log": b"Domain start\n",
        "etc/libvirt/libxl/disp4242.xml": b"<domain><name>disp4242</name></domain>\n",
        "var/lib/qubes/backup/qubes-2026-12-01-10:00:00.xml": QUBES_XML.replace(b"disp7", b"disp4242"),
        "etc/lvm/archive/qubes_dom0_00001-1.vg": b'description = "lvcreate --name=vm-disp4242-private"\n',
        # Never to be touched: look-alikes, files beside, a running disposable's files, qubes that are
        # not disposables, and what lies behind symbolic links.
        "home/user/.cache/xfce4/notifyd/settings": b"disp4242 in a file of another name\n",
        "home/user/.cache/sessions/thunar-2a7f": b"disp4242\n",
        "home/user/.bash_history.bak": b"qvm-run disp4242 firefox\n",
        "var/lib/systemd/coredump/README": b"disp4242\n",
        "var/log/qubes/qrexec.disp7.log": b"running\n",
        "var/log/qubes/guid.work.log": b"disp4242\n",
        "var/log/qubes/qubes.log": b"disp4242\n",
        "var/log/xen/console/hypervisor.log": b"disp4242\n",
        "etc/libvirt/libxl/disp7.xml": b"<domain><name>disp7</name></domain>\n",
        "etc/libvirt/libxl/work.xml": b"<domain><name>work</name></domain>\n",
        # A qube named disp7-dev is no disposable; the running disp7's device model keeps its log.
        "var/log/qubes/guid.disp7-dev.log": b"running\n",
        "etc/libvirt/libxl/disp7-dev.xml": b"<domain><name>disp7-dev</name></domain>\n",
        "var/log/xen/console/guest-disp7-dm.log": b"running\n",
        "var/lib/qubes/backup/qubes-2026-12-02-10:00:00.xml": QUBES_XML.replace(b"disp7", b"personal"),
        "etc/lvm/archive/qubes_dom0_00002-2.vg": b'description = "lvcreate --name=vm-work-private"\n',
        "etc/shadow": b"root:x:disp1:\n",
        "srv/elsewhere/xfce4/notifyd/log": b"disp4242, not ours\n",
        "srv/elsewhere/sessions/xfwm4-1.state": b"disp4242\n",
    }
    for name, data in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
    (root / "home/linked").mkdir()
    (root / "home/linked/.cache").symlink_to(root / "srv/elsewhere")  # a home whose ~/.cache leads elsewhere
    (root / "home/linked/.bash_history").symlink_to(root / "etc/shadow")  # root must never edit /etc/shadow
    return {name: data for name, data in files.items() if "/" + name not in EXPECTED}


EXPECTED = {
    "/root/.bash_history", "/home/user/.zsh_history", "/home/user/.cache/xfce4/appfinder/history",
    "/home/user/.cache/xfce4/notifyd/log", "/home/user/.config/xfce4/xfconf/xfce-perchannel-xml/xfce4-notifyd.xml",
    "/home/user/.cache/sessions/xfwm4-2a7f.state", "/home/user/.cache/sessions/xfce4-session-dom0:0",
    "/home/user/.cache/sessions/thumbs-dom0:0/Default.png", "/home/user/.xsession-errors",
    "/var/lib/systemd/coredump/core.qubes-guid.0.1.2.3.zst", "/var/spool/abrt/ccpp-2026-12-04-10:00:00-1234/cmdline",
    "/var/log/qubes/guid.disp4242.log", "/var/log/qubes/guid.disp4242.log.old",
    "/var/log/xen/console/guest-disp4242.log", "/var/log/xen/console/guest-disp4242-dm.log",
    "/var/log/libvirt/libxl/disp4242.log", "/etc/libvirt/libxl/disp4242.xml",
    "/var/lib/qubes/backup/qubes-2026-12-01-10:00:00.xml", "/etc/lvm/archive/qubes_dom0_00001-1.vg",
}  # fmt: skip
REMOVED_WHOLE = EXPECTED - {
    "/root/.bash_history", "/home/user/.zsh_history", "/home/user/.cache/xfce4/appfinder/history",
    "/home/user/.config/xfce4/xfconf/xfce-perchannel-xml/xfce4-notifyd.xml"}  # fmt: skip


def found_paths(root: Path) -> set[str]:
    host = TreeHost(root)
    return {found.path for remnant in remnants.REMNANTS for found in remnants.find(host, remnant)}


def digest(root: Path, names: dict[str, bytes]) -> dict[str, str]:
    return {name: hashlib.sha256((root / name).read_bytes()).hexdigest() for name in names}


def test_each_kind_is_found_and_nothing_behind_a_symbolic_link(tmp_path: Path) -> None:
    plant(tmp_path)
    assert found_paths(tmp_path) == EXPECTED


def test_clearing_removes_what_was_found_and_keeps_every_other_byte(tmp_path: Path) -> None:
    untouched = plant(tmp_path)
    before = digest(tmp_path, untouched)
    host = TreeHost(tmp_path)
    os.chmod(tmp_path / "root/.bash_history", 0o600)
    results = {found.path: remnants.clear(found, str(tmp_path))
               for r in remnants.REMNANTS for found in remnants.find(host, r)}  # fmt: skip
    assert {path for path, result in results.items() if result == "removed"} == REMOVED_WHOLE, results
    assert (
        results["/root/.bash_history"] == "3 lines removed" and results["/home/user/.zsh_history"] == "1 line removed"
    )
    # The anti-test is the first search: the same search now finds nothing.
    assert found_paths(tmp_path) == set()
    assert digest(tmp_path, untouched) == before
    assert not any((tmp_path / path[1:]).exists() for path in REMOVED_WHOLE)
    assert (tmp_path / "root/.bash_history").read_bytes() == b"ls -l /srv\r\nqvm-run display-test xterm\n"
    assert (tmp_path / "root/.bash_history").stat().st_mode & 0o777 == 0o600
    assert (tmp_path / "home/user/.zsh_history").read_bytes() == b""
    assert (tmp_path / "home/user/.cache/xfce4/appfinder/history").read_bytes() == b"thunar\n"
    notifyd = tmp_path / "home/user/.config/xfce4/xfconf/xfce-perchannel-xml/xfce4-notifyd.xml"
    assert notifyd.read_bytes() == NOTIFYD_XML.replace(b'      <value type="string" value="Qube: disp4242"/>\n', b"")
    assert (tmp_path / "home/linked/.bash_history").is_symlink()
    leftovers = [p for p in tmp_path.rglob("*qubes-ephemeral-clear*")]
    assert leftovers == []


def test_a_folder_swapped_for_a_symbolic_link_after_the_search_is_refused(tmp_path: Path) -> None:
    untouched = plant(tmp_path)
    before = digest(tmp_path, untouched)
    found = [f for f in remnants.find(TreeHost(tmp_path), remnants.BY_ID["notification-log"])]
    assert [f.path for f in found] == ["/home/user/.cache/xfce4/notifyd/log"]
    (tmp_path / "home/user/.cache/xfce4").rename(tmp_path / "home/user/.cache/xfce4.moved")
    (tmp_path / "home/user/.cache/xfce4").symlink_to(tmp_path / "srv/elsewhere")
    with pytest.raises(remnants.Refused, match="symbolic link"):
        remnants.clear(found[0], str(tmp_path))
    moved = {name: data for name, data in untouched.items() if not name.startswith("home/user/.cache/xfce4/")}
    assert digest(tmp_path, moved) == {name: before[name] for name in moved}


def test_a_file_swapped_for_a_symbolic_link_after_the_search_is_refused(tmp_path: Path) -> None:
    plant(tmp_path)
    found = remnants.find(TreeHost(tmp_path), remnants.BY_ID["shell-history"])
    history = tmp_path / "root/.bash_history"
    history.unlink()
    history.symlink_to(tmp_path / "etc/shadow")
    with pytest.raises(remnants.Refused, match="not a regular file"):
        remnants.clear(next(f for f in found if f.path == "/root/.bash_history"), str(tmp_path))
    assert (tmp_path / "etc/shadow").read_bytes() == b"root:x:disp1:\n"


def test_a_history_without_a_disposable_is_not_reported() -> None:
    line = "qvm-run display-test xterm; qvm-run work-disp1 ls; echo disp12345; ssh mydisp3; ssh disp1.example.org"
    assert not remnants.DISPOSABLE_NAME.search(line.encode())
    assert remnants.DISPOSABLE_NAME.search(b"qvm-run --dispvm=default-dvm disp7 x")
    assert remnants.DISPOSABLE_NAME.search(b"qvm-copy-to-vm disp9999 file")
    assert not remnants.DISPOSABLE_NAME.search(b"vim disp1.c")
    assert remnants.DISPOSABLE_NAME.search(b"Qube disp1. Started")


lines = st.lists(
    st.one_of(st.binary(max_size=30).filter(lambda b: b"\n" not in b),
              st.sampled_from([b"qvm-run disp1 x", b"#1700000000", b"disp42", b"display", b"disp12345 x"])),
    max_size=12,
)  # fmt: skip


def reference(data: bytes) -> bytes:
    """The same rule, written another way: look ahead from each timestamp line."""
    parts = data.split(b"\n")
    pieces = [part + b"\n" for part in parts[:-1]] + ([parts[-1]] if parts[-1] else [])
    names = [bool(remnants.DISPOSABLE_NAME.search(piece)) for piece in pieces]
    stamp = [piece.rstrip(b"\r\n")[:1] == b"#" and piece.rstrip(b"\r\n")[1:].isdigit() for piece in pieces]
    return b"".join(piece for i, piece in enumerate(pieces)
                    if not names[i] and not (stamp[i] and i + 1 < len(pieces) and names[i + 1]))  # fmt: skip


@given(lines, st.sampled_from([b"\n", b"\r\n"]), st.booleans())
def test_every_line_that_names_no_disposable_is_kept_byte_for_byte(parts: list[bytes], end: bytes, final: bool) -> None:
    data = end.join(parts) + (end if final and parts else b"")
    kept = remnants._without_disposables(data)
    assert not any(remnants.DISPOSABLE_NAME.search(line) for line in remnants._lines(kept))
    assert kept == reference(data)


def test_the_audit_reports_each_file_as_a_gap_with_how_to_clear_it(tmp_path: Path) -> None:
    plant(tmp_path)
    description = describe(PILLAR_EXAMPLE.read_bytes())
    findings = list(audit.Audit(TreeHost(tmp_path), description, render(description)).remnants())
    gaps = {f.item: f for f in findings if f.status == "gap"}
    assert set(gaps) == EXPECTED
    history = gaps["/root/.bash_history"]
    assert history.level == 1 and history.required is False
    assert "2 lines name a disposable" in history.detail
    assert "qubes-ephemeral audit --clear shell-history" in history.detail
    assert all(f.status in ("gap", "ok") for f in findings)
    assert audit.exit_code(findings) == 0, "a remnant is information: the audit's verdict stays"


def test_without_remnants_each_kind_says_none_found(tmp_path: Path) -> None:
    description = describe(PILLAR_EXAMPLE.read_bytes())
    findings = list(audit.Audit(TreeHost(tmp_path), description, render(description)).remnants())
    assert [(f.item, f.status, f.detail) for f in findings] == [(r.id, "ok", "none found") for r in remnants.REMNANTS]


def test_more_than_ten_files_of_a_kind_are_counted(tmp_path: Path) -> None:
    (tmp_path / "var/lib/systemd/coredump").mkdir(parents=True)
    for number in range(13):
        (tmp_path / f"var/lib/systemd/coredump/core.x.{number}").write_bytes(b"")
    description = describe(PILLAR_EXAMPLE.read_bytes())
    findings = [f for f in audit.Audit(TreeHost(tmp_path), description, render(description)).remnants()
                if f.status == "gap"]  # fmt: skip
    assert len(findings) == 11 and findings[-1].item == "3 more coredumps files"


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("unshare"), reason="needs root and unshare(1)")
def test_cli_clear_in_a_private_mount_namespace(tmp_path: Path) -> None:
    """The real command at /, with /root and /home replaced by empty tmpfs in a private mount
    namespace: what it clears is planted there, and the machine's own files are never seen."""
    pillar = tmp_path / "pillar.sls"
    pillar.write_bytes(PILLAR_EXAMPLE.read_bytes())
    script = f"""set -e
mount --make-rprivate /
mount -t tmpfs tmpfs /root
mount -t tmpfs tmpfs /home
mkdir -p /home/user/.cache/sessions /home/user/.cache/xfce4
printf 'qvm-run disp4242 firefox\\nls\\n' >/root/.bash_history
echo '[WM_NAME] [disp4242] x' >/home/user/.cache/sessions/xfwm4-1.state
echo keep >/home/user/.cache/xfce4/keep
rc=0
{sys.executable} -m qubes_ephemeral audit {pillar} --clear shell-history --clear window-sessions --json \
    >{tmp_path}/report.json 2>{tmp_path}/stderr || rc=$?
cat /root/.bash_history >{tmp_path}/history
ls -A /home/user/.cache/sessions /home/user/.cache/xfce4 >{tmp_path}/left
cat /home/user/.cache/xfce4/keep >>{tmp_path}/left
exit 0
"""
    # The Python that runs the command may live under /root (pyenv): bound back over the tmpfs.
    keep = [p for p in {os.path.realpath(sys.base_prefix), os.path.realpath(sys.prefix)} if p.startswith("/root/")]
    saved = " ".join(
        f"&& mkdir -p {tmp_path}/keep{i} && mount --bind {p} {tmp_path}/keep{i}" for i, p in enumerate(keep)
    )
    back = " ".join(f"&& mkdir -p {p} && mount --bind {tmp_path}/keep{i} {p}" for i, p in enumerate(keep))
    script = script.replace("mount -t tmpfs tmpfs /root\n", f"true {saved}\nmount -t tmpfs tmpfs /root\ntrue {back}\n")
    env = {**os.environ, "PYTHONPATH": str(ROOT / "generator")}
    subprocess.run(["unshare", "--mount", "sh", "-c", script], check=True, env=env)
    stderr = (tmp_path / "stderr").read_text()
    assert "clear shell-history: /root/.bash_history: 1 line removed" in stderr, stderr
    assert "clear window-sessions: /home/user/.cache/sessions/xfwm4-1.state: removed" in stderr, stderr
    assert (tmp_path / "history").read_text() == "ls\n"
    assert (tmp_path / "left").read_text().split() == ["/home/user/.cache/sessions:", "/home/user/.cache/xfce4:",
                                                       "keep", "keep"]  # fmt: skip
    report = json.loads((tmp_path / "report.json").read_text())
    rows = {f["item"]: f["status"] for f in report["findings"] if f["area"] == "remnants"}
    assert rows["shell-history"] == "ok" and rows["window-sessions"] == "ok", rows


def test_clear_names_an_unknown_kind_and_changes_nothing(tmp_path: Path) -> None:
    pillar = tmp_path / "pillar.sls"
    pillar.write_bytes(PILLAR_EXAMPLE.read_bytes())
    result = subprocess.run([sys.executable, "-m", "qubes_ephemeral", "audit", str(pillar), "--clear", "history"],
                            capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT / "generator")})  # fmt: skip
    assert result.returncode == 2
    assert "--clear history: not a kind of remnant; one of: all, shell-history" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_fifo_named_like_a_history_neither_hangs_the_audit_nor_is_cleared(tmp_path: Path) -> None:
    os.makedirs(tmp_path / "root")
    os.mkfifo(tmp_path / "root/.bash_history")
    assert remnants.find(TreeHost(tmp_path), remnants.BY_ID["shell-history"]) == []
    found = remnants.Found(remnants.BY_ID["shell-history"], "/root/.bash_history", "planted")
    with pytest.raises(remnants.Refused, match="not a regular file"):
        remnants.clear(found, str(tmp_path))


def test_a_history_too_large_to_read_is_reported_and_not_cleared(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(remnants, "SEARCH_LIMIT", 100)
    (tmp_path / "root").mkdir()
    (tmp_path / "root/.bash_history").write_bytes(b"ls\n" * 40)
    [found] = remnants.find(TreeHost(tmp_path), remnants.BY_ID["shell-history"])
    assert "not searched, clear it by hand" in found.why and not found.clearable
    with pytest.raises(remnants.Refused, match="clear it by hand"):
        remnants.clear(found, str(tmp_path))
    assert (tmp_path / "root/.bash_history").read_bytes() == b"ls\n" * 40


def test_a_copy_too_large_to_search_is_not_removed(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(remnants, "SEARCH_LIMIT", 100)
    copy = tmp_path / "var/lib/qubes/backup/qubes-2026-12-01-10:00:00.xml"
    copy.parent.mkdir(parents=True)
    copy.write_bytes(b"<qubes/>" * 20)
    [found] = remnants.find(TreeHost(tmp_path), remnants.BY_ID["qubes-xml-copies"])
    with pytest.raises(remnants.Refused, match="not searched"):
        remnants.clear(found, str(tmp_path))
    assert copy.exists()


def test_a_read_that_may_not_follow_links_never_does(tmp_path: Path) -> None:
    """The search reads a user's files as root: a link swapped in after the listing, for
    the file or any folder above it, is never followed (the clear refuses the same)."""
    plant(tmp_path)
    host = TreeHost(tmp_path)
    assert host.read("/home/linked/.bash_history") == "root:x:disp1:\n", "the anti-test: a read that follows"
    assert host.read("/home/linked/.bash_history", follow_links=False) is None
    assert host.read("/home/linked/.cache/xfce4/notifyd/log", follow_links=False) is None
    assert host.read("/root/.bash_history", follow_links=False) == HISTORY.decode()


def test_a_socket_named_like_a_history_is_not_a_history(tmp_path: Path) -> None:
    import socket

    (tmp_path / "root").mkdir()
    with socket.socket(socket.AF_UNIX) as server:
        server.bind(str(tmp_path / "root/.bash_history"))
        assert remnants.find(TreeHost(tmp_path), remnants.BY_ID["shell-history"]) == []


def test_without_qubes_xml_no_qubes_file_is_taken(tmp_path: Path) -> None:
    """Which qubes exist is unknown: every qube might, so none of their files is taken."""
    plant(tmp_path)
    description = describe(PILLAR_EXAMPLE.read_bytes())
    for broken in (b"<qubes><domain", b'<qubes xmlns="x">' + QUBES_XML[7:], b"<qubes/>",
                   QUBES_XML.replace(b">work<", b"><"), b"<domains>" + QUBES_XML + b"</domains>", None):  # fmt: skip
        if broken is None:
            (tmp_path / "var/lib/qubes/qubes.xml").unlink()
        else:
            (tmp_path / "var/lib/qubes/qubes.xml").write_bytes(broken)
        with pytest.raises(remnants.CannotTell):
            remnants.find(TreeHost(tmp_path), remnants.BY_ID["qube-logs"])
        rows = {f.item: f for f in audit.Audit(TreeHost(tmp_path), description, render(description)).remnants()}
        assert rows["qube-logs"].status == "unknown" and "qubes.xml" in rows["qube-logs"].detail
        assert "/var/log/qubes/guid.disp4242.log" not in rows


def test_only_the_senders_lines_of_the_notification_settings_are_taken() -> None:
    sender = remnants.BY_ID["notification-apps"].names
    assert sender.search(b'      <value type="string" value="Qube: disp4242"/>\n')
    one_line = b'<channel><property name="a"><value type="string" value="Qube: disp4242"/></property></channel>'
    assert not sender.search(one_line), "a line that is more than a sender stays: the XML stays whole"


def test_clear_checks_every_kind_before_clearing_any(monkeypatch) -> None:
    def never(*args: object) -> list[remnants.Found]:
        raise AssertionError("searched, with a kind misspelt")

    monkeypatch.setattr(remnants, "find", never)  # nothing on this machine is searched, let alone cleared
    with pytest.raises(cli.UsageError, match="--clear histroy: not a kind of remnant"):
        cli.clear_remnants(["all", "histroy"])


def test_a_read_asks_for_no_more_memory_than_the_file_needs(tmp_path: Path) -> None:
    """A buffer of the 64 MiB limit at every read failed with ENOMEM in the VM suite's
    dom0 (960 MiB, under swap pressure): a small file costs a small read."""
    import tracemalloc

    (tmp_path / "small").write_bytes(b"x" * 1000)
    tracemalloc.start()
    try:
        assert Host().read(str(tmp_path / "small")) == "x" * 1000
        assert Host().read(str(tmp_path / "small"), follow_links=False) == "x" * 1000
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 4 << 20, f"{peak} bytes for a 1000-byte file"


def test_a_name_in_qubes_xml_counts_as_qubesd_reads_it() -> None:
    host = TreeHost(Path("/nonexistent"))
    host.read = lambda path, *args: QUBES_XML.replace(b">disp7<", b">\n  disp7\n<").decode()  # type: ignore[method-assign]
    assert remnants.living_qubes(host) == {b"work", b"disp7"}


def test_a_history_line_that_reads_a_disposables_file_names_it() -> None:
    for line in (
        b"cat /var/log/qubes/guid.disp12.log",
        b"less guest-disp12-dm.log",
        b"lvs qubes_dom0/vm-disp12-private",
        b"xl console disp12-dm",
        b"cat /etc/libvirt/libxl/disp12.xml",
        b"systemctl status qubes-vm@disp12.service",
    ):
        assert remnants.DISPOSABLE_NAME.search(line), line
    for line in (b"cat guid.disp12-dev.log", b"lvs qubes_dom0/vm-disp12-dev-private", b"cat guid.mydisp12.log"):
        assert not remnants.DISPOSABLE_NAME.search(line), line


def test_a_qubes_log_is_kept_when_its_number_was_given_again_before_the_clear(tmp_path: Path) -> None:
    plant(tmp_path)
    [log] = [f for f in remnants.find(TreeHost(tmp_path), remnants.BY_ID["qube-logs"])
             if f.path == "/var/log/libvirt/libxl/disp4242.log"]  # fmt: skip
    xml = tmp_path / "var/lib/qubes/qubes.xml"
    xml.write_bytes(xml.read_bytes().replace(b">disp7<", b">disp4242<"))  # a new disp4242 started
    with pytest.raises(remnants.Refused, match="exists again"):
        remnants.clear(log, str(tmp_path))
    assert (tmp_path / "var/log/libvirt/libxl/disp4242.log").exists()
    xml.unlink()
    with pytest.raises(remnants.Refused, match="absent"):
        remnants.clear(log, str(tmp_path))


def test_only_regular_files_are_remnants(tmp_path: Path) -> None:
    (tmp_path / "home/user/.cache/sessions").mkdir(parents=True)
    os.mkfifo(tmp_path / "home/user/.cache/sessions/xfwm4-1.state")
    (tmp_path / "home/user/.cache/sessions/xfwm4-2.state").write_bytes(b"[disp1] x\n")
    found = remnants.find(TreeHost(tmp_path), remnants.BY_ID["window-sessions"])
    assert [f.path for f in found] == ["/home/user/.cache/sessions/xfwm4-2.state"]


def test_a_folder_the_audit_may_not_read_is_unknown_not_none_found(tmp_path: Path) -> None:
    class NotRoot(TreeHost):
        def listdir(self, path: str) -> list[str]:
            if path == "/root":
                raise PermissionError(13, "Permission denied", path)
            return super().listdir(path)

    plant(tmp_path)
    description = describe(PILLAR_EXAMPLE.read_bytes())
    rows = {f.item: f for f in audit.Audit(NotRoot(tmp_path), description, render(description)).remnants()}
    assert rows["shell-history"].status == "unknown" and "/root" in rows["shell-history"].detail


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root (chown)")
def test_a_rewritten_history_takes_the_owner_and_mode_of_what_was_read_without_set_id_bits(tmp_path: Path) -> None:
    plant(tmp_path)
    history = tmp_path / "root/.bash_history"
    os.chown(history, 1234, 1234)
    os.chmod(history, 0o4640)
    [found] = [f for f in remnants.find(TreeHost(tmp_path), remnants.BY_ID["shell-history"])
               if f.path == "/root/.bash_history"]  # fmt: skip
    assert remnants.clear(found, str(tmp_path)) == "3 lines removed"
    info = history.stat()
    assert (info.st_uid, info.st_gid, info.st_mode & 0o7777) == (1234, 1234, 0o640)


def test_a_line_written_to_a_history_while_it_is_cleared_is_not_lost(tmp_path: Path, monkeypatch) -> None:
    plant(tmp_path)
    [found] = [f for f in remnants.find(TreeHost(tmp_path), remnants.BY_ID["shell-history"])
               if f.path == "/root/.bash_history"]  # fmt: skip
    history = tmp_path / "root/.bash_history"
    fsync = os.fsync

    def fsync_then_a_shell_writes(fd: int) -> None:
        fsync(fd)
        if not history.read_bytes().endswith(b"late\n"):
            with history.open("ab") as shell:
                shell.write(b"late\n")

    monkeypatch.setattr(os, "fsync", fsync_then_a_shell_writes)
    with pytest.raises(remnants.Refused, match="changed while being cleared"):
        remnants.clear(found, str(tmp_path))
    monkeypatch.undo()
    assert history.read_bytes() == HISTORY + b"late\n"
    assert not list(tmp_path.rglob("*qubes-ephemeral-clear*"))

"""The dom0 package: packaging/build makes an RPM and a tarball of one tree.

Proves: both are built from a fresh checkout with one command, their
checksums are right, they hold the same files (bytes, modes, links), the
file list is what the README's walk-through relies on, the unpacked payload
runs (the command, the qubesd extension's entry point, the Salt formula in
the sandbox), and install.sh installs, re-installs with no change, refuses
outside dom0 unless told, and uninstalls exactly.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest
from conftest import PILLAR_EXAMPLE, ROOT
from qubes_ephemeral import __version__
from required_tools import require

NAME = f"qubes-ephemeral-{__version__}"
RPM = f"{NAME}-1.noarch.rpm"
FORMULA = "srv/formulas/base/ephemeral-formula"
LIB = "usr/share/qubes-ephemeral/lib"
# Everything but the generator's own modules, which must match the sources.
EXPECTED_OUTSIDE_LIB = {
    "etc/salt/minion.d/formula-ephemeral.conf",
    "usr/bin/qubes-ephemeral",
    "usr/share/doc/qubes-ephemeral/README.md",
    "usr/share/doc/qubes-ephemeral/pillar.example",
    f"{FORMULA}/ephemeral/lib/qubes_ephemeral",
    *(f"usr/lib/python{v}/site-packages/{n}" for v in ("3.11", "3.13")
      for n in ("qubes_ephemeral", f"qubes_ephemeral-{__version__}.dist-info")),
}  # fmt: skip


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    require("rpmbuild", "rpm2cpio", "cpio")
    out = tmp_path_factory.mktemp("dist")
    result = subprocess.run([str(ROOT / "packaging" / "build"), str(out)], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    return out


@pytest.fixture(scope="module")
def payload(dist: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The RPM's payload, unpacked as rpm would put it on /."""
    root = tmp_path_factory.mktemp("payload")
    archive = subprocess.run(["rpm2cpio", str(dist / RPM)], capture_output=True, check=True).stdout
    subprocess.run(["cpio", "--quiet", "-idm", "--no-absolute-filenames"], cwd=root, input=archive, check=True)
    return root


@pytest.fixture(scope="module")
def tarball(dist: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("tarball")
    with tarfile.open(dist / f"{NAME}.tar.gz") as archive:
        archive.extractall(folder, filter="tar")
    return folder / NAME


def tree(root: Path) -> dict[str, tuple[str, str]]:
    """path -> (kind and mode or link target, content hash) for every file and link."""
    entries = {}
    for path in sorted(root.rglob("*")):
        name = str(path.relative_to(root))
        if path.is_symlink():
            entries[name] = (f"link {os.readlink(path)}", "")
        elif path.is_file():
            entries[name] = (oct(path.stat().st_mode & 0o777), hashlib.sha256(path.read_bytes()).hexdigest())
    return entries


def rpm_query(dist: Path, *query: str) -> str:
    return subprocess.run(["rpm", "-qp", *query, str(dist / RPM)], capture_output=True, text=True, check=True).stdout


def test_checksums_name_both_files(dist: Path) -> None:
    sums = dict(reversed(line.split()) for line in (dist / "SHA256SUMS").read_text().splitlines())
    assert set(sums) == {RPM, f"{NAME}.tar.gz"}
    for name, digest in sums.items():
        assert hashlib.sha256((dist / name).read_bytes()).hexdigest() == digest


def test_rpm_is_noarch_for_both_dom0_pythons_and_restarts_qubesd(dist: Path) -> None:
    assert rpm_query(dist, "--qf", "%{NAME} %{VERSION} %{ARCH}") == f"qubes-ephemeral {__version__} noarch"
    requires = rpm_query(dist, "--requires")
    assert "(python(abi) = 3.11 or python(abi) = 3.13)" in requires
    assert "python3-pyyaml" in requires and "python3-jinja2" in requires
    scripts = rpm_query(dist, "--scripts")
    assert "systemctl try-restart qubesd.service" in scripts, "qubesd must be restarted to load the extension"
    assert "rm -f /run/qubes-ephemeral/qubesd-extension.json" in scripts, "removed: not reported as loaded"
    preun = scripts.split("preuninstall scriptlet", 1)[1].split("scriptlet", 1)[0]
    assert "/usr/bin/qubes-ephemeral applied" in preun and "exit 1" in preun, "not removed while applied"


def test_rpm_payload_and_tarball_hold_the_same_tree(payload: Path, tarball: Path) -> None:
    assert tree(payload) == tree(tarball / "tree")
    assert (tarball / "install.sh").stat().st_mode & 0o111


def test_file_list(payload: Path) -> None:
    files = set(tree(payload))
    generator = {
        str(p.relative_to(ROOT / "generator"))
        for p in (ROOT / "generator" / "qubes_ephemeral").rglob("*")
        if p.is_file() and "__pycache__" not in p.parts
    }
    assert {f"{LIB}/{name}" for name in generator} <= files, "every module, template and VM script is shipped"
    formula = {
        str(p.relative_to(ROOT / "ephemeral-formula"))
        for p in (ROOT / "ephemeral-formula").rglob("*")
        if p.is_file() and not p.is_symlink() and "lib" not in p.parts and "__pycache__" not in p.parts
    }
    assert {f"{FORMULA}/{name}" for name in formula} <= files
    assert f"{FORMULA}/ephemeral/init.top" in files, "qubesctl top.enable ephemeral needs it"
    dist_info = f"{LIB}/qubes_ephemeral-{__version__}.dist-info"
    rest = {f for f in files if not f.startswith((f"{LIB}/qubes_ephemeral/", f"{FORMULA}/", f"{dist_info}/"))}
    assert rest == EXPECTED_OUTSIDE_LIB - {f"{FORMULA}/ephemeral/lib/qubes_ephemeral"}
    entry_points = (payload / dist_info / "entry_points.txt").read_text()
    assert "[qubes.ext]" in entry_points and "qubes_ephemeral.qubesd.extension:EphemeralDisposables" in entry_points


def test_unpacked_payload_runs(payload: Path) -> None:
    site = payload / "usr/lib/python3.11/site-packages"
    env = {"PATH": os.environ["PATH"], "PYTHONPATH": str(site)}
    # -S: no site-packages of this machine, only the payload's (jinja2 and yaml as dom0 has them).
    probe = (
        "import sys, jinja2, yaml; sys.path = [p for p in sys.path if 'site-packages' not in p or p == sys.argv[1]]"
        "; sys.path += [jinja2.__path__[0] + '/..', yaml.__path__[0] + '/..']"
        "; from importlib.metadata import entry_points"
        "; import qubes_ephemeral; print(qubes_ephemeral.__file__)"
        "; print([e.value for e in entry_points(group='qubes.ext')])"
    )
    result = subprocess.run([str(ROOT / ".venv/bin/python"), "-c", probe, str(site)], capture_output=True,
                            text=True, env=env, check=False)  # fmt: skip
    assert result.returncode == 0, result.stderr
    module, entry = result.stdout.splitlines()
    assert Path(module).resolve().is_relative_to(payload / LIB), "site-packages links to the shipped library"
    assert "qubes_ephemeral.qubesd.extension:EphemeralDisposables" in entry
    command = payload / "usr/bin/qubes-ephemeral"
    result = subprocess.run([str(ROOT / ".venv/bin/python"), str(command), "validate", str(PILLAR_EXAMPLE)],
                            capture_output=True, text=True, env=env, check=False)  # fmt: skip
    assert result.returncode == 0 and "valid" in result.stdout, result.stderr
    formula_lib = payload / FORMULA / "ephemeral/lib/qubes_ephemeral/__init__.py"
    assert formula_lib.resolve() == (payload / LIB / "qubes_ephemeral/__init__.py").resolve()


def run_install(tarball: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(tarball / "install.sh"), *args], capture_output=True, text=True, check=False)


def test_install_sh_installs_once_refuses_outside_dom0_and_uninstalls_exactly(tarball: Path, tmp_path: Path) -> None:
    if not Path("/etc/qubes-release").exists():
        refused = run_install(tarball)
        assert refused.returncode == 2 and "not Qubes OS dom0" in refused.stderr
    root = tmp_path / "root"
    (root / "usr/lib/python3.11/site-packages").mkdir(parents=True)  # already there, must stay
    (root / "usr/lib/python3.11/site-packages/other.py").write_text("# someone else's\n")
    first = run_install(tarball, "--force", "--root", str(root))
    assert first.returncode == 0, first.stderr
    installed = tree(root)
    record = "usr/share/qubes-ephemeral/installed-by-install.sh"
    shipped = tree(tarball / "tree")
    assert {k: v for k, v in installed.items() if not k.startswith(record)} == {
        **shipped,
        "usr/lib/python3.11/site-packages/other.py": installed["usr/lib/python3.11/site-packages/other.py"],
    }
    again = run_install(tarball, "--force", "--root", str(root))
    assert again.returncode == 0 and "nothing changed" in again.stdout
    assert tree(root) == installed
    # A changed file is put back.
    (root / FORMULA / "ephemeral/init.sls").write_text("tampered\n")
    repair = run_install(tarball, "--force", "--root", str(root))
    assert "1 files changed" in repair.stdout and tree(root) == installed
    removed = run_install(tarball, "--uninstall", "--force", "--root", str(root))
    assert removed.returncode == 0, removed.stderr
    left = sorted(str(p.relative_to(root)) for p in root.rglob("*"))
    assert left == ["usr", "usr/lib", "usr/lib/python3.11", "usr/lib/python3.11/site-packages",
                    "usr/lib/python3.11/site-packages/other.py"]  # fmt: skip


@pytest.mark.salt
def test_formula_from_the_unpacked_payload_applies_and_cleans(payload: Path, tmp_path: Path, qubesd) -> None:
    from qubesd_process import STAMP, loaded_by
    from salt_sandbox import Sandbox, available
    from test_formula import DOM0_CRYPTTAB, DOM0_FSTAB, changed, failed

    why = available()
    if why:
        pytest.fail(why) if os.environ.get("STRICT_TOOLS") == "1" else pytest.skip(why)
    box = Sandbox(tmp_path / "sandbox", PILLAR_EXAMPLE.read_text(), formula=payload / FORMULA)
    box.put("/etc/crypttab", DOM0_CRYPTTAB)
    box.put("/etc/fstab", DOM0_FSTAB)
    box.put(STAMP, loaded_by(qubesd))  # the package's qubesd extension, loaded
    status, first = box.apply()
    assert status == 0, failed(first)
    assert "qubes-ephemeral-format.service" in (box.read("/etc/fstab") or "")
    status, again = box.apply()
    assert status == 0 and changed(again) == {}
    status, clean = box.apply("ephemeral.clean")
    assert status == 0, failed(clean)
    assert box.read("/etc/fstab") == DOM0_FSTAB and box.read("/etc/crypttab") == DOM0_CRYPTTAB


# --- install.sh: refusals before any change, and faults midway ---
#
# These run packaging/install.sh itself beside a small tree of the same shape as
# the package's (nested folders, modes, a link to a folder), so that a fault can
# be put at every step of an install in seconds.

INSTALL_SH = ROOT / "packaging" / "install.sh"
SMALL_TREE = {
    "etc/salt/minion.d/formula-ephemeral.conf": ("file_roots: []\n", 0o644),
    "usr/bin/qubes-ephemeral": ("#!/bin/sh\nexit 1\n", 0o755),
    "usr/share/qubes-ephemeral/lib/qubes_ephemeral/__init__.py": ("version = 2\n", 0o644),
    "usr/share/qubes-ephemeral/lib/qubes_ephemeral/dom0/audit.py": ("# audit\n", 0o644),
    "srv/formulas/base/ephemeral-formula/ephemeral/init.sls": ("include: []\n", 0o600),
}
SMALL_LINK = ("usr/lib/python3.11/site-packages/qubes_ephemeral", "../../../share/qubes-ephemeral/lib/qubes_ephemeral")
# What version 1 had and version 2 no longer has, and what it had otherwise.
SMALL_TREE_V1 = {
    **SMALL_TREE,
    "usr/share/qubes-ephemeral/lib/qubes_ephemeral/__init__.py": ("version = 1\n", 0o644),
    "usr/share/qubes-ephemeral/lib/qubes_ephemeral/gone.py": ("# dropped in 2\n", 0o644),
    "usr/share/doc/qubes-ephemeral/OLD": ("dropped in 2\n", 0o644),
}
# The tools install.sh changes files with: the faulty ones count their calls.
CHANGING_TOOLS = ("mkdir", "cp", "ln", "chmod", "rm", "rmdir", "mv")
FAULTY_TOOL = """#!/bin/sh
# The FAULT_AT-th call of a tool that changes files fails (or kills install.sh).
n=$(($(cat "$FAULT_COUNT") + 1))
echo "$n" >"$FAULT_COUNT"
if [ "$n" = "$FAULT_AT" ]; then
    if [ "$FAULT" = kill ]; then kill -KILL 0; fi
    echo "${0##*/}: injected failure: No space left on device" >&2
    exit 1
fi
PATH=$REAL_PATH exec "${0##*/}" "$@"
"""


def small_package(folder: Path, tree: dict[str, tuple[str, int]] = SMALL_TREE) -> Path:
    """A tarball's folder in small: install.sh (this checkout's) beside tree/."""
    folder.mkdir()
    for name, (text, mode) in tree.items():
        path = folder / "tree" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        path.chmod(mode)
    link = folder / "tree" / SMALL_LINK[0]
    link.parent.mkdir(parents=True, exist_ok=True)
    link.symlink_to(SMALL_LINK[1])
    (folder / "install.sh").write_bytes(INSTALL_SH.read_bytes())
    (folder / "install.sh").chmod(0o755)
    return folder


def listing(root: Path) -> dict[str, tuple[str, str, int, str]]:
    """Everything under root, root included: kind, mode, size of a file, target of a link."""
    found = {}
    for folder, dirs, files in os.walk(root):
        for path in [Path(folder), *(Path(folder) / name for name in dirs + files)]:
            info = path.lstat()
            kind = "link" if path.is_symlink() else "dir" if path.is_dir() else "file"
            found[str(path.relative_to(root))] = (
                kind,
                oct(info.st_mode & 0o7777),
                info.st_size if kind == "file" else 0,
                os.readlink(path) if kind == "link" else "",
            )
    return found


def install_sh(package: Path, *args: str, fault: str = "", at: int = 0, count: Path | None = None):
    """install.sh --force ARGS; with a fault, the at-th change it makes fails or kills it."""
    env = dict(os.environ)
    if fault:
        tools = count.parent / "faulty-tools"  # type: ignore[union-attr]
        if not tools.is_dir():
            tools.mkdir()
            for tool in CHANGING_TOOLS:
                (tools / tool).write_text(FAULTY_TOOL)
                (tools / tool).chmod(0o755)
        count.write_text("0\n")  # type: ignore[union-attr]
        env.update(PATH=f"{tools}:{env['PATH']}", REAL_PATH=env["PATH"], FAULT=fault, FAULT_AT=str(at),
                   FAULT_COUNT=str(count))  # fmt: skip
    return subprocess.run([str(package / "install.sh"), "--force", *args], capture_output=True, text=True, env=env,
                          start_new_session=True, timeout=120, check=False)  # fmt: skip


def one_line_refusal(result: subprocess.CompletedProcess[str], status: int, says: str) -> None:
    assert result.returncode == status, (result.returncode, result.stdout, result.stderr)
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("install.sh: "), result.stderr
    assert says in result.stderr and "Traceback" not in result.stderr, result.stderr


def a_root(folder: Path) -> Path:
    """A root that already holds something of someone else's, on the package's way."""
    (folder / "usr/lib/python3.11/site-packages").mkdir(parents=True)
    (folder / "usr/lib/python3.11/site-packages/other.py").write_text("# someone else's\n")
    (folder / "etc").mkdir(mode=0o750)
    return folder


@pytest.mark.parametrize("action", [(), ("--uninstall",)])
@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--root"], "--root needs a folder; usage: install.sh ["),
        (["--root", "foo"], "--root foo is a relative path"),
        (["--root", "."], "--root . is a relative path"),
        (["--root", ""], "--root is empty"),
        (["--root="], "--root is empty"),
        (["--root", "{tmp}/a\nb"], "--root holds a control character"),
        (["--root", "{tmp}/a\tb"], "--root holds a control character"),
        (["--root", "{tmp}/missing"], "does not exist"),
        (["--root", "{tmp}/a-file"], "is not a folder"),
        (["--root", "{tmp}/link"], "is a symbolic link: give the folder itself"),
        (["--root", "{tmp}/link/"], "is a symbolic link: give the folder itself"),
        (["--root", "{tmp}/link/sub"], "goes through a symbolic link"),
        (["--root", "{tmp}/root/../root"], "holds . or .."),
        (["--root", "{tmp}//root"], "goes through a symbolic link or holds . or .. or //"),
        (["--bogus"], "unknown option --bogus; usage: install.sh ["),
        (["--root", "{tmp}/root", "-x"], "unknown option -x; usage: install.sh ["),
    ],
)  # fmt: skip
def test_install_sh_refuses_a_bad_option_or_root_before_any_change(tmp_path: Path, args: list[str], says: str,
                                                                   action: tuple[str, ...]) -> None:  # fmt: skip
    package = small_package(tmp_path / "package")
    a_root(tmp_path / "root")
    (tmp_path / "a-file").write_text("")
    (tmp_path / "real/sub").mkdir(parents=True)
    (tmp_path / "link").symlink_to("real")
    before = listing(tmp_path)
    result = subprocess.run([str(package / "install.sh"), "--force", *action, *(a.format(tmp=tmp_path) for a in args)],
                            cwd=tmp_path / "real", capture_output=True, text=True, check=False)  # fmt: skip
    one_line_refusal(result, 2, says)
    assert result.stdout == ""
    assert listing(tmp_path) == before, "nothing changed, the package's tree/ included"


def test_install_sh_help_prints_the_header(tmp_path: Path) -> None:
    package = small_package(tmp_path / "package")
    helped = subprocess.run([str(package / "install.sh"), "--help"], capture_output=True, text=True, check=False)
    assert helped.returncode == 0 and "--root DIR" in helped.stdout and "refused, not resolved" in helped.stdout
    assert helped.stdout.splitlines()[-1].startswith("# so after a failure"), "--help prints the whole header"


@pytest.mark.parametrize(
    ("shape", "says"),
    [
        ("a folder where a file goes", "usr/bin/qubes-ephemeral is a folder, where install.sh puts a file"),
        ("a file where a folder goes", "usr/share/qubes-ephemeral is a file, where install.sh needs a folder"),
        ("a file where the record's folder goes", "usr/share is a file, where install.sh needs a folder"),
        ("someone else's file where a file goes", "usr/bin/qubes-ephemeral is there and install.sh did not put it"),
        ("someone else's link where the link goes", "site-packages/qubes_ephemeral is there and install.sh did not"),
        ("a broken link where a folder goes", "srv is a broken symbolic link, where install.sh needs a folder"),
        ("a link out of the root where a folder goes", "srv is a symbolic link out of --root"),
    ],
)  # fmt: skip
def test_install_sh_refuses_a_tree_that_does_not_fit_before_any_change(tmp_path: Path, shape: str, says: str) -> None:
    package = small_package(tmp_path / "package")
    root = a_root(tmp_path / "root")
    (tmp_path / "elsewhere").mkdir()
    if shape == "a folder where a file goes":
        (root / "usr/bin/qubes-ephemeral").mkdir(parents=True)
    elif shape == "a file where a folder goes":
        (root / "usr/share").mkdir(parents=True)
        (root / "usr/share/qubes-ephemeral").write_text("")
    elif shape == "a file where the record's folder goes":
        (root / "usr/share").write_text("")
    elif shape == "someone else's file where a file goes":
        (root / "usr/bin").mkdir(parents=True)
        (root / "usr/bin/qubes-ephemeral").write_text("# someone else's\n")
    elif shape == "someone else's link where the link goes":
        (root / SMALL_LINK[0]).symlink_to(SMALL_LINK[1])
    elif shape == "a broken link where a folder goes":
        (root / "srv").symlink_to("nowhere")
    else:
        (root / "srv").symlink_to(tmp_path / "elsewhere")
    before = listing(tmp_path)
    one_line_refusal(install_sh(package, "--root", str(root)), 2, says)
    assert listing(tmp_path) == before


def test_install_sh_refuses_a_folder_at_any_of_its_files_or_a_file_at_any_of_its_folders(tmp_path: Path) -> None:
    """For every file and link of the tree, a folder in its place; for every folder on their
    way, a file in its place: refused before any change, whichever comes first."""
    package = small_package(tmp_path / "package")
    targets = [*SMALL_TREE, SMALL_LINK[0]]
    folders = sorted({str(parent) for name in targets for parent in Path(name).parents if str(parent) != "."})
    for name, kind in [*((t, "folder") for t in targets), *((f, "file") for f in folders)]:
        root = tmp_path / "root"
        if root.exists():
            shutil.rmtree(root)
        a_root(root)
        if kind == "folder":
            (root / name).mkdir(parents=True, exist_ok=True)
        elif not (root / name).is_dir():  # a folder that is there already (usr, etc): not replaced
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            (root / name).write_text("")
        else:
            continue
        before = listing(tmp_path)
        result = install_sh(package, "--root", str(root))
        one_line_refusal(result, 2, "nothing changed")
        assert f"{root}/" in result.stderr and listing(tmp_path) == before, (name, kind, result.stderr)


def test_install_sh_refuses_a_folder_it_cannot_write_before_any_change(tmp_path: Path) -> None:
    package = small_package(tmp_path / "package")
    root = a_root(tmp_path / "root")
    if subprocess.run(["chattr", "+i", str(root / "usr")], capture_output=True, check=False).returncode != 0:
        pytest.skip("no immutable flag on this filesystem (or no chattr)")
    try:
        before = listing(tmp_path)
        one_line_refusal(install_sh(package, "--root", str(root)), 2, f"{root}/usr cannot be written")
        assert listing(tmp_path) == before
    finally:
        subprocess.run(["chattr", "-i", str(root / "usr")], check=True)


def steps(package: Path, root: Path, *args: str) -> int:
    """How many changes (calls of a tool that changes files) install.sh makes for ARGS."""
    count = root.parent / "count"
    result = install_sh(package, *args, "--root", str(root), fault="count", count=count)
    assert result.returncode == 0, result.stderr
    return int(count.read_text())


def after_fault(result: subprocess.CompletedProcess[str], fault: str) -> None:
    if fault == "kill":
        assert result.returncode == -9, (result.returncode, result.stderr)
    else:
        one_line_refusal(result, 1, "injected failure: No space left on device")
        assert "run it again, or --uninstall removes it" in result.stderr or "--uninstall again" in result.stderr


@pytest.mark.parametrize(
    ("fault", "scenario"),
    [("fail", "fresh"), ("kill", "fresh"), ("fail", "upgrade"), ("kill", "upgrade"), ("kill", "empty root")],
)
def test_install_sh_fault_at_every_step_leaves_nothing_uninstall_does_not_remove(tmp_path: Path, fault: str,
                                                                                 scenario: str) -> None:  # fmt: skip
    """The k-th change of an install fails (disk full, read-only) or the install is killed
    there, for every k: what it made is in its record, so --uninstall gives back the root
    as it was before any install; and an install run again completes it. (An empty root:
    the record's own folders are made from the root up.)"""
    upgrade = scenario == "upgrade"
    new = small_package(tmp_path / "v2")
    old = small_package(tmp_path / "v1", SMALL_TREE_V1)
    pristine = tmp_path / "pristine"
    pristine.mkdir() if scenario == "empty root" else a_root(pristine)
    before = listing(pristine)

    def start(name: str) -> Path:
        root = tmp_path / name
        shutil.copytree(pristine, root, symlinks=True)
        if upgrade:
            assert install_sh(old, "--root", str(root)).returncode == 0
        return root

    reference = start("reference")
    assert install_sh(new, "--root", str(reference)).returncode == 0
    complete = listing(reference)
    total = steps(new, start("counted"))
    assert total > (5 if upgrade else 20), total
    for k in range(1, total + 1):
        for name in ("faulted", "again"):
            if (tmp_path / name).exists():
                shutil.rmtree(tmp_path / name)
        root = start("faulted")
        after_fault(install_sh(new, "--root", str(root), fault=fault, at=k, count=tmp_path / "count"), fault)
        shutil.copytree(root, tmp_path / "again", symlinks=True)
        removed = install_sh(new, "--uninstall", "--root", str(root))
        assert removed.returncode == 0 and removed.stderr == "", (k, removed.stderr)
        assert listing(root) == before, f"uninstall after a {fault} at change {k} of {total} left something"
        again = install_sh(new, "--root", str(tmp_path / "again"))
        assert again.returncode == 0 and again.stderr == "", (k, again.stderr)
        assert listing(tmp_path / "again") == complete, f"an install after a {fault} at change {k} differs"


@pytest.mark.parametrize("fault", ["fail", "kill"])
def test_install_sh_uninstall_faulted_at_every_step_finishes_when_run_again(tmp_path: Path, fault: str) -> None:
    package = small_package(tmp_path / "package")
    pristine = a_root(tmp_path / "pristine")
    before = listing(pristine)
    root = tmp_path / "root"
    shutil.copytree(pristine, root, symlinks=True)
    assert install_sh(package, "--root", str(root)).returncode == 0
    installed = tmp_path / "installed"
    shutil.copytree(root, installed, symlinks=True)
    total = steps(package, root, "--uninstall")
    for k in range(1, total + 1):
        shutil.rmtree(root)
        shutil.copytree(installed, root, symlinks=True)
        after_fault(install_sh(package, "--uninstall", "--root", str(root), fault=fault, at=k,
                               count=tmp_path / "count"), fault)  # fmt: skip
        again = install_sh(package, "--uninstall", "--root", str(root))
        assert again.returncode == 0 and again.stderr == "", (k, again.stderr)
        assert listing(root) == before, f"uninstall after a {fault} at its change {k} of {total} left something"


def test_install_sh_of_the_tarball_killed_midway_is_removed_by_uninstall(tarball: Path, tmp_path: Path) -> None:
    """The same on the real tree, at a few of its hundreds of changes (all of them: above)."""
    pristine = a_root(tmp_path / "pristine")
    before = listing(pristine)
    root = tmp_path / "root"
    shutil.copytree(pristine, root, symlinks=True)
    total = steps(tarball, root)
    shutil.rmtree(root)
    for k in (1, total // 2, total):
        shutil.copytree(pristine, root, symlinks=True)
        after_fault(install_sh(tarball, "--root", str(root), fault="kill", at=k, count=tmp_path / "count"), "kill")
        removed = install_sh(tarball, "--uninstall", "--root", str(root))
        assert removed.returncode == 0 and removed.stderr == "", (k, removed.stderr)
        assert listing(root) == before, f"uninstall after a kill at change {k} of {total} left something"
        shutil.rmtree(root)

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

"""The qubes-ephemeral command: exit codes, standard input, JSON, diff, render."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import PILLAR_EXAMPLE, ROOT, description, run_cli
from qubes_ephemeral import __version__
from qubes_ephemeral.description import schema


def test_pillar_example_validates() -> None:
    result = run_cli("validate", str(PILLAR_EXAMPLE))
    assert result.status == 0, result.stderr
    assert result.stderr == ""


def test_validate_reads_standard_input() -> None:
    assert run_cli("validate", "-", stdin=PILLAR_EXAMPLE.read_text()).status == 0
    assert run_cli("validate", "-", stdin="ephemeral: {}\n").status == 2


def test_validate_json() -> None:
    ok = json.loads(run_cli("validate", "--json", str(PILLAR_EXAMPLE)).stdout)
    assert ok == {"valid": True, "problems": []}
    bad = run_cli("validate", "--json", "-", stdin=description(scratch={"device": "/dev/sda"}))
    assert bad.status == 2
    report = json.loads(bad.stdout)
    assert report["valid"] is False
    assert [p["path"] for p in report["problems"]] == ["ephemeral.scratch.device"]
    assert report["problems"][0]["line"] == 3


def test_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    result = run_cli("validate", str(tmp_path / "nope.yaml"))
    assert result.status == 2
    assert result.stderr.startswith("qubes-ephemeral: cannot read")


def test_version_and_schema() -> None:
    assert run_cli("--version").stdout.strip() == f"qubes-ephemeral {__version__}"
    listed = json.loads(run_cli("schema", "--json").stdout)
    assert [row["key"] for row in listed] == [key for key, _ in schema.all_keys()]
    text = run_cli("schema").stdout
    for key, setting in schema.all_keys():
        assert key in text and setting.default_text() in text


def test_render_shows_crypttab_and_swap(tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = run_cli("render", str(PILLAR_EXAMPLE), "--out", str(out))
    assert result.status == 0
    scratch, swap = ((out / f"blocks/{section}/etc/crypttab").read_text() for section in ("scratch", "swap"))
    crypttab = [scratch.rstrip("\n"), swap.rstrip("\n")]
    scratch, swap = crypttab
    for line in crypttab:
        _name, _device, key, options = line.split(" ")
        assert key == "/dev/urandom"
        assert options.split(",")[:3] == ["plain", "cipher=aes-xts-plain64", "size=512"]
    assert scratch.startswith("ephemeral /dev/qubes_dom0/ephemeral ")
    assert swap.startswith("ephemeral-swap /dev/mapper/qubes_dom0-swap ") and swap.endswith(",swap")
    assert "/dev/urandom plain,cipher=aes-xts-plain64,size=512" in result.stdout


def test_rendered_manifest_points_at_every_file(tmp_path: Path) -> None:
    out = tmp_path / "out"
    run_cli("render", str(PILLAR_EXAMPLE), "--out", str(out))
    manifest = json.loads((out / "manifest.json").read_text())
    sources = {a["source"] for a in manifest["artifacts"] if "source" in a}
    on_disk = {str(p.relative_to(out)) for p in out.rglob("*") if p.is_file() and p.name != "manifest.json"}
    assert sources == on_disk
    assert manifest["qubes"]["checks"][0]["get"] == ["qvm-prefs", "--", "default-dvm", "template_for_dispvms"]
    assert manifest["private_cow"] is None, "the patch is opt-in"


def test_no_key_material_in_any_artifact(tmp_path: Path) -> None:
    out = tmp_path / "out"
    run_cli("render", str(PILLAR_EXAMPLE), "--out", str(out))
    for path in out.rglob("*"):
        if path.is_file():
            text = path.read_text()
            assert "key-file" not in text and "keyfile=" not in text and "--key" not in text
    for line in (out / "blocks/scratch/etc/crypttab").read_text().splitlines():
        assert line.split(" ")[2] == "/dev/urandom"


def test_render_refuses_to_overwrite_a_foreign_folder(tmp_path: Path) -> None:
    out = tmp_path / "mine"
    out.mkdir()
    (out / "thesis.tex").write_text("precious")
    result = run_cli("render", str(PILLAR_EXAMPLE), "--out", str(out))
    assert result.status == 2
    assert "refusing to overwrite" in result.stderr
    assert (out / "thesis.tex").read_text() == "precious"
    assert sorted(p.name for p in out.iterdir()) == ["thesis.tex"]


def test_render_replaces_an_earlier_render_whole(tmp_path: Path, write) -> None:
    out = tmp_path / "out"
    run_cli("render", str(PILLAR_EXAMPLE), "--out", str(out))
    minimal = write(description())
    assert run_cli("render", str(minimal), "--out", str(out)).status == 0
    assert not (out / "blocks/swap").exists()
    assert not list(tmp_path.glob(".out.*")), "no staging folder may be left behind"


DOM0_FSTAB = """#
# /etc/fstab
#
/dev/mapper/qubes_dom0-root /                       ext4    defaults,discard,x-systemd.device-timeout=0 1 1
UUID=1d3a0c77-6a1b-4b0e-9f39-0d7f3a6b2c11 /boot                   ext4    defaults        1 2
/dev/mapper/qubes_dom0-swap none                    swap    defaults,x-systemd.device-timeout=0 0 0
tmpfs /tmp tmpfs defaults,size=1G 0 0
"""
DOM0_CRYPTTAB = "luks-0b5e3c9a-1111-2222-3333-444455556666 UUID=0b5e3c9a-1111-2222-3333-444455556666 none discard\n"


def _dom0_root(tmp_path: Path) -> Path:
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    (root / "etc/fstab").write_text(DOM0_FSTAB)
    (root / "etc/crypttab").write_text(DOM0_CRYPTTAB)
    return root


def test_diff_shows_changes_and_exits_1(tmp_path: Path) -> None:
    root = _dom0_root(tmp_path)
    result = run_cli("diff", str(PILLAR_EXAMPLE), "--root", str(root))
    assert result.status == 1
    assert "+#qubes-ephemeral-replaced# /dev/mapper/qubes_dom0-swap none" in result.stdout
    assert "-/dev/mapper/qubes_dom0-swap none" in result.stdout
    assert "+ephemeral /dev/qubes_dom0/ephemeral /dev/urandom plain," in result.stdout
    assert "--- /dev/null\n+++ b/etc/systemd/system/qubes-ephemeral-format.service" in result.stdout
    report = json.loads(run_cli("diff", "--json", str(PILLAR_EXAMPLE), "--root", str(root)).stdout)
    assert report["changed"] is True
    statuses = {f["target"]: f["status"] for f in report["files"]}
    assert (
        statuses["/etc/fstab"] == "modify"
        and statuses["/etc/systemd/system/qubes-ephemeral-format.service"] == "create"
    )


def _apply_render(out: Path, root: Path) -> None:
    """Apply a render folder under root the way the formula does (test double for Salt)."""
    from qubes_ephemeral.dom0 import textedit
    from qubes_ephemeral.render.artifacts import Block, CommentOut, from_dict

    manifest = json.loads((out / "manifest.json").read_text())
    for entry in manifest["artifacts"]:
        target = root / entry["target"].lstrip("/")
        if entry["kind"] in ("block", "comment-out"):
            artifact = from_dict({**entry, "content": (out / entry["source"]).read_text() if "source" in entry else ""})
            if isinstance(artifact, Block):
                target.write_text(textedit.apply_block(target.read_text(), artifact))
            else:
                assert isinstance(artifact, CommentOut)
                target.write_text(textedit.comment_out(target.read_text(), artifact))
        elif entry["kind"] == "file":
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes((out / entry["source"]).read_bytes())
        elif entry["kind"] == "symlink":
            target.parent.mkdir(parents=True, exist_ok=True)
            target.symlink_to(entry["link_to"])
        elif entry["kind"] == "directory":
            target.mkdir(parents=True, exist_ok=True)


def test_diff_is_empty_once_applied(tmp_path: Path) -> None:
    root = _dom0_root(tmp_path)
    out = tmp_path / "out"
    run_cli("render", str(PILLAR_EXAMPLE), "--out", str(out))
    _apply_render(out, root)
    result = run_cli("diff", str(PILLAR_EXAMPLE), "--root", str(root))
    assert result.status == 0, result.stdout
    assert result.stdout == ""
    assert (
        (root / "etc/fstab")
        .read_text()
        .endswith(
            DOM0_FSTAB.replace(
                "/dev/mapper/qubes_dom0-swap none", "#qubes-ephemeral-replaced# /dev/mapper/qubes_dom0-swap none"
            )
        )
    )


def test_diff_refuses_damaged_markers(tmp_path: Path) -> None:
    root = _dom0_root(tmp_path)
    (root / "etc/fstab").write_text(DOM0_FSTAB + "# END qubes-ephemeral scratch\n")
    result = run_cli("diff", str(PILLAR_EXAMPLE), "--root", str(root))
    assert result.status == 2
    assert "markers in the file are damaged" in result.stderr


def test_installed_command_runs_as_a_module() -> None:
    result = subprocess.run([sys.executable, "-m", "qubes_ephemeral", "validate", str(PILLAR_EXAMPLE)],
                            capture_output=True, text=True, cwd=ROOT, check=False)  # fmt: skip
    assert result.returncode == 0, result.stderr


def test_applied_says_whether_the_formulas_changes_are_in_dom0(tmp_path: Path) -> None:
    """Package removal asks this first (RPM %preun, install.sh --uninstall) and refuses on exit 0."""
    nothing = run_cli("applied", "--root", str(tmp_path))
    assert nothing.status == 1 and "nothing applied" in nothing.stdout
    for record in ("etc/qubes-ephemeral/qubes-originals.json", "etc/qubes-ephemeral/applied.json"):
        (tmp_path / record).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / record).write_text("{}\n")
        applied = run_cli("applied", "--root", str(tmp_path))
        assert applied.status == 0 and "state.apply ephemeral.clean" in applied.stdout
        assert f"/{record}" in applied.stdout
        (tmp_path / record).unlink()


def test_endless_input_is_refused_at_the_size_limit() -> None:
    result = run_cli("validate", "/dev/zero")
    assert result.status == 2 and "larger than" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.parametrize("shape", ["a-file", "a-file-on-the-way", "missing"])
def test_diff_with_an_odd_root_refuses_in_one_line(tmp_path: Path, shape: str) -> None:
    root = tmp_path / "root"
    if shape == "a-file":
        root.write_text("")
    elif shape == "a-file-on-the-way":
        (root / "usr/local").mkdir(parents=True)
        (root / "usr/local/libexec").write_text("")
    result = run_cli("diff", str(PILLAR_EXAMPLE), "--root", str(root))
    assert result.status == 2 and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and result.stderr.startswith("qubes-ephemeral: --root")


def test_a_reader_that_stops_early_is_no_error() -> None:
    done = subprocess.run(f"'{sys.executable}' -m qubes_ephemeral reference | true",
                          shell=True, capture_output=True, text=True, check=False)  # fmt: skip
    assert done.stderr == "", done.stderr

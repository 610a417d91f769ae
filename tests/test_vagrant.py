"""The Vagrantfile (a throwaway Fedora 41 machine laid out like dom0) is valid.

What this proves: `vagrant validate` accepts the file for both providers it
supports (the libvirt one with vagrant-libvirt's own checks, VirtualBox with
Vagrant's disk and trigger checks), the provisioning scripts parse and pass
shellcheck, and they build exactly the devices pillar.example names.

What it does not: the box cannot boot here (no box downloads, no nested
virtualisation), so CI validates the file only; provisioning and the boot
with ephemeral storage are tried by hand with `vagrant up`.
"""

from __future__ import annotations

import os
import re
import subprocess
import textwrap
from pathlib import Path

import pytest
import yaml
from conftest import PILLAR_EXAMPLE, ROOT, require

VAGRANTFILE = ROOT / "Vagrantfile"


def vagrant(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """Run vagrant on the repository's Vagrantfile, writing only under tmp_path."""
    require("vagrant")
    environ = {key: value for key, value in os.environ.items() if not key.startswith("VAGRANT_")}
    environ |= {
        "VAGRANT_CHECKPOINT_DISABLE": "1",
        "VAGRANT_HOME": str(tmp_path / "vagrant.d"),
        "VAGRANT_DOTFILE_PATH": str(tmp_path / "dot-vagrant"),  # not .vagrant/ in the repository
        "VAGRANT_CWD": str(ROOT),
        **env,
    }
    return subprocess.run(["vagrant", *args], cwd=ROOT, env=environ, capture_output=True, text=True, check=False)


def test_validates_for_libvirt(tmp_path: Path) -> None:
    plugins = vagrant(tmp_path, "plugin", "list").stdout
    if "vagrant-libvirt" not in plugins:
        message = "needs the vagrant-libvirt plugin (apt-get install vagrant-libvirt)"
        if os.environ.get("STRICT_TOOLS") == "1":
            pytest.fail(message)
        pytest.skip(message)
    result = vagrant(tmp_path, "validate", VAGRANT_DEFAULT_PROVIDER="libvirt")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "validated successfully" in result.stdout


@pytest.mark.parametrize("experimental", ["disks", ""], ids=["disks-flag", "no-flag"])
def test_validates_for_virtualbox(tmp_path: Path, experimental: str) -> None:
    # VirtualBox is not installed here: --ignore-provider stands in for it, and
    # the VM settings it overrides (the disk, or the trigger that stops `up`
    # without VAGRANT_EXPERIMENTAL=disks) are still checked.
    result = vagrant(
        tmp_path,
        "validate",
        "--ignore-provider",
        VAGRANT_DEFAULT_PROVIDER="virtualbox",
        VAGRANT_EXPERIMENTAL=experimental,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "validated successfully" in result.stdout


def test_validate_would_catch_a_broken_disk(tmp_path: Path) -> None:
    """The check above is not vacuous: a bad disk size in the VirtualBox block fails."""
    broken = tmp_path / "Vagrantfile"
    broken.write_text(VAGRANTFILE.read_text().replace('size: "#{DISK_GB}GB"', 'size: "lots"'))
    result = vagrant(
        tmp_path,
        "validate",
        "--ignore-provider",
        VAGRANT_DEFAULT_PROVIDER="virtualbox",
        VAGRANT_EXPERIMENTAL="disks",
        VAGRANT_VAGRANTFILE=str(broken),
    )
    assert result.returncode != 0
    assert "not an integer" in result.stdout + result.stderr


def scripts() -> dict[str, str]:
    """The provisioning scripts: Ruby heredocs NAME = <<~'SHELL' ... SHELL."""
    found = re.findall(r"^(\w+) = <<~'SHELL'\n(.*?)^SHELL$", VAGRANTFILE.read_text(), re.M | re.S)
    return {name: textwrap.dedent(body) for name, body in found}


def test_provisioning_scripts_parse(tmp_path: Path) -> None:
    found = scripts()
    assert set(found) == {"DISK_SCRIPT", "SALT_SCRIPT"}
    for name, body in found.items():
        assert body.startswith("#!/bin/bash\nset -euo pipefail\n"), name
        path = tmp_path / f"{name}.sh"
        path.write_text(body)
        result = subprocess.run(["bash", "-n", str(path)], capture_output=True, text=True, check=False)
        assert result.returncode == 0, f"{name}: {result.stderr}"


def test_provisioning_scripts_shellcheck(tmp_path: Path) -> None:
    require("shellcheck")
    paths = []
    for name, body in scripts().items():
        path = tmp_path / f"{name}.sh"
        path.write_text(body)
        paths.append(str(path))
    result = subprocess.run(["shellcheck", *paths], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def test_builds_the_devices_pillar_example_names() -> None:
    pillar = yaml.safe_load(PILLAR_EXAMPLE.read_text())["ephemeral"]
    disk, salt = scripts()["DISK_SCRIPT"], scripts()["SALT_SCRIPT"]
    assert pillar["scratch"]["device"] == "/dev/qubes_dom0/ephemeral"
    assert "new_lv ephemeral 32G" in disk
    assert pillar["swap"]["device"] == "/dev/mapper/qubes_dom0-swap"
    assert "new_lv swap 1G" in disk and "mkswap /dev/qubes_dom0/swap" in disk
    assert "swap=/dev/mapper/qubes_dom0-swap\n" in disk
    assert 'echo "$swap none swap defaults,x-systemd.device-timeout=0 0 0" >>/etc/fstab' in disk
    # The formula travels with its generator: symlinks are followed on the copy.
    assert "cp -rL /vagrant/ephemeral-formula /srv/formulas/ephemeral-formula" in salt
    assert "cp /vagrant/pillar.example /srv/pillar/ephemeral.sls" in salt
    assert "state.apply ephemeral test=True" in salt

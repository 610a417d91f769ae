"""Boot a small Debian VM under QEMU (TCG) with a dom0-like second disk.

The root image is built once from Debian's packages (recipe/build-image)
and cached outside the repository, keyed by a hash of the recipe, the
kernel version and the Salt version; a new recipe means a new image. Each
test run boots copy-on-write overlays of it, so the cache stays pristine.

A boot runs one job: the host writes job.sh into a folder shared over 9p,
the guest's agent runs it at the end of the boot, writes out/ and powers
off. "Reboot" is simply the next boot of the same disks.
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
SALT_VERSION = "3007.16"
CACHE = Path(os.environ.get("QE_VM_CACHE", "/var/cache/qubes-ephemeral-vm"))
# The guest's Debian release and its Python, which Salt's wheels are built for.
SUITE = os.environ.get("QE_VM_SUITE", "bookworm")
PYTHONS = {"bookworm": "3.11", "trixie": "3.13"}
BOOT_TIMEOUT = 900  # a harness safety net against a hung VM, not a test


def kernel() -> tuple[str, Path, Path]:
    """Debian's stock kernel installed on the host: version, vmlinuz, initrd."""
    kernels = sorted(glob.glob("/boot/vmlinuz-*-amd64"))
    if not kernels:
        raise RuntimeError("no Debian kernel in /boot: apt-get install linux-image-amd64")
    vmlinuz = Path(kernels[-1])
    version = vmlinuz.name.removeprefix("vmlinuz-")
    return version, vmlinuz, Path(f"/boot/initrd.img-{version}")


def _recipe_hash(kernel_version: str) -> str:
    digest = hashlib.sha256(f"{kernel_version} salt=={SALT_VERSION} {SUITE}".encode())
    for path in sorted((HERE / "recipe").iterdir()):
        digest.update(path.name.encode() + path.read_bytes())
    return digest.hexdigest()[:16]


def host_python(version: str) -> str:
    """A Python VERSION on the host (to build the guest's wheels): this one, one in PATH, or pyenv's."""
    if f"{sys.version_info[0]}.{sys.version_info[1]}" == version:
        return sys.executable
    pyenv = Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv")) / "versions"
    for candidate in (shutil.which(f"python{version}"), *sorted(glob.glob(f"{pyenv}/{version}*/bin/python{version}"))):
        if candidate and subprocess.run([candidate, "-c", ""], capture_output=True, check=False).returncode == 0:
            return candidate
    raise RuntimeError(f"the {SUITE} guest's Salt wheels need Python {version} on the host")


def image() -> Path:
    """The cached root image, built when the recipe changed."""
    version, _, _ = kernel()
    if SUITE not in PYTHONS:
        raise RuntimeError(f"QE_VM_SUITE={SUITE}: bookworm or trixie")
    python_version = PYTHONS[SUITE]
    path = CACHE / f"root-{SUITE}-{_recipe_hash(version)}.img"
    if path.exists():
        return path
    CACHE.mkdir(parents=True, exist_ok=True)
    wheels = CACHE / f"wheels-salt-{SALT_VERSION}-py{python_version}"
    if not wheels.exists():
        staging = CACHE / f"{wheels.name}.tmp"
        shutil.rmtree(staging, ignore_errors=True)
        # Built with the guest's Python version (bookworm 3.11, trixie 3.13).
        python = host_python(python_version)
        subprocess.run([python, "-m", "pip", "wheel", "--quiet", "--disable-pip-version-check", "-w", str(staging),
                        f"salt=={SALT_VERSION}"], check=True)  # fmt: skip
        staging.rename(wheels)
    subprocess.run([str(HERE / "recipe" / "build-image"), str(path), version, str(wheels), SUITE], check=True)
    for old in CACHE.glob(f"root-{SUITE}-*.img"):
        if old != path:
            old.unlink()
    return path


def package_tarball(work: Path) -> bytes:
    """The tarball of the dom0 package, built by packaging/build as a user would."""
    dist = work / "dist"
    subprocess.run([str(ROOT / "packaging" / "build"), str(dist)], check=True, capture_output=True)
    return next(dist.glob("qubes-ephemeral-*.tar.gz")).read_bytes()


def find_in_file(path: Path, needles: dict[str, bytes], chunk: int = 16 * 1024 * 1024) -> set[str]:
    """The labels of the needles found anywhere in the file (a raw disk image), read in
    chunks with an overlap so that none is missed at a boundary."""
    found: set[str] = set()
    overlap = max(len(needle) for needle in needles.values()) - 1
    tail = b""
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            data = tail + block
            found.update(label for label, needle in needles.items() if label not in found and needle in data)
            tail = data[-overlap:]
    return found


@dataclass
class Boot:
    rc: int | None  # the job's exit status; None when the agent never ran
    stdout: str
    stderr: str
    out: Path  # files the job wrote
    console: str
    seconds: float  # wall time of the whole boot-to-poweroff cycle

    def json(self, name: str) -> Any:
        return json.loads((self.out / name).read_text())


class VM:
    def __init__(self, work: Path) -> None:
        self.work = work
        self.version, self.vmlinuz, self.initrd = kernel()
        self.root = work / "root.qcow2"
        self.data = work / "data.qcow2"
        self.share = work / "share"
        self.boots = 0
        base = image()
        subprocess.run(
            ["qemu-img", "create", "-q", "-f", "qcow2", "-F", "raw", "-b", str(base), str(self.root)], check=True
        )
        # Room for dom0-like volumes: two 32 GiB LVs, sparse.
        subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(self.data), "72G"], check=True)
        self.share.mkdir()

    def boot(
        self,
        job: str,
        files: dict[str, Path | str | bytes] | None = None,
        initrd: Path | None = None,
        cpu: str | None = None,
        drives: tuple[str, ...] = (),
        timeout: float = BOOT_TIMEOUT,
    ) -> Boot:
        """Boot once, run ``job`` (shell) in the guest, return what it left.
        ``initrd``: another initramfs than the kernel's own; ``cpu``: QEMU's
        ``-cpu`` model (``max`` has AES-NI); ``drives``: more ``-drive`` specs,
        after the root and data disks (vdc, vdd, ...); ``timeout``: seconds
        for the whole boot (a full bench boot runs longer than a test's)."""
        self.boots += 1
        out = self.share / "out"
        shutil.rmtree(out, ignore_errors=True)
        (self.share / "job.sh").write_text(job)
        for name, source in (files or {}).items():
            target = self.share / name
            if isinstance(source, bytes):
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(source)
            elif isinstance(source, str):
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_text(source)
            elif not target.exists():
                shutil.copytree(source, target, symlinks=False) if source.is_dir() else shutil.copy(source, target)
        console = self.work / f"console-{self.boots}.log"
        command = [
            "qemu-system-x86_64", "-accel", "tcg", "-m", "1024", "-smp", "2", "-display", "none", "-no-reboot",
            "-kernel", str(self.vmlinuz), "-initrd", str(initrd or self.initrd),
            "-append", "root=/dev/vda rw console=ttyS0 panic=-1 systemd.show_status=1",
            "-drive", f"file={self.root},if=virtio,format=qcow2",
            "-drive", f"file={self.data},if=virtio,format=qcow2",
            *[part for spec in drives for part in ("-drive", spec)], *(["-cpu", cpu] if cpu else []),
            "-virtfs", f"local,path={self.share},mount_tag=host,security_model=none,id=host",
            "-net", "none", "-serial", f"file:{console}", "-monitor", "none",
        ]  # fmt: skip
        started = time.monotonic()
        subprocess.run(command, check=True, timeout=timeout, stdin=subprocess.DEVNULL)
        seconds = time.monotonic() - started
        rc_file = out / "rc"
        return Boot(
            rc=int(rc_file.read_text()) if rc_file.exists() else None,
            stdout=(out / "stdout").read_text() if (out / "stdout").exists() else "",
            stderr=(out / "stderr").read_text() if (out / "stderr").exists() else "",
            out=out,
            console=console.read_text(errors="replace"),
            seconds=seconds,
        )

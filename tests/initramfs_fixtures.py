"""Initramfs images for tests, made with GNU cpio and the real compressors."""

from __future__ import annotations

import gzip
import subprocess
import tempfile
from pathlib import Path

from required_tools import require

# An init shaped like Qubes' VM /init (qubes-linux-utils dracut/simple/init.sh):
# root copy-on-write as dmroot, then the line that mounts it, then switch_root.
QUBES_LIKE_INIT = """#!/bin/sh
echo "init for tests"
echo "0 2048 snapshot /dev/xvda /dev/xvdc2 N 16" | /sbin/dmsetup create dmroot
mkdir -p /sysroot
    mount /dev/mapper/dmroot /sysroot -o rw
NEWROOT=/sysroot
exec /sbin/switch_root $NEWROOT /sbin/init
"""


def make_initramfs(
    init: str = QUBES_LIKE_INIT, compress: str = "gzip", early: bool = False, tmp: Path | None = None
) -> bytes:
    """An initramfs made by GNU cpio: /init, a folder and a file, compressed;
    with ``early``, an uncompressed archive first (as early microcode is)."""
    require("cpio")

    def cpio(files: dict[str, tuple[int, bytes]]) -> bytes:
        with tempfile.TemporaryDirectory(dir=tmp) as folder:
            root = Path(folder)
            for name, (mode, data) in files.items():
                path = root / name
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(data)
                path.chmod(mode)
            names = "\n".join(sorted(files) + sorted({str(Path(n).parent) for n in files if "/" in n})) + "\n"
            return subprocess.run(["cpio", "--quiet", "-o", "-H", "newc"], cwd=root, input=names.encode(),
                                  capture_output=True, check=True).stdout  # fmt: skip

    main = cpio({"init": (0o755, init.encode()), "etc/os-release": (0o644, b"NAME=test\n"), "bin/sh": (0o755, b"x")})
    if compress == "gzip":
        main = gzip.compress(main, mtime=0)
    elif compress in ("zstd", "xz"):
        require(compress)
        main = subprocess.run([compress, "-c", "-q"], input=main, capture_output=True, check=True).stdout
    if early:
        first = cpio({"kernel/x86/microcode/GenuineIntel.bin": (0o644, b"\x01" * 100)})
        return first + b"\0" * (-len(first) % 512) + main
    return main


def extract_with_gnu_cpio(archive: bytes, folder: Path) -> dict[str, bytes]:
    folder.mkdir()
    subprocess.run(["cpio", "--quiet", "-idm", "--no-absolute-filenames"], cwd=folder, input=archive, check=True)
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}

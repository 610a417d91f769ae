"""What a disposable's start costs the qubesd extension, with a realistic VM kernel.

Host-side, no VM: the extension runs against the stand-in of qubes-core-admin
(tests/qubesd_standin), loaded as tests/test_qubesd_extension.py loads it. The
kernel's initramfs is Qubes-like and patched, over 20 MB (mostly random
bytes, as compressed modules are). One start is the work of the three
handlers a named disposable's start runs: admin.vm.Start's permission check,
domain-pre-start and domain-spawn.

- steady: starts after the first, the kernel's state cached;
- first start from the record: a fresh extension (qubesd just started; the
  record is loaded then, outside the timed start), the state taken from the
  record vm-initramfs wrote (what the boot service does);
- first start without a record: the fallback, reading the initramfs in the
  event loop.

It checks (assert) that only the last reads the initramfs.
Usage: python bench/extension.py (prints the figures as JSON).
"""

from __future__ import annotations

import gzip
import json
import os
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
STANDIN = ROOT / "tests" / "qubesd_standin"
KERNEL = "6.6.0"
RANDOM_BYTES = 20 * 1024 * 1024  # incompressible: the image stays over 20 MB once gzipped

for folder in (ROOT / "bench", ROOT / "tests", ROOT / "generator"):
    if str(folder) not in sys.path:
        sys.path.append(str(folder))

import report  # noqa: E402
from initramfs_fixtures import QUBES_LIKE_INIT  # noqa: E402
from qubes_ephemeral.payload import vm_initramfs  # noqa: E402


def qubes_like_initramfs() -> bytes:
    """A patched Qubes-like VM initramfs: /init as Qubes' own, a few files and a
    20 MiB one of random bytes, in one gzipped newc archive, then our patch."""
    entries = [
        vm_initramfs.Entry("init", vm_initramfs.S_IFREG | 0o755, QUBES_LIKE_INIT.encode()),
        vm_initramfs.Entry("etc/os-release", vm_initramfs.S_IFREG | 0o644, b"NAME=bench\n"),
        vm_initramfs.Entry("bin/sh", vm_initramfs.S_IFREG | 0o755, b"x"),
        vm_initramfs.Entry("lib/modules/bench.ko", vm_initramfs.S_IFREG | 0o644, os.urandom(RANDOM_BYTES)),
    ]
    original = gzip.compress(vm_initramfs.write_newc(entries), compresslevel=6, mtime=0)
    hook = (Path(vm_initramfs.__file__).parent / "private-cow.sh").read_bytes()
    return vm_initramfs.patched_bytes(original, hook)


@contextmanager
def standin_qubes() -> Iterator[Any]:
    """The extension module, imported against the stand-in qubes modules; what
    was imported before is put back afterwards."""
    names = [m for m in sys.modules if m == "qubes" or m.startswith(("qubes.", "qubes_ephemeral.qubesd"))]
    saved = {name: sys.modules.pop(name) for name in names}
    sys.path.insert(0, str(STANDIN))
    try:
        import importlib

        importlib.import_module("qubes.ext").Extension._instances = {}
        yield importlib.import_module("qubes_ephemeral.qubesd.extension")
    finally:
        sys.path.remove(str(STANDIN))
        for name in [m for m in sys.modules if m == "qubes" or m.startswith(("qubes.", "qubes_ephemeral.qubesd"))]:
            del sys.modules[name]
        sys.modules.update(saved)


@contextmanager
def counted_reads(cls: Any) -> Iterator[list[Path]]:
    """Each initramfs the extension reads itself (its _read_status) while it is open."""
    reads: list[Path] = []
    real = cls._read_status

    def counted(path: Path) -> tuple[str, object]:
        reads.append(path)
        return real(path)

    cls._read_status = staticmethod(counted)
    try:
        yield reads
    finally:
        cls._read_status = staticmethod(real)


def bench_extension(runs: int = 200) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="bench-extension-") as folder, standin_qubes() as extension:
        tmp = Path(folder)
        kernels = tmp / "vm-kernels"
        initramfs = kernels / KERNEL / "initramfs"
        initramfs.parent.mkdir(parents=True)
        initramfs.write_bytes(qubes_like_initramfs())
        assert initramfs.stat().st_size >= 20_000_000
        record = tmp / "run" / "vm-kernels.json"
        cls = extension.EphemeralDisposables
        cls.stamp = tmp / "run" / "qubesd-extension.json"
        cls.kernels_dir = kernels
        cls.status_record = record
        cls.record_owner = os.getuid()  # root's in dom0; here the record is ours
        assert vm_initramfs.main(["status", "-q", "--kernels-dir", str(kernels), "--record", str(record)]) == 0

        import qubes.vm
        import qubes.vm.dispvm

        # As the tests build them: a marked disposable template with private cow, and a named disposable.
        pool = qubes.vm.Pool("vm-pool", ephemeral_volatile=False)
        fedora = qubes.vm.AppVM("fedora-41", pool=pool, kernel=KERNEL)
        template = qubes.vm.AppVM("default-dvm", template=fedora, template_for_dispvms=True, pool=pool)
        template.features["qubes-ephemeral"] = True
        template.features["qubes-ephemeral-private"] = "cow"
        named = qubes.vm.dispvm.DispVM("sys-usb", template, auto_cleanup=False)

        def start(ext: Any) -> float:
            """The extension's work in one start, in ms."""
            began = time.perf_counter_ns()
            ext.on_admin_start(None, "admin-permission:admin.vm.Start", dest=named)
            ext.on_domain_pre_start(named, "domain-pre-start", start_guid=True, mem_required=None)
            protected = not named.volumes["private"].rw
            ext.on_domain_spawn(named, "domain-spawn", start_guid=True)
            elapsed = (time.perf_counter_ns() - began) / 1e6
            assert protected and named.volumes["private"].rw, "read-only for the start, put back once spawned"
            return elapsed

        def fresh() -> Any:
            """A new extension, as a just-started qubesd has (bypassing the singleton)."""
            instance = object.__new__(cls)
            instance.__init__()
            return instance

        def first_starts(count: int) -> tuple[list[float], list[Path]]:
            with counted_reads(cls) as reads:
                return [start(fresh()) for _ in range(count)], reads

        with counted_reads(cls) as reads:
            ext = cls()  # what qubesd does for each qubes.ext entry point
            start(ext)  # the first start fills the cache
            steady = [start(ext) for _ in range(runs)]
        assert reads == [], "steady starts read no initramfs"
        from_record, reads = first_starts(20)
        assert reads == [], "a first start with the record reads no initramfs"
        record.unlink()
        without_record, reads = first_starts(5)
        assert reads == [initramfs] * 5, "without the record, each first start reads the initramfs once"
        return {
            "initramfs_bytes": initramfs.stat().st_size,
            "steady_ms": report.stats(steady),
            "first_start_from_record_ms": report.stats(from_record),
            "first_start_without_record_ms": report.stats(without_record),
        }


if __name__ == "__main__":
    print(json.dumps(bench_extension(), indent=1))

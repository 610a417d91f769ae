"""The benchmark: boot-time cost and I/O of ephemeral storage against the
alternatives, side by side in one VM run, plus the formula's no-op re-apply
and the generator on a large description.

Usage: scripts/bench [--quick] [--out DIR]

It boots the test VM twice (tests/vm, QEMU/TCG) with a 32 GiB sparse LV (4 GiB
with --quick, and small fio sizes). The first boot (QEMU's default CPU)
installs the package as in dom0, applies the formula (activate: boot) and
runs bench/guest.py there; the second (``-cpu max``, which has AES-NI, and a
throttled third disk) records how long our units took in that boot and runs
the AES-NI comparisons. Then, on the host, the qubesd extension's cost per
disposable start, the generator, and a Salt apply and audit with 200 qubes.
It writes into DIR (default bench/results):
latest.json and a dated copy (every run, the machine, the date, medians and
ratios), latest.md (the tables) and latest.png (the chart). A full run into
bench/results also puts the tables and the chart into docs/benchmarks.md,
between its bench markers. Nothing is timed against a limit: these are figures.
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import shutil
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "tests" / "vm"), str(ROOT / "bench")]

import extension  # noqa: E402
import report  # noqa: E402
import salt_scale  # noqa: E402
import vmharness  # noqa: E402

MODES = {
    "full": {"lv_size": "32G", "format_runs": 7, "io_runs": 5, "seq_size": "256M", "rand_size": "32M", "salt_runs": 7,
             "aesni": {"runs": 5, "io_bound_size": "64M", "cpu_bound_size": "128M"},
             "scale": {"templates": 200, "runs": 3}, "extension_runs": 200},
    "quick": {"lv_size": "4G", "format_runs": 5, "io_runs": 5, "seq_size": "8M", "rand_size": "2M", "salt_runs": 5,
              "aesni": {"runs": 5, "io_bound_size": "4M", "cpu_bound_size": "8M"},
              "scale": {"templates": 5, "runs": 2}, "extension_runs": 20},
}  # fmt: skip
# The AES-NI boot's third disk (vdc), throttled below what the emulated CPU
# encrypts (about 30 MiB/s for aes-xts 512-bit with -cpu max), as a real SSD
# sits below AES-NI: the I/O-bound case.
THROTTLE_BYTES_PER_SECOND = 10 * 1048576
BOOT_SECONDS = 3 * 3600  # a full run's first boot alone can pass 15 minutes on 2 TCG vCPUs
# The page that shows the figures, and the markers around the part this script writes.
DOC = ROOT / "docs" / "benchmarks.md"
DOC_START = "<!-- BEGIN bench (written by scripts/bench; do not edit) -->"
DOC_END = "<!-- END bench -->"
CHART = "../bench/results/latest.png"  # as the page links it

JOB = """set -eu
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
OUT=/mnt/host/out
pvcreate -q /dev/vdb
vgcreate -q qubes_dom0 /dev/vdb
lvcreate -q -y -L {lv_size} -n bench qubes_dom0
lvcreate -q -y -L 512M -n ephemeral qubes_dom0
lvcreate -q -y -L 256M -n swap qubes_dom0
mkswap -q /dev/qubes_dom0/swap
udevadm settle
# qubes-ephemeral as in dom0, with the emulated Qubes admin commands (as in the VM suite).
mkdir -p /tmp/package /srv/pillar /srv/bench-salt /var/lib/qubes-emulation
tar -xzf qubes-ephemeral.tar.gz -C /tmp/package
for installer in /tmp/package/qubes-ephemeral-*/install.sh; do "$installer" --force --no-restart >/dev/null; done
cp -r qubes_emulation /opt/qubes-emulation
for command in qvm-pool qvm-volume qvm-prefs qubes-prefs qvm-features qvm-ls; do
    ln -s /opt/qubes-emulation/qubes_admin.py "/usr/local/bin/$command"
done
export QUBES_EMULATION_STATE=/var/lib/qubes-emulation/state.json
python3 -c 'import json, qubes_emulation as q; print(json.dumps(q.dom0_like_state()))' >"$QUBES_EMULATION_STATE"
cp pillar/* /srv/pillar/
# The formula needs the qubesd extension loaded: a process under qubesd's name, and its stamp.
python3 -c 'import time; time.sleep(10**6)' /usr/bin/qubesd &
mkdir -p /run/qubes-ephemeral
printf '{{"version": "bench", "pid": %d}}\\n' "$!" >/run/qubes-ephemeral/qubesd-extension.json
printf 'bench-trivial:\\n  file.managed:\\n    - name: /tmp/bench-trivial\\n    - contents: one file\\n' >/srv/bench-salt/trivial.sls
# Apply the formula once (activate: boot): the bench reads our formatter from its unit.
salt-call --local --pillar-root=/srv/pillar state.apply ephemeral >"$OUT/first-apply.log" 2>&1 || true
test -e /etc/systemd/system/qubes-ephemeral-format.service
python3 guest.py config.json main >"$OUT/bench.json"
# The next boot's job asks systemd about that boot, which must then be over:
# the agent, a oneshot that ends the boot, runs as Type=exec there.
mkdir -p /etc/systemd/system/qe-agent.service.d
printf '[Service]\nType=exec\n' >/etc/systemd/system/qe-agent.service.d/bench.conf
"""

AESNI_JOB = """set -eu
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
python3 guest.py config.json aesni >/mnt/host/out/aesni.json
"""


def machine() -> dict[str, Any]:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor() or "unknown CPU")  # fmt: skip
    qemu = subprocess.run(["qemu-system-x86_64", "--version"], capture_output=True, text=True, check=False)
    return {
        "host_cpu": cpu,
        "host_cores": len(
            [line for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("processor")]
        ),
        "host_kernel": platform.release(),
        "qemu": qemu.stdout.split()[3] if qemu.returncode == 0 else "unknown",
        "accelerator": "tcg",
    }


def bench_generator(templates: int = 200, runs: int = 5) -> dict[str, Any]:
    """Validate and render a description with many disposable templates, in this process."""
    from qubes_ephemeral.api import describe
    from qubes_ephemeral.render.manifest import render

    names = "".join(f"      dvm-{index:03d}: {{private: persistent}}\n" for index in range(templates))
    text = ("ephemeral:\n  scratch:\n    device: /dev/qubes_dom0/ephemeral\n  qubes:\n    disposable_templates:\n"
            + names).encode()  # fmt: skip
    seconds = []
    for _ in range(runs):
        start = time.perf_counter()
        manifest = render(describe(text))
        seconds.append(time.perf_counter() - start)
    assert len(manifest.qubes["settings"]) == 2 * templates  # type: ignore[index]  # the mark, the private setting
    tracemalloc.start()
    render(describe(text))
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return {"templates": templates, "seconds": report.stats(seconds), "peak_kib": peak / 1024,
            "python": platform.python_version()}  # fmt: skip


def run_vm(mode: str, work: Path) -> dict[str, Any]:
    config = MODES[mode]
    vm = vmharness.VM(work)
    aesni = {**config["aesni"], "slow_device": "/dev/vdc", "fast_device": "/dev/qubes_dom0/bench"}
    files: dict[str, Path | str | bytes] = {
        "guest.py": (ROOT / "bench" / "guest.py").read_text(),
        "config.json": json.dumps({"device": "/dev/qubes_dom0/bench", **config, "aesni": aesni}),
        "qubes-ephemeral.tar.gz": vmharness.package_tarball(work),
        "qubes_emulation": ROOT / "tests" / "qubes_emulation",
        "pillar/top.sls": "base:\n  '*':\n    - ephemeral\n",
        "pillar/ephemeral.sls": (ROOT / "pillar.example").read_text(),
    }
    boot = vm.boot(JOB.format(**config), files, timeout=BOOT_SECONDS)
    if boot.rc != 0:
        raise SystemExit(f"bench: the VM job failed (exit {boot.rc}):\n{boot.stderr[-3000:]}")
    result = json.loads((boot.out / "bench.json").read_text())
    slow = work / "slow.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(slow), "2G"], check=True)
    drive = f"file={slow},if=virtio,format=qcow2,throttling.bps-total={THROTTLE_BYTES_PER_SECOND}"
    boot = vm.boot(AESNI_JOB, cpu="max", drives=(drive,), timeout=BOOT_SECONDS)
    if boot.rc != 0:
        raise SystemExit(f"bench: the AES-NI boot's job failed (exit {boot.rc}):\n{boot.stderr[-3000:]}")
    second = json.loads((boot.out / "aesni.json").read_text())
    return {**result, **second, "aesni": {**second["aesni"], "throttle_bytes_per_second": THROTTLE_BYTES_PER_SECOND}}


def update_doc(markdown: str, doc: Path = DOC) -> None:
    """Replace what lies between the bench markers of the page with the tables and the chart."""
    text = doc.read_text()
    start, end = text.index(DOC_START), text.index(DOC_END)
    block = f"{DOC_START}\n{markdown}\n![Benchmark chart]({CHART})\n{DOC_END}"
    doc.write_text(text[:start] + block + text[end + len(DOC_END) :])


def write_reports(result: dict[str, Any], out: Path, mode: str) -> None:
    """latest.md and latest.png from a result; docs/benchmarks.md too for a full run into bench/results."""
    out.mkdir(parents=True, exist_ok=True)
    markdown = report.markdown(result)
    (out / "latest.md").write_text(markdown)
    report.chart(result, str(out / "latest.png"))
    if mode == "full" and out.resolve() == (ROOT / "bench" / "results").resolve():
        update_doc(markdown)
    print(markdown)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="scripts/bench", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes (what CI runs)")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results", help="folder for the results")
    parser.add_argument("--work", type=Path, default=ROOT / "build" / "bench", help="the VM's disks and logs")
    parser.add_argument("--from-json", type=Path, metavar="FILE",
                        help="no new measurement: write the table, chart (and docs/benchmarks.md) again from a result file")  # fmt: skip
    args = parser.parse_args(argv)
    if args.from_json:
        result = json.loads(args.from_json.read_text())
        result["summary"] = report.summarise(result["raw"])
        write_reports(result, args.out, result["config"]["mode"])
        return 0
    mode = "quick" if args.quick else "full"
    shutil.rmtree(args.work, ignore_errors=True)
    args.work.mkdir(parents=True)
    now = datetime.datetime.now(datetime.UTC)
    raw = run_vm(mode, args.work)
    result = {
        "date": now.strftime("%Y-%m-%d %H:%M UTC"),
        "machine": machine(),
        "guest": raw.pop("guest"),
        "config": {"mode": mode, **MODES[mode]},
        "raw": raw,
        "generator": bench_generator(),
        "extension": extension.bench_extension(MODES[mode]["extension_runs"]),
        "salt_scale": salt_scale.bench_salt_scale(**MODES[mode]["scale"]),
    }
    result["summary"] = report.summarise(raw)
    result.update(report.headlines(result))
    args.out.mkdir(parents=True, exist_ok=True)
    text = json.dumps(result, indent=1, sort_keys=True) + "\n"
    (args.out / "latest.json").write_text(text)
    (args.out / f"{now.strftime('%Y-%m-%dT%H%M%SZ')}-{mode}.json").write_text(text)
    write_reports(result, args.out, mode)
    print(f"format ratio vs tmp=ext4: {result['format_ratio_vs_tmp']:.3f} (median of "
          f"{len(raw['format']['ours'])} runs each); seq write ratio vs raw: {result['seq_write_ratio_vs_raw']:.2f}")  # fmt: skip
    print(f"written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

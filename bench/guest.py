"""Guest side of the benchmark: runs in the test VM (system Python, standard
library only) and prints every measured run as JSON. The host side
(bench/run.py) computes medians and ratios; nothing here is summarised.

Usage: guest.py CONFIG.json [main|aesni]  (sizes and run counts, see run.py)
  main:  the first boot (default CPU): format, I/O, Salt;
  aesni: the second boot (-cpu max, with AES-NI): this boot's units, then
         crypto with AES-NI, I/O-bound (a throttled disk) and CPU-bound.
"""

import json
import os
import subprocess
import sys
import time

NAME = "qebench"
MAPPING = f"/dev/mapper/{NAME}"
MOUNT = "/mnt/bench"

# How each setup opens the device (cryptsetup plain; None: the raw LV) and
# makes its filesystem (None: fio on the block device).
OURS_CRYPT = ["--cipher", "aes-xts-plain64", "--key-size", "512", "--sector-size", "4096",
              "--perf-no_read_workqueue", "--perf-no_write_workqueue"]  # fmt: skip
# Seed 000 (qubes-users, 2016): crypttab "tmp,cipher=aes-cbc-essiv:sha256": plain
# defaults otherwise (256-bit key, 512-byte sectors), ext4 by systemd-makefs.
SEED_CRYPT = ["--cipher", "aes-cbc-essiv:sha256"]
# Its fstab options, less those this kernel refuses (noacl, nouser_xattr are
# gone; norecovery needs a read-only mount).
SEED_MOUNT = "barrier=0,delalloc,data=writeback,commit=36000,noatime,nodiratime,noauto_da_alloc,noinit_itable"
# Qubes' ephemeral volatile volumes (qubes-core-admin qubes/storage/__init__.py):
# cryptsetup --type=plain --cipher=aes-xts-plain64, its defaults otherwise.
QUBES_CRYPT = ["--cipher", "aes-xts-plain64"]
OURS_MOUNT = "noatime,nodev,nosuid"
# The trade-offs the description offers, each one setting away from ours:
# key_size: 256, and workqueue_bypass: false.
OURS_KEY256 = [("256" if part == "512" else part) for part in OURS_CRYPT]
OURS_WORKQUEUES = [part for part in OURS_CRYPT if not part.startswith("--perf-")]
MAKEFS = "/lib/systemd/systemd-makefs"


def run(argv, **kwargs):
    result = subprocess.run(argv, capture_output=True, text=True, **kwargs)
    if result.returncode != 0:
        raise SystemExit(
            f"{' '.join(argv)}: exit {result.returncode}\n{result.stdout[-4000:]}\n{result.stderr[-4000:]}"
        )
    return result


def ours_mkfs(fs):
    """The formatter our unit runs (generator render.mkfs_command), read from the unit."""
    with open("/etc/systemd/system/qubes-ephemeral-format.service") as unit:
        line = next(text for text in unit if text.startswith("ExecStart="))
    argv = line.split("=", 1)[1].split()[:-1] + [MAPPING]
    if fs == "xfs":
        return ["/usr/sbin/mkfs.xfs", "-q", "-f", "-K", "-m", "reflink=1", MAPPING]
    return argv


def open_crypt(device, options):
    run(["cryptsetup", "open", "--type", "plain", "--key-file", "/dev/urandom", *options, device, NAME])


def close(mounted):
    if mounted:
        run(["umount", MOUNT])
    subprocess.run(["cryptsetup", "close", NAME], check=False, capture_output=True)


def timed(argv):
    start = time.monotonic()
    run(argv)
    return time.monotonic() - start


def prepare(device, crypt, mkfs, mount_options):
    """crypt open -> filesystem -> mounted; seconds for each step."""
    os.makedirs(MOUNT, exist_ok=True)
    steps = {}
    start = time.monotonic()
    open_crypt(device, crypt)
    steps["open"] = time.monotonic() - start
    steps["mkfs"] = timed(mkfs)
    steps["mount"] = timed(["mount", "-o", mount_options, MAPPING, MOUNT])
    steps["total"] = sum(steps.values())
    return steps


FORMATS = {
    "ours": lambda: (OURS_CRYPT, ours_mkfs("ext4"), OURS_MOUNT),
    "ours_xfs": lambda: (OURS_CRYPT, ours_mkfs("xfs"), OURS_MOUNT),
    "tmp_ext4": lambda: (OURS_CRYPT, [MAKEFS, "ext4", MAPPING], OURS_MOUNT),
    "seed000": lambda: (SEED_CRYPT, [MAKEFS, "ext4", MAPPING], SEED_MOUNT),
}


def bench_format(device, runs):
    results = {name: [] for name in FORMATS}
    for _ in range(runs):  # interleaved, so that drift in the machine hits all alike
        for name, setup in FORMATS.items():
            crypt, mkfs, options = setup()
            try:
                results[name].append(prepare(device, crypt, mkfs, options))
            finally:
                close(mounted=os.path.ismount(MOUNT))
    return results


def fio(target, workload, size, direct=True):
    rw, bs = {"seq_write": ("write", "1M"), "seq_read": ("read", "1M"), "rand_write_4k": ("randwrite", "4k")}[workload]
    argv = ["fio", "--name=bench", f"--filename={target}", f"--rw={rw}", f"--bs={bs}", f"--size={size}",
            "--ioengine=psync", f"--direct={int(direct)}", "--output-format=json", "--end_fsync=1"]  # fmt: skip
    result = json.loads(run(argv).stdout)["jobs"][0]
    side = result["read"] if rw == "read" else result["write"]
    return {"bytes_per_second": side["bw_bytes"], "iops": side["iops"]}


def io_setups(device):
    """name -> (how to open it, what fio writes to); each a fresh start."""
    file = f"{MOUNT}/fio.dat"
    return {
        "raw": (None, None, None, device),
        "plain_ext4": (None, ["mkfs.ext4", "-q", "-F", device], "noatime", file),
        "ours": (OURS_CRYPT, ours_mkfs("ext4"), OURS_MOUNT, file),
        "seed000": (SEED_CRYPT, [MAKEFS, "ext4", MAPPING], SEED_MOUNT, file),
        "qubes_volatile": (QUBES_CRYPT, None, None, MAPPING),
        "ours_key256": (OURS_KEY256, ours_mkfs("ext4"), OURS_MOUNT, file),
        "ours_workqueues": (OURS_WORKQUEUES, ours_mkfs("ext4"), OURS_MOUNT, file),
    }


IO_FIRST_BOOT = ("raw", "plain_ext4", "ours", "seed000", "qubes_volatile")


def bench_io(device, runs, seq_size, rand_size=None, only=None):
    """fio on each setup (``only``: these setups), fresh for each run, interleaved."""
    workloads = {"seq_write": seq_size, "seq_read": seq_size, "rand_write_4k": rand_size}
    workloads = {workload: size for workload, size in workloads.items() if size}
    setups = {name: setup for name, setup in io_setups(device).items() if name in (only or IO_FIRST_BOOT)}
    results = {name: {w: [] for w in workloads} for name in setups}
    for _ in range(runs):
        for name, (crypt, mkfs, options, target) in setups.items():
            source = device
            if crypt is not None:
                open_crypt(device, crypt)
                source = MAPPING
            if mkfs is not None:
                run([part if part != device else source for part in mkfs])
                os.makedirs(MOUNT, exist_ok=True)
                run(["mount", "-o", options, source, MOUNT])
            try:
                for workload, size in workloads.items():
                    results[name][workload].append(fio(target, workload, size))
            finally:
                if mkfs is not None:
                    run(["umount", MOUNT])
                if crypt is not None:
                    run(["cryptsetup", "close", NAME])
    return results


def cryptsetup_benchmark(ciphers=(("aes-xts", "512"), ("aes-cbc", "256"))):
    out = "".join(run(["cryptsetup", "benchmark", "--cipher", cipher, "--key-size", bits]).stdout
                  for cipher, bits in ciphers)  # fmt: skip
    rows = {}
    for line in out.splitlines():
        fields = line.split()
        if len(fields) >= 6 and fields[0] in ("aes-xts", "aes-cbc") and fields[1].endswith("b"):
            rows[f"{fields[0]}-{fields[1]}"] = {"encrypt_mib_s": float(fields[2]), "decrypt_mib_s": float(fields[4])}
    return rows


def bench_salt(runs):
    """Wall time of a no-op re-apply of the formula and of a one-file state."""

    def call(state):
        # The formula's file root comes from the package's minion.d file, as in dom0. The
        # trivial state has its own file root, so its own cache too: Salt keeps one file
        # list per environment for 20 s, whatever the roots, and the other run would
        # then not find its files.
        roots = (
            ["--file-root=/srv/bench-salt", "--cachedir=/var/cache/salt-bench-trivial"] if state == "trivial" else []
        )
        start = time.monotonic()
        run(["salt-call", "--local", "--pillar-root=/srv/pillar", *roots, "--out=highstate",
             "--state-verbose=False", "state.apply", state])  # fmt: skip
        return time.monotonic() - start

    call("ephemeral")  # the first apply changes things; not measured
    call("trivial")
    return {"reapply_ephemeral": [call("ephemeral") for _ in range(runs)],
            "trivial_state": [call("trivial") for _ in range(runs)]}  # fmt: skip


def boot_units():
    """This boot as systemd saw it: its critical chain (as text, parsed on the
    host) and, for each unit of ours, when it started and how long it took.
    The agent runs as Type=exec this boot (run.py's drop-in), so that the boot
    finishes before the job asks."""
    subprocess.run(["systemctl", "is-system-running", "--wait"], capture_output=True, check=False)
    listed = run(["systemctl", "list-units", "--all", "--plain", "--no-legend", "--no-pager"]).stdout
    ours = sorted({line.split()[0] for line in listed.splitlines() if line.split()
                   and "ephemeral" in line.split()[0] and line.split()[0].rsplit(".", 1)[-1] in ("service", "mount", "swap")})  # fmt: skip
    units = {}
    for unit in ours:
        shown = run(["systemctl", "show", unit, "--property=InactiveExitTimestampMonotonic,"
                     "ActiveEnterTimestampMonotonic,InactiveEnterTimestampMonotonic,ActiveState"]).stdout  # fmt: skip
        units[unit] = dict(line.split("=", 1) for line in shown.splitlines() if "=" in line)
    plain = {**os.environ, "SYSTEMD_COLORS": "0", "LC_ALL": "C.UTF-8"}  # no colour codes, the same tree glyphs
    return {
        "critical_chain": run(["systemd-analyze", "critical-chain", "--no-pager"], env=plain).stdout,
        "analyze_time": run(["systemd-analyze", "time", "--no-pager"], env=plain).stdout,
        "units": units,
    }


def bench_aesni(config):
    """Crypto with AES-NI: ours, Qubes' own volatile mapping and seed 000's, on a
    throttled disk (I/O-bound, as an SSD below AES-NI) and on an unthrottled one
    (CPU-bound), with the cipher's own limit (cryptsetup benchmark, 5 times)."""
    with open("/proc/cpuinfo") as handle:
        flags = next(line for line in handle if line.startswith("flags")).split()
    setups = ("ours", "qubes_volatile", "seed000", "ours_key256", "ours_workqueues")
    ciphers = (("aes-xts", "512"), ("aes-xts", "256"), ("aes-cbc", "256"))
    return {
        "aes_flag": "aes" in flags,
        "cryptsetup_benchmark": [cryptsetup_benchmark(ciphers) for _ in range(config["runs"])],
        "io_bound": bench_io(config["slow_device"], config["runs"], config["io_bound_size"], only=setups),
        "cpu_bound": bench_io(config["fast_device"], config["runs"], config["cpu_bound_size"], only=setups),
    }


def main_aesni(config):
    result = {"boot": boot_units(), "aesni": bench_aesni(config["aesni"])}
    json.dump(result, sys.stdout, indent=1)


def main():
    with open(sys.argv[1]) as handle:
        config = json.load(handle)
    if sys.argv[2:] == ["aesni"]:
        return main_aesni(config)
    with open("/proc/meminfo") as handle:
        memory_kib = int(handle.readline().split()[1])
    device = config["device"]
    result = {
        "cryptsetup_benchmark": cryptsetup_benchmark(),
        "format": bench_format(device, config["format_runs"]),
        "io": bench_io(device, config["io_runs"], config["seq_size"], config["rand_size"]),
        "salt": bench_salt(config["salt_runs"]),
        "guest": {
            "kernel": os.uname().release,
            "cpus": os.cpu_count(),
            "memory_kib": memory_kib,
        },
    }
    json.dump(result, sys.stdout, indent=1)


main()

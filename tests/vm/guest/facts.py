"""Guest side: what the system looks like now, as JSON (standard library only)."""

import json
import os
import subprocess
import sys


def run(*command):
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    return result.returncode, result.stdout.strip()


def crypt_status(name):
    rc, text = run("cryptsetup", "status", name)
    if rc != 0:
        return None
    status = {"first_line": text.splitlines()[0]}
    for line in text.splitlines()[1:]:
        key, _, value = line.strip().partition(":")
        status[key.strip()] = value.strip()
    return status


def dm_name(device):
    real = os.path.realpath(device)
    base = os.path.basename(real)
    path = f"/sys/block/{base}/dm/name"
    return open(path).read().strip() if os.path.exists(path) else real


def swaps():
    lines = open("/proc/swaps").read().splitlines()[1:]
    return [
        {"device": dm_name(f.split()[0]), "size_kib": int(f.split()[2]), "used_kib": int(f.split()[3])} for f in lines
    ]


TRACE_PATHS = ("/var/log/qubes", "/var/log/libvirt/libxl", "/var/log/xen/console")


def mounted_on(path):
    """What is mounted exactly on path: {"source", "fstype"}, or None."""
    rc, text = run("findmnt", "-J", "-o", "SOURCE,FSTYPE", "--mountpoint", path)
    return json.loads(text)["filesystems"][0] if rc == 0 and text else None


def main():
    mountpoint = sys.argv[1]
    names = sys.argv[2:]
    rc, mount = run("findmnt", "-J", "-o", "TARGET,SOURCE,FSTYPE,OPTIONS", mountpoint)
    _, failed = run("systemctl", "--failed", "--plain", "--no-legend", "--no-pager")
    _, attrs = run("lsattr", "-d", mountpoint)
    facts = {
        "crypt": {name: crypt_status(name) for name in names},
        "mount": json.loads(mount)["filesystems"][0] if rc == 0 else None,
        "mountpoint_entries": sorted(os.listdir(mountpoint)) if os.path.isdir(mountpoint) else None,
        "mountpoint_attrs": attrs.split()[0] if attrs else None,
        "swaps": swaps(),
        "fstab": open("/etc/fstab").read(),
        "crypttab": open("/etc/crypttab").read() if os.path.exists("/etc/crypttab") else None,
        "failed_units": [line.split()[0] for line in failed.splitlines() if line.strip()],
        "emergency": run("systemctl", "is-active", "emergency.target")[1],
        "multi_user": run("systemctl", "is-active", "multi-user.target")[1],
        "uptime": float(open("/proc/uptime").read().split()[0]),
        "traces": {path: mounted_on(path) for path in TRACE_PATHS},
        "journal_persistent_dirs": sorted(os.listdir("/var/log/journal")) if os.path.isdir("/var/log/journal") else [],
        "journal_runtime": os.path.isdir("/run/log/journal") and bool(os.listdir("/run/log/journal")),
    }
    json.dump(facts, sys.stdout, indent=1)


main()

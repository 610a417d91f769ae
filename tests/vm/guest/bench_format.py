"""Guest side: boot-time preparation of a scratch volume, from crypt open to
mounted, for our formatter and for crypttab's tmp=ext4 (systemd-makefs).

Usage: bench_format.py DEVICE [RUNS]  -> JSON with every run's seconds.
"""

import json
import os
import subprocess
import sys
import time

NAME = "qebench"
MAPPING = f"/dev/mapper/{NAME}"
UNIT = "/etc/systemd/system/qubes-ephemeral-format.service"


def ours():
    with open(UNIT) as unit:
        line = next(text for text in unit if text.startswith("ExecStart="))
    argv = line.split("=", 1)[1].split()
    return argv[:-1] + [MAPPING]


def tmp_ext4():
    return ["/lib/systemd/systemd-makefs", "ext4", MAPPING]


def once(command):
    os.makedirs("/mnt/bench", exist_ok=True)
    start = time.monotonic()
    subprocess.run(
        [
            "cryptsetup",
            "open",
            "--type",
            "plain",
            "--cipher",
            "aes-xts-plain64",
            "--key-size",
            "512",
            "--sector-size",
            "4096",
            "--key-file",
            "/dev/urandom",
            sys.argv[1],
            NAME,
        ],
        check=True,
    )
    subprocess.run(command, check=True, capture_output=True)
    subprocess.run(["mount", MAPPING, "/mnt/bench"], check=True)
    seconds = time.monotonic() - start
    subprocess.run(["umount", "/mnt/bench"], check=True)
    subprocess.run(["cryptsetup", "close", NAME], check=True)
    return seconds


runs = int(sys.argv[2]) if len(sys.argv) > 2 else 1
result = {
    "device": sys.argv[1],
    "runs": runs,
    "ours_command": " ".join(ours()),
    "ours_seconds": [once(ours()) for _ in range(runs)],
    "tmp_ext4_seconds": [once(tmp_ext4()) for _ in range(runs)],
}
json.dump(result, sys.stdout, indent=1)

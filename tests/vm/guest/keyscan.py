"""Guest side: is the key of any open ephemeral mapping stored anywhere?

Usage: keyscan.py DECOY_HEX NAME...  Reads each mapping's key from the kernel
(dmsetup table --showkeys), then searches /etc, /var, /opt/salt, /root and
the journal for it as lower/upper-case hex and as raw bytes. DECOY_HEX is a
control planted by the job in /var/tmp: it must be found, or the scan is blind.
"""

import json
import os
import subprocess
import sys

ROOTS = ["/etc", "/var", "/opt/salt", "/root", "/srv"]


def key_of(name):
    table = subprocess.run(["dmsetup", "table", "--showkeys", name], capture_output=True, text=True, check=True)
    return table.stdout.split()[4]


def needles(hex_key):
    return [hex_key.lower().encode(), hex_key.upper().encode(), bytes.fromhex(hex_key)]


def search(patterns):
    hits = []
    for root in ROOTS:
        for folder, _, files in os.walk(root):
            for name in files:
                path = os.path.join(folder, name)
                if not os.path.isfile(path) or os.path.islink(path):
                    continue
                try:
                    data = open(path, "rb").read()
                except OSError:
                    continue
                hits += [(label, path) for label, pattern in patterns if pattern in data]
    journal = subprocess.run(["journalctl", "-o", "export", "--no-pager"], capture_output=True, check=False).stdout
    hits += [(label, "journalctl") for label, pattern in patterns if pattern in journal]
    return hits


def main():
    decoy, names = sys.argv[1], sys.argv[2:]
    patterns = [("decoy", p) for p in needles(decoy)[:1]]
    keys = {}
    for name in names:
        keys[name] = key_of(name)
        patterns += [(name, p) for p in needles(keys[name])]
    hits = search(patterns)
    json.dump(
        {
            "key_bits": {n: len(k) * 4 for n, k in keys.items()},
            "decoy_found": any(label == "decoy" for label, _ in hits),
            "key_hits": [f"{label}: {path}" for label, path in hits if label != "decoy"],
        },
        sys.stdout,
        indent=1,
    )


main()

"""Guest side: is the key of any ephemeral mapping, open now or earlier, stored anywhere?

Usage: keyscan.py PHASE KNOWN_KEYS NAME...  (run from the share: out/ is this boot's output)

Reads the key of each open mapping NAME from the kernel (dmsetup table
--showkeys) and adds it to the keys of earlier boots (KNOWN_KEYS: a JSON
file {phase: {name: hex}} the host hands over, or absent) and of this
boot's earlier phases (out/keyscan-*.json). Then plants
three controls with a fresh random decoy (a file with it as hex, a file with
it as raw bytes, a journal message) and searches for every key, and the
decoy, as lower/upper-case hex and as raw bytes in every file under ROOTS and
in the journal. A search that does not find its control is blind: the report
says so and the test fails.

Prints JSON: the phase, this phase's keys (the host scans the raw disk
images for them after the boot), the controls found, and any key hits.
/usr outside /usr/local holds package files only; the host's scan of the raw
disk images covers every block the guest wrote, there included.
"""

import glob
import json
import os
import re
import secrets
import subprocess
import sys

ROOTS = ["/etc", "/var", "/opt/salt", "/root", "/srv", "/tmp", "/usr/local", "/home", "/run"]
SKIP = ("/mnt/host", "/proc", "/sys", "/dev", "/run/udev/data")  # the share (the host's) and pseudo files
CHUNK = 4 * 1024 * 1024


def key_of(name):
    table = subprocess.run(["dmsetup", "table", "--showkeys", name], capture_output=True, text=True, check=False)
    fields = table.stdout.split()
    if table.returncode != 0 or len(fields) < 5 or fields[2] != "crypt":
        return None  # not open now
    if not re.fullmatch(r"[0-9a-f]+", fields[4]):  # a keyring reference: the search would be blind
        sys.exit(f"keyscan: {name}'s key is not in its table as hex ({fields[4][:12]}...): cannot search for it")
    return fields[4]


def needles(hex_key):
    return [hex_key.lower().encode(), hex_key.upper().encode(), bytes.fromhex(hex_key)]


def found_in(path, patterns):
    """The labels of the patterns in the file, read in chunks with an overlap."""
    hits, tail = set(), b""
    overlap = max(len(p) for _, p in patterns) - 1
    with open(path, "rb") as handle:
        while block := handle.read(CHUNK):
            data = tail + block
            hits.update(label for label, pattern in patterns if pattern in data)
            tail = data[-overlap:]
    return hits


def search(patterns):
    hits = []
    for root in ROOTS:
        for folder, dirs, files in os.walk(root):
            dirs[:] = [d for d in dirs if not os.path.join(folder, d).startswith(SKIP)]
            for name in files:
                path = os.path.join(folder, name)
                if os.path.islink(path) or not os.path.isfile(path):
                    continue
                try:
                    hits += [(label, path) for label in found_in(path, patterns)]
                except OSError:
                    continue
    journal = subprocess.run(["journalctl", "-o", "export", "--no-pager"], capture_output=True, check=False).stdout
    hits += [(label, "journalctl") for label, pattern in patterns if pattern in journal]
    return hits


def main():
    phase, known_file, names = sys.argv[1], sys.argv[2], sys.argv[3:]
    known = json.load(open(known_file)) if os.path.exists(known_file) else {}
    for earlier in sorted(glob.glob(os.path.join(os.environ["OUT"], "keyscan-*.json"))):
        if earlier.endswith(f"keyscan-{phase}.json"):  # this phase's, made empty by the job's redirection
            continue
        report = json.load(open(earlier))
        known[report["phase"]] = report["keys"]
    now = {name: key for name in names if (key := key_of(name))}
    decoy = secrets.token_hex(32)
    with open(f"/var/tmp/decoy-{phase}", "w") as handle:
        handle.write(decoy + "\n")
    with open(f"/var/tmp/decoy-{phase}.bin", "wb") as handle:
        handle.write(bytes.fromhex(decoy))
    subprocess.run(["logger", "-t", "qe-keyscan", f"decoy {decoy}"], check=True)
    os.sync()
    lower, _, raw = needles(decoy)
    patterns = [("decoy-hex", lower), ("decoy-raw", raw)]
    keys = {f"{p}/{n}": k for p, found in known.items() for n, k in found.items()}
    keys.update({f"{phase}/{n}": k for n, k in now.items()})
    for label, key in keys.items():
        patterns += [(label, p) for p in needles(key)]
    hits = search(patterns)
    where = {label: {path for found, path in hits if found == label} for label in ("decoy-hex", "decoy-raw")}
    json.dump(
        {
            "phase": phase,
            "keys": now,
            "key_bits": {n: len(k) * 4 for n, k in now.items()},
            "keys_searched": sorted(keys),
            "controls": {
                "file_hex": f"/var/tmp/decoy-{phase}" in where["decoy-hex"],
                "file_raw": f"/var/tmp/decoy-{phase}.bin" in where["decoy-raw"],
                "journal": "journalctl" in where["decoy-hex"],
            },
            "decoy": decoy,
            "key_hits": sorted({f"{label}: {path}" for label, path in hits if not label.startswith("decoy")}),
        },
        sys.stdout,
        indent=1,
    )


main()

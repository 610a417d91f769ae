"""Guest or host side: count occurrences of marker strings in files or devices.

Usage: scan.py MARKERS_FILE PATH[@OFFSET+LENGTH] ...  -> JSON {path: {marker: count}}
Reads in 4 MiB chunks with an overlap so no marker is missed at a boundary.
"""

import json
import sys

CHUNK = 4 * 1024 * 1024


def scan(spec, markers):
    path, _, window = spec.partition("@")
    offset, length = 0, None
    if window:
        start, _, size = window.partition("+")
        offset, length = int(start), int(size)
    counts = dict.fromkeys(markers, 0)
    overlap = max(len(m) for m in markers) - 1
    tail = b""
    with open(path, "rb", buffering=0) as handle:
        handle.seek(offset)
        remaining = length
        while remaining is None or remaining > 0:
            block = handle.read(CHUNK if remaining is None else min(CHUNK, remaining))
            if not block:
                break
            if remaining is not None:
                remaining -= len(block)
            data = tail + block
            for marker in markers:
                # Count matches that end inside the new block only.
                start = 0
                while (found := data.find(marker, start)) >= 0:
                    if found + len(marker) > len(tail):
                        counts[marker] += 1
                    start = found + 1
            tail = data[-overlap:] if overlap else b""
    return {m.decode(): c for m, c in counts.items()}


def main():
    markers = [line.encode() for line in open(sys.argv[1]).read().split() if line]
    json.dump({spec: scan(spec, markers) for spec in sys.argv[2:]}, sys.stdout, indent=1)


main()

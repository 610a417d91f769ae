"""Pure parsers of what system commands print, for the audit.

Each takes the text a command printed and returns plain data; none runs
anything. Key material never leaves ``crypt_target``: a dm-crypt table
line carries the key (dmsetup prints it as zeros unless asked with
--showkeys, which the audit never does), and only its length is kept.
"""

from __future__ import annotations

import json
from dataclasses import dataclass


@dataclass(frozen=True)
class CryptTarget:
    """A dm-crypt table line, without its key."""

    cipher: str
    key_bits: int | None  # None: not shown
    device: str  # MAJOR:MINOR or a path
    sector_size: int
    options: tuple[str, ...]


def crypt_target(table: str) -> CryptTarget | None:
    """``dmsetup table NAME``: the crypt target, or None when it is not dm-crypt."""
    fields = table.split()
    if len(fields) < 8 or fields[2] != "crypt":
        return None
    cipher, key, device = fields[3], fields[4], fields[6]
    if key.startswith(":") and key.split(":")[1].isdigit():  # :SIZE:TYPE:DESCRIPTION, in the kernel keyring
        key_bits: int | None = int(key.split(":")[1]) * 8
    elif all(c in "0123456789abcdefABCDEF" for c in key):
        key_bits = len(key) * 4
    else:
        key_bits = None
    options: tuple[str, ...] = ()
    if len(fields) > 8 and fields[8].isdigit():
        options = tuple(fields[9 : 9 + int(fields[8])])
    sector = next((int(o.split(":", 1)[1]) for o in options if o.startswith("sector_size:")), 512)
    return CryptTarget(cipher, key_bits, device, sector, options)


def _flatten(nodes: list[dict[str, object]]) -> list[dict[str, str]]:
    """A tree of JSON nodes with "children" (findmnt -J, lsblk -J), depth first."""
    found: list[dict[str, str]] = []
    for node in nodes:
        found.append({k: str(v) for k, v in node.items() if k != "children" and v is not None})
        found += _flatten(node.get("children", []))  # type: ignore[arg-type]
    return found


def findmnt(text: str) -> list[dict[str, str]]:
    """``findmnt -J ...``: its filesystems, flattened."""
    return _flatten(json.loads(text or "{}").get("filesystems", []))


def lsblk_chain(text: str) -> list[dict[str, str]]:
    """``lsblk -J -s -o NAME,PATH,TYPE DEVICE``: the device and every device
    under it (what it is built on), nearest first."""
    return _flatten(json.loads(text or "{}").get("blockdevices", []))


def proc_swaps(text: str) -> list[str]:
    """``/proc/swaps``: the active swap devices and files."""
    return [line.split()[0].replace("\\040", " ") for line in text.splitlines()[1:] if line.strip()]


def crypttab(text: str) -> dict[str, tuple[str, str, str]]:
    """``/etc/crypttab``: name -> (device, key file, options)."""
    entries = {}
    for line in text.splitlines():
        fields = line.split()
        if not fields or fields[0].startswith("#"):
            continue
        entries[fields[0]] = (
            fields[1] if len(fields) > 1 else "",
            fields[2] if len(fields) > 2 else "none",
            fields[3] if len(fields) > 3 else "",
        )
    return entries


def key_values(text: str) -> dict[str, str]:
    """``qvm-pool info POOL`` and the like: one ``KEY  VALUE`` per line."""
    values = {}
    for line in text.splitlines():
        key, _, value = line.strip().partition(" ")
        if key:
            values[key] = value.strip()
    return values


def journald_storage(config: str) -> str:
    """``systemd-analyze cat-config systemd/journald.conf``: the Storage= in effect."""
    storage = "auto"
    section = ""
    for line in config.splitlines():
        line = line.strip()
        if line.startswith("["):
            section = line
        elif section == "[Journal]" and line.startswith("Storage="):
            storage = line.partition("=")[2].strip()
    return storage

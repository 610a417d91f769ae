"""Pure parsers of what system commands print, for the audit and the formula.

Each takes the text a command printed and returns plain data; none runs
anything. The Qubes admin commands' outputs are read here for both the
audit and the formula's state module (ephemeral_qubes), so that both read a
setting the same way. Key material never leaves ``crypt_target``: a dm-crypt table
line carries the key (dmsetup prints it as zeros unless asked with
--showkeys, which the audit never does), and only its length is kept.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
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
    """``qvm-pool info POOL``, ``qvm-features VM`` and the like: one ``KEY  VALUE``
    per line (a key alone has the value ""; the first line of a key wins)."""
    values: dict[str, str] = {}
    for line in text.splitlines():
        fields = line.split(None, 1)
        if fields:
            values.setdefault(fields[0], fields[1].strip() if len(fields) > 1 else "")
    return values


def unit_state(text: str) -> dict[str, str]:
    """``systemctl show --property=...``: one ``Key=Value`` per line."""
    return dict(line.split("=", 1) for line in text.splitlines() if "=" in line)


def prefs_listing(text: str) -> dict[str, str | None]:
    """``qubes-prefs`` (or ``qvm-prefs VM``) with no property: ``KEY FLAG VALUE``
    per line, where the flag "D" marks a value left at its default: None."""
    values: dict[str, str | None] = {}
    for line in text.splitlines():
        fields = line.split(None, 2)
        if fields and fields[0] not in values:
            values[fields[0]] = None if fields[1:2] == ["D"] else (fields[2].strip() if len(fields) > 2 else "")
    return values


def admin_value(text: str, key: str | None = None, listing: bool = False) -> str | None:
    """The value a Qubes admin command's read form printed, as the formula compares it.

    ``key`` None: all of it (``qvm-prefs -- VM PROP``, ``qvm-features -- VM
    FEATURE``). Else the value of ``key`` in a ``KEY VALUE`` listing (``qvm-pool
    info``), or with ``listing`` in a ``KEY FLAG VALUE`` one (``qubes-prefs``).
    None: not set (Qubes prints no line for an option left at its default, and
    flags a preference at its default with "D").
    """
    if key is None:
        return text.strip()
    return (prefs_listing(text) if listing else key_values(text)).get(key)


def absent(rc: int, out: str, err: str, missing_exit: int | None) -> bool:
    """Whether a read form's exit means "not set" rather than a failure: for a
    setting that can be absent, its command exits ``missing_exit`` and prints
    nothing (qvm-features exits 1, silently, for a feature that is not set)."""
    return missing_exit is not None and rc == missing_exit and not (out + err).strip()


def no_such_pool(rc: int, err: str) -> bool:
    """``qvm-pool info POOL`` for a pool that does not exist: exit 2, "No such pools: [...]"."""
    return rc == 2 and "No such pools" in err


def default_pools(printed: Iterable[str], excludes: Iterable[str] = ()) -> list[str]:
    """The pool names the ``qubes-prefs -- default_pool...`` reads printed (the
    manifest's ``pools.default_from_prefs``): in order, once each, without
    ``excludes`` and empty values."""
    skip = set(excludes)
    pools: list[str] = []
    for text in printed:
        pool = text.strip()
        if pool and pool not in skip and pool not in pools:
            pools.append(pool)
    return pools


def disposables(text: str, argv: Sequence[str]) -> list[tuple[str, str]]:
    """What ``argv`` (``qvm-ls --raw-data --fields ...``, naming at least NAME,
    CLASS and TEMPLATE) printed: (name, template) of each disposable (class
    DispVM), in order. Raw data is "|"-joined, in the order of ``--fields``."""
    fields = [f.upper() for f in argv[list(argv).index("--fields") + 1].split(",")]
    found = []
    for line in text.splitlines():
        row = dict(zip(fields, line.split("|"), strict=False))
        if len(row) == len(fields) and row["CLASS"] == "DispVM":
            found.append((row["NAME"], row["TEMPLATE"]))
    return found


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

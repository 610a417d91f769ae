"""systemd unit names, escaped the way systemd-escape does it."""

from __future__ import annotations

import string

_PLAIN = set(string.ascii_letters + string.digits + ":_.")


def escape(text: str) -> str:
    """systemd-escape TEXT: '/' becomes '-', anything unusual becomes \\xNN."""
    out = []
    for index, char in enumerate(text):
        if char == "/":
            out.append("-")
        elif char in _PLAIN and not (index == 0 and char == "."):
            out.append(char)
        else:
            out.extend(f"\\x{byte:02x}" for byte in char.encode())
    return "".join(out)


def escape_path(path: str) -> str:
    """systemd-escape --path PATH."""
    trimmed = "/".join(part for part in path.split("/") if part)
    return escape(trimmed) if trimmed else "-"


def mount_unit(mountpoint: str) -> str:
    return escape_path(mountpoint) + ".mount"


def device_unit(device: str) -> str:
    return escape_path(device) + ".device"


def swap_unit(device: str) -> str:
    return escape_path(device) + ".swap"


def cryptsetup_unit(name: str) -> str:
    return f"systemd-cryptsetup@{escape(name)}.service"


def mapping(name: str) -> str:
    return f"/dev/mapper/{name}"

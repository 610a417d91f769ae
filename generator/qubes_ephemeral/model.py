"""The validated description: plain frozen data, no behaviour.

Field names match the keys of schema.py, so a validated section maps
straight onto its dataclass.
"""

from __future__ import annotations

from dataclasses import dataclass

from .devices import Device


@dataclass(frozen=True)
class Crypt:
    """What every re-keyed device has (schema._crypt_settings)."""

    device: Device
    name: str
    cipher: str
    key_size: int
    sector_size: int
    discard: bool
    workqueue_bypass: bool
    device_timeout: int
    wipe_existing: bool


@dataclass(frozen=True)
class Scratch(Crypt):
    mountpoint: str
    fs: str
    journal: bool
    mount_options: tuple[str, ...]
    consumers: tuple[str, ...]


@dataclass(frozen=True)
class Swap(Crypt):
    priority: int | None
    replace: bool


@dataclass(frozen=True)
class DisposableTemplate:
    name: str
    private: str  # "persistent"; "cow" once the private copy-on-write patch exists


@dataclass(frozen=True)
class Qubes:
    ephemeral_volatile_pools: tuple[str, ...] | str  # "default": the installation's default pools
    disposable_templates: tuple[DisposableTemplate, ...]


@dataclass(frozen=True)
class Description:
    scratch: Scratch
    swap: Swap | None
    activate: str
    qubes: Qubes | None = None

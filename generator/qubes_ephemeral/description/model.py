"""The validated description: plain frozen data, no behaviour.

Field names match the keys of schema.py, so a validated section maps
straight onto its dataclass.
"""

from __future__ import annotations

from dataclasses import dataclass

from qubes_ephemeral.description.devices import Device


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
    private: str  # "persistent" or "cow" (needs Patches.dispvm_private_cow)


@dataclass(frozen=True)
class Qubes:
    ephemeral_volatile_pools: tuple[str, ...] | str  # "default": the installation's default pools
    disposable_templates: tuple[DisposableTemplate, ...]
    pool: str | None = None  # a pool on the scratch filesystem
    default_pool_volatile: bool = False


@dataclass(frozen=True)
class Traces:
    paths: tuple[str, ...]
    writers: tuple[str, ...]
    journald: str  # "unchanged" or "volatile"


@dataclass(frozen=True)
class Patches:
    dispvm_private_cow: bool


@dataclass(frozen=True)
class Description:
    """Every section is optional; validate() makes sure at least one is there."""

    scratch: Scratch | None
    swap: Swap | None
    activate: str
    qubes: Qubes | None = None
    traces: Traces | None = None
    patches: Patches | None = None

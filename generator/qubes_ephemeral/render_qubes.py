"""Qubes storage settings as data: what to read, what to want, how to set it.

Each setting names the admin command that reads the current value and the
one that sets it (argv lists; "{pool}" and "{value}" are filled in by the
formula). The formula's state module compares, sets only what differs,
records the value it replaced and restores it on clean.
"""

from __future__ import annotations

from .artifacts import QUBES_RECORD
from .model import Qubes
from .qubesd_extension_feature import FEATURE

# qubes-prefs properties naming "the installation's default pools".
DEFAULT_POOL_PREFS = ("default_pool", "default_pool_volatile")


def _volume(vm: str, volume: str, prop: str, value: str) -> dict[str, object]:
    target = f"{vm}:{volume}"
    return {
        "id": f"volume-{vm}-{volume}-{prop}",
        "what": f"{target} {prop}",
        "get": ["qvm-volume", "info", target, prop],
        "set": ["qvm-volume", "config", target, prop, "{value}"],
        "value": value,
    }


def plan(qubes: Qubes) -> dict[str, object]:
    checks = [
        {
            "id": f"is-disposable-template-{t.name}",
            "what": f"{t.name} is a disposable template",
            "get": ["qvm-prefs", "--", t.name, "template_for_dispvms"],
            "value": "True",
            "hint": f"set it with qvm-prefs {t.name} template_for_dispvms True, or fix the name in the pillar",
        }
        for t in qubes.disposable_templates
    ]
    volumes: list[dict[str, object]] = []
    for template in qubes.disposable_templates:
        # Switches on the qubesd extension (qubesd_extension.py) for its disposables.
        volumes.append(
            {
                "id": f"feature-{template.name}-{FEATURE}",
                "what": f"{template.name} feature {FEATURE}",
                "get": ["qvm-features", "--", template.name, FEATURE],
                "missing_exit": 1,  # qvm-features exits 1, silently, for a feature not set
                "set": ["qvm-features", "--", template.name, FEATURE, "{value}"],
                "unset": ["qvm-features", "--unset", "--", template.name, FEATURE],
                "value": "1",
            }
        )
        # Root read-only: the disposable's root writes go to a copy-on-write
        # layer on the volatile volume, which is keyed per start.
        volumes.append(_volume(template.name, "root", "rw", "False"))
        volumes.append(_volume(template.name, "volatile", "ephemeral", "True"))
    pools = qubes.ephemeral_volatile_pools
    return {
        "record": QUBES_RECORD,
        "pools": {
            "names": list(pools) if isinstance(pools, tuple) else None,
            "default_from_prefs": [["qubes-prefs", "--", name] for name in DEFAULT_POOL_PREFS]
            if isinstance(pools, str)
            else [],
            "setting": {
                "id": "pool-{pool}-ephemeral_volatile",
                "what": "pool {pool} ephemeral_volatile",
                "get": ["qvm-pool", "info", "{pool}"],
                "key": "ephemeral_volatile",
                "set": ["qvm-pool", "set", "{pool}", "-o", "ephemeral_volatile={value}"],
                "value": "True",
            },
        },
        "checks": checks,
        "settings": volumes,
    }

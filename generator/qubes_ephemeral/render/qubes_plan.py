"""Qubes storage settings as data: what to read, what to want, how to set it.

Each setting names the admin command that reads the current value and the
one that sets it (argv lists; "{pool}" and "{value}" are filled in by the
formula). The formula's state module compares, sets only what differs,
records the value it replaced and restores it on clean.
"""

from __future__ import annotations

from qubes_ephemeral.description.model import Description, Qubes
from qubes_ephemeral.qubesd.feature import FEATURE, LOADED_STAMP, PRIVATE_COW, PRIVATE_FEATURE
from qubes_ephemeral.render import layout
from qubes_ephemeral.render.artifacts import QUBES_RECORD

# qubes-prefs properties naming "the installation's default pools".
DEFAULT_POOL_PREFS = ("default_pool", "default_pool_volatile")


def _feature(vm: str, feature: str, value: str | None) -> dict[str, object]:
    """A qube feature; value None: the feature must not be set."""
    return {
        "id": f"feature-{vm}-{feature}",
        "what": f"{vm} feature {feature}",
        "get": ["qvm-features", "--", vm, feature],
        "missing_exit": 1,  # qvm-features exits 1, silently, for a feature not set
        "set": ["qvm-features", "--", vm, feature, "{value}"],
        "unset": ["qvm-features", "--unset", "--", vm, feature],
        "value": value,
    }


def _own_pool(description: Description, qubes: Qubes) -> dict[str, object] | None:
    """The pool on the scratch filesystem: added once (Qubes keeps it in
    qubes.xml), its directory re-made at every boot by the layout unit."""
    dir_path, scratch = layout.pool_dir(description), description.scratch
    if qubes.pool is None or dir_path is None or scratch is None:
        return None
    driver = layout.pool_driver(scratch)
    return {
        "id": f"own-pool-{qubes.pool}",
        "what": f"pool {qubes.pool} on the scratch filesystem",
        "pool": qubes.pool,
        "driver": driver,
        "dir_path": dir_path,
        "mountpoint": scratch.mountpoint,
        "layout_unit": layout.LAYOUT_UNIT,
        "get": ["qvm-pool", "info", qubes.pool],
        "add": ["qvm-pool", "add", qubes.pool, driver, "-o", f"dir_path={dir_path}"],
        "remove": ["qvm-pool", "remove", qubes.pool],
    }


def _default_pool_volatile(pool: str) -> dict[str, object]:
    # Read from the full listing, where "D" marks a value left at its default,
    # so that clean can put it back as a default, not as a copy of its value.
    return {
        "id": "prefs-default_pool_volatile",
        "what": "qubes-prefs default_pool_volatile",
        "get": ["qubes-prefs"],
        "key": "default_pool_volatile",
        "listing": True,
        "set": ["qubes-prefs", "--", "default_pool_volatile", "{value}"],
        "unset": ["qubes-prefs", "--default", "--", "default_pool_volatile"],
        "value": pool,
    }


def plan(description: Description) -> dict[str, object] | None:
    qubes = description.qubes
    if qubes is None:
        return None
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
    extension = "extension"
    check_ids = [str(check["id"]) for check in checks]
    volumes: list[dict[str, object]] = []
    for template in qubes.disposable_templates:
        # Switches on the qubesd extension (qubesd/extension.py) for its disposables;
        # without the extension loaded, the mark protects nothing.
        marked = _feature(template.name, FEATURE, "1")
        marked.update(after=[*check_ids, extension], after_sections=[])
        volumes.append(marked)
        # With cow, the extension makes their private volume read-only too, and the
        # VM kernels must carry the /rw copy-on-write (the patches section); without,
        # the feature must be absent (it may be left from an earlier pillar).
        cow = template.private == "cow"
        private = _feature(template.name, PRIVATE_FEATURE, PRIVATE_COW if cow else None)
        private.update(after=[*check_ids, *([extension] if cow else [])], after_sections=["patches"] if cow else [])
        volumes.append(private)
        # Root read-only and the volatile volume keyed per start are set by the
        # extension for each start and put back after it, never on the template:
        # a disposable copies its template's volume settings when it is created,
        # and a named one would keep them in qubes.xml after clean.
    own_pool = _own_pool(description, qubes)
    if own_pool and qubes.default_pool_volatile:
        default = _default_pool_volatile(str(qubes.pool))
        default.update(after=[*check_ids, str(own_pool["id"])], after_sections=[])
        volumes.append(default)
    pools = qubes.ephemeral_volatile_pools
    return {
        "record": QUBES_RECORD,
        "templates": [t.name for t in qubes.disposable_templates],
        "own_pool": own_pool,
        "pools": {
            "names": list(pools) if isinstance(pools, tuple) else None,
            "default_from_prefs": [["qubes-prefs", "--", name] for name in DEFAULT_POOL_PREFS]
            if isinstance(pools, str)
            else [],
            # Already keyed at boot; and once it is the default, "default" must
            # not pick it up on the next apply.
            "default_excludes": [qubes.pool] if qubes.pool else [],
            "after": [
                *check_ids,
                *([str(own_pool["id"])] if own_pool and isinstance(pools, tuple) and qubes.pool in pools else []),
            ],
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
        # The qubesd extension leaves this file when qubesd loads it. Without it
        # nothing protects the disposables: the formula fails.
        "extension": {
            "id": extension,
            "stamp": LOADED_STAMP,
            "required": True,
            "hint": "install the qubes-ephemeral package in dom0 (README: Install in dom0), then restart qubesd: "
            "systemctl restart qubesd",
        }
        if qubes.disposable_templates
        else None,
    }

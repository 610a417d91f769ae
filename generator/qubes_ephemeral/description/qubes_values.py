"""Parsers for the qubes: section: qube and pool names, disposable templates."""

from __future__ import annotations

import re

from qubes_ephemeral.description import values
from qubes_ephemeral.description.model import DisposableTemplate
from qubes_ephemeral.description.problems import Invalid
from qubes_ephemeral.description.values import kind_of

# Qubes' own rule for qube names (qubes-core-admin qubes/vm/__init__.py,
# validate_name): a letter first, then letters, digits, '_', '.', '-'; at most 31.
QUBE_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_.-]{0,30}")
POOL_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
RESERVED_QUBE_NAMES = ("none", "default", "dom0", "Domain-0")
DEFAULT_POOLS = "default"


def qube_name(value: object) -> str:
    if not isinstance(value, str) or not QUBE_NAME.fullmatch(value) or value in RESERVED_QUBE_NAMES:
        raise Invalid(f"{value!r} is not a qube name", "a letter, then letters, digits, '_', '.', '-'; at most 31")
    return value


def pool_name(value: object) -> str:
    if not isinstance(value, str) or not POOL_NAME.fullmatch(value) or value == DEFAULT_POOLS:
        raise Invalid(f"{value!r} is not a pool name", "letters, digits, '_', '.', '-'; e.g. ephemeral")
    return value


def pools(value: object) -> tuple[str, ...] | str:
    """'default' (the installation's default pools, found at apply time) or a list of names."""
    if value == DEFAULT_POOLS:
        return DEFAULT_POOLS
    if not isinstance(value, list) or not value:
        raise Invalid(f"expected 'default' or a list of pool names, got {kind_of(value)} {value!r}",
                      "write default, or e.g. [vm-pool]")  # fmt: skip
    values.at_most(value, values.MAX_LIST, "pools")
    for index, item in enumerate(value):
        try:
            pool_name(item)
        except Invalid as error:
            raise Invalid(f"item {index}: {error.message}", "as listed by qvm-pool list") from None
    if len(set(value)) != len(value):
        raise Invalid("a pool is listed twice", "list each pool once")
    return tuple(value)


PRIVATE_CHOICES = ("persistent", "cow")
MAX_TEMPLATES = 256


def disposable_templates(value: object) -> tuple[DisposableTemplate, ...]:
    if not isinstance(value, dict):
        raise Invalid(f"expected a mapping of disposable template names, got {kind_of(value)}",
                      "write e.g. {default-dvm: {}}")  # fmt: skip
    # Each setting waits for every template's check (all or nothing): bounded,
    # above the 200 templates the benchmark renders (a few MB of manifest).
    values.at_most(list(value), MAX_TEMPLATES, "disposable templates")
    templates = []
    for name, options in value.items():
        qube_name(name)
        if options is None:
            options = {}
        if not isinstance(options, dict):
            raise Invalid(
                f"{name}: expected a mapping of options, got {kind_of(options)}", "write e.g. {private: persistent}"
            )
        unknown = sorted(set(options) - {"private"})
        if unknown:
            raise Invalid(f"{name}: unknown option {unknown[0]!r}", "the only option is private")
        private = options.get("private", "persistent")
        if private not in PRIVATE_CHOICES:
            raise Invalid(
                f"{name}: private {private!r} is not one of {', '.join(PRIVATE_CHOICES)}", "use persistent or cow"
            )
        templates.append(DisposableTemplate(str(name), str(private)))
    return tuple(templates)

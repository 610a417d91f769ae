"""The configuration reference (docs/configuration.md), made from the schema.

Every section and key, with its type, default, whether it is required and its
meaning, is read from the schema's table when this runs, so the page cannot
describe settings the validator does not have. ``qubes-ephemeral reference``
prints it; a test compares it with docs/configuration.md.
"""

from __future__ import annotations

from collections.abc import Sequence

from qubes_ephemeral.description import schema, source

COMMAND = "qubes-ephemeral reference > docs/configuration.md"

INTRO = f"""\
# Configuration reference

<!-- Written by `qubes-ephemeral reference` from the schema; do not edit. -->

A description is YAML with one top-level key, `ephemeral:`, so a Salt pillar
file is a valid description (the [dom0 guide](dom0-guide.md) puts it in
`/srv/user_pillar/ephemeral.sls`). [`pillar.example`](../pillar.example) shows
every key with its default and a comment; `qubes-ephemeral schema` lists the
keys in the terminal; `qubes-ephemeral validate FILE` checks a description and
changes nothing. Unknown keys are refused, and so is YAML a description has
no use for: aliases (`*name`), tags (`!!set`, `!mine`), merge keys (`<<`),
keys that are not text (`1:`, `null:`, an unquoted `on:`), a value longer
than {source.MAX_VALUE} characters, more than {source.MAX_ITEMS} items in one list or mapping,
nesting deeper than {source.MAX_DEPTH} levels, more than {source.MAX_NODES} values in all, an integer over
{source.MAX_BITS} bits, and a file over {source.MAX_BYTES // 1024} KiB.

This page is made from the schema
(`generator/qubes_ephemeral/description/schema.py`) by `qubes-ephemeral
reference`. After a change to the schema, write it again:

```sh
{COMMAND}
```
"""


def _default(setting: schema.Setting) -> str:
    if setting.default == ():
        return "none"
    return f"`{setting.default_text()}`"


def _setting(path: str, setting: schema.Setting, section: schema.Section | None) -> list[str]:
    if not setting.required:
        need = f"Optional, default {_default(setting)}."
    elif section is None or section.required:
        need = "Required."
    else:
        need = f"Required when `{section.key}:` is given."
    return [f"### `{path}`", "", f"Value: {setting.type}. {need}", "", setting.help, ""]


def markdown(sections: Sequence[schema.Section] = schema.SECTIONS, top: Sequence[schema.Setting] = schema.TOP) -> str:
    """The reference as Markdown: the top-level keys, then each section in the schema's order."""
    lines = [INTRO, "## Top level", "", "Keys directly under `ephemeral:`.", ""]
    for setting in top:
        lines += _setting(f"ephemeral.{setting.key}", setting, None)
    for section in sections:
        where = "Required section." if section.required else "Optional section."
        lines += [f"## `{section.key}:`", "", f"{where} {section.help}", ""]
        for setting in section.settings:
            lines += _setting(f"ephemeral.{section.key}.{setting.key}", setting, section)
    return "\n".join(lines).rstrip("\n") + "\n"

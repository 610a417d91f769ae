"""The Jinja environment for the files under templates/."""

from __future__ import annotations

from pathlib import Path

import jinja2

_environment = jinja2.Environment(
    loader=jinja2.FileSystemLoader(Path(__file__).parent / "templates"),
    undefined=jinja2.StrictUndefined,
    keep_trailing_newline=True,
    trim_blocks=True,
    lstrip_blocks=True,
    autoescape=False,  # systemd units and shell, not HTML
)


def render_template(name: str, **context: object) -> str:
    return _environment.get_template(name).render(**context)

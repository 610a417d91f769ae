"""Our drop-ins that make a unit wait for what a section prepares."""

from __future__ import annotations

from qubes_ephemeral.render.artifacts import UNIT_DIR, Artifact, File
from qubes_ephemeral.render.templating import render_template


def dropin(unit: str, section: str) -> str:
    """Our drop-in for a unit: one per section, so each section cleans on its own."""
    return f"{UNIT_DIR}/{unit}.d/50-qubes-ephemeral-{section}.conf"


def waits(units: dict[str, tuple[str, ...]], section: str) -> list[Artifact]:
    """For each unit, a drop-in that makes it start after the units named."""
    return [
        File(f"{section}-waits-{unit}", dropin(unit, section), f"start {unit} after {', '.join(ready)}",
             render_template("consumer.conf.j2", ready=ready), dropin=True, section=section)
        for unit, ready in units.items()
    ]  # fmt: skip

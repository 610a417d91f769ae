"""The generator's entry points for programs: the CLI and the Salt module."""

from __future__ import annotations

from qubes_ephemeral.description.model import Description
from qubes_ephemeral.description.source import ROOT, Source, load_bytes
from qubes_ephemeral.description.validate import validate
from qubes_ephemeral.render.artifacts import Manifest
from qubes_ephemeral.render.manifest import render


def describe(raw: bytes) -> Description:
    """YAML bytes -> validated Description (raises DescriptionError)."""
    return validate(load_bytes(raw))


def describe_pillar(pillar: object) -> Description:
    """The value of the ``ephemeral`` pillar, as Salt parsed it -> Description."""
    return validate(Source({ROOT: pillar}))


def manifest_for_pillar(pillar: object) -> dict[str, object]:
    """What the formula applies: the manifest with every artifact's content."""
    manifest: Manifest = render(describe_pillar(pillar))
    return manifest.as_dict(with_content=True)

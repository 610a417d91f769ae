"""The generator's entry points for programs: the CLI and the Salt module."""

from __future__ import annotations

from .artifacts import Manifest
from .model import Description
from .render import render
from .source import ROOT, Source, load_bytes
from .validate import validate


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

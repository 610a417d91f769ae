"""What applying a manifest would change under a root directory."""

from __future__ import annotations

import difflib
import os
from dataclasses import dataclass
from pathlib import Path

from . import textedit
from .artifacts import Artifact, Block, CommentOut, Directory, File, Manifest, Symlink


@dataclass(frozen=True)
class Change:
    target: str
    before: str | None  # None: absent
    after: str

    @property
    def changed(self) -> bool:
        return self.before != self.after

    def unified(self) -> str:
        before = [] if self.before is None else self.before.splitlines(keepends=True)
        after = self.after.splitlines(keepends=True)
        label = self.target.lstrip("/")
        lines = difflib.unified_diff(
            before, after, f"a/{label}" if self.before is not None else "/dev/null", f"b/{label}"
        )
        return "".join(line if line.endswith("\n") else line + "\n\\ No newline at end of file\n" for line in lines)


def _read(path: Path) -> str | None:
    try:
        return path.read_bytes().decode("utf-8", "surrogateescape")
    except FileNotFoundError:
        return None


def _under(root: Path, target: str) -> Path:
    return root / target.lstrip("/")


def _edit(text: str, artifact: Artifact) -> str:
    if isinstance(artifact, Block):
        return textedit.apply_block(text, artifact)
    if isinstance(artifact, CommentOut):
        return textedit.comment_out(text, artifact)
    raise TypeError(artifact)


def plan(manifest: Manifest, root: Path) -> list[Change]:
    """One Change per target, in manifest order. Raises ValueError on damaged markers."""
    changes: dict[str, Change] = {}
    for artifact in manifest.artifacts:
        path = _under(root, artifact.target)
        if isinstance(artifact, Block | CommentOut):
            previous = changes.get(artifact.target)
            before = previous.before if previous else _read(path)
            current = previous.after if previous else (before or "")
            changes[artifact.target] = Change(artifact.target, before, _edit(current, artifact))
        elif isinstance(artifact, File):
            changes[artifact.target] = Change(artifact.target, _read(path), artifact.content)
        elif isinstance(artifact, Symlink):
            before = f"symlink to {os.readlink(path)}\n" if path.is_symlink() else None
            changes[artifact.target] = Change(artifact.target, before, f"symlink to {artifact.link_to}\n")
        elif isinstance(artifact, Directory):
            before = "directory\n" if path.is_dir() else None
            changes[artifact.target] = Change(artifact.target, before, "directory\n")
    return list(changes.values())

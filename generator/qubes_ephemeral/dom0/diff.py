"""What applying a manifest would change under a root directory."""

from __future__ import annotations

import difflib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from qubes_ephemeral.dom0 import textedit
from qubes_ephemeral.render.artifacts import Artifact, Block, CommentOut, Directory, File, Manifest, Symlink


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


class Files(Protocol):
    """Where the live files are read from (the audit reads through its Host)."""

    def read(self, path: str) -> str | None: ...
    def readlink(self, path: str) -> str | None: ...
    def is_dir(self, path: str) -> bool: ...


class UnderRoot:
    """The files under a root directory (the diff command's --root)."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def _path(self, target: str) -> Path:
        return self.root / target.lstrip("/")

    def read(self, path: str) -> str | None:
        try:
            return self._path(path).read_bytes().decode("utf-8", "surrogateescape")
        except FileNotFoundError:
            return None

    def readlink(self, path: str) -> str | None:
        return os.readlink(self._path(path)) if self._path(path).is_symlink() else None

    def is_dir(self, path: str) -> bool:
        return self._path(path).is_dir()


def _edit(text: str, artifact: Artifact) -> str:
    if isinstance(artifact, Block):
        return textedit.apply_block(text, artifact)
    if isinstance(artifact, CommentOut):
        return textedit.comment_out(text, artifact)
    raise TypeError(artifact)


def plan(manifest: Manifest, root: Path | Files) -> list[Change]:
    """One Change per target, in manifest order. Raises ValueError on damaged
    markers, PermissionError on a file that cannot be read."""
    files = UnderRoot(root) if isinstance(root, Path) else root
    changes: dict[str, Change] = {}
    for artifact in manifest.artifacts:
        target = artifact.target
        if isinstance(artifact, Block | CommentOut):
            previous = changes.get(target)
            before = previous.before if previous else files.read(target)
            current = previous.after if previous else (before or "")
            changes[target] = Change(target, before, _edit(current, artifact))
        elif isinstance(artifact, File):
            changes[target] = Change(target, files.read(target), artifact.content)
        elif isinstance(artifact, Symlink):
            link = files.readlink(target)
            changes[target] = Change(target, None if link is None else f"symlink to {link}\n",
                                     f"symlink to {artifact.link_to}\n")  # fmt: skip
        elif isinstance(artifact, Directory):
            changes[target] = Change(target, "directory\n" if files.is_dir(target) else None, "directory\n")
    return list(changes.values())

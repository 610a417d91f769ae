"""Writing a rendered manifest into a folder for review, all or nothing."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

from qubes_ephemeral.render.artifacts import Block, File, Manifest

MANIFEST = "manifest.json"


class EmitError(Exception):
    pass


def source_path(artifact: Block | File) -> str:
    if isinstance(artifact, Block):  # one block per section in a shared file
        return f"blocks/{artifact.section}/{artifact.target.lstrip('/')}"
    return f"files/{artifact.target.lstrip('/')}"


def manifest_json(manifest: Manifest) -> str:
    data = manifest.as_dict(with_content=False)
    for entry, artifact in zip(data["artifacts"], manifest.artifacts, strict=True):  # type: ignore[call-overload]
        if isinstance(artifact, Block | File):
            entry["source"] = source_path(artifact)
    return json.dumps(data, indent=2, sort_keys=True) + "\n"


def _fill(folder: Path, manifest: Manifest) -> None:
    for artifact in manifest.artifacts:
        if isinstance(artifact, Block | File):
            path = folder / source_path(artifact)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(artifact.content, encoding="utf-8")
            if isinstance(artifact, File):
                path.chmod(int(artifact.mode, 8))
    (folder / MANIFEST).write_text(manifest_json(manifest), encoding="utf-8")


def emit(manifest: Manifest, out: Path) -> None:
    """Write the manifest and artifact files into ``out``.

    The folder is built beside ``out`` and renamed into place, so a failure
    leaves either the old folder or nothing, never a half-written one. An
    existing folder is replaced only if it is an earlier render (it holds a
    manifest.json) or empty: anything else is the user's and is kept.
    """
    out = out.absolute()
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not (out / MANIFEST).is_file())):
        raise EmitError(f"{out} exists and is not an earlier render output; refusing to overwrite it")
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        _fill(staging, manifest)
        staging.chmod(0o755)
        if out.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old.", dir=out.parent))
            os.rename(out, old / "render")
            os.rename(staging, out)
            shutil.rmtree(old)
        else:
            os.rename(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise

"""Salt state module ``ephemeral_files``: our lines in files we share with
dom0 (crypttab, fstab), and the record of what each section applied.

The edits themselves are the generator's (qubes_ephemeral.dom0.textedit), so
``qubes-ephemeral diff`` shows exactly what these states do. A file is read
and written as bytes (odd bytes survive), through a temporary file renamed
over it (a kill leaves the old or the new file, never half of one), with its
mode and owner kept; a symlink is followed, never replaced by a file.
``test=True`` reports what would change and writes nothing.
"""

from __future__ import annotations

import difflib
import json
import os
import stat
from collections.abc import Callable, Mapping
from typing import Any

# Salt's loader replaces these when it loads the module: the placeholders give their types.
__salt__: Mapping[str, Callable[..., Any]] = {}
__opts__: dict[str, Any] = {}

__virtualname__ = "ephemeral_files"

Ret = dict[str, Any]


def __virtual__() -> str | tuple[bool, str]:
    # The edits are the generator's: it comes through the ephemeral module.
    if "ephemeral.generator" not in __salt__:
        return False, "the ephemeral execution module is not loaded (saltutil.sync_modules)"
    return __virtualname__


def _ret(name: str) -> Ret:
    return {"name": name, "result": True, "changes": {}, "comment": ""}


def _artifact(data: dict[str, Any]) -> Any:
    """The generator's artifact back from the manifest's form."""
    __salt__["ephemeral.generator"]()  # the generator is on sys.path from here on
    from qubes_ephemeral.render.artifacts import from_dict

    return from_dict(data)


def _read(path: str) -> str | None:
    try:
        with open(path, "rb") as handle:
            return handle.read().decode("utf-8", "surrogateescape")
    except FileNotFoundError:
        return None


def write_atomically(path: str, text: str) -> None:
    """Replace the file's bytes in one rename; mode and owner stay, a symlink
    stays a symlink (what it points to is edited), a new file gets 0644."""
    __salt__["ephemeral.generator"]()
    from pathlib import Path

    from qubes_ephemeral.payload.vm_initramfs import replace_atomically

    real = Path(os.path.realpath(path))
    replace_atomically(real, text.encode("utf-8", "surrogateescape"), mode_if_new=0o644)


def _edit(name: str, target: str, edit: Callable[[str], str], create: bool, what: str) -> Ret:
    ret = _ret(name)
    before = _read(target)
    if before is None and not create:
        ret["comment"] = f"{target} does not exist: nothing to do"
        return ret
    try:
        after = edit(before or "")
    except ValueError as error:  # damaged markers: touch nothing
        ret.update(result=False, comment=f"{target}: {error}; nothing was changed")
        return ret
    if after == before:
        return _swept(ret, target, f"{target}: {what} already")
    ret["changes"] = {"diff": _diff(before or "", after, target)}
    if __opts__["test"]:
        ret.update(result=None, comment=f"{target}: would be {what}")
        return ret
    try:
        write_atomically(target, after)
    except OSError as error:
        ret.update(result=False, changes={}, comment=f"{target}: cannot write it: {error}")
        return ret
    ret["comment"] = f"{target}: {what}"
    return ret


def _leftovers(target: str, salt: bool = False) -> list[Any]:
    """Temporary files a killed write of ``target`` left beside it: ours
    (replace_atomically's), or with ``salt`` those of Salt's file.managed."""
    __salt__["ephemeral.generator"]()
    from pathlib import Path

    from qubes_ephemeral.payload.vm_initramfs import temporaries

    if salt:  # Salt writes beside the path itself, a link included
        return temporaries(Path(target), os.path.basename(target))
    return temporaries(Path(os.path.realpath(target)))  # we write where a link points


def _swept(ret: Ret, target: str, comment: str, leftovers: list[Any] | None = None) -> Ret:
    """``ret`` with what a killed write of ``target`` left beside it removed
    (announced under test=True); ``leftovers``: those, when already found."""
    leftovers = _leftovers(target) if leftovers is None else leftovers
    ret["comment"] = comment
    if not leftovers:
        return ret
    ret["changes"] = {**ret["changes"], "leftovers": [str(path) for path in leftovers]}
    joined = f"{comment}; " if comment else ""
    if __opts__["test"]:
        ret.update(result=None, comment=f"{joined}an interrupted write's temporary files would be removed")
        return ret
    for path in leftovers:
        path.unlink(missing_ok=True)
    ret["comment"] = f"{joined}an interrupted write's temporary files were removed"
    return ret


def _diff(before: str, after: str, target: str) -> str:

    return "".join(difflib.unified_diff(before.splitlines(True), after.splitlines(True), target, target))


def block(name: str, artifact: dict[str, Any], present: bool = True) -> Ret:
    """Our block between its markers in ``artifact["target"]``: put there
    (prepended when absent; a missing file is made with the block alone) or,
    with ``present`` False, taken out so the file is byte for byte as before;
    a file we made (``artifact["creates"]``) goes when that leaves it empty."""
    item = _artifact(artifact)
    from qubes_ephemeral.dom0 import textedit

    if present:
        return _edit(name, item.target, lambda text: textedit.apply_block(text, item), True, "block in place")
    ret = _edit(name, item.target, lambda text: textedit.remove_block(text, item), False, "block removed")
    if ret["result"] is not False and artifact.get("creates") and _read(item.target) == "" and not __opts__["test"]:
        os.unlink(os.path.realpath(item.target))
        ret["changes"]["removed"] = item.target
        ret["comment"] += "; the file qubes-ephemeral made is removed"
    return ret


def commented(name: str, artifact: dict[str, Any], present: bool = True) -> Ret:
    """Foreign lines we take over: commented out with our prefix, or (with
    ``present`` False) given back exactly as they were."""
    item = _artifact(artifact)
    from qubes_ephemeral.dom0 import textedit

    if present:
        return _edit(name, item.target, lambda text: textedit.comment_out(text, item), False, "lines taken over")
    return _edit(name, item.target, lambda text: textedit.restore(text, item), False, "lines given back")


def recorded(name: str, record: str, entry: dict[str, Any] | None = None, first: dict[str, Any] | None = None) -> Ret:
    """The record of what section ``name`` applied: ``entry`` written into it,
    or (entry None, on clean) the section's entry taken out; the file goes
    when no section is left in it. ``first``: the entry an earlier state of
    the same run writes first, which test=True only pretends to write."""
    ret = _ret(name)
    __salt__["ephemeral.generator"]()
    from qubes_ephemeral.dom0 import applied

    before = _read(record)
    try:
        if first is not None and __opts__["test"]:
            before = applied.recorded(before, name, first)
        after = applied.recorded(before, name, entry)
    except applied.RecordError as error:
        ret.update(result=False, comment=str(error))
        return ret
    if after == before or (after is not None and before is not None and json.loads(after) == json.loads(before)):
        return _swept(ret, record, f"the record of {name} is up to date")
    ret["changes"] = {"record": record, "section": name, "entry": "written" if entry is not None else "removed"}
    if __opts__["test"]:
        ret.update(result=None, comment=f"the record of {name} would be updated")
        return ret
    try:
        if after is None:
            if os.path.exists(record):
                os.remove(record)
            for leftover in _leftovers(record):
                leftover.unlink(missing_ok=True)
        else:
            os.makedirs(os.path.dirname(record), mode=0o755, exist_ok=True)
            write_atomically(record, after)
    except OSError as error:
        ret.update(result=False, changes={}, comment=f"{record}: {error}")
        return ret
    ret["comment"] = f"the record of {name} is updated"
    return ret


def removed(name: str, target: str) -> Ret:
    """A file or symlink of ours gone, and what a killed write of it left
    beside it. Never a folder: a record that names one is damaged or forged,
    and a folder may hold someone's data."""
    ret = _ret(name)
    leftovers = _leftovers(target, salt=True)
    try:
        info = os.lstat(target)
    except FileNotFoundError:
        return _swept(ret, target, f"{target} is already absent", leftovers)
    if stat.S_ISDIR(info.st_mode):
        ret.update(result=False, comment=f"{target} is a folder, not a file of ours: it was left alone")
        return ret
    ret["changes"] = {"removed": target}
    if __opts__["test"]:
        ret.update(result=None, comment=f"{target} would be removed")
        return ret
    try:
        os.unlink(target)
    except OSError as error:
        ret.update(result=False, changes={}, comment=f"{target}: {error}")
        return ret
    return _swept(ret, target, f"{target} removed", leftovers)

"""The record of what each section's last apply put in place, and what an
apply or a clean of a section must therefore do.

The formula writes one entry per section it applied (Manifest.applied_entry)
into /etc/qubes-ephemeral/applied.json. From that record and the manifest
of the pillar now, this module decides, for one section:

- ``prune``: what the last apply put in place and the pillar no longer asks
  for (the apply removes it before it writes anything);
- ``remove``: everything a clean of the section takes away, whether the
  pillar still names it or only the record does;
- ``activation``: the units that hold the section's device, to stop on clean.

A file that two sections use (the guard script of scratch and swap) stays
while a section that is not being cleaned still records it. A record written
before sections applied alone (format 1: one list for everything) is read as
the pseudo-section ``legacy``: the next full apply prunes what it has that
the pillar no longer asks for, and a full clean removes all of it.

Everything here is pure: the formula's Salt module reads the files and
passes their text in.
"""

from __future__ import annotations

import json
import posixpath
from collections.abc import Callable, Iterable

from qubes_ephemeral.description import values
from qubes_ephemeral.description.problems import Invalid
from qubes_ephemeral.payload.vm_initramfs import DEFAULT_HOOK
from qubes_ephemeral.render.artifacts import KINDS, LIBEXEC, SECTIONS, SHARED_FILES, SYSTEMD_DIRS, UNIT_DIR
from qubes_ephemeral.render.layout import JOURNALD_DROPIN

LEGACY = "legacy"
# What an artifact in crypttab or fstab is: our lines in a file that is not ours.
SHARED_KINDS = ("block", "comment-out")
# The one drop-in name of format 1 records (now one per section: render.dropins).
LEGACY_DROPIN = ".d/50-qubes-ephemeral.conf"
Entry = dict[str, object]
ArtifactData = dict[str, object]


class RecordError(ValueError):
    pass


def load(text: str | None) -> dict[str, Entry]:
    """The record's entries by section ({} when there is no record)."""
    if text is None or not text.strip():
        return {}
    try:
        data = json.loads(text)
    except ValueError as error:
        raise RecordError(f"the applied record is not JSON ({error}): restore it or remove it by hand") from error
    if not isinstance(data, dict):
        raise RecordError("the applied record is not a JSON object: restore it or remove it by hand")
    if data.get("format") == 2 and isinstance(data.get("sections"), dict):
        unknown = sorted(set(map(str, data["sections"])) - {*SECTIONS, LEGACY})
        if unknown:
            raise RecordError(f"the applied record names unknown sections {unknown}: restore it or remove it by hand")
        return {str(key): _entry(value) for key, value in data["sections"].items()}
    if data.get("format") == 1 and isinstance(data.get("artifacts"), list):
        found = data.get("activation")
        activation: dict[str, object] = found if isinstance(found, dict) else {}
        entries: dict[str, Entry] = {LEGACY: _entry({"artifacts": data["artifacts"], "activation": None})}
        for section in ("scratch", "swap"):
            if isinstance(activation.get(section), dict):
                entries[section] = {"artifacts": [], "activation": activation[section]}
        return entries
    raise RecordError(f"the applied record has an unknown format {data.get('format')!r}")


def _entry(value: object) -> Entry:
    if not isinstance(value, dict) or not isinstance(value.get("artifacts", []), list):
        raise RecordError("an entry of the applied record is damaged: restore it or remove it by hand")
    artifacts = list(value.get("artifacts", []))
    for artifact in artifacts:
        _check_ours(artifact)
    activation = value.get("activation")
    if activation is not None and not isinstance(activation, dict):
        raise RecordError("an activation in the applied record is damaged: restore it or remove it by hand")
    return {"artifacts": artifacts, "activation": activation}


def _check_ours(artifact: object) -> None:
    """A record names only what the generator puts in place: a damaged or
    forged one must never make a clean remove a file that is not ours."""
    if not isinstance(artifact, dict) or not all(
        isinstance(artifact.get(key), str) for key in ("id", "kind", "target")
    ):
        raise RecordError("an artifact in the applied record is damaged: restore the record or remove it by hand")
    kind, target = artifact["kind"], artifact["target"]
    if kind not in KINDS or not ours(kind, target):
        raise RecordError(f"the applied record names {target} ({kind}), which qubes-ephemeral never puts in place: "
                          "restore the record or remove it by hand; nothing was changed")  # fmt: skip


def ours(kind: str, target: str) -> bool:
    """Whether the generator could have put an artifact of this kind there."""
    if posixpath.normpath(target) != target or not target.startswith("/"):
        return False
    if kind in ("block", "comment-out"):
        return target in SHARED_FILES
    if kind == "directory":  # a mount point: only ever removed when empty (rmdir)
        try:
            values.mountpoint_shape(target)
        except Invalid:
            return False
        return True
    name = posixpath.basename(target)
    return (
        target.startswith(LIBEXEC + "/")
        or target in (str(DEFAULT_HOOK), JOURNALD_DROPIN)
        or (target.startswith(UNIT_DIR + "/") and "qubes-ephemeral" in name)
    )


def dump(entries: dict[str, Entry]) -> str | None:
    """The record's text, or None when no section is left (remove the file)."""
    if not entries:
        return None
    return json.dumps({"format": 2, "sections": entries}, indent=1, sort_keys=True) + "\n"


def identity(artifact: ArtifactData) -> tuple[str, ...]:
    """Two artifacts are the same thing in dom0 when this is equal: a block
    by its file and markers, anything else by its path and kind."""
    if artifact.get("kind") == "block":
        return ("block", str(artifact["target"]), str(artifact.get("marker_start", "")))
    if artifact.get("kind") == "comment-out":  # which lines: another device's are another takeover
        return ("comment-out", str(artifact["target"]), str(artifact.get("pattern", "")))
    return (str(artifact.get("kind")), str(artifact["target"]))


def _artifacts(entry: Entry | None) -> list[ArtifactData]:
    found = entry.get("artifacts") if entry else None
    return [_normalised(a) for a in found if isinstance(a, dict)] if isinstance(found, list) else []


def _normalised(artifact: ArtifactData) -> ArtifactData:
    """What a format 1 record did not say yet, filled in the way it was then."""
    target = str(artifact.get("target", ""))
    filled = dict(artifact)
    filled.setdefault("daemon_reload", target.startswith(SYSTEMD_DIRS))
    if filled.get("kind") == "file":
        filled.setdefault("dropin", target.endswith(LEGACY_DROPIN))
    return filled


def _unique(artifacts: Iterable[ArtifactData]) -> list[ArtifactData]:
    seen: dict[tuple[str, ...], ArtifactData] = {}
    for artifact in artifacts:
        seen.setdefault(identity(artifact), artifact)
    return list(seen.values())


def _kept_by_others(entries: dict[str, Entry], leaving: Iterable[str]) -> set[str]:
    """Targets a section that stays applied still records."""
    gone = set(leaving)
    return {str(a["target"]) for section, entry in entries.items() if section not in gone for a in _artifacts(entry)}


def plan(manifest: dict[str, object], record_text: str | None, section: str,
         cleaning: Iterable[str] | None = None, whole: bool = False,
         missing: Iterable[str] = ()) -> dict[str, object]:  # fmt: skip
    """What the formula does for ``section``: see the module docstring.
    ``cleaning``: for a clean, every section the same run cleans (a full
    clean names all); None for an apply. ``whole``: the run applies every
    section of the pillar and takes over an earlier version's record.
    ``missing``: the shared files (crypttab, fstab) that do not exist now."""
    entries = load(record_text)
    clean = cleaning is not None
    cleaning = [*(cleaning or ()), *([LEGACY] if whole else [])]
    raw = manifest.get("artifacts")
    every = [a for a in raw if isinstance(a, dict)] if isinstance(raw, list) else []
    mark = _creates(entries, missing)
    current = mark([a for a in every if a.get("section") == section])
    recorded = mark(_artifacts(entries.get(section)))
    # For the legacy record: whatever a full apply of the pillar now does not put in place again.
    wanted = {identity(a) for a in (every if section == LEGACY else current)}
    kept = _kept_by_others(entries, {section, *cleaning})
    prune = [a for a in recorded if identity(a) not in wanted and not _still_used(a, kept)]
    # Undone in the reverse order of the apply that put them in place (the
    # record's order, render.manifest's), what the pillar adds since first:
    # an old guard goes only after the line that keys its device.
    remove = [a for a in reversed(_unique([*recorded, *current])) if not _still_used(a, kept)]
    activation = manifest.get("activation")
    now = activation.get(section) if isinstance(activation, dict) else None
    before = entries.get(section, {}).get("activation")
    applied = manifest.get("applied")
    final = applied.get(section) if isinstance(applied, dict) else None
    return {
        # What a clean stops: the units the last apply put in place, not the pillar's now.
        "clean_activation": before or now,
        # Written before an apply changes anything: a kill midway leaves a record
        # that names all it may have put in place (narrowed at the end).
        "record_first": {"artifacts": _unique([*recorded, *current]), "activation": now or before},
        # Written once the apply succeeded.
        "record_final": {**final, "artifacts": mark(final["artifacts"])} if isinstance(final, dict) else None,
        "blocked": _blocked(entries, section, cleaning, clean),
        "section": section,
        "wanted": section in (manifest.get("sections") or []),  # type: ignore[operator]
        "recorded": section in entries,
        # What an apply recorded, the blocks an earlier version wrote included:
        # a block between our markers that is not in here is someone else's.
        "recorded_artifacts": recorded + [a for a in _artifacts(entries.get(LEGACY)) if a.get("kind") in SHARED_KINDS],
        "artifacts": current,
        "prune": prune,
        "remove": remove,
        "activation": now or before,
        # The devices the pillar's other sections key: never this one's under another name.
        "other_devices": {
            name: str(other["device"])
            for name, other in sorted(activation.items())
            if name != section and isinstance(other, dict) and "device" in other
        }
        if isinstance(activation, dict)
        else {},
        # Whether a systemd file changes: a daemon-reload must follow.
        "reload_on_apply": any(a.get("daemon_reload") for a in [*current, *prune]),
        "reload_on_clean": any(a.get("daemon_reload") for a in remove),
    }


def _creates(entries: dict[str, Entry], missing: Iterable[str]) -> Callable[[list[ArtifactData]], list[ArtifactData]]:
    """Marks our blocks in a shared file that qubes-ephemeral made (it was
    missing): the clean that leaves it empty removes it. Any section's record
    keeps that fact, so whichever section is cleaned last knows it."""
    made = {str(t) for t in missing if t in SHARED_FILES} | {
        str(a["target"]) for entry in entries.values() for a in _artifacts(entry) if a.get("creates")
    }

    def mark(artifacts: list[ArtifactData]) -> list[ArtifactData]:
        return [{**a, "creates": True} if a.get("kind") == "block" and a.get("target") in made else a
                for a in artifacts]  # fmt: skip

    return mark


def _blocked(entries: dict[str, Entry], section: str, cleaning: Iterable[str], clean: bool) -> str | None:
    """Why a section cannot be applied or cleaned alone now, or None."""
    gone = {section, *cleaning}
    pool_on_scratch = any(a.get("id") == "unit-layout" for a in _artifacts(entries.get("qubes")))
    if clean and section == "scratch" and pool_on_scratch and "qubes" not in gone:
        return ("the Qubes pool of the qubes section lives on the scratch filesystem: clean it first "
                    "(qubesctl state.apply ephemeral.qubes.clean), or clean everything (ephemeral.clean)")  # fmt: skip
    if section != LEGACY and LEGACY in entries and LEGACY not in gone:
        return ("the record of an earlier version names every section at once: apply the whole pillar "
                "(qubesctl state.apply ephemeral) or clean everything (ephemeral.clean) first")  # fmt: skip
    return None


def _still_used(artifact: ArtifactData, kept: set[str]) -> bool:
    """A whole file (or link, or folder) that another section still records.
    Blocks and commented lines are each section's own, even in a shared file."""
    return artifact.get("kind") not in ("block", "comment-out") and str(artifact["target"]) in kept


def recorded(record_text: str | None, section: str, entry: Entry | None) -> str | None:
    """The record after a section was applied (``entry``) or cleaned (None).
    A full apply also drops the legacy entry it has just pruned."""
    entries = load(record_text)
    if entry is None:
        entries.pop(section, None)
    else:
        entries[section] = _entry(entry)
    return dump(entries)

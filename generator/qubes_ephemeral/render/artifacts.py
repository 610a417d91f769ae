"""What the generator produces: artifacts, each with its target in dom0.

An artifact says what to put where and how it is applied, never why it was
derived: the formula applies artifacts and derives nothing.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields

from qubes_ephemeral import __version__
from qubes_ephemeral.payload import vm_initramfs
from qubes_ephemeral.qubesd.feature import FEATURE, PRIVATE_FEATURE

# The sections of a description, in the order they are applied (clean
# reverts them in the opposite order). Each applies and cleans on its own.
SECTIONS = ("scratch", "swap", "traces", "patches", "qubes")


def marker_start(section: str) -> str:
    return f"# BEGIN qubes-ephemeral {section} (managed block: edit the ephemeral pillar, not these lines)"


def marker_end(section: str) -> str:
    return f"# END qubes-ephemeral {section}"


# What blocks looked like before sections applied on their own (one block per
# file): an applied record of that time names them, and the next apply or
# clean removes them by these markers.
LEGACY_MARKER_START = "# BEGIN qubes-ephemeral (managed block: edit the ephemeral pillar, not these lines)"
LEGACY_MARKER_END = "# END qubes-ephemeral"
# Where our units and our scripts go in dom0.
UNIT_DIR = "/etc/systemd/system"
LIBEXEC = "/usr/local/libexec/qubes-ephemeral"
# Where the formula records the Qubes values it replaced, for an exact revert.
QUBES_RECORD = "/etc/qubes-ephemeral/qubes-originals.json"
# What clean needs to take our marks off disposables: they copy their template's
# features when they are created, and a named one keeps them after clean.
DISPOSABLES_CLEANUP = {
    "list": ["qvm-ls", "--raw-data", "--fields", "NAME,CLASS,TEMPLATE"],
    "features": [FEATURE, PRIVATE_FEATURE],
}
# Where the formula records what each section's last apply put in place
# (Manifest.applied_entry): the next apply removes what the pillar no longer
# asks for, and clean reverts it even after the pillar changed.
APPLIED_RECORD = "/etc/qubes-ephemeral/applied.json"
# What clean needs to undo patches.dispvm_private_cow even when the pillar no
# longer asks for it: the tool that reverts VM kernels' initramfs, its path unit.
VM_INITRAMFS_TOOL = f"{LIBEXEC}/vm-initramfs"
VM_KERNELS_PATH_UNIT = vm_initramfs.PATH_UNIT
# Prefix of a persistent swap line that the description took over.
REPLACED_PREFIX = "#qubes-ephemeral-replaced# "


@dataclass(frozen=True)
class Artifact:
    id: str
    target: str
    purpose: str
    # The section of the description that asks for it (one of SECTIONS).
    section: str = field(kw_only=True)

    kind = "artifact"

    def as_dict(self, with_content: bool = True) -> dict[str, object]:
        data: dict[str, object] = {"kind": self.kind, **asdict(self)}
        # systemd reads it: a change needs a daemon-reload.
        data["daemon_reload"] = self.target.startswith(SYSTEMD_DIRS)
        if not with_content:
            data.pop("content", None)
        return data


@dataclass(frozen=True)
class Block(Artifact):
    """Lines between two marker comments in a file we share with dom0."""

    content: str
    marker_start: str
    marker_end: str
    kind = "block"


@dataclass(frozen=True)
class File(Artifact):
    """A whole file we own. ``dropin``: in a folder of drop-ins, which is
    removed with it when nothing else is left in it."""

    content: str
    mode: str = "0644"
    dropin: bool = False
    kind = "file"


@dataclass(frozen=True)
class Symlink(Artifact):
    """A symlink we own (e.g. enabling a unit without a running systemd)."""

    link_to: str
    kind = "symlink"


@dataclass(frozen=True)
class Directory(Artifact):
    """A directory; immutable while nothing is mounted on it."""

    mode: str = "0755"
    immutable: bool = False
    kind = "directory"


@dataclass(frozen=True)
class CommentOut(Artifact):
    """Foreign lines we take over: commented out with a prefix, restored on clean.

    ``pattern`` (Python re, MULTILINE) matches each whole line to comment out;
    ``restore_pattern`` matches a commented line, group 1 being the original.
    """

    pattern: str
    restore_pattern: str
    prefix: str = REPLACED_PREFIX
    kind = "comment-out"


KINDS: dict[str, type[Artifact]] = {kind.kind: kind for kind in (Block, File, Symlink, Directory, CommentOut)}


def from_dict(data: dict[str, object]) -> Artifact:
    """An artifact back from its as_dict() form (the manifest, a record).
    A record has no content: it comes back empty, which is all undoing needs."""
    kind = KINDS[str(data["kind"])]
    names = {f.name for f in fields(kind)}
    values = {key: value for key, value in data.items() if key in names}
    if "content" in names:
        values.setdefault("content", "")
    if kind is Block and "marker_start" not in values:  # recorded before sections applied alone
        values.update(marker_start=LEGACY_MARKER_START, marker_end=LEGACY_MARKER_END)
    values.setdefault("section", "")
    return kind(**values)  # type: ignore[arg-type]


@dataclass(frozen=True)
class Manifest:
    activate: str
    artifacts: tuple[Artifact, ...]
    # Per section with a device (scratch, swap): what activate: now starts and
    # what clean stops.
    activation: dict[str, dict[str, object]]
    # The sections the description names, in SECTIONS order.
    sections: tuple[str, ...] = ()
    # Qubes storage settings (render.qubes_plan.plan); None without a qubes: section.
    qubes: dict[str, object] | None = None
    # patches.dispvm_private_cow in dom0 (render.private_cow.plan); None when off.
    private_cow: dict[str, object] | None = None

    def as_dict(self, with_content: bool = True) -> dict[str, object]:
        data: dict[str, object] = {
            "format": 2,
            "generator": f"qubes-ephemeral {__version__}",
            "activate": self.activate,
            "sections": list(self.sections),
            "all_sections": list(SECTIONS),
            "artifacts": [a.as_dict(with_content) for a in self.artifacts],
            "activation": self.activation,
            "qubes": self.qubes,
            "qubes_record": QUBES_RECORD,
            "qubes_disposables_cleanup": DISPOSABLES_CLEANUP,
            "private_cow": self.private_cow,
            "private_cow_cleanup": {
                "tool": VM_INITRAMFS_TOOL,
                "path_unit": VM_KERNELS_PATH_UNIT,
                "path_unit_file": f"{UNIT_DIR}/{VM_KERNELS_PATH_UNIT}",
                "revert": [VM_INITRAMFS_TOOL, "revert"],
                # Exits 0 when no VM kernel carries the patch any more.
                "reverted": [VM_INITRAMFS_TOOL, "status", "--quiet", "--want", "unpatched"],
            },
            "applied_record": APPLIED_RECORD,
            # Folders of our own that a full clean removes once nothing else is in them.
            "own_folders": [LIBEXEC, str(vm_initramfs.DEFAULT_HOOK.parent)],
        }
        if with_content:
            data["applied"] = {section: self.applied_entry(section) for section in self.sections}
        return data

    def applied_entry(self, section: str) -> dict[str, object]:
        """What the formula records for a section it applied: its artifacts
        without their content (what undoing them needs), and its activation
        (which units hold a device, which swap volume to give its signature back)."""
        return {
            "artifacts": [a.as_dict(with_content=False) for a in self.artifacts if a.section == section],
            "activation": self.activation.get(section),
        }

    def applied_record(self) -> str:
        """The whole record after every section of the description was applied."""
        record = {"format": 2, "sections": {section: self.applied_entry(section) for section in self.sections}}
        return json.dumps(record, indent=1, sort_keys=True) + "\n"


# The files we share with dom0: our blocks and the lines we take over live there.
CRYPTTAB = "/etc/crypttab"
FSTAB = "/etc/fstab"
SHARED_FILES = (CRYPTTAB, FSTAB)
# Held by a formula run from its first render to its end: two runs never interleave.
APPLY_LOCK = "/run/qubes-ephemeral/apply.lock"
SYSTEMD_DIRS = (f"{UNIT_DIR}/", *SHARED_FILES)


def guard_path(section: str) -> str:
    """The script that probes a section's device for data before it is keyed
    (its guard drop-in runs it): one per section, so each applies and cleans alone."""
    return f"{LIBEXEC}/refuse-data-{section}"

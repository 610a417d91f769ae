"""What the generator produces: artifacts, each with its target in dom0.

An artifact says what to put where and how it is applied, never why it was
derived: the formula applies artifacts and derives nothing.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass

from qubes_ephemeral import __version__
from qubes_ephemeral.qubesd.feature import FEATURE, PRIVATE_FEATURE

MARKER_START = "# BEGIN qubes-ephemeral (managed block: edit the ephemeral pillar, not these lines)"
MARKER_END = "# END qubes-ephemeral"
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
# Where the formula records what the last apply put in place (applied_record
# below): the next apply removes what the pillar no longer asks for, and
# clean reverts it even after the pillar changed.
APPLIED_RECORD = "/etc/qubes-ephemeral/applied.json"
# What clean needs to undo patches.dispvm_private_cow even when the pillar no
# longer asks for it: the tool that reverts VM kernels' initramfs, its path unit.
VM_INITRAMFS_TOOL = f"{LIBEXEC}/vm-initramfs"
VM_KERNELS_PATH_UNIT = "qubes-ephemeral-vm-kernels.path"
# Prefix of a persistent swap line that the description took over.
REPLACED_PREFIX = "#qubes-ephemeral-replaced# "


@dataclass(frozen=True)
class Artifact:
    id: str
    target: str
    purpose: str

    kind = "artifact"

    def as_dict(self, with_content: bool = True) -> dict[str, object]:
        data: dict[str, object] = {"kind": self.kind, **asdict(self)}
        if not with_content:
            data.pop("content", None)
        return data


@dataclass(frozen=True)
class Block(Artifact):
    """Lines between two marker comments in a file we share with dom0."""

    content: str
    marker_start: str = MARKER_START
    marker_end: str = MARKER_END
    kind = "block"


@dataclass(frozen=True)
class File(Artifact):
    """A whole file we own."""

    content: str
    mode: str = "0644"
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


@dataclass(frozen=True)
class Manifest:
    activate: str
    artifacts: tuple[Artifact, ...]
    activation: dict[str, object]
    # Qubes storage settings (render_qubes.plan); None without a qubes: section.
    qubes: dict[str, object] | None = None
    # patches.dispvm_private_cow in dom0 (render_private_cow.plan); None when off.
    private_cow: dict[str, object] | None = None

    def as_dict(self, with_content: bool = True) -> dict[str, object]:
        data: dict[str, object] = {
            "format": 1,
            "generator": f"qubes-ephemeral {__version__}",
            "activate": self.activate,
            "artifacts": [a.as_dict(with_content) for a in self.artifacts],
            "activation": self.activation,
            "daemon_reload_when_changed": [a.id for a in self.artifacts if a.target.startswith(SYSTEMD_DIRS)],
            "qubes": self.qubes,
            "qubes_record": QUBES_RECORD,
            "qubes_disposables_cleanup": DISPOSABLES_CLEANUP,
            "private_cow": self.private_cow,
            "private_cow_cleanup": {"tool": VM_INITRAMFS_TOOL, "path_unit": VM_KERNELS_PATH_UNIT},
            "applied_record": APPLIED_RECORD,
        }
        if with_content:
            data["applied_record_content"] = self.applied_record()
        return data

    def applied_record(self) -> str:
        """What the formula writes to APPLIED_RECORD: every artifact without its
        content (what undoing it needs), and the activation plan (which units
        hold a device, which swap volume to give its signature back)."""
        record = {
            "format": 1,
            "artifacts": [a.as_dict(with_content=False) for a in self.artifacts],
            "activation": self.activation,
        }
        return json.dumps(record, indent=1, sort_keys=True) + "\n"


SYSTEMD_DIRS = (f"{UNIT_DIR}/", "/etc/crypttab", "/etc/fstab")

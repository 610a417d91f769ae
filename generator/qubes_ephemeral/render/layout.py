"""What lives on the scratch filesystem besides scratch files.

- The directory of the Qubes pool on it (qubes.pool): re-made at every boot,
  after the mkfs and the mount, by the layout unit; qubesd starts after it.
- dom0's log directories about qubes (traces): mounted from the scratch
  filesystem at every boot, before the services that write them start, by
  the traces unit. Without the scratch filesystem they get a tmpfs instead:
  those logs then live in memory and never fall back to the persistent disk.
"""

from __future__ import annotations

import posixpath

from qubes_ephemeral.description.model import Description, Scratch
from qubes_ephemeral.render import dropins, naming
from qubes_ephemeral.render.artifacts import LIBEXEC, UNIT_DIR, Artifact, File
from qubes_ephemeral.render.templating import render_template

LAYOUT_UNIT = "qubes-ephemeral-layout.service"
LAYOUT_SCRIPT = f"{LIBEXEC}/layout"
TRACES_UNIT = "qubes-ephemeral-traces.service"
TRACES_SCRIPT = f"{LIBEXEC}/traces"
JOURNALD_DROPIN = "/etc/systemd/journald.conf.d/50-qubes-ephemeral.conf"
QUBESD_UNIT = "qubesd.service"
# Only when the scratch filesystem is missing: a bound on the memory the logs may take.
TRACES_TMPFS_SIZE = "10%"


def trace_source(scratch: Scratch, path: str) -> str:
    """Where a log directory really lives: under the scratch mount point."""
    return f"{scratch.mountpoint}/traces{path}"


def pool_dir(description: Description) -> str | None:
    qubes, scratch = description.qubes, description.scratch
    if qubes is None or qubes.pool is None or scratch is None:
        return None
    return f"{scratch.mountpoint}/pools/{qubes.pool}"


def pool_driver(scratch: Scratch) -> str:
    # file-reflink needs reflinks (xfs, made with reflink=1); ext4 has none.
    return "file-reflink" if scratch.fs == "xfs" else "file"


def _layout(description: Description) -> list[Artifact]:
    directory, scratch = pool_dir(description), description.scratch
    if directory is None or scratch is None:
        return []
    context = {
        "mountpoint": scratch.mountpoint,
        "mount_unit": naming.mount_unit(scratch.mountpoint),
        "pool_dir": directory,
        "script": LAYOUT_SCRIPT,
    }
    section = "qubes"
    return [
        File("layout-script", LAYOUT_SCRIPT, "make the Qubes pool's directory on the scratch filesystem",
             render_template("layout.sh.j2", **context), mode="0755", section=section),
        File("unit-layout", f"{UNIT_DIR}/{LAYOUT_UNIT}", "lay out the scratch filesystem after each boot's mount",
             render_template("layout.service.j2", **context), section=section),
        # qubesd must not start a qube in the pool before its directory is there.
        *dropins.waits({QUBESD_UNIT: (LAYOUT_UNIT,)}, section),
    ]  # fmt: skip


def _traces(description: Description) -> list[Artifact]:
    traces, scratch = description.traces, description.scratch
    if traces is None:
        return []
    # Without the scratch filesystem, every log directory gets a tmpfs.
    pairs = [(trace_source(scratch, path) if scratch else None, path) for path in traces.paths]
    context = {
        "mountpoint": scratch.mountpoint if scratch else None,
        "mount_unit": naming.mount_unit(scratch.mountpoint) if scratch else None,
        "traces": pairs,
        "parents": sorted({posixpath.dirname(target) for _, target in pairs}),
        "writers": traces.writers,
        "tmpfs_size": TRACES_TMPFS_SIZE,
        "script": TRACES_SCRIPT,
    }
    section = "traces"
    where = "the scratch filesystem" if scratch else "a tmpfs"
    result: list[Artifact] = [
        File("traces-script", TRACES_SCRIPT, f"mount dom0's log directories from {where}",
             render_template("traces.sh.j2", **context), mode="0755", section=section),
        File("unit-traces", f"{UNIT_DIR}/{TRACES_UNIT}", "keep dom0's logs about qubes off the persistent disk",
             render_template("traces.service.j2", **context), section=section),
        *dropins.waits({writer: (TRACES_UNIT,) for writer in traces.writers}, section),
    ]  # fmt: skip
    if traces.journald == "volatile":
        result.append(File("journald-volatile", JOURNALD_DROPIN, "keep the systemd journal in memory only",
                           render_template("journald.conf.j2"), dropin=True, section=section))  # fmt: skip
    return result


def artifacts(description: Description) -> list[Artifact]:
    return _layout(description) + _traces(description)

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

from qubes_ephemeral.description.model import Description
from qubes_ephemeral.render import naming
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


def trace_source(description: Description, path: str) -> str:
    """Where a log directory really lives: under the scratch mount point."""
    return f"{description.scratch.mountpoint}/traces{path}"


def pool_dir(description: Description) -> str | None:
    qubes = description.qubes
    if qubes is None or qubes.pool is None:
        return None
    return f"{description.scratch.mountpoint}/pools/{qubes.pool}"


def pool_driver(description: Description) -> str:
    # file-reflink needs reflinks (xfs, made with reflink=1); ext4 has none.
    return "file-reflink" if description.scratch.fs == "xfs" else "file"


def layout_needed(description: Description) -> bool:
    return pool_dir(description) is not None


def ready_units(description: Description) -> dict[str, tuple[str, ...]]:
    """For each unit that uses the scratch filesystem, the units it waits for."""
    mount_unit = naming.mount_unit(description.scratch.mountpoint)
    # Users of the scratch filesystem wait for its layout when there is one.
    scratch_ready = LAYOUT_UNIT if layout_needed(description) else mount_unit
    waits: dict[str, list[str]] = {}
    for consumer in description.scratch.consumers:
        waits.setdefault(consumer, []).append(scratch_ready)
    if layout_needed(description):
        # qubesd must not start a qube in the pool before its directory is there.
        waits.setdefault(QUBESD_UNIT, []).append(LAYOUT_UNIT)
    if description.traces is not None:
        for writer in description.traces.writers:
            waits.setdefault(writer, []).append(TRACES_UNIT)
    return {unit: tuple(dict.fromkeys(units)) for unit, units in waits.items()}


def _layout(description: Description) -> list[Artifact]:
    directory = pool_dir(description)
    if directory is None:
        return []
    context = {
        "mountpoint": description.scratch.mountpoint,
        "mount_unit": naming.mount_unit(description.scratch.mountpoint),
        "pool_dir": directory,
        "script": LAYOUT_SCRIPT,
    }
    return [
        File("layout-script", LAYOUT_SCRIPT, "make the Qubes pool's directory on the scratch filesystem",
             render_template("layout.sh.j2", **context), mode="0755"),
        File("unit-layout", f"{UNIT_DIR}/{LAYOUT_UNIT}", "lay out the scratch filesystem after each boot's mount",
             render_template("layout.service.j2", **context)),
    ]  # fmt: skip


def _traces(description: Description) -> list[Artifact]:
    traces = description.traces
    if traces is None:
        return []
    pairs = [(trace_source(description, path), path) for path in traces.paths]
    context = {
        "mountpoint": description.scratch.mountpoint,
        "mount_unit": naming.mount_unit(description.scratch.mountpoint),
        "traces": pairs,
        "parents": sorted({posixpath.dirname(target) for _, target in pairs}),
        "writers": traces.writers,
        "tmpfs_size": TRACES_TMPFS_SIZE,
        "script": TRACES_SCRIPT,
    }
    result: list[Artifact] = [
        File("traces-script", TRACES_SCRIPT, "mount dom0's log directories from the scratch filesystem (or a tmpfs)",
             render_template("traces.sh.j2", **context), mode="0755"),
        File("unit-traces", f"{UNIT_DIR}/{TRACES_UNIT}", "keep dom0's logs about qubes off the persistent disk",
             render_template("traces.service.j2", **context)),
    ]  # fmt: skip
    if traces.journald == "volatile":
        result.append(File("journald-volatile", JOURNALD_DROPIN, "keep the systemd journal in memory only",
                           render_template("journald.conf.j2")))  # fmt: skip
    return result


def artifacts(description: Description) -> list[Artifact]:
    return _layout(description) + _traces(description)

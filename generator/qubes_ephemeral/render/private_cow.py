"""patches.dispvm_private_cow, dom0 side: the VM kernels' initramfs.

The /rw copy-on-write runs in the VM's initramfs (vm/private-cow.sh). For the
VM kernels dom0 provides, the tool vm_initramfs.py adds it to each kernel's
initramfs: at apply time, at every boot before qubesd starts qubes, and
whenever a kernel package adds a folder under /var/lib/qubes/vm-kernels (a
path unit), so a kernel update never silently drops it. Qubes that boot
their own kernel get it from the dracut module the state ephemeral.template
installs in their template. The qubesd extension makes the private volume
read-only (qubesd_extension.py) and refuses to start a disposable whose
dom0-provided kernel lacks the patch.
"""

from __future__ import annotations

from pathlib import Path

from qubes_ephemeral.description.model import Description
from qubes_ephemeral.payload import vm_initramfs
from qubes_ephemeral.payload.vm_initramfs import DEFAULT_HOOK, KERNELS_DIR
from qubes_ephemeral.render.artifacts import UNIT_DIR, VM_INITRAMFS_TOOL, VM_KERNELS_PATH_UNIT, Artifact, File, Symlink
from qubes_ephemeral.render.templating import render_template

TOOL = VM_INITRAMFS_TOOL
SERVICE = vm_initramfs.SERVICE_UNIT
PATH_UNIT = VM_KERNELS_PATH_UNIT
SECTION = "patches"
PAYLOAD = Path(__file__).parent.parent / "payload"


def needed(description: Description) -> bool:
    return description.patches is not None and description.patches.dispvm_private_cow


def artifacts(description: Description) -> list[Artifact]:
    if not needed(description):
        return []
    context = {"tool": TOOL, "kernels_dir": str(KERNELS_DIR), "service": SERVICE}
    return [
        File("vm-initramfs-tool", TOOL, "add the /rw copy-on-write to VM kernels' initramfs",
             (PAYLOAD / "vm_initramfs.py").read_text(), mode="0755", section=SECTION),
        File("vm-private-cow-hook", str(DEFAULT_HOOK), "the /rw copy-on-write, run in the VM's initramfs",
             (PAYLOAD / "private-cow.sh").read_text(), section=SECTION),
        File("unit-vm-kernels", f"{UNIT_DIR}/{SERVICE}", "patch every VM kernel's initramfs",
             render_template("vm-kernels.service.j2", **context), section=SECTION),
        File("unit-vm-kernels-path", f"{UNIT_DIR}/{PATH_UNIT}", "patch again when a VM kernel is installed",
             render_template("vm-kernels.path.j2", **context), section=SECTION),
        Symlink("enable-vm-kernels", f"{UNIT_DIR}/multi-user.target.wants/{SERVICE}",
                "patch at every boot, before qubesd starts qubes", f"{UNIT_DIR}/{SERVICE}", section=SECTION),
        Symlink("enable-vm-kernels-path", f"{UNIT_DIR}/paths.target.wants/{PATH_UNIT}",
                "watch for new VM kernels", f"{UNIT_DIR}/{PATH_UNIT}", section=SECTION),
    ]  # fmt: skip


def plan(description: Description) -> dict[str, object] | None:
    """What the formula runs: check, patch now, watch, and undo on clean."""
    if not needed(description):
        return None
    return {
        "status": [TOOL, "status", "--quiet"],
        "apply": [TOOL, "apply"],
        "revert": [TOOL, "revert"],
        "path_unit": PATH_UNIT,
        "tool": TOOL,
    }

"""Names shared by the qubesd extension and the generator (no qubesd imports here)."""

from __future__ import annotations

import json
from collections.abc import Callable

# On a disposable template: its disposables get a read-only root and an
# ephemeral volatile volume at every start.
FEATURE = "qubes-ephemeral"
# On a disposable template, value "cow": their private volume is read-only too,
# and the VM's initramfs puts /rw on a copy-on-write on the volatile volume.
PRIVATE_FEATURE = "qubes-ephemeral-private"
PRIVATE_COW = "cow"
# On a template whose qubes boot its own kernel: its initramfs carries the /rw
# copy-on-write (value "dracut": the state ephemeral.template applied there).
# Without it, private cow is refused for qubes that boot their own kernel.
OWN_INITRAMFS_FEATURE = "qubes-ephemeral-own-initramfs"
OWN_INITRAMFS_DRACUT = "dracut"
# On a disposable, while a start has changed its volume settings: what to put
# back (JSON). Saved with qubes.xml, so a save before the put-back (qubesd
# stopped mid-start) is undone at its next load or start.
RESTORE_FEATURE = "qubes-ephemeral-restore"
# Written by the extension when qubesd loads it: the formula checks it.
LOADED_STAMP = "/run/qubes-ephemeral/qubesd-extension.json"


def loaded_by_running_qubesd(read: Callable[[str], str | None], stamp: str = LOADED_STAMP) -> tuple[bool | None, str]:
    """Whether the qubesd running now loaded the extension, from its stamp and
    /proc, through ``read`` (a file's text, None when absent; it may raise
    PermissionError).

    The stamp holds the PID of the qubesd that wrote it. A stamp alone is not
    enough: a qubesd restarted after an update that broke the extension leaves
    the old stamp behind, and disposables would start unprotected while
    everything reported "loaded". None: it could not be told.
    """
    try:
        text = read(stamp)
    except PermissionError:
        return None, f"{stamp} is not readable"
    if text is None:
        return False, f"{stamp} is missing: qubesd has not loaded it since the boot"
    try:
        fields = json.loads(text)
        pid = int(fields["pid"])
        version = str(fields.get("version", "?"))
    except (ValueError, TypeError, KeyError):
        return False, f"{stamp} is not one the extension writes"
    try:
        cmdline = read(f"/proc/{pid}/cmdline")
    except PermissionError:
        return None, f"/proc/{pid}/cmdline is not readable"
    if cmdline is None or "qubesd" not in (arg.rsplit("/", 1)[-1] for arg in cmdline.split("\0")):
        return False, (
            f"{stamp} was written by qubesd PID {pid}, which no longer runs: "
            "the running qubesd did not load the extension (see: journalctl -u qubesd)"
        )
    return True, f"version {version}, in qubesd PID {pid}"

"""Names shared by the qubesd extension and the generator (no qubesd imports here)."""

# On a disposable template: its disposables get a read-only root and an
# ephemeral volatile volume at every start.
FEATURE = "qubes-ephemeral"
# On a disposable template, value "cow": their private volume is read-only too,
# and the VM's initramfs puts /rw on a copy-on-write on the volatile volume.
PRIVATE_FEATURE = "qubes-ephemeral-private"
PRIVATE_COW = "cow"
# Written by the extension when qubesd loads it: the formula checks it.
LOADED_STAMP = "/run/qubes-ephemeral/qubesd-extension.json"

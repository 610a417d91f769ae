"""Stand-in for qubes-core-admin qubes/config.py: where qubesd keeps the VM kernels."""

qubes_base_dir = "/var/lib/qubes"
system_path = {"qubes_kernels_base_dir": "vm-kernels"}

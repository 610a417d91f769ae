"""qubes-ephemeral: disposables that really forget.

One YAML description (the Salt pillar ``ephemeral:``) is validated into a
model and rendered into crypttab/fstab blocks, systemd units and a manifest
that the ``ephemeral`` Salt formula applies in dom0.
"""

__version__ = "0.1.0"

"""The qube feature that switches the qubesd extension on (shared by both sides)."""

FEATURE = "qubes-ephemeral"

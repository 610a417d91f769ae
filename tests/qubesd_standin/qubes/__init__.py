"""Stand-in for qubes-core-admin's qubes package (tests only; see ../README.md)."""

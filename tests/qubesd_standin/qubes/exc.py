"""Stand-in for qubes-core-admin qubes/exc.py: the base exception qubesd reports to the caller."""


class QubesException(Exception):
    pass

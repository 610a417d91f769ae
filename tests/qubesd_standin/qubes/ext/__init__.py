"""Stand-in for qubes-core-admin qubes/ext/__init__.py: Extension and handler."""

from __future__ import annotations

import fnmatch

from qubes.vm import LocalVM


def handler(*events, vm=None, system=False):
    """Mark a method as the handler of ``events`` on ``vm`` (default: every VM)."""

    def decorator(func):
        func.ha_events = events
        func.ha_vm = vm if vm is not None else LocalVM
        func.ha_system = system
        return func

    return decorator


class Extension:
    """A singleton; instantiating it registers the handlers of its own class body
    (cls.__dict__, not dir(cls)), as upstream's __new__ does."""

    _instances: dict[type, Extension] = {}

    def __new__(cls):
        if cls in Extension._instances:
            return Extension._instances[cls]
        instance = super().__new__(cls)
        Extension._instances[cls] = instance
        for name in cls.__dict__:
            method = getattr(cls, name)
            for event in getattr(method, "ha_events", ()):
                method.ha_vm.add_handler(event, getattr(instance, name))
        return instance


def matches(pattern: str, event: str) -> bool:
    return fnmatch.fnmatch(event, pattern)

"""Salt execution module ``ephemeral``: the formula's bridge to the generator.

The formula renders no artifact itself: it asks the generator for the
manifest of the ``ephemeral`` pillar and applies each artifact. dom0 has no
network and no pip, so the generator comes with the formula (the package in
``ephemeral/lib`` of the formula's file root) or from the installed RPM.
Without either, the module is not loaded (``__virtual__`` says why).
"""

from __future__ import annotations

import fcntl
import os
import sys
import types
from collections.abc import Callable, Mapping
from typing import Any

from salt.exceptions import CommandExecutionError

# Salt's loader replaces these when it loads the module: the placeholders give their types.
__salt__: Mapping[str, Callable[..., Any]] = {}
__opts__: dict[str, Any] = {}
__pillar__: Mapping[str, Any] = {}
__context__: dict[str, Any] = {}

__virtualname__ = "ephemeral"

PACKAGE = "qubes_ephemeral"


def __virtual__() -> str | tuple[bool, str]:
    """Loaded only where the generator can be imported: bundled in the formula
    (any saltenv of ``file_roots``, ``base`` first) or installed."""
    try:
        _generator(None)
    except CommandExecutionError as error:
        return False, str(error)
    return __virtualname__


def _bundled_lib(saltenv: str | None) -> str | None:
    """The formula's ``ephemeral/lib`` holding the generator, in ``saltenv``'s
    file roots (None: in any saltenv, ``base`` first)."""
    roots: Mapping[str, list[str]] = __opts__.get("file_roots") or {}
    envs = [saltenv] if saltenv is not None else sorted(roots, key=lambda env: env != "base")
    for env in envs:
        for root in roots.get(env, []):
            candidate = os.path.join(root, "ephemeral", "lib")
            if os.path.isfile(os.path.join(candidate, PACKAGE, "__init__.py")):
                return candidate
    return None


def _generator(saltenv: str | None = "base") -> str:
    """Make the generator importable; the folder it is imported from."""
    # The copy shipped with the formula wins, so formula and generator match.
    lib = _bundled_lib(saltenv)
    if lib and lib not in sys.path:
        sys.path.insert(0, lib)
    try:
        import qubes_ephemeral.api  # what the manifest needs, and all it imports
    except ImportError as error:
        raise CommandExecutionError(
            "the qubes-ephemeral generator was not found: install the qubes-ephemeral package or keep "
            f"ephemeral/lib/qubes_ephemeral next to the formula ({error})"
        ) from error
    return os.path.dirname(os.path.dirname(os.path.abspath(qubes_ephemeral.__file__)))


def _sync_once(saltenv: str) -> None:
    # state.apply alone does not sync a formula's _modules and _states; do it
    # once per run (a no-op when they are current), before any state runs.
    # refresh=False: a refresh only signals a minion daemon over its event
    # socket (this process finds synced modules by itself); salt-call --local,
    # as qubesctl runs it in dom0, has none, and waited a second per call for it.
    if not __context__.get("ephemeral.synced"):
        __salt__["saltutil.sync_modules"](saltenv=saltenv, refresh=False)
        __salt__["saltutil.sync_states"](saltenv=saltenv, refresh=False)
        __context__["ephemeral.synced"] = True


def _lock(saltenv: str) -> None:
    """Hold the formula's lock until this process ends (a kill frees it too),
    from before the record is first read: a second run racing this one
    refuses before it reads or changes anything."""
    # Salt reloads this module after a sync: the lock lives in sys.modules,
    # which outlives that, so the run never waits for its own lock.
    holder = sys.modules.setdefault("qubes_ephemeral_formula_lock", types.ModuleType("qubes_ephemeral_formula_lock"))
    if getattr(holder, "fd", None) is not None:
        return
    _generator(saltenv)
    from qubes_ephemeral.render.artifacts import APPLY_LOCK

    try:
        os.makedirs(os.path.dirname(APPLY_LOCK), mode=0o755, exist_ok=True)
        fd = os.open(APPLY_LOCK, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
    except OSError as error:
        raise CommandExecutionError(f"cannot open the formula's lock {APPLY_LOCK} ({error.strerror}): "
                                    "nothing was changed") from None  # fmt: skip
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise CommandExecutionError(
            f"another run of the ephemeral formula holds {APPLY_LOCK}: nothing was changed. "
            "Wait for it to end, then run again"
        ) from None
    holder.fd = fd  # type: ignore[attr-defined]


def generator(saltenv: str = "base") -> str:
    """The folder the formula's generator is imported from: the formula's
    ``ephemeral/lib`` or the installed package's. From then on the
    ``ephemeral_qubes`` states import its parsers (qubes_ephemeral.dom0.parsers).

    CLI Example: ``salt-call ephemeral.generator``
    """
    return _generator(saltenv)


def manifest(description: object = None, saltenv: str = "base") -> dict[str, object]:
    """The manifest for ``description`` (default: the ``ephemeral`` pillar).

    Raises a clear error listing every problem when the pillar is invalid,
    so the whole state run stops before anything is changed. The pillar's
    manifest is made once per run, however many sls files ask for it.

    CLI Example: ``salt-call ephemeral.manifest``
    """
    _lock(saltenv)
    _sync_once(saltenv)
    from_pillar = description is None
    if from_pillar and "ephemeral.manifest" in __context__:
        cached: dict[str, object] = __context__["ephemeral.manifest"]
        return cached
    _generator(saltenv)
    from qubes_ephemeral.api import manifest_for_pillar
    from qubes_ephemeral.description.problems import DescriptionError

    if from_pillar:
        description = __pillar__.get("ephemeral")
    if description is None:
        raise CommandExecutionError("the ephemeral pillar is not set: see pillar.example")
    try:
        result = manifest_for_pillar(description)
    except DescriptionError as error:
        raise CommandExecutionError(
            "invalid ephemeral pillar, nothing was changed:\n" + "\n".join(p.format() for p in error.problems)
        ) from error
    if from_pillar:
        __context__["ephemeral.manifest"] = result
    return result


def version(saltenv: str = "base") -> str:
    """The generator's version. CLI Example: ``salt-call ephemeral.version``"""
    _generator(saltenv)
    from qubes_ephemeral import __version__

    return __version__


def qubesd_extension(stamp: str, saltenv: str = "base") -> dict[str, object]:
    """Whether the running qubesd loaded the qubesd extension: ``{"loaded":
    True, False or None (cannot tell), "detail": why}``, from ``stamp`` (the
    file the extension writes, with qubesd's PID) and /proc."""
    _generator(saltenv)
    from qubes_ephemeral.dom0.probe import Host
    from qubes_ephemeral.qubesd.feature import loaded_by_running_qubesd

    loaded, detail = loaded_by_running_qubesd(Host().read, stamp)
    return {"loaded": loaded, "detail": detail}


def section(name: str, cleaning: list[str] | None = None, saltenv: str = "base") -> dict[str, object]:
    """What the formula does for section ``name``, from the pillar's manifest
    and the applied record (qubes_ephemeral.dom0.applied.plan). ``cleaning``:
    every section the same run cleans. Made once per run for each question:
    the formula renders before anything changes, so the answer holds."""
    whole_run = bool(__context__.get("ephemeral.whole"))
    key = "ephemeral.section " + repr((name, None if cleaning is None else list(cleaning), whole_run))
    if key not in __context__:
        __context__[key] = _section(name, cleaning, whole_run, saltenv)
    cached: dict[str, object] = __context__[key]
    return cached


def _section(name: str, cleaning: list[str] | None, whole_run: bool, saltenv: str) -> dict[str, object]:
    plan = manifest(saltenv=saltenv)
    _generator(saltenv)
    from qubes_ephemeral.dom0 import applied
    from qubes_ephemeral.render.artifacts import SHARED_FILES

    record = str(plan["applied_record"])
    text = None
    if os.path.exists(record):
        with open(record, encoding="utf-8", errors="surrogateescape") as handle:
            text = handle.read()
    try:
        # ephemeral (init.sls) applies every section and takes over an earlier version's record.
        missing = [path for path in SHARED_FILES if not os.path.exists(path)]
        return applied.plan(plan, text, name, cleaning, whole=whole_run, missing=missing)
    except applied.RecordError as error:
        raise CommandExecutionError(f"{record}: {error}") from error


def preflight(plan: dict[str, object], cleaning: bool = False, saltenv: str = "base") -> bool:
    """Before a section's apply (or clean) changes anything: every target
    writable, nothing of dom0 in the way (qubes_ephemeral.dom0.preflight).
    The formula asks while it renders, so a refusal stops the whole run
    before its first state, test=True included.

    CLI Example: ``salt-call ephemeral.preflight "$(salt-call --out=json ephemeral.section scratch)"``
    """
    _generator(saltenv)
    from qubes_ephemeral.dom0 import preflight as checks

    found = checks.problems(plan, checks.Files(), cleaning)
    if found:
        what = "clean" if cleaning else "apply"
        raise CommandExecutionError(
            f"the {what} of section {plan.get('section')} cannot go ahead, nothing was changed:\n- "
            + "\n- ".join(found)
        )
    return True


def whole() -> bool:
    """Mark this run as ``state.apply ephemeral``: every section at once
    (init.sls calls it first, the sections' states render after it)."""
    __context__["ephemeral.whole"] = True
    return True

"""Salt execution module ``ephemeral``: the formula's bridge to the generator.

The formula renders no artifact itself: it asks the generator for the
manifest of the ``ephemeral`` pillar and applies each artifact. dom0 has no
network and no pip, so the generator comes with the formula (the package in
``ephemeral/lib`` of the formula's file root) or from the installed RPM.
"""

import os
import sys

from salt.exceptions import CommandExecutionError

__virtualname__ = "ephemeral"


def __virtual__():
    return __virtualname__


def _bundled_lib(saltenv):
    for root in __opts__.get("file_roots", {}).get(saltenv, []):
        candidate = os.path.join(root, "ephemeral", "lib")
        if os.path.isfile(os.path.join(candidate, "qubes_ephemeral", "__init__.py")):
            return candidate
    return None


def _generator(saltenv="base"):
    # The copy shipped with the formula wins, so formula and generator match.
    lib = _bundled_lib(saltenv)
    if lib and lib not in sys.path:
        sys.path.insert(0, lib)
    try:
        import qubes_ephemeral.api
        import qubes_ephemeral.description.problems
    except ImportError as error:
        raise CommandExecutionError(
            "the qubes-ephemeral generator was not found: install the qubes-ephemeral package or keep "
            f"ephemeral/lib/qubes_ephemeral next to the formula ({error})"
        )
    return qubes_ephemeral


def _sync_once(saltenv):
    # state.apply alone does not sync a formula's _modules and _states; do it
    # once per run (a no-op when they are current), before any state runs.
    if not __context__.get("ephemeral.synced"):
        __salt__["saltutil.sync_modules"](saltenv=saltenv)
        __salt__["saltutil.sync_states"](saltenv=saltenv)
        __context__["ephemeral.synced"] = True


def manifest(description=None, saltenv="base"):
    """The manifest for ``description`` (default: the ``ephemeral`` pillar).

    Raises a clear error listing every problem when the pillar is invalid,
    so the whole state run stops before anything is changed. The pillar's
    manifest is made once per run, however many sls files ask for it.
    """
    _sync_once(saltenv)
    if description is None and "ephemeral.manifest" in __context__:
        return __context__["ephemeral.manifest"]
    generator = _generator(saltenv)
    from_pillar = description is None
    if from_pillar:
        description = __pillar__.get("ephemeral")
    if description is None:
        raise CommandExecutionError("the ephemeral pillar is not set: see pillar.example")
    try:
        result = generator.api.manifest_for_pillar(description)
    except generator.description.problems.DescriptionError as error:
        raise CommandExecutionError(
            "invalid ephemeral pillar, nothing was changed:\n" + "\n".join(p.format() for p in error.problems)
        )
    if from_pillar:
        __context__["ephemeral.manifest"] = result
    return result


def version(saltenv="base"):
    return _generator(saltenv).__version__


def qubesd_extension(stamp, saltenv="base"):
    """Whether the running qubesd loaded the qubesd extension: ``{"loaded":
    True, False or None (cannot tell), "detail": why}``, from ``stamp`` (the
    file the extension writes, with qubesd's PID) and /proc."""
    _generator(saltenv)
    import qubes_ephemeral.dom0.probe
    import qubes_ephemeral.qubesd.feature as feature

    loaded, detail = feature.loaded_by_running_qubesd(qubes_ephemeral.dom0.probe.Host().read, stamp)
    return {"loaded": loaded, "detail": detail}

"""Salt state module ``ephemeral_qubes``: Qubes settings, checked before changed.

Each setting comes from the generator's manifest with the admin command that
reads it (``get``) and the one that sets it (``set``, with "{value}"). A
state reads, compares and sets only what differs; before its first change
it records the value it replaces, so ``restored`` can put back exactly that.
``test=True`` reads (the admin commands are read-only for that) and reports.

What the admin commands print is parsed by the generator's parsers
(qubes_ephemeral.dom0.parsers), the ones the audit reads them with. The
``ephemeral`` execution module makes the generator importable; this module
needs nothing else to load. The admin commands exist only in dom0: a state
that runs one elsewhere fails and says so, and a description without
``qubes:`` uses none of these states but clean's, which do nothing without
a record.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NotRequired, TypedDict

from salt.exceptions import CommandExecutionError

# Salt's loader replaces these when it loads the module: the placeholders give their types.
__salt__: Mapping[str, Callable[..., Any]] = {}
__opts__: dict[str, Any] = {}

__virtualname__ = "ephemeral_qubes"
__func_alias__ = {"set_": "set"}

# What ``ephemeral_volatile`` means when ``qvm-pool info`` prints no line for it.
POOL_DEFAULT = "False"


class _Return(TypedDict):
    """A state's return, as Salt wants it."""

    name: str
    result: bool | None
    changes: dict[str, Any]
    comment: str
    warnings: NotRequired[list[str]]


class _Output(TypedDict):
    """What ``cmd.run_all`` returns (the keys used here)."""

    retcode: int
    stdout: str
    stderr: str


def __virtual__() -> str | tuple[bool, str]:
    """Loaded with the ``ephemeral`` execution module, which makes the
    generator (its parsers) importable. Not tied to dom0: see the docstring."""
    if "ephemeral.generator" not in __salt__:
        return False, (
            "the ephemeral execution module is not available: sync the formula's modules "
            "(saltutil.sync_modules) and keep the qubes-ephemeral generator in the formula's "
            "ephemeral/lib or install it"
        )
    try:
        __salt__["ephemeral.generator"]()
    except CommandExecutionError as error:
        return False, str(error)
    return __virtualname__


def _ret(name: str) -> _Return:
    return {"name": name, "result": True, "changes": {}, "comment": ""}


def _fail(ret: _Return, comment: str) -> _Return:
    ret["result"], ret["changes"], ret["comment"] = False, {}, comment
    return ret


def _run_all(argv: Sequence[str]) -> _Output:
    try:
        out: _Output = __salt__["cmd.run_all"](list(argv), python_shell=False, ignore_retcode=True)
    except CommandExecutionError as error:  # the command is not there, or not executable
        reason = str(error).rsplit("reason: ", 1)[-1]
        raise RuntimeError(
            f"{argv[0]} could not be run ({reason}); the Qubes admin commands exist only in dom0"
        ) from error
    return out


def _failed(argv: Sequence[str], out: _Output) -> RuntimeError:
    return RuntimeError("{} failed (exit {}): {}".format(" ".join(argv), out["retcode"], out["stderr"].strip()))


def _run(argv: Sequence[str], missing_exit: int | None = None) -> str | None:
    """What ``argv`` printed; None when its exit says the value is not set
    (``missing_exit``, see parsers.absent). RuntimeError when it failed."""
    from qubes_ephemeral.dom0 import parsers

    out = _run_all(argv)
    if parsers.absent(out["retcode"], out["stdout"], out["stderr"], missing_exit):
        return None
    if out["retcode"] != 0:
        raise _failed(argv, out)
    return out["stdout"]


def _read(get: Sequence[str], key: str | None, missing_exit: int | None = None, listing: bool = False) -> str | None:
    """The value ``get`` reads, None when not set (parsers.admin_value)."""
    from qubes_ephemeral.dom0 import parsers

    text = _run(get, missing_exit)
    return None if text is None else parsers.admin_value(text, key, listing)


def _current(
    get: Sequence[str], key: str | None, missing_exit: int | None, default: str | None, listing: bool = False
) -> str | None:
    value = _read(get, key, missing_exit, listing)
    return default if value is None else value


def _load(record: str) -> dict[str, dict[str, Any]]:
    try:
        with open(record) as handle:
            data: dict[str, dict[str, Any]] = json.load(handle)
    except FileNotFoundError:
        return {}
    return data


def _save(record: str, data: Mapping[str, Mapping[str, Any]]) -> None:
    if not data:
        if os.path.exists(record):
            os.remove(record)
        folder = os.path.dirname(record)
        if os.path.isdir(folder) and not os.listdir(folder):
            os.rmdir(folder)
        return
    os.makedirs(os.path.dirname(record), mode=0o755, exist_ok=True)
    with open(record + ".tmp", "w") as handle:
        json.dump(data, handle, indent=1, sort_keys=True)
    os.replace(record + ".tmp", record)


def _remember(record: str, name: str, entry: dict[str, Any]) -> None:
    """Record the value replaced, once (the first replaced value is the
    original), numbered so that clean undoes changes in reverse order."""
    originals = _load(record)
    if name not in originals:
        entry["order"] = 1 + max([e.get("order", 0) for e in originals.values()] or [0])
        originals[name] = entry
        _save(record, originals)


def _fill(argv: Sequence[str], value: str) -> list[str]:
    return [part.replace("{value}", value) for part in argv]


def required(name: str, get: list[str], value: str, hint: str = "", key: str | None = None) -> _Return:
    """Fail (changing nothing) unless ``get`` reads ``value``."""
    ret = _ret(name)
    try:
        current = _read(get, key)
    except RuntimeError as error:
        return _fail(ret, f"{error}; {hint}" if hint else str(error))
    if current != value:
        return _fail(ret, f"{name}: expected {value}, found {current}" + (f"; {hint}" if hint else ""))
    ret["comment"] = f"{name}: {value}"
    return ret


def set_(
    name: str,
    get: list[str],
    set: list[str],  # the sls argument's name
    value: str | None,
    record: str,
    key: str | None = None,
    default: str | None = None,
    unset: list[str] | None = None,
    missing_exit: int | None = None,
    listing: bool = False,
) -> _Return:
    """Make ``get`` read ``value``; record the value replaced first. ``default``:
    what an absent key means (Qubes omits options left at their default).
    ``unset``/``missing_exit``: for settings that can be absent (features,
    preferences at their default): the command that removes one, and the
    exit code of ``get`` when absent; ``value`` None means absent.
    ``listing``: see parsers.admin_value."""
    ret = _ret(name)
    try:
        current = _current(get, key, missing_exit, default, listing)
        if current == value:
            ret["comment"] = f"{name} is already {value}"
            return ret
        ret["changes"] = {"old": current, "new": value}
        if __opts__["test"]:
            ret["result"], ret["comment"] = None, f"{name} would be set to {value}"
            return ret
        action = unset if value is None else _fill(set, value)
        if action is None:
            raise RuntimeError(f"{name} is {current} and should be unset, but no command to unset it was given")
        _remember(record, name, {"value": current, "set": set, "unset": unset})
        _run(action)
        now = _current(get, key, missing_exit, default, listing)
        if now != value:
            raise RuntimeError(f"{name} still reads {now} after setting it")
    except RuntimeError as error:
        return _fail(ret, str(error))
    ret["comment"] = f"{name} set to {value}"
    return ret


def _for_pool(setting: Mapping[str, Any], pool: str) -> dict[str, Any]:
    """``setting`` with "{pool}" filled in, in its strings and argv lists."""

    def fill(value: Any) -> Any:
        if isinstance(value, str):
            return value.replace("{pool}", pool)
        if isinstance(value, list):
            return [fill(item) for item in value]
        return value

    return {key: fill(value) for key, value in setting.items()}


def pools_ephemeral_volatile(
    name: str,
    pools: list[str] | None,
    default_from_prefs: list[list[str]],
    default_excludes: list[str],
    setting: Mapping[str, Any],
    record: str,
) -> _Return:
    """Each pool's volatile volumes keyed per start (the manifest's ``pools``).

    The pools: ``pools`` (not ``names``: Salt reserves that argument), or when it is None, what each ``default_from_prefs``
    command prints (the installation's default pools, read when the state
    runs), without ``default_excludes``, once each, empty values skipped.
    Each pool is set as ``set`` does with ``setting`` (its "{pool}" filled in)
    and ``default`` "False", recorded under the setting's ``what``, so that
    clean restores it as any other. One pool failing fails the state; the
    others are still set and reported. ``changes``: pool -> old and new.
    """
    from qubes_ephemeral.dom0 import parsers

    ret = _ret(name)
    if pools is not None:
        pools = list(dict.fromkeys(pools))
    else:
        try:
            pools = parsers.default_pools([_run(argv) or "" for argv in default_from_prefs], default_excludes)
        except RuntimeError as error:
            return _fail(ret, f"the default pools could not be read: {error}")
    if not pools:
        ret["comment"] = "no pool to set"
        return ret
    comments = []
    for pool in pools:
        filled = _for_pool(setting, pool)
        one = set_(
            filled["what"],
            get=filled["get"],
            set=filled["set"],
            value=filled["value"],
            record=record,
            key=filled.get("key"),
            default=POOL_DEFAULT,
            unset=filled.get("unset"),
            missing_exit=filled.get("missing_exit"),
            listing=filled.get("listing", False),
        )
        comments.append(one["comment"])
        if one["changes"]:
            ret["changes"][pool] = one["changes"]
        if one["result"] is False:
            ret["result"] = False
        elif one["result"] is None and ret["result"] is not False:
            ret["result"] = None
    ret["comment"] = "\n".join(comments)
    return ret


def extension_loaded(name: str, stamp: str, mandatory: bool, hint: str) -> _Return:
    """The qubesd extension is loaded by the qubesd running now: it wrote
    ``stamp`` (under /run, so since the boot) with that qubesd's PID. When it
    is not, fail if ``mandatory``, else pass with a warning."""
    ret = _ret(name)
    found: Mapping[str, Any] = __salt__["ephemeral.qubesd_extension"](stamp)
    if found["loaded"]:
        ret["comment"] = "the qubesd extension qubes-ephemeral is loaded: {}".format(found["detail"])
        return ret
    message = "the qubes-ephemeral qubesd extension is not loaded ({})".format(found["detail"])
    if mandatory:
        return _fail(ret, f"{message}: the disposable templates' protection needs it; {hint}")
    ret["comment"] = f"{message}. {hint}"
    ret["warnings"] = [ret["comment"]]
    return ret


def _pool_info(get: Sequence[str]) -> dict[str, str] | None:
    """``qvm-pool info`` as a dict (parsers.key_values), or None for a pool that does not exist."""
    from qubes_ephemeral.dom0 import parsers

    out = _run_all(get)
    if parsers.no_such_pool(out["retcode"], out["stderr"]):
        return None
    if out["retcode"] != 0:
        raise _failed(get, out)
    return parsers.key_values(out["stdout"])


def pool_present(
    name: str,
    pool: str,
    driver: str,
    dir_path: str,
    mountpoint: str,
    layout_unit: str,
    get: list[str],
    add: list[str],
    remove: list[str],
    record: str,
) -> _Return:
    """The pool on the scratch filesystem exists, with our driver and dir_path.

    A pool of that name that is not ours is never touched. The pool is added
    only while the scratch filesystem is mounted and laid out: its setup
    makes directories, which must not land on the bare mount point.
    """
    ret = _ret(name)
    try:
        info = _pool_info(get)
        if info is not None:
            if (info.get("driver"), info.get("dir_path")) != (driver, dir_path):
                raise RuntimeError(
                    "a pool named {} already exists (driver {}, dir_path {}) and is not the one the pillar "
                    "describes; pick another name for qubes.pool".format(pool, info.get("driver"), info.get("dir_path"))
                )
            ret["comment"] = f"pool {pool} is present"
            return ret
        ret["changes"] = {"old": None, "new": f"{driver} {dir_path}"}
        if __opts__["test"]:
            ret["result"], ret["comment"] = None, f"pool {pool} would be added"
            return ret
        if not os.path.ismount(mountpoint) or not os.path.isdir(dir_path):
            raise RuntimeError(
                f"pool {pool} can only be added while the scratch filesystem is mounted on {mountpoint} and laid out "
                f"({dir_path} missing); reboot (or use activate: now) and apply again"
            )
        _remember(record, name, {"value": None, "set": add, "unset": remove,
                                 "hint": f"remove the qubes that use pool {pool} (qvm-volume list -p {pool}), "
                                         "then run ephemeral.clean again"})  # fmt: skip
        _run(add)
        if _pool_info(get) is None:
            raise RuntimeError(f"pool {pool} is still missing after adding it")
    except RuntimeError as error:
        return _fail(ret, str(error))
    ret["comment"] = f"pool {pool} added ({driver}, {dir_path}; layout by {layout_unit})"
    return ret


def disposables_unmarked(
    name: str,
    record: str,
    templates: list[str],
    features: list[str],
    list: list[str],  # the sls argument's name
) -> _Return:
    """Take our features off the disposables of our templates.

    A disposable copies its template's features when it is created; a named
    one (a disposable sys-net, say) would keep our marks after clean. Our
    templates: those in ``templates`` (the pillar's) and those whose feature
    the record says we set. ``list``: the qvm-ls command that lists qubes
    (parsers.disposables). Runs before the record is restored."""
    from qubes_ephemeral.dom0 import parsers

    ret = _ret(name)
    ours = set(templates)
    for entry in _load(record).values():
        argv = entry.get("set") or []
        if argv[:2] == ["qvm-features", "--"] and len(argv) > 3 and argv[3] in features:
            ours.add(argv[2])
    try:
        found = [
            (vm, feature)
            for vm, template in parsers.disposables(_run(list) or "", list)
            if template in ours
            for feature in features
            if _read(["qvm-features", "--", vm, feature], None, missing_exit=1) is not None
        ]
    except RuntimeError as error:
        return _fail(ret, str(error))
    if not found:
        ret["comment"] = "no disposable of {} carries our features".format(", ".join(sorted(ours)) or "our templates")
        return ret
    changes = {"unset": [f"{vm} {feature}" for vm, feature in found]}
    if __opts__["test"]:
        ret["result"], ret["changes"], ret["comment"] = None, changes, "features would be unset on disposables"
        return ret
    try:
        for vm, feature in found:
            _run(["qvm-features", "--unset", "--", vm, feature])
    except RuntimeError as error:
        return _fail(ret, str(error))
    ret["changes"], ret["comment"] = changes, f"our features unset on {len({vm for vm, _ in found})} disposable(s)"
    return ret


def restored(name: str, record: str) -> _Return:
    """Put back the value recorded before our first change, then forget it."""
    ret = _ret(name)
    originals = _load(record)
    if name not in originals:
        ret["comment"] = f"{name}: nothing recorded, nothing to restore"
        return ret
    entry = originals[name]
    if __opts__["test"]:
        ret["result"], ret["changes"], ret["comment"] = None, {"new": entry["value"]}, f"{name} would be restored"
        return ret
    try:
        if entry["value"] is not None:
            _run(_fill(entry["set"], entry["value"]))
        elif entry.get("unset"):
            _run(entry["unset"])  # it was not set at all
        else:
            raise RuntimeError(f"{name} was not set before, and the record has no command to unset it")
    except RuntimeError as error:
        hint = entry.get("hint")
        return _fail(ret, f"{error}; {hint}" if hint else str(error))
    del originals[name]
    _save(record, originals)
    ret["changes"], ret["comment"] = {"new": entry["value"]}, "{} restored to {}".format(name, entry["value"])
    return ret

"""Salt state module ``ephemeral_qubes``: Qubes settings, checked before changed.

Each setting comes from the generator's manifest with the admin command that
reads it (``get``) and the one that sets it (``set``, with "{value}"). A
state reads, compares and sets only what differs; before its first change
it records the value it replaces, so ``restored`` can put back exactly that.
``test=True`` reads (the admin commands are read-only for that) and reports.
"""

import json
import os

__virtualname__ = "ephemeral_qubes"
__func_alias__ = {"set_": "set"}


def __virtual__():
    return __virtualname__


def _ret(name):
    return {"name": name, "result": True, "changes": {}, "comment": ""}


def _run(argv, missing_exit=None):
    out = __salt__["cmd.run_all"](argv, python_shell=False, ignore_retcode=True)
    if missing_exit is not None and out["retcode"] == missing_exit and not (out["stdout"] + out["stderr"]).strip():
        return None  # e.g. qvm-features for a feature that is not set
    if out["retcode"] != 0:
        raise RuntimeError("{} failed (exit {}): {}".format(" ".join(argv), out["retcode"], out["stderr"].strip()))
    return out["stdout"]


def _read(get, key, missing_exit=None, listing=False):
    """The value ``get`` prints: all of it, or the line for ``key``. With
    ``listing`` (qubes-prefs with no argument), lines are KEY FLAG VALUE and
    the flag "D" means left at its default: None, as for an absent value."""
    text = _run(get, missing_exit)
    if text is None:
        return None
    if key is None:
        return text.strip()
    for line in text.splitlines():
        fields = line.split(None, 2 if listing else 1)
        if fields and fields[0] == key:
            if listing:
                return None if fields[1:2] == ["D"] else (fields[2].strip() if len(fields) > 2 else "")
            return fields[1].strip() if len(fields) > 1 else ""
    # Qubes prints no line for an option left at its default.
    return None


def _current(get, key, missing_exit, default, listing=False):
    value = _read(get, key, missing_exit, listing)
    return default if value is None else value


def _load(record):
    try:
        with open(record) as handle:
            return json.load(handle)
    except FileNotFoundError:
        return {}


def _save(record, data):
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


def _remember(record, name, entry):
    """Record the value replaced, once (the first replaced value is the
    original), numbered so that clean undoes changes in reverse order."""
    originals = _load(record)
    if name not in originals:
        entry["order"] = 1 + max([e.get("order", 0) for e in originals.values()] or [0])
        originals[name] = entry
        _save(record, originals)


def _fill(argv, value):
    return [part.replace("{value}", value) for part in argv]


def required(name, get, value, hint="", key=None):
    """Fail (changing nothing) unless ``get`` reads ``value``."""
    ret = _ret(name)
    try:
        current = _read(get, key)
    except RuntimeError as error:
        ret.update(result=False, comment=f"{error}; {hint}")
        return ret
    if current != value:
        ret.update(result=False, comment=f"{name}: expected {value}, found {current}; {hint}")
    else:
        ret["comment"] = f"{name}: {value}"
    return ret


def set_(name, get, set, value, record, key=None, default=None, unset=None, missing_exit=None, listing=False):
    """Make ``get`` read ``value``; record the value replaced first. ``default``:
    what an absent key means (Qubes omits options left at their default).
    ``unset``/``missing_exit``: for settings that can be absent (features,
    preferences at their default): the command that removes one, and the
    exit code of ``get`` when absent; ``value`` None means absent.
    ``listing``: see ``_read``."""
    ret = _ret(name)
    try:
        current = _current(get, key, missing_exit, default, listing)
        if current == value:
            ret["comment"] = f"{name} is already {value}"
            return ret
        ret["changes"] = {"old": current, "new": value}
        if __opts__["test"]:
            ret.update(result=None, comment=f"{name} would be set to {value}")
            return ret
        _remember(record, name, {"value": current, "set": set, "unset": unset})
        _run(unset if value is None else _fill(set, value))
        now = _current(get, key, missing_exit, default, listing)
        if now != value:
            raise RuntimeError(f"{name} still reads {now} after setting it")
    except RuntimeError as error:
        ret.update(result=False, changes={}, comment=str(error))
        return ret
    ret["comment"] = f"{name} set to {value}"
    return ret


def extension_loaded(name, stamp, mandatory, hint):
    """The qubesd extension is loaded by the qubesd running now: it wrote
    ``stamp`` (under /run, so since the boot) with that qubesd's PID. When it
    is not, fail if ``mandatory``, else pass with a warning."""
    ret = _ret(name)
    found = __salt__["ephemeral.qubesd_extension"](stamp)
    if found["loaded"]:
        ret["comment"] = "the qubesd extension qubes-ephemeral is loaded: {}".format(found["detail"])
        return ret
    message = "the qubes-ephemeral qubesd extension is not loaded ({})".format(found["detail"])
    if mandatory:
        ret.update(result=False, comment=f"{message}: the disposable templates' protection needs it; {hint}")
    else:
        ret["comment"] = f"{message}. {hint}"
        ret["warnings"] = [ret["comment"]]
    return ret


def _pool_info(get):
    """``qvm-pool info`` as a dict, or None for a pool that does not exist."""
    out = __salt__["cmd.run_all"](get, python_shell=False, ignore_retcode=True)
    if out["retcode"] == 2 and "No such pools" in out["stderr"]:
        return None
    if out["retcode"] != 0:
        raise RuntimeError("{} failed (exit {}): {}".format(" ".join(get), out["retcode"], out["stderr"].strip()))
    return dict((line.split(None, 1) + [""])[:2] for line in out["stdout"].splitlines() if line.strip())


def pool_present(name, pool, driver, dir_path, mountpoint, layout_unit, get, add, remove, record):
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
            ret.update(result=None, comment=f"pool {pool} would be added")
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
        ret.update(result=False, changes={}, comment=str(error))
        return ret
    ret["comment"] = f"pool {pool} added ({driver}, {dir_path}; layout by {layout_unit})"
    return ret


def disposables_unmarked(name, record, templates, features, list):
    """Take our features off the disposables of our templates.

    A disposable copies its template's features when it is created; a named
    one (a disposable sys-net, say) would keep our marks after clean. Our
    templates: those in ``templates`` (the pillar's) and those whose feature
    the record says we set. Runs before the record is restored."""
    ret = _ret(name)
    ours = set(templates)
    for entry in _load(record).values():
        argv = entry.get("set") or []
        if argv[:2] == ["qvm-features", "--"] and len(argv) > 3 and argv[3] in features:
            ours.add(argv[2])
    try:
        rows = [line.split("|") for line in (_run(list) or "").splitlines()]
        found = [
            (row[0], feature)
            for row in rows
            if len(row) >= 3 and row[1] == "DispVM" and row[2] in ours
            for feature in features
            if _read(["qvm-features", "--", row[0], feature], None, missing_exit=1) is not None
        ]
    except RuntimeError as error:
        ret.update(result=False, comment=str(error))
        return ret
    if not found:
        ret["comment"] = "no disposable of {} carries our features".format(", ".join(sorted(ours)) or "our templates")
        return ret
    changes = {"unset": [f"{vm} {feature}" for vm, feature in found]}
    if __opts__["test"]:
        ret.update(result=None, changes=changes, comment="features would be unset on disposables")
        return ret
    try:
        for vm, feature in found:
            _run(["qvm-features", "--unset", "--", vm, feature])
    except RuntimeError as error:
        ret.update(result=False, comment=str(error))
        return ret
    ret.update(changes=changes, comment=f"our features unset on {len({vm for vm, _ in found})} disposable(s)")
    return ret


def restored(name, record):
    """Put back the value recorded before our first change, then forget it."""
    ret = _ret(name)
    originals = _load(record)
    if name not in originals:
        ret["comment"] = f"{name}: nothing recorded, nothing to restore"
        return ret
    entry = originals[name]
    if __opts__["test"]:
        ret.update(result=None, changes={"new": entry["value"]}, comment=f"{name} would be restored")
        return ret
    try:
        if entry["value"] is None and entry.get("unset"):
            _run(entry["unset"])  # it was not set at all
        else:
            _run(_fill(entry["set"], entry["value"]))
    except RuntimeError as error:
        hint = entry.get("hint")
        ret.update(result=False, comment=f"{error}; {hint}" if hint else str(error))
        return ret
    del originals[name]
    _save(record, originals)
    ret.update(changes={"new": entry["value"]}, comment="{} restored to {}".format(name, entry["value"]))
    return ret


def pools_ephemeral_volatile(name, pools, default_from_prefs, default_excludes, setting, record):
    """(provisional, replaced by the tested version) Each pool: as set_ does."""
    ret = _ret(name)
    try:
        if pools is None:
            found = []
            for argv in default_from_prefs:
                pool = (_run(argv) or "").strip()
                if pool and pool not in default_excludes and pool not in found:
                    found.append(pool)
            pools = found
    except RuntimeError as error:
        ret.update(result=False, comment=str(error))
        return ret
    comments = []
    for pool in pools:
        fill = lambda v: v.replace("{pool}", pool)  # noqa: E731
        one = set_(fill(setting["what"]), [fill(a) for a in setting["get"]], [fill(a) for a in setting["set"]],
                   setting["value"], record, key=setting["key"], default="False")
        if one["changes"]:
            ret["changes"][pool] = one["changes"]
        if one["result"] is False:
            ret["result"] = False
        elif one["result"] is None and ret["result"] is True:
            ret["result"] = None
        comments.append(one["comment"])
    ret["comment"] = "; ".join(comments) or "no pool to set"
    return ret

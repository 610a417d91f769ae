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


def _read(get, key, missing_exit=None):
    text = _run(get, missing_exit)
    if text is None:
        return None
    if key is None:
        return text.strip()
    for line in text.splitlines():
        fields = line.split(None, 1)
        if fields and fields[0] == key:
            return fields[1].strip() if len(fields) > 1 else ""
    # Qubes prints no line for an option left at its default.
    return None


def _current(get, key, missing_exit, default):
    value = _read(get, key, missing_exit)
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


def _fill(argv, value):
    return [part.replace("{value}", value) for part in argv]


def required(name, get, value, hint="", key=None):
    """Fail (changing nothing) unless ``get`` reads ``value``."""
    ret = _ret(name)
    try:
        current = _read(get, key)
    except RuntimeError as error:
        ret.update(result=False, comment="{}; {}".format(error, hint))
        return ret
    if current != value:
        ret.update(result=False, comment="{}: expected {}, found {}; {}".format(name, value, current, hint))
    else:
        ret["comment"] = "{}: {}".format(name, value)
    return ret


def set_(name, get, set, value, record, key=None, default=None, unset=None, missing_exit=None):  # noqa: A002
    """Make ``get`` read ``value``; record the value replaced first. ``default``:
    what an absent key means (Qubes omits options left at their default).
    ``unset``/``missing_exit``: for settings that can be absent (features):
    the command that removes one, and the exit code of ``get`` when absent."""
    ret = _ret(name)
    try:
        current = _current(get, key, missing_exit, default)
        if current == value:
            ret["comment"] = "{} is already {}".format(name, value)
            return ret
        ret["changes"] = {"old": current, "new": value}
        if __opts__["test"]:
            ret.update(result=None, comment="{} would be set to {}".format(name, value))
            return ret
        originals = _load(record)
        originals.setdefault(name, {"value": current, "set": set, "unset": unset})
        _save(record, originals)
        _run(_fill(set, value))
        now = _current(get, key, missing_exit, default)
        if now != value:
            raise RuntimeError("{} still reads {} after setting it".format(name, now))
    except RuntimeError as error:
        ret.update(result=False, changes={}, comment=str(error))
        return ret
    ret["comment"] = "{} set to {}".format(name, value)
    return ret


def restored(name, record):
    """Put back the value recorded before our first change, then forget it."""
    ret = _ret(name)
    originals = _load(record)
    if name not in originals:
        ret["comment"] = "{}: nothing recorded, nothing to restore".format(name)
        return ret
    entry = originals[name]
    if __opts__["test"]:
        ret.update(result=None, changes={"new": entry["value"]}, comment="{} would be restored".format(name))
        return ret
    try:
        if entry["value"] is None and entry.get("unset"):
            _run(entry["unset"])  # it was not set at all
        else:
            _run(_fill(entry["set"], entry["value"]))
    except RuntimeError as error:
        ret.update(result=False, comment=str(error))
        return ret
    del originals[name]
    _save(record, originals)
    ret.update(changes={"new": entry["value"]}, comment="{} restored to {}".format(name, entry["value"]))
    return ret

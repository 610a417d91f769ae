#!/usr/bin/env python3
"""Test fixture: an emulation of the Qubes dom0 admin commands the formula uses.

Qubes (Xen, qubesd) cannot run on the test machines, so the formula's Qubes
states are run against this stand-in instead. It follows upstream's command
lines, property names, validation rules, outputs and exit codes for the
subset used, as read in:

- qubes-core-admin-client qubesadmin/tools/qvm_pool.py   (qvm-pool info/set/add/remove)
- qubes-core-admin-client qubesadmin/tools/qvm_volume.py (qvm-volume info/config)
- qubes-core-admin-client qubesadmin/tools/qubes_prefs.py, qvm_prefs.py
- qubes-core-admin-client qubesadmin/tools/qvm_ls.py    (qvm-ls --raw-data: "|"-joined fields)
- qubes-core-admin qubes/storage/__init__.py (Volume.ephemeral rules, Pool.ephemeral_volatile)
- qubes-core-admin qubes/api/admin.py (vm.volume.Set.*, pool.Set.*, pool.Add, pool.Remove)
- qubes-core-admin qubes/app.py (add_pool runs setup first; remove_pool refuses a pool in use)
- qubes-core-admin qubes/storage/file.py, reflink.py (setup: one-level mkdir, reflink check)

The state lives in the JSON file named by $QUBES_EMULATION_STATE; every
call that changes it is appended to its "calls" list, so tests can prove
that a re-apply changes nothing. One file, called under each command's name.
"""

from __future__ import annotations

import json
import os
import string
import subprocess
import sys

STATE = os.environ.get("QUBES_EMULATION_STATE", "qubes-state.json")
# Pool properties with an admin.pool.Set.* method (qubes/api/admin.py).
POOL_SETTABLE = ("revisions_to_keep", "ephemeral_volatile")
# Volume properties qvm-volume config accepts (qubesadmin/tools/qvm_volume.py).
VOLUME_SETTABLE = ("rw", "revisions_to_keep", "ephemeral")
VOLUME_INFO = ("pool", "vid", "rw", "source", "save_on_stop", "snap_on_start", "size", "usage",
               "revisions_to_keep", "ephemeral", "is_outdated")  # fmt: skip
# Driver options (qubes/storage/*.py, __init__ keyword arguments); dir_path has no default.
DRIVER_OPTIONS = {
    "file": ("revisions_to_keep", "dir_path", "ephemeral_volatile"),
    "file-reflink": ("revisions_to_keep", "dir_path", "setup_check", "ephemeral_volatile"),
}
DEFAULT_POOL_PREFS = ("default_pool", "default_pool_kernel", "default_pool_private", "default_pool_root",
                      "default_pool_volatile")  # fmt: skip
TRUE, FALSE = ("true", "yes", "on", "1"), ("false", "no", "off", "0")
POOL_NAME_CHARS = set(string.ascii_letters + string.digits + "-_.")
EMPTY_RESPONSE = "Got empty response from qubesd. See journalctl in dom0 for details."


class Failure(Exception):
    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


def usage_error(prog: str, message: str) -> Failure:
    # QubesArgumentParser.error: usage, then "prog: error: msg", exit 2.
    return Failure(f"usage: {prog} [options]\n{prog}: error: {message}", 2)


def load() -> dict:
    with open(STATE) as handle:
        return json.load(handle)


def save(state: dict, _argv: list[str]) -> None:
    # Log the call as it was made (with any "--").
    state.setdefault("calls", []).append([os.path.basename(sys.argv[0]), *sys.argv[1:]])
    with open(STATE, "w") as handle:
        json.dump(state, handle, indent=1, sort_keys=True)


def text(value: object) -> str:
    if isinstance(value, bool):
        return "True" if value else "False"
    return "" if value is None else str(value)


def parse_bool(value: str) -> bool:
    # qubes.property.bool: case-insensitive words; anything else is a
    # ProtocolError, which the client only sees as an empty response.
    if value.lower() in TRUE:
        return True
    if value.lower() in FALSE:
        return False
    raise Failure(EMPTY_RESPONSE)


def table(rows: list[tuple[str, str]]) -> str:
    width = max(len(key) for key, _ in rows)
    return "\n".join(f"{key:<{width}}  {value}".rstrip() for key, value in rows)


def ephemeral(state: dict, volume: dict) -> bool:
    # qubes/storage/__init__.py Volume.ephemeral: an explicit value wins;
    # else False for snap_on_start/save_on_stop/read-only volumes; else the pool's.
    if volume.get("ephemeral") is not None:
        return bool(volume["ephemeral"])
    if volume["snap_on_start"] or volume["save_on_stop"] or not volume["rw"]:
        return False
    return bool(state["pools"][volume["pool"]].get("ephemeral_volatile", False))


def vm_volume(state: dict, spec: str) -> tuple[dict, dict]:
    parts = spec.split(":")
    if len(parts) != 2:
        raise usage_error("qvm-volume", "expected a vm & volume combination like foo:bar")
    vm, name = parts
    if vm not in state["vms"]:
        raise Failure(f"qvm-volume: error: no vm {vm!r}")
    if name not in state["vms"][vm]["volumes"]:
        raise Failure(f"qvm-volume: error: vm {vm!r} has no volume {name!r}")
    return state["vms"][vm], state["vms"][vm]["volumes"][name]


def qvm_volume(argv: list[str]) -> str | None:
    state = load()
    if len(argv) in (2, 3) and argv[0] in ("info", "i"):
        _, volume = vm_volume(state, argv[1])
        values = {key: ephemeral(state, volume) if key == "ephemeral" else volume.get(key) for key in VOLUME_INFO}
        if len(argv) == 3:
            if argv[2] not in values:
                raise Failure(f"No such property: {argv[2]}")
            return text(values[argv[2]])
        footer = "List of available revisions (for revert): none"
        return table([(key, text(values[key])) for key in VOLUME_INFO]) + "\n" + footer
    if len(argv) == 4 and argv[0] in ("config", "c", "set", "s"):
        vm, volume = vm_volume(state, argv[1])
        prop, value = argv[2], argv[3]
        if prop not in VOLUME_SETTABLE:
            raise Failure(f"Invalid property: {prop}")
        if prop == "revisions_to_keep":
            if not value.isdigit():
                raise Failure(EMPTY_RESPONSE)
            volume[prop] = int(value)
        else:
            flag = parse_bool(value)
            if vm.get("running"):  # admin.vm.volume.Set.rw / .ephemeral (R4.2): halted only
                raise Failure(f"Domain is not powered off: {argv[1].split(':')[0]!r}")
            if prop == "ephemeral" and flag and (volume["snap_on_start"] or volume["save_on_stop"] or not volume["rw"]):
                raise Failure(
                    "Cannot enable ephemeral on snap_on_start or save_on_stop or non-dom0 or not writable volume"
                )
            volume[prop] = flag
        save(state, ["qvm-volume", *argv])
        return None
    raise usage_error("qvm-volume", "invalid choice")


def qvm_pool(argv: list[str]) -> str | None:
    state = load()
    pools = state["pools"]
    if argv[:1] in ([], ["list"], ["ls"], ["l"]):
        return table([("NAME", "DRIVER")] + [(name, pool["driver"]) for name, pool in pools.items()])
    if len(argv) == 2 and argv[0] in ("info", "i"):
        if argv[1] not in pools:
            raise usage_error("qvm-pool", f"No such pools: [{argv[1]!r}]")
        pool = pools[argv[1]]
        rows = [("name", argv[1])] + [(k, text(v)) for k, v in sorted(pool.items()) if k != "name"]
        return table(rows)
    if len(argv) >= 2 and argv[0] in ("set", "s"):
        if argv[1] not in pools:  # args.app.pools[name]: an uncaught KeyError
            raise Failure(f"Traceback (most recent call last):\n  ...\nKeyError: {argv[1]!r}")
        options = [argv[i + 1] for i, a in enumerate(argv[:-1]) if a in ("-o", "--option")]
        errors = []
        for option in options:
            key, _, value = option.partition("=")
            if key not in POOL_SETTABLE:
                errors.append(f"Setting option {key} is not supported for pool {argv[1]}\n")
                continue
            try:
                pools[argv[1]][key] = parse_bool(value) if key == "ephemeral_volatile" else int(value)
            except (Failure, ValueError):
                errors.append(f"Failed to set option {key} for pool {argv[1]}: {EMPTY_RESPONSE}\n")
        if errors:
            raise Failure("qvm-pool: error: " + "\n".join(errors))
        save(state, ["qvm-pool", *argv])
        return None
    if len(argv) >= 3 and argv[0] in ("add", "a"):
        return pool_add(state, argv[1], argv[2], [argv[i + 1] for i, a in enumerate(argv[:-1]) if a == "-o"])
    if len(argv) >= 2 and argv[0] in ("remove", "rm", "r"):
        for name in argv[1:]:
            pool_remove(state, name)
        return None
    raise usage_error("qvm-pool", "invalid choice")


def pool_add(state: dict, name: str, driver: str, options: list[str]) -> None:
    def failed(message: str) -> Failure:
        return Failure(f"qvm-pool: error: Failed to add pool {name}: {message}\n")

    if driver not in DRIVER_OPTIONS:
        raise failed(f"unexpected driver name: {driver}")
    config = dict(option.partition("=")[::2] for option in options)  # one k=v per -o, no comma split
    if name in state["pools"] or not POOL_NAME_CHARS.issuperset(name):
        raise failed(EMPTY_RESPONSE)  # enforce(): a ProtocolError, no message for the client
    unexpected = sorted(set(config) - set(DRIVER_OPTIONS[driver]))
    if unexpected:
        raise failed(f"unexpected driver options: {', '.join(unexpected)}")
    if "dir_path" not in config:
        raise failed("missing required driver options: dir_path")  # R4.3 wording
    dir_path = os.path.normpath(config["dir_path"])
    # setup() before the pool is saved: a failed setup adds nothing.
    try:
        mkdir(dir_path)
        checked = driver == "file-reflink" and config.get("setup_check", "True").lower() in TRUE
        if checked and not reflinks_work(dir_path):
            raise failed(f"The filesystem for {dir_path!r} does not support reflinks. If you can live with "
                             'VM startup delays and wasted disk space, pass the "setup_check=False" option.')  # fmt: skip
        for sub in ("appvms", "vm-templates"):
            mkdir(os.path.join(dir_path, sub))
    except OSError:
        raise failed(EMPTY_RESPONSE) from None  # an unhandled exception in qubesd
    pool: dict[str, object] = {"name": name, "driver": driver, "dir_path": dir_path, "revisions_to_keep": 1,
                               "ephemeral_volatile": False}  # fmt: skip
    if "ephemeral_volatile" in config:
        pool["ephemeral_volatile"] = parse_bool(config["ephemeral_volatile"])
    state["pools"][name] = pool
    save(state, [])


def mkdir(path: str) -> None:
    # create_dir_if_not_exists: os.mkdir, no parents; an existing directory is fine.
    try:
        os.mkdir(path)
    except FileExistsError:
        if not os.path.isdir(path):
            raise


def reflinks_work(folder: str) -> bool:
    # reflink.py is_supported: try a FICLONE between two files in the folder.
    source, target = os.path.join(folder, ".reflink-check-a"), os.path.join(folder, ".reflink-check-b")
    try:
        with open(source, "wb") as handle:
            handle.write(b"x" * 4096)
        return subprocess.run(["cp", "--reflink=always", source, target], capture_output=True).returncode == 0
    finally:
        for path in (source, target):
            if os.path.exists(path):
                os.remove(path)


def pool_remove(state: dict, name: str) -> None:
    def failed(message: str) -> Failure:
        return Failure(f"qvm-pool: error: Failed to remove pool {name}: {message}")

    if name not in state["pools"]:
        raise failed(EMPTY_RESPONSE)
    if any(v["pool"] == name for vm in state["vms"].values() for v in vm["volumes"].values()):
        raise failed(f"Storage pool is in use: <qubes.storage.Pool object named {name}>")
    for pref in DEFAULT_POOL_PREFS:
        if pref_value(state, pref) == name:
            raise failed(f"Storage pool is in use: set as {pref}")
    del state["pools"][name]  # qubes.xml only: no data on disk is removed
    save(state, [])


def pref_value(state: dict, name: str) -> object:
    # default_pool_* other than default_pool default to default_pool (qubes/app.py).
    prefs = state["prefs"]
    if name not in prefs and name.startswith("default_pool_"):
        return prefs["default_pool"]
    return prefs.get(name)


def qubes_prefs(argv: list[str]) -> str | None:
    state = load()
    prefs = state["prefs"]
    known = sorted(set(prefs) | set(DEFAULT_POOL_PREFS))
    reset = [a for a in argv if a in ("--default", "-D")]
    args = [a for a in argv if a not in reset]
    if not args:
        # The listing: NAME, "D" for a default or "-" for a value set, VALUE (qvm_prefs.py).
        width = max(len(name) for name in known)
        return "\n".join(f"{name:<{width}}  {'-' if name in prefs else 'D'}  {text(pref_value(state, name))}"
                         for name in known)  # fmt: skip
    if args[0] not in known:
        raise usage_error("qubes-prefs", f"no such property: {args[0]!r}")
    if reset:
        if len(args) != 1:
            raise usage_error("qubes-prefs", "--default takes no value")
        prefs.pop(args[0], None)
        save(state, [])
        return None
    if len(args) == 1:
        return text(pref_value(state, args[0]))
    if args[0].startswith("default_pool") and args[1] not in state["pools"]:
        raise Failure("qubes-prefs: error: No such storage pool")
    prefs[args[0]] = args[1]
    save(state, [])
    return None


def prefs(argv: list[str], holder: dict, command: str) -> str:
    if len(argv) == 1:
        if argv[0] not in holder:
            raise usage_error(command, f"no such property: {argv[0]!r}")
        return text(holder[argv[0]])
    raise usage_error(command, "this emulation only reads properties")


def qvm_features(argv: list[str]) -> str | None:
    # qubesadmin/tools/qvm_features.py: VM [FEATURE [VALUE]], --unset VM FEATURE.
    unset = any(a in ("--unset", "--default", "--delete", "-D") for a in argv)
    args = [a for a in argv if a not in ("--unset", "--default", "--delete", "-D")]
    state = load()
    if not args or args[0] not in state["vms"]:
        raise usage_error("qvm-features", f"no such domain: {args[0] if args else ''!r}")
    features = state["vms"][args[0]].setdefault("features", {})
    if unset:
        if len(args) != 2:
            raise usage_error("qvm-features", "--unset requires a feature")
        if args[1] in features:
            del features[args[1]]
            save(state, ["qvm-features", *argv])
        return None
    if len(args) == 1:
        return table([(k, v) for k, v in sorted(features.items())]) if features else None
    if len(args) == 2:
        if args[1] not in features:
            raise Failure("", 1)  # QubesFeatureNotFoundError: nothing printed, exit 1
        return features[args[1]]
    features[args[1]] = args[2]
    save(state, ["qvm-features", *argv])
    return None


def qvm_ls(argv: list[str]) -> str | None:
    # qubesadmin/tools/qvm_ls.py --raw-data --fields NAME,CLASS,TEMPLATE: "|"-joined, "-" for none.
    if argv != ["--raw-data", "--fields", "NAME,CLASS,TEMPLATE"]:
        raise usage_error("qvm-ls", "this emulation only lists NAME,CLASS,TEMPLATE as raw data")
    state = load()
    rows = [
        "|".join([name, vm.get("class", "AppVM"), vm.get("template") or "-"])
        for name, vm in sorted(state["vms"].items())
    ]
    return "\n".join(rows) if rows else None


def main() -> int:
    command = os.path.basename(sys.argv[0])
    argv = [a for a in sys.argv[1:] if a != "--"]
    try:
        if command == "qvm-volume":
            out = qvm_volume(argv)
        elif command == "qvm-pool":
            out = qvm_pool(argv)
        elif command == "qvm-features":
            out = qvm_features(argv)
        elif command == "qvm-ls":
            out = qvm_ls(argv)
        elif command == "qubes-prefs":
            out = qubes_prefs(argv)
        elif command == "qvm-prefs":
            state = load()
            if not argv or argv[0] not in state["vms"]:
                raise usage_error(command, f"no such domain: {argv[0] if argv else ''!r}")
            out = prefs(argv[1:], state["vms"][argv[0]]["prefs"], command)
        else:
            raise Failure(f"unknown command {command}", 2)
    except Failure as failure:
        if str(failure):
            print(failure, file=sys.stderr)
        return failure.code
    if out is not None:  # None: a command that prints nothing; "": an empty value, an empty line
        print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())

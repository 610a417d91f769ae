"""The formula's Salt modules, without a minion.

The execution module (_modules/ephemeral.py) and the state module
(_states/ephemeral_qubes.py) are loaded with importlib, and what Salt's
loader would set is set by hand: ``__salt__`` (``cmd.run_all`` answered by
FakeQubes, which records every argv), ``__opts__``, ``__context__`` and
``__pillar__``. Salt itself need not be installed: without it,
``salt.exceptions`` is a stand-in. The Salt tier (test_formula*.py) runs
the same modules under salt-call.
"""

from __future__ import annotations

import importlib.util
import inspect
import json
import os
import string
import sys
import tempfile
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import qubes_ephemeral.api
import yaml
from conftest import MINIMAL, PILLAR_EXAMPLE, ROOT
from hypothesis import given, settings
from hypothesis import strategies as st

FORMULA = ROOT / "ephemeral-formula"

try:
    from salt.exceptions import CommandExecutionError
except ImportError:  # the test environment has no Salt: what the modules import of it
    _salt = types.ModuleType("salt")
    _exceptions = types.ModuleType("salt.exceptions")

    class CommandExecutionError(Exception):
        pass

    _exceptions.CommandExecutionError = CommandExecutionError
    _salt.exceptions = _exceptions
    sys.modules["salt"], sys.modules["salt.exceptions"] = _salt, _exceptions

Answer = tuple[int, str, str]


class FakeQubes:
    """dom0's admin commands for the states, in memory, with upstream's outputs and
    exit codes for the forms the formula uses (as tests/qubes_emulation). ``script``
    overrides the answers to one argv (in turn, the last one repeating)."""

    def __init__(self) -> None:
        self.calls: list[list[str]] = []
        self.scripted: dict[tuple[str, ...], list[Answer]] = {}
        self.features: dict[tuple[str, str], str] = {}
        self.prefs: dict[str, str] = {}  # set explicitly ("-" in the listing)
        self.prefs_defaults = {"default_pool": "vm-pool", "default_pool_volatile": "vm-pool", "default_kernel": "6.6"}
        self.pools: dict[str, dict[str, str]] = {
            "vm-pool": {"driver": "lvm_thin", "ephemeral_volatile": "False", "volume_group": "qubes_dom0"},
            "varlibqubes": {"driver": "file-reflink", "dir_path": "/var/lib/qubes", "ephemeral_volatile": "False"},
        }
        self.vms: dict[str, dict[str, str]] = {
            "default-dvm": {"class": "AppVM", "template": "fedora-41", "template_for_dispvms": "True"},
            "work": {"class": "AppVM", "template": "fedora-41", "template_for_dispvms": "False"},
        }

    def script(self, argv: list[str], *answers: Answer) -> None:
        self.scripted[tuple(argv)] = list(answers)

    def changes(self) -> list[list[str]]:
        """The calls that change something (as the emulation's "calls")."""
        return [call for call in self.calls if self.changes_something(call)]

    @staticmethod
    def changes_something(argv: list[str]) -> bool:
        args = [a for a in argv[1:] if a != "--"]
        if argv[0] == "qvm-features":
            return "--unset" in args or len(args) == 3
        if argv[0] == "qubes-prefs":
            return "--default" in args or len(args) == 2
        return argv[0] == "qvm-pool" and args[0] in ("set", "add", "remove")

    def run_all(self, argv: list[str], python_shell: bool = True, ignore_retcode: bool = False) -> dict[str, object]:
        assert python_shell is False and ignore_retcode is True, "argv lists, no shell; the state reads the exit"
        self.calls.append(list(argv))
        answers = self.scripted.get(tuple(argv))
        if answers:
            rc, out, err = answers.pop(0) if len(answers) > 1 else answers[0]
        else:
            rc, out, err = self.answer(list(argv))
        return {"retcode": rc, "stdout": out, "stderr": err, "pid": 1}

    def answer(self, argv: list[str]) -> Answer:
        command, args = argv[0], [a for a in argv[1:] if a != "--"]
        if command == "qvm-features":
            return self._features(args)
        if command == "qubes-prefs":
            return self._prefs(args)
        if command == "qvm-prefs" and len(args) == 2 and args[0] in self.vms:
            return 0, self.vms[args[0]].get(args[1], "") + "\n", ""
        if command == "qvm-pool":
            return self._pool(args)
        if argv == ["qvm-ls", "--raw-data", "--fields", "NAME,CLASS,TEMPLATE"]:
            rows = [f"{name}|{vm['class']}|{vm.get('template', '-')}" for name, vm in sorted(self.vms.items())]
            return 0, "\n".join(rows) + "\n", ""
        raise AssertionError(f"FakeQubes does not know {argv}")

    def _features(self, args: list[str]) -> Answer:
        if args[0] == "--unset":
            self.features.pop((args[1], args[2]), None)
            return 0, "", ""
        if len(args) == 1:
            rows = sorted((f, v) for (vm, f), v in self.features.items() if vm == args[0])
            return 0, "".join(f"{f}  {v}\n" for f, v in rows), ""
        if len(args) == 2:
            value = self.features.get((args[0], args[1]))
            return (1, "", "") if value is None else (0, value + "\n", "")
        self.features[(args[0], args[1])] = args[2]
        return 0, "", ""

    def _prefs(self, args: list[str]) -> Answer:
        if not args:
            names = sorted(set(self.prefs) | set(self.prefs_defaults))
            return 0, "".join(f"{n:<24}{'-' if n in self.prefs else 'D'}  {self.pref(n)}\n" for n in names), ""
        if args[0] == "--default":
            self.prefs.pop(args[1], None)
            return 0, "", ""
        if len(args) == 1:
            return 0, self.pref(args[0]) + "\n", ""
        self.prefs[args[0]] = args[1]
        return 0, "", ""

    def pref(self, name: str) -> str:
        return self.prefs.get(name, self.prefs_defaults.get(name, ""))

    def _pool(self, args: list[str]) -> Answer:
        if args[0] == "info":
            if args[1] not in self.pools:
                return 2, "", f"usage: qvm-pool [options]\nqvm-pool: error: No such pools: [{args[1]!r}]\n"
            rows = [("name", args[1]), *sorted(self.pools[args[1]].items())]
            return 0, "".join(f"{k:<20}{v}\n" for k, v in rows), ""
        if args[0] == "set":
            key, _, value = args[3].partition("=")
            self.pools[args[1]][key] = value
            return 0, "", ""
        if args[0] == "add":
            self.pools[args[1]] = {"driver": args[2], "dir_path": args[4].partition("=")[2]}
            return 0, "", ""
        if args[0] == "remove":
            del self.pools[args[1]]
            return 0, "", ""
        raise AssertionError(f"FakeQubes does not know qvm-pool {args}")


def load(path: Path, name: str) -> types.ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def state_module(qubes: FakeQubes, test: bool = False, **salt: Callable[..., Any]) -> types.ModuleType:
    """ephemeral_qubes as Salt's loader leaves it."""
    module = load(FORMULA / "_states/ephemeral_qubes.py", "ephemeral_qubes_under_test")
    module.__salt__ = {"cmd.run_all": qubes.run_all, "ephemeral.generator": lambda: str(ROOT / "generator"), **salt}
    module.__opts__ = {"test": test}
    module.__context__ = {}
    return module


def execution_module(pillar: object = None, file_roots: dict[str, list[str]] | None = None) -> types.ModuleType:
    module = load(FORMULA / "_modules/ephemeral.py", "ephemeral_under_test")
    synced: list[str] = []
    module.__salt__ = {
        # refresh=True would wait for a minion daemon's socket, which salt-call --local lacks.
        "saltutil.sync_modules": lambda saltenv, refresh: synced.append(f"modules {saltenv} refresh={refresh}"),
        "saltutil.sync_states": lambda saltenv, refresh: synced.append(f"states {saltenv} refresh={refresh}"),
    }
    module.__opts__ = {"test": False, "file_roots": file_roots or {}}
    module.__context__ = {}
    module.__pillar__ = {} if pillar is None else {"ephemeral": pillar}
    module.synced = synced  # for the tests
    return module


@pytest.fixture
def qubes() -> FakeQubes:
    return FakeQubes()


@pytest.fixture
def record(tmp_path: Path) -> Path:
    return tmp_path / "etc/qubes-ephemeral/qubes-originals.json"


def recorded(path: Path) -> dict[str, dict[str, Any]]:
    return json.loads(path.read_text()) if path.exists() else {}


FEATURE_GET = ["qvm-features", "--", "default-dvm", "qubes-ephemeral"]
FEATURE = {
    "get": FEATURE_GET,
    "set": [*FEATURE_GET, "{value}"],
    "unset": ["qvm-features", "--unset", "--", "default-dvm", "qubes-ephemeral"],
    "missing_exit": 1,
}
PREFS = {  # render/qubes_plan.py: default_pool_volatile, read from the listing
    "get": ["qubes-prefs"],
    "key": "default_pool_volatile",
    "listing": True,
    "set": ["qubes-prefs", "--", "default_pool_volatile", "{value}"],
    "unset": ["qubes-prefs", "--default", "--", "default_pool_volatile"],
}
POOL_SETTING = {  # render/qubes_plan.py: plan()["pools"]["setting"]
    "id": "pool-{pool}-ephemeral_volatile",
    "what": "pool {pool} ephemeral_volatile",
    "get": ["qvm-pool", "info", "{pool}"],
    "key": "ephemeral_volatile",
    "set": ["qvm-pool", "set", "{pool}", "-o", "ephemeral_volatile={value}"],
    "value": "True",
}


# --- the modules as Salt's loader sees them ---


def public_functions(module: types.ModuleType) -> set[str]:
    """What Salt's loader exposes: public functions defined in the module itself."""
    return {
        name
        for name, value in vars(module).items()
        if not name.startswith("_") and inspect.isfunction(value) and value.__module__ == module.__name__
    }


def test_each_module_exposes_its_functions_and_no_helper(qubes: FakeQubes) -> None:
    assert public_functions(state_module(qubes)) == {
        "required", "set_", "pools_ephemeral_volatile", "extension_loaded", "pool_present",
        "disposables_unmarked", "restored",
    }  # fmt: skip
    assert state_module(qubes).__func_alias__ == {"set_": "set"}
    assert public_functions(execution_module()) == {
        "generator",
        "manifest",
        "version",
        "qubesd_extension",
        "section",
        "preflight",
        "whole",
    }


def test_execution_module_virtual_finds_the_generator_bundled_with_the_formula(monkeypatch) -> None:
    monkeypatch.setattr(sys, "path", list(sys.path))
    module = execution_module(file_roots={"dev": ["/nowhere"], "base": [str(FORMULA)]})
    assert module.__virtual__() == "ephemeral"
    assert sys.path[0] == str(FORMULA / "ephemeral/lib"), "the formula's copy comes first"
    assert (Path(module.generator()) / "qubes_ephemeral/__init__.py").is_file()


def test_execution_module_virtual_refuses_without_the_generator(monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "qubes_ephemeral.api", None)  # import fails, as where it is absent
    loaded, reason = execution_module(file_roots={"base": ["/nowhere"]}).__virtual__()
    assert loaded is False
    assert "the qubes-ephemeral generator was not found" in reason and "ephemeral/lib" in reason


def test_state_module_virtual_needs_the_execution_module(qubes: FakeQubes) -> None:
    module = state_module(qubes)
    assert module.__virtual__() == "ephemeral_qubes"
    del module.__salt__["ephemeral.generator"]
    loaded, reason = module.__virtual__()
    assert loaded is False and "ephemeral execution module is not available" in reason

    def missing() -> str:
        raise CommandExecutionError("the qubes-ephemeral generator was not found")

    module.__salt__["ephemeral.generator"] = missing
    assert module.__virtual__() == (False, "the qubes-ephemeral generator was not found")


def test_state_module_loads_without_the_qubes_commands(qubes: FakeQubes) -> None:
    # Outside dom0 (or a description without qubes:) the module loads; a state that
    # runs an admin command fails and says why, instead of "not available".
    def absent(argv: list[str], **_: object) -> dict[str, object]:
        raise CommandExecutionError(f"Unable to run command '{argv}' with the context '{{}}', reason: "
                                    "[Errno 2] No such file or directory: 'qvm-prefs'")  # fmt: skip

    module = state_module(qubes, **{"cmd.run_all": absent})
    assert module.__virtual__() == "ephemeral_qubes"
    ret = module.required("t is a disposable template", ["qvm-prefs", "--", "t", "template_for_dispvms"], "True")
    assert ret["result"] is False
    assert ret["comment"].startswith("qvm-prefs could not be run ([Errno 2] No such file or directory: 'qvm-prefs')")
    assert "exist only in dom0" in ret["comment"]


# --- the execution module ---


@pytest.fixture(autouse=True)
def apply_lock(tmp_path: Path, monkeypatch) -> Path:
    """The formula's lock in a folder of the test's, and not held yet."""
    import qubes_ephemeral.render.artifacts as artifacts

    path = tmp_path / "run/apply.lock"
    monkeypatch.setattr(artifacts, "APPLY_LOCK", str(path))
    monkeypatch.delitem(sys.modules, "qubes_ephemeral_formula_lock", raising=False)
    return path


def test_a_run_refuses_while_another_holds_the_lock(apply_lock: Path) -> None:
    import fcntl

    apply_lock.parent.mkdir(parents=True)
    other = os.open(apply_lock, os.O_RDWR | os.O_CREAT)  # another run's open file
    fcntl.flock(other, fcntl.LOCK_EX)
    try:
        with pytest.raises(CommandExecutionError, match="another run of the ephemeral formula holds"):
            execution_module(pillar_example()).manifest()
    finally:
        os.close(other)
    module = execution_module(pillar_example())
    module.manifest()
    module.manifest()  # the run holds it already: it never waits for itself
    assert sys.modules["qubes_ephemeral_formula_lock"].fd is not None


def pillar_example() -> dict[str, Any]:
    return yaml.safe_load(PILLAR_EXAMPLE.read_text())["ephemeral"]


def test_manifest_of_the_pillar_is_made_once_per_run(monkeypatch) -> None:
    made: list[object] = []
    real = qubes_ephemeral.api.manifest_for_pillar
    monkeypatch.setattr(qubes_ephemeral.api, "manifest_for_pillar", lambda p: made.append(p) or real(p))
    module = execution_module(pillar_example())
    first = module.manifest()
    assert first["qubes"]["record"] == "/etc/qubes-ephemeral/qubes-originals.json"
    assert module.manifest() is first and len(made) == 1, "cached in __context__"
    assert module.synced == ["modules base refresh=False", "states base refresh=False"], (
        "the formula's modules synced once per run, asking no minion daemon to refresh"
    )
    other = module.manifest(MINIMAL["ephemeral"])
    assert other is not first and len(made) == 2, "a description given is not the pillar's: not cached"


def test_an_invalid_pillar_stops_the_run_listing_every_problem() -> None:
    pillar = pillar_example()
    pillar["scratch"]["device"] = "/dev/sdb"
    pillar["scratch"]["fs"] = "ntfs"
    module = execution_module(pillar)
    with pytest.raises(CommandExecutionError) as raised:
        module.manifest()
    message = str(raised.value)
    assert message.startswith("invalid ephemeral pillar, nothing was changed:\n")
    assert "ephemeral.scratch.device" in message and "ephemeral.scratch.fs" in message
    assert "ephemeral.manifest" not in module.__context__


def test_without_the_pillar_the_manifest_says_so() -> None:
    with pytest.raises(CommandExecutionError, match="the ephemeral pillar is not set"):
        execution_module().manifest()


def test_version_and_qubesd_extension(tmp_path: Path) -> None:
    module = execution_module()
    assert module.version() == qubes_ephemeral.__version__
    found = module.qubesd_extension(str(tmp_path / "no-stamp.json"))
    assert set(found) == {"loaded", "detail"} and not found["loaded"]


# --- required ---


def test_required_passes_fails_and_gives_the_hint(qubes: FakeQubes) -> None:
    module = state_module(qubes)
    get = ["qvm-prefs", "--", "default-dvm", "template_for_dispvms"]
    ok = module.required("default-dvm is a disposable template", get, "True", hint="set it")
    assert ok["result"] is True and ok["changes"] == {}
    refused = module.required("work is a disposable template", ["qvm-prefs", "--", "work", "template_for_dispvms"],
                              "True", hint="set it with qvm-prefs")  # fmt: skip
    assert refused["result"] is False
    assert refused["comment"] == "work is a disposable template: expected True, found False; set it with qvm-prefs"
    qubes.script(get, (2, "", "qvm-prefs: error: no such domain: 'default-dvm'"))
    failed = module.required("x", get, "True", hint="fix the name")
    assert failed["result"] is False and failed["comment"].endswith("no such domain: 'default-dvm'; fix the name")
    assert qubes.changes() == []


# --- set ---


def test_set_an_absent_feature_records_it_as_absent(qubes: FakeQubes, record: Path) -> None:
    module = state_module(qubes)
    ret = module.set_("default-dvm feature qubes-ephemeral", value="1", record=str(record), **FEATURE)
    assert ret["result"] is True and ret["changes"] == {"old": None, "new": "1"}
    assert qubes.features[("default-dvm", "qubes-ephemeral")] == "1"
    assert qubes.changes() == [[*FEATURE_GET, "1"]]
    entry = recorded(record)["default-dvm feature qubes-ephemeral"]
    assert entry == {"value": None, "set": FEATURE["set"], "unset": FEATURE["unset"], "order": 1}
    again = module.set_("default-dvm feature qubes-ephemeral", value="1", record=str(record), **FEATURE)
    assert again["result"] is True and again["changes"] == {} and len(qubes.changes()) == 1


def test_set_none_unsets_a_feature(qubes: FakeQubes, record: Path) -> None:
    qubes.features[("default-dvm", "qubes-ephemeral")] = "cow"
    module = state_module(qubes)
    ret = module.set_("private", value=None, record=str(record), **FEATURE)
    assert ret["result"] is True and ret["changes"] == {"old": "cow", "new": None}
    assert qubes.changes() == [FEATURE["unset"]] and ("default-dvm", "qubes-ephemeral") not in qubes.features
    no_unset = {k: v for k, v in FEATURE.items() if k != "unset"}
    qubes.features[("default-dvm", "qubes-ephemeral")] = "cow"
    refused = module.set_("other", value=None, record=str(record), **no_unset)
    assert refused["result"] is False and "no command to unset it" in refused["comment"]
    assert "other" not in recorded(record), "nothing recorded for a change not made"


def test_set_reads_a_default_in_the_prefs_listing_as_absent(qubes: FakeQubes, record: Path) -> None:
    # "D": left at its default. Recorded as absent, so clean puts back a default, not its value.
    module = state_module(qubes)
    ret = module.set_("qubes-prefs default_pool_volatile", value="ephemeral", record=str(record), **PREFS)
    assert ret["result"] is True and ret["changes"] == {"old": None, "new": "ephemeral"}
    assert qubes.prefs == {"default_pool_volatile": "ephemeral"}
    assert recorded(record)["qubes-prefs default_pool_volatile"]["value"] is None
    restored = module.restored("qubes-prefs default_pool_volatile", str(record))
    assert restored["result"] is True and qubes.changes()[-1] == PREFS["unset"]
    assert qubes.prefs == {}, "a default again"


def test_set_uses_the_default_for_a_key_not_printed(qubes: FakeQubes, record: Path) -> None:
    del qubes.pools["vm-pool"]["ephemeral_volatile"]
    module = state_module(qubes)
    pool = {"get": ["qvm-pool", "info", "vm-pool"], "key": "ephemeral_volatile",
            "set": ["qvm-pool", "set", "vm-pool", "-o", "ephemeral_volatile={value}"]}  # fmt: skip
    ret = module.set_("pool", value="False", record=str(record), default="False", **pool)
    assert ret["result"] is True and ret["changes"] == {} and qubes.changes() == []


def test_set_records_the_first_value_replaced_once_in_order(qubes: FakeQubes, record: Path) -> None:
    module = state_module(qubes)
    qubes.features[("default-dvm", "qubes-ephemeral")] = "0"
    module.set_("feature", value="1", record=str(record), **FEATURE)
    module.set_("prefs", value="varlibqubes", record=str(record), **PREFS)
    module.set_("feature", value="2", record=str(record), **FEATURE)
    entries = recorded(record)
    assert entries["feature"]["value"] == "0", "the original, not the value of the first apply"
    assert (entries["feature"]["order"], entries["prefs"]["order"]) == (1, 2)


def test_set_in_test_mode_changes_nothing(qubes: FakeQubes, record: Path) -> None:
    module = state_module(qubes, test=True)
    ret = module.set_("default-dvm feature qubes-ephemeral", value="1", record=str(record), **FEATURE)
    assert ret["result"] is None and ret["changes"] == {"old": None, "new": "1"}
    assert ret["comment"] == "default-dvm feature qubes-ephemeral would be set to 1"
    assert qubes.changes() == [] and not record.exists()


def test_set_fails_when_the_value_does_not_take(qubes: FakeQubes, record: Path) -> None:
    module = state_module(qubes)
    qubes.script([*FEATURE_GET, "1"], (0, "", ""))  # accepted, but nothing changes
    ret = module.set_("default-dvm feature qubes-ephemeral", value="1", record=str(record), **FEATURE)
    assert ret["result"] is False and ret["changes"] == {}
    assert ret["comment"] == "default-dvm feature qubes-ephemeral still reads None after setting it"
    assert "default-dvm feature qubes-ephemeral" in recorded(record), "recorded before the change: clean can undo"


def test_set_fails_with_the_command_s_message(qubes: FakeQubes, record: Path) -> None:
    module = state_module(qubes)
    qubes.script([*FEATURE_GET, "1"], (1, "", "qvm-features: error: Got empty response from qubesd.\n"))
    ret = module.set_("f", value="1", record=str(record), **FEATURE)
    assert ret["result"] is False
    assert ret["comment"] == ("qvm-features -- default-dvm qubes-ephemeral 1 failed (exit 1): "
                              "qvm-features: error: Got empty response from qubesd.")  # fmt: skip


VALUES = st.one_of(st.none(), st.text(alphabet=string.ascii_letters + string.digits + "-_.", min_size=1, max_size=8))


@settings(max_examples=60, deadline=None)
@given(original=VALUES, values=st.lists(VALUES, min_size=1, max_size=5))
def test_set_then_restored_gives_back_the_original_feature(original: str | None, values: list[str | None]) -> None:
    qubes = FakeQubes()
    if original is not None:
        qubes.features[("default-dvm", "qubes-ephemeral")] = original
    module = state_module(qubes)
    with tempfile.TemporaryDirectory() as folder:
        record = f"{folder}/etc/qubes-ephemeral/qubes-originals.json"
        for value in values:
            assert module.set_("feature", value=value, record=record, **FEATURE)["result"] is True
            assert qubes.features.get(("default-dvm", "qubes-ephemeral")) == value
        assert module.restored("feature", record)["result"] is True
        assert qubes.features.get(("default-dvm", "qubes-ephemeral")) == original
        assert not Path(folder, "etc/qubes-ephemeral").exists(), "the record and its folder go with the last entry"


@settings(max_examples=40, deadline=None)
@given(explicit=st.one_of(st.none(), st.sampled_from(["vm-pool", "varlibqubes", "ephemeral"])),
       values=st.lists(st.sampled_from(["vm-pool", "varlibqubes", "ephemeral"]), min_size=1, max_size=4))  # fmt: skip
def test_set_then_restored_gives_back_a_default_or_a_value(explicit: str | None, values: list[str]) -> None:
    qubes = FakeQubes()
    if explicit is not None:
        qubes.prefs["default_pool_volatile"] = explicit
    before = dict(qubes.prefs)
    module = state_module(qubes)
    with tempfile.TemporaryDirectory() as folder:
        record = f"{folder}/qubes-originals.json"
        for value in values:
            assert module.set_("prefs", value=value, record=record, **PREFS)["result"] is True
        module.restored("prefs", record)
        assert qubes.prefs == before, "an explicit value back as it was; a default as a default"


# --- restored ---


def test_restored_without_a_record_does_nothing(qubes: FakeQubes, record: Path) -> None:
    ret = state_module(qubes).restored("feature", str(record))
    assert ret["result"] is True and ret["changes"] == {} and "nothing recorded" in ret["comment"]
    assert qubes.calls == []


def test_restored_in_test_mode_changes_nothing(qubes: FakeQubes, record: Path) -> None:
    state_module(qubes).set_("feature", value="1", record=str(record), **FEATURE)
    ret = state_module(qubes, test=True).restored("feature", str(record))
    assert ret["result"] is None and ret["changes"] == {"new": None}
    assert qubes.features[("default-dvm", "qubes-ephemeral")] == "1" and "feature" in recorded(record)


def test_restored_keeps_the_record_and_gives_the_hint_when_it_fails(qubes: FakeQubes, record: Path) -> None:
    record.parent.mkdir(parents=True)
    record.write_text(json.dumps({"pool ephemeral": {"value": None, "set": ["qvm-pool", "add", "ephemeral"],
                                  "unset": ["qvm-pool", "remove", "ephemeral"], "hint": "remove its qubes",
                                  "order": 1}}))  # fmt: skip
    qubes.script(["qvm-pool", "remove", "ephemeral"], (1, "", "qvm-pool: error: pool in use\n"))
    ret = state_module(qubes).restored("pool ephemeral", str(record))
    assert ret["result"] is False and ret["comment"].endswith("pool in use; remove its qubes")
    assert "pool ephemeral" in recorded(record), "kept, so that clean can run again"


# --- pools_ephemeral_volatile ---


def pools_state(module: types.ModuleType, record: Path, names: list[str] | None, **overrides: Any) -> dict[str, Any]:
    arguments: dict[str, Any] = {
        "default_from_prefs": [["qubes-prefs", "--", "default_pool"], ["qubes-prefs", "--", "default_pool_volatile"]]
        if names is None
        else [],
        "default_excludes": [],
        "setting": POOL_SETTING,
        "record": str(record),
        **overrides,
    }
    return module.pools_ephemeral_volatile("pools ephemeral_volatile", names, **arguments)


def test_pools_listed_are_set_and_recorded_as_before(qubes: FakeQubes, record: Path) -> None:
    module = state_module(qubes)
    ret = pools_state(module, record, ["varlibqubes", "vm-pool", "varlibqubes"])
    assert ret["result"] is True
    assert ret["changes"] == {
        "varlibqubes": {"old": "False", "new": "True"},
        "vm-pool": {"old": "False", "new": "True"},
    }
    assert qubes.changes() == [["qvm-pool", "set", "varlibqubes", "-o", "ephemeral_volatile=True"],
                               ["qvm-pool", "set", "vm-pool", "-o", "ephemeral_volatile=True"]]  # fmt: skip
    # The record keys of the sls states it replaces: clean restores them one by one, as before.
    assert set(recorded(record)) == {"pool varlibqubes ephemeral_volatile", "pool vm-pool ephemeral_volatile"}
    again = pools_state(module, record, ["varlibqubes", "vm-pool"])
    assert again["result"] is True and again["changes"] == {} and len(qubes.changes()) == 2
    module.restored("pool vm-pool ephemeral_volatile", str(record))
    assert qubes.pools["vm-pool"]["ephemeral_volatile"] == "False"


def test_default_pools_are_read_when_the_state_runs(qubes: FakeQubes, record: Path) -> None:
    qubes.prefs.update(default_pool="vm-pool", default_pool_volatile="ephemeral")
    qubes.pools["ephemeral"] = {"driver": "file", "dir_path": "/var/lib/qubes-ephemeral/pools/ephemeral"}
    ret = pools_state(state_module(qubes), record, None, default_excludes=["ephemeral"])
    assert ret["result"] is True and list(ret["changes"]) == ["vm-pool"], "our own pool is excluded"
    assert qubes.calls[:2] == [["qubes-prefs", "--", "default_pool"], ["qubes-prefs", "--", "default_pool_volatile"]]
    assert "ephemeral_volatile" not in qubes.pools["ephemeral"]


def test_default_pools_once_each_and_none_when_empty(qubes: FakeQubes, record: Path) -> None:
    module = state_module(qubes)
    ret = pools_state(module, record, None)
    assert list(ret["changes"]) == ["vm-pool"] and qubes.changes() == [
        ["qvm-pool", "set", "vm-pool", "-o", "ephemeral_volatile=True"]
    ]
    qubes.prefs_defaults.update(default_pool="", default_pool_volatile="")
    empty = pools_state(module, record, None)
    assert empty["result"] is True and empty["changes"] == {} and empty["comment"] == "no pool to set"


def test_pools_in_test_mode_change_nothing(qubes: FakeQubes, record: Path) -> None:
    ret = pools_state(state_module(qubes, test=True), record, None)
    assert ret["result"] is None and ret["changes"] == {"vm-pool": {"old": "False", "new": "True"}}
    assert qubes.changes() == [] and not record.exists()


def test_one_pool_failing_fails_the_state_and_the_others_are_still_set(qubes: FakeQubes, record: Path) -> None:
    ret = pools_state(state_module(qubes), record, ["nosuchpool", "varlibqubes"])
    assert ret["result"] is False
    assert ret["changes"] == {"varlibqubes": {"old": "False", "new": "True"}}
    assert (
        "No such pools: ['nosuchpool']" in ret["comment"]
        and "varlibqubes ephemeral_volatile set to True" in (ret["comment"])
    )
    assert qubes.pools["varlibqubes"]["ephemeral_volatile"] == "True"


def test_pools_fail_when_the_defaults_cannot_be_read(qubes: FakeQubes, record: Path) -> None:
    qubes.script(["qubes-prefs", "--", "default_pool"], (1, "", "qubes-prefs: error: Got empty response"))
    ret = pools_state(state_module(qubes), record, None)
    assert ret["result"] is False and ret["changes"] == {}
    assert ret["comment"].startswith("the default pools could not be read: qubes-prefs -- default_pool failed")


# --- pool_present ---

OWN = {
    "pool": "ephemeral",
    "driver": "file",
    "layout_unit": "qubes-ephemeral-layout.service",
    "get": ["qvm-pool", "info", "ephemeral"],
    "remove": ["qvm-pool", "remove", "ephemeral"],
}


def own_pool(module: types.ModuleType, record: Path, mountpoint: str, dir_path: str) -> dict[str, Any]:
    add = ["qvm-pool", "add", "ephemeral", "file", "-o", f"dir_path={dir_path}"]
    return module.pool_present("pool ephemeral on the scratch filesystem", mountpoint=mountpoint, dir_path=dir_path,
                               add=add, record=str(record), **OWN)  # fmt: skip


def test_pool_present_adds_it_on_the_mounted_scratch_filesystem(qubes: FakeQubes, record: Path, tmp_path: Path) -> None:
    module = state_module(qubes)
    ret = own_pool(module, record, "/", str(tmp_path))  # "/" is a mount point wherever the tests run
    assert ret["result"] is True and ret["changes"] == {"old": None, "new": f"file {tmp_path}"}
    assert qubes.pools["ephemeral"] == {"driver": "file", "dir_path": str(tmp_path)}
    entry = recorded(record)["pool ephemeral on the scratch filesystem"]
    assert (
        entry["value"] is None and entry["unset"] == OWN["remove"] and "qvm-volume list -p ephemeral" in entry["hint"]
    )
    again = own_pool(module, record, "/", str(tmp_path))
    assert again["result"] is True and again["changes"] == {} and len(qubes.changes()) == 1


def test_pool_present_refuses_a_pool_of_that_name_that_is_not_ours(qubes: FakeQubes, record: Path) -> None:
    qubes.pools["ephemeral"] = {"driver": "lvm_thin", "volume_group": "qubes_dom0"}
    ret = own_pool(state_module(qubes), record, "/", "/var/lib/qubes-ephemeral/pools/ephemeral")
    assert ret["result"] is False and "a pool named ephemeral already exists (driver lvm_thin" in ret["comment"]
    assert qubes.changes() == [] and not record.exists()


def test_pool_present_waits_for_the_scratch_filesystem(qubes: FakeQubes, record: Path, tmp_path: Path) -> None:
    ret = own_pool(state_module(qubes), record, str(tmp_path), str(tmp_path))  # a folder, not a mount point
    assert ret["result"] is False and "can only be added while the scratch filesystem is mounted" in ret["comment"]
    assert qubes.changes() == [] and not record.exists()
    laid_out = own_pool(state_module(qubes), record, "/", str(tmp_path / "missing"))
    assert laid_out["result"] is False and "missing); reboot" in laid_out["comment"]


def test_pool_present_in_test_mode_and_when_adding_does_not_take(
    qubes: FakeQubes, record: Path, tmp_path: Path
) -> None:
    dry = own_pool(state_module(qubes, test=True), record, "/", str(tmp_path))
    assert dry["result"] is None and dry["changes"]["new"] == f"file {tmp_path}" and qubes.changes() == []
    qubes.script(["qvm-pool", "add", "ephemeral", "file", "-o", f"dir_path={tmp_path}"], (0, "", ""))
    failed = own_pool(state_module(qubes), record, "/", str(tmp_path))
    assert failed["result"] is False and failed["comment"] == "pool ephemeral is still missing after adding it"
    qubes.script(["qvm-pool", "info", "ephemeral"], (1, "", "qvm-pool: error: Got empty response"))
    broken = own_pool(state_module(qubes), record, "/", str(tmp_path))
    assert broken["result"] is False and "qvm-pool info ephemeral failed (exit 1)" in broken["comment"]


# --- extension_loaded ---


@pytest.mark.parametrize(
    ("loaded", "mandatory", "result", "warned"),
    [(True, True, True, False), (False, True, False, False), (None, False, True, True)],
)
def test_extension_loaded(qubes: FakeQubes, loaded: bool | None, mandatory: bool, result: bool, warned: bool) -> None:
    asked: list[str] = []

    def extension(stamp: str) -> dict[str, object]:
        asked.append(stamp)
        return {"loaded": loaded, "detail": "by qubesd PID 42"}

    module = state_module(qubes, **{"ephemeral.qubesd_extension": extension})
    ret = module.extension_loaded("qubesd extension", stamp="/run/stamp.json", mandatory=mandatory, hint="install it")
    assert asked == ["/run/stamp.json"]
    assert ret["result"] is result and ("warnings" in ret) is warned
    assert "by qubesd PID 42" in ret["comment"]
    if not loaded:
        assert ret["comment"].endswith("install it")


# --- disposables_unmarked ---

LIST = ["qvm-ls", "--raw-data", "--fields", "NAME,CLASS,TEMPLATE"]
FEATURES = ["qubes-ephemeral", "qubes-ephemeral-private"]


def with_disposables(qubes: FakeQubes) -> None:
    qubes.vms.update({
        "sys-net": {"class": "DispVM", "template": "default-dvm"},  # ours: copied our mark
        "old-disp": {"class": "DispVM", "template": "old-dvm"},  # of a template the record names
        "own-disp": {"class": "DispVM", "template": "work-dvm"},  # not ours: left alone
    })  # fmt: skip
    qubes.features.update({("sys-net", "qubes-ephemeral"): "1", ("sys-net", "qubes-ephemeral-private"): "cow",
                           ("old-disp", "qubes-ephemeral"): "1", ("own-disp", "qubes-ephemeral"): "1",
                           ("default-dvm", "qubes-ephemeral"): "1"})  # fmt: skip


def test_disposables_unmarked_takes_our_features_off_our_templates_disposables(qubes: FakeQubes, record: Path) -> None:
    with_disposables(qubes)
    record.parent.mkdir(parents=True)
    record.write_text(json.dumps({"old-dvm feature qubes-ephemeral": {
        "value": None, "set": ["qvm-features", "--", "old-dvm", "qubes-ephemeral", "{value}"], "order": 1}}))  # fmt: skip
    dry = state_module(qubes, test=True).disposables_unmarked("d", str(record), ["default-dvm"], FEATURES, LIST)
    assert dry["result"] is None and qubes.changes() == []
    ret = state_module(qubes).disposables_unmarked("d", str(record), ["default-dvm"], FEATURES, LIST)
    assert ret["result"] is True
    assert (
        ret["changes"]
        == dry["changes"]
        == {"unset": ["old-disp qubes-ephemeral", "sys-net qubes-ephemeral", "sys-net qubes-ephemeral-private"]}
    )
    assert qubes.changes() == [["qvm-features", "--unset", "--", vm, f] for vm, f in
                               [("old-disp", FEATURES[0]), ("sys-net", FEATURES[0]), ("sys-net", FEATURES[1])]]  # fmt: skip
    assert qubes.features == {("own-disp", "qubes-ephemeral"): "1", ("default-dvm", "qubes-ephemeral"): "1"}
    again = state_module(qubes).disposables_unmarked("d", str(record), ["default-dvm"], FEATURES, LIST)
    assert again["result"] is True and again["changes"] == {} and "no disposable of" in again["comment"]


def test_disposables_unmarked_fails_when_qubes_cannot_be_listed(qubes: FakeQubes, record: Path) -> None:
    qubes.script(LIST, (1, "", "qvm-ls: error: Got empty response"))
    ret = state_module(qubes).disposables_unmarked("d", str(record), ["default-dvm"], FEATURES, LIST)
    assert ret["result"] is False and "qvm-ls --raw-data --fields NAME,CLASS,TEMPLATE failed" in ret["comment"]

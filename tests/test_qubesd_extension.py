"""The qubesd extension, against a stand-in for the parts of qubesd it uses.

tests/qubesd_standin follows qubes-core-admin's names and signatures: the
Extension/handler API, domain-pre-start fired before storage starts, a
disposable deriving its volumes and features from its disposable template.
Proves: a disposable of a marked template starts with a read-only root and
an ephemeral volatile volume; the template, and disposables of unmarked
templates, are untouched.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import pytest

STANDIN = Path(__file__).parent / "qubesd_standin"


@pytest.fixture
def qubes(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.syspath_prepend(str(STANDIN))
    for name in [m for m in sys.modules if m == "qubes" or m.startswith(("qubes.", "qubes_ephemeral.qubesd"))]:
        monkeypatch.delitem(sys.modules, name)
    vm = importlib.import_module("qubes.vm")
    dispvm = importlib.import_module("qubes.vm.dispvm")
    ext = importlib.import_module("qubes.ext")
    monkeypatch.setattr(vm.BaseVM, "__handlers__", {})
    monkeypatch.setattr(ext.Extension, "_instances", {})
    extension = importlib.import_module("qubes_ephemeral.qubesd_extension")
    extension.EphemeralDisposables()  # what qubesd does for each qubes.ext entry point
    return vm, dispvm, extension


def make_template(vm, marked: bool):
    pool = vm.Pool("vm-pool", ephemeral_volatile=False)
    fedora = vm.AppVM("fedora-41", pool=pool)
    template = vm.AppVM("default-dvm", template=fedora, template_for_dispvms=True, pool=pool)
    if marked:
        template.features["qubes-ephemeral"] = True
    return template


def test_disposable_of_a_marked_template_starts_forgetful(qubes) -> None:
    vm, dispvm, _ = qubes
    template = make_template(vm, marked=True)
    disposable = dispvm.DispVM("disp1234", template)
    assert disposable.volumes["root"].rw is True and disposable.volumes["volatile"].ephemeral is False
    disposable.start()
    assert disposable.volumes["root"].rw is False
    assert disposable.volumes["volatile"].ephemeral is True
    assert disposable.volumes["private"].rw is True  # /rw: needs the copy-on-write patch, not done here
    # The template itself stays as it was: it must keep working.
    assert template.volumes["root"].rw is True and template.volumes["volatile"].ephemeral is False
    template.start()
    assert template.volumes["root"].rw is True


def test_feature_on_the_templates_template_counts(qubes) -> None:
    vm, dispvm, _ = qubes
    template = make_template(vm, marked=False)
    template.template.features["qubes-ephemeral"] = "1"
    disposable = dispvm.DispVM("disp1", template)
    disposable.start()
    assert disposable.volumes["root"].rw is False


def test_unmarked_templates_disposables_are_untouched(qubes) -> None:
    vm, dispvm, _ = qubes
    disposable = dispvm.DispVM("disp2", make_template(vm, marked=False))
    disposable.start()
    assert disposable.volumes["root"].rw is True and disposable.volumes["volatile"].ephemeral is False


def test_empty_feature_value_means_off(qubes) -> None:
    vm, dispvm, _ = qubes
    template = make_template(vm, marked=False)
    template.features["qubes-ephemeral"] = False  # stored as '' by Features
    disposable = dispvm.DispVM("disp3", template)
    disposable.start()
    assert disposable.volumes["root"].rw is True


def test_registered_as_a_qubes_ext_entry_point() -> None:
    from importlib.metadata import entry_points

    names = {ep.name: ep.value for ep in entry_points(group="qubes.ext")}
    assert names.get("qubes_ephemeral") == "qubes_ephemeral.qubesd_extension:EphemeralDisposables"

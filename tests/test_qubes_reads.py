"""One reading of the Qubes admin commands for the formula and the audit.

dom0/parsers.py parses what qvm-pool, qvm-features, qubes-prefs and qvm-ls
print; the formula's state module (tests/test_salt_modules.py) and the
audit both use it, with the read commands of the manifest's Qubes plan
(render/qubes_plan.py). Here: the parsers, on upstream's output shapes and
on generated ones, and the audit reading the plan's settings.
"""

from __future__ import annotations

import string

from conftest import PILLAR_EXAMPLE
from hypothesis import given
from hypothesis import strategies as st
from qubes_ephemeral.api import describe
from qubes_ephemeral.dom0 import audit, parsers
from qubes_ephemeral.render.artifacts import DISPOSABLES_CLEANUP
from qubes_ephemeral.render.manifest import render
from qubes_ephemeral.render.qubes_plan import DEFAULT_POOL_PREFS
from test_audit import host_with

TOKEN = st.text(alphabet=string.ascii_letters + string.digits + "-_.:", min_size=1, max_size=12)
VALUE = st.text(alphabet=string.ascii_letters + string.digits + '-_./[]",= ', max_size=20).map(str.strip)


# qubesadmin/tools/qvm_pool.py info: "KEY  VALUE" padded to the longest key.
POOL_INFO = """name                vm-pool
driver              lvm_thin
ephemeral_volatile  False
revisions_to_keep   2
thin_pool           vm-pool
volume_group        qubes_dom0
"""
# qubesadmin/tools/qubes_prefs.py with no property: NAME, "D" (default) or "-", VALUE.
PREFS_LISTING = """clockvm                 D  sys-net
default_kernel          -  6.6.48-1.fc37
default_pool            D  vm-pool
default_pool_volatile   -  ephemeral
default_qrexec_timeout  D  60
management_dispvm       -
"""


def test_admin_value_reads_each_form_of_the_read_commands() -> None:
    assert parsers.admin_value(" True\n") == "True"  # qvm-prefs -- VM PROP, qvm-features -- VM FEATURE
    assert parsers.admin_value(POOL_INFO, "ephemeral_volatile") == "False"
    assert parsers.admin_value(POOL_INFO, "dir_path") is None, "Qubes prints no line for an unset option"
    assert parsers.admin_value(PREFS_LISTING, "default_pool_volatile", listing=True) == "ephemeral"
    assert parsers.admin_value(PREFS_LISTING, "default_pool", listing=True) is None, "D: at its default"
    assert parsers.admin_value(PREFS_LISTING, "management_dispvm", listing=True) == ""
    assert parsers.key_values("qubes-ephemeral  1\nqubes-ephemeral-restore  [[\"root\", \"rw\", true]]\n") == {
        "qubes-ephemeral": "1", "qubes-ephemeral-restore": '[["root", "rw", true]]'}  # fmt: skip


@given(st.dictionaries(TOKEN, VALUE, max_size=8), st.integers(min_value=0, max_value=6))
def test_key_values_reads_back_any_table(values: dict[str, str], pad: int) -> None:
    width = max((len(key) for key in values), default=0) + pad
    text = "".join(f"{key:<{width}}  {value}".rstrip() + "\n" for key, value in values.items())
    assert parsers.key_values(text) == values


@given(st.dictionaries(TOKEN, st.tuples(st.booleans(), VALUE), max_size=8))
def test_prefs_listing_reads_back_any_listing(prefs: dict[str, tuple[bool, str]]) -> None:
    text = "".join(f"{name:<30}{'D' if default else '-'}  {value}".rstrip() + "\n"
                   for name, (default, value) in prefs.items())  # fmt: skip
    assert parsers.prefs_listing(text) == {name: None if default else value for name, (default, value) in prefs.items()}


def test_absent_is_a_silent_expected_exit_only() -> None:
    assert parsers.absent(1, "", "", 1)
    assert not parsers.absent(1, "", "qvm-features: error: no such domain: 'x'\n", 1)
    assert not parsers.absent(1, "", "", None) and not parsers.absent(0, "", "", 1)


def test_no_such_pool() -> None:
    assert parsers.no_such_pool(2, "usage: qvm-pool [options]\nqvm-pool: error: No such pools: ['x']\n")
    assert not parsers.no_such_pool(1, "qvm-pool: error: Got empty response from qubesd.")


@given(st.lists(st.sampled_from(["vm-pool", "varlibqubes", "ephemeral", "", " "]).map(lambda p: p + "\n")),
       st.lists(st.sampled_from(["vm-pool", "ephemeral"])))  # fmt: skip
def test_default_pools_once_each_in_order_without_excludes(printed: list[str], excludes: list[str]) -> None:
    pools = parsers.default_pools(printed, excludes)
    assert len(pools) == len(set(pools)) and "" not in pools and not set(pools) & set(excludes)
    wanted = [p.strip() for p in printed if p.strip() and p.strip() not in excludes]
    assert pools == list(dict.fromkeys(wanted))


@given(st.lists(st.tuples(TOKEN, st.sampled_from(["AppVM", "DispVM", "TemplateVM", "AdminVM"]), TOKEN), max_size=8))
def test_disposables_of_any_listing(rows: list[tuple[str, str, str]]) -> None:
    text = "".join("|".join(row) + "\n" for row in rows)
    expected = [(name, template) for name, klass, template in rows if klass == "DispVM"]
    assert parsers.disposables(text, DISPOSABLES_CLEANUP["list"]) == expected


def test_disposables_follows_the_fields_asked_for() -> None:
    argv = ["qvm-ls", "--raw-data", "--fields", "TEMPLATE,NAME,STATE,CLASS"]
    assert parsers.disposables("default-dvm|sys-net|Running|DispVM\nfedora-41|work|Halted|AppVM\nshort|row\n",
                               argv) == [("sys-net", "default-dvm")]  # fmt: skip


# --- the audit reads the plan's settings as the formula's state does ---

COW_OWN_POOL = describe(
    PILLAR_EXAMPLE.read_bytes()
    .replace(b"    pool: null", b"    pool: ephemeral")
    .replace(b"default_pool_volatile: false", b"default_pool_volatile: true")
    .replace(b"default-dvm: {private: persistent}", b"default-dvm: {private: cow}")
    .replace(b"dispvm_private_cow: false", b"dispvm_private_cow: true")
)
OWN_DIR = "/var/lib/qubes-ephemeral/pools/ephemeral"


def qubes_findings(**runs: tuple[int, str, str]) -> dict[str, audit.Finding]:
    base = {
        "qubes-prefs|--|default_pool": (0, "vm-pool\n", ""),
        "qubes-prefs|--|default_pool_volatile": (0, "ephemeral\n", ""),
        "qvm-pool|info|vm-pool": (0, POOL_INFO.replace("False", "True"), ""),
        "qvm-features|--|default-dvm|qubes-ephemeral": (0, "1\n", ""),
        "qvm-features|--|default-dvm|qubes-ephemeral-private": (0, "cow\n", ""),
        "qvm-prefs|--|default-dvm|kernel": (0, "6.6.48-1.qubes.fc37.x86_64\n", ""),
        "qvm-ls|--raw-data|--fields|NAME,CLASS,TEMPLATE": (0, "default-dvm|AppVM|fedora-41\n", ""),
        "qvm-pool|info|ephemeral": (0, f"name  ephemeral\ndir_path  {OWN_DIR}\ndriver  file\n", ""),
        "qubes-prefs": (0, PREFS_LISTING, ""),
        **runs,
    }
    checker = audit.Audit(host_with(**base), COW_OWN_POOL, render(COW_OWN_POOL))
    return {f.item: f for f in checker.qubes()}


def test_the_audit_reads_the_plan_s_settings() -> None:
    found = qubes_findings()
    assert {item: f.status for item, f in found.items()} == {
        "pool vm-pool: volatile volumes keyed per start": "ok",  # our own pool is not a "default" one
        "default-dvm: feature qubes-ephemeral": "ok",
        "default-dvm: feature qubes-ephemeral-private": "ok",
        "default-dvm: the kernel its disposables boot carries the /rw copy-on-write": "ok",
        "qubesd extension loaded": "missing",  # no stamp in this recording
        "disposables: nothing left behind by the extension or an earlier pillar": "ok",
        "pool ephemeral on the scratch filesystem": "ok",
        "qubes-prefs default_pool_volatile": "ok",
    }
    assert DEFAULT_POOL_PREFS[0] == "default_pool", "the audit's dom0 probe"


def test_the_audit_tells_unset_from_unreadable() -> None:
    found = qubes_findings(**{
        "qvm-features|--|default-dvm|qubes-ephemeral-private": (1, "", ""),
        "qvm-features|--|default-dvm|qubes-ephemeral": (1, "", "qvm-features: error: Got empty response from qubesd\n"),
        "qubes-prefs": (0, PREFS_LISTING.replace("-  ephemeral", "D  vm-pool"), ""),
        "qvm-pool|info|ephemeral": (2, "", "qvm-pool: error: No such pools: ['ephemeral']\n"),
    })  # fmt: skip
    private = found["default-dvm: feature qubes-ephemeral-private"]
    assert (private.status, private.detail) == ("missing", "not set")
    mark = found["default-dvm: feature qubes-ephemeral"]
    assert mark.status == "unknown" and mark.detail.startswith("qvm-features failed (exit 1): qvm-features: error")
    default = found["qubes-prefs default_pool_volatile"]
    assert (default.status, default.detail) == ("missing", "not set"), "at its default, even if that were our pool"
    pool = found["pool ephemeral on the scratch filesystem"]
    assert (pool.status, pool.detail) == ("missing", "no such pool (apply again after the reboot)")
